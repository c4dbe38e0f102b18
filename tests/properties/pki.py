"""A small test PKI made once per process with ``cryptography``, shared by the property and
malformed-input suites.

One CA (EC P-256) issues an end-entity certificate per key type. Every end entity has a SAN
rfc822Name (``<name>@example.org``, the From address used in the tests), the emailProtection
EKU and a key usage that fits what its key can do (RFC 8550 section 4.4):

======== ============================ ===========================================
name     key                          use
======== ============================ ===========================================
rsa      RSA-2048                     signer and key-transport recipient
rsa2     RSA-2048                     a second RSA user (wrong-key tests)
p256     EC P-256                     ECDSA signer and ECDH recipient
p384     EC P-384                     ECDSA signer and ECDH recipient
p521     EC P-521                     ECDSA signer and ECDH recipient
ed25519  Ed25519                      signer only
x25519   X25519                       recipient only (RFC 8418)
======== ============================ ===========================================

Key generation costs a few hundred milliseconds, so :func:`test_pki` caches the PKI for the
whole process (one per xdist worker). :func:`write_pki` puts it on disk as PEM for the CLI.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, x25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DOMAIN = "example.org"
SIGNERS = ("rsa", "p256", "p384", "p521", "ed25519")
RECIPIENTS = ("rsa", "p256", "p384", "p521", "x25519")
RSA_NAMES = ("rsa", "rsa2")


@dataclass(frozen=True)
class User:
    name: str
    key: Any
    cert: x509.Certificate

    @property
    def email(self) -> str:
        return f"{self.name}@{DOMAIN}"


@dataclass(frozen=True)
class Pki:
    ca_key: ec.EllipticCurvePrivateKey
    ca: x509.Certificate
    users: dict[str, User]

    def __getitem__(self, name: str) -> User:
        return self.users[name]


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "smimekit tests"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _new_key(kind: str) -> Any:
    if kind.startswith("rsa"):
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind in ("p256", "p384", "p521"):
        curve = {"p256": ec.SECP256R1, "p384": ec.SECP384R1, "p521": ec.SECP521R1}[kind]
        return ec.generate_private_key(curve())
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind == "x25519":
        return x25519.X25519PrivateKey.generate()
    raise ValueError(kind)


def _key_usage(kind: str) -> x509.KeyUsage:
    signs = kind != "x25519"
    transports = kind.startswith("rsa")
    agrees = kind in ("p256", "p384", "p521", "x25519")
    return x509.KeyUsage(
        digital_signature=signs, content_commitment=False, key_encipherment=transports,
        data_encipherment=False, key_agreement=agrees, key_cert_sign=False, crl_sign=False,
        encipher_only=False, decipher_only=False,
    )


def make_pki() -> Pki:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    start, end = now - dt.timedelta(days=1), now + dt.timedelta(days=3650)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("smimekit test CA")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=False, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          key_cert_sign=True, crl_sign=True, encipher_only=False,
                          decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    users = {}
    for kind in ("rsa", "rsa2", "p256", "p384", "p521", "ed25519", "x25519"):
        key = _new_key(kind)
        email = f"{kind}@{DOMAIN}"
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(f"{kind} user"))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(kind), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        users[kind] = User(kind, key, cert)
    return Pki(ca_key, ca, users)


@functools.cache
def test_pki() -> Pki:
    """The process-wide PKI (made on first use)."""
    return make_pki()


test_pki.__test__ = False  # type: ignore[attr-defined]  # not a test, despite its name


def key_pem(key: Any) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class PkiFiles:
    ca: Path
    keys: dict[str, Path]
    certs: dict[str, Path]


def write_pki(pki: Pki, directory: Path) -> PkiFiles:
    """The PKI as PEM files (unencrypted keys) under ``directory``, for the CLI."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = directory / "ca.pem"
    ca.write_bytes(cert_pem(pki.ca))
    keys, certs = {}, {}
    for name, user in pki.users.items():
        keys[name] = directory / f"{name}.key.pem"
        keys[name].write_bytes(key_pem(user.key))
        certs[name] = directory / f"{name}.cert.pem"
        certs[name].write_bytes(cert_pem(user.cert))
    return PkiFiles(ca, keys, certs)


def message(body: bytes = b"Hello, world.\r\n", *, sender: str | None = "rsa",
            subject: str = "test", headers: bytes = b"") -> bytes:
    """A small CRLF message from ``<sender>@example.org`` (no From when ``sender`` is None)."""
    head = b""
    if sender is not None:
        head += f"From: {sender}@{DOMAIN}\r\n".encode()
    head += f"To: rsa2@{DOMAIN}\r\nSubject: {subject}\r\n".encode() + headers
    return head + b"\r\n" + body
