"""Keys and key files that ``cryptography`` warns about, handled without a warning.

No Python warning may reach a user's stderr: what we accept on purpose (DSA keys in legacy
mode, BER-encoded PKCS#12 files) is accepted here without one, and what we refuse we say in
our own words.

From cryptography 51, touching ``dsa.DSAPublicKey`` (or any public name of the ``dsa`` module)
prints a ``CryptographyDeprecationWarning`` on the user's stderr, even in an ``isinstance``
test that only asks "is this DSA?". We still read DSA signatures in legacy mode, so we tell a
DSA key by the algorithm identifier of its SubjectPublicKeyInfo (RFC 3279 2.3.2) instead: the
check is exact on every cryptography release we support and never warns.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeGuard, TypeVar, cast

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.utils import CryptographyDeprecationWarning

if TYPE_CHECKING:  # annotations only: never evaluated at run time
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import dsa, mldsa
    from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

DSA_OID = "1.2.840.10040.4.1"  # id-dsa (RFC 3279 2.3.2)
F = TypeVar("F", bound=Callable[..., Any])


def is_dsa_public_key(key: object) -> TypeGuard[dsa.DSAPublicKey]:
    """True when ``key`` is a DSA public key (without naming cryptography's DSA classes)."""
    public_bytes = getattr(key, "public_bytes", None)
    if public_bytes is None or hasattr(key, "private_bytes"):
        return False
    from asn1crypto import keys as asn1_keys

    try:
        der = public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        algorithm = asn1_keys.PublicKeyInfo.load(der)["algorithm"]["algorithm"].dotted
    except (TypeError, ValueError, KeyError, UnsupportedAlgorithm):
        # KeyError: asn1crypto has no spec for the key's OID (ML-DSA, ML-KEM): not DSA.
        return False
    return bool(algorithm == DSA_OID)


def is_dsa_private_key(key: object) -> TypeGuard[dsa.DSAPrivateKey]:
    """True when ``key`` is a DSA private key."""
    public_key = getattr(key, "public_key", None)
    if public_key is None or not hasattr(key, "private_bytes"):
        return False
    return is_dsa_public_key(public_key())


def certificate_public_key(cert: x509.Certificate) -> CertificatePublicKeyTypes:
    """``cert.public_key()``, without cryptography's own deprecation warning for a DSA key.

    From cryptography 51, loading a DSA public key warns. DSA certificates still arrive in
    archives, corpora and test suites (NIST PKITS), and we read them only in legacy mode and
    say so in the verdict ourselves: the user must see our words, not a library warning. The
    filter covers that one call and that one category.
    """
    if cert.public_key_algorithm_oid.dotted_string != DSA_OID:
        return cert.public_key()
    with accepted_input():
        return cert.public_key()


# What cryptography warns about in input that we accept on purpose, by category and the start
# of its message. Each is a fact about somebody else's file, which the user cannot act on:
# DSA keys (read in legacy mode only; the verdict says so in our words), BER-encoded PKCS#12
# and PKCS#7 (NSS and Thunderbird write them), and non-positive serial numbers (old CAs
# issued them; RFC 5280 forbids them for new certificates, and path validation judges them).
_ACCEPTED = (
    (CryptographyDeprecationWarning, r"DSA is deprecated"),
    (CryptographyDeprecationWarning, r"Parsed a serial number which wasn't positive"),
    (UserWarning, r"PKCS#12 bundle could not be parsed as DER"),
    (UserWarning, r"PKCS#7 certificates could not be parsed as DER"),
    # another party's certificate with a name attribute out of its length (a one-letter
    # countryName): read as it is; the verdict is the place to judge the certificate
    (UserWarning, r"Attribute's length must be"),
)


@contextmanager
def accepted_input() -> Iterator[None]:
    """Read keys and certificates inside this block: the input we accept on purpose raises
    no warning (no other warning is touched)."""
    with warnings.catch_warnings():
        accept_input_everywhere()
        yield


def accept_input_everywhere() -> None:
    """The filters of :func:`accepted_input` for the whole process (the CLI's ``main``): some
    of these warnings come late, e.g. when a certificate's serial number is first read."""
    for category, message in _ACCEPTED:
        warnings.filterwarnings("ignore", message=message, category=category)


def accept_input(func: F) -> F:
    """:func:`accepted_input` around a whole loader."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with accepted_input():
            return func(*args, **kwargs)

    return cast(F, wrapper)


# -- post-quantum keys (FIPS 203 ML-KEM, FIPS 204 ML-DSA, FIPS 205 SLH-DSA) ----------------
# NIST's algorithm arc 2.16.840.1.101.3.4: sigAlgs (3.x) and kems (4.x), as RFC 9881 (ML-DSA),
# RFC 9935 (ML-KEM) and RFC 9909 (SLH-DSA) name them for X.509 and CMS.
ML_DSA_OIDS = {
    "2.16.840.1.101.3.4.3.17": "ML-DSA-44",
    "2.16.840.1.101.3.4.3.18": "ML-DSA-65",
    "2.16.840.1.101.3.4.3.19": "ML-DSA-87",
}
ML_KEM_OIDS = {
    "2.16.840.1.101.3.4.4.1": "ML-KEM-512",
    "2.16.840.1.101.3.4.4.2": "ML-KEM-768",
    "2.16.840.1.101.3.4.4.3": "ML-KEM-1024",
}
# Algorithms we recognise by name but cannot use: cryptography has no primitive for them.
_UNSUPPORTED_PQ = {
    "2.16.840.1.101.3.4.4.1": "ML-KEM-512",
    **{f"2.16.840.1.101.3.4.3.{n}": "HashML-DSA" for n in (32, 33, 34)},
    **{f"2.16.840.1.101.3.4.3.{n}": "SLH-DSA" for n in range(20, 32)},
    **{f"2.16.840.1.101.3.4.3.{n}": "HashSLH-DSA" for n in range(35, 47)},
}


def pq_algorithm_name(oid: str) -> str | None:
    """The name of a post-quantum key or signature algorithm OID we know of, else None."""
    return ML_DSA_OIDS.get(oid) or ML_KEM_OIDS.get(oid) or _UNSUPPORTED_PQ.get(oid)


def unsupported_pq_algorithm(oid: str) -> str | None:
    """The name of a post-quantum algorithm that cryptography cannot compute, else None
    (ML-KEM-512 and SLH-DSA on cryptography 51)."""
    return _UNSUPPORTED_PQ.get(oid)


def is_ml_dsa_key(key: object) -> bool:
    """True for an ML-DSA-44/65/87 public or private key."""
    from cryptography.hazmat.primitives.asymmetric import mldsa

    return isinstance(
        key,
        mldsa.MLDSA44PublicKey | mldsa.MLDSA65PublicKey | mldsa.MLDSA87PublicKey
        | mldsa.MLDSA44PrivateKey | mldsa.MLDSA65PrivateKey | mldsa.MLDSA87PrivateKey,
    )


def is_ml_dsa_public_key(
    key: object,
) -> TypeGuard[mldsa.MLDSA44PublicKey | mldsa.MLDSA65PublicKey | mldsa.MLDSA87PublicKey]:
    """True for an ML-DSA-44/65/87 public key."""
    return is_ml_dsa_key(key) and not hasattr(key, "private_bytes")


def is_ml_dsa_private_key(
    key: object,
) -> TypeGuard[mldsa.MLDSA44PrivateKey | mldsa.MLDSA65PrivateKey | mldsa.MLDSA87PrivateKey]:
    """True for an ML-DSA-44/65/87 private key."""
    return is_ml_dsa_key(key) and hasattr(key, "private_bytes")


def is_ml_kem_key(key: object) -> bool:
    """True for an ML-KEM-768/1024 public or private key."""
    from cryptography.hazmat.primitives.asymmetric import mlkem

    return isinstance(
        key,
        mlkem.MLKEM768PublicKey | mlkem.MLKEM1024PublicKey
        | mlkem.MLKEM768PrivateKey | mlkem.MLKEM1024PrivateKey,
    )


def key_algorithm_name(key: object) -> str | None:
    """"ML-DSA-65", "ML-KEM-768"... for a post-quantum key (public or private), else None."""
    from cryptography.hazmat.primitives.asymmetric import mldsa, mlkem

    names: tuple[tuple[tuple[type, ...], str], ...] = (
        ((mldsa.MLDSA44PublicKey, mldsa.MLDSA44PrivateKey), "ML-DSA-44"),
        ((mldsa.MLDSA65PublicKey, mldsa.MLDSA65PrivateKey), "ML-DSA-65"),
        ((mldsa.MLDSA87PublicKey, mldsa.MLDSA87PrivateKey), "ML-DSA-87"),
        ((mlkem.MLKEM768PublicKey, mlkem.MLKEM768PrivateKey), "ML-KEM-768"),
        ((mlkem.MLKEM1024PublicKey, mlkem.MLKEM1024PrivateKey), "ML-KEM-1024"),
    )
    return next((name for classes, name in names if isinstance(key, classes)), None)
