"""Key families that ``cryptography`` deprecates, recognised without its deprecated names.

From cryptography 51, touching ``dsa.DSAPublicKey`` (or any public name of the ``dsa`` module)
prints a ``CryptographyDeprecationWarning`` on the user's stderr, even in an ``isinstance``
test that only asks "is this DSA?". We still read DSA signatures in legacy mode, so we tell a
DSA key by the algorithm identifier of its SubjectPublicKeyInfo (RFC 3279 2.3.2) instead: the
check is exact on every cryptography release we support and never warns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeGuard

from asn1crypto import keys as asn1_keys
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

if TYPE_CHECKING:  # annotations only: never evaluated at run time
    from cryptography.hazmat.primitives.asymmetric import dsa

DSA_OID = "1.2.840.10040.4.1"  # id-dsa (RFC 3279 2.3.2)


def is_dsa_public_key(key: object) -> TypeGuard[dsa.DSAPublicKey]:
    """True when ``key`` is a DSA public key (without naming cryptography's DSA classes)."""
    public_bytes = getattr(key, "public_bytes", None)
    if public_bytes is None or hasattr(key, "private_bytes"):
        return False
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
