"""Fixtures shared by the CA tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from backends import Backend

from smimekit.ca.home import CAConfig, CAHome
from smimekit.ca.issuance import CertificateAuthority
from smimekit.store import Store

PASS = b"correct horse battery staple"


@pytest.fixture()
def cax(backend: Backend) -> Iterator[CertificateAuthority]:
    """A P-256 CA with an organizationIdentifier, unlocked, on each store backend (a test
    module may define its own ``cax``)."""
    config = CAConfig(organization="Example Ltd", base_url="http://pki.example.com",
                      key_type="p256", organization_identifier="NTRGB-12345678")
    unlocked = CAHome(backend.data_dir).create(config, PASS)
    store = Store.open(backend.url, backend.data_dir)
    try:
        yield CertificateAuthority(unlocked, store, actor="test")
    finally:
        store.close()
