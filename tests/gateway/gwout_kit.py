"""Shared set-up for the gateway's tests: a store holding the gateway's keys, a real
Resolver over the store's harvested certificates, the test PKI's people, and Held (held keys
in memory) for the inbound tests."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509
from pki import DATE, PKI, Identity

from smimekit.config import GatewayConfig, PolicyConfig
from smimekit.directory.harvest import HarvestedSource
from smimekit.directory.resolver import Resolver
from smimekit.directory.sources import Found
from smimekit.errors import DirectoryError
from smimekit.gateway import dlp
from smimekit.gateway.keys import StoreHeldKeys
from smimekit.gateway.model import HeldKey
from smimekit.gateway.outbound import OutboundContext
from smimekit.gateway.pipeline import Pipeline, build_pipeline
from smimekit.gateway.policy import Policy
from smimekit.store import Store

PASS = b"gateway key passphrase"
PDF_PASSWORD = "test-pdf-password"


@dataclass
class Held:
    """Keys held for users, newest first (the HeldKeys protocol, in memory)."""

    keys: dict[str, list[HeldKey]] = field(default_factory=dict)

    def signing_key(self, address: str) -> HeldKey | None:
        return None

    def decryption_keys(self, address: str) -> Sequence[HeldKey]:
        return self.keys.get(address, [])

    def encryption_certificate(self, address: str) -> x509.Certificate | None:
        """The first listed is the current one (the store's ranking is tested with the
        store: test_keys.py, test_inbound.py)."""
        history = self.keys.get(address, [])
        return history[0].certificate if history else None

    def organisation_key(self) -> HeldKey | None:
        return None


def mail(subject: str = "Quarterly figures", body: str = "The numbers are in.\r\n",
         to: str = "partner@partner.example", sender: str = "alice@example.org") -> bytes:
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: {DATE}\r\n"
            "Message-ID: <gw1@example.org>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=us-ascii\r\n\r\n" + body).encode()


def harvest(store: Store, pki: PKI, who: Identity) -> None:
    """Make ``who``'s certificate known to the directory (as a harvested signer)."""
    store.record_harvested(who.email, who.cert, chain=(pki.inter,), role="signer",
                           preferred=False, seen_at=dt.datetime.now(dt.UTC),
                           message_ref="test")


def pipeline_holding(store: Store, pki: PKI, gateway: GatewayConfig, *,
                     holds: Sequence[Identity] = (), knows: Sequence[Identity] = ()
                     ) -> Pipeline:
    """The real pipeline over ``store``: the keys of ``holds`` held by the gateway (sealed
    under PASS), the certificates of ``knows`` in the directory (harvested)."""
    held = StoreHeldKeys.open(store, PASS, create=True)
    for who in holds:
        held.add(who.key, who.cert, (pki.inter,))
    for who in knows:
        harvest(store, pki, who)
    resolver = Resolver([HarvestedSource(store)], trust=[pki.root], cache=None)
    return build_pipeline(gateway, store, held, resolver, trust=[pki.root], hostname="gw.test")


@dataclass
class FailingSource:
    """A directory source that cannot answer (LDAP down)."""

    name: str = "ldap"

    def find(self, address: str) -> Found:
        raise DirectoryError("connection refused", source=self.name)


def config(**policy: object) -> GatewayConfig:
    return GatewayConfig(internal_domains=("example.org",),
                         policy=PolicyConfig(**policy))  # type: ignore[arg-type]


def context(store: Store, pki: PKI, gateway: GatewayConfig, *,
            extra_sources: Sequence[object] = ()) -> OutboundContext:
    held = StoreHeldKeys.open(store, PASS, create=True)
    resolver = Resolver([HarvestedSource(store), *extra_sources],  # type: ignore[list-item]
                        trust=[pki.root], cache=None)
    return OutboundContext(config=gateway, policy=Policy(gateway), held_keys=held,
                           resolver=resolver, rules=dlp.compile_rules(gateway.dlp),
                           password=lambda: PDF_PASSWORD)
