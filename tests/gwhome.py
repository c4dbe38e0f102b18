"""A data directory and configuration for ``smimekit gateway serve`` with the real policy
pipeline: the test PKI's root trusted, the keys of alice@example.org (a sender) and
bob@example.org (an inbound recipient who reads mail on the web: delivered decrypted) held by
the gateway, partner@partner.example's certificate known to the directory.

Used by tests/gateway/test_hostile_smtp.py and benchmarks/bench_gateway.py.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from pki import PKI, Identity

from smimekit import api
from smimekit.gateway.keys import StoreHeldKeys
from smimekit.store import Store
from smimekit.validation.trust import TrustStore

PASS = b"gateway key passphrase"
INTERNAL, PARTNER = "example.org", "partner.example"


@dataclass
class GatewayHome:
    data_dir: Path
    database_url: str | None
    config: Path
    alice: Identity
    bob: Identity
    partner: Identity
    chain: tuple[x509.Certificate, ...]
    """The test PKI's issuing CA, sent along with signatures."""

    def outbound(self, body: bytes, message_id: str) -> tuple[str, list[str], bytes]:
        """alice -> partner: the gateway signs and encrypts."""
        return self.alice.email, [self.partner.email], _mail(
            self.alice.email, self.partner.email, message_id, body)

    def inbound(self, body: bytes, message_id: str) -> tuple[str, list[str], bytes]:
        """partner -> bob, signed by partner and encrypted to bob: the gateway decrypts and
        verifies."""
        clear = _mail(self.partner.email, self.bob.email, message_id, body)
        protected = api.sign_encrypt(clear, self.partner.key, self.partner.cert,
                                     [self.bob.cert], chain=self.chain)
        return self.partner.email, [self.bob.email], protected


    def relay(self, body: bytes, message_id: str) -> tuple[str, list[str], bytes]:
        """A stranger to a stranger (neither in internal_domains): the gateway passes it
        unchanged, audited; no cryptography (the gateway's own cost)."""
        sender, to = "someone@elsewhere.example", "other@faraway.example"
        return sender, [to], _mail(sender, to, message_id, body)


def _mail(sender: str, to: str, message_id: str, body: bytes) -> bytes:
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {message_id}\r\n"
            f"Message-ID: <{message_id}>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=us-ascii\r\n\r\n").encode() + body


def make_home(root: Path, pki: PKI, *, database_url: str | None = None,
              max_message_size: int = 50 * 1024 * 1024, max_recipients: int = 1000,
              ) -> GatewayHome:
    data_dir = root / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    alice = pki.person("alice")
    bob = pki.person("bob")
    partner = pki.person("partner", email=f"partner@{PARTNER}")
    TrustStore(data_dir).add([pki.root])
    passphrase = root / "gateway.pass"
    passphrase.write_bytes(PASS)
    passphrase.chmod(0o600)
    with Store.open(database_url, data_dir, create=True) as store:
        held = StoreHeldKeys.open(store, PASS, create=True)
        for person in (alice, bob):
            held.add(person.key, person.cert, (pki.inter,))
        store.record_harvested(partner.email, partner.cert, chain=(pki.inter,), role="signer",
                               preferred=False, seen_at=dt.datetime.now(dt.UTC),
                               message_ref="gwhome")
    config = root / "smimekit.toml"
    config.write_text(
        "[gateway]\n"
        f'internal_domains = ["{INTERNAL}"]\n'
        f'key_passphrase_file = "{passphrase}"\n'
        f"max_message_size = {max_message_size}\n"
        f"max_recipients = {max_recipients}\n"
        "[gateway.policy]\n"
        'encrypt = "if-possible"\n'
        f'[gateway.users."{bob.email}"]\n'
        "webmail = true\n")
    return GatewayHome(data_dir, database_url, config, alice, bob, partner, (pki.inter,))
