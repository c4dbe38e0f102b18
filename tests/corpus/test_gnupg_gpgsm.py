"""GnuPG's gpgsm test data (gpg/gnupg tests/cms) through smimekit.

Source: gnupg-gpgsm-tests/README.corpus.md, samplekeys/README, samplekeys/Description-p12,
samplemsgs/README. The 2001/2002 "test cert 1" PKI predates today's rules: its DN has a
TeletexString "Düsseldorf" (byte 0xFC) that pyca/cryptography refuses to parse, so the key is
used without its certificate (``(key, None)``) and the messages that embed it are skipped.
"""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
from cryptography.hazmat.primitives import hashes

import smimekit
import smimekit.cms
from smimekit.errors import KeyLoadError, NoSignatureError, PassphraseError

from .vectors import crypto_key, dearmor, list_files, params, read_bytes, spki

FOLDER = "gnupg-gpgsm-tests"
C = "tests/cms/"
K = C + "samplekeys/"

TELETEX_DN = (
    "'test cert 1' (g10 Code, 2001) has L=D\\xFCsseldorf as TeletexString in its DN:"
    " pyca/cryptography cannot parse the certificate, so the SignedData cannot be read"
)
TEST1_KEY = (C + "skey_g10code_test1.pem", b"test")


@dataclasses.dataclass(frozen=True)
class Enveloped:
    file: str
    size: int
    sha256: str
    why: str
    skip: str | None = None


# The plaintexts are GnuPG's tests/openpgp/plain-N (not in the corpus); length and SHA-256 are
# those of OpenSSL 3.0's decryption with the same key.
ENVELOPED = [
    Enveloped(
        C + "plain-1.cms.asc",
        1108,
        "ed46e2883b3bad304223e1dea41a948902984e5cecff7659b26876923dd29b08",
        "BER EnvelopedData, RSA v1.5 KTRI to test cert 1, AES-128-CBC",
    ),
    Enveloped(
        C + "plain-2.cms.asc",
        1557,
        "6d0d159ae4d7f8990906e819f8a6c8d1935ae8c4d5bb539f4456347a303574ba",
        "as plain-1, other text",
    ),
    Enveloped(
        C + "plain-3.cms.asc",
        45,
        "04db4af92071878f7325318657989827a84c53da11c0a8f094db95fab702d80d",
        "'Dies ist eine einfache Zeile ohne LF am Ende.'",
    ),
    Enveloped(
        C + "plain-large.cms.asc",
        201533,
        "51341b30887a84f0ce5cc3c6d203ef0d36e92cf195f723e23f23eec7078695f0",
        "200 KB (GnuPG's doc/HACKING), chunked BER",
    ),
]


@dataclasses.dataclass(frozen=True)
class Signed:
    file: str
    why: str
    skip: str | None = None


SIGNED = [
    Signed(C + "text-1.osig.pem", "opaque, SHA-1: gpgsm GOODSIG", skip=TELETEX_DN),
    Signed(C + "text-1.dsig.pem", "detached over text-1.txt: gpgsm GOODSIG", skip=TELETEX_DN),
    Signed(C + "text-1.osig-bad.pem", "text tampered: gpgsm BADSIG", skip=TELETEX_DN),
    Signed(
        C + "text-1.osig-badusage.pem",
        "made with a keyEncipherment-only key: gpgsm refuses",
        skip=TELETEX_DN,
    ),
    Signed(C + "text-2.osig.pem", "opaque, SHA-1: gpgsm GOODSIG", skip=TELETEX_DN),
    Signed(C + "text-2.osig-bad.pem", "signing time tampered: gpgsm BADSIG", skip=TELETEX_DN),
]

WEBDE = C + "samplemsgs/webde-buenemann-signed.cms"


@dataclasses.dataclass(frozen=True)
class P12Row:
    file: str
    passphrase: str
    sha1: str  # SHA-1 fingerprint of the key's certificate (Description-p12 "Cert:")
    extra: tuple[str, ...]
    why: str
    skip: str | None = None


P12S = [
    P12Row(
        K + "ov-user.p12",
        "start",
        "4753a910e0c8b4caa8663ca0e4273a884eb5397d",
        (),
        "openvalidation.org test key",
    ),
    P12Row(
        K + "ov-server.p12",
        "start",
        "1997fadf6cc1af03e4845c4cba38fb2397315143",
        (),
        "openvalidation.org test key",
    ),
    P12Row(
        K + "opensc-test.p12",
        "password",
        "115abfc3ae554092a57ade74177fedf9459af5d2",
        ("a0d6d318952c313ff8c33cd3f629647ff1de76b3",),
        "OpenSC: RC2 + 3DES PBEs, PKCS#8",
    ),
    P12Row(
        K + "t5793-openssl.pfx",
        "test",
        "80348a438e4b803b99e708da0b7fdd0659dedd15",
        (),
        "self-signed, OpenSSL-made",
    ),
    P12Row(
        K + "t5793-test.pfx",
        "test",
        "80348a438e4b803b99e708da0b7fdd0659dedd15",
        (),
        "QuoVadis format of t5793-openssl",
        skip="pyca/cryptography cannot read this QuoVadis-made PKCS#12 ('Invalid password or"
        " PKCS12 data' with the right password 'test')",
    ),
    P12Row(
        K + "edward.tester@demo.gnupg.com.p12",
        "abc",
        "ff810b9281a43c394aa138e9c7fd4c0193216fa6",
        (),
        "Brainpool, exported by GnuPG",
        skip="two passwords ('abc' for the file, '123456' for the key): load_pkcs12 takes one",
    ),
    P12Row(
        K + "nistp256-openssl-self-signed.p12",
        "abc",
        "5cea0c5bf09ccd92535267c662fc098f6c81c27e",
        (),
        "EC P-256, self-signed",
    ),
    P12Row(
        K + "t6752-ov-user-ff.p12",
        "start",
        "4753a910e0c8b4caa8663ca0e4273a884eb5397d",
        (),
        "Mozilla-made, with a surplus OCTET STRING container",
    ),
    P12Row(
        K + "credential_private_encrypted_AES256.p12",
        "qeFGds84/Sf0eKkJwcp6",
        "20f65740b4a15bac6d6a299026756088f7604937",
        ("cbb4b26f93cfd9715ac9fa43440470df9395571b",),
        "PBES2 AES-256 (T6940)",
    ),
    P12Row(
        K + "credential_private_encrypted_3DES.p12",
        "qeFGds84/Sf0eKkJwcp6",
        "20f65740b4a15bac6d6a299026756088f7604937",
        ("cbb4b26f93cfd9715ac9fa43440470df9395571b",),
        "3DES PBE (T6940)",
    ),
    P12Row(
        K + "cryptlib-key.p12",
        "",
        "",
        (),
        "cryptlib-made",
        skip="no password given in Description-p12",
    ),
]


@dataclasses.dataclass(frozen=True)
class CertRow:
    file: str
    subject_cn: str | None  # None: cannot be parsed (see error / skip)
    why: str
    error: type[Exception] | None = None
    skip: str | None = None


CERTS = [
    CertRow(C + "cert_cci_sphinx_ca.pem", "SPHINX-CA", "CCI CA"),
    CertRow(
        C + "cert_cci_test_wzs.pem",
        None,
        "not a certificate: PEM armour around base64 of"
        " base64 of an empty PEM block (a malformed-input case)",
        error=KeyLoadError,
    ),
    CertRow(C + "cert_cci_test_zs.pem", "SPHINX-Test-ZS", "CCI test cert"),
    CertRow(C + "cert_cci_user02.pem", "Sphinx User02", "CCI user"),
    CertRow(C + "cert_cci_user03.pem", "Sphinx User03", "CCI user"),
    CertRow(C + "cert_cci_user04.pem", "Sphinx User04", "CCI user"),
    CertRow(C + "cert_cci_user06.pem", "Sphinx User06", "CCI user"),
    CertRow(C + "cert_cci_user07.pem", "Sphinx07", "CCI user"),
    CertRow(C + "cert_dfn_pca01.der", "DFN Top Level Certification Authority", "DFN PCA"),
    CertRow(C + "cert_dfn_pca15.der", "DFN Server Certification Authority", "DFN PCA"),
    CertRow(C + "cert_testpki_testpca.pem", "TEST_PCA", "TEST_PKI root"),
    CertRow(C + "cert_g10code_test1.der", None, "test cert 1", skip=TELETEX_DN),
    CertRow(K + "cert_g10code_test1.pem", None, "test cert 1 (PEM)", skip=TELETEX_DN),
    CertRow(K + "cert_g10code_pete1.pem", None, "pete1", skip=TELETEX_DN),
    CertRow(K + "cert_g10code_theo1.pem", None, "theo1", skip=TELETEX_DN),
    CertRow(K + "cert_g10code_test_ca.pem", None, "g10 test CA", skip=TELETEX_DN),
    CertRow(K + "cert_g10code_enconly_1.pem", "Encrypt Only Key 1", "encryption-only key"),
    CertRow(K + "cert-with-117-akas.pem", "edgecastcdn.net", "117 subjectAltNames"),
    CertRow(K + "ossl-rentec-user.pem", "Karsten Künne", "DC RDNs, UTF-8 CN"),
    CertRow(
        K + "steed-self-signing-nonthority.pem",
        "The STEED Self-Signing Nonthority",
        "STEED self-signed",
    ),
    CertRow(K + "gte.pem", "GTE CyberTrust Global Root", "old root"),
    CertRow(K + "webdeca.der", "WEB.DE TrustCenter Voll-Zertifikate", "WEB.DE CA (2004)"),
    CertRow(K + "webderoot.der", "WEB.DE TrustCenter", "WEB.DE root (2004)"),
]


@dataclasses.dataclass(frozen=True)
class KeyRow:
    file: str
    passphrase: str | None
    why: str
    error: type[Exception] | None = None
    skip: str | None = None


KEYS = [
    KeyRow(C + "skey_g10code_test1.pem", "test", "traditional PEM, DES-EDE3-CBC, pw 'test'"),
    KeyRow(C + "key_g10code_pete1.pem", "test", "traditional PEM, DES-EDE3-CBC, pw 'test'"),
    KeyRow(C + "key_g10code_theo1.pem", "test", "comment line before the PEM, pw 'test'"),
    *(
        KeyRow(path, None, "gpg-agent S-expression key file: not PKCS#8/PEM", error=KeyLoadError)
        for path in (
            C + "32100C27173EF6E9C4E9A25D3D69F86D37A4F939",
            C + "567064FE6D14A17B2D811ABB407728BC558AA455",
            K + "32100C27173EF6E9C4E9A25D3D69F86D37A4F939.key",
            K + "68A638998DFABAC510EA645CE34F9686B2EDF7EA.key",
            K + "8D6D17B4B94BBE8304926C016D2C5C7805EB6705.key",
        )
    ),
]


@dataclasses.dataclass(frozen=True)
class Unused:
    file: str
    skip: str


UNUSED = [
    Unused(
        C + "samplemsgs/pwri-sample.cbc.p7m",
        "PasswordRecipientInfo (PWRI, password 'abc') is not supported: no password API",
    ),
    Unused(
        C + "samplemsgs/pwri-sample.cbc-2.p7m",
        "PasswordRecipientInfo (PWRI, password 'abc') is not supported: no password API",
    ),
    Unused(
        C + "samplemsgs/pwri-sample.gcm.p7m",
        "PasswordRecipientInfo (PWRI, password 'abc') is not supported: no password API",
    ),
    Unused(C + "crl_testpki_testpca.pem", "CRL: revocation checking is not part of issue 2"),
]

#: Files that are inputs or documentation, not vectors.
NOT_VECTORS = {
    "README.corpus.md": "corpus README",
    "LICENSE-GPL-3": "licence",
    C + "text-1.txt": "content of text-1.*",
    C + "text-2.txt": "content of text-2.*",
    C + "text-3.txt": "input of gpgsm's sign tests (no signature of it in the corpus)",
    K + "README": "samplekeys README",
    K + "Description-p12": "PKCS#12 passwords and fingerprints",
    C + "samplemsgs/README": "PWRI README",
}


@pytest.mark.parametrize("row", params(ENVELOPED))
def test_enveloped_sample_decrypts_with_test_key_1(row: Enveloped) -> None:
    key = crypto_key(FOLDER, TEST1_KEY[0], password=TEST1_KEY[1])
    der = dearmor(read_bytes(FOLDER, row.file))
    assert der[:2] == b"\x30\x80"  # indefinite-length BER, as gpgsm writes it
    result = smimekit.cms.decrypt_enveloped(der, keys=[(key, None)])
    assert len(result.content) == row.size
    assert hashlib.sha256(result.content).hexdigest() == row.sha256


@pytest.mark.parametrize("row", params(SIGNED))
def test_signed_sample(row: Signed) -> None:
    raise AssertionError("always skipped")  # pragma: no cover


def test_webde_signature_with_mistyped_content_type_is_not_a_signature() -> None:
    # The ContentInfo says 1.2.840.113546.1.7.2 (a typo of id-signedData ...113549.1.7.2);
    # OpenSSL 3.0: "unsupported content type". No signature may be reported from it.
    with pytest.raises(NoSignatureError):
        smimekit.cms.verify_signed_data(read_bytes(FOLDER, WEBDE), allow_legacy=True)


@pytest.mark.parametrize("row", params(P12S))
def test_pkcs12_sample_loads_with_its_password(row: P12Row) -> None:
    key, cert, extra = smimekit.load_pkcs12(read_bytes(FOLDER, row.file), row.passphrase)
    assert spki(key) == spki(cert)
    assert cert.fingerprint(hashes.SHA1()).hex() == row.sha1
    assert [c.fingerprint(hashes.SHA1()).hex() for c in extra] == list(row.extra)


@pytest.mark.parametrize("row", params([r for r in P12S if r.passphrase]))
def test_pkcs12_sample_with_wrong_password_is_refused(row: P12Row) -> None:
    with pytest.raises(PassphraseError):
        smimekit.load_pkcs12(read_bytes(FOLDER, row.file), row.passphrase + "x")


@pytest.mark.parametrize("row", params(CERTS))
def test_certificate_sample_loads(row: CertRow) -> None:
    if row.error is not None:
        with pytest.raises(row.error):
            smimekit.load_certificates(read_bytes(FOLDER, row.file))
        return
    certs = smimekit.load_certificates(read_bytes(FOLDER, row.file))
    assert len(certs) == 1
    assert f"CN={row.subject_cn}" in certs[0].subject.rfc4514_string()


@pytest.mark.parametrize("row", params(KEYS))
def test_private_key_sample(row: KeyRow) -> None:
    data = read_bytes(FOLDER, row.file)
    if row.error is not None:
        with pytest.raises(row.error):
            smimekit.load_private_key(data, row.passphrase)
        return
    key = smimekit.load_private_key(data, row.passphrase)
    assert spki(key) == spki(crypto_key(FOLDER, row.file, password=b"test"))
    with pytest.raises(PassphraseError):
        smimekit.load_private_key(data, "wrong")


def test_encrypted_pem_key_without_passphrase_is_refused() -> None:
    with pytest.raises(PassphraseError):
        smimekit.load_private_key(read_bytes(FOLDER, TEST1_KEY[0]))


@pytest.mark.parametrize("row", params(UNUSED))
def test_not_runnable(row: Unused) -> None:
    raise AssertionError("always skipped")  # pragma: no cover


def test_every_file_in_folder_has_a_row() -> None:
    tables = [ENVELOPED, SIGNED, P12S, CERTS, KEYS, UNUSED]
    covered = {row.file for table in tables for row in table} | {WEBDE}
    assert set(list_files(FOLDER)) == covered | set(NOT_VECTORS)
