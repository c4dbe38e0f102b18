"""OCSP (RFC 6960): the question for a certificate, and what a response says about it."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, SignatureAlgorithmOID

from smimekit.errors import RevocationError
from smimekit.keys.kinds import certificate_public_key
from smimekit.validation.names import name_key
from smimekit.validation.revinfo import (
    Answer,
    Context,
    NotApplicableError,
    cert_ext,
    check_hash,
    ext,
    freshness,
    has_oid,
    judge_revocation,
    load_ocsp_response,
    signature_ok,
    subject_name,
    unknown_critical,
)

# RFC 6960 CertID hash. openssl's responder rebuilds the CertID with whatever hash the request
# used (apps/ocsp.c; checked against 3.0), so SHA-256 is asked first. RFC 5019 "lightweight"
# responders (many public CAs) only know SHA-1 CertIDs: a request they cannot answer is asked
# again with SHA-1 (it is a lookup key there, not a signature).
CERT_ID_HASH: hashes.HashAlgorithm = hashes.SHA256()
FALLBACK_CERT_ID_HASH: hashes.HashAlgorithm = hashes.SHA1()  # noqa: S303
NONCE_BYTES = 16
# RFC 6960 4.4.4: the responder keeps answering for certificates expired since the cutoff.
_OCSP_ARCHIVE_CUTOFF = x509.ObjectIdentifier("1.3.6.1.5.5.7.48.1.6")


def _ocsp_pss(der: bytes) -> padding.PSS:
    from asn1crypto import ocsp as aocsp

    try:
        basic = aocsp.OCSPResponse.load(der)["response_bytes"]["response"].parsed
        params = basic["signature_algorithm"]["parameters"]
        mgf_hash = params["mask_gen_algorithm"]["parameters"]["algorithm"].native
        salt = params["salt_length"].native
    except (ValueError, TypeError, KeyError) as exc:
        raise RevocationError(f"OCSP response: unreadable RSASSA-PSS parameters: {exc}") from exc
    mgf: hashes.HashAlgorithm = {
        "sha256": hashes.SHA256(),
        "sha384": hashes.SHA384(),
        "sha512": hashes.SHA512(),
    }.get(mgf_hash, hashes.SHA1())  # noqa: S303
    return padding.PSS(padding.MGF1(mgf), salt)


@dataclass(frozen=True)
class OCSPQuestion:
    """A DER OCSPRequest for one certificate, and the nonce it carries."""

    der: bytes
    nonce: bytes | None
    cache_key: str
    """Issuer name hash, issuer key hash and serial (SHA-1 CertID), for the disk cache."""


def ocsp_question(
    cert: x509.Certificate,
    issuer: x509.Certificate,
    *,
    nonce: bool = True,
    algorithm: hashes.HashAlgorithm = CERT_ID_HASH,
) -> OCSPQuestion:
    """An OCSP request for ``cert`` (with a fresh 16-byte nonce unless ``nonce`` is False)."""
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, algorithm)
    value = os.urandom(NONCE_BYTES) if nonce else None
    if value is not None:
        builder = builder.add_extension(x509.OCSPNonce(value), critical=False)
    request = builder.build()
    key = _cert_id(cert, issuer, FALLBACK_CERT_ID_HASH)
    return OCSPQuestion(
        request.public_bytes(serialization.Encoding.DER),
        value,
        f"ocsp {key[0].hex()} {key[1].hex()} {cert.serial_number:x}",
    )


def _cert_id(
    cert: x509.Certificate, issuer: x509.Certificate, algorithm: hashes.HashAlgorithm
) -> tuple[bytes, bytes]:
    request = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, algorithm).build()
    return request.issuer_name_hash, request.issuer_key_hash


def _key_sha1(cert: x509.Certificate) -> bytes:
    # ResponderID byKey: SHA-1 of the subjectPublicKey BIT STRING (RFC 6960 4.2.1), which is
    # exactly the RFC 5280 method-1 key identifier.
    return x509.SubjectKeyIdentifier.from_public_key(certificate_public_key(cert)).digest


def _single_for(
    response: ocsp.OCSPResponse, cert: x509.Certificate, issuer: x509.Certificate
) -> ocsp.OCSPSingleResponse | None:
    ids: dict[str, tuple[bytes, bytes]] = {}
    for single in response.responses:
        if single.serial_number != cert.serial_number:
            continue
        alg = single.hash_algorithm
        if alg.name not in ids:
            try:
                ids[alg.name] = _cert_id(cert, issuer, alg)
            except (ValueError, UnsupportedAlgorithm):
                continue
        if (single.issuer_name_hash, single.issuer_key_hash) == ids[alg.name]:
            return single
    return None


def _responder_candidates(
    response: ocsp.OCSPResponse, issuer: x509.Certificate
) -> list[x509.Certificate]:
    pool = [issuer, *response.certificates]
    if response.responder_name is not None:
        named = name_key(response.responder_name)
        return [c for c in pool if name_key(c.subject) == named]
    wanted = response.responder_key_hash
    return [c for c in pool if _key_sha1(c) == wanted]


def _delegation_problem(
    responder: x509.Certificate,
    issuer: x509.Certificate,
    produced_at: dt.datetime,
    ctx: Context,
) -> str | None:
    """Why ``responder`` may not answer for ``issuer``'s certificates (RFC 6960 4.2.2.2)."""
    who = f"delegated OCSP responder {subject_name(responder)}"
    if name_key(responder.issuer) != name_key(issuer.subject):
        return f"{who} is not issued by the certificate's issuer"
    try:
        responder.verify_directly_issued_by(issuer)
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        return f"{who} is not signed by the certificate's issuer"
    eku = cert_ext(responder, x509.ExtendedKeyUsage)
    if not isinstance(eku, x509.ExtendedKeyUsage) or ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
        return f"{who} lacks the id-kp-OCSPSigning extended key usage"
    ku = cert_ext(responder, x509.KeyUsage)
    if isinstance(ku, x509.KeyUsage) and not (ku.digital_signature or ku.content_commitment):
        return f"{who}: key usage does not allow digitalSignature"
    for when, label in ((produced_at, "when it signed"), (ctx.reference, "at the reference time")):
        if not (
            responder.not_valid_before_utc - ctx.skew
            <= when
            <= responder.not_valid_after_utc + ctx.skew
        ):
            return f"{who} was not within its validity {label} ({when.isoformat()})"
    # id-pkix-ocsp-nocheck or not, the responder's own revocation is not checked: that would
    # recurse, and RFC 6960 4.2.2.2.1 lets a CA make its responders short-lived instead.
    return None


def _verify_ocsp_signature(
    der: bytes, response: ocsp.OCSPResponse, issuer: x509.Certificate, ctx: Context
) -> x509.Certificate | None:
    """The delegated responder that signed ``response``, or None when the issuer did."""
    try:
        alg = response.signature_hash_algorithm
    except UnsupportedAlgorithm:
        alg = None
    check_hash(alg, ctx, "OCSP response")
    pss = (
        _ocsp_pss(der)
        if response.signature_algorithm_oid == SignatureAlgorithmOID.RSASSA_PSS
        else None
    )
    candidates = _responder_candidates(response, issuer)
    if not candidates:
        raise RevocationError("OCSP response: the responder's certificate is not included")
    problems = []
    for candidate in candidates:
        if not signature_ok(
            certificate_public_key(candidate), response.signature, response.tbs_response_bytes,
            alg, pss,
        ):
            problems.append(f"signature does not verify with the key of {subject_name(candidate)}")
            continue
        if candidate == issuer or (
            name_key(candidate.subject) == name_key(issuer.subject)
            and certificate_public_key(candidate) == certificate_public_key(issuer)
        ):
            return None
        problem = _delegation_problem(candidate, issuer, response.produced_at_utc, ctx)
        if problem is None:
            return candidate
        problems.append(problem)
    raise RevocationError("OCSP response: " + "; ".join(problems))


def _single_extensions(response: ocsp.OCSPResponse) -> x509.Extensions:
    # cryptography reads singleExtensions only when the response holds one SingleResponse.
    try:
        return response.single_extensions
    except ValueError:
        return x509.Extensions([])


def evaluate_ocsp(
    data: bytes | ocsp.OCSPResponse,
    cert: x509.Certificate,
    issuer: x509.Certificate,
    ctx: Context,
    *,
    nonce: bytes | None = None,
) -> Answer:
    """What an OCSP response says about ``cert``; ``nonce``: the one our request carried.

    Raises:
        RevocationError: not a successful response, not about ``cert``, not signed by the
            issuer or a delegated responder with id-kp-OCSPSigning, nonce mismatch, an
            unrecognised critical extension, or dated in the future.
        MalformedError: the bytes are not an OCSP response.
    """
    if isinstance(data, ocsp.OCSPResponse):
        response, der = data, data.public_bytes(serialization.Encoding.DER)
    else:
        response, der = load_ocsp_response(data), data
    if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise RevocationError(f"OCSP responder answered {response.response_status.name}")
    single = _single_for(response, cert, issuer)
    if single is None:
        raise NotApplicableError("OCSP response is about another certificate")
    delegate = _verify_ocsp_signature(der, response, issuer, ctx)
    single_extensions = _single_extensions(response)
    unknown = unknown_critical(response.extensions) + unknown_critical(single_extensions)
    if unknown:
        raise RevocationError(f"OCSP response: unrecognised critical extension {unknown[0]}")
    echoed = ext(response.extensions, x509.OCSPNonce)
    if nonce is not None and isinstance(echoed, x509.OCSPNonce) and echoed.nonce != nonce:
        # A responder may leave the nonce out (RFC 8954 2.1: then freshness rests on the
        # times); one that returns a different nonce is answering another request: a replay.
        raise RevocationError("OCSP response: the nonce does not match the request (a replay?)")
    if response.produced_at_utc > ctx.now + ctx.skew:
        raise RevocationError(
            f"OCSP response produced in the future ({response.produced_at_utc.isoformat()})"
        )
    this_update, next_update = single.this_update_utc, single.next_update_utc
    fresh, stale = freshness(this_update, next_update, ctx, "OCSP response")
    delegated = f"signed by delegated responder {subject_name(delegate)}" if delegate else ""
    detail = "; ".join(d for d in (stale, delegated) if d)
    status = single.certificate_status
    if status == ocsp.OCSPCertStatus.REVOKED:
        revoked_at = single.revocation_time_utc
        assert revoked_at is not None
        reason = single.revocation_reason
        return judge_revocation(
            "ocsp",
            revoked_at,
            reason.value if reason is not None else None,
            None,
            ctx,
            this_update,
            next_update,
            fresh,
            detail,
        )
    if status == ocsp.OCSPCertStatus.UNKNOWN:
        return Answer(
            "unknown",
            "ocsp",
            this_update,
            next_update,
            fresh,
            detail="the OCSP responder does not know the certificate",
        )
    if cert.not_valid_after_utc < this_update and not has_oid(
        single_extensions, _OCSP_ARCHIVE_CUTOFF
    ):
        return Answer(
            "unknown",
            "ocsp",
            this_update,
            next_update,
            fresh,
            detail="the certificate expired before the OCSP response was made, which carries"
            " no archive cutoff: 'good' proves nothing",
        )
    return Answer("good", "ocsp", this_update, next_update, fresh, detail=detail)
