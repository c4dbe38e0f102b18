"""OpenSSL's S/MIME test PKI and negative CMS cases (test/recipes/80-test_cms.t, 25-test_pkcs7).

Source: openssl-test-data/README.corpus.md. Each smime-certs/*.pem holds a private key and its
certificate; the signed negative cases were made with smrsa1 under smroot.pem and contain
smcont.txt.
"""

from __future__ import annotations

import dataclasses

import pytest

import smimekit
import smimekit.cms
from smimekit.errors import (
    ASN1Error,
    EncryptionError,
    KeyLoadError,
    LegacyAlgorithmError,
    MalformedError,
    NoSignatureError,
    SignedAttributesError,
    SmimeError,
    UnsupportedError,
)

from .vectors import crypto_cert, crypto_key, dearmor, list_files, params, read_bytes, spki

FOLDER = "openssl-test-data"
T = "test/"
SC = T + "smime-certs/"
CMSD = T + "recipes/80-test_cms_data/"


@dataclasses.dataclass(frozen=True)
class Cms:
    file: str
    op: str  # "verify" | "decrypt" | "decrypt-message" | "certs"
    why: str
    error: type[SmimeError] | tuple[type[SmimeError], ...] | None = None
    certificates: int = 0
    skip: str | None = None


CMS_CASES = [
    Cms(
        CMSD + "no_ct_attr.cms",
        "verify",
        "signed attributes without content-type (RFC 5652 §5.3 requires it)",
        error=SignedAttributesError,
    ),
    Cms(
        CMSD + "no_md_attr.cms",
        "verify",
        "signed attributes without message-digest (RFC 5652 §5.3)",
        error=SignedAttributesError,
    ),
    Cms(
        CMSD + "ct_multiple_attr.cms",
        "verify",
        "content-type attribute twice (RFC 5652 §11.1: single-valued, one instance)",
        error=SignedAttributesError,
    ),
    Cms(
        CMSD + "bad_signtime_attr.cms",
        "verify",
        "signing-time sent as an UNSIGNED attribute (RFC 5652 §11.3: it MUST be signed)",
        error=SignedAttributesError,
    ),
    Cms(
        CMSD + "pkcs7-md4.pem",
        "verify",
        "SignedData with an MD4 digest: must fail cleanly, even with allow_legacy",
        error=UnsupportedError,
    ),
    Cms(
        CMSD + "pkcs7-md4-encrypted.pem",
        "decrypt",
        "PKCS#7 signedAndEnvelopedData (not CMS) with MD4, to ee-cert.pem: must fail cleanly",
        error=(MalformedError, UnsupportedError),
    ),
    Cms(
        CMSD + "ciphertext_from_1_1_1.cms",
        "decrypt-message",
        "S/MIME from OpenSSL 1.1.1:"
        " ECDH kari (dhSinglePass-stdDH-sha1kdf, X9.63) to smec3 (P-256), 3DES key wrap and"
        " 3DES-CBC content (legacy) -> smcont.txt",
    ),
    Cms(
        T + "recipes/25-test_pkcs7_data/malformed.pkcs7",
        "verify",
        "ContentInfo signedData without its [0] content",
        error=ASN1Error,
    ),
    Cms(
        T + "d2i-tests/bad-cms.der",
        "decrypt",
        "truncated EnvelopedData (d2i fuzz case)",
        error=ASN1Error,
    ),
    Cms(
        T + "pkcs7.pem",
        "certs",
        "bare base64 (no armour), BER certs-only SignedData with two 1996 VeriSign certs",
        error=NoSignatureError,
        certificates=2,
    ),
    Cms(
        T + "pkcs7-1.pem",
        "certs",
        "SignedData (MD2, content 'Everyone gets Friday off.')"
        " carrying 1 cert; trailing bytes after the DER",
        certificates=1,
    ),
    Cms(
        T + "recipes/25-test_pkcs7_data/grfc.out",
        "certs",
        "a GOST R 34.10-2001 certificate (PEM): parses, even though its key type is unknown",
        certificates=1,
    ),
    Cms(
        T + "smime-eml/SignedInvalidMappingFromanyPolicyTest7.eml",
        "verify",
        "PKITS 4.10.7: valid signature, but policy mapping from anyPolicy must fail",
        skip="this table checks CMS-level signatures, and this one is valid: the policy-mapping"
        " failure is a path-validation result, tested on the same PKITS message in"
        " tests/pkits (4.10.7)",
    ),
]


@dataclasses.dataclass(frozen=True)
class Pair:
    file: str  # key + certificate in one PEM (or the certificate, with key=...)
    why: str
    key: str | None = None
    skip: str | None = None


PAIRS = [
    Pair(SC + "smroot.pem", "RSA root (cert + key)"),
    Pair(SC + "smrsa1.pem", "RSA EE #1, signer of the negative cases"),
    Pair(SC + "smrsa2.pem", "RSA EE #2"),
    Pair(SC + "smrsa3.pem", "RSA EE #3"),
    Pair(SC + "smrsa1024.pem", "RSA-1024 EE"),
    Pair(SC + "csrsa1.pem", "RSA code-signing EE (wrong EKU for mail)"),
    Pair(SC + "smdsa1.pem", "DSA EE #1"),
    Pair(SC + "smdsa2.pem", "DSA EE #2"),
    Pair(SC + "smdsa3.pem", "DSA EE #3"),
    Pair(SC + "smec1.pem", "EC P-256 EE #1"),
    Pair(
        SC + "smec2.pem",
        "EC sect283k1 (K-283) EE",
        skip="binary curve sect283k1 (K-283) is not supported by pyca/cryptography",
    ),
    Pair(SC + "smec3.pem", "EC P-256 EE #3, recipient of ciphertext_from_1_1_1.cms"),
    Pair(
        SC + "smdh.pem",
        "X9.42 DH EE",
        skip="X9.42 DH key agreement is not an S/MIME 4.0 algorithm; not in issue 2",
    ),
    Pair(
        T + "certs/ee-cert.pem",
        "RSA EE (server.example), recipient of pkcs7-md4-encrypted",
        key=T + "certs/ee-key.pem",
    ),
]

#: Files that are inputs or documentation, not vectors.
NOT_VECTORS = {
    "README.corpus.md": "corpus README",
    "LICENSE.txt": "licence",
    T + "smcont.txt": "content of the CMS cases",
    T + "smcont.bin": "binary content (OpenSSL's -binary tests)",
    T + "smcont_zero.txt": "empty content (OpenSSL's zero-length tests)",
    SC + "smdsap.pem": "DSA domain parameters used to make the DSA keys",
    T + "certs/ee-key.pem": "key of ee-cert.pem (row ee-cert.pem)",
    T + "certs/pkitsta.pem": "PKITS trust anchor for the skipped SignedInvalidMapping row",
}


def _smcont() -> bytes:
    return read_bytes(FOLDER, T + "smcont.txt")


@pytest.mark.parametrize("row", params([r for r in CMS_CASES if r.op == "verify"]))
def test_broken_signed_data_is_refused(row: Cms) -> None:
    assert row.error is not None
    with pytest.raises(row.error):
        smimekit.cms.verify_signed_data(dearmor(read_bytes(FOLDER, row.file)), allow_legacy=True)


@pytest.mark.parametrize("row", params([r for r in CMS_CASES if r.op == "decrypt"]))
def test_broken_enveloped_data_is_refused(row: Cms) -> None:
    assert row.error is not None
    ee = T + "certs/ee-"
    keys = [(crypto_key(FOLDER, ee + "key.pem"), crypto_cert(FOLDER, ee + "cert.pem"))]
    with pytest.raises(row.error):
        smimekit.cms.decrypt_enveloped(
            dearmor(read_bytes(FOLDER, row.file)), keys=keys, allow_legacy=True
        )


@pytest.mark.parametrize("row", params([r for r in CMS_CASES if r.op == "decrypt-message"]))
def test_openssl_111_ecdh_message_decrypts_with_allow_legacy(row: Cms) -> None:
    key, cert = crypto_key(FOLDER, SC + "smec3.pem"), crypto_cert(FOLDER, SC + "smec3.pem")
    message = read_bytes(FOLDER, row.file)
    try:
        result = smimekit.decrypt(message, key, cert, allow_legacy=True)
    except UnsupportedError as exc:
        if "1.2.840.113549.1.9.16.3.6" in str(exc) and not isinstance(exc, LegacyAlgorithmError):
            pytest.skip(f"3DES key wrap (id-alg-CMS3DESwrap, RFC 3217) not supported: {exc}")
        raise
    body = result.content.replace(b"\r\n", b"\n")
    assert _smcont().replace(b"\r\n", b"\n").strip() in body
    with pytest.raises(LegacyAlgorithmError):  # 3DES is refused by default
        smimekit.decrypt(message, key, cert)


@pytest.mark.parametrize("row", params([r for r in CMS_CASES if r.op == "certs"]))
def test_certificates_are_read_from_pkcs7_and_pem(row: Cms) -> None:
    data = read_bytes(FOLDER, row.file)
    if b"-----BEGIN CERTIFICATE-----" not in data:
        data = dearmor(data)
    certs = smimekit.load_certificates(data)
    assert len(certs) == row.certificates
    if row.error is not None:  # certs-only: holds certificates, but no signature
        with pytest.raises(row.error):
            smimekit.cms.verify_signed_data(data, allow_legacy=True)


@pytest.mark.parametrize("row", params(PAIRS))
def test_key_and_certificate_load_and_match(row: Pair) -> None:
    (cert,) = smimekit.load_certificates(read_bytes(FOLDER, row.file))
    key = smimekit.load_private_key(read_bytes(FOLDER, row.key or row.file))
    assert spki(key) == spki(cert)


def test_encrypting_to_a_certificate_with_a_broken_rsa_key_fails() -> None:
    # badrsa.pem: negative serial, even RSA modulus. 80-test_cms.t expects encryption to fail
    # cleanly; refusing the certificate at load time is just as good.
    data = read_bytes(FOLDER, SC + "badrsa.pem")
    try:
        certs = smimekit.load_certificates(data)
    except KeyLoadError:
        return
    message = b"From: a@example.com\r\nTo: b@example.com\r\n\r\n" + _smcont()
    with pytest.raises(EncryptionError):
        smimekit.encrypt(message, certs)


def test_every_file_in_folder_has_a_row() -> None:
    covered = {r.file for r in CMS_CASES} | {r.file for r in PAIRS} | {SC + "badrsa.pem"}
    assert set(list_files(FOLDER)) == covered | set(NOT_VECTORS)
