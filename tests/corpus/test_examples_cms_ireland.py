"""draft-ireland-examples-cms (davidi67/examples-cms): modern CMS with the RFC 9216 keys.

Source: examples-cms-ireland/README.corpus.md. Every example's content is "This is some
sample content."; none is legacy, so all run with the default ``allow_legacy=False``.
``pem-encoded/X.pem`` is the armour (label ``CMS``) of ``binary-files/X.p7m``: both are rows.
"""

from __future__ import annotations

import dataclasses

import pytest

import smimekit
import smimekit.cms

from .vectors import (
    SAMPLE_CONTENT,
    crypto_cert,
    crypto_key,
    dearmor,
    list_files,
    params,
    read_bytes,
)

FOLDER = "examples-cms-ireland"
K = "certs-and-keys/"

ALICE = K + "lamps-alice.crt"
CARLOS = K + "lamps-carlos.crt"
BOB_KEY = (K + "lamps-bob.decrypt.p8.pem", K + "lamps-bob.encrypt.crt")
DANA_KEY = (K + "lamps-dana.decrypt.p8.pem", K + "lamps-dana.encrypt.crt")


@dataclasses.dataclass(frozen=True)
class Signed:
    file: str
    signers: tuple[tuple[str, str, str], ...]  # (cert, digest, word in the scheme name) per signer
    why: str
    detached: bool = False
    extra_certs: tuple[str, ...] = ()
    skip: str | None = None


@dataclasses.dataclass(frozen=True)
class Enveloped:
    file: str
    recipient: tuple[str, str]  # (private key file, certificate file)
    why: str
    skip: str | None = None


SIGNED_BASE = [
    Signed(
        "signedByAliceRSA",
        ((ALICE, "sha256", "pkcs1"),),
        "RSA PKCS#1 v1.5 + SHA-256, Alice's cert embedded",
    ),
    Signed(
        "signedByAliceRSAPSS",
        ((ALICE, "sha256", "pss"),),
        "RSASSA-PSS (SHA-256, MGF1-SHA-256, salt 32) + CMSAlgorithmProtection attribute",
    ),
    Signed(
        "signedByCarlosEd25519",
        ((CARLOS, "sha512", "ed25519"),),
        "Ed25519 with SHA-512 digest (RFC 8419), signed attributes",
    ),
    Signed(
        "signedByCarlosDetached",
        ((CARLOS, "sha512", "ed25519"),),
        "detached Ed25519, no signed attributes, signer by subjectKeyIdentifier",
        detached=True,
    ),
    Signed(
        "signedByAliceAndCarlosNoCerts",
        ((CARLOS, "sha512", "ed25519"), (ALICE, "sha256", "pkcs1")),
        "two signers, no certificates inside: supplied as extra_certs",
        extra_certs=(ALICE, CARLOS),
    ),
]

ENVELOPED_BASE = [
    Enveloped("encryptedForBobRSAOaep", BOB_KEY, "KTRI RSAES-OAEP, AES-128-CBC"),
    Enveloped(
        "encryptedForBobAndDana", BOB_KEY, "two recipients: Bob's KTRI (RSAES-OAEP) is used here"
    ),
    Enveloped(
        "authEnvelopedForBobChaCha20Poly1305",
        BOB_KEY,
        "AuthEnvelopedData, ChaCha20-Poly1305 (RFC 8103), KTRI RSAES-OAEP",
    ),
    Enveloped(
        "authEnvelopedForDanaX25519HKDF",
        DANA_KEY,
        "AuthEnvelopedData AES-128-GCM, KARI X25519 + HKDF-SHA256 (RFC 8418), AES-256 wrap",
    ),
    Enveloped(
        "encryptedKekri",
        ("", ""),
        "KEKRecipientInfo, key id 'keyid', AES-256 wrap",
        skip="KEKRI key not published (draft-ireland-examples-cms gives no KEK in the repo)",
    ),
]

#: The X25519 recipient of encryptedForBobAndDana: a row of its own (same file, other key).
DANA_OF_BOB_AND_DANA = Enveloped(
    "encryptedForBobAndDana",
    DANA_KEY,
    "two recipients: Dana's KARI (X25519, dhSinglePass-stdDH-sha256kdf = X9.63 KDF, AES-128 wrap)",
)


def _forms(rows: list, *, suffix: str = "") -> list:
    out = []
    for row in rows:
        for path in (f"binary-files/{row.file}.p7m", f"pem-encoded/{row.file}.pem"):
            out.append(dataclasses.replace(row, file=path + suffix))
    return out


SIGNED = _forms(SIGNED_BASE)
ENVELOPED = _forms(ENVELOPED_BASE)
ENVELOPED_DANA = _forms([DANA_OF_BOB_AND_DANA], suffix="#dana")

#: Files that are inputs or documentation, not vectors.
NOT_VECTORS = {
    "README.md": "upstream README",
    "README.corpus.md": "corpus README",
    **{f"asn1dumps/{r.file}.asn1.txt": "human-readable dump" for r in SIGNED_BASE},
    **{f"asn1dumps/{r.file}.asn1.txt": "human-readable dump" for r in ENVELOPED_BASE},
    **{
        K + name: "RFC 9216 key material (identical to rfc9216-smime-example-keys)"
        for name in (
            "lamps-alice.crt",
            "lamps-alice.p8.pem",
            "lamps-bob.decrypt.p8.pem",
            "lamps-bob.encrypt.crt",
            "lamps-carlos.crt",
            "lamps-carlos.p8.pem",
            "lamps-dana.decrypt.p8.pem",
            "lamps-dana.encrypt.crt",
        )
    },
}


def _der(row_file: str) -> bytes:
    path = row_file.split("#")[0]
    data = read_bytes(FOLDER, path)
    return dearmor(data) if path.endswith(".pem") else data


@pytest.mark.parametrize("row", params(SIGNED))
def test_signed_example_verifies(row: Signed) -> None:
    result = smimekit.cms.verify_signed_data(
        _der(row.file),
        detached_content=SAMPLE_CONTENT if row.detached else None,
        extra_certs=[crypto_cert(FOLDER, name) for name in row.extra_certs],
    )
    assert result.content == SAMPLE_CONTENT
    assert [(s.certificate, s.digest_algorithm) for s in result.signers] == [
        (crypto_cert(FOLDER, cert), digest) for cert, digest, _ in row.signers
    ]
    for signer, (_, _, scheme) in zip(result.signers, row.signers, strict=True):
        assert scheme in signer.signature_algorithm.lower()


def test_detached_example_without_its_content_is_not_valid() -> None:
    from smimekit.errors import SignatureInvalidError

    with pytest.raises(SignatureInvalidError):
        smimekit.cms.verify_signed_data(_der("binary-files/signedByCarlosDetached.p7m"))


def test_no_certs_example_without_certificates_is_not_valid() -> None:
    from smimekit.errors import SignatureInvalidError

    with pytest.raises(SignatureInvalidError):
        smimekit.cms.verify_signed_data(_der("binary-files/signedByAliceAndCarlosNoCerts.p7m"))


@pytest.mark.parametrize("row", params(ENVELOPED + ENVELOPED_DANA))
def test_enveloped_example_decrypts(row: Enveloped) -> None:
    key_file, cert_file = row.recipient
    keys = [(crypto_key(FOLDER, key_file), crypto_cert(FOLDER, cert_file))]
    result = smimekit.cms.decrypt_enveloped(_der(row.file), keys=keys)
    assert result.content == SAMPLE_CONTENT


@pytest.mark.parametrize("row", params(ENVELOPED_DANA))
def test_x25519_recipient_decrypts_with_key_only(row: Enveloped) -> None:
    # KARI names the recipient by issuer+serial; the key alone must still be tried.
    keys = [(crypto_key(FOLDER, row.recipient[0]), None)]
    assert smimekit.cms.decrypt_enveloped(_der(row.file), keys=keys).content == SAMPLE_CONTENT


def test_pem_forms_are_armoured_copies_of_the_binaries() -> None:
    for row in SIGNED_BASE + ENVELOPED_BASE:
        assert dearmor(read_bytes(FOLDER, f"pem-encoded/{row.file}.pem")) == read_bytes(
            FOLDER, f"binary-files/{row.file}.p7m"
        )


def test_every_file_in_folder_has_a_row() -> None:
    covered = {r.file for r in SIGNED + ENVELOPED}
    assert set(list_files(FOLDER)) == covered | set(NOT_VECTORS)
