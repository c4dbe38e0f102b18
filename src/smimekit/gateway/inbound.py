"""Inbound mail at the gateway: decrypt with held keys, verify, scan, deliver (docs/gateway.md).

:func:`process_inbound` takes one message for recipients in our domains and, per recipient:

1. removes every result header (``[gateway] result_header``) that came from outside, before
   anything else reads the message, and from what decryption restores; one inside the
   sender's signed header section (RFC 9788) cannot be removed without the signature: a
   verified signature is removed, an unverified one stays, and the verdict says ``forged``
   (:func:`_forged_inside`);
2. decrypts with the recipient's held keys, the whole key history (policy ``decrypt``);
   mail not encrypted to any of them passes unchanged, saying so in the result header;
3. verifies every signature against the organisation's trust anchors (policy ``verify``)
   and keeps valid signers' certificates for the directory (policy ``harvest``);
4. sends the clear content to the scanning hook and the inbound data-loss rules;
5. delivers: decrypted mail is re-encrypted to the recipient's current certificate (the
   newest by date not retired and valid now: ``HeldKeys.encryption_certificate``, never a
   retired key of the history) for desktop users, or delivered in the clear over the
   internal hop for users flagged ``webmail``; protected header fields (RFC 9788) are
   restored by unwrapping;
6. adds a fresh result header saying what was found and done.

Recipients who end up with the same bytes share one :class:`Delivery`. Malware and the DLP
``reject`` action refuse the recipient: for mail through the trusted door a :class:`Refusal`
(our sender gets a DSN); for mail from outside (``from_outside``) no DSN and no SMTP
rejection, both of which would become a bounce to a sender that may be forged (backscatter,
naming the rule): the message is quarantined when ``quarantine_dir`` is set, else dropped,
and the audit log keeps the reason. ``quarantine`` keeps the message in ``quarantine_dir``
and delivers nothing. The gateway never removes a signature it could not vouch for, and
never delivers partial plaintext: a message it cannot decrypt or re-encrypt goes on exactly
as it arrived.
"""

from __future__ import annotations

import binascii
import datetime as dt
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from smimekit.api import SOFT_REVOCATION
from smimekit.cms import asn1
from smimekit.cms.keyinfo import CERTIFICATE_ERRORS
from smimekit.config import GatewayConfig
from smimekit.errors import (
    ConfigError,
    DecryptionError,
    EncryptionError,
    GatewayError,
    KeyLoadError,
    LegacyAlgorithmError,
    MIMEError,
    NoRecipientError,
    SmimeError,
    StoreError,
)
from smimekit.gateway import dlp
from smimekit.gateway.memo import HarvestMemo
from smimekit.gateway.model import (
    Decision,
    Delivery,
    Envelope,
    HeldKey,
    HeldKeys,
    Outcome,
    Refusal,
)
from smimekit.gateway.scan import Scanner, ScanResult
from smimekit.smime.canonical import CRLF, parse_headers, to_crlf

if TYPE_CHECKING:
    from smimekit.smime.wrap import Unwrapped
    from smimekit.store import Store
    from smimekit.validation.intermediates import IntermediateCache
    from smimekit.validation.revocation import RevocationOptions
    from smimekit.validation.verdict import Verdict

__all__ = ["InboundContext", "InboundPolicy", "InboundSettings", "process_inbound",
           "strip_header"]


# What broken input may raise while it is read (as directory/harvest.py counts them).
# cryptography decodes a certificate's names and extensions when first asked, raising its own
# exceptions: smimekit.cms reads the message's certificates up front, these are for the rest.
_PARSE_ERRORS = (SmimeError, *asn1.PARSE_ERRORS, *CERTIFICATE_ERRORS, binascii.Error,
                 UnicodeError, RecursionError, ValueError, IndexError)


class InboundPolicy(Protocol):
    """What the effective policy of one recipient says about inbound mail
    (gateway/policy.py resolves the levels; :class:`InboundSettings` is a plain one)."""

    @property
    def decrypt(self) -> bool: ...

    @property
    def verify(self) -> bool: ...

    @property
    def harvest(self) -> bool: ...

    @property
    def webmail(self) -> bool: ...


@dataclass(frozen=True)
class InboundSettings:
    """An :class:`InboundPolicy` with the built-in defaults."""

    decrypt: bool = True
    verify: bool = True
    harvest: bool = True
    webmail: bool = False


@dataclass(frozen=True)
class InboundContext:
    """What inbound processing needs besides the message (built once per gateway)."""

    config: GatewayConfig
    trust: Sequence[x509.Certificate] = ()
    """The organisation's trust anchors for verifying signatures."""
    store: Store | None = None
    """Where valid signers' certificates are kept (None: nothing is harvested)."""
    revocation: RevocationOptions | None = SOFT_REVOCATION
    """How revocation is checked when verifying (default: soft-fail; None: not checked)."""
    intermediates: IntermediateCache | None = None
    scanner: Scanner | None = None
    rules: dlp.RuleSet = field(default_factory=dlp.RuleSet)
    hostname: str = "localhost"
    """Names the gateway in the result header."""
    now: Callable[[], dt.datetime] | None = None
    """The time signatures are judged at (None: the current time)."""
    harvest_memo: HarvestMemo | None = None
    """Signers recorded in the directory lately, not written again (None: every message)."""

    @classmethod
    def from_config(cls, config: GatewayConfig, *, trust: Sequence[x509.Certificate] = (),
                    store: Store | None = None,
                    revocation: RevocationOptions | None = SOFT_REVOCATION,
                    intermediates: IntermediateCache | None = None,
                    hostname: str | None = None) -> InboundContext:
        """The context of ``config``: its scanner and compiled DLP rules.

        Raises:
            ConfigError: a bad ``[gateway.scan]`` or ``[[gateway.dlp]]``, a rule asking for
                quarantine without ``quarantine_dir``, or a result header name that is not a
                header field name.
        """
        if not re.fullmatch(r"[!-9;-~]+", config.result_header):
            raise ConfigError(f"gateway.result_header {config.result_header!r} is not a"
                              " header field name")
        rules = dlp.compile_rules(config.dlp)
        if config.quarantine_dir is None and any(r.action == "quarantine" for r in config.dlp):
            raise ConfigError("a [[gateway.dlp]] rule quarantines but gateway.quarantine_dir"
                              " is not set")
        return cls(config=config, trust=tuple(trust), store=store, revocation=revocation,
                   intermediates=intermediates,
                   scanner=Scanner(config.scan) if config.scan is not None else None,
                   rules=rules, hostname=hostname or socket.gethostname() or "localhost",
                   harvest_memo=(HarvestMemo(config.harvest_memo_seconds)
                                 if config.harvest_memo_seconds > 0 else None))


_BLANK_LINE = re.compile(rb"\n\r?\n")


def strip_header(message: bytes, name: str) -> tuple[bytes, int]:
    """``message`` without any top-level header field called ``name`` (any case, folded
    lines included), and how many were removed. Only the header block is read; the body
    is kept byte for byte (a message without the field is returned as it is, uncopied).
    The whole header block is parsed, so a field cannot hide behind a malformed line.

    Raises:
        MIMEError: the header block cannot be read.
    """
    if message.startswith((b"\r\n", b"\n")):
        cut = 0
    else:
        blank = _BLANK_LINE.search(message)  # stops at the first: the body is not read
        cut = blank.start() + 1 if blank else len(message)
    fields = parse_headers(to_crlf(message[:cut]).removesuffix(CRLF))
    kept = [f for f in fields if f.lname != name.lower()]
    if len(kept) == len(fields):
        return message, 0
    new_head = b"".join(f.raw + CRLF for f in kept)
    rest = message[cut:] if cut < len(message) else CRLF
    return new_head + rest, len(fields) - len(kept)


@dataclass
class _Clear:
    """What reading the message with one recipient's keys gave."""

    encryption: str
    """none | decrypted | not-for-held-keys | not-decrypted | failed | inside-signature"""
    encryption_detail: str = ""
    decrypted: bytes | None = None
    """The message with its encryption removed (signatures inside kept)."""
    unwrapped: Unwrapped | None = None
    """Every layer removed (for the verdict, harvest and the clear content)."""
    unwrap_error: str = ""
    verdict: Verdict | None = None
    harvested: str = ""
    protected: bool = False
    """Protected header fields were restored when the encryption was removed."""


@dataclass
class _Work:
    """Per message: what does not depend on the recipient, computed once."""

    received: bytes
    stripped: int
    encrypted: bool
    """The message itself is encrypted (application/pkcs7-mime enveloped)."""
    smime: bool
    """Encrypted or signed: held keys may open a layer (e.g. a triple-wrapped message)."""
    by_keys: dict[tuple[str, ...], _Clear] = field(default_factory=dict)
    scans: dict[bytes, ScanResult] = field(default_factory=dict)
    """By content (dict keys: bytes hash once, and the same object compares at once)."""
    dlps: dict[bytes, dlp.DlpResult] = field(default_factory=dict)
    quarantined: dict[bytes, str] = field(default_factory=dict)
    from_outside: bool = False
    """Refusals are silent (no DSN: no backscatter), see the module docstring."""


def process_inbound(
    envelope: Envelope,
    recipients: Sequence[str],
    *,
    held_keys: HeldKeys,
    policy_for: Callable[[str], InboundPolicy],
    context: InboundContext,
    from_outside: bool = False,
) -> Outcome:
    """Process ``envelope`` for ``recipients`` (those of its recipients in our domains).

    Returns the deliveries (recipients grouped by identical output), one decision per
    recipient, and the refused ones (malware, a DLP ``reject``, or a DLP
    ``require-encryption`` for a recipient without a held certificate and no quarantine);
    none when ``from_outside`` (the public door): those are quarantined or dropped instead.

    Raises:
        GatewayError: permanent when the message's header cannot be read (from outside:
            quarantined or dropped instead, as refusals are); temporary when
            the scanner fails under ``on_failure = "defer"``, the quarantine cannot be
            written, or the store fails while reading keys.
    """
    name = context.config.result_header
    try:
        received, stripped = strip_header(envelope.data, name)
    except MIMEError as exc:
        if from_outside:  # a 5xx would bounce to a sender that may be forged
            return _unreadable(envelope, recipients, context)
        raise GatewayError(f"the message header cannot be read: {exc}", permanent=True) from None
    encrypted = _is_encrypted(received)
    work = _Work(received, stripped, encrypted, encrypted or _is_smime(received),
                 from_outside=from_outside)
    outputs: dict[bytes, list[str]] = {}
    decisions: list[Decision] = []
    refused: list[Refusal] = []
    for recipient in recipients:
        data, decision, refusal = _one(recipient, envelope, work, held_keys,
                                       policy_for(recipient), context)
        decisions.append(decision)
        if refusal is not None:
            refused.append(refusal)
        if data is not None:
            outputs.setdefault(data, []).append(recipient)
    deliveries = tuple(Delivery(envelope.mail_from, tuple(rcpts), data)
                       for data, rcpts in outputs.items())
    return Outcome(deliveries, tuple(decisions), tuple(refused))


def _forged_inside(clear: _Clear, name: str) -> bool:
    """Whether a result header sits among the header fields the reader's client shows as
    the message's own once the protection is removed: the restored protected view
    (RFC 9788), the signed entity's own header section, a wrapped message/rfc822's. The
    outer one was stripped before reading, so any found here came from the sender."""
    unwrapped = clear.unwrapped
    if unwrapped is None or not unwrapped.signed:
        return False  # no signature: what decryption restores is stripped like the rest
    lname = name.lower()
    if any(h.lname == lname for h in (*unwrapped.signed_headers, *unwrapped.inner_headers)):
        return True
    try:
        view = unwrapped.message()
        blank = _BLANK_LINE.search(view)
        head = view[:blank.start() + 1] if blank else view
        return any(f.lname == lname for f in parse_headers(to_crlf(head).removesuffix(CRLF)))
    except _PARSE_ERRORS:
        return False


def _is_smime(message: bytes) -> bool:
    from smimekit.smime.canonical import Entity
    from smimekit.smime.message import is_multipart_signed, is_pkcs7_mime

    try:
        root = Entity.parse(message)
    except MIMEError:
        return False
    return is_pkcs7_mime(root) or is_multipart_signed(root)


def _is_encrypted(message: bytes) -> bool:
    from smimekit.smime.canonical import Entity
    from smimekit.smime.message import is_pkcs7_mime

    try:
        root = Entity.parse(message)
    except MIMEError:
        return False
    if not is_pkcs7_mime(root):
        return False
    smime_type = root.params.get("smime-type", "").lower()
    if smime_type in ("enveloped-data", "authenveloped-data"):
        return True
    if smime_type:
        return False
    from smimekit.cms.enveloped import content_type_of
    from smimekit.smime.message import pkcs7_der

    try:
        return content_type_of(pkcs7_der(root)) != "signed_data"
    except (SmimeError, ValueError):
        return False


def _one(recipient: str, envelope: Envelope, work: _Work, held_keys: HeldKeys,
         policy: InboundPolicy, context: InboundContext
         ) -> tuple[bytes | None, Decision, Refusal | None]:
    # the effective inbound policy, for the audit log (the pipeline adds the levels)
    facts: dict[str, str] = {"policy": ", ".join(
        f"{name}={'yes' if getattr(policy, name) else 'no'}"
        for name in ("decrypt", "verify", "harvest", "webmail"))}
    if work.stripped:
        facts["stripped"] = str(work.stripped)
    looked_up: list[Sequence[HeldKey]] = []

    def history() -> Sequence[HeldKey]:
        """The recipient's held keys, newest first, looked up once and only if needed."""
        if not looked_up:
            try:
                looked_up.append(held_keys.decryption_keys(recipient))
            except (StoreError, KeyLoadError) as exc:  # the store or a token: retry later
                raise GatewayError(f"cannot read the held keys of {recipient}: {exc}") \
                    from None
        return looked_up[0]

    def keys() -> Sequence[HeldKey]:
        return history() if work.smime and policy.decrypt else ()

    def current() -> x509.Certificate | None:
        """The certificate to re-encrypt to: the recipient's current one, never a retired
        key of the history (it may be compromised)."""
        try:
            return held_keys.encryption_certificate(recipient)
        except (StoreError, KeyLoadError) as exc:
            raise GatewayError(f"cannot read the held keys of {recipient}: {exc}") from None

    clear = _read(work, keys, policy, context)
    facts["encryption"] = clear.encryption
    if clear.encryption_detail:
        facts["encryption-detail"] = clear.encryption_detail
    _signature_facts(clear, policy, facts)
    # A result header inside the sender's signed header section (RFC 9788: what the
    # reader's client shows as the message's own header) cannot be removed without breaking
    # the signature. A signature the gateway verified goes, so that the reader sees the
    # verified content under the gateway's verdict alone; one it could not verify stays (the
    # gateway never removes what it cannot vouch for) and the verdict says it is forged.
    verified_view: bytes | None = None
    if clear.unwrapped is not None and _forged_inside(clear, context.config.result_header):
        facts["forged"] = "a result header inside the signed part"
        if clear.verdict is None or not clear.verdict.valid:
            facts["forged"] += "; not removable (the signature was not verified)"
        elif clear.decrypted is None and clear.unwrapped.encrypted:
            # signed outside, encrypted inside (delivered as received): removing the
            # signature would deliver the content decrypted, to desktop users too
            facts["forged"] += "; not removable (encrypted inside the signature)"
        else:
            verified_view, _ = strip_header(clear.unwrapped.message(),
                                            context.config.result_header)
            facts["forged"] += "; signature removed after verifying it"

    # The clear content: what the scanner and the rules read (None: still encrypted).
    content = clear.unwrapped.message() if clear.unwrapped is not None else \
        clear.decrypted if clear.decrypted is not None else \
        work.received if clear.encryption in ("none", "inside-signature") else None
    require_encryption = ""
    if content is None:
        facts["scan"] = "not-scanned"
    else:
        result = _scan(work, content, context)
        if result is not None:
            facts["scan"] = result.status
            if result.detail:
                facts["scan-detail"] = result.detail
            if result.status == "infected":
                return _refuse(recipient, f"the message carries malware ({result.detail})",
                               facts, work, envelope, context)
        found = _dlp(work, content, context)
        if found.fired:
            facts["dlp"] = found.summary()
        if found.truncated:
            facts["dlp-incomplete"] = "; ".join(found.notes) or "not everything was counted"
        if found.action == "reject":
            return _refuse(recipient, f"rejected by the data-loss rule"
                           f" {', '.join(found.names('reject'))}", facts, work, envelope,
                           context)
        if found.action == "quarantine":
            path = _quarantine(work, envelope, context)
            facts["quarantine"] = path
            names = ", ".join(found.names("quarantine"))
            return None, _decision(recipient, "quarantined", f"quarantined by the data-loss"
                                   f" rule {names} in {path}", facts), None
        if found.action == "require-encryption":
            require_encryption = ", ".join(found.names("require-encryption"))

    # What the recipient receives.
    sealed = False  # the result header travels inside the new encryption (and outside)
    if clear.decrypted is None:
        data = work.received if verified_view is None else verified_view
        action = "verified" if facts["signature"] in ("valid", "invalid") else "passed"
    elif policy.webmail and not require_encryption:
        vouched = clear.verdict is not None and clear.verdict.valid
        plain = clear.unwrapped is not None and not clear.unwrapped.signed
        data = clear.unwrapped.message() if clear.unwrapped is not None and (vouched or plain) \
            else clear.decrypted
        # restored protected header fields must not smuggle a result header in either
        data, _ = strip_header(data, context.config.result_header)
        action = "decrypted"
    else:
        inside = verified_view if verified_view is not None else \
            strip_header(clear.decrypted, context.config.result_header)[0]
        encrypted = _seal(inside, current(), facts, context, "encrypted")
        if encrypted is None:
            # Mail stays encrypted end to end: the original goes on, readable with the
            # key history, never the clear content.
            facts["re-encryption"] += "; delivered as received"
            data, action = work.received, "passed"
        else:
            data, action, sealed = encrypted, "re-encrypted", True
    if require_encryption and not sealed and not _is_encrypted(data):
        # the message as it would go (a signature kept), encrypted to the recipient
        encrypted = _seal(data, current(), facts, context, "encrypted (data-loss rule)")
        if encrypted is None:
            if context.config.quarantine_dir is not None:
                path = _quarantine(work, envelope, context)
                facts["quarantine"] = path
                return None, _decision(
                    recipient, "quarantined", f"the data-loss rule {require_encryption}"
                    f" requires encryption and no certificate of {recipient} is held:"
                    f" quarantined in {path}", facts), None
            return _refuse(recipient, f"the data-loss rule {require_encryption} requires"
                           f" encryption and the gateway holds no usable certificate of"
                           f" {recipient}", facts, work, envelope, context)
        data, action, sealed = encrypted, "re-encrypted", True
    if action not in ("decrypted", "re-encrypted"):
        facts.pop("headers", None)  # delivered as received: the reader's client restores them
    facts.setdefault("delivered", {"decrypted": "clear"}.get(action, "as-received"))
    decision = _decision(recipient, action, _reason(action, facts), facts)
    if sealed:
        return data, decision, None
    return _result_header(context, facts) + data, decision, None


def _refuse(recipient: str, reason: str, facts: dict[str, str], work: _Work,
            envelope: Envelope, context: InboundContext
            ) -> tuple[None, Decision, Refusal | None]:
    """Refuse ``recipient``: a Refusal (DSN) for our own senders; for mail from outside the
    message is quarantined (``quarantine_dir``) or dropped, never bounced (backscatter)."""
    if not work.from_outside:
        return None, _decision(recipient, "rejected", reason, facts), Refusal(recipient, reason)
    facts["dsn"] = "none (from outside: no backscatter)"
    if context.config.quarantine_dir is not None:
        path = _quarantine(work, envelope, context)
        facts["quarantine"] = path
        return None, _decision(recipient, "quarantined", f"{reason}; from outside: quarantined"
                               f" in {path}, no DSN", facts), None
    return None, _decision(recipient, "rejected", f"{reason}; from outside: dropped without a"
                           " DSN (no backscatter to a sender that may be forged)", facts), None


def _unreadable(envelope: Envelope, recipients: Sequence[str], context: InboundContext
                ) -> Outcome:
    """Mail from outside whose header block cannot be read: quarantined (as it arrived) or
    dropped, never bounced; the decision says so (not what the header held)."""
    reason = "the message header cannot be read"
    facts = {"dsn": "none (from outside: no backscatter)"}
    if context.config.quarantine_dir is not None:
        head = f"X-Smimekit-Envelope-From: <{_safe(envelope.mail_from)}>\r\n" + "".join(
            f"X-Smimekit-Envelope-To: <{_safe(r)}>\r\n" for r in envelope.recipients)
        path = str(dlp.quarantine(head.encode() + envelope.data, context.config.quarantine_dir,
                                  label="inbound"))
        return Outcome((), tuple(_decision(r, "quarantined", f"{reason}; from outside:"
                                           f" quarantined in {path}, no DSN",
                                           {**facts, "quarantine": path})
                                 for r in recipients))
    return Outcome((), tuple(_decision(r, "rejected", f"{reason}; from outside: dropped"
                                       " without a DSN (no backscatter to a sender that may"
                                       " be forged)", facts) for r in recipients))


def _seal(content: bytes, current: x509.Certificate | None, facts: dict[str, str],
          context: InboundContext, delivered: str) -> bytes | None:
    """``content`` with the result header, encrypted to the recipient's ``current``
    certificate (the newest by date among the held ones not retired and valid now).

    The header goes in before encrypting: with RFC 9788 header protection the reader's
    client shows the protected header fields, so the verdict must be among them (without
    header protection the encryption leaves it outside, where it is read as before).
    None (and why, in ``facts``) when no current certificate is held (none, or all retired
    or expired) or it is unfit.
    """
    from smimekit.api import encrypt

    if current is None:
        facts["re-encryption"] = ("failed: no current certificate of the recipient is held"
                                  " (none, or all retired or expired)")
        return None
    header = _result_header(context, {**facts, "delivered": delivered})
    try:
        data = encrypt(header + content, [current], trust=None)
    except EncryptionError as exc:
        facts["re-encryption"] = f"failed: {_short(str(exc))}"
        return None
    facts["delivered"] = delivered
    facts["re-encrypted-to"] = f"serial {current.serial_number:x}"
    return data


def _read(work: _Work, keys: Callable[[], Sequence[HeldKey]], policy: InboundPolicy,
          context: InboundContext) -> _Clear:
    flags = ("decrypt" if policy.decrypt else "", "verify" if policy.verify else "",
             "harvest" if policy.harvest else "")
    if not work.encrypted:
        # Signed or plain: the same for every recipient (and no key is looked up), unless
        # an encrypted layer sits inside a signature.
        shared = work.by_keys.get(flags)
        if shared is None:
            shared = work.by_keys[flags] = _read_uncached(work, (), policy, context)
        if shared.encryption != "not-decrypted":
            return shared
    held = keys()
    if not held and not work.encrypted:
        return work.by_keys[flags]
    ident = tuple(k.certificate.fingerprint(hashes.SHA256()).hex() for k in held)
    cache_key = (*ident, *flags)
    cached = work.by_keys.get(cache_key)
    if cached is None:
        cached = work.by_keys[cache_key] = _read_uncached(work, held, policy, context)
    return cached


def _read_uncached(work: _Work, held: Sequence[HeldKey], policy: InboundPolicy,
                   context: InboundContext) -> _Clear:
    from smimekit.smime.wrap import unwrap

    pairs: list[tuple[PrivateKeyTypes, x509.Certificate | None]] = [
        (k.key, k.certificate) for k in held]
    if not work.encrypted:
        clear = _Clear("none")
        source = work.received
    elif not pairs:
        return _Clear("not-decrypted", "no key of this recipient is held by the gateway"
                      if policy.decrypt else "decryption is off for this recipient")
    else:
        try:
            first = unwrap(work.received, keys=pairs, encryption_only=True)
        except KeyLoadError as exc:  # a held key's token failed: not the message's fault
            raise GatewayError(f"a held key cannot be used now: {exc}") from None
        except NoRecipientError:
            return _Clear("not-for-held-keys", "not encrypted to a key the gateway holds")
        except LegacyAlgorithmError as exc:
            return _Clear("failed", _short(str(exc)))
        except DecryptionError:
            return _Clear("failed", "the content does not decrypt (altered or a wrong key)")
        except _PARSE_ERRORS as exc:
            return _Clear("failed", f"malformed: {_short(str(exc)) or type(exc).__name__}")
        if first.partially_encrypted or not first.encrypted:
            return _Clear("failed", "only part of the message is encrypted")
        layer = [layer for layer in first.layers if layer.kind == "encrypted"][-1]
        clear = _Clear("decrypted", layer.detail.partition(", ")[0],
                       decrypted=first.message(),
                       protected=first.header_protection is not None)
        source = clear.decrypted or b""
    try:
        clear.unwrapped = unwrap(source, keys=pairs, extra_certs=())
    except KeyLoadError as exc:
        raise GatewayError(f"a held key cannot be used now: {exc}") from None
    except NoRecipientError:
        # encrypted inside a signature (triple wrapping) or twice: not for the held keys
        return _Clear("not-decrypted", "an encrypted part the held keys do not open")
    except _PARSE_ERRORS as exc:
        clear.unwrap_error = _short(str(exc)) or type(exc).__name__
        return clear
    if any(layer.error is not None for layer in clear.unwrapped.layers):
        clear.unwrap_error = "a signature does not verify"
    if clear.encryption == "none" and clear.unwrapped.encrypted:
        # signed outside, encrypted inside (triple wrapping): read for the verdict and the
        # scan; delivered as received, since the outer signature covers the ciphertext
        clear.encryption = "inside-signature"
    if clear.unwrapped.signed and policy.verify:
        from smimekit.api import _issuer_source
        from smimekit.validation.assess import assess

        at = context.now() if context.now is not None else None
        try:
            clear.verdict = assess(clear.unwrapped, trust=context.trust, at=at,
                                   revocation=context.revocation,
                                   issuer_source=_issuer_source(False, context.intermediates,
                                                                context.revocation))
        except _PARSE_ERRORS as exc:
            clear.unwrap_error = _short(str(exc)) or type(exc).__name__
            return clear
        if policy.harvest and context.store is not None and clear.verdict.valid:
            clear.harvested = _harvest(clear.unwrapped, clear.verdict, context, at)
    return clear


def _harvest(unwrapped: Unwrapped, verdict: Verdict, context: InboundContext,
             at: dt.datetime | None) -> str:
    from smimekit.directory.harvest import record_signers

    assert context.store is not None
    memo = context.harvest_memo
    key = memo.key(unwrapped, verdict) if memo is not None else b""
    if memo is not None and memo.recent(key):
        return "known"  # recorded by an earlier message less than harvest_memo_seconds ago
    try:
        report = record_signers(unwrapped, verdict, "gateway", store=context.store,
                                trust=context.trust, now=at)
    except StoreError as exc:
        # The message is not held back for the directory: it is delivered, the failure told.
        return f"failed: {_short(str(exc))}"
    if memo is not None and report.valid:
        memo.remember(key)
    if report.new:
        return "new"
    return "known" if report.valid else "not-kept"


def _signature_facts(clear: _Clear, policy: InboundPolicy, facts: dict[str, str]) -> None:
    unwrapped = clear.unwrapped
    if clear.encryption not in ("none", "decrypted", "inside-signature"):
        facts["signature"] = "unknown"  # inside the encryption: not read
        return
    if unwrapped is None:
        facts["signature"] = "invalid" if clear.unwrap_error else "none"
        if clear.unwrap_error:
            facts["signature-reason"] = clear.unwrap_error
        return
    if clear.protected or unwrapped.header_protection is not None:
        facts["headers"] = "restored"  # RFC 9788 protected header fields (issue 11)
    if not unwrapped.signed:
        facts["signature"] = "none"
        return
    if not policy.verify:
        facts["signature"] = "not-checked"
        return
    if clear.verdict is None:  # the signed structure could not be judged
        facts["signature"] = "invalid"
        facts["signature-reason"] = clear.unwrap_error or "cannot be judged"
        return
    verdict = clear.verdict
    facts["signature"] = "valid" if verdict.valid else "invalid"
    signers = sorted({e for s in verdict.signers for e in s.email})
    if signers:
        facts["signer"] = ",".join(signers)
    if not verdict.valid:
        facts["signature-reason"] = _short("; ".join(verdict.all_reasons()))
    if clear.harvested:
        facts["harvest"] = clear.harvested


def _scan(work: _Work, content: bytes, context: InboundContext) -> ScanResult | None:
    if context.scanner is None:
        return None
    if content not in work.scans:  # the same content for several recipients: scanned once
        work.scans[content] = context.scanner.check(content)
    return work.scans[content]


def _dlp(work: _Work, content: bytes, context: InboundContext) -> dlp.DlpResult:
    if not context.rules.for_direction("inbound"):
        return dlp.DlpResult()
    if content not in work.dlps:
        work.dlps[content] = dlp.evaluate(context.rules, content, "inbound")
    return work.dlps[content]


def _quarantine(work: _Work, envelope: Envelope, context: InboundContext) -> str:
    # The message as it arrived (outside result headers removed), once per message.
    if work.received not in work.quarantined:
        head = f"X-Smimekit-Envelope-From: <{_safe(envelope.mail_from)}>\r\n" + "".join(
            f"X-Smimekit-Envelope-To: <{_safe(r)}>\r\n" for r in envelope.recipients)
        path = dlp.quarantine(head.encode() + work.received, context.config.quarantine_dir,
                              label="inbound")
        work.quarantined[work.received] = str(path)
    return work.quarantined[work.received]


def _decision(recipient: str, action: str, reason: str, facts: dict[str, str]) -> Decision:
    return Decision(recipient, "inbound", action, reason, dict(facts))


def _reason(action: str, facts: dict[str, str]) -> str:
    signature = facts.get("signature", "none")
    said = {"valid": f"signed by {facts.get('signer', 'a valid signer')}, valid",
            "invalid": f"signature invalid ({facts.get('signature-reason', '')})",
            "not-checked": "signed, not checked (verify is off)",
            "unknown": "signature not read (still encrypted)",
            "none": "not signed"}[signature]
    if action == "re-encrypted":
        how = "decrypted with a held key and re-encrypted to the current certificate" \
            " (desktop user)"
    elif action == "decrypted":
        how = "decrypted with a held key and delivered in the clear (webmail user)"
    elif facts.get("encryption") == "none":
        how = "not encrypted, delivered as received"
    else:
        how = ("encrypted, delivered as received: "
               + facts.get("encryption-detail", facts.get("re-encryption", "")))
    return f"{how}; {said}"


# ---- the result header ---------------------------------------------------------------

_TOKEN = re.compile(r"[^A-Za-z0-9@._+:,/()-]")
_HEADER_KEYS = ("encryption", "signature", "signer", "signature-reason", "headers", "scan",
                "scan-detail", "dlp", "dlp-incomplete", "harvest", "delivered", "re-encryption",
                "stripped", "forged")


def _safe(text: str) -> str:
    return re.sub(r"[^\x20-\x7e]", "?", text).replace('"', "'").replace("\\", "/")[:300]


def _short(text: str) -> str:
    return _safe(text)[:200]


def _result_header(context: InboundContext, facts: dict[str, str]) -> bytes:
    parts = [_TOKEN.sub("", context.hostname) or "gateway"]
    for key in _HEADER_KEYS:
        value = facts.get(key)
        if value is None:
            continue
        token = _TOKEN.sub("", value)
        # quoted, and never a ";" inside, so that filters may split the fields on ";"
        parts.append(f"{key}={token}" if token == value and token
                     else f'{key}="{_safe(value).replace(";", ",")}"')
    # fold between items so no line passes 78 characters where it can be helped
    lines: list[str] = []
    current = f"{context.config.result_header}:"
    for i, part in enumerate(parts):
        piece = f" {part}" + (";" if i < len(parts) - 1 else "")
        if len(current) + len(piece) > 78 and current.strip():
            lines.append(current)
            current = "\t" + piece.lstrip()
        else:
            current += piece
    lines.append(current)
    return "\r\n".join(lines).encode("ascii") + CRLF
