"""The verdict on a message: frozen dataclasses, and their JSON.

Designed so later checks slot in without changing the shape: revocation fills
``SignerVerdict.revocation``; S/MIME policy adds reasons and warnings.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import asdict, dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from smimekit.cms.keyinfo import CERTIFICATE_ERRORS
from smimekit.errors import NoSignatureError, UntrustedError, VerificationError
from smimekit.smime.hp_read import HeaderProtection
from smimekit.validation.certinfo import readable_name


@dataclass(frozen=True)
class CertSummary:
    """A certificate, as a person reads it."""

    subject: str
    issuer: str
    serial: str
    """Hexadecimal serial number."""
    sha256: str
    """SHA-256 fingerprint, hex."""
    not_before: dt.datetime
    not_after: dt.datetime
    emails: tuple[str, ...]
    """rfc822Name and SmtpUTF8Mailbox addresses of the subject."""

    @classmethod
    def of(cls, cert: x509.Certificate) -> CertSummary:
        return _summary(cert) if cls is CertSummary else cls._build(cert)

    @classmethod
    def _build(cls, cert: x509.Certificate) -> CertSummary:
        return cls(
            subject=readable_name(cert, "subject"),
            issuer=readable_name(cert, "issuer"),
            serial=format(cert.serial_number, "x"),
            sha256=cert.fingerprint(hashes.SHA256()).hex(),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            emails=tuple(cert_emails(cert)),
        )


@functools.lru_cache(maxsize=1024)
def _summary(cert: x509.Certificate) -> CertSummary:
    # Frozen, so safe to share; certificates hash and compare by their DER.
    return CertSummary._build(cert)


def cert_emails(cert: x509.Certificate) -> list[str]:
    return list(_cert_emails(cert))


@functools.lru_cache(maxsize=1024)
def _cert_emails(cert: x509.Certificate) -> tuple[str, ...]:
    return tuple(_find_emails(cert))


def _find_emails(cert: x509.Certificate) -> list[str]:
    """Addresses bound to ``cert``: SAN rfc822Name, SmtpUTF8Mailbox, else subject emailAddress."""
    found: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, *CERTIFICATE_ERRORS):
        san = None  # undecodable extensions bind no address (and are a defect of the path)
    if san is not None:
        found.extend(san.get_values_for_type(x509.RFC822Name))
        for other in san.get_values_for_type(x509.OtherName):
            if other.type_id.dotted_string == "1.3.6.1.5.5.7.8.9":  # RFC 8398 SmtpUTF8Mailbox
                found.append(_utf8_string(other.value))
    if not found:
        from cryptography.x509.oid import NameOID

        try:
            found.extend(str(attr.value)
                         for attr in cert.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS))
        except CERTIFICATE_ERRORS:
            pass
    return [f for f in found if f]


def _utf8_string(der: bytes) -> str:
    # otherName value is an explicit [0] around a UTF8String.
    from asn1crypto import core

    try:
        value = core.UTF8String.load(core.Any.load(der).contents if der[:1] == b"\xa0" else der)
        return str(value.native)
    except (ValueError, TypeError):
        return ""


@dataclass(frozen=True)
class RevocationStatus:
    """Revocation state of one certificate of the chain."""

    subject: str
    status: str = "not-checked"
    """``good``, ``revoked``, ``unknown`` or ``not-checked``."""
    source: str = "none"
    """``crl``, ``ocsp``, ``cache`` or ``none``."""
    age_seconds: float | None = None
    """How old the answer was when used."""
    revoked_at: dt.datetime | None = None
    """When the certificate was revoked; also set on a ``good`` status when the revocation
    came after the validation time (an archived message signed before it)."""
    reason: str | None = None
    """CRLReason of the revocation (``keyCompromise``, ``certificateHold``...), if given."""
    protocol: str | None = None
    """``crl`` or ``ocsp``: what kind of answer was used (also when it came from the cache)."""
    url: str | None = None
    """Where the answer came from; None for locally supplied CRLs and OCSP responses."""
    this_update: dt.datetime | None = None
    next_update: dt.datetime | None = None
    detail: str = ""
    """Why the status is unknown, or notes (delegated responder, delta CRL applied...)."""


@dataclass(frozen=True)
class SignerVerdict:
    """Everything decided about one signer."""

    intact: bool
    """The signature and signed attributes verify over the content."""
    trusted: bool
    """A valid chain leads to a trust anchor at the validation time."""
    signer: CertSummary | None
    email: tuple[str, ...]
    """The signer certificate's email addresses."""
    chain: tuple[CertSummary, ...]
    """Signer first, trust anchor last (empty when no path was found)."""
    digest_algorithm: str | None
    signature_algorithm: str | None
    signing_time: dt.datetime | None
    """Self-asserted by the signer (signing-time attribute)."""
    key_usage_ok: bool
    """Key usage and extended key usage permit signing mail."""
    from_match: bool | None
    """Every From and Sender address (signed, outer, and of a wrapped inner message) is one
    of the certificate's addresses, and the outer From is the signed one; False when the
    message has no From at all. Compared ignoring case in the whole address."""
    revocation: tuple[RevocationStatus, ...] = ()
    """One per certificate of ``chain`` but the anchor, in chain order (the signer's first)."""
    reasons: tuple[str, ...] = ()
    """Why this signer fails, in words; empty when it passes."""
    validation_time: dt.datetime | None = None
    """When this signer's chain was checked (the signing time in signing-time mode)."""
    encryption_cert: CertSummary | None = None
    """The certificate the signer asked answers to be encrypted to (RFC 8551
    SMIMEEncryptionKeyPreference, or Microsoft's), when the message carries it. Named by a
    signed attribute but not validated here: encrypting to it checks it as any recipient."""
    encryption_key_preference: str | None = None
    """How that attribute names the certificate (``issuer ... serial ...`` or ``ski ...``),
    also when the message does not carry it; None without the attribute."""

    @property
    def valid(self) -> bool:
        return (
            self.intact
            and self.trusted
            and self.key_usage_ok
            and self.from_match is not False
            and not self.reasons
        )


@dataclass(frozen=True)
class LayerSummary:
    kind: str
    """``signed`` or ``encrypted``."""
    form: str
    detail: str


@dataclass(frozen=True)
class Verdict:
    """The decision on a message, and every reason behind it."""

    signers: tuple[SignerVerdict, ...]
    layers: tuple[LayerSummary, ...]
    """Outermost first: e.g. encrypted, signed."""
    validation_time: dt.datetime
    from_address: str | None
    """The sender the signer is bound to: the signed From when the signature covers one
    (it is authoritative), else the outer From (or Sender)."""
    unsigned_from: str | None = None
    """The outer, unsigned From when it names other addresses than the signed From; such a
    mismatch fails the sender binding. None when they agree or either is missing."""
    partially_signed: bool = False
    """A signature covers only a part, not the root: never a signed message."""
    partially_encrypted: bool = False
    warnings: tuple[str, ...] = ()
    reasons: tuple[str, ...] = field(default=())
    """Message-level reasons for failure."""
    header_protection: HeaderProtection | None = None
    """The message's header protection (RFC 9788 and older forms): which fields were
    protected, obscured outside, or disagree outside; None when it has none."""

    @property
    def signed(self) -> bool:
        return any(layer.kind == "signed" for layer in self.layers)

    @property
    def encrypted(self) -> bool:
        return any(layer.kind == "encrypted" for layer in self.layers)

    @property
    def valid(self) -> bool:
        """True only when the root is signed and every signer passes every check."""
        return (
            self.signed
            and bool(self.signers)
            and all(s.valid for s in self.signers)
            and not self.reasons
            and not self.partially_signed
        )

    def all_reasons(self) -> list[str]:
        out = list(self.reasons)
        for s in self.signers:
            out.extend(s.reasons)
        return out

    def raise_for_failure(self) -> None:
        """Raise :class:`~smimekit.errors.VerificationError` unless :attr:`valid`."""
        if self.valid:
            return
        reasons = self.all_reasons() or ["the message is not validly signed"]
        cls: type[VerificationError] = VerificationError
        if not self.signed:
            cls = NoSignatureError
        elif self.signers and all(s.intact for s in self.signers) and not self.reasons:
            cls = UntrustedError
        raise cls("; ".join(reasons), verdict=self)

    def summary(self) -> str:
        """One line for people: signer, email, signing time, chain, revocation."""
        protection = self.header_protection
        if not self.signers:
            text = "NOT SIGNED: " + "; ".join(self.all_reasons() or ["no signature"])
            return text + (f"; {protection.summary()}" if protection is not None else "")
        head = "VALID" if self.valid else "INVALID"
        bits = []
        for s in self.signers:
            who = s.signer.subject if s.signer else "unknown signer"
            email = ",".join(s.email) or "no email"
            when = s.signing_time.isoformat() if s.signing_time else "no signing time"
            chain = " <- ".join(c.subject for c in s.chain) if s.chain else "no chain"
            rev = _revocation_text(s.revocation)
            bits.append(f"signer {who} <{email}> signed {when}; chain: {chain}; revocation: {rev}")
            enc = s.encryption_cert
            if enc is not None and s.signer is not None and enc.sha256 != s.signer.sha256:
                bits[-1] += f"; encrypt answers to: {enc.subject} (serial {enc.serial})"
        text = f"{head}: " + " | ".join(bits)
        if protection is not None:
            text += "; " + protection.summary()
        reasons = list(dict.fromkeys(self.all_reasons()))  # one line per reason, not signer
        if reasons:
            text += " -- " + "; ".join(reasons)
        return text

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["valid"] = self.valid
        data["signed"] = self.signed
        data["encrypted"] = self.encrypted
        for signer, raw in zip(self.signers, data["signers"], strict=True):
            raw["valid"] = signer.valid
        return data

    def to_json(self) -> str:
        import json  # only a --report needs it

        return json.dumps(self.to_dict(), indent=2, default=_json_default, sort_keys=True)


def _revocation_text(statuses: tuple[RevocationStatus, ...]) -> str:
    """Each certificate's status in chain order, the signer's first: ``good (ocsp), good
    (crl)``; a single ``not-checked`` when nothing was checked."""
    if all(r.status == "not-checked" for r in statuses):
        return "not-checked"
    return ", ".join(r.status + (f" ({r.source})" if r.source != "none" else "")
                     for r in statuses)


def _json_default(value: object) -> object:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")
