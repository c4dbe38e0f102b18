"""Is this certificate fit to encrypt to? (OpenSSL does not ask; we do.)"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from cryptography import x509

from smimekit.validation.path import Purpose, validate
from smimekit.validation.revocation import RevocationOptions, check_chain
from smimekit.validation.verdict import CertSummary


def recipient_problems(
    cert: x509.Certificate,
    *,
    trust: Sequence[x509.Certificate] | None,
    intermediates: Sequence[x509.Certificate] = (),
    at: dt.datetime | None = None,
    allow_legacy: bool = False,
    revocation: RevocationOptions | None = None,
) -> list[str]:
    """Why mail must not be encrypted to ``cert``; empty when it may.

    With ``trust`` the whole chain is validated (dates, CA constraints, key usage, key size);
    with ``trust=None`` only what the certificate says of itself is checked: its dates, key
    usage and extended key usage, and key size. ``revocation`` (with ``trust``) adds CRL/OCSP.
    """
    when = at or dt.datetime.now(dt.UTC)
    if trust is not None:
        result = validate(
            cert,
            intermediates=intermediates,
            anchors=trust,
            at=when,
            purpose=Purpose.ENCRYPT,
            allow_legacy=allow_legacy,
        )
        problems = list(result.reasons) + list(result.usage_reasons)
        if revocation is not None and result.chain:
            # A revoked recipient fails under every policy; no answer only under hard.
            problems += check_chain(result.chain, at=when, options=revocation).reasons
        return problems
    # Without anchors the certificate is its own (only) link: its own checks still apply.
    result = validate(
        cert, anchors=[cert], at=when, purpose=Purpose.ENCRYPT, allow_legacy=allow_legacy
    )
    return list(result.reasons) + list(result.usage_reasons)


def describe(cert: x509.Certificate) -> str:
    summary = CertSummary.of(cert)
    return f"{summary.subject} <{', '.join(summary.emails) or 'no email'}>"
