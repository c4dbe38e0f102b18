"""The gateway's :class:`~smimekit.gateway.model.Processor`: policy, outbound, inbound, audit.

:class:`Pipeline` splits a message's recipients by direction (gateway/policy.py:
``internal_domains`` and the door the message came through, :attr:`Envelope.trusted`):
outbound ones go through :func:`~smimekit.gateway.outbound.process_outbound`, inbound ones
through :func:`~smimekit.gateway.inbound.process_inbound`, internal (ours to ours, through the
trusted door) ones pass without any result header, relay ones pass unchanged. Mail from the
public door is never outbound: whatever sender it claims, our recipients get it as inbound
(result header replaced, scanned, decrypted) and the others unchanged and unsigned. Every
Decision is written to the store's audit log before the outcome is handed back: action
``gateway.<action>``, subject the recipient, details with the direction, the door, the reason,
the policy levels and facts behind it (certificate fingerprints, DLP rule names and
counts), the sender and the SHA-256 of the message as received. Never message content,
never a password or key.

The audit rows of one message are one transaction. If they cannot be written the message is
deferred (a temporary GatewayError: 4xx), so nothing leaves the gateway unaudited. A message
that Postfix retries is audited again (the same message hash shows it).
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from smimekit.config import Config, GatewayConfig
from smimekit.errors import ConfigError, GatewayError, MIMEError, SmimeError, StoreError
from smimekit.gateway import dlp
from smimekit.gateway.inbound import InboundContext, process_inbound, strip_header
from smimekit.gateway.model import (
    Decision,
    Delivery,
    Direction,
    Envelope,
    HeldKeys,
    Outcome,
)
from smimekit.gateway.outbound import CertificateLookup, OutboundContext, process_outbound
from smimekit.gateway.policy import Policy
from smimekit.store import Store

__all__ = ["ACTOR", "Pipeline", "build_pipeline", "pipeline_from_data_dir"]

ACTOR = "gateway"
"""The actor of the gateway's audit rows (a node name may be added: ``gateway@node1``)."""

_PASS_REASONS: dict[Direction, str] = {
    "internal": "internal mail (sender and recipient in internal_domains, through the trusted"
                " door): passed unchanged but for any result header",
    "relay": "neither sender nor recipient in internal_domains: passed unchanged",
}
_PUBLIC_RELAY_OURS = ("came through the public door (not listen_submission), recipient outside"
                      " internal_domains: passed unchanged, never signed; the sender claims"
                      " one of internal_domains, which only the trusted door can vouch for"
                      " (a forwarding alias, or forged)")


def _door(envelope: Envelope) -> str:
    return "submission" if envelope.trusted else "public"


@dataclass
class Pipeline:
    """The Processor ``gateway serve`` runs (see the module docstring)."""

    policy: Policy
    outbound: OutboundContext
    inbound: InboundContext
    held_keys: HeldKeys
    store: Store | None
    actor: str = ACTOR
    counts: dict[str, int] = field(default_factory=dict)
    """Decisions by action since start (for a status line; never content)."""

    def process(self, envelope: Envelope) -> Outcome:
        """Process one message for all its recipients; audit every decision.

        Raises:
            GatewayError: permanent when the policy refuses the whole message (an unreadable
                header); temporary when keys, directory, scanner or store fail, or the audit
                rows cannot be written.
        """
        groups: dict[Direction, list[str]] = {}
        for recipient in envelope.recipients:
            groups.setdefault(self.policy.direction(envelope.mail_from, recipient,
                                                    trusted=envelope.trusted),
                              []).append(recipient)
        parts: list[Outcome] = []
        try:
            if groups.get("outbound"):
                parts.append(process_outbound(envelope, groups["outbound"], self.outbound))
            if groups.get("inbound"):
                parts.append(process_inbound(envelope, groups["inbound"],
                                             held_keys=self.held_keys,
                                             policy_for=self.policy.resolve,
                                             context=self.inbound,
                                             from_outside=not envelope.trusted))
        except GatewayError:
            raise
        except SmimeError as exc:  # anything the parts did not name: keep the mail, retry
            raise GatewayError(f"processing failed: {exc}") from None
        for direction, reason in _PASS_REASONS.items():
            passing = groups.get(direction)
            if not passing:
                continue
            data = envelope.data
            if direction == "internal":
                # a colleague's client shows no verdict the gateway did not write
                try:
                    data, _ = strip_header(data, self.inbound.config.result_header)
                except MIMEError:
                    pass  # an unreadable header: no result header can be found in it
            elif not envelope.trusted and self.policy.is_internal(envelope.mail_from):
                reason = _PUBLIC_RELAY_OURS
            parts.append(Outcome(
                (Delivery(envelope.mail_from, tuple(passing), data),),
                tuple(Decision(r, direction, "passed", reason) for r in passing)))
        outcome = Outcome(tuple(d for p in parts for d in p.deliveries),
                          tuple(d for p in parts for d in p.decisions),
                          tuple(r for p in parts for r in p.refused))
        self._audit(envelope, outcome)
        return outcome

    def _audit(self, envelope: Envelope, outcome: Outcome) -> None:
        digest = hashlib.sha256(envelope.data).hexdigest()
        for decision in outcome.decisions:
            self.counts[decision.action] = self.counts.get(decision.action, 0) + 1
        if self.store is None:
            return
        try:
            with self.store.transaction():
                for decision in outcome.decisions:
                    details: dict[str, Any] = {
                        **{k: str(v) for k, v in decision.details.items()},
                        "direction": decision.direction,
                        "door": _door(envelope),
                        "reason": decision.reason,
                        "from": envelope.mail_from,
                        "message_sha256": digest,
                    }
                    self.store.audit(self.actor, f"gateway.{decision.action}",
                                     decision.recipient, details)
        except StoreError as exc:
            raise GatewayError(f"the audit log cannot be written: {exc}") from None


def build_pipeline(config: GatewayConfig, store: Store | None, held_keys: HeldKeys,
                   resolver: CertificateLookup, *, trust: Sequence[x509.Certificate] = (),
                   inbound: InboundContext | None = None, hostname: str | None = None,
                   actor: str = ACTOR) -> Pipeline:
    """The gateway's Processor for ``config``.

    ``resolver`` finds recipients' certificates (a :class:`~smimekit.directory.resolver.
    Resolver`); ``trust`` are the anchors inbound signatures are verified against; ``store``
    receives the audit rows and harvested certificates (None: neither, for tests).

    Raises:
        ConfigError: a bad policy level, DLP rule, scanner or result header name.
    """
    policy = Policy(config)
    rules = dlp.compile_rules(config.dlp)
    if config.quarantine_dir is None and any(r.action == "quarantine" for r in config.dlp):
        from smimekit.errors import ConfigError

        raise ConfigError("a [[gateway.dlp]] rule quarantines but gateway.quarantine_dir is"
                          " not set")
    inbound = inbound or InboundContext.from_config(config, trust=trust, store=store,
                                                    hostname=hostname)
    outbound = OutboundContext(config=config, policy=policy, held_keys=held_keys,
                               resolver=resolver, rules=rules)
    return Pipeline(policy, outbound, inbound, held_keys, store, actor)


def pipeline_from_data_dir(config: Config, store: Store, data_dir: Path, *,
                           trust: Sequence[x509.Certificate] = (),
                           actor: str | None = None) -> Pipeline:
    """What ``gateway serve`` runs: the held keys opened with ``key_passphrase_file`` (or the
    PKCS#11 token of ``pkcs11_module``), the
    resolver of ``[directory]`` over ``store`` (anchors: the trust store, our CA's root and
    ``trust``) behind a :class:`~smimekit.gateway.memo.LookupMemo` of
    ``lookup_memo_seconds``, the inbound context of ``[gateway]``.

    Raises:
        GatewayError: (temporary) the key store cannot be opened.
        ConfigError: as for :func:`build_pipeline`, a bad ``[directory]``, or a negative
            memo time.
    """
    from smimekit.directory.resolver import Resolver
    from smimekit.directory.store_source import our_ca_chain
    from smimekit.gateway.keys import open_held_keys
    from smimekit.gateway.memo import LookupMemo
    from smimekit.validation.revocation import RevocationOptions
    from smimekit.validation.trust import TrustStore

    gateway = config.gateway or GatewayConfig()
    for name in ("key_memo_seconds", "lookup_memo_seconds", "harvest_memo_seconds"):
        if getattr(gateway, name) < 0:
            raise ConfigError(f"gateway.{name} must be 0 or more")
    held = open_held_keys(gateway, store)
    ours = our_ca_chain(data_dir)
    anchors = list(TrustStore(data_dir).anchors())
    anchors += [c for c in (*trust, *ours) if c.issuer == c.subject and c not in anchors]
    resolver = Resolver.from_config(config, store=store, data_dir=data_dir, trust=anchors,
                                    intermediates=list(ours), our_ca=ours)
    node = socket.gethostname()
    # Revocation as the message commands check it: soft-fail, with CRLs and OCSP answers kept
    # on disk until their nextUpdate, so a busy gateway does not fetch a CRL per message.
    inbound = InboundContext.from_config(
        gateway, trust=anchors, store=store,
        revocation=RevocationOptions(cache_dir=data_dir / "revocation-cache"))
    lookup: CertificateLookup = resolver
    if gateway.lookup_memo_seconds > 0:
        lookup = LookupMemo(resolver, gateway.lookup_memo_seconds)
    return build_pipeline(gateway, store, held, lookup, trust=anchors, inbound=inbound,
                          actor=actor or f"{ACTOR}@{node}")
