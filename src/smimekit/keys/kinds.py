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
    from cryptography.hazmat.primitives.asymmetric import dsa
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
    except (TypeError, ValueError, UnsupportedAlgorithm):
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
