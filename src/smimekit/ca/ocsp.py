"""Our OCSP responder (RFC 6960, RFC 5019 profile; S/MIME BR 4.9.9, 4.9.10 and 7.3).

The responder answers for one issuing CA with a delegated responder certificate
(:func:`build_responder_certificate`: id-kp-OCSPSigning, id-pkix-ocsp-nocheck, RFC 6960
4.2.2.2), so the CA key, perhaps in a token, signs only that certificate, and the responder
key, a software key, signs every response. :meth:`OCSPResponder.respond` turns any request
bytes into DER response bytes and never raises: a request it cannot read is answered
``malformedRequest``, one about another CA ``unauthorized``, a lookup that fails ``tryLater``.

Requests are read with asn1crypto, since ``cryptography`` refuses requests carrying more than
one CertID; responses are built with ``cryptography``'s ``OCSPResponseBuilder``, which holds
one SingleResponse. A request with several CertIDs is therefore answered for the first one
that names our CA; a client asking about several certificates at once finds no status for the
others (RFC 5019 clients send one CertID per request). Signed requests are accepted without
checking the signature (RFC 6960 4.1.2 leaves it optional).

Pre-produced answers (RFC 5019 2.1.1, 6.2): an answer to a request without a nonce is kept,
signed, per CertID, and handed out again while the certificate's status, read from the store
on *every* request, is what it was when the answer was signed, and while the answer is
younger than ``reuse_for`` (5 minutes by default, at most half the validity: S/MIME BR
4.9.10). thisUpdate and producedAt stay the time it was signed, nextUpdate ``validity`` after
that: all true of the reused answer. A revocation is thus answered ``revoked`` by every
responder on the next request, since the status read no longer matches the kept answer.
Requests with a nonce are always signed afresh. At most ``cache_size`` answers are kept
(least recently used dropped first); the bytes of nonce-less requests are remembered with
their CertID as well, so a repeated request is not parsed again. Signing one P-384 answer
costs about as much as everything else a request needs, together.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from asn1crypto import ocsp as asn1_ocsp
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificateIssuerPublicKeyTypes,
)
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from smimekit.ca.crl import REASONS, reason_flag
from smimekit.cms import der
from smimekit.cms.asn1 import PARSE_ERRORS
from smimekit.dn import display_name
from smimekit.errors import CAError
from smimekit.keys.signer import Signer, hash_for, sign_builder

if TYPE_CHECKING:
    from smimekit.store.db import IssuedStatus

__all__ = [
    "MAX_NONCE_BYTES",
    "MAX_VALIDITY",
    "MIN_VALIDITY",
    "REUSE_FOR",
    "CertStatus",
    "IssuedRecords",
    "OCSPResponder",
    "build_responder_certificate",
    "store_lookup",
]

log = logging.getLogger(__name__)

MIN_VALIDITY = dt.timedelta(hours=8)
"""S/MIME BR 4.9.10: the shortest validity interval (thisUpdate to nextUpdate) of a response."""
MAX_VALIDITY = dt.timedelta(days=10)
"""S/MIME BR 4.9.10: the longest."""
MAX_NONCE_BYTES = 32
"""RFC 8954 2.1: longer nonces are refused with malformedRequest."""
REUSE_FOR = dt.timedelta(minutes=5)
"""How long a signed answer to a nonce-less request is handed out again while the status it
states is unchanged (RFC 5019 pre-produced responses)."""
CACHE_SIZE = 20_000
"""Signed answers kept (about 1 KB each), and as many request byte strings."""
_MAX_REMEMBERED_REQUEST = 1024  # bytes; longer requests are parsed every time

# CertID hash algorithms we can answer in (cryptography's OCSP builder takes these five).
_HASHES: dict[str, hashes.HashAlgorithm] = {
    "1.3.14.3.2.26": hashes.SHA1(),  # noqa: S303  (a lookup key here, not a signature)
    "2.16.840.1.101.3.4.2.4": hashes.SHA224(),
    "2.16.840.1.101.3.4.2.1": hashes.SHA256(),
    "2.16.840.1.101.3.4.2.2": hashes.SHA384(),
    "2.16.840.1.101.3.4.2.3": hashes.SHA512(),
}
_NONCE = "1.3.6.1.5.5.7.48.1.2"
_ACCEPTABLE_RESPONSES = "1.3.6.1.5.5.7.48.1.4"
_BASIC_RESPONSE = "1.3.6.1.5.5.7.48.1.1"


@dataclass(frozen=True)
class CertStatus:
    """What the CA knows about one serial number."""

    status: Literal["good", "revoked", "unknown"]
    """``unknown`` for serials the CA never issued (BR 4.9.10: never ``good`` for those)."""
    revoked_at: dt.datetime | None = None
    """When revoked (timezone-aware); only for ``revoked``."""
    reason: x509.ReasonFlags | None = None
    """Why, one of :data:`~smimekit.ca.crl.REASONS`; None (or unspecified) leaves
    revocationReason out, as the BR want for unspecified (7.3, 7.2.2)."""

    def __post_init__(self) -> None:
        if self.status not in ("good", "revoked", "unknown"):
            raise CAError(f"unknown certificate status {self.status!r}")
        if self.status == "revoked":
            if self.revoked_at is None or self.revoked_at.tzinfo is None:
                raise CAError("a revoked status needs a timezone-aware revocation time")
        elif self.revoked_at is not None or self.reason is not None:
            raise CAError(f"a {self.status} status has no revocation time or reason")
        if self.reason is not None and self.reason not in REASONS.values():
            raise CAError(f"revocation reason {self.reason.name} is not offered (S/MIME BR"
                          " 7.2.2, 7.3)")

    @classmethod
    def good(cls) -> CertStatus:
        return cls("good")

    @classmethod
    def revoked(cls, at: dt.datetime, reason: x509.ReasonFlags | None = None) -> CertStatus:
        return cls("revoked", at, reason)

    @classmethod
    def unknown(cls) -> CertStatus:
        return cls("unknown")


class IssuedRecords(Protocol):
    """The part of :class:`~smimekit.store.db.Store` :func:`store_lookup` needs."""

    def issued_status(self, *, serial: str, issuer_fingerprint: str) -> IssuedStatus | None: ...


def store_lookup(store: IssuedRecords, issuer_fingerprint: str) -> Callable[[int], CertStatus]:
    """A ``lookup`` for :class:`OCSPResponder` over the store's issuance records of one CA.

    Serials the CA has no record of are ``unknown``; the store's errors propagate (the
    responder answers ``tryLater``).
    """

    def lookup(serial: int) -> CertStatus:
        if serial <= 0:
            return CertStatus.unknown()
        record = store.issued_status(serial=format(serial, "x"),
                                     issuer_fingerprint=issuer_fingerprint)
        if record is None:
            return CertStatus.unknown()
        if record.revoked_at is None:
            return CertStatus.good()
        try:
            flag = reason_flag(record.reason)
        except CAError:
            log.warning("unknown recorded revocation reason", extra={"serial": f"{serial:x}"})
            flag = None
        return CertStatus.revoked(record.revoked_at, flag)

    return lookup


# -- the delegated responder's certificate ------------------------------------------------


def _ski_of(cert: x509.Certificate) -> x509.SubjectKeyIdentifier:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(cert.public_key())


def _responder_name(issuer: x509.Name) -> x509.Name:
    kept = [a for a in issuer if a.oid != NameOID.COMMON_NAME]
    common = issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = common[0].value if common else ""
    label = f"{value} OCSP Responder" if isinstance(value, str) and value else "OCSP Responder"
    return x509.Name([*kept, x509.NameAttribute(NameOID.COMMON_NAME, label[:64])])


def build_responder_certificate(
    issuer_cert: x509.Certificate,
    signer: Signer,
    responder_public_key: CertificateIssuerPublicKeyTypes,
    *,
    now: dt.datetime,
    validity: dt.timedelta = dt.timedelta(days=90),
    subject: x509.Name | None = None,
) -> x509.Certificate:
    """A delegated OCSP signing certificate for ``responder_public_key``, issued by
    ``issuer_cert`` through ``signer`` (software or token).

    It carries id-kp-OCSPSigning, digitalSignature, id-pkix-ocsp-nocheck (S/MIME BR 4.9.9; its
    own revocation is never checked, so keep it short-lived, RFC 6960 4.2.2.2.1), basic
    constraints cA=false, and the key identifiers. The subject defaults to the issuer's with
    " OCSP Responder" after its common name.

    Raises:
        CAError: the signer's key is not the issuer's, or the validity is not positive.
    """
    if validity <= dt.timedelta(0):
        raise CAError("the responder certificate's validity must be positive")
    if signer.public_key() != issuer_cert.public_key():
        raise CAError("the signer's key is not the key of the issuer's certificate")
    start = now.replace(microsecond=0)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject or _responder_name(issuer_cert.subject))
        .issuer_name(issuer_cert.subject)
        .public_key(responder_public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + validity - dt.timedelta(seconds=1))  # notAfter is inclusive
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=False, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]),
                       critical=False)
        .add_extension(x509.OCSPNoCheck(), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(responder_public_key),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
            _ski_of(issuer_cert)), critical=False)
    )
    cert = sign_builder(builder, signer)
    assert isinstance(cert, x509.Certificate)
    return cert


# -- reading requests ---------------------------------------------------------------------


class _Malformed(Exception):
    """The request cannot be read or is not acceptable as written."""


@dataclass(frozen=True)
class _CertID:
    hash_oid: str
    name_hash: bytes
    key_hash: bytes
    serial: int


@dataclass(frozen=True)
class _Answer:
    """A signed answer kept for reuse: the status it states, its thisUpdate, its bytes."""

    status: CertStatus
    this_update: dt.datetime
    der: bytes


@dataclass(frozen=True)
class _Request:
    cert_ids: tuple[_CertID, ...]
    nonce: bytes | None


def _read_request(data: bytes) -> _Request:
    if not data:
        raise _Malformed("empty request")
    try:
        request = asn1_ocsp.OCSPRequest.load(data, strict=True)
        tbs = request["tbs_request"]
        if tbs["version"].native != "v1":
            raise _Malformed("unknown request version")
        cert_ids = []
        for item in tbs["request_list"]:
            cid = item["req_cert"]
            cert_ids.append(_CertID(
                cid["hash_algorithm"]["algorithm"].dotted,
                bytes(cid["issuer_name_hash"].native),
                bytes(cid["issuer_key_hash"].native),
                int(cid["serial_number"].native),
            ))
        if not cert_ids:
            raise _Malformed("no CertID")
        nonce = None
        seen: set[str] = set()
        for extension in tbs["request_extensions"] or ():
            oid = extension["extn_id"].dotted
            if oid in seen:
                raise _Malformed(f"extension {oid} repeated")
            seen.add(oid)
            if oid == _NONCE:
                # Nonce ::= OCTET STRING (SIZE(1..32)) (RFC 8954 2.1)
                nonce = bytes(extension["extn_value"].parsed.native)
                if not 1 <= len(nonce) <= MAX_NONCE_BYTES:
                    raise _Malformed(f"nonce of {len(nonce)} bytes (RFC 8954: 1 to 32)")
            elif oid == _ACCEPTABLE_RESPONSES:
                accepted = [r.dotted for r in extension["extn_value"].parsed]
                if _BASIC_RESPONSE not in accepted:
                    raise _Malformed("the client does not accept basic responses")
            elif extension["critical"].native:
                raise _Malformed(f"unrecognised critical extension {oid}")
        return _Request(tuple(cert_ids), nonce)
    except PARSE_ERRORS as exc:
        raise _Malformed(type(exc).__name__) from None


# -- the responder --------------------------------------------------------------------------


def _key_bits(cert: x509.Certificate) -> bytes:
    """The subjectPublicKey BIT STRING's value, without its unused-bits octet (RFC 6960 4.1.1
    issuerKeyHash)."""
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    parts = der.children(spki)
    assert parts is not None and len(parts) == 2
    bits = parts[1][1]
    start = 2 if bits[1] < 0x80 else 2 + (bits[1] & 0x7F)
    return bits[start + 1:]


@functools.cache
def _unsuccessful(status: ocsp.OCSPResponseStatus) -> bytes:
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(
        serialization.Encoding.DER)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class OCSPResponder:
    """Answers OCSP requests about certificates of ``issuer_cert``.

    ``lookup`` maps a serial number to its :class:`CertStatus` (see :func:`store_lookup`);
    it is called once per request and may raise (the answer is then ``tryLater``). Each
    response is signed now: thisUpdate is the current time and nextUpdate ``validity``
    later; ``clock`` gives that time (producedAt is always the real time, as
    ``cryptography`` sets it). The responder is named by key hash and its certificate
    included (RFC 6960 4.2.2.2).
    """

    def __init__(
        self,
        issuer_cert: x509.Certificate,
        responder_cert: x509.Certificate,
        responder_key: CertificateIssuerPrivateKeyTypes,
        lookup: Callable[[int], CertStatus],
        *,
        validity: dt.timedelta = dt.timedelta(hours=12),
        clock: Callable[[], dt.datetime] = _utcnow,
        reuse_for: dt.timedelta = REUSE_FOR,
        cache_size: int = CACHE_SIZE,
    ) -> None:
        """``reuse_for`` and ``cache_size``: see the module's "pre-produced answers";
        ``cache_size=0`` (or ``reuse_for`` zero) signs every answer afresh.

        Raises:
            CAError: the responder certificate is not issued by ``issuer_cert`` or lacks
                id-kp-OCSPSigning, the key is not the certificate's, ``validity`` is
                outside the BR's 8 hours to 10 days, or ``reuse_for`` is negative or more
                than half of it, or ``cache_size`` negative.
        """
        if not MIN_VALIDITY <= validity <= MAX_VALIDITY:
            raise CAError("OCSP responses must be valid for 8 hours to 10 days (S/MIME BR"
                          " 4.9.10)")
        if not dt.timedelta(0) <= reuse_for <= validity / 2:
            raise CAError("signed OCSP answers may be reused for at most half their validity"
                          " (S/MIME BR 4.9.10)")
        if cache_size < 0:
            raise CAError("the OCSP answer cache size cannot be negative")
        try:
            responder_cert.verify_directly_issued_by(issuer_cert)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            raise CAError("the responder certificate is not issued by the CA") from None
        try:
            eku = responder_cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
        except x509.ExtensionNotFound:
            eku = None
        if eku is None or ExtendedKeyUsageOID.OCSP_SIGNING not in eku.value:
            raise CAError("the responder certificate lacks id-kp-OCSPSigning (RFC 6960"
                          " 4.2.2.2)")
        if responder_key.public_key() != responder_cert.public_key():
            raise CAError("the responder key is not the key of the responder certificate")
        self.issuer_cert = issuer_cert
        self.responder_cert = responder_cert
        self.validity = validity
        self._key = responder_key
        self._hash = hash_for(responder_key)
        self._lookup = lookup
        self._clock = clock
        name, bits = issuer_cert.subject.public_bytes(), _key_bits(issuer_cert)
        self._ids: dict[str, tuple[bytes, bytes]] = {}
        for oid, algorithm in _HASHES.items():
            self._ids[oid] = (_digest(algorithm, name), _digest(algorithm, bits))
        self.reuse_for = reuse_for
        self.cache_size = cache_size if reuse_for > dt.timedelta(0) else 0
        self._lock = threading.Lock()
        self._answers: OrderedDict[_CertID, _Answer] = OrderedDict()
        self._requests: OrderedDict[bytes, _CertID] = OrderedDict()
        self.reused = 0
        """Answers handed out again (a counter for tests and figures)."""
        self.signed = 0
        """Answers signed."""

    def __repr__(self) -> str:  # never the key
        return f"OCSPResponder({display_name(self.issuer_cert.subject)})"

    def respond(self, request_der: bytes) -> bytes:
        """The DER OCSPResponse to ``request_der``; never raises."""
        try:
            return self._respond(request_der)
        except Exception as exc:  # the client gets a response, whatever went wrong
            log.error("OCSP response failed", extra={"error": type(exc).__name__})
            return _unsuccessful(ocsp.OCSPResponseStatus.INTERNAL_ERROR)

    def _remembered(self, request_der: bytes) -> _CertID | None:
        """The CertID of a nonce-less request seen before, without parsing it again."""
        if not self.cache_size:
            return None
        with self._lock:
            cert_id = self._requests.get(request_der)
            if cert_id is not None:
                self._requests.move_to_end(request_der)
            return cert_id

    def _remember(self, request_der: bytes, cert_id: _CertID) -> None:
        if not self.cache_size or len(request_der) > _MAX_REMEMBERED_REQUEST:
            return
        with self._lock:
            self._requests[request_der] = cert_id
            if len(self._requests) > self.cache_size:
                self._requests.popitem(last=False)

    def _kept(self, cert_id: _CertID, status: CertStatus, now: dt.datetime) -> bytes | None:
        """A signed answer for ``cert_id`` stating ``status``, young enough to hand out."""
        if not self.cache_size:
            return None
        with self._lock:
            answer = self._answers.get(cert_id)
            if answer is None:
                return None
            if answer.status != status or not (
                    answer.this_update <= now < answer.this_update + self.reuse_for):
                del self._answers[cert_id]  # stale: the caller signs a new one
                return None
            self._answers.move_to_end(cert_id)
            self.reused += 1
            return answer.der

    def _keep(self, cert_id: _CertID, answer: _Answer) -> None:
        if not self.cache_size:
            return
        with self._lock:
            self._answers[cert_id] = answer
            self._answers.move_to_end(cert_id)
            if len(self._answers) > self.cache_size:
                self._answers.popitem(last=False)

    def _respond(self, request_der: bytes) -> bytes:
        cert_id = self._remembered(request_der)
        nonce = None
        if cert_id is None:
            try:
                request = _read_request(request_der)
            except _Malformed as exc:
                log.info("OCSP request refused", extra={"status": "malformedRequest",
                                                        "why": str(exc)})
                return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
            cert_id = next((c for c in request.cert_ids
                            if self._ids.get(c.hash_oid) == (c.name_hash, c.key_hash)), None)
            if cert_id is None:
                log.info("OCSP request refused", extra={"status": "unauthorized",
                                                        "why": "not about our CA"})
                return _unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED)
            if cert_id.serial < 0:
                # RFC 5280 4.1.2.2: serials are positive; no certificate has this one, and a
                # response cannot name it (cryptography's builder refuses a negative serial)
                log.info("OCSP request refused", extra={"status": "malformedRequest",
                                                        "why": "negative serial number"})
                return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
            if len(request.cert_ids) > 1:
                log.info("OCSP request with several CertIDs: only the first of our CA"
                         " answered", extra={"count": len(request.cert_ids)})
            nonce = request.nonce
            if nonce is None:
                self._remember(request_der, cert_id)
        now = self._clock().replace(microsecond=0)
        if not (self.responder_cert.not_valid_before_utc <= now
                <= self.responder_cert.not_valid_after_utc):
            log.error("OCSP responder certificate outside its validity",
                      extra={"not_after": self.responder_cert.not_valid_after_utc.isoformat()})
            return _unsuccessful(ocsp.OCSPResponseStatus.INTERNAL_ERROR)
        try:
            status = self._lookup(cert_id.serial)
        except Exception as exc:  # e.g. the store is down: the client may ask again
            log.warning("OCSP lookup failed", extra={"error": type(exc).__name__})
            return _unsuccessful(ocsp.OCSPResponseStatus.TRY_LATER)
        if nonce is None:
            kept = self._kept(cert_id, status, now)
            if kept is not None:
                return kept
        revoked = status.status == "revoked"
        cert_status = {
            "good": ocsp.OCSPCertStatus.GOOD,
            "revoked": ocsp.OCSPCertStatus.REVOKED,
            "unknown": ocsp.OCSPCertStatus.UNKNOWN,
        }[status.status]
        reason = status.reason
        if reason is x509.ReasonFlags.unspecified:
            reason = None  # BR 7.3 -> 7.2.2: unspecified is left out
        builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
            issuer_name_hash=cert_id.name_hash,
            issuer_key_hash=cert_id.key_hash,
            serial_number=cert_id.serial,
            algorithm=_HASHES[cert_id.hash_oid],
            cert_status=cert_status,
            this_update=now,
            next_update=now + self.validity,
            revocation_time=status.revoked_at.replace(microsecond=0)
            if revoked and status.revoked_at else None,
            revocation_reason=reason if revoked else None,
        ).responder_id(ocsp.OCSPResponderEncoding.HASH, self.responder_cert).certificates(
            [self.responder_cert])
        if nonce is not None:
            builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
        response = builder.sign(self._key, self._hash)
        log.debug("OCSP response", extra={"serial": f"{cert_id.serial:x}",
                                          "status": status.status})
        der_bytes = response.public_bytes(serialization.Encoding.DER)
        with self._lock:
            self.signed += 1
        if nonce is None:
            self._keep(cert_id, _Answer(status, now, der_bytes))
        return der_bytes


def _digest(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    h = hashes.Hash(algorithm)
    h.update(data)
    return h.finalize()
