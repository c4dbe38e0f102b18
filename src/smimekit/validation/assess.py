"""Turn what was unwrapped into a :class:`Verdict`: trust, key usage, sender binding."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any

from cryptography import x509

from smimekit.cms.signed import KeyPreference
from smimekit.dn import display_name
from smimekit.mailbox import comparable
from smimekit.smime.canonical import Header
from smimekit.smime.wrap import Unwrapped
from smimekit.validation.intermediates import IssuerSource, validate_with_lookups
from smimekit.validation.path import Purpose
from smimekit.validation.revocation import RevocationOptions, check_chain
from smimekit.validation.verdict import (
    CertSummary,
    LayerSummary,
    RevocationStatus,
    SignerVerdict,
    Verdict,
    cert_emails,
)


def _addresses(headers: Iterable[Header], names: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for value in (h.value() for h in headers if h.lname in names):
        out.extend(addr for _display, addr in getaddresses([value]) if addr)
    return out


def sender_addresses(unwrapped: Unwrapped) -> list[str]:
    """From and Sender addresses of the received message (RFC 8550 section 3).

    Every From and Sender field counts (a second From is how a reader gets shown another
    sender), and so do those the signature covers: a message signed with its own header
    block, or wrapped inside the protection (RFC 8551 3.1, RFC 9788). Signed ones first.
    """
    out = _addresses(unwrapped.signed_headers, ("from", "sender"))
    for headers in (unwrapped.root.headers, unwrapped.inner_headers):
        out += _addresses(headers, ("from", "sender"))
    return list(dict.fromkeys(out))


def unsigned_from(unwrapped: Unwrapped) -> str | None:
    """The outer From when it names other addresses than the signed From, else None."""
    signed = _addresses(unwrapped.signed_headers, ("from",))
    outer = _addresses(unwrapped.root.headers, ("from",))
    if not signed or not outer:
        return None
    if {comparable(a) for a in outer} == {comparable(a) for a in signed}:
        return None
    return ", ".join(dict.fromkeys(outer))


CLOCK_SKEW = dt.timedelta(minutes=5)
DATE_TOLERANCE = dt.timedelta(hours=1)


def _date(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _time_problems(
    signing_time: dt.datetime | None,
    cert: x509.Certificate,
    when: dt.datetime,
    date_header: dt.datetime | None,
) -> list[str]:
    """Signing-time checks (RFC 8550 4.4 spirit; Thunderbird compares it with Date too)."""
    if signing_time is None:
        return []
    out = []
    stamp = signing_time.isoformat()
    if not cert.not_valid_before_utc <= signing_time <= cert.not_valid_after_utc:
        out.append(f"signing time {stamp} is outside the certificate's validity")
    if signing_time > when + CLOCK_SKEW:
        out.append(f"signing time {stamp} is in the future")
    if date_header is not None and date_header - signing_time > DATE_TOLERANCE:
        # An old signature under a newer Date is how a signed message gets replayed (this is
        # Thunderbird's rule too). The other way round, signed well after the Date, is mail
        # that sat in an outbox: the caller gets a warning for that.
        out.append(
            f"the signature ({stamp}) is more than an hour older than the Date header"
            f" ({date_header.isoformat()}): a re-used signature?"
        )
    return out


def _time_warnings(signing_time: dt.datetime | None, date_header: dt.datetime | None) -> list[str]:
    if signing_time is None or date_header is None:
        return []
    if signing_time - date_header > DATE_TOLERANCE:
        return [
            f"signed ({signing_time.isoformat()}) more than an hour after the Date header"
            f" ({date_header.isoformat()})"
        ]
    return []


def _key_preference(preference: KeyPreference | None) -> dict[str, Any]:
    """SignerVerdict fields for the encryption certificate a signer announced."""
    if preference is None:
        return {}
    cert = preference.certificate
    return {
        "encryption_key_preference": preference.identifier,
        "encryption_cert": CertSummary.of(cert) if cert is not None else None,
    }


SIGNING_TIME = "signing-time"
"""Pass as ``at`` to validate each signer at its own (self-asserted) signing time: archives."""


def assess(
    unwrapped: Unwrapped,
    *,
    trust: Sequence[x509.Certificate],
    at: dt.datetime | str | None = None,
    extra_certs: Sequence[x509.Certificate] = (),
    allow_legacy: bool = False,
    revocation: RevocationOptions | None = None,
    issuer_source: Callable[[x509.Certificate], Iterable[x509.Certificate]] | None = None,
) -> Verdict:
    """The verdict on an unwrapped message at ``at`` (default: now, or ``SIGNING_TIME``).

    ``issuer_source`` supplies issuers the message lacks (see :func:`validate`). An
    :class:`~smimekit.validation.intermediates.IssuerSource` also explains, when no path was
    found, why its cache and AIA could not help, and learns the intermediates of every
    signer's chain that validated (and passed revocation).
    """
    at_signing_time = at == SIGNING_TIME
    if isinstance(at, str) and not at_signing_time:
        raise ValueError(f"at must be a datetime or {SIGNING_TIME!r}")
    now = dt.datetime.now(dt.UTC)
    when = now if at is None or isinstance(at, str) else at
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    senders = sender_addresses(unwrapped)
    signed_from = _addresses(unwrapped.signed_headers, ("from",))
    mismatch = unsigned_from(unwrapped)
    explained = {comparable(a) for a in _addresses(unwrapped.root.headers, ("from",))}
    date_header = _date(unwrapped.root.get("date"))
    reasons: list[str] = []
    warnings: list[str] = []
    signers: list[SignerVerdict] = []
    for layer in unwrapped.layers:
        if layer.kind != "signed":
            continue
        if layer.error is not None:
            reasons.append(str(layer.error))
            continue
        assert layer.signed is not None
        pool = list(layer.signed.certificates) + list(extra_certs)
        for signer in layer.signed.signers:
            cert = signer.certificate
            signer_time = when
            time_reasons: list[str] = []
            if at_signing_time:
                # Archives: judge the chain as it stood when the message was signed. The
                # signing time is the signer's own claim; the verdict says so.
                if signer.signing_time is None:
                    time_reasons.append(
                        "validation at signing time asked for, but the"
                        " signature has no signing-time attribute"
                    )
                else:
                    signer_time = signer.signing_time
                    warnings.append(
                        "validated at the signing time the signer asserted"
                        f" ({signer_time.isoformat()}), not at a trusted time"
                    )
            # Only signers whose signature verified get here: the certificate's key signed
            # this message, so an issuer_source may follow the URLs in it.
            path, lookup_reasons = validate_with_lookups(
                cert,
                intermediates=pool,
                anchors=trust,
                at=signer_time,
                purpose=Purpose.SIGN,
                allow_legacy=allow_legacy,
                issuer_source=issuer_source,
            )
            statuses = tuple(RevocationStatus(display_name(c.subject)) for c in path.chain[:-1])
            if revocation is not None and path.chain:
                # Only chains that reached an anchor: never fetch for an unknown signer's
                # certificate (the URLs in it are the sender's to choose).
                report = check_chain(
                    path.chain,
                    at=signer_time,
                    options=revocation,
                    asserted_time=at_signing_time and signer.signing_time is not None,
                    extra_certs=pool,
                )
                statuses = report.statuses
                revocation_reasons = list(report.reasons)
                warnings += report.warnings
            else:
                revocation_reasons = []
            emails = cert_emails(cert)
            from_match: bool | None = None
            signer_reasons = list(path.reasons) + list(path.usage_reasons) + revocation_reasons
            if not path.chain:
                signer_reasons += lookup_reasons  # why the cache and AIA did not help
            elif (isinstance(issuer_source, IssuerSource) and path.trusted
                  and not revocation_reasons):
                issuer_source.learn(path)
            if senders:
                bound = {comparable(e) for e in emails}
                unbound = [s for s in senders if comparable(s) not in bound]
                if mismatch is not None:
                    # The signed From is the authoritative one; an outer From that says
                    # otherwise was changed after signing (or by a list): never valid.
                    signer_reasons.append(
                        f"the unsigned outer From {mismatch} is not the signed From"
                        f" {', '.join(signed_from)}"
                    )
                    unbound = [s for s in unbound if comparable(s) not in explained]
                from_match = not unbound and mismatch is None
                if unbound:
                    signer_reasons.append(
                        f"sender {', '.join(unbound)} is not an address of the signer's"
                        f" certificate ({', '.join(emails) or 'none'})"
                    )
            else:
                # RFC 8550 section 3: the signer must be bound to the From (or Sender)
                # address; a message without one cannot be bound to anyone.
                from_match = False
                signer_reasons.append(
                    "the message has no From address to bind the signer to (RFC 8550 section 3)"
                )
            signer_reasons += time_reasons
            signer_reasons += _time_problems(
                signer.signing_time, cert, now if at_signing_time else when, date_header
            )
            warnings += _time_warnings(signer.signing_time, date_header)
            signers.append(
                SignerVerdict(
                    intact=True,
                    trusted=path.trusted,
                    signer=CertSummary.of(cert),
                    email=tuple(emails),
                    chain=tuple(CertSummary.of(c) for c in path.chain),
                    digest_algorithm=signer.digest_algorithm,
                    signature_algorithm=signer.signature_algorithm,
                    signing_time=signer.signing_time,
                    key_usage_ok=path.key_usage_ok,
                    from_match=from_match,
                    revocation=statuses,
                    reasons=tuple(signer_reasons),
                    validation_time=signer_time,
                    **_key_preference(signer.encryption_preference),
                )
            )
    if unwrapped.partially_signed:
        reasons.append(
            "only a part of the message is signed (a signed part inside an unsigned"
            " multipart); the message as a whole is not signed"
        )
    elif not unwrapped.signed:
        reasons.append("the message is not signed")
    protection = unwrapped.header_protection
    if protection is not None:
        reasons += protection.problems
        if protection.disagreed:
            warnings.append(
                "outer header fields differ from what the sender protected (changed on the"
                f" way?): {', '.join(protection.disagreed)}; the protected ones are shown"
            )
    if unwrapped.partially_encrypted:
        warnings.append(
            "an encrypted part sat next to unencrypted parts; only the encrypted part is shown"
        )
    return Verdict(
        signers=tuple(signers),
        layers=tuple(
            LayerSummary(layer.kind, layer.form, layer.detail) for layer in unwrapped.layers
        ),
        validation_time=when,
        from_address=(signed_from or senders or [""])[0] or None,
        unsigned_from=mismatch,
        partially_signed=unwrapped.partially_signed,
        partially_encrypted=unwrapped.partially_encrypted,
        warnings=tuple(dict.fromkeys(warnings)),
        reasons=tuple(reasons),
        header_protection=protection,
    )
