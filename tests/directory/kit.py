"""A real CA in a data directory for the directory tests, and a source of our own protocol
that tests register through the resolver's constructor."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from smimekit.ca.home import CAConfig, CAHome
from smimekit.ca.issuance import CertificateAuthority, SubscriberKeyType
from smimekit.ca.profiles import Purpose
from smimekit.directory.sources import Candidate, Found
from smimekit.errors import DirectoryError
from smimekit.store import Store

PASS = b"correct horse battery staple"
BASE = "http://pki.example.com"


@dataclass
class CA:
    data_dir: Path
    authority: CertificateAuthority
    home: CAHome

    @property
    def store(self) -> Store:
        return self.authority.store

    @property
    def root(self) -> x509.Certificate:
        return self.home.certificate("root")

    @property
    def issuing(self) -> x509.Certificate:
        return self.home.certificate("issuing")

    def issue(self, email: str, **kwargs: object) -> tuple[x509.Certificate, object]:
        """An encryption-only P-256 certificate (its key comes back, as the holder gets it)."""
        issued = self.authority.issue_generated(
            email, purpose="encrypt", encrypt_key=SubscriberKeyType.P256, lint=False,
            **kwargs)  # type: ignore[arg-type]
        item = issued.item(Purpose.ENCRYPT)
        assert item is not None
        return item.cert, item.key


def make_ca_template(data_dir: Path) -> Path:
    """A CA created once (key generation and protection are the slow part), to copy."""
    home = CAHome(data_dir)
    home.create(CAConfig(organization="Example Ltd", base_url=BASE, key_type="p256",
                         country="GB"), PASS)
    return data_dir


def make_ca(data_dir: Path, template: Path) -> Iterator[CA]:
    """A CA of its own for one test: a copy of ``template`` (same keys, empty store)."""
    shutil.copytree(template, data_dir)
    home = CAHome(data_dir)
    store = Store.open(None, data_dir)
    try:
        yield CA(data_dir, CertificateAuthority(home.unlock(PASS), store, actor="test"), home)
    finally:
        store.close()


@dataclass
class ListSource:
    """A source holding a fixed list (what LDAP, DNS or harvested mail would give), counting
    how often it is asked; ``fail`` makes it raise DirectoryError as an unreachable one."""

    name: str
    candidates: Sequence[Candidate] = ()
    fail: str = ""
    any_address: bool = False
    """Give every candidate whatever the address (a directory with a wrong entry)."""
    asked: list[str] = field(default_factory=list)

    def find(self, address: str) -> Found:
        self.asked.append(address)
        if self.fail:
            raise DirectoryError(self.fail, source=self.name)
        held = [c for c in self.candidates if self.any_address
                or address.lower() in [e.lower() for e in _emails(c.certificate)]]
        return Found(held, notes=("one garbage entry skipped",) if held else ())


def _emails(cert: x509.Certificate) -> list[str]:
    from smimekit.validation.verdict import cert_emails

    return cert_emails(cert)


class Clock:
    """The resolver's clock, moved by tests (no sleeping)."""

    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


ClockFn = Callable[[], dt.datetime]


class DirectorySource(ListSource):
    """A ListSource built by name through the registry (``SOURCES``), as the CLI builds
    every source: what it holds and how often it was asked live in :attr:`shared`."""

    shared = ListSource("ldap")

    @classmethod
    def from_config(cls, config: object, *, store: object, data_dir: Path) -> ListSource:
        return cls.shared

    def find(self, address: str) -> Found:  # pragma: no cover - from_config gives shared
        return self.shared.find(address)
