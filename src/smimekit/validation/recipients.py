"""Is this certificate fit to encrypt to? (OpenSSL does not ask; we do.)"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa, x448, x25519

from smimekit.keys.kinds import certificate_public_key, is_ml_kem_key
from smimekit.validation.intermediates import IssuerSource, validate_with_lookups
from smimekit.validation.path import Purpose, validate
from smimekit.validation.revocation import RevocationOptions, check_chain
from smimekit.validation.verdict import CertSummary


@dataclass(frozen=True)
class RecipientCheck:
    """What :func:`check_recipient` found about one recipient certificate."""

    problems: tuple[str, ...]
    """Why mail must not be encrypted to it; empty when it may."""
    warnings: tuple[str, ...] = ()
    """What the caller should hear about but that does not refuse it: revocation status
    unknown under the soft or offline policy (the same text verify reports)."""
    chain: tuple[x509.Certificate, ...] = ()
    """The path found, recipient first, trust anchor last (empty without anchors or path)."""

    @property
    def ok(self) -> bool:
        return not self.problems


def check_recipient(
    cert: x509.Certificate,
    *,
    trust: Sequence[x509.Certificate] | None,
    intermediates: Sequence[x509.Certificate] = (),
    at: dt.datetime | None = None,
    allow_legacy: bool = False,
    revocation: RevocationOptions | None = None,
    issuer_source: Callable[[x509.Certificate], Iterable[x509.Certificate]] | None = None,
) -> RecipientCheck:
    """Check ``cert`` as a recipient, as verify checks a signer.

    With ``trust`` the whole chain is validated (dates, CA constraints, key usage, key size),
    its missing intermediates taken from ``intermediates`` and then ``issuer_source`` (an
    :class:`~smimekit.validation.intermediates.IssuerSource`: the data directory's cache and
    AIA caIssuers; the recipient's certificate is the one the sender chose, so following its
    URLs tells nobody more than the encrypted mail will). An ``IssuerSource`` also explains
    why no path was found, and learns the intermediates of a chain that validated.
    ``revocation`` (with ``trust``) adds CRL/OCSP: a revoked recipient fails under every
    policy, no answer only under hard (otherwise a warning).

    With ``trust=None`` only what the certificate says of itself is checked: its dates, key
    usage and extended key usage, and key size. Never raises for a bad certificate.
    """
    when = at or dt.datetime.now(dt.UTC)
    if trust is None:
        # Without anchors the certificate is its own (only) link: its own checks still apply.
        result = validate(
            cert, anchors=[cert], at=when, purpose=Purpose.ENCRYPT, allow_legacy=allow_legacy
        )
        return RecipientCheck(tuple(result.reasons) + tuple(result.usage_reasons))
    result, lookups = validate_with_lookups(
        cert,
        intermediates=intermediates,
        anchors=trust,
        at=when,
        purpose=Purpose.ENCRYPT,
        allow_legacy=allow_legacy,
        issuer_source=issuer_source,
    )
    problems = list(result.reasons) + list(result.usage_reasons)
    warnings: list[str] = []
    if not result.chain:
        problems += lookups  # why the cache and AIA did not help
    elif revocation is not None:
        report = check_chain(result.chain, at=when, options=revocation, extra_certs=intermediates)
        problems += report.reasons
        warnings += report.warnings
        if isinstance(issuer_source, IssuerSource) and result.trusted and report.ok:
            issuer_source.learn(result)
    elif isinstance(issuer_source, IssuerSource) and result.trusted:
        issuer_source.learn(result)
    return RecipientCheck(tuple(problems), tuple(warnings), result.chain)


def recipient_problems(
    cert: x509.Certificate,
    *,
    trust: Sequence[x509.Certificate] | None,
    intermediates: Sequence[x509.Certificate] = (),
    at: dt.datetime | None = None,
    allow_legacy: bool = False,
    revocation: RevocationOptions | None = None,
    issuer_source: Callable[[x509.Certificate], Iterable[x509.Certificate]] | None = None,
) -> list[str]:
    """Why mail must not be encrypted to ``cert``; empty when it may (see
    :func:`check_recipient`, whose warnings this drops)."""
    return list(
        check_recipient(
            cert,
            trust=trust,
            intermediates=intermediates,
            at=at,
            allow_legacy=allow_legacy,
            revocation=revocation,
            issuer_source=issuer_source,
        ).problems
    )


def can_receive_mail(cert: x509.Certificate, at: dt.datetime | None = None) -> bool:
    """``cert`` itself may receive mail: a key type that can (RSA, EC, X25519, X448,
    ML-KEM-768/1024), and its dates and key usage allow it (no chain checked)."""
    key = certificate_public_key(cert)
    receives = is_ml_kem_key(key) or isinstance(
        key,
        rsa.RSAPublicKey | ec.EllipticCurvePublicKey | x25519.X25519PublicKey | x448.X448PublicKey,
    )
    return receives and not check_recipient(cert, trust=None, at=at).problems


def describe(cert: x509.Certificate) -> str:
    summary = CertSummary.of(cert)
    return f"{summary.subject} <{', '.join(summary.emails) or 'no email'}>"
