"""A test PKI declared once as data: a root, an intermediate and people of every key type.

Post-quantum people: kinds ``mldsa44``/``mldsa65``/``mldsa87`` (signers, RFC 9881) and
``mlkem768``/``mlkem1024`` (recipients, RFC 9935: keyEncipherment only); :func:`ml_dsa_pki`
is the same PKI with an ML-DSA-65 root and issuing CA.
"""

from __future__ import annotations

import datetime as dt
import email.utils
from dataclasses import dataclass, field
from functools import cache

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import (
    ec,
    ed25519,
    mldsa,
    mlkem,
    rsa,
    x448,
    x25519,
)
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    PrivateKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
EMAIL_EKU = [ExtendedKeyUsageOID.EMAIL_PROTECTION]
# Verification compares signing-time with Date (within an hour), so test mail is dated now.
DATE = email.utils.format_datetime(NOW)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "smimekit tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@cache
def new_key(kind: str) -> PrivateKeyTypes:
    """One key per kind per test session (key generation is the slow part)."""
    return _generate(kind)


def _generate(kind: str) -> PrivateKeyTypes:
    base = kind.split("#")[0]
    if base.startswith("rsa"):
        return rsa.generate_private_key(65537, int(base[3:] or 2048))
    curves = {"p256": ec.SECP256R1(), "p384": ec.SECP384R1(), "p521": ec.SECP521R1()}
    if base in curves:
        return ec.generate_private_key(curves[base])
    if base == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if base == "x25519":
        return x25519.X25519PrivateKey.generate()
    if base == "x448":
        return x448.X448PrivateKey.generate()
    pq: dict[str, type[PrivateKeyTypes]] = {
        "mldsa44": mldsa.MLDSA44PrivateKey, "mldsa65": mldsa.MLDSA65PrivateKey,
        "mldsa87": mldsa.MLDSA87PrivateKey, "mlkem768": mlkem.MLKEM768PrivateKey,
        "mlkem1024": mlkem.MLKEM1024PrivateKey,
    }
    if base in pq:
        return pq[base].generate()  # type: ignore[union-attr]
    raise ValueError(kind)


def _hash_for(issuer_key: object,
              chosen: hashes.HashAlgorithm | None = None) -> hashes.HashAlgorithm | None:
    """Ed25519 and ML-DSA sign certificates without a separate hash."""
    pure = (ed25519.Ed25519PrivateKey, mldsa.MLDSA44PrivateKey, mldsa.MLDSA65PrivateKey,
            mldsa.MLDSA87PrivateKey)
    return None if isinstance(issuer_key, pure) else (chosen or hashes.SHA256())


@dataclass(frozen=True)
class Identity:
    key: PrivateKeyTypes
    cert: x509.Certificate
    email: str

    def pem_key(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    def pem_cert(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def ca_cert(key: CertificateIssuerPrivateKeyTypes, subject: x509.Name,
            issuer_key: CertificateIssuerPrivateKeyTypes, issuer: x509.Name,
            *, path_length: int | None = None, not_after: dt.datetime | None = None,
            eku: list[x509.ObjectIdentifier] | None = None) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=30))
        .not_valid_after(not_after or NOW + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                       critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return builder.sign(issuer_key, _hash_for(issuer_key))


@dataclass
class PKI:
    root_key: rsa.RSAPrivateKey = field(default_factory=lambda: new_key("rsa3072#root"))  # type: ignore[assignment,return-value]
    inter_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: new_key("p384#inter"))  # type: ignore[assignment,return-value]

    def __post_init__(self) -> None:
        self.root = ca_cert(self.root_key, _name("Test Root"), self.root_key, _name("Test Root"))
        self.inter = ca_cert(self.inter_key, _name("Test Issuing CA"), self.root_key,
                             self.root.subject, path_length=0)

    def person(
        self,
        name: str,
        kind: str = "rsa2048",
        *,
        email: str | None = None,
        eku: list[x509.ObjectIdentifier] | None = EMAIL_EKU,
        key_usage: str | None = None,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        issuer: tuple[CertificateIssuerPrivateKeyTypes, x509.Certificate] | None = None,
        signature_hash: hashes.HashAlgorithm | None = None,
        fresh_key: bool = False,
    ) -> Identity:
        """An end entity. ``key_usage``: 'sign', 'encrypt', 'both' (default by key type)."""
        key = _generate(kind) if fresh_key else new_key(f"{kind}#{name}")
        email = email or f"{name}@example.org"
        issuer_key, issuer_cert = issuer or (self.inter_key, self.inter)
        public = key.public_key()
        kem = isinstance(public, mlkem.MLKEM768PublicKey | mlkem.MLKEM1024PublicKey)
        agreement = not (kem or isinstance(public, rsa.RSAPublicKey))
        usage = key_usage or ("encrypt" if kem or isinstance(public, x25519.X25519PublicKey |
                                                              x448.X448PublicKey)
                              else "sign" if isinstance(public, ed25519.Ed25519PublicKey |
                                                        mldsa.MLDSA44PublicKey |
                                                        mldsa.MLDSA65PublicKey |
                                                        mldsa.MLDSA87PublicKey)
                              else "both")
        sign = usage in ("sign", "both")
        enc = usage in ("encrypt", "both")
        ku = x509.KeyUsage(
            digital_signature=sign, content_commitment=False,
            key_encipherment=enc and not agreement, data_encipherment=False,
            key_agreement=enc and agreement, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False,
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(issuer_cert.subject)
            .public_key(public)  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or NOW - dt.timedelta(days=1))
            .not_valid_after(not_after or NOW + dt.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), False)
            .add_extension(ku, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), False)  # type: ignore[arg-type]
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        if eku is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
        return Identity(key, builder.sign(issuer_key, _hash_for(issuer_key, signature_hash)),
                        email)


@cache
def ml_dsa_pki() -> PKI:
    """The test PKI with an ML-DSA-65 root and issuing CA (one per session)."""
    return PKI(root_key=new_key("mldsa65#root"),  # type: ignore[arg-type]
               inter_key=new_key("mldsa65#inter"))  # type: ignore[arg-type]


def message(sender: str = "alice@example.org", body: bytes = b"Hello, world.\r\n",
            headers: bytes = b"Content-Type: text/plain; charset=us-ascii\r\n") -> bytes:
    return (
        f"From: {sender}\r\nTo: bob@example.org\r\nSubject: test\r\n"
        f"Date: {DATE}\r\nMessage-ID: <t1@example.org>\r\n"
    ).encode() + headers + b"\r\n" + body
