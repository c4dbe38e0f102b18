"""Escrow test kit (fixtures registered in conftest.py): a CA on the ``backend`` store, five
recovery officers (three holding certificates, RSA and EC, two with share passphrases),
and the leaver's three years of keys.

Share passphrases use scrypt n=2^10 here (the files record their cost); one test in
test_vault.py runs the production cost.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from backends import Backend
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from pki import PKI, message

import smimekit
import smimekit.escrow.shares
from smimekit.ca.home import CAConfig, CAHome
from smimekit.ca.issuance import CertificateAuthority, SubscriberKeyType
from smimekit.ca.profiles import Purpose
from smimekit.escrow.ceremony import init_escrow
from smimekit.escrow.shares import OfficerSpec, UnlockedShare, unlock_share
from smimekit.escrow.vault import EscrowResult
from smimekit.store import Store

CA_PASS = b"correct horse battery staple"
BASE = "http://pki.example.com"
FAST = {"sign_key": SubscriberKeyType.P256, "encrypt_key": SubscriberKeyType.P256}
LEAVER = "leaver@example.com"
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


@pytest.fixture(autouse=True)
def quick_scrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(smimekit.escrow.shares, "SCRYPT_N", 2**10)


@dataclass(frozen=True)
class Officer:
    """A recovery officer and what unlocks their share."""

    name: str
    spec: OfficerSpec
    key: PrivateKeyTypes | None = None
    passphrase: bytes | None = field(default=None, repr=False)

    def unlock(self, path: Path) -> UnlockedShare:
        return unlock_share(path.read_bytes(), key=self.key, passphrase=self.passphrase,
                            source=str(path))


@pytest.fixture(scope="session")
def officers(pki: PKI) -> list[Officer]:
    out = []
    for name, kind in (("Alice Officer", "rsa2048"), ("Bob Officer", "p256"),
                       ("Carol Officer", "rsa2048")):
        who = pki.person(name.split()[0].lower() + "-officer", kind, key_usage="encrypt")
        out.append(Officer(name, OfficerSpec(name, certificate=who.cert), key=who.key))
    for name in ("Dave Officer", "Erin Officer"):
        secret = f"{name} share passphrase".encode()
        out.append(Officer(name, OfficerSpec(name, passphrase=secret), passphrase=secret))
    return out


@dataclass
class Env:
    """A CA with its store and (once :meth:`escrow` ran) an escrow."""

    backend: Backend
    home: CAHome
    store: Store
    cax: CertificateAuthority
    shares_dir: Path
    officers: list[Officer]
    result: EscrowResult | None = None

    @property
    def data_dir(self) -> Path:
        return self.backend.data_dir

    def escrow(self, threshold: int = 3) -> EscrowResult:
        self.result = init_escrow(self.data_dir, self.store, CA_PASS,
                                  [o.spec for o in self.officers], threshold,
                                  self.shares_dir, actor="test")
        # the CA as it runs from now on: seal-only vault
        self.cax = CertificateAuthority(self.home.unlock(CA_PASS), self.store, actor="test")
        return self.result

    def officer(self, name: str) -> Officer:
        return next(o for o in self.officers if o.name.startswith(name))

    def share_file(self, name: str, generation: int = 1, directory: Path | None = None) -> Path:
        safe = self.officer(name).name.replace(" ", "_")
        (path,) = (directory or self.shares_dir).glob(f"escrow-*-g{generation}-*-{safe}.share")
        return path

    def shares(self, *names: str, generation: int = 1,
               directory: Path | None = None) -> list[UnlockedShare]:
        return [self.officer(n).unlock(self.share_file(n, generation, directory))
                for n in names]


@pytest.fixture
def env(backend: Backend, tmp_path: Path, officers: list[Officer]) -> Iterator[Env]:
    home = CAHome(backend.data_dir)
    home.create(CAConfig(organization="Example Ltd", base_url=BASE, key_type="p256",
                         country="GB"), CA_PASS)
    store = Store.open(backend.url, backend.data_dir)
    # as 'ca init' leaves it: every row anchored under the CA's audit key, ca.init first
    store.use_audit_key(home.audit_key())
    store.audit("test", "ca.init", "Example Ltd", {})
    try:
        yield Env(backend, home, store,
                  CertificateAuthority(home.unlock(CA_PASS), store, actor="test"),
                  tmp_path / "shares", officers)
    finally:
        store.close()


@dataclass(frozen=True)
class Leaver:
    """Three successive encryption certificates over four years, a mail under each."""

    certs: list[x509.Certificate]
    mails: list[bytes]
    bodies: list[bytes]


def make_leaver(cax: CertificateAuthority, email: str = LEAVER) -> Leaver:
    first = cax.issue_generated(email, now=NOW - dt.timedelta(days=1500), **FAST)
    enc = first.item(Purpose.ENCRYPT)
    assert enc is not None
    second = cax.renew(enc.record, now=NOW - dt.timedelta(days=800))
    third = cax.renew(second.record, now=NOW - dt.timedelta(days=100))
    certs = [enc.cert, second.cert, third.cert]
    bodies = [f"Mail number {n} to the leaver.\r\n".encode() for n in (1, 2, 3)]
    mails = [smimekit.encrypt(message(body=body), [cert], check_recipients=False)
             for body, cert in zip(bodies, certs, strict=True)]
    cax.revoke(email=email, reason="affiliation-changed")
    return Leaver(certs, mails, bodies)
