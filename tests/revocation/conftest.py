"""Fixtures for the revocation suite: the test PKI, and the servers that publish it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from loopback import FileServer
from revpki import RevPKI, der


@pytest.fixture(scope="module")
def rpki() -> RevPKI:
    """Root -> CA -> people, pointing at hosts that do not exist (for MemoryFetcher)."""
    return RevPKI()


@pytest.fixture
def crl_server() -> Iterator[FileServer]:
    server = FileServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def served_pki(crl_server: FileServer) -> RevPKI:
    """A PKI whose CRL URLs point at ``crl_server`` (empty CRLs published for root and CA)."""
    pki = RevPKI(http_base=crl_server.base, ocsp_url="http://127.0.0.1:1/")
    crl_server.files["root.crl"] = der(pki.crl(issuer=pki.root))
    crl_server.files["ca.crl"] = der(pki.crl())
    return pki
