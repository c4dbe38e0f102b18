"""ASN.1 structures and object identifiers that asn1crypto lacks, and safe decoding.

Importing this module registers the extra OIDs with asn1crypto's class maps, so the rest of
``smimekit.cms`` can use readable names (``dh_single_pass_std_dh_sha256kdf`` ...).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from asn1crypto import algos, cms, core
from asn1crypto import tsp as _tsp  # noqa: F401  registers signing-certificate(-v2) parsing

from smimekit.cms import der, limits
from smimekit.errors import ASN1Error
from smimekit.keys.kinds import ML_DSA_OIDS as ML_DSA_OIDS
from smimekit.keys.kinds import ML_KEM_OIDS as ML_KEM_OIDS


def _register(cls: Any, entries: dict[str, str]) -> None:
    cls._map.update(entries)
    # The reverse map (name -> OID) is asn1crypto's own where the class declares one (with
    # its preferred OID for a name), else built from _map when the class's first value is
    # created: extend it if it exists (that may have happened before this import), and
    # otherwise leave it to be built from the extended _map.
    if cls._reverse_map is not None:
        cls._reverse_map.update({name: oid for oid, name in entries.items()})


# RFC 5753 section 7.1.4 and SEC 1 / RFC 8418: key agreement schemes.
KARI_SCHEMES = {
    "1.3.133.16.840.63.0.2": "dh_single_pass_std_dh_sha1kdf",
    "1.3.132.1.11.0": "dh_single_pass_std_dh_sha224kdf",
    "1.3.132.1.11.1": "dh_single_pass_std_dh_sha256kdf",
    "1.3.132.1.11.2": "dh_single_pass_std_dh_sha384kdf",
    "1.3.132.1.11.3": "dh_single_pass_std_dh_sha512kdf",
    "1.3.133.16.840.63.0.3": "dh_single_pass_cofactor_dh_sha1kdf",
    "1.3.132.1.14.0": "dh_single_pass_cofactor_dh_sha224kdf",
    "1.3.132.1.14.1": "dh_single_pass_cofactor_dh_sha256kdf",
    "1.3.132.1.14.2": "dh_single_pass_cofactor_dh_sha384kdf",
    "1.3.132.1.14.3": "dh_single_pass_cofactor_dh_sha512kdf",
    # RFC 8418 section 2.2: HKDF for X25519 / X448.
    "1.2.840.113549.1.9.16.3.19": "dh_single_pass_std_dh_hkdf_sha256",
    "1.2.840.113549.1.9.16.3.20": "dh_single_pass_std_dh_hkdf_sha384",
    "1.2.840.113549.1.9.16.3.21": "dh_single_pass_std_dh_hkdf_sha512",
}
_register(cms.KeyEncryptionAlgorithmId, KARI_SCHEMES)

# RFC 8103: AEAD_CHACHA20_POLY1305 content encryption.
_register(algos.EncryptionAlgorithmId, {"1.2.840.113549.1.9.16.3.18": "chacha20_poly1305"})


class GCMParameters(core.Sequence):
    """RFC 5084 section 3.2."""

    _fields = [  # noqa: RUF012 - asn1crypto's declarative API
        ("aes_nonce", core.OctetString),
        ("aes_icvlen", core.Integer, {"default": 12}),
    ]


class ECCCMSSharedInfo(core.Sequence):
    """RFC 5753 section 7.2, also used by RFC 8418 for X25519/X448."""

    _fields = [  # noqa: RUF012
        ("key_info", algos.AlgorithmIdentifier),
        ("entity_u_info", core.OctetString, {"explicit": 0, "optional": True}),
        ("supp_pub_info", core.OctetString, {"explicit": 2}),
    ]


# RFC 9629 (KEMRecipientInfo) and RFC 9936 / RFC 9935 (ML-KEM), RFC 8619 (HKDF OIDs).
ID_ORI_KEM = "1.2.840.113549.1.9.16.13.3"
HKDF_OIDS = {
    "1.2.840.113549.1.9.16.3.28": "sha256",
    "1.2.840.113549.1.9.16.3.29": "sha384",
    "1.2.840.113549.1.9.16.3.30": "sha512",
}
HKDF_OID_BY_HASH = {name: oid for oid, name in HKDF_OIDS.items()}
# The ML-KEM (RFC 9936) and ML-DSA (RFC 9882) OIDs are those of keys/kinds.py: the same
# identifiers name the public keys and the CMS algorithms.


# Signature algorithm names for asn1crypto (RFC 9882 ML-DSA; RFC 9814 SLH-DSA only to name it).
_register(algos.SignedDigestAlgorithmId, {
    "2.16.840.1.101.3.4.3.17": "ml_dsa_44",
    "2.16.840.1.101.3.4.3.18": "ml_dsa_65",
    "2.16.840.1.101.3.4.3.19": "ml_dsa_87",
})


class AlgorithmIdentifier(core.Sequence):
    """Any AlgorithmIdentifier: the OID kept as dotted text, parameters as received."""

    _fields = [  # noqa: RUF012
        ("algorithm", core.ObjectIdentifier),
        ("parameters", core.Any, {"optional": True}),
    ]


class KEMRecipientInfo(core.Sequence):
    """RFC 9629 section 3: the ori-value of an OtherRecipientInfo of type id-ori-kem."""

    _fields = [  # noqa: RUF012
        ("version", core.Integer),
        ("rid", cms.RecipientIdentifier),
        ("kem", AlgorithmIdentifier),
        ("kemct", core.OctetString),
        ("kdf", AlgorithmIdentifier),
        ("kek_length", core.Integer),
        ("ukm", core.OctetString, {"explicit": 0, "optional": True}),
        ("wrap", AlgorithmIdentifier),
        ("encrypted_key", core.OctetString),
    ]


class CMSORIforKEMOtherInfo(core.Sequence):
    """RFC 9629 section 5: the KDF's info input, DER-encoded."""

    _fields = [  # noqa: RUF012
        ("wrap", AlgorithmIdentifier),
        ("kek_length", core.Integer),
        ("ukm", core.OctetString, {"explicit": 0, "optional": True}),
    ]


class RC2CBCParameter(core.Sequence):
    """RFC 3370 section 5.2 (read-only, for archives)."""

    _fields = [  # noqa: RUF012
        ("rc2_parameter_version", core.Integer, {"optional": True}),
        ("iv", core.OctetString),
    ]


T = TypeVar("T", bound=core.Asn1Value)
F = TypeVar("F", bound=Callable[..., Any])

# What asn1crypto raises on bad input, lazily, wherever a field is first touched. Its parser
# recurses once per level of nesting: a SEQUENCE nested 3,000 deep in an ANY (a capability's
# parameters, an OAEP label source, a KEM recipient) raised RecursionError out of verify and
# decrypt (review of stop 18, finding 2).
PARSE_ERRORS = (ValueError, TypeError, KeyError, IndexError, OverflowError, AttributeError,
                RecursionError)


def load(cls: type[T], data: bytes, what: str) -> T:
    """Decode the outer layer of ``data`` as ``cls`` (DER or BER).

    A ContentInfo or a RecipientInfos is first held to the parser budgets of
    :mod:`smimekit.cms.limits`, counting only TLV headers, so that no hostile element count
    reaches asn1crypto.

    Raises:
        ASN1Error: ``data`` is empty or its outer layer cannot be decoded.
        LimitExceededError: the structure is over a parser budget.
    """
    if not data:
        raise ASN1Error(f"malformed {what}: empty input")
    if cls is cms.ContentInfo:
        limits.check_content_info(data)
    elif cls is cms.RecipientInfos:
        limits.check_recipient_infos(data)
    try:
        return cls.load(data, strict=False)
    except PARSE_ERRORS as exc:
        raise ASN1Error(f"malformed {what}: {reason(exc)}") from None


def guard(what: str) -> Callable[[F], F]:
    """Turn asn1crypto's lazy parse errors inside the decorated function into ASN1Error.

    asn1crypto parses on first access, so a truncated or mis-tagged structure explodes deep
    inside the caller as a bare ValueError; this puts one clear name on it.
    """

    def wrap(func: F) -> F:
        @functools.wraps(func)
        def inner(*args: Any, **kwargs: Any) -> Any:
            try:
                return func(*args, **kwargs)
            except PARSE_ERRORS as exc:
                raise ASN1Error(f"malformed {what}: {reason(exc)}") from None

        return inner  # type: ignore[return-value]

    return wrap


def reason(exc: BaseException) -> str:
    """The first line of ``exc``'s text (its class name when it has none), at most 160
    characters: what an error message quotes of a parser's complaint."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    return first[:160]


def string_octets(value: core.Asn1Value) -> bytes | None:
    """The octets of a constructed (BER, segmented) string, merged from its segments' headers
    (:func:`smimekit.cms.der.join_segments`); None for a primitive string or segments that
    are not well-formed, which the caller leaves to asn1crypto."""
    if getattr(value, "method", 0) != 1:
        return None
    return der.join_segments(value.contents)


def der_set(attrs: core.Asn1Value) -> bytes:
    """The DER of an IMPLICIT [0]/[1] attribute set re-tagged as a universal SET OF.

    RFC 5652 section 5.4: the message digest over signed attributes uses the SET OF tag,
    not the implicit tag they carry inside SignerInfo (same for authAttrs, RFC 5083 2.2).
    """
    raw = attrs.dump()
    return b"\x31" + raw[1:]
