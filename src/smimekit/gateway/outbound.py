"""Outbound mail at the gateway: sign, encrypt per recipient, or fall back (docs/gateway.md).

:func:`process_outbound` takes one message from one of our users to recipients outside and,
once per message:

1. the **subject trigger** (the sender's policy ``subject_trigger``, e.g. ``[encrypt]``, any
   case) makes encryption required for every recipient and is removed from the Subject;
2. the outbound **data-loss rules** run on the clear message: ``reject`` refuses every
   recipient, ``quarantine`` keeps the message in ``quarantine_dir`` and delivers nothing,
   ``require-encryption`` makes encryption required, ``warn`` is noted in the decisions;
3. the **signer**: the sender's key held by the gateway (policy ``sign``), else the
   organisation's key (policy ``organisation_signature``), else none; when signing was set
   in the configuration and no key can sign, ``missing_key = "defer"`` (the default) makes
   the whole message a temporary failure (4xx) instead of unsigned mail;

then per recipient, with the recipient's effective policy:

* ``encrypt = "always"``, the trigger or a DLP rule: encryption is *required*;
  ``"if-possible"``: encrypted when the recipient has a usable certificate;
  ``"never"``: not encrypted unless required by the trigger or a DLP rule;
* the certificate comes from the directory's Resolver (store, LDAP, harvested, SMIMEA, as
  configured; validated there). When a source *failed* and none gave a usable certificate,
  the message is deferred (4xx): a directory outage must not turn into clear text;
* a required encryption without a certificate follows ``no_certificate``: ``clear`` (sent
  signed but readable), ``bounce`` (the recipient is refused; the sender's DSN names why), or
  ``pdf`` (the message as an AES-256 encrypted PDF 2.0 with the original attached,
  :mod:`smimekit.gateway.pdf`; a message that cannot be made into one refuses only those
  recipients), whose password goes to the sender in a separate message, to be passed on by
  another channel).

Recipients with the same treatment share one :class:`Delivery`: one message encrypted to all
their certificates (per header confidentiality policy), one signed clear message, one PDF
message. Encryption uses RFC 9788 header protection with the recipient's ``hcp`` (default
``baseline``) through :mod:`smimekit.api`.
"""

from __future__ import annotations

import email.utils
import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from email.header import Header as EncodedHeader
from email.header import decode_header, make_header
from email.message import EmailMessage
from typing import TYPE_CHECKING, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from smimekit import api
from smimekit.config import GatewayConfig
from smimekit.errors import DirectoryError, GatewayError, MalformedError, MIMEError, SmimeError
from smimekit.gateway import dlp
from smimekit.gateway.model import (
    Decision,
    Delivery,
    Envelope,
    HeldKey,
    HeldKeys,
    Outcome,
    Refusal,
)
from smimekit.gateway.pdf import message_pdf, new_password
from smimekit.gateway.policy import EffectivePolicy, Policy, domain_of, normalise
from smimekit.smime.canonical import CRLF, parse_headers, split_head_body, to_crlf

if TYPE_CHECKING:
    from smimekit.directory.resolver import LookupResult

__all__ = ["CertificateLookup", "OutboundContext", "process_outbound", "remove_trigger"]


class CertificateLookup(Protocol):
    """What the gateway asks for a recipient's certificate (the directory's Resolver)."""

    def lookup(self, address: str) -> LookupResult:
        """The usable certificates of ``address``, ranked, and every source's answer."""
        ...


@dataclass(frozen=True)
class OutboundContext:
    """What outbound processing needs besides the message (built once per gateway)."""

    config: GatewayConfig
    policy: Policy
    held_keys: HeldKeys
    resolver: CertificateLookup
    rules: dlp.RuleSet = field(default_factory=dlp.RuleSet)
    password: Callable[[], str] = new_password
    """Makes the password of a PDF (tests fix it)."""
    pdf: Callable[[bytes, str], bytes] = message_pdf
    """Makes the PDF of a message with a password (tests make it fail)."""
    notice_from: str = ""
    """The From of the password notice; "" for ``postmaster@<sender's domain>``."""


@dataclass
class _Recipient:
    address: str
    policy: EffectivePolicy
    treatment: str = "clear"
    """encrypt | clear | pdf | refuse"""
    certificate: x509.Certificate | None = None
    reason: str = ""
    details: dict[str, str] = field(default_factory=dict)
    required: str = ""
    """Why encryption was required without a certificate (for a ``pdf`` that fails)."""


def _from_addresses(head: bytes) -> list[str]:
    values = [f.value() for f in parse_headers(head) if f.lname == "from"]
    return [normalise(a) for _, a in email.utils.getaddresses(values) if a]


def protection(message: bytes) -> str:
    """``encrypted``, ``signed`` or ``none``: what the sender's own client already did."""
    from smimekit.cms.enveloped import content_type_of
    from smimekit.smime.canonical import Entity
    from smimekit.smime.message import is_multipart_signed, is_pkcs7_mime, pkcs7_der

    try:
        root = Entity.parse(message)
    except MIMEError:
        return "none"
    if is_multipart_signed(root):
        return "signed"
    if not is_pkcs7_mime(root):
        return "none"
    kind = root.params.get("smime-type", "").lower()
    if kind in ("enveloped-data", "authenveloped-data"):
        return "encrypted"
    if kind == "signed-data":
        return "signed"
    try:
        return "signed" if content_type_of(pkcs7_der(root)) == "signed_data" else "encrypted"
    except (SmimeError, ValueError):
        return "encrypted"  # unreadable CMS: never wrap it again, never put it in a PDF


def _subject(head: bytes) -> str | None:
    for f in parse_headers(head):
        if f.lname == "subject":
            value = f.value()
            try:
                return str(make_header(decode_header(value)))
            except (ValueError, LookupError, UnicodeError):
                return value
    return None


def remove_trigger(message: bytes, trigger: str) -> tuple[bytes, bool]:
    """``message`` with ``trigger`` (any case) taken out of its Subject, and whether it was
    there. The body is kept byte for byte; a Subject written as RFC 2047 encoded words is
    written anew (UTF-8) without the trigger.

    Raises:
        MIMEError: the header block cannot be read.
    """
    if not trigger:
        return message, False
    raw = to_crlf(message)
    head, offset = split_head_body(raw)
    fields = parse_headers(head)
    pattern = re.compile(re.escape(trigger), re.IGNORECASE)  # a literal: linear time
    out: list[bytes] = []
    found = False
    for f in fields:
        if f.lname == "subject" and not found:
            decoded = _subject(f.raw) or ""
            if pattern.search(decoded):
                found = True
                new = " ".join(p.strip() for p in pattern.split(decoded) if p.strip())
                value = EncodedHeader(new, "us-ascii" if new.isascii() else "utf-8",
                                      header_name=f.name).encode(linesep="\r\n")
                out.append(f"{f.name}: {value}".encode("ascii", "replace"))
                continue
        out.append(f.raw)
    if not found:
        return message, False
    return CRLF.join(out) + CRLF + CRLF + raw[offset:], True


@functools.lru_cache(maxsize=4096)
def _fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def _signer(ctx: OutboundContext, sender: str, policy: EffectivePolicy, head: bytes
            ) -> tuple[HeldKey | None, str]:
    """The key to sign with and a phrase for the reason.

    The sender's own key signs only a message whose From is exactly the envelope sender: a
    user must not get their colleague's From signed with their key (or theirs with a
    colleague's). Postfix's reject_sender_login_mismatch ties the envelope sender to the
    login; this ties the From to the envelope.
    """
    authors = _from_addresses(head)
    if policy.sign and authors != [normalise(sender)]:
        if not policy.organisation_signature:
            return None, (f"not signed: the From header ({', '.join(authors) or 'none'}) is not"
                          f" the envelope sender {normalise(sender)}")
        policy = replace(policy, sign=False)
    try:
        if policy.sign:
            held = ctx.held_keys.signing_key(sender)
            if held is not None:
                return held, f"signed with the sender's key ({policy.source('sign')})"
        if policy.organisation_signature:
            org = ctx.held_keys.organisation_key()
            if org is not None:
                return org, ("signed with the organisation's key"
                             f" ({policy.source('organisation_signature')})")
    except SmimeError as exc:  # a damaged row or the store down: not the sender's fault
        raise GatewayError(f"the gateway's keys cannot be read: {exc}") from None
    if not policy.sign and not policy.organisation_signature:
        return None, f"not signed ({policy.source('sign')})"
    # Signing was asked for and nothing can sign. Set in the configuration (sign = true,
    # organisation_signature = true or missing_key at any level), that is a demand: no
    # unsigned mail, the message waits in Postfix's queue for the key (a 4xx) unless
    # missing_key = "send-unsigned". The built-in sign alone signs when it can.
    demanded = (policy.sign and policy.levels.get("sign", "default") != "default") \
        or policy.organisation_signature \
        or policy.levels.get("missing_key", "default") != "default"
    if demanded and policy.missing_key == "defer":
        which = "the sender's or the organisation's" if policy.organisation_signature \
            else "the sender's"
        raise GatewayError(
            f"signing is required ({policy.source('sign')},"
            f" {policy.source('organisation_signature')}, {policy.source('missing_key')})"
            f" and the gateway holds no current signing key, {which}, for"
            f" {normalise(sender)}: import one, or set missing_key = \"send-unsigned\"")
    return None, ("not signed (the gateway holds no signing key for the sender;"
                  f" {policy.source('missing_key')})")


def _certificate(ctx: OutboundContext, recipient: str) -> tuple[x509.Certificate | None, str]:
    """The recipient's certificate, or None and why.

    Raises:
        GatewayError: (temporary) no usable certificate and a source failed to answer.
    """
    try:
        found = ctx.resolver.lookup(recipient)
    except DirectoryError as exc:
        return None, str(exc)
    if found.usable:
        best = found.usable[0]
        return best.certificate, f"certificate from {', '.join(best.sources)}"
    failed = [a for a in found.answers if a.status == "error"]
    if failed:
        raise GatewayError(f"cannot tell whether {recipient} has a certificate: "
                           + "; ".join(f"{a.source}: {a.error}" for a in failed))
    return None, found.explain()


def _plan(ctx: OutboundContext, recipient: str, required_by: str) -> _Recipient:
    policy = ctx.policy.resolve(recipient)
    r = _Recipient(recipient, policy, details={
        "encrypt": policy.source("encrypt"),
        "no_certificate": policy.source("no_certificate"),
    })
    required = policy.encrypt == "always" or bool(required_by)
    why_required = (required_by or policy.source("encrypt")) if required else ""
    if policy.encrypt == "never" and not required:
        r.reason = f"not encrypted: {policy.source('encrypt')}"
        return r
    cert, found = _certificate(ctx, recipient)
    if cert is not None:
        r.treatment, r.certificate = "encrypt", cert
        r.details["certificate"] = _fingerprint(cert)
        r.details["hcp"] = policy.source("hcp")
        r.reason = (f"encrypted ({why_required or policy.source('encrypt')}); {found}")
        return r
    r.details["lookup"] = found
    if not required:
        r.reason = f"not encrypted: no usable certificate ({policy.source('encrypt')})"
        return r
    action = policy.no_certificate
    head = f"encryption required by {why_required} but no usable certificate"
    if action == "clear":
        r.reason = f"{head}; sent readable ({policy.source('no_certificate')})"
    elif action == "bounce":
        r.treatment = "refuse"
        r.reason = f"{head} ({policy.source('no_certificate')})"
    else:
        r.treatment, r.required = "pdf", f"{head} ({policy.source('no_certificate')})"
        r.reason = (f"{head}; sent as a password-protected PDF, the password to the sender"
                    f" ({policy.source('no_certificate')})")
    return r


def _sign(data: bytes, signer: HeldKey) -> bytes:
    return api.sign(data, signer.key, signer.certificate, chain=signer.chain)


def _encrypt(data: bytes, certs: Sequence[x509.Certificate], signer: HeldKey | None,
             hcp: str) -> bytes:
    # The resolver validated every certificate (chain, dates, usage, revocation): the api
    # need not check them again. The sender's sent copy is their client's, not ours: no
    # include_self.
    if signer is not None:
        return api.sign_encrypt(data, signer.key, signer.certificate, certs, chain=signer.chain,
                                include_self=False, check_recipients=False, hcp=hcp)
    return api.encrypt(data, certs, check_recipients=False, hcp=hcp)


def _pdf_message(original: bytes, sender: str, recipients: Sequence[str], pdf: bytes
                 ) -> bytes:
    parsed = email.message_from_bytes(original)
    msg = EmailMessage()
    for name in ("From", "To", "Cc", "Date", "Reply-To", "In-Reply-To", "References"):
        if parsed[name] is not None:
            msg[name] = str(parsed[name])
    if msg["From"] is None:
        msg["From"] = sender
    if msg["To"] is None:
        msg["To"] = ", ".join(recipients)
    msg["Subject"] = f"Confidential message from {sender}"
    msg["Message-ID"] = email.utils.make_msgid(domain=domain_of(sender) or None)
    msg.set_content(
        f"{sender} sent you a confidential message. It is in the attached PDF, protected by a\n"
        "password that the sender will give you by another way (phone, text message).\n"
        "Open the PDF and enter that password to read the message.\n")
    msg.add_attachment(pdf, maintype="application", subtype="pdf", filename="message.pdf")
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


def _password_notice(ctx: OutboundContext, sender: str, subject: str | None,
                     recipients: Sequence[str], password: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = ctx.notice_from or f"postmaster@{domain_of(sender) or 'localhost'}"
    msg["To"] = sender
    msg["Subject"] = "Password for your confidential message"
    msg["Date"] = email.utils.formatdate(localtime=False)
    msg["Message-ID"] = email.utils.make_msgid(domain=domain_of(sender) or None)
    msg["Auto-Submitted"] = "auto-generated"
    shown = subject if subject is not None else "(no subject)"
    msg.set_content(
        f"Your message \"{shown}\" could not be encrypted for these recipients, who have no\n"
        "certificate:\n\n" + "".join(f"    {r}\n" for r in recipients)
        + "\nThey received it as a PDF protected by this password:\n\n"
        f"    {password}\n\n"
        "Give them the password by another way than e-mail (phone, text message).\n")
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


def process_outbound(envelope: Envelope, recipients: Sequence[str], ctx: OutboundContext
                     ) -> Outcome:
    """Process ``envelope`` for ``recipients`` (those of its recipients outside our domains).

    Returns the deliveries (recipients grouped by treatment), one decision per recipient,
    the refused recipients (``no_certificate = "bounce"``, DLP ``reject``), and, when a PDF
    went out, the password notice to the sender as one more delivery.

    Raises:
        GatewayError: permanent when the message's header cannot be read; temporary when the
            keys or the directory cannot be read, a directory source failed, signing or
            encryption fails, or the quarantine cannot be written.
    """
    sender = envelope.mail_from
    sender_policy = ctx.policy.resolve(sender)
    already = protection(envelope.data)
    if already == "encrypted":
        # End-to-end encrypted by the sender's client: the gateway cannot read it, must not
        # change it, and has nothing to add.
        reason = "already encrypted by the sender's client: passed unchanged"
        return Outcome((Delivery(sender, tuple(recipients), envelope.data),),
                       tuple(Decision(r, "outbound", "passed", reason,
                                      {"protection": "encrypted"}) for r in recipients))
    try:
        data, triggered = remove_trigger(envelope.data, sender_policy.subject_trigger)
        subject = _subject(split_head_body(to_crlf(data))[0])
    except (MIMEError, UnicodeError) as exc:
        raise GatewayError(f"the message header cannot be read: {exc}", permanent=True) from None
    common: dict[str, str] = {}
    required_by = ""
    if triggered:
        required_by = (f"the subject trigger {sender_policy.subject_trigger!r}"
                       f" ({sender_policy.levels.get('subject_trigger', 'default')})")
        common["trigger"] = sender_policy.subject_trigger
    found = dlp.evaluate(ctx.rules, data, "outbound")
    if found.action is not None:
        common["dlp"] = found.summary()
    if found.action == "reject":
        reason = f"refused by the data-loss rules: {found.summary()}"
        return Outcome((), tuple(Decision(r, "outbound", "rejected", reason, dict(common))
                                 for r in recipients),
                       tuple(Refusal(r, reason) for r in recipients))
    if found.action == "quarantine":
        where = dlp.quarantine(data, ctx.config.quarantine_dir, label="outbound")
        reason = f"quarantined by the data-loss rules: {found.summary()}"
        return Outcome((), tuple(Decision(r, "outbound", "quarantined", reason,
                                          {**common, "quarantine": str(where)})
                                 for r in recipients))
    if found.action == "require-encryption" and not required_by:
        required_by = f"the data-loss rules ({found.summary()})"
    if already == "signed":
        # The sender's client signed it: keep that signature as it is (the outer Subject is
        # outside it), encrypt around it per recipient, never sign it again.
        signer, signed_how = None, "signed by the sender's client (kept)"
        common["protection"] = "signed"
    else:
        signer, signed_how = _signer(ctx, sender, sender_policy,
                                     split_head_body(to_crlf(data))[0])
    common["signer"] = (_fingerprint(signer.certificate) if signer is not None else "none")
    plans = [_plan(ctx, r, required_by) for r in recipients]

    deliveries: list[Delivery] = []
    decisions: list[Decision] = []
    refused: list[Refusal] = []
    try:
        by_hcp: dict[str, list[_Recipient]] = {}
        for p in plans:
            if p.treatment == "encrypt":
                by_hcp.setdefault(p.policy.hcp, []).append(p)
        for hcp, group in by_hcp.items():
            certs = list(dict.fromkeys(p.certificate for p in group if p.certificate))
            out = _encrypt(data, certs, signer, hcp)
            deliveries.append(Delivery(sender, tuple(p.address for p in group), out))
        clear = [p for p in plans if p.treatment == "clear"]
        if clear:
            out = _sign(data, signer) if signer is not None else data
            deliveries.append(Delivery(sender, tuple(p.address for p in clear), out))
        pdfs = [p for p in plans if p.treatment == "pdf"]
        document = None
        if pdfs:
            password = ctx.password()
            try:
                document = ctx.pdf(data, password)
            except GatewayError as exc:
                if not exc.permanent:
                    raise
                # This message cannot become a PDF: only its PDF recipients are refused
                # (the sender's DSN says why); those with certificates still get it.
                for p in pdfs:
                    p.treatment = "refuse"
                    p.reason = f"{p.required}; {exc}"
        if pdfs and document is not None:
            names = [p.address for p in pdfs]
            out = _pdf_message(data, sender, names, document)
            if signer is not None:
                out = _sign(out, signer)
            deliveries.append(Delivery(sender, tuple(names), out))
            # The notice goes with an empty reverse-path: it is the gateway's, and must not
            # bounce back into a loop.
            deliveries.append(Delivery("", (sender,), _password_notice(
                ctx, sender, subject, names, password)))
    except GatewayError:
        raise
    except MalformedError as exc:  # the message itself: retrying cannot help, bounce it
        raise GatewayError(f"the message cannot be signed or encrypted as it is: {exc}",
                           permanent=True) from None
    except SmimeError as exc:  # keys, certificates, a bug in waiting: keep it, retry
        raise GatewayError(f"outbound processing failed: {exc}") from None
    signed = signer is not None or already == "signed"
    for p in plans:
        action = {"encrypt": "signed+encrypted" if signed else "encrypted",
                  "clear": "signed" if signed else "clear",
                  "pdf": "pdf", "refuse": "bounced"}[p.treatment]
        reason = f"{p.reason}; {signed_how}" if p.treatment != "refuse" else p.reason
        if found.action == "warn":
            reason += f"; data-loss warning: {found.summary()}"
        decisions.append(Decision(p.address, "outbound", action, reason,
                                  {**common, **p.details}))
        if p.treatment == "refuse":
            refused.append(Refusal(p.address, p.reason))
    return Outcome(tuple(deliveries), tuple(decisions), tuple(refused))

