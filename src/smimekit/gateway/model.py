"""What passes between the SMTP front (server.py) and the message work (pipeline.py).

The front receives an :class:`Envelope`; :meth:`Processor.process` returns an
:class:`Outcome`: the messages to hand to the next hop, one :class:`Decision` per recipient
(audited with its reason), and the recipients refused by policy (a DSN to the sender names
them). It raises :class:`~smimekit.errors.GatewayError` when nothing should pass now:
``permanent`` gives the SMTP client a 5xx, else a 4xx so Postfix keeps the message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

Direction = Literal["outbound", "inbound", "internal", "relay"]
"""outbound: from one of our domains to another, through the trusted door; inbound: to one
of ours from outside (anything that came through the public door); internal: ours to ours
through the trusted door; relay: neither (passed unchanged, with a decision saying so)."""


@dataclass(frozen=True)
class Envelope:
    """One SMTP transaction as the gateway received it."""

    mail_from: str
    """The reverse-path; "" for a bounce."""
    recipients: tuple[str, ...]
    data: bytes
    """The message exactly as received (CRLF line ends)."""
    peer: str = ""
    """host:port of the SMTP client (Postfix)."""
    trusted: bool = False
    """It came through the trusted door (``listen_submission``: Postfix's submission smtpd,
    SASL-authenticated with ``reject_sender_login_mismatch``, or clients Postfix routes
    there). Only such mail is outbound or internal; everything else is from outside,
    whatever its envelope sender or From claims (gateway/policy.py :meth:`direction`)."""


@dataclass(frozen=True)
class Delivery:
    """One message for the next hop."""

    mail_from: str
    recipients: tuple[str, ...]
    data: bytes


@dataclass(frozen=True)
class Decision:
    """What the gateway did for one recipient, and why (written to the audit log)."""

    recipient: str
    direction: Direction
    action: str
    """e.g. "signed+encrypted", "signed", "clear", "pdf", "bounced", "decrypted",
    "re-encrypted", "verified", "quarantined", "rejected", "passed"."""
    reason: str
    """One sentence naming the policy level and the facts behind it."""
    details: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Refusal:
    """A recipient the policy refuses (the sender gets a DSN with ``reason``)."""

    recipient: str
    reason: str


@dataclass(frozen=True)
class Outcome:
    deliveries: tuple[Delivery, ...]
    decisions: tuple[Decision, ...]
    refused: tuple[Refusal, ...] = ()


class Processor(Protocol):
    def process(self, envelope: Envelope) -> Outcome:
        """Raises GatewayError (permanent or not) when nothing may be passed on now."""
        ...


@dataclass(frozen=True)
class HeldKey:
    """A key the gateway holds for a user (or the organisation), with its certificate."""

    key: PrivateKeyTypes
    """A software key, or one that stays in a PKCS#11 token (keys/token_keys.py: the same
    types, their operations run in the token)."""
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()


class HeldKeys(Protocol):
    """The keys the gateway holds, opened (gateway/keys.py: at rest in the store or a token)."""

    def signing_key(self, address: str) -> HeldKey | None:
        """The user's current signing key, or None."""
        ...

    def decryption_keys(self, address: str) -> Sequence[HeldKey]:
        """Every encryption key the user ever had (the key history), newest first: to decrypt
        with, never to encrypt to (some are retired, perhaps compromised)."""
        ...

    def encryption_certificate(self, address: str) -> x509.Certificate | None:
        """The user's current encryption certificate (not retired, valid now, the newest by
        certificate date), what mail to the user is re-encrypted to; None if there is none."""
        ...

    def organisation_key(self) -> HeldKey | None:
        """The organisation's signing key, or None."""
        ...
