"""Thunderbird's NSS-made S/MIME matrix (mozilla/releases-comm-central) through smimekit.

Source: thunderbird-comm-central/README.corpus.md and EXPECTED-test_smime_decrypt.json (the
``gMessages`` table of test_smime_decrypt.js plus its allow-SHA-1 twin). Every PKCS#12 has the
password "nss"; the trust anchor is TestCA.pem ("NSS Test CA (RSA)"). Verification time is
pinned to 2026-06-01 (EE certificates are valid 2026-01-26 .. 2031-01-26).

How Thunderbird's columns map onto smimekit (one row per file, ``tb`` keeps TB's values):

* ``sig_good`` true  -> ``decrypt_verify`` passes, the text is there, TB's signer is a signer;
* ``sig_good`` false -> the specific error smimekit must raise (``error``);
* ``sig`` false, ``enc`` true -> TB shows the decrypted text without judging a signature:
  ``decrypt`` must give the text;
* SHA-1 (and 3DES) rows are ``legacy``: refused with LegacyAlgorithmError by default, and give
  the allow-SHA-1 table's outcome with ``allow_legacy=True``.

Files not in Thunderbird's table (browser/openpgp test data, NSS intermediates) get an outcome
derived from their generator script or an OpenSSL 3.0 check; the row's ``why`` says which.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
from cryptography import x509

import smimekit
import smimekit.cms
from smimekit.errors import (
    LegacyAlgorithmError,
    NoRecipientError,
    NoSignatureError,
    SignatureInvalidError,
    SmimeError,
    UntrustedError,
    VerificationError,
)

from .vectors import (
    TB_AT,
    TB_TEXT_ALICE_BOB,
    TB_TEXT_FRAN,
    crypto_cert,
    crypto_p12,
    emails,
    list_files,
    params,
    read_bytes,
    spki,
)

FOLDER = "thunderbird-comm-central"
S = "mailnews/test/data/smime/"
M = "mailnews/test/data/smime-manual/"
INTEROP = "mailnews/test/data/smime-interop/"
B = "mail/test/browser/smime/data/"
PGP = "mail/test/browser/openpgp/data/eml/"

ALICE = "alice@example.com"
DAVE = "dave@example.com"
PASSWORD = b"nss"
KEYS = {"Bob": S + "Bob.p12", "Fran": INTEROP + "Fran.p12", "Fran-ec": INTEROP + "Fran-ec.p12"}

DIGESTS = ("SHA1", "SHA256", "SHA384", "SHA512")

IGNORED_OUTER = (
    "TB ignores a signature around the encryption layer (bug 1806161): it covers only ciphertext"
)
#: Where Thunderbird's expectation contradicts a rule smimekit documents on purpose.
POLICY_EVERY_SIGNER_IS_THE_SENDER = (
    "policy divergence: TB reports only Dave's outer signature as good; smimekit.verify requires"
    " every signer of every layer to match From (Dave), and Alice's inner one does not"
)
POLICY_NOTHING_BELOW_A_BAD_SIGNATURE = (
    "policy divergence: TB ignores the broken signature around the encryption (bug 1806161)"
    " and judges the inner one; smimekit releases nothing below a signature that fails"
)
NESTED_FROM = (
    "nested signatures, From: Dave: Alice's inner signature is intact (OpenSSL 3.0) but she is"
    " not the sender -> TB reports it bad"
)


@dataclasses.dataclass(frozen=True)
class Msg:
    file: str
    expect: str  # "valid" | "decrypts" | "error" | "partial" | "no-secret"
    why: str
    tb: tuple[bool, bool, bool] | None = None  # TB's (enc, sig, sig_good); None: not in its table
    error: type[SmimeError] | None = None
    signer: str | None = None
    text: bytes = TB_TEXT_ALICE_BOB
    key: str = "Bob"
    legacy: bool = False
    skip: str | None = None


def _digest_rows(d: str) -> list[Msg]:
    sha1 = d == "SHA1"
    good = not sha1  # TB's default table; the allow-SHA-1 table says good for all of these
    lg = {"legacy": sha1}
    return [
        Msg(
            S + f"alice.dsig.{d}.multipart.eml",
            "valid",
            f"clear-signed {d}",
            (False, True, good),
            signer=ALICE,
            **lg,
        ),
        Msg(
            S + f"alice.dsig.{d}.multipart.bad.eml",
            "error",
            "body altered after signing",
            (False, True, False),
            error=SignatureInvalidError,
            **lg,
        ),
        Msg(
            S + f"alice.dsig.{d}.multipart.mismatch-econtent.eml",
            "error",
            "multipart/signed whose CMS also embeds a different eContent (CVE-2018-18509)",
            (False, True, False),
            error=SignatureInvalidError,
            **lg,
        ),
        Msg(
            S + f"alice.dsig.{d}.multipart.env.eml",
            "valid",
            "clear-signed, then encrypted",
            (True, True, good),
            signer=ALICE,
            **lg,
        ),
        Msg(
            S + f"alice.sig.{d}.opaque.eml",
            "valid",
            f"opaque signed-data {d}",
            (False, True, good),
            signer=ALICE,
            **lg,
        ),
        Msg(
            S + f"alice.sig.{d}.opaque.env.eml",
            "valid",
            "opaque-signed, then encrypted",
            (True, True, good),
            signer=ALICE,
            **lg,
        ),
        Msg(S + f"alice.env.sig.{d}.opaque.eml", "decrypts", IGNORED_OUTER, (True, False, False)),
        Msg(
            S + f"alice.env.dsig.{d}.multipart.eml",
            "decrypts",
            IGNORED_OUTER + " (and this outer clear-signature does not verify)",
            (True, False, False),
        ),
        Msg(
            S + f"alice.env.sig.{d}.opaque.dave.sig.{d}.opaque.eml",
            "valid",
            "Dave opaque-signs Alice's opaque-signed encrypted message; TB reports Dave, good",
            (False, True, good),
            signer=DAVE,
            skip=POLICY_EVERY_SIGNER_IS_THE_SENDER,
            **lg,
        ),
        Msg(
            S + f"alice.env.dsig.{d}.multipart.dave.sig.{d}.opaque.eml",
            "error",
            "Dave's outer signature is good, Alice's inner clear-signature over the encrypted"
            " part does not verify (OpenSSL: digest failure)",
            (False, True, False),
            error=SignatureInvalidError,
            **lg,
        ),
        Msg(
            S + f"alice.plain.sig.{d}.opaque.dave.sig.{d}.opaque.eml",
            "valid",
            "Dave opaque-signs Alice's opaque-signed message; TB reports Dave, good",
            (False, True, good),
            signer=DAVE,
            skip=POLICY_EVERY_SIGNER_IS_THE_SENDER,
            **lg,
        ),
        Msg(
            S + f"alice.plain.dsig.{d}.multipart.dave.sig.{d}.opaque.eml",
            "error",
            NESTED_FROM,
            (False, True, False),
            error=UntrustedError,
            **lg,
        ),
        Msg(
            S + f"alice.plain.sig.{d}.opaque.dave.dsig.{d}.multipart.eml",
            "error",
            NESTED_FROM,
            (False, True, False),
            error=UntrustedError,
            **lg,
        ),
        Msg(
            S + f"alice.plain.dsig.{d}.multipart.dave.dsig.{d}.multipart.eml",
            "error",
            NESTED_FROM,
            (False, True, False),
            error=UntrustedError,
            **lg,
        ),
        Msg(
            S + f"alice.html.sig.{d}.opaque.eml",
            "valid",
            "text/html opaque-signed (local-gen.sh; not in TB's table)",
            signer=ALICE,
            **lg,
        ),
        Msg(
            S + f"alice.html.sig.{d}.opaque.env.eml",
            "valid",
            "text/html opaque-signed then encrypted (local-gen.sh)",
            signer=ALICE,
            **lg,
        ),
    ]


MESSAGES = [
    Msg(
        S + "alice.env.eml",
        "decrypts",
        "enveloped only, AES-128-CBC, RSA to Bob",
        (True, False, False),
    ),
    *(row for d in DIGESTS for row in _digest_rows(d)),
    Msg(
        S + "alice.future.dsig.SHA256.multipart.eml",
        "error",
        "Date header 6 h after the signingTime attribute: TB's signing-time/Date check fails"
        " (the signature itself verifies with OpenSSL)",
        (False, True, False),
        error=VerificationError,
    ),
    # smime-manual: hand-crafted nesting (readme.txt there)
    Msg(
        M + "alice.env.mixed.dsig.SHA256.multipart.eml",
        "error",
        "the encrypted block wrapped in multipart/mixed under the old outer signature: the"
        " signature no longer matches, and the encryption must not be used as a bypass",
        (False, True, False),
        error=SignatureInvalidError,
    ),
    Msg(
        M + "alice.dsig.SHA256.multipart.env.dsig.eml",
        "valid",
        IGNORED_OUTER + "; inside, Alice's clear-signature is good",
        (True, True, True),
        signer=ALICE,
        skip=POLICY_NOTHING_BELOW_A_BAD_SIGNATURE,
    ),
    Msg(
        M + "outer-smime-bad-sig-inner-smime-enc-sig.eml",
        "valid",
        IGNORED_OUTER + " (a mismatching one); inside, Alice's clear-signature is good",
        (True, True, True),
        signer=ALICE,
        skip=POLICY_NOTHING_BELOW_A_BAD_SIGNATURE,
    ),
    Msg(
        M + "outer-smime-bad-sig-inner-smime-enc.eml",
        "decrypts",
        IGNORED_OUTER + " (a mismatching one); inside, plain text",
        (True, False, False),
    ),
    Msg(
        M + "outer-pgp-sig-inner-smime-enc.eml",
        "error",
        "PGP-signed S/MIME encryption to the 2019 Bob (NSS Test CA serial 40): no key here",
        error=NoRecipientError,
    ),
    Msg(
        M + "outer-pgp-sig-inner-smime-enc-sig.eml",
        "error",
        "PGP-signed S/MIME encryption to the 2019 Bob (NSS Test CA serial 40): no key here",
        error=NoRecipientError,
    ),
    # smime-interop: OpenSSL-made messages to Fran
    Msg(
        INTEROP + "fran-oaep_ossl.env",
        "decrypts",
        "RSAES-OAEP (SHA-1 defaults), 3DES-CBC",
        (True, False, False),
        text=TB_TEXT_FRAN,
        key="Fran",
        legacy=True,
    ),
    Msg(
        INTEROP + "fran-oaep-label_ossl.env",
        "decrypts",
        "RSAES-OAEP with a label, AES-256-CBC",
        (True, False, False),
        text=TB_TEXT_FRAN,
        key="Fran",
    ),
    Msg(
        INTEROP + "fran-oaep-sha256hash_ossl.env",
        "decrypts",
        "RSAES-OAEP SHA-256 hash, MGF1-SHA-1, AES-128-CBC",
        (True, False, False),
        text=TB_TEXT_FRAN,
        key="Fran",
    ),
    Msg(
        INTEROP + "fran-oaep-sha256hash-sha256mgf_ossl.env",
        "decrypts",
        "RSAES-OAEP SHA-256 hash and MGF1-SHA-256, AES-256-CBC",
        (True, False, False),
        text=TB_TEXT_FRAN,
        key="Fran",
    ),
    Msg(
        INTEROP + "fran-ec_ossl-aes128-sha256.env",
        "decrypts",
        "ECDH P-384 kari, dhSinglePass-stdDH-sha256kdf (X9.63), AES-128 wrap + CBC",
        (True, False, False),
        text=TB_TEXT_FRAN,
        key="Fran-ec",
    ),
    Msg(
        INTEROP + "fran-ec_ossl-aes256-sha512.env",
        "decrypts",
        "ECDH P-384 kari, dhSinglePass-stdDH-sha512kdf (X9.63), AES-256 wrap + CBC",
        (True, False, False),
        text=TB_TEXT_FRAN,
        key="Fran-ec",
    ),
    # mail/test/browser/smime/data: mozmill data (browser_smime_*.js), not in gMessages
    Msg(B + "alice.env.eml", "decrypts", "copy of mailnews alice.env.eml"),
    Msg(
        B + "alice.dsig.SHA256.multipart.env.eml",
        "valid",
        "copy of the mailnews file; browser test: decrypted body is shown",
        signer=ALICE,
    ),
    Msg(B + "alice.sig.SHA256.opaque.eml", "valid", "copy of the mailnews file", signer=ALICE),
    Msg(B + "alice.sig.SHA256.opaque.env.eml", "valid", "copy of the mailnews file", signer=ALICE),
    Msg(
        B + "alice.html.sig.SHA256.opaque.env.eml",
        "valid",
        "copy of the mailnews file",
        signer=ALICE,
    ),
    Msg(
        B + "alice.html.sig.SHA256.opaque.eml",
        "error",
        "from another NSS run (cert 09:16): intact, but its 'NSS Test CA (RSA)' issuer is not"
        " the TestCA.pem key (OpenSSL: chain signature invalid)",
        error=UntrustedError,
    ),
    Msg(
        B + "alice.dsig.SHA256.multipart.in.mixed.eml",
        "partial",
        "mailing-list footer appended after the signed part: both must be shown, but only a"
        " part is signed",
    ),
    Msg(
        B + "alice.dsig.SHA256.multipart.in.mixed.with.header.eml",
        "partial",
        "mailing-list header part before the signed part, footer after",
    ),
    Msg(
        B + "multipart-alternative.eml",
        "no-secret",
        "multipart/alternative of two encrypted parts (bait + someone else's secret):"
        " the second part's SECRET-TEXT must never be released",
    ),
    Msg(
        B + "nested-sigs.eml",
        "error",
        "real-world nested signatures (CAcert); the outer one does not verify (OpenSSL:"
        " digest failure)",
        error=SignatureInvalidError,
    ),
    # mail/test/browser/openpgp/data/eml: S/MIME mixed with OpenPGP
    Msg(
        PGP + "inner-smime-sig-in-pgp-encrypted.eml",
        "error",
        "PGP/MIME encrypted: no S/MIME signature is visible",
        error=NoSignatureError,
    ),
    Msg(
        PGP + "outer-smime-bad-sig-inner-pgp-enc.eml",
        "error",
        "outer S/MIME signature does not match its PGP-encrypted content",
        error=SignatureInvalidError,
    ),
    Msg(
        PGP + "outer-smime-bad-sig-inner-pgp-enc-sig.eml",
        "error",
        "outer S/MIME signature does not match its PGP-encrypted content",
        error=SignatureInvalidError,
    ),
    Msg(
        PGP + "outer-smime-bad-sig-inner-pgp-enc-sig-with-mixed.eml",
        "error",
        "outer S/MIME signature does not match (multipart/mixed around PGP)",
        error=SignatureInvalidError,
    ),
]


@dataclasses.dataclass(frozen=True)
class Stale:
    """An NSS intermediate (no ``.eml``) left from the 2019 certificate generation."""

    file: str
    expect: str  # "cms-verify" | "cms-detached" | "cms-no-recipient" | "untrusted" | "error"
    why: str
    content: str | None = None  # file whose bytes are the signed content
    error: type[SmimeError] | None = None
    legacy: bool = False
    skip: str | None = None


STALE_WHY = "2019 NSS intermediate, signed by an Alice cert of 'NSS Test CA' (not in corpus)"

STALE = [
    *(
        row
        for d in DIGESTS
        for row in (
            Stale(
                S + f"alice.textplain.sig.{d}",
                "cms-verify",
                STALE_WHY + ": opaque DER",
                content=S + "alice.textplain",
                legacy=d == "SHA1",
            ),
            Stale(
                S + f"alice.mime.dsig.{d}",
                "cms-detached",
                STALE_WHY + ": detached DER",
                content=S + "alice.mime",
                legacy=d == "SHA1",
            ),
            Stale(
                S + f"alice.dsig.{d}.multipart",
                "untrusted",
                STALE_WHY + ": intact, untrusted",
                legacy=d == "SHA1",
            ),
            Stale(
                S + f"alice.sig.{d}.opaque",
                "untrusted",
                STALE_WHY + ": intact, untrusted",
                legacy=d == "SHA1",
            ),
            Stale(
                S + f"alice.dsig.{d}.multipart.mismatch-econtent",
                "error",
                STALE_WHY + ": eContent differs from the MIME body",
                error=SignatureInvalidError,
                legacy=d == "SHA1",
            ),
            Stale(
                S + f"alice.dsig.{d}.multipart.env",
                "cms-no-recipient",
                "2019 DER EnvelopedData to Bob serial 40 of 'NSS Test CA': today's Bob is no"
                " recipient",
            ),
            Stale(
                S + f"alice.sig.{d}.opaque.env",
                "cms-no-recipient",
                "2019 DER EnvelopedData to the old Bob: no recipient",
            ),
        )
    ),
    Stale(
        S + "alice.mime.env",
        "cms-no-recipient",
        "2019 DER EnvelopedData to the old Bob: no recipient",
    ),
]


@dataclasses.dataclass(frozen=True)
class P12Row:
    file: str
    email: str
    ca_cn: str | None  # CA certificate bundled with the key, if any
    why: str
    skip: str | None = None


RSA_CA = "NSS Test CA (RSA)"
P12S = [
    P12Row(S + "Alice.p12", "alice@example.com", RSA_CA, "RSA-2048"),
    P12Row(S + "Bob.p12", "bob@example.com", RSA_CA, "RSA-2048"),
    P12Row(S + "Dave.p12", "dave@example.com", RSA_CA, "RSA-2048"),
    P12Row(S + "Eve.p12", "eve@example.com", RSA_CA, "RSA-2048 (unused by the tables)"),
    P12Row(S + "Alice-ec.p12", "alice-ec@example.com", "NSS Test CA (ECC)", "ECDSA P-384"),
    P12Row(S + "Fran.p12", "fran@example.com", None, "RSA, BER-encoded PKCS#12, no CA"),
    P12Row(S + "Fran-ec.p12", "fran-ec@example.com", None, "EC P-384, no CA"),
    P12Row(INTEROP + "Fran.p12", "fran@example.com", None, "same bytes as smime/Fran.p12"),
    P12Row(INTEROP + "Fran-ec.p12", "fran-ec@example.com", None, "same as smime/Fran-ec.p12"),
    P12Row(B + "Alice.p12", "alice@example.com", RSA_CA, "same bytes as smime/Alice.p12"),
    P12Row(B + "Bob.p12", "bob@example.com", RSA_CA, "same bytes as smime/Bob.p12"),
]

CA_FILES = [S + "TestCA.pem", B + "TestCA.pem"]

#: Files that are inputs or documentation, not vectors.
NOT_VECTORS = {
    "README.corpus.md": "corpus README",
    "LICENSE-MPL-2.0": "licence",
    "EXPECTED-test_smime_decrypt.json": "Thunderbird's expectation table (checked below)",
    S + "README.md": "upstream README",
    S + "expiration.txt": "certificate expiry date",
    S + "alice.textplain": "signed content of alice.textplain.sig.*",
    S + "alice.mime": "signed content of alice.mime.dsig.*",
    M + "readme.txt": "how the manual files were made",
    B + "README.md": "upstream README",
}


def _key(name: str) -> tuple[object, object]:
    bundle = crypto_p12(FOLDER, KEYS[name], password=PASSWORD)
    return bundle.key, bundle.cert


def _anchor() -> list[object]:
    return [crypto_cert(FOLDER, S + "TestCA.pem")]


def _open(row: Msg, *, allow_legacy: bool) -> smimekit.Verified:
    key, cert = _key(row.key)
    return smimekit.decrypt_verify(
        read_bytes(FOLDER, row.file),
        key,
        cert,
        trust=_anchor(),
        at=TB_AT,
        allow_legacy=allow_legacy,
    )


def _emails(cert: x509.Certificate) -> set[str]:
    return emails(cert)


def _signer_emails(verified: smimekit.Verified) -> list[str]:
    return [e.lower() for s in verified.verdict.signers for e in s.email]


@pytest.mark.parametrize("row", params([r for r in MESSAGES if r.expect == "valid"]))
def test_good_signature_verifies(row: Msg) -> None:
    verified = _open(row, allow_legacy=row.legacy)
    assert row.text in verified.content
    assert verified.verdict.valid
    assert row.signer in _signer_emails(verified)
    if row.signer == DAVE:  # TB reports the outermost signer
        assert verified.verdict.signers[0].email[0].lower() == DAVE


@pytest.mark.parametrize("row", params([r for r in MESSAGES if r.expect == "error"]))
def test_bad_message_raises_the_specific_error(row: Msg) -> None:
    assert row.error is not None
    with pytest.raises(row.error):
        _open(row, allow_legacy=row.legacy)


@pytest.mark.parametrize("row", params([r for r in MESSAGES if r.expect == "decrypts"]))
def test_encrypted_message_decrypts_to_the_text(row: Msg) -> None:
    key, cert = _key(row.key)
    result = smimekit.decrypt(read_bytes(FOLDER, row.file), key, cert, allow_legacy=row.legacy)
    assert row.text in result.content


@pytest.mark.parametrize("row", params([r for r in MESSAGES if r.legacy]))
def test_legacy_message_is_refused_by_default(row: Msg) -> None:
    # A message that is bad anyway may be refused for that reason first.
    refusals = (LegacyAlgorithmError, row.error) if row.error else LegacyAlgorithmError
    with pytest.raises(refusals):
        if row.expect == "decrypts":
            key, cert = _key(row.key)
            smimekit.decrypt(read_bytes(FOLDER, row.file), key, cert)
        else:
            _open(row, allow_legacy=False)


@pytest.mark.parametrize("row", params([r for r in MESSAGES if r.expect == "partial"]))
def test_signed_part_inside_unsigned_multipart_is_shown_but_not_valid(row: Msg) -> None:
    verified = smimekit.verify(
        read_bytes(FOLDER, row.file), trust=_anchor(), at=TB_AT, raise_for_failure=False
    )
    assert row.text in verified.content
    assert b"test-list mailing list" in verified.content
    assert verified.verdict.partially_signed
    assert not verified.verdict.valid
    with pytest.raises(VerificationError):
        verified.verdict.raise_for_failure()


@pytest.mark.parametrize("row", params([r for r in MESSAGES if r.expect == "no-secret"]))
def test_second_encrypted_alternative_is_never_released(row: Msg) -> None:
    key, cert = _key(row.key)
    try:
        result = smimekit.decrypt(read_bytes(FOLDER, row.file), key, cert)
    except SmimeError:
        return  # refusing the whole message is fine too
    assert b"SECRET-TEXT" not in result.content


@pytest.mark.parametrize("row", params(STALE))
def test_stale_nss_intermediate(row: Stale) -> None:
    data = read_bytes(FOLDER, row.file)
    if row.expect == "cms-verify":
        result = smimekit.cms.verify_signed_data(data, allow_legacy=row.legacy)
        assert row.content is not None
        assert result.content == read_bytes(FOLDER, row.content)
        assert ALICE in {e.lower() for e in _emails(result.signers[0].certificate)}
    elif row.expect == "cms-detached":
        assert row.content is not None
        result = smimekit.cms.verify_signed_data(
            data, detached_content=read_bytes(FOLDER, row.content), allow_legacy=row.legacy
        )
        assert len(result.signers) == 1
    elif row.expect == "cms-no-recipient":
        with pytest.raises(NoRecipientError):
            smimekit.cms.decrypt_enveloped(data, keys=[_key("Bob")])
    elif row.expect == "untrusted":
        with pytest.raises(UntrustedError):
            smimekit.verify(data, trust=_anchor(), at=TB_AT, allow_legacy=row.legacy)
    else:
        assert row.error is not None
        with pytest.raises(row.error):
            smimekit.verify(data, trust=_anchor(), at=TB_AT, allow_legacy=row.legacy)


@pytest.mark.parametrize("row", params([r for r in STALE if r.legacy]))
def test_stale_sha1_intermediate_is_refused_by_default(row: Stale) -> None:
    data = read_bytes(FOLDER, row.file)
    refusals = (LegacyAlgorithmError, row.error) if row.error else LegacyAlgorithmError
    with pytest.raises(refusals):
        if row.expect == "cms-verify":
            smimekit.cms.verify_signed_data(data)
        elif row.expect == "cms-detached":
            assert row.content is not None
            smimekit.cms.verify_signed_data(data, detached_content=read_bytes(FOLDER, row.content))
        else:
            smimekit.verify(data, trust=_anchor(), at=TB_AT)


@pytest.mark.parametrize("row", params(P12S))
def test_pkcs12_loads_with_password_nss(row: P12Row) -> None:
    key, cert, extra = smimekit.load_pkcs12(read_bytes(FOLDER, row.file), "nss")
    assert spki(key) == spki(cert)
    assert row.email in _emails(cert)
    assert [c.subject.rfc4514_string().split(",")[0] for c in extra] == (
        [f"CN={row.ca_cn}"] if row.ca_cn else []
    )


@pytest.mark.parametrize("path", CA_FILES)
def test_trust_anchor_loads(path: str) -> None:
    (ca,) = smimekit.load_certificates(read_bytes(FOLDER, path))
    assert ca.subject.rfc4514_string().startswith(f"CN={RSA_CA},")


def test_rows_agree_with_thunderbirds_expectation_file() -> None:
    expected = json.loads(read_bytes(FOLDER, "EXPECTED-test_smime_decrypt.json"))
    ours = {row.file: row for row in MESSAGES if row.tb is not None}
    theirs = {}
    for entry in expected["messages"]:
        path = entry["filename"].replace("../", "mailnews/test/data/")
        if "/" not in path:
            path = S + path
        theirs[path] = (entry["enc"], entry.get("sig", False), entry.get("sig_good", False))
    assert {path: row.tb for path, row in ours.items()} == theirs
    sha1_ok = {S + e["filename"]: e["sig_good"] for e in expected["allow_sha1_variant"]["messages"]}
    for path, good in sha1_ok.items():
        row = ours[path]
        if row.legacy:  # with allow_legacy, smimekit must reach TB's allow-SHA-1 verdict
            assert (row.expect == "valid") == good, path


def test_every_file_in_folder_has_a_row() -> None:
    covered = {r.file for r in MESSAGES} | {r.file for r in STALE} | {r.file for r in P12S}
    assert set(list_files(FOLDER)) == covered | set(CA_FILES) | set(NOT_VECTORS)
