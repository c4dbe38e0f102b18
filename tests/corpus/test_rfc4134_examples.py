"""RFC 4134 "Examples of S/MIME Messages" run through smimekit.

Source: rfc4134-smime-examples/README.md (per-example table, checked with OpenSSL 3.0).
Everything is SHA-1 / DSA-1024 / 3DES / RC2 era, so every positive case needs
``allow_legacy=True`` and every one of them must be refused without it.
Plaintext of all examples: ExContent.bin = "This is some sample content.".
"""

from __future__ import annotations

import dataclasses

import pytest

import smimekit
import smimekit.cms
from smimekit.errors import (
    LegacyAlgorithmError,
    NoSignatureError,
    UnsupportedError,
)

from .vectors import (
    RFC4134_AT,
    SAMPLE_CONTENT,
    corpus_path,
    crypto_cert,
    crypto_key,
    list_files,
    params,
    read_bytes,
    spki,
)

FOLDER = "rfc4134-smime-examples"
F = "files/"

INHERITED_DSA = (
    "DianeDSS certificate inherits its DSA domain parameters from the issuer (RFC 3279 "
    "§2.3.2, SPKI parameters absent): pyca/cryptography cannot parse it"
)


@dataclasses.dataclass(frozen=True)
class Signed:
    file: str
    signers: tuple[str, ...]  # certificate file of each signer, in SignerInfo order
    why: str
    detached: bool = False
    dsa: bool = False
    skip: str | None = None


@dataclasses.dataclass(frozen=True)
class Enveloped:
    file: str
    cipher: str
    why: str
    skip: str | None = None


@dataclasses.dataclass(frozen=True)
class Message:
    file: str
    op: str  # "verify" or "decrypt"
    why: str
    dsa: bool = False
    skip: str | None = None


@dataclasses.dataclass(frozen=True)
class NotSigned:
    file: str
    why: str
    certificates: int = 0  # certificates load_certificates must find in it
    skip: str | None = None


@dataclasses.dataclass(frozen=True)
class Cert:
    file: str
    subject_cn: str
    why: str
    skip: str | None = None


@dataclasses.dataclass(frozen=True)
class Key:
    file: str
    cert: str
    why: str
    skip: str | None = None


@dataclasses.dataclass(frozen=True)
class Unused:
    file: str
    skip: str


ALICE_DSS = F + "AliceDSSSignByCarlNoInherit.cer"
ALICE_RSA = F + "AliceRSASignByCarl.cer"
DIANE_DSS = F + "DianeDSSSignByCarlInherit.cer"

SIGNED = [
    Signed(F + "4.1.bin", (ALICE_DSS,), "§4.1 SignedData, DSS, SHA-1", dsa=True),
    Signed(F + "4.2.bin", (ALICE_RSA,), "§4.2 SignedData, RSA PKCS#1 v1.5, SHA-1"),
    Signed(
        F + "4.3.bin",
        (ALICE_DSS,),
        "§4.3 detached DSS signature over ExContent",
        detached=True,
        dsa=True,
    ),
    Signed(
        F + "4.4.bin",
        (ALICE_DSS,),
        "§4.4 'fancier': signingTime, contentHint, "
        "countersignature (unsigned), extra certs and CRLs",
        dsa=True,
    ),
    Signed(F + "4.5.bin", (ALICE_RSA,), "§4.5 all-RSA, BER indefinite-length encoding"),
    Signed(
        F + "4.6.bin", (ALICE_DSS, DIANE_DSS), "§4.6 two DSS signers", dsa=True, skip=INHERITED_DSA
    ),
    Signed(F + "4.7.bin", (ALICE_DSS,), "§4.7 signer identified by subjectKeyIdentifier", dsa=True),
    Signed(
        F + "4.10.bin",
        (ALICE_DSS,),
        "§4.10 many signed attributes (security label, "
        "ML expansion history, equivalent labels, an unknown OID)",
        dsa=True,
    ),
]

ENVELOPED = [
    Enveloped(F + "5.1.bin", "3des", "§5.1 EnvelopedData, RSA key transport to Bob, 3DES-CBC"),
    Enveloped(F + "5.2.bin", "rc2", "§5.2 EnvelopedData, Bob's KTRI + a KEKRI, RC2-128-CBC"),
]

MESSAGES = [
    Message(
        F + "4.8.eml",
        "verify",
        "§4.8 multipart/signed, DSS + SHA-1 (micalg=SHA1); intact"
        " and trusted, but From is not the signer's address",
        dsa=True,
    ),
    Message(
        F + "4.9.eml",
        "verify",
        "§4.9 application/pkcs7-mime signed-data, DSS; intact and"
        " trusted, but From is not the signer's address",
        dsa=True,
    ),
    Message(
        F + "5.3.eml",
        "decrypt",
        "§5.3 application/pkcs7-mime enveloped-data, 3DES; the"
        " decrypted content has no MIME header block",
    ),
]

NOT_SIGNED = [
    NotSigned(F + "3.1.bin", "§3.1 ContentInfo id-data (BER): carries no signature"),
    NotSigned(F + "3.2.bin", "§3.2 ContentInfo id-data (DER): carries no signature"),
    NotSigned(
        F + "4.11.bin",
        "§4.11 certs-only SignedData: zero signers, CarlDSS + AliceDSS certificates (+2 CRLs)",
        certificates=2,
    ),
]

CERTS = [
    Cert(F + "CarlRSASelf.cer", "CarlRSA", "RSA root (1999-2039)"),
    Cert(F + "CarlDSSSelf.cer", "CarlDSS", "DSA root"),
    Cert(ALICE_RSA, "AliceRSA", "Alice RSA, signs 4.2/4.5"),
    Cert(ALICE_DSS, "AliceDSS", "Alice DSA with explicit parameters"),
    Cert(F + "BobRSASignByCarl.cer", "BobRSA", "Bob RSA, keyEncipherment: 5.x recipient"),
    Cert(F + "DianeRSASignByCarl.cer", "DianeRSA", "Diane RSA"),
    Cert(DIANE_DSS, "DianeDSS", "Diane DSA, parameters inherited", skip=INHERITED_DSA),
]

KEYS = [
    Key(F + "CarlPrivRSASign.pri", F + "CarlRSASelf.cer", "PKCS#8 DER RSA"),
    Key(F + "CarlPrivDSSSign.pri", F + "CarlDSSSelf.cer", "PKCS#8 DER DSA"),
    Key(F + "AlicePrivRSASign.pri", ALICE_RSA, "PKCS#8 DER RSA"),
    Key(F + "AlicePrivDSSSign.pri", ALICE_DSS, "PKCS#8 DER DSA"),
    Key(F + "BobPrivRSAEncrypt.pri", F + "BobRSASignByCarl.cer", "PKCS#8 DER RSA"),
    Key(F + "DianePrivRSASignEncrypt.pri", F + "DianeRSASignByCarl.cer", "PKCS#8 DER RSA"),
    Key(F + "DianePrivDSSSign.pri", DIANE_DSS, "PKCS#8 DER DSA", skip=INHERITED_DSA),
]

UNUSED = [
    Unused(F + "6.0.bin", "§6 DigestedData: smimekit has no DigestedData API (not S/MIME 4.0)"),
    Unused(F + "7.1.bin", "§7.1 EncryptedData: the symmetric key is not published in RFC 4134"),
    Unused(F + "7.2.bin", "§7.2 EncryptedData: the symmetric key is not published in RFC 4134"),
    *(
        Unused(F + crl, "CRL: revocation checking is not part of issue 2")
        for crl in (
            "CarlDSSCRLEmpty.crl",
            "CarlDSSCRLForAll.crl",
            "CarlDSSCRLForCarl.crl",
            "CarlRSACRLEmpty.crl",
            "CarlRSACRLForAll.crl",
            "CarlRSACRLForCarl.crl",
        )
    ),
]

#: Files that are inputs or documentation, not vectors.
NOT_VECTORS = {
    "README.md": "corpus README",
    "rfc4134.txt": "the RFC text",
    F + "ExContent.bin": "the expected plaintext of every example",
}

BOB = (F + "BobPrivRSAEncrypt.pri", F + "BobRSASignByCarl.cer")


def _bob() -> tuple[object, object]:
    return crypto_key(FOLDER, BOB[0]), crypto_cert(FOLDER, BOB[1])


def _skip_if_dsa_unsupported(dsa: bool, exc: UnsupportedError) -> None:
    if dsa and not isinstance(exc, LegacyAlgorithmError):
        pytest.skip(f"DSA signatures not supported: {exc}")


def test_example_content_is_the_published_sample() -> None:
    assert read_bytes(FOLDER, F + "ExContent.bin") == SAMPLE_CONTENT


@pytest.mark.parametrize("row", params(SIGNED))
def test_signed_example_verifies_with_allow_legacy(row: Signed) -> None:
    der = read_bytes(FOLDER, row.file)
    try:
        result = smimekit.cms.verify_signed_data(
            der,
            detached_content=SAMPLE_CONTENT if row.detached else None,
            allow_legacy=True,
        )
    except UnsupportedError as exc:
        _skip_if_dsa_unsupported(row.dsa, exc)
        raise
    assert result.content == SAMPLE_CONTENT
    assert [s.certificate for s in result.signers] == [
        crypto_cert(FOLDER, name) for name in row.signers
    ]
    assert all(s.digest_algorithm == "sha1" for s in result.signers)


@pytest.mark.parametrize("row", params(SIGNED))
def test_signed_example_is_refused_without_allow_legacy(row: Signed) -> None:
    # SHA-1 (and DSA) are legacy: refused by policy before anything is reported as signed.
    der = read_bytes(FOLDER, row.file)
    with pytest.raises(UnsupportedError if row.dsa else LegacyAlgorithmError):
        smimekit.cms.verify_signed_data(
            der, detached_content=SAMPLE_CONTENT if row.detached else None
        )


@pytest.mark.parametrize("row", params(ENVELOPED))
def test_enveloped_example_decrypts_with_allow_legacy(row: Enveloped) -> None:
    der = read_bytes(FOLDER, row.file)
    try:
        result = smimekit.cms.decrypt_enveloped(der, keys=[_bob()], allow_legacy=True)
    except UnsupportedError as exc:
        if row.cipher == "rc2" and not isinstance(exc, LegacyAlgorithmError):
            pytest.skip(f"RC2 not supported: {exc}")
        raise
    assert result.content == SAMPLE_CONTENT


@pytest.mark.parametrize("row", params(ENVELOPED))
def test_enveloped_example_is_refused_without_allow_legacy(row: Enveloped) -> None:
    with pytest.raises(LegacyAlgorithmError):
        smimekit.cms.decrypt_enveloped(read_bytes(FOLDER, row.file), keys=[_bob()])


@pytest.mark.parametrize("row", params([m for m in MESSAGES if m.op == "verify"]))
def test_example_signed_message_is_intact_and_trusted_with_allow_legacy(row: Message) -> None:
    msg = read_bytes(FOLDER, row.file)
    try:
        verified = smimekit.verify(
            msg,
            trust=[crypto_cert(FOLDER, F + "CarlDSSSelf.cer")],
            at=RFC4134_AT,
            allow_legacy=True,
            raise_for_failure=False,
        )
    except UnsupportedError as exc:
        _skip_if_dsa_unsupported(row.dsa, exc)
        raise
    assert SAMPLE_CONTENT in verified.content
    (signer,) = verified.verdict.signers
    assert signer.intact and signer.trusted and signer.key_usage_ok
    # RFC 4134 predates sender binding: From is aliceDss@examples.com (sic, "examples"),
    # the certificate says AliceDSS@example.com, so RFC 8550 section 3 makes it fail.
    assert signer.from_match is False
    assert not verified.verdict.valid


@pytest.mark.parametrize("row", params([m for m in MESSAGES if m.op == "decrypt"]))
def test_example_encrypted_message_decrypts_with_allow_legacy(row: Message) -> None:
    key, cert = _bob()
    result = smimekit.decrypt(read_bytes(FOLDER, row.file), key, cert, allow_legacy=True)
    assert SAMPLE_CONTENT in result.content


@pytest.mark.parametrize("row", params(MESSAGES))
def test_example_message_is_refused_without_allow_legacy(row: Message) -> None:
    msg = read_bytes(FOLDER, row.file)
    with pytest.raises(UnsupportedError if row.dsa else LegacyAlgorithmError):
        if row.op == "verify":
            smimekit.verify(msg, trust=[crypto_cert(FOLDER, F + "CarlDSSSelf.cer")], at=RFC4134_AT)
        else:
            key, cert = _bob()
            smimekit.decrypt(msg, key, cert)


@pytest.mark.parametrize("row", params(NOT_SIGNED))
def test_unsigned_content_info_is_never_reported_as_signed(row: NotSigned) -> None:
    der = read_bytes(FOLDER, row.file)
    with pytest.raises(NoSignatureError):
        smimekit.cms.verify_signed_data(der, allow_legacy=True)
    if row.certificates:
        certs = smimekit.load_certificates(der)
        assert {c.subject.rfc4514_string() for c in certs} == {"CN=CarlDSS", "CN=AliceDSS"}
        assert len(certs) == row.certificates


@pytest.mark.parametrize("row", params(CERTS))
def test_certificate_loads(row: Cert) -> None:
    (cert,) = smimekit.load_certificates(corpus_path(FOLDER, row.file))
    assert cert.subject.rfc4514_string() == f"CN={row.subject_cn}"


@pytest.mark.parametrize("row", params(KEYS))
def test_private_key_loads_and_matches_its_certificate(row: Key) -> None:
    key = smimekit.load_private_key(read_bytes(FOLDER, row.file))
    assert spki(key) == spki(crypto_cert(FOLDER, row.cert))


@pytest.mark.parametrize("row", params(UNUSED))
def test_not_runnable(row: Unused) -> None:
    raise AssertionError("always skipped")  # pragma: no cover


def test_every_file_in_folder_has_a_row() -> None:
    tables = [SIGNED, ENVELOPED, MESSAGES, NOT_SIGNED, CERTS, KEYS, UNUSED]
    covered = {row.file for table in tables for row in table}
    assert set(list_files(FOLDER)) == covered | set(NOT_VECTORS)
