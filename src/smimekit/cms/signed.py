"""SignedData (RFC 5652 section 5): create and verify, low level.

These functions check the cryptography and the signed attributes only. Whether the signer's
certificate deserves trust is decided above, in :mod:`smimekit.validation`.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from asn1crypto import algos, cms, core
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa, utils
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from smimekit.cms import asn1, strict
from smimekit.cms import der as dertools
from smimekit.cms.algorithms import Digest, hash_algorithm
from smimekit.cms.asn1 import PARSE_ERRORS
from smimekit.cms.keyinfo import (
    cert_der,
    certificate_defect,
    key_matches_cert,
    matches_issuer_serial,
    matches_ski,
    subject_key_id,
)
from smimekit.dn import display_name
from smimekit.errors import (
    ASN1Error,
    LegacyAlgorithmError,
    NoSignatureError,
    SignatureInvalidError,
    SignedAttributesError,
    SigningError,
    UnsupportedError,
)
from smimekit.keys.kinds import (
    certificate_public_key,
    is_dsa_public_key,
    is_ml_dsa_key,
    is_ml_dsa_private_key,
    is_ml_dsa_public_key,
    key_algorithm_name,
    unsupported_pq_algorithm,
)

# Capabilities we announce (RFC 8551 section 2.5.2), strongest first.
ANNOUNCED_CIPHERS = ("aes256_gcm", "aes128_gcm", "aes256_cbc", "aes128_cbc")


@dataclass(frozen=True)
class SignerSpec:
    """One signer for :func:`sign_data`."""

    key: PrivateKeyTypes
    certificate: x509.Certificate
    digest: Digest = Digest.SHA256
    pss: bool = False
    use_ski: bool = False
    encryption_cert: x509.Certificate | None = None
    """The signer's certificate for receiving mail, when it is another one (dual keys):
    announced in the SMIMEEncryptionKeyPreference attribute (RFC 8551 2.5.3)."""


@dataclass(frozen=True)
class KeyPreference:
    """The certificate a signer asks to be encrypted to (RFC 8551 2.5.3 SMIMEEncryption-
    KeyPreference, or Microsoft's 1.3.6.1.4.1.311.16.4, which Outlook and NSS also send)."""

    identifier: str
    """How the attribute names it: ``issuer <DN> serial <hex>`` or ``ski <hex>``."""
    certificate: x509.Certificate | None
    """The certificate named, when the message (or the given extras) carries it."""


@dataclass(frozen=True)
class SignerResult:
    """What one verified SignerInfo says."""

    certificate: x509.Certificate
    """The signer's certificate, found by issuer+serial or subject key identifier."""
    digest_algorithm: str
    """Digest algorithm name, e.g. ``sha256``."""
    signature_algorithm: str
    """Signature scheme, e.g. ``rsa-pkcs1v15``, ``rsa-pss``, ``ecdsa``, ``ed25519``."""
    signing_time: dt.datetime | None
    """The self-asserted signing-time attribute, if present (always timezone-aware)."""
    has_signing_certificate_v2: bool
    """Whether the ESS signing-certificate(-v2) attribute was present (and matched)."""
    encryption_preference: KeyPreference | None = None
    """The encryption certificate the signer announced, if any (never checked here: an
    unreadable announcement is ignored, as it decides nothing about the signature)."""


@dataclass(frozen=True)
class SignedDataResult:
    """A SignedData whose every signer verified."""

    content: bytes
    """The signed content (the eContent, or the detached content that was checked)."""
    content_type: str
    """The eContentType, as asn1crypto names it (``data`` for S/MIME)."""
    detached: bool
    """True when the content was supplied separately (multipart/signed)."""
    signers: tuple[SignerResult, ...]
    certificates: tuple[x509.Certificate, ...]
    """Every well-formed certificate carried in the SignedData (one whose subject, issuer or
    extensions cannot be decoded is left out: the field is unsigned, anyone can add one)."""


# -- signing --------------------------------------------------------------------------------


_OID = {
    "data": "1.2.840.113549.1.7.1",
    "signed_data": "1.2.840.113549.1.7.2",
    "content_type": "1.2.840.113549.1.9.3",
    "message_digest": "1.2.840.113549.1.9.4",
    "signing_time": "1.2.840.113549.1.9.5",
    "smime_capabilities": "1.2.840.113549.1.9.15",
    "signing_certificate_v2": "1.2.840.113549.1.9.16.2.47",
    "encrypt_key_pref": "1.2.840.113549.1.9.16.2.11",
    "sha256": "2.16.840.1.101.3.4.2.1",
    "sha384": "2.16.840.1.101.3.4.2.2",
    "sha512": "2.16.840.1.101.3.4.2.3",
    "aes128_cbc": "2.16.840.1.101.3.4.1.2",
    "aes256_cbc": "2.16.840.1.101.3.4.1.42",
    "aes128_gcm": "2.16.840.1.101.3.4.1.6",
    "aes256_gcm": "2.16.840.1.101.3.4.1.46",
}
# SMIMECapabilities (RFC 8551 2.5.2), strongest first; fixed, so encoded once.
_CAPABILITIES = dertools.seq(*(dertools.seq(dertools.oid(_OID[c])) for c in ANNOUNCED_CIPHERS))
# A sender whose encryption certificate is ML-KEM also announces what KEMRecipientInfo needs
# (RFC 9936 SMIME-CAPS: the KEMs, HKDF-SHA256, AES-256 key wrap; all without parameters).
_KEM_CAPABILITIES = (
    "2.16.840.1.101.3.4.4.3",  # id-alg-ml-kem-1024
    "2.16.840.1.101.3.4.4.2",  # id-alg-ml-kem-768
    "1.2.840.113549.1.9.16.3.28",  # id-alg-hkdf-with-sha256
    "2.16.840.1.101.3.4.1.45",  # id-aes256-wrap
)
_PQ_CAPABILITIES = dertools.seq(
    *(dertools.seq(dertools.oid(_OID[c])) for c in ANNOUNCED_CIPHERS),
    *(dertools.seq(dertools.oid(oid)) for oid in _KEM_CAPABILITIES),
)


def sign_data(
    content: bytes | Sequence[bytes | memoryview],
    signers: Sequence[SignerSpec],
    *,
    detached: bool = True,
    certificates: Sequence[x509.Certificate] = (),
    signing_time: dt.datetime | None = None,
    signed_attributes: bool = True,
) -> bytes:
    """Build a DER ContentInfo holding a SignedData over ``content`` (eContentType data).

    The structure is written directly as DER (asn1crypto re-serialises nested values many
    times over, which made signing a small message cost tens of milliseconds).

    ML-DSA keys sign in pure mode with SHA-512 as the digest algorithm (RFC 9882 4: it
    meets every parameter set's strength). ``signed_attributes=False`` writes SignerInfos
    without signed attributes, the signature then covering the content itself (RFC 5652
    5.4; RFC 9882 3.3 for ML-DSA); S/MIME wants them (RFC 8551 2.5), so it is for CMS uses
    that do not.

    Raises:
        SigningError: no signer, or a key that does not match its certificate.
        UnsupportedError: a key type we cannot sign with.
    """
    if not signers:
        raise SigningError("at least one signer is required")
    # The content may come in chunks (a large body is then hashed without being joined).
    parts = [content] if isinstance(content, bytes | bytearray | memoryview) else list(content)
    when = (signing_time or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    digests: dict[str, bytes] = {}
    infos = []
    certs: list[x509.Certificate] = []
    for spec in signers:
        if not key_matches_cert(spec.key, spec.certificate):
            raise SigningError("the private key does not match the signing certificate")
        digest = spec.digest.value
        if isinstance(spec.key, ed25519.Ed25519PrivateKey) or is_ml_dsa_key(spec.key):
            # RFC 8419 3.1: Ed25519 pairs with SHA-512; RFC 9882 4: SHA-512 for ML-DSA.
            digest = "sha512"
        if digest not in digests:
            digests[digest] = _hash(digest, *parts)
        if signed_attributes:
            attrs = _signed_attributes(
                spec.certificate, digests[digest], when, spec.encryption_cert
            )
            # RFC 5652 5.4: the signature covers the attributes as a SET OF; in the
            # SignerInfo they carry the IMPLICIT [0] tag instead.
            sig_alg, signature = _sign(spec, digest, attrs)
            attr_field = b"\xa0" + attrs[1:]
        else:
            sig_alg, signature = _sign(spec, digest, b"".join(parts))
            attr_field = b""
        cert = spec.certificate
        if spec.use_ski:
            version, sid = 3, dertools.tlv(0x80, subject_key_id(cert))
        else:
            version, sid = (
                1,
                dertools.seq(cert.issuer.public_bytes(), dertools.integer(cert.serial_number)),
            )
        infos.append(
            dertools.seq(
                dertools.integer(version),
                sid,
                dertools.seq(dertools.oid(_OID[digest])),
                attr_field,
                sig_alg.dump(),
                dertools.octets(signature),
            )
        )
        certs.append(cert)
    for extra in certificates:
        if extra not in certs:
            certs.append(extra)
    encap = [dertools.oid(_OID["data"])]
    if not detached:
        encap.append(dertools.tlv(0xA0, dertools.octets(b"".join(parts))))
    signed = dertools.seq(
        dertools.integer(3 if any(s.use_ski for s in signers) else 1),
        dertools.set_of(*(dertools.seq(dertools.oid(_OID[d])) for d in digests)),
        dertools.seq(*encap),
        dertools.tlv(0xA0, *sorted(cert_der(c) for c in certs)),
        dertools.set_of(*infos),
    )
    return dertools.seq(dertools.oid(_OID["signed_data"]), dertools.tlv(0xA0, signed))


@functools.lru_cache(maxsize=1024)
def _cert_hash(name: str, cert: x509.Certificate) -> bytes:
    return _hash(name, cert_der(cert))


def _hash(name: str, *parts: bytes | memoryview) -> bytes:
    h = hashlib.new(name)
    for part in parts:
        h.update(part)
    return h.digest()


def _time(when: dt.datetime) -> bytes:
    # RFC 5652 section 11.3: UTCTime for 1950-2049, GeneralizedTime otherwise.
    utc = when.astimezone(dt.UTC)
    if 1950 <= utc.year < 2050:
        return dertools.tlv(0x17, utc.strftime("%y%m%d%H%M%SZ").encode())
    return dertools.tlv(0x18, utc.strftime("%Y%m%d%H%M%SZ").encode())


def _attribute(name: str, value: bytes) -> bytes:
    return dertools.seq(dertools.oid(_OID[name]), dertools.set_of(value))


def _capabilities(encryption_cert: x509.Certificate | None) -> bytes:
    oid = encryption_cert.public_key_algorithm_oid.dotted_string if encryption_cert else ""
    return _PQ_CAPABILITIES if oid in _KEM_CAPABILITIES else _CAPABILITIES


def _signed_attributes(
    cert: x509.Certificate,
    digest: bytes,
    when: dt.datetime,
    encryption_cert: x509.Certificate | None = None,
) -> bytes:
    """The five signed attributes of RFC 8551 2.5 as a DER SET OF (tag 0x31), and the
    SMIMEEncryptionKeyPreference (2.5.3) when the signer receives mail on another
    certificate."""
    # ESSCertIDv2 (RFC 5035): hashAlgorithm left at its DEFAULT, SHA-256, so DER omits it;
    # issuerSerial names the issuer as a GeneralName directoryName ([4] EXPLICIT Name).
    ess_id = dertools.seq(
        dertools.octets(hashlib.sha256(cert_der(cert)).digest()),
        dertools.seq(
            dertools.seq(dertools.tlv(0xA4, cert.issuer.public_bytes())),
            dertools.integer(cert.serial_number),
        ),
    )
    attrs = [
        _attribute("content_type", dertools.oid(_OID["data"])),
        _attribute("signing_time", _time(when)),
        _attribute("message_digest", dertools.octets(digest)),
        _attribute("smime_capabilities", _capabilities(encryption_cert)),
        _attribute("signing_certificate_v2", dertools.seq(dertools.seq(ess_id))),
    ]
    if encryption_cert is not None:
        # SMIMEEncryptionKeyPreference ::= CHOICE { issuerAndSerialNumber [0] ... }, in a
        # module of IMPLICIT TAGS: the IssuerAndSerialNumber's SEQUENCE tag becomes [0].
        ias = dertools.seq(
            encryption_cert.issuer.public_bytes(), dertools.integer(encryption_cert.serial_number)
        )
        attrs.append(_attribute("encrypt_key_pref", b"\xa0" + ias[1:]))
    return dertools.set_of(*attrs)


def _sign(spec: SignerSpec, digest: str, data: bytes) -> tuple[algos.SignedDigestAlgorithm, bytes]:
    key = spec.key
    h = hash_algorithm(digest)
    if isinstance(key, rsa.RSAPrivateKey):
        if spec.pss:
            params = algos.RSASSAPSSParams(
                {
                    "hash_algorithm": {"algorithm": digest},
                    "mask_gen_algorithm": {
                        "algorithm": "mgf1",
                        "parameters": {"algorithm": digest},
                    },
                    "salt_length": h.digest_size,
                }
            )
            sig = key.sign(data, padding.PSS(padding.MGF1(h), h.digest_size), h)
            return algos.SignedDigestAlgorithm(
                {"algorithm": "rsassa_pss", "parameters": params}
            ), sig
        sig = key.sign(data, padding.PKCS1v15(), h)
        # rsaEncryption as the signature algorithm, as OpenSSL, NSS and gpgsm write it.
        return algos.SignedDigestAlgorithm(
            {"algorithm": "rsassa_pkcs1v15", "parameters": core.Null()}
        ), sig
    if spec.pss:
        raise SigningError("--pss needs an RSA key")
    if isinstance(key, ec.EllipticCurvePrivateKey):
        sig = key.sign(data, ec.ECDSA(h))
        return algos.SignedDigestAlgorithm({"algorithm": f"{digest}_ecdsa"}), sig
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return algos.SignedDigestAlgorithm({"algorithm": "ed25519"}), key.sign(data)
    if is_ml_dsa_private_key(key):
        # RFC 9882 3: pure ML-DSA, empty context string, parameters absent.
        name = str(key_algorithm_name(key)).lower().replace("-", "_")
        return algos.SignedDigestAlgorithm({"algorithm": name}), key.sign(data)
    raise UnsupportedError(f"cannot sign with a {type(key).__name__}")


# -- verification ---------------------------------------------------------------------------


@asn1.guard("SignedData")
def verify_signed_data(
    der: bytes,
    *,
    detached_content: bytes | None = None,
    extra_certs: Sequence[x509.Certificate] = (),
    allow_legacy: bool = False,
) -> SignedDataResult:
    """Verify every signer of a SignedData (DER or BER ContentInfo).

    Raises:
        ASN1Error: the structure cannot be decoded, or a signer's certificate carried in it
            cannot (another certificate that cannot is left out of ``certificates``).
        NoSignatureError: not a SignedData, or zero signers.
        SignatureInvalidError: a digest or signature does not verify, content confusion.
        SignedAttributesError: a required signed attribute is missing, duplicated or wrong.
        LegacyAlgorithmError: SHA-1/MD5/DSA without ``allow_legacy``.
    """
    info = asn1.load(cms.ContentInfo, der, "CMS ContentInfo")
    if info["content_type"].native != "signed_data":
        raise NoSignatureError(f"not a SignedData but {info['content_type'].native}")
    sd = info["content"]
    encap = sd["encap_content_info"]
    content_type = encap["content_type"].native
    embedded = encap["content"]
    signer_infos = list(sd["signer_infos"])
    if not signer_infos:
        raise NoSignatureError("the SignedData has zero signers")
    strict.signed_data(sd)
    embedded_bytes = None if isinstance(embedded, core.Void) else _octets(embedded)
    if detached_content is not None:
        if embedded_bytes is not None and embedded_bytes != detached_content:
            raise SignatureInvalidError(
                "content confusion: the signature carries its own content, different from the"
                " detached content it was sent with"
            )
        content = detached_content
    elif embedded_bytes is None:
        raise SignatureInvalidError("detached signature without its signed content")
    else:
        content = embedded_bytes

    certs, malformed = _certificates(sd)
    pool = certs + [c for c in extra_certs if c not in certs]
    digest_cache: dict[str, bytes] = {}
    results = []
    for index, si in enumerate(signer_infos, start=1):
        cert = _find_signer_cert(si["sid"], pool, malformed)
        results.append(
            _verify_signer(si, index, cert, content, content_type, pool, digest_cache,
                           allow_legacy)
        )
    return SignedDataResult(
        content=content,
        content_type=content_type,
        detached=detached_content is not None,
        signers=tuple(results),
        certificates=tuple(certs),
    )


@asn1.guard("SignedData")
def embedded_content(der: bytes) -> bytes | None:
    """The eContent of a SignedData without any check (None when detached).

    Only for reaching an encrypted layer under a signature that failed: the result must
    never be presented as signed.
    """
    info = asn1.load(cms.ContentInfo, der, "CMS ContentInfo")
    if info["content_type"].native != "signed_data":
        return None
    embedded = info["content"]["encap_content_info"]["content"]
    return None if isinstance(embedded, core.Void) else _octets(embedded)


def _octets(value: core.Asn1Value) -> bytes:
    # eContent may be a constructed (BER, chunked) OCTET STRING: merged from the segments'
    # headers, else by asn1crypto (an object per segment).
    joined = asn1.string_octets(value)
    if joined is not None:
        return joined
    if isinstance(value, core.ParsableOctetString):
        return bytes(value)
    native = value.native
    return native if isinstance(native, bytes) else value.dump()


@dataclass(frozen=True)
class _Malformed:
    """A certificate of the message that cannot be used: its bytes, and why."""

    der: bytes
    problem: str


def _certificates(sd: cms.SignedData) -> tuple[list[x509.Certificate], list[_Malformed]]:
    """The X.509 certificates of a SignedData, from the bytes exactly as received: those that
    can be used, and those that cannot."""
    field = sd["certificates"]
    if isinstance(field, core.Void):
        return [], []
    raw = dertools.elements(field.contents)
    if raw is not None:
        ders = [tlv for tag, tlv in raw if tag == 0x30]
    else:
        ders = [c.dump() for c in field if c.name == "certificate"]  # BER input
    good: list[x509.Certificate] = []
    bad: list[_Malformed] = []
    for der in ders:
        loaded = _load_cert(der)
        if isinstance(loaded, str):
            bad.append(_Malformed(der, loaded))
        else:
            good.append(loaded)
    return good, bad


def _load_cert(der: bytes) -> x509.Certificate | str:
    """The certificate, its subject, issuer and extensions decoded; or what is wrong with it.

    cryptography decodes those on first use, and from a hostile certificate they raise
    DuplicateExtension, UnsupportedGeneralNameType, ValueError or TypeError from wherever
    that is. The certificates field is not signed: anyone on the way can add one, and a
    certificate that is not the signer's must not fail a genuine message.
    """
    try:
        cert = x509.load_der_x509_certificate(der)
    except (ValueError, x509.InvalidVersion) as exc:
        return f"it cannot be loaded ({str(exc).strip()[:160] or type(exc).__name__})"
    return certificate_defect(cert) or cert


def _find_signer_cert(
    sid: cms.SignerIdentifier, pool: list[x509.Certificate], malformed: list[_Malformed]
) -> x509.Certificate:
    """The signer's certificate in ``pool``.

    Raises:
        ASN1Error: the signer's certificate is in the message, but malformed.
        SignatureInvalidError: it is not found.
    """
    by_ski = sid.name == "subject_key_identifier"
    for cert in pool:
        if by_ski and matches_ski(sid.chosen.native, cert):
            return cert
        if not by_ski and matches_issuer_serial(sid.chosen, cert):
            return cert
    for bad in malformed:
        ias, ski = _raw_identifiers(bad.der)
        if (ski is not None and by_ski and ski == sid.chosen.native) or (
            ias is not None and not by_ski and ias == sid.chosen.dump()
        ):
            raise ASN1Error(f"malformed signer certificate in the SignedData: {bad.problem}")
    left_out = f" ({len(malformed)} malformed certificate(s) of the message left out)"
    raise SignatureInvalidError(
        "the signer's certificate is not in the message or the given set"
        + (left_out if malformed else "")
    )


_SKI_EXTENSION = dertools.oid("2.5.29.14")


def _raw_identifiers(der: bytes) -> tuple[bytes | None, bytes | None]:
    """(IssuerAndSerialNumber DER, subjectKeyIdentifier extension value) read from the bytes of
    a certificate that cannot be loaded or decoded, to tell whether it is the signer's."""
    top = dertools.children(der)
    tbs = dertools.children(top[0][1]) if top else None
    if not tbs or len(tbs) < 7:
        return None, None
    at = 1 if tbs[0][0] == 0xA0 else 0  # [0] version
    ias = dertools.seq(tbs[at + 2][1], tbs[at][1])  # issuer, serialNumber
    ski = None
    extensions = next((field for tag, field in tbs if tag == 0xA3), None)
    outer = dertools.children(extensions) if extensions is not None else None
    listed = dertools.children(outer[0][1]) if outer else None
    for _tag, extension in listed or ():
        parts = dertools.children(extension)
        if parts and parts[0][1] == _SKI_EXTENSION and parts[-1][0] == 0x04:
            value = parts[-1][1]
            head = dertools.read_header(value, 0, len(value))
            inner = value[head[1]:] if head is not None else b""
            found = dertools.read_header(inner, 0, len(inner))
            if found is not None and inner[:1] == b"\x04":
                ski = inner[found[1]:found[1] + (found[2] or 0)]
    return ias, ski


def _verify_signer(
    si: cms.SignerInfo,
    index: int,
    cert: x509.Certificate,
    content: bytes,
    content_type: str,
    pool: list[x509.Certificate],
    digest_cache: dict[str, bytes],
    allow_legacy: bool,
) -> SignerResult:
    missing = unsupported_pq_algorithm(si["signature_algorithm"]["algorithm"].dotted)
    if missing is not None:  # named before its digest (SHAKE) is refused in other words
        raise UnsupportedError(
            f"signer {index} ({display_name(cert.subject)}): {missing} signatures are not"
            " supported"
        )
    digest_name = si["digest_algorithm"]["algorithm"].native
    h = hash_algorithm(digest_name, allow_legacy=allow_legacy)
    if digest_name not in digest_cache:
        digest_cache[digest_name] = _hash(digest_name, content)
    digest = digest_cache[digest_name]
    who = f"signer {index} ({display_name(cert.subject)})"

    signing_time = None
    ess = False
    attrs = si["signed_attrs"]
    if not isinstance(attrs, core.Void) and len(attrs) > 0:
        # The signed bytes as received, taken before any attribute is parsed: once its
        # children are touched asn1crypto re-serialises the set (slowly, and not
        # necessarily byte for byte).
        signed_bytes = asn1.der_set(attrs)
        values = _attribute_values(attrs, who)
        ct = _single(values, "content_type", who, required=True)
        if ct.native != content_type:
            raise SignedAttributesError(
                f"{who}: content-type attribute {ct.native} does not match the content"
                f" ({content_type})"
            )
        md = _single(values, "message_digest", who, required=True)
        if md.native != digest:
            raise SignatureInvalidError(f"{who}: message digest mismatch, the content was altered")
        st = _single(values, "signing_time", who, required=False)
        if st is not None:
            signing_time = _parse_time(st, who)
        for name in ("signing_certificate_v2", "signing_certificate"):
            sc = _single(values, name, who, required=False)
            if sc is not None:
                _check_signing_certificate(sc, cert, who, allow_legacy)
                ess = True
        caps = _single(values, "smime_capabilities", who, required=False)
        if caps is not None:
            try:
                _ = caps.native
            except PARSE_ERRORS:
                raise SignedAttributesError(
                    f"{who}: malformed SMIMECapabilities attribute"
                ) from None
        protection = _single(values, "cms_algorithm_protection", who, required=False)
        if protection is not None:
            _check_algorithm_protection(protection, si, who)
        preference = _key_preference(attrs, pool)
        prehashed = False
    else:
        if content_type != "data":
            raise SignedAttributesError(
                f"{who}: signed attributes are required when the content type is not data"
            )
        signed_bytes = digest
        prehashed = True
        preference = None
    unsigned = si["unsigned_attrs"]
    if not isinstance(unsigned, core.Void):
        for attr in unsigned:
            name = attr["type"].native
            if name in ("content_type", "message_digest", "signing_time"):
                # RFC 5652 sections 11.1-11.3: these MUST NOT be unsigned attributes.
                raise SignedAttributesError(
                    f"{who}: {name.replace('_', '-')} sent as an unsigned attribute"
                )
    scheme = _verify_signature(si, cert, h, signed_bytes, prehashed, content, who, allow_legacy)
    return SignerResult(
        certificate=cert,
        digest_algorithm=digest_name,
        signature_algorithm=scheme,
        signing_time=signing_time,
        has_signing_certificate_v2=ess,
        encryption_preference=preference,
    )


_MS_KEY_PREFERENCE = "1.3.6.1.4.1.311.16.4"  # Microsoft's: a plain IssuerAndSerialNumber


def _key_preference(attrs: cms.CMSAttributes, pool: list[x509.Certificate]) -> KeyPreference | None:
    """The announced encryption certificate: RFC 8551's attribute first, then Microsoft's.
    Read from the raw bytes; anything unreadable is ignored (it is only a hint)."""
    found: dict[str, bytes] = {}
    try:
        for attr in attrs:
            dotted = attr["type"].dotted
            if dotted in (_OID["encrypt_key_pref"], _MS_KEY_PREFERENCE) and dotted not in found:
                values = dertools.elements(attr["values"].contents)
                if values:
                    found[dotted] = values[0][1]
    except PARSE_ERRORS:
        return None
    for dotted in (_OID["encrypt_key_pref"], _MS_KEY_PREFERENCE):
        value = found.get(dotted)
        if value is None:
            continue
        tag = value[0]
        if (dotted == _MS_KEY_PREFERENCE and tag == 0x30) or tag == 0xA0:
            preference = _by_issuer_serial(b"\x30" + value[1:], pool)
        elif tag in (0xA1, 0x82):
            preference = _by_ski(value, pool)
        else:
            preference = None
        if preference is not None:
            return preference
    return None


def _by_issuer_serial(ias: bytes, pool: list[x509.Certificate]) -> KeyPreference | None:
    try:
        parsed = cms.IssuerAndSerialNumber.load(ias)
        described = (
            f"issuer {parsed['issuer'].human_friendly}"
            f" serial {format(parsed['serial_number'].native, 'x')}"
        )
    except PARSE_ERRORS:
        return None
    cert = next((c for c in pool if matches_issuer_serial(parsed, c)), None)
    return KeyPreference(described, cert)


def _by_ski(value: bytes, pool: list[x509.Certificate]) -> KeyPreference | None:
    try:
        if value[0] == 0xA1:
            # RecipientKeyIdentifier: its first element is the subjectKeyIdentifier.
            inner = dertools.children(value)
            if not inner or inner[0][0] != 0x04:
                return None
            ski = core.OctetString.load(inner[0][1]).native
        else:
            ski = core.OctetString.load(b"\x04" + value[1:]).native
    except PARSE_ERRORS:
        return None
    if not isinstance(ski, bytes) or not ski:
        return None
    cert = next((c for c in pool if matches_ski(ski, c)), None)
    return KeyPreference(f"ski {ski.hex()}", cert)


# The attributes we check; any other attribute is left unparsed, since one we do not
# understand (e.g. Microsoft's encryption key preference, which asn1crypto cannot read)
# must not break verification.
_CHECKED_ATTRIBUTES = (
    "content_type",
    "message_digest",
    "signing_time",
    "signing_certificate",
    "signing_certificate_v2",
    "smime_capabilities",
    "cms_algorithm_protection",
)


def _attribute_values(attrs: cms.CMSAttributes, who: str) -> dict[str, list[core.Asn1Value]]:
    grouped: dict[str, list[core.Asn1Value]] = defaultdict(list)
    for attr in attrs:
        name = attr["type"].native
        if name not in _CHECKED_ATTRIBUTES:
            continue
        if name in grouped:
            # RFC 5652 section 5.3: these attributes MUST NOT appear twice.
            raise SignedAttributesError(f"{who}: duplicate {name.replace('_', '-')} attribute")
        grouped[name].extend(attr["values"])
    return grouped


def _single(values: dict[str, list[core.Asn1Value]], name: str, who: str, *, required: bool) -> Any:
    found = values.get(name, [])
    label = name.replace("_", "-")
    if not found:
        if required:
            raise SignedAttributesError(f"{who}: missing {label} signed attribute")
        return None
    if len(found) != 1:
        raise SignedAttributesError(f"{who}: {label} attribute must have exactly one value")
    return found[0]


def _parse_time(value: core.Asn1Value, who: str) -> dt.datetime:
    try:
        when = value.native
    except ValueError:
        raise SignedAttributesError(f"{who}: malformed signing-time attribute") from None
    if not isinstance(when, dt.datetime):
        raise SignedAttributesError(f"{who}: malformed signing-time attribute")
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when


def _check_algorithm_protection(value: Any, si: cms.SignerInfo, who: str) -> None:
    """RFC 6211: the protected algorithm identifiers must be the ones actually used."""
    if not _same_algorithm(value["digest_algorithm"], si["digest_algorithm"]):
        raise SignedAttributesError(f"{who}: CMSAlgorithmProtection names another digest")
    protected = value["signature_algorithm"]
    if isinstance(protected, core.Void) or not _same_algorithm(
        protected.untag(), si["signature_algorithm"]
    ):
        raise SignedAttributesError(
            f"{who}: CMSAlgorithmProtection does not match the signature algorithm"
        )


def _same_algorithm(a: Any, b: Any) -> bool:
    """Same OID and parameters, an absent and a NULL parameter counting as the same (RFC 5754)."""

    def params(alg: Any) -> bytes:
        raw = b"" if isinstance(alg["parameters"], core.Void) else alg["parameters"].dump()
        return b"" if raw == b"\x05\x00" else raw

    return bool(a["algorithm"].dotted == b["algorithm"].dotted and params(a) == params(b))


def _check_signing_certificate(
    value: core.Asn1Value, cert: x509.Certificate, who: str, allow_legacy: bool
) -> None:
    ids = value["certs"]
    if len(ids) == 0:
        raise SignedAttributesError(f"{who}: empty ESS signing-certificate attribute")
    first = ids[0]
    if "hash_algorithm" in first:
        alg = first["hash_algorithm"]["algorithm"].native
    else:
        alg = "sha1"  # ESS signing-certificate v1 (RFC 2634) always uses SHA-1
    if alg == "sha1":
        allow_legacy = True  # a SHA-1 certificate binding only narrows, it never widens
    hash_algorithm(alg, allow_legacy=allow_legacy)
    if first["cert_hash"].native != _cert_hash(alg, cert):
        raise SignedAttributesError(
            f"{who}: ESS signing-certificate attribute names a different certificate"
        )


_PKCS1_NAMED = {
    "sha1_rsa": "sha1",
    "sha224_rsa": "sha224",
    "sha256_rsa": "sha256",
    "sha384_rsa": "sha384",
    "sha512_rsa": "sha512",
}
_ECDSA_NAMED = {
    "sha1_ecdsa": "sha1",
    "sha224_ecdsa": "sha224",
    "sha256_ecdsa": "sha256",
    "sha384_ecdsa": "sha384",
    "sha512_ecdsa": "sha512",
}
_DSA_NAMED = {"sha1_dsa": "sha1", "sha224_dsa": "sha224", "sha256_dsa": "sha256"}
_EC_PUBLIC_KEY = "1.2.840.10045.2.1"  # some signers put id-ecPublicKey here


def _verify_signature(
    si: cms.SignerInfo,
    cert: x509.Certificate,
    h: hashes.HashAlgorithm,
    data: bytes,
    prehashed: bool,
    content: bytes,
    who: str,
    allow_legacy: bool,
) -> str:
    """Check one signature value; return the scheme's name."""
    alg = si["signature_algorithm"]
    name = alg["algorithm"].native
    dotted = alg["algorithm"].dotted
    signature = si["signature"].native
    missing = unsupported_pq_algorithm(dotted)
    if missing is not None:
        raise UnsupportedError(f"{who}: {missing} signatures are not supported")
    try:
        key = certificate_public_key(cert)
    except (UnsupportedAlgorithm, ValueError):
        raise UnsupportedError(
            f"{who}: the certificate's public key type is not supported"
        ) from None

    def hashed_with(named: str | None) -> tuple[bytes, hashes.HashAlgorithm | utils.Prehashed]:
        # A signature algorithm that names its own hash wins over digestAlgorithm; without
        # signed attributes the content must then be hashed again with that hash.
        if named is not None and named != h.name.replace("-", ""):
            return (content if prehashed else data), hash_algorithm(
                named, allow_legacy=allow_legacy
            )
        return data, (utils.Prehashed(h) if prehashed else h)

    try:
        if name in ("rsassa_pkcs1v15", "rsaes_pkcs1v15") or name in _PKCS1_NAMED:
            if not isinstance(key, rsa.RSAPublicKey):
                raise _mismatch(who)
            payload, how = hashed_with(_PKCS1_NAMED.get(name))
            key.verify(signature, payload, padding.PKCS1v15(), how)
            return "rsa-pkcs1v15"
        if name == "rsassa_pss":
            if not isinstance(key, rsa.RSAPublicKey):
                raise _mismatch(who)
            params = alg["parameters"]
            pss_hash = params["hash_algorithm"]["algorithm"].native
            mgf_hash = hash_algorithm(
                params["mask_gen_algorithm"]["parameters"]["algorithm"].native,
                allow_legacy=allow_legacy,
            )
            payload, how = hashed_with(pss_hash)
            key.verify(
                signature,
                payload,
                padding.PSS(padding.MGF1(mgf_hash), params["salt_length"].native),
                how,
            )
            return "rsa-pss"
        if name in _ECDSA_NAMED or name == "ecdsa" or dotted == _EC_PUBLIC_KEY:
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise _mismatch(who)
            payload, how = hashed_with(_ECDSA_NAMED.get(name))
            key.verify(signature, payload, ec.ECDSA(how))
            return "ecdsa"
        if name == "ed25519":
            if not isinstance(key, ed25519.Ed25519PublicKey):
                raise _mismatch(who)
            key.verify(signature, content if prehashed else data)
            return "ed25519"
        if name == "ed448":
            if not isinstance(key, ed448.Ed448PublicKey):
                raise _mismatch(who)
            key.verify(signature, content if prehashed else data)
            return "ed448"
        if name in _ML_DSA_STRENGTH:
            if not is_ml_dsa_public_key(key) or key_algorithm_name(key) != name.upper().replace(
                "_", "-"
            ):
                raise _mismatch(who)
            if not isinstance(alg["parameters"], core.Void):  # RFC 9882 3: MUST be absent
                raise SignatureInvalidError(f"{who}: ML-DSA signature algorithm with parameters")
            if h.digest_size * 4 < _ML_DSA_STRENGTH[name]:
                # RFC 9882 4: the digest's collision strength must match the parameter set.
                raise SignatureInvalidError(
                    f"{who}: {h.name.upper()} is too weak a digest for"
                    f" {name.upper().replace('_', '-')} (RFC 9882 section 4)"
                )
            # Pure ML-DSA over the signed attributes, or over the content without them.
            key.verify(signature, content if prehashed else data)
            return name.replace("_", "-")
        if name in _DSA_NAMED or name == "dsa":
            if not allow_legacy:
                raise LegacyAlgorithmError(f"{who}: DSA signatures are legacy, refused by default")
            if not is_dsa_public_key(key):
                raise _mismatch(who)
            payload, how = hashed_with(_DSA_NAMED.get(name))
            key.verify(signature, payload, how)
            return "dsa"
    except InvalidSignature:
        raise SignatureInvalidError(f"{who}: the signature does not verify") from None
    raise UnsupportedError(f"{who}: unsupported signature algorithm {name or dotted}")


# ML-DSA parameter set -> the collision strength (bits) its digest must reach (RFC 9882 4).
_ML_DSA_STRENGTH = {"ml_dsa_44": 128, "ml_dsa_65": 192, "ml_dsa_87": 256}


def _mismatch(who: str) -> SignatureInvalidError:
    return SignatureInvalidError(
        f"{who}: the signature algorithm does not fit the certificate's key type"
    )
