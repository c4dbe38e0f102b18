"""RFC 9216 (LAMPS S/MIME example keys): every certificate, key and PKCS#12 loads and matches.

Source: rfc9216-smime-example-keys/README.md. Keys are unencrypted PKCS#8; PKCS#12 files are
protected with the persona's name and pbeWithSHA1And3-KeyTripleDES-CBC; ``*.p12`` is the RFC's
PEM armour (label ``PKCS12``) of ``*.p12.der``.
"""

from __future__ import annotations

import dataclasses

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa, x25519

import smimekit
from smimekit.errors import PassphraseError

from .vectors import corpus_path, crypto_cert, dearmor, list_files, params, read_bytes, spki

FOLDER = "rfc9216-smime-example-keys"

RSA = rsa.RSAPublicKey
ED25519 = ed25519.Ed25519PublicKey
X25519 = x25519.X25519PublicKey

RSA_CA = "Sample LAMPS RSA Certification Authority"
ED_CA = "Sample LAMPS Ed25519 Certification Authority"


@dataclasses.dataclass(frozen=True)
class CertRow:
    file: str
    subject_cn: str
    issuer_cn: str
    key_type: type
    why: str
    skip: str | None = None


@dataclasses.dataclass(frozen=True)
class KeyRow:
    file: str
    matches: str  # the certificate whose public key this private key must produce
    key_type: type
    why: str
    skip: str | None = None


@dataclasses.dataclass(frozen=True)
class P12Row:
    file: str
    passphrase: str
    certs: frozenset[str]  # every certificate the bundle must yield
    why: str
    armoured: bool = False
    skip: str | None = None


CERTS = [
    CertRow("pem/ca.rsa.crt", RSA_CA, RSA_CA, RSA, "self-signed RSA root (RFC 9216 §3)"),
    CertRow("pem/ca.rsa.cross.crt", RSA_CA, ED_CA, RSA, "RSA CA cross-signed by Ed25519 CA (§3)"),
    CertRow("pem/ca.25519.crt", ED_CA, ED_CA, ED25519, "self-signed Ed25519 root (§4)"),
    CertRow("pem/ca.25519.cross.crt", ED_CA, RSA_CA, ED25519, "Ed25519 CA cross-signed by RSA CA"),
    CertRow("pem/alice.sign.crt", "Alice Lovelace", RSA_CA, RSA, "Alice signing cert (§5)"),
    CertRow("pem/alice.encrypt.crt", "Alice Lovelace", RSA_CA, RSA, "Alice encryption cert (§5)"),
    CertRow("pem/bob.sign.crt", "Bob Babbage", RSA_CA, RSA, "Bob signing cert (§6)"),
    CertRow("pem/bob.encrypt.crt", "Bob Babbage", RSA_CA, RSA, "Bob encryption cert (§6)"),
    CertRow("pem/carlos.sign.crt", "Carlos Turing", ED_CA, ED25519, "Carlos Ed25519 signing (§7)"),
    CertRow("pem/carlos.encrypt.crt", "Carlos Turing", ED_CA, X25519, "Carlos X25519 (§7)"),
    CertRow("pem/dana.sign.crt", "Dana Hopper", ED_CA, ED25519, "Dana Ed25519 signing (§8)"),
    CertRow("pem/dana.encrypt.crt", "Dana Hopper", ED_CA, X25519, "Dana X25519 encryption (§8)"),
]

KEYS = [
    KeyRow("pem/ca.rsa.key", "pem/ca.rsa.crt", RSA, "RSA CA key, PKCS#8"),
    KeyRow("pem/ca.25519.key", "pem/ca.25519.crt", ED25519, "Ed25519 CA key, PKCS#8"),
    KeyRow("pem/alice.sign.key", "pem/alice.sign.crt", RSA, "Alice RSA-2048 signing key"),
    KeyRow("pem/alice.encrypt.key", "pem/alice.encrypt.crt", RSA, "Alice RSA-2048 decryption key"),
    KeyRow("pem/bob.sign.key", "pem/bob.sign.crt", RSA, "Bob RSA-2048 signing key"),
    KeyRow("pem/bob.encrypt.key", "pem/bob.encrypt.crt", RSA, "Bob RSA-2048 decryption key"),
    KeyRow("pem/carlos.sign.key", "pem/carlos.sign.crt", ED25519, "Carlos Ed25519 key"),
    KeyRow("pem/carlos.encrypt.key", "pem/carlos.encrypt.crt", X25519, "Carlos X25519 key"),
    KeyRow("pem/dana.sign.key", "pem/dana.sign.crt", ED25519, "Dana Ed25519 key"),
    KeyRow("pem/dana.encrypt.key", "pem/dana.encrypt.crt", X25519, "Dana X25519 key"),
]


def _bundle(name: str, ca_cross: str) -> frozenset[str]:
    return frozenset({f"pem/{name}.sign.crt", f"pem/{name}.encrypt.crt", f"pem/{ca_cross}"})


P12S = [
    P12Row(f"pem/{name}.{ext}", name, _bundle(name, cross), why, armoured=(ext == "p12"))
    for name, cross, why in [
        ("alice", "ca.rsa.cross.crt", "2 RSA keys + sign/encrypt certs + RSA CA cross cert"),
        ("bob", "ca.rsa.cross.crt", "2 RSA keys + sign/encrypt certs + RSA CA cross cert"),
        (
            "carlos",
            "ca.25519.cross.crt",
            "Ed25519 + X25519 keys (pyca's PKCS#12 loader rejects"
            " the X25519 key bag with TypeError) + certs + Ed25519 CA cross cert",
        ),
        ("dana", "ca.25519.cross.crt", "Ed25519 + X25519 keys + certs + Ed25519 CA cross cert"),
    ]
    for ext in ("p12", "p12.der")
]

#: Files that are not test vectors themselves.
NOT_VECTORS = {
    "README.md": "corpus README",
    "rfc9216.txt": "the RFC text, for attribution",
}


def _p12_bytes(row: P12Row) -> bytes:
    data = read_bytes(FOLDER, row.file)
    if row.armoured:
        der = dearmor(data)
        # The armour is only a transport: it must hold exactly the .der twin.
        assert der == read_bytes(FOLDER, row.file.replace(".p12", ".p12.der"))
        return der
    return data


@pytest.mark.parametrize("row", params(CERTS))
def test_certificate_loads_with_expected_subject_and_key_type(row: CertRow) -> None:
    certs = smimekit.load_certificates(read_bytes(FOLDER, row.file))
    assert len(certs) == 1
    (cert,) = certs
    assert cert.subject.rfc4514_string() == f"CN={row.subject_cn},OU=LAMPS WG,O=IETF"
    assert f"CN={row.issuer_cn}" in cert.issuer.rfc4514_string()
    assert isinstance(cert.public_key(), row.key_type)
    # Loading from a path gives the same certificate as loading from bytes.
    assert smimekit.load_certificates(corpus_path(FOLDER, row.file)) == certs


@pytest.mark.parametrize("row", params(KEYS))
def test_private_key_loads_and_matches_its_certificate(row: KeyRow) -> None:
    key = smimekit.load_private_key(read_bytes(FOLDER, row.file))
    assert isinstance(key.public_key(), row.key_type)
    assert spki(key) == spki(crypto_cert(FOLDER, row.matches))


@pytest.mark.parametrize("row", params(P12S))
def test_pkcs12_yields_a_matching_key_and_all_certificates(row: P12Row) -> None:
    key, cert, extra = smimekit.load_pkcs12(_p12_bytes(row), row.passphrase)
    assert spki(key) == spki(cert)
    expected = {crypto_cert(FOLDER, name) for name in row.certs}
    assert {cert, *extra} == expected


@pytest.mark.parametrize("row", params(P12S))
def test_pkcs12_certificates_via_load_certificates(row: P12Row) -> None:
    certs = smimekit.load_certificates(_p12_bytes(row), passphrase=row.passphrase)
    assert set(certs) == {crypto_cert(FOLDER, name) for name in row.certs}


@pytest.mark.parametrize("row", params([r for r in P12S if not r.armoured]))
def test_pkcs12_with_wrong_passphrase_is_refused(row: P12Row) -> None:
    with pytest.raises(PassphraseError):
        smimekit.load_pkcs12(_p12_bytes(row), row.passphrase + "-wrong")


def test_every_file_in_folder_has_a_row() -> None:
    covered = {r.file for r in CERTS} | {r.file for r in KEYS} | {r.file for r in P12S}
    assert set(list_files(FOLDER)) == covered | set(NOT_VECTORS)
