"""Fixtures of the directory tests: a real slapd (tests/slapd.py) and a CA with its store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from backends import Backend
from slapd import Slapd, available

from smimekit.ca.home import CAConfig, CAHome
from smimekit.ca.issuance import CertificateAuthority
from smimekit.store import Store

CA_PASS = b"correct horse battery staple"


@pytest.fixture
def slapd(tmp_path: Path) -> Iterator[Slapd]:
    """A slapd of this test on loopback (ldap:// with StartTLS, and ldaps://), people under
    ``ou=people,dc=example,dc=org``; stopped afterwards."""
    if not available():
        pytest.skip("slapd is not installed (apt-get install slapd ldap-utils, or make peers)")
    server = Slapd(tmp_path / "slapd")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _cax(data: Path, url: str | None) -> Iterator[CertificateAuthority]:
    home = CAHome(data)
    home.create(CAConfig(organization="Example Ltd", base_url="http://pki.example.com",
                         key_type="p256", country="GB"), CA_PASS)
    store = Store.open(url, data)
    try:
        yield CertificateAuthority(home.unlock(CA_PASS), store, actor="test")
    finally:
        store.close()


@pytest.fixture
def cax(tmp_path: Path) -> Iterator[CertificateAuthority]:
    """A P-256 CA with its SQLite store in this test's folder, unlocked."""
    yield from _cax(tmp_path / "data", None)


@pytest.fixture
def any_cax(backend: Backend) -> Iterator[CertificateAuthority]:
    """The same CA on each store backend (SQLite, PostgreSQL): what publishing reads."""
    yield from _cax(backend.data_dir, backend.url)
