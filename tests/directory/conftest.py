"""Fixtures of the directory tests: a real CA per test, copied from one made per session; a
real slapd (tests/slapd.py) and a CA with its store on each backend; the DNSSEC world of
tests/dnsinfra.py (NSD + unbound on loopback), started on demand and stopped when the module
that asked for it is done."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from backends import Backend
from dnsinfra import DnsLab, missing_commands, start_dns_lab
from kit import CA, make_ca, make_ca_template
from slapd import Slapd, available

from smimekit.ca.home import CAConfig, CAHome
from smimekit.ca.issuance import CertificateAuthority
from smimekit.store import Store

CA_PASS = b"correct horse battery staple"

DnsLabFactory = Callable[[Mapping[str, str]], DnsLab]


@pytest.fixture(scope="session")
def ca_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_ca_template(tmp_path_factory.mktemp("directory-ca") / "data")


@pytest.fixture
def ca(tmp_path: Path, ca_template: Path) -> Iterator[CA]:
    yield from make_ca(tmp_path / "data", ca_template)


@pytest.fixture(scope="module")
def dns_lab_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsLabFactory]:
    """``start(records)``: sign the test zones with ``records`` (zone -> zone-file text) and
    start NSD and unbound; every lab started is stopped at the end of the module."""
    missing = missing_commands()
    if missing:
        pytest.skip(f"DNS peers not installed ({', '.join(missing)}; make peers installs"
                    " them)")
    labs: list[DnsLab] = []

    def start(records: Mapping[str, str]) -> DnsLab:
        lab = start_dns_lab(Path(tmp_path_factory.mktemp("dns")), records)
        labs.append(lab)
        return lab

    try:
        yield start
    finally:
        for lab in labs:
            lab.stop()


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
