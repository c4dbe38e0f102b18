"""S/MIME subscriber certificate profiles of the CA/Browser Forum S/MIME Baseline Requirements.

A :class:`Profile` is a validation level (mailbox, organization, sponsor) and a generation
(multipurpose, strict). It decides the reserved policy OID (BR 7.1.6.1,
``2.23.140.1.5.<level>.<generation>``), the subject attributes (BR 7.1.4.2), the key usage for a
key type and purpose (BR 7.1.2.3 e) and the longest validity (BR 6.3.2: 825 days for
multipurpose and strict alike). Post-quantum keys follow ballot SMC013 (BR 1.0.11):
ML-DSA-44/65/87 keys only sign, ML-KEM keys only receive (keyEncipherment alone, RFC 9935). The
Legacy generation (``.1``) is not offered: the BR forbid issuing it from 15 July 2025 on.
Individual-validated (``.4``) is not offered yet.

These are pure functions and frozen data; :mod:`smimekit.ca.authority` assembles certificates.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import (
    ec,
    ed448,
    ed25519,
    mldsa,
    mlkem,
    rsa,
    x448,
    x25519,
)
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import NameOID

from smimekit.errors import CAError

__all__ = [
    "MAX_VALIDITY",
    "PROFILES",
    "Generation",
    "KeyType",
    "Profile",
    "Purpose",
    "SubjectInfo",
    "ValidationLevel",
    "key_type_of",
    "key_usage",
]

CABF_SMIME_ARC = "2.23.140.1.5"
# BR 6.3.2: "Strict" and "Multipurpose" alike, 825 days; Legacy had 1185.
MAX_VALIDITY = dt.timedelta(days=825)
DEFAULT_VALIDITY = dt.timedelta(days=730)


class ValidationLevel(enum.Enum):
    """Who the CA checked (BR 1.2.1 / 7.1.6.1); the value is the OID arc."""

    MAILBOX = 1
    """Control of the mailbox only; the subject names nothing but the address."""
    ORGANIZATION = 2
    """A legal entity; the subject names the organization."""
    SPONSORED = 3
    """A person affiliated with (sponsored by) a validated organization."""


class Generation(enum.Enum):
    """Profile generation (BR 7.1.6.1); the value is the OID arc."""

    MULTIPURPOSE = 2
    """Room for other EKUs and extensions, for compatibility with other uses."""
    STRICT = 3
    """The tightest profile, the long-term target of the BR."""


class Purpose(enum.Enum):
    """What a key pair is for. Dual key pairs are one SIGN and one ENCRYPT certificate."""

    SIGN = "sign"
    ENCRYPT = "encrypt"
    BOTH = "both"


class KeyType(enum.Enum):
    """Subscriber key families and the key usage rules the BR give each (7.1.2.3 e)."""

    RSA = "rsa"
    EC = "ec"
    ED25519 = "ed25519"
    X25519 = "x25519"
    ML_DSA = "ml-dsa"
    """ML-DSA-44/65/87 (FIPS 204, RFC 9881): signs only (BR 1.0.11, ballot SMC013)."""
    ML_KEM = "ml-kem"
    """ML-KEM-768/1024 (FIPS 203, RFC 9935): receives only, with keyEncipherment."""


def key_type_of(public_key: PublicKeyTypes) -> KeyType:
    """The :class:`KeyType` of ``public_key``.

    Raises:
        CAError: a key family the CA does not certify (DSA, Ed448, X448, ...).
    """
    if isinstance(public_key, rsa.RSAPublicKey):
        return KeyType.RSA
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return KeyType.EC
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return KeyType.ED25519
    if isinstance(public_key, x25519.X25519PublicKey):
        return KeyType.X25519
    if isinstance(public_key, mldsa.MLDSA44PublicKey | mldsa.MLDSA65PublicKey
                  | mldsa.MLDSA87PublicKey):
        return KeyType.ML_DSA
    if isinstance(public_key, mlkem.MLKEM768PublicKey | mlkem.MLKEM1024PublicKey):
        return KeyType.ML_KEM
    if isinstance(public_key, ed448.Ed448PublicKey | x448.X448PublicKey):
        raise CAError("Ed448/X448 subscriber keys are not supported by this CA")
    raise CAError(f"unsupported subscriber key type: {type(public_key).__name__}")


def key_usage(key_type: KeyType, purpose: Purpose) -> x509.KeyUsage:
    """The keyUsage for a key family and purpose (BR 7.1.2.3 e).

    RSA signs with digitalSignature and receives with keyEncipherment; EC receives with
    keyAgreement; Ed25519 only signs, X25519 only receives. ML-DSA only signs
    (digitalSignature, RFC 9881 5); ML-KEM only receives, and keyEncipherment is its only
    bit (RFC 9935 5, BR 7.1.2.3 e as amended by SMC013). nonRepudiation and
    dataEncipherment (both optional in places) are never set.

    Raises:
        CAError: the key family cannot serve the purpose (Ed25519 or ML-DSA encryption,
            X25519 or ML-KEM signing).
    """
    sign = purpose in (Purpose.SIGN, Purpose.BOTH)
    encrypt = purpose in (Purpose.ENCRYPT, Purpose.BOTH)
    if key_type is KeyType.ED25519 and encrypt:
        raise CAError("an Ed25519 key can only sign; use purpose 'sign' (and an X25519 or "
                      "EC key for encryption)")
    if key_type is KeyType.X25519 and sign:
        raise CAError("an X25519 key can only receive encrypted mail; use purpose 'encrypt'")
    if key_type is KeyType.ML_DSA and encrypt:
        raise CAError("an ML-DSA key can only sign; use purpose 'sign' (and an ML-KEM key "
                      "for encryption)")
    if key_type is KeyType.ML_KEM and sign:
        raise CAError("an ML-KEM key can only receive encrypted mail; use purpose 'encrypt' "
                      "(and an ML-DSA key for signing)")
    return x509.KeyUsage(
        digital_signature=sign,
        content_commitment=False,
        key_encipherment=encrypt and key_type in (KeyType.RSA, KeyType.ML_KEM),
        data_encipherment=False,
        key_agreement=encrypt and key_type in (KeyType.EC, KeyType.X25519),
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


@dataclass(frozen=True)
class SubjectInfo:
    """What the CA validated about the subscriber; which fields are used depends on the level."""

    email: str
    """The mailbox address in certificate form (``smimekit.mailbox.certificate_form``): the
    rfc822Name in subjectAltName, or the SmtpUTF8Mailbox when the local part is not ASCII
    (RFC 9598)."""
    organization: str | None = None
    """organizationName (organization and sponsor levels: required)."""
    organization_identifier: str | None = None
    """organizationIdentifier in BR 7.1.4.2.2 d form, e.g. ``NTRDE-HRB12345`` or
    ``LEIXG-...``; required at organization and sponsor levels (strict and multipurpose)."""
    common_name: str | None = None
    """CN: the organization (organization level) or the person's name (sponsor level);
    defaults to the mailbox address. Mailbox level always uses the address."""
    given_name: str | None = None
    """givenName (sponsor level)."""
    surname: str | None = None
    """surname (sponsor level)."""
    pseudonym: str | None = None
    """pseudonym instead of a given name and surname (sponsor level)."""
    country: str | None = None
    """Two-letter ISO 3166-1 countryName (organization and sponsor levels, optional)."""


@dataclass(frozen=True)
class Profile:
    """One S/MIME BR subscriber certificate profile."""

    level: ValidationLevel
    """Mailbox, organization or sponsor validated."""
    generation: Generation
    """Multipurpose or strict."""

    @property
    def name(self) -> str:
        """``mailbox-strict``, ``sponsored-multipurpose`` ..."""
        return f"{self.level.name.lower()}-{self.generation.name.lower()}"

    @property
    def policy_oid(self) -> x509.ObjectIdentifier:
        """The reserved CA/B Forum policy OID, 2.23.140.1.5.<level>.<generation>."""
        return x509.ObjectIdentifier(
            f"{CABF_SMIME_ARC}.{self.level.value}.{self.generation.value}"
        )

    @property
    def max_validity(self) -> dt.timedelta:
        """The longest validity the BR allow for this profile (6.3.2)."""
        return MAX_VALIDITY

    def subject(self, info: SubjectInfo) -> x509.Name:
        """The subject DN for ``info`` under this profile (BR 7.1.4.2.2).

        Raises:
            CAError: a field the level requires is missing.
        """
        attrs: list[x509.NameAttribute[str]] = []
        if info.country is not None and self.level is not ValidationLevel.MAILBOX:
            attrs.append(x509.NameAttribute(NameOID.COUNTRY_NAME, info.country))
        if self.level is not ValidationLevel.MAILBOX:
            if not info.organization or not info.organization_identifier:
                raise CAError(f"profile {self.name} needs the organization and its "
                              "organizationIdentifier")
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, info.organization))
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_IDENTIFIER,
                                            info.organization_identifier))
        if self.level is ValidationLevel.SPONSORED:
            if info.pseudonym:
                attrs.append(x509.NameAttribute(NameOID.PSEUDONYM, info.pseudonym))
            elif info.given_name and info.surname:
                attrs.append(x509.NameAttribute(NameOID.GIVEN_NAME, info.given_name))
                attrs.append(x509.NameAttribute(NameOID.SURNAME, info.surname))
            else:
                raise CAError(f"profile {self.name} needs a given name and surname, or a "
                              "pseudonym")
        if self.level is ValidationLevel.MAILBOX:
            cn = info.email
        elif self.level is ValidationLevel.ORGANIZATION:
            cn = info.common_name or info.organization or info.email
        else:
            cn = info.common_name or (
                info.pseudonym or f"{info.given_name} {info.surname}"
            )
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
        if info.email.isascii():
            # emailAddress is an IA5String: an SmtpUTF8Mailbox lives in subjectAltName only
            # (BR 7.1.4.2.2 h makes emailAddress optional).
            attrs.append(x509.NameAttribute(NameOID.EMAIL_ADDRESS, info.email))
        return x509.Name(attrs)


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (Profile(level, gen) for level in ValidationLevel for gen in Generation)
}
"""Every offered profile by name (``mailbox-strict``, ``organization-multipurpose`` ...)."""
