"""Who holds a CA key: software (:class:`LocalSigner`) or a token (:mod:`smimekit.keys.pkcs11`).

``cryptography``'s builders sign only with private key objects it owns. A key inside a PKCS#11
token never leaves it, so for such a :class:`Signer` :func:`sign_builder` signs the builder with
a throw-away stand-in key of the same type (which fixes the signatureAlgorithm fields), then
replaces the signature over the unchanged to-be-signed bytes with the token's
(:func:`resign`). Certificates and CRLs share that outer shape, ``SEQUENCE { tbs,
signatureAlgorithm, signature BIT STRING }``.
"""

from __future__ import annotations

import functools
from typing import Protocol, runtime_checkable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificateIssuerPublicKeyTypes,
)

from smimekit.cms import der
from smimekit.errors import CAError

__all__ = ["LocalSigner", "Signer", "hash_for", "resign", "sign_builder"]

_ML_DSA_PRIVATE = mldsa.MLDSA44PrivateKey | mldsa.MLDSA65PrivateKey | mldsa.MLDSA87PrivateKey
_ML_DSA_PUBLIC = mldsa.MLDSA44PublicKey | mldsa.MLDSA65PublicKey | mldsa.MLDSA87PublicKey


@runtime_checkable
class Signer(Protocol):
    """A CA signing key, wherever it lives."""

    def public_key(self) -> CertificateIssuerPublicKeyTypes:
        """The public half."""
        ...

    def sign(self, data: bytes) -> bytes:
        """Sign ``data`` the way X.509 wants for this key type (see :func:`hash_for`).

        RSA: PKCS#1 v1.5; ECDSA: DER ``Ecdsa-Sig-Value``; Ed25519: the 64 raw bytes;
        ML-DSA: pure ML-DSA with the empty context (RFC 9881 3).
        """
        ...


def hash_for(key: CertificateIssuerPublicKeyTypes | CertificateIssuerPrivateKeyTypes,
             ) -> hashes.SHA256 | hashes.SHA384 | None:
    """The digest a CA key signs with (S/MIME BR 7.1.3.2): P-384 SHA-384, Ed25519 and ML-DSA
    none (pure signatures), else SHA-256."""
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey
                  | _ML_DSA_PRIVATE | _ML_DSA_PUBLIC):
        return None
    if (isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey)
            and key.curve.key_size >= 384):
        return hashes.SHA384()
    return hashes.SHA256()


class LocalSigner:
    """A software private key."""

    def __init__(self, key: CertificateIssuerPrivateKeyTypes) -> None:
        self.key = key

    def public_key(self) -> CertificateIssuerPublicKeyTypes:
        return self.key.public_key()

    def sign(self, data: bytes) -> bytes:
        key = self.key
        digest = hash_for(key)
        if isinstance(key, rsa.RSAPrivateKey):
            assert digest is not None
            return key.sign(data, padding.PKCS1v15(), digest)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            assert digest is not None
            return key.sign(data, ec.ECDSA(digest))
        if isinstance(key, ed25519.Ed25519PrivateKey | _ML_DSA_PRIVATE):
            return key.sign(data)
        raise CAError(f"a {type(key).__name__} cannot sign certificates here")

    def __repr__(self) -> str:  # never the key material
        return f"LocalSigner({type(self.key).__name__})"


@functools.cache
def _stand_in(kind: str) -> CertificateIssuerPrivateKeyTypes:
    if kind == "rsa":
        return rsa.generate_private_key(65537, 2048)
    if kind == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "p384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind == "p521":
        return ec.generate_private_key(ec.SECP521R1())
    return ed25519.Ed25519PrivateKey.generate()


def _stand_in_for(public: CertificateIssuerPublicKeyTypes) -> CertificateIssuerPrivateKeyTypes:
    if isinstance(public, rsa.RSAPublicKey):
        return _stand_in("rsa")
    if isinstance(public, ec.EllipticCurvePublicKey):
        name = {256: "p256", 384: "p384", 521: "p521"}.get(public.curve.key_size)
        if name is None:
            raise CAError(f"unsupported CA curve {public.curve.name}")
        return _stand_in(name)
    if isinstance(public, ed25519.Ed25519PublicKey):
        return _stand_in("ed25519")
    if isinstance(public, _ML_DSA_PUBLIC):
        raise CAError("an ML-DSA CA key must be a software key here (no PKCS#11 token "
                      "signs ML-DSA through smimekit yet)")
    raise CAError(f"unsupported CA key type {type(public).__name__}")


def resign(signed: bytes, signer: Signer) -> bytes:
    """Replace the signature of a DER Certificate or CRL with ``signer``'s over the same TBS.

    Raises:
        CAError: ``signed`` is not SEQUENCE { tbs, algorithm, BIT STRING }.
    """
    parts = der.children(signed)
    if parts is None or len(parts) != 3 or parts[2][0] != 0x03:
        raise CAError("not a signed X.509 structure")
    tbs, algorithm = parts[0][1], parts[1][1]
    signature = signer.sign(tbs)
    return der.seq(tbs, algorithm, der.tlv(0x03, b"\x00" + signature))


def sign_builder(
    builder: x509.CertificateBuilder | x509.CertificateRevocationListBuilder,
    signer: Signer,
) -> x509.Certificate | x509.CertificateRevocationList:
    """Sign a certificate or CRL builder with ``signer``, in software or on a token."""
    if isinstance(signer, LocalSigner):
        return builder.sign(signer.key, hash_for(signer.key))
    public = signer.public_key()
    stand_in = _stand_in_for(public)
    if isinstance(builder, x509.CertificateBuilder):
        draft = builder.sign(stand_in, hash_for(public))
        return x509.load_der_x509_certificate(
            resign(draft.public_bytes(serialization.Encoding.DER), signer))
    crl = builder.sign(stand_in, hash_for(public))
    return x509.load_der_x509_crl(resign(crl.public_bytes(serialization.Encoding.DER), signer))
