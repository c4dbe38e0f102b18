"""smimekit's PKCS#12 files (smimekit.ca.export) imported by the real clients.

NSS ``pk12util`` (Thunderbird's engine), GnuPG ``gpgsm`` and OpenSSL each import both forms,
the default (PBES2: PBKDF2-HMAC-SHA256, AES-256-CBC, HMAC-SHA256 MAC) and ``legacy=True``
(3DES, SHA-1 MAC), for an RSA-2048 and a P-256 key issued by the interop intermediate CA. Each
import is followed by a check that the client paired the key with its certificate: NSS signs
with it, gpgsm lists it among its secret keys, OpenSSL's PEM output has the same key.

What gpgsm 2.2.40 cannot import is skipped with the reason from ``PKCS12_LIMITATIONS`` (or
``peers.LIMITATIONS``) and proved again on every run here, as test_interop_harness.py does
for the message-level limitations.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    PrivateKeyTypes,
)
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from peers import (
    EMAIL_DOMAIN,
    ENTITY,
    LIMITATIONS,
    PASSWORD,
    Gpgsm,
    NssDb,
    PeerError,
    Pki,
    missing_binaries,
    run,
)

from smimekit.ca import export
from smimekit.ca.export import ITERATIONS, LEGACY_ITERATIONS, pkcs12_bytes

pytestmark = [pytest.mark.interop]

#: ASCII and under 32 bytes: gpgsm refuses longer passphrases for PKCS#12.
P12_PASSWORD = "p12-interop-secret"

#: What gpgsm 2.2.40 cannot import of ours; proved by test_gpgsm_p12_limitation_still_holds.
PKCS12_LIMITATIONS = {
    "gpgsm-p12-pbes2": "gpgsm 2.2.40 imports PBES2 PKCS#12 only with AES-128; our default "
                       "form (AES-256) is rejected ('encryptedData error at "
                       "\"pkcs5PBES2-params\"'; PEERS.md). Use legacy=True for gpgsm.",
}

KINDS = ("rsa2048", "p256")
FORMS = ("modern", "legacy")


def _require(peer: str) -> None:
    missing = missing_binaries(peer)
    if missing:
        pytest.skip(f"interop peer {peer!r} not installed (missing: {', '.join(missing)})")


# --- identities issued by the interop intermediate CA -------------------------------------


@dataclass(frozen=True)
class Issuer:
    key: CertificateIssuerPrivateKeyTypes
    cert: x509.Certificate
    root: x509.Certificate


@pytest.fixture(scope="module")
def issuer(pki: Pki) -> Issuer:
    key = serialization.load_pem_private_key(pki.inter_key.read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return Issuer(key, x509.load_pem_x509_certificate(pki.inter_cert.read_bytes()),
                  x509.load_pem_x509_certificate(pki.root_cert.read_bytes()))


def _person(issuer: Issuer, kind: str, name: str) -> tuple[PrivateKeyTypes, x509.Certificate]:
    """A fresh key and an S/MIME certificate for it (like peers.make_pki's end entities)."""
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if kind == "rsa2048":
        key = rsa.generate_private_key(65537, 2048)
        usage = {"key_encipherment": True, "key_agreement": False}
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        usage = {"key_encipherment": False, "key_agreement": True}
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "smimekit"),
                                 x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     data_encipherment=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False,
                                     **usage), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
        .add_extension(x509.SubjectAlternativeName(
            [x509.RFC822Name(f"{name.lower()}@{EMAIL_DOMAIN}")]), False)
        .sign(issuer.key, hashes.SHA256())
    )
    return key, cert


@dataclass(frozen=True)
class Exported:
    name: str
    key: PrivateKeyTypes
    cert: x509.Certificate
    p12: Path


Export = Callable[[str, str], Exported]


@pytest.fixture(scope="module")
def exported(issuer: Issuer, tmp_path_factory: pytest.TempPathFactory) -> Export:
    """(kind, form) -> an Exported, made once per module (the default form takes ~0.4 s)."""
    directory = tmp_path_factory.mktemp("p12")

    @functools.cache
    def make(kind: str, form: str) -> Exported:
        name = f"P12 {kind}"
        key, cert = _person(issuer, kind, name.replace(" ", ""))
        path = directory / f"{kind}-{form}.p12"
        path.write_bytes(pkcs12_bytes(key, cert, [issuer.cert, issuer.root],
                                      P12_PASSWORD.encode(), friendly_name=name,
                                      legacy=form == "legacy"))
        return Exported(name, key, cert, path)

    return make


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA1()).hex().upper()


# --- NSS ----------------------------------------------------------------------------------


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("kind", KINDS)
def test_pk12util_imports_key_paired_with_certificate(
    exported: Export, pki: Pki, tmp_path: Path, kind: str, form: str
) -> None:
    _require("nss")
    item: Exported = exported(kind, form)
    db = _nss_db(tmp_path, pki)
    db.import_p12(item.p12, P12_PASSWORD)
    # The key is listed under the certificate's nickname only when NSS paired the two.
    keys = run(["certutil", "-K", "-d", db.db]).stdout.decode()
    assert re.search(rf"^<\s*0>\s+{'rsa' if kind == 'rsa2048' else 'ec'}\s+\w+\s+{item.name}$",
                     keys, re.M), keys
    got = run(["certutil", "-L", "-d", db.db, "-n", item.name, "-a"]).stdout
    assert x509.load_pem_x509_certificate(got) == item.cert
    # And NSS signs with it: the signature verifies against our certificate.
    _assert_signed_by(db.sign(ENTITY, item.name), item.cert, tmp_path)


def _nss_db(tmp_path: Path, pki: Pki) -> NssDb:
    """A fresh NSS database trusting the interop root (cmsutil signs only with a trusted
    chain)."""
    db = NssDb(tmp_path / "nss")
    db.add_cert("root", pki.root_cert, "CT,C,C")
    return db


def _assert_signed_by(sig_der: bytes, cert: x509.Certificate, tmp: Path) -> None:
    (tmp / "sig").write_bytes(sig_der)
    (tmp / "content").write_bytes(ENTITY)
    run(["openssl", "cms", "-verify", "-inform", "DER", "-in", tmp / "sig", "-content",
         tmp / "content", "-binary", "-noverify", "-signer", tmp / "signer.pem",
         "-out", tmp / "out"])
    assert x509.load_pem_x509_certificate((tmp / "signer.pem").read_bytes()) == cert


def test_pk12util_imports_every_key_of_a_key_history(
    issuer: Issuer, pki: Pki, tmp_path: Path
) -> None:
    _require("nss")
    current = _person(issuer, "rsa2048", "Current")
    old = [_person(issuer, kind, f"Old{n}") for n, kind in enumerate(KINDS)]
    p12 = tmp_path / "history.p12"
    p12.write_bytes(pkcs12_bytes(*current, [issuer.cert], P12_PASSWORD.encode(),
                                 friendly_name="History", extra=old))
    db = _nss_db(tmp_path, pki)
    db.import_p12(p12, P12_PASSWORD)
    keys = run(["certutil", "-K", "-d", db.db]).stdout.decode()
    until = f"History (until {old[0][1].not_valid_after_utc:%Y-%m-%d})"
    names = ["History", until, f"{until[:-1]}, serial {old[1][1].serial_number:x})"]
    for (_key, cert), name in zip([current, *old], names, strict=True):
        assert re.search(rf"\s{re.escape(name)}$", keys, re.M), keys
        got = run(["certutil", "-L", "-d", db.db, "-n", name, "-a"]).stdout
        assert x509.load_pem_x509_certificate(got) == cert
        _assert_signed_by(db.sign(ENTITY, name), cert, tmp_path)


def test_pk12util_refuses_a_wrong_passphrase(exported: Export, tmp_path: Path) -> None:
    _require("nss")
    db = NssDb(tmp_path / "nss")
    with pytest.raises(PeerError, match="SEC_ERROR_BAD_PASSWORD"):
        db.import_p12(exported("rsa2048", "modern").p12, "not-the-password")


# --- gpgsm --------------------------------------------------------------------------------


def _secret_fingerprints(home: Gpgsm) -> set[str]:
    out = run(["gpgsm", "--batch", "--with-colons", "--list-secret-keys"],
              env={"GNUPGHOME": str(home.home)}).stdout.decode()
    return {line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:")}


@pytest.fixture
def gpgsm_home(tmp_path: Path) -> Iterator[Gpgsm]:
    _require("gpgsm")
    home = Gpgsm(tmp_path / "gnupg", passphrase=P12_PASSWORD)
    try:
        yield home
    finally:
        home.close()


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("kind", KINDS)
def test_gpgsm_imports_key_paired_with_certificate(
    exported: Export, gpgsm_home: Gpgsm, kind: str, form: str
) -> None:
    if form == "modern":
        pytest.skip(PKCS12_LIMITATIONS["gpgsm-p12-pbes2"])
    if kind == "p256":
        pytest.skip(LIMITATIONS["gpgsm-ecdh"])
    item: Exported = exported(kind, form)
    gpgsm_home.import_p12(item.p12)
    # gpgsm lists a certificate as a secret key only when it holds the matching private key.
    assert _secret_fingerprints(gpgsm_home) == {_fingerprint(item.cert)}


@pytest.mark.slow
def test_gpgsm_imports_every_one_of_30_fresh_legacy_files(
    issuer: Issuer, gpgsm_home: Gpgsm, tmp_path: Path
) -> None:
    # Unchecked, about 1 file in 64 has a salt gpgsm derives a wrong 3DES key from (two 3DES
    # salts per file; see export.gpgsm_kdf_safe): 30 files would fail ~40% of the time.
    expected = set()
    for n in range(30):
        key, cert = _person(issuer, "rsa2048", f"Loop{n}")
        p12 = tmp_path / f"loop{n}.p12"
        p12.write_bytes(pkcs12_bytes(key, cert, [issuer.cert], P12_PASSWORD.encode(),
                                     friendly_name=f"Loop {n}", legacy=True))
        gpgsm_home.import_p12(p12)
        expected.add(_fingerprint(cert))
    assert _secret_fingerprints(gpgsm_home) == expected


def test_session_pki_legacy_files_are_gpgsm_safe(pki: Pki) -> None:
    """conftest's pki re-exports each -legacy file until gpgsm can derive its keys, so the
    session's gpgsm fixture (and the EC-import limitation proof) cannot flake on a salt."""
    for user in pki.users.values():
        assert export.pkcs12_gpgsm_kdf_safe(user.p12_legacy.read_bytes(), PASSWORD.encode())


def _legacy_unchecked(key: PrivateKeyTypes, cert: x509.Certificate) -> bytes:
    """What cryptography writes for the legacy form, without the salt check."""
    encryption = (serialization.PrivateFormat.PKCS12.encryption_builder()
                  .kdf_rounds(LEGACY_ITERATIONS)
                  .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
                  .hmac_hash(hashes.SHA1())
                  .build(P12_PASSWORD.encode()))
    return pkcs12.serialize_key_and_certificates(b"x", key, cert, None, encryption)


def test_gpgsm_fails_on_a_salt_the_check_rejects(
    issuer: Issuer, gpgsm_home: Gpgsm, tmp_path: Path
) -> None:
    """The salt retry is needed: the installed gpgsm still has the KDF flaw."""
    key, cert = _person(issuer, "rsa2048", "Unlucky")
    for _ in range(2000):  # ~1 in 64 is rejected
        der = _legacy_unchecked(key, cert)
        if not export.pkcs12_gpgsm_kdf_safe(der, P12_PASSWORD.encode()):
            break
    else:
        pytest.fail("no rejected salt in 2000 files")
    (tmp_path / "unlucky.p12").write_bytes(der)
    with pytest.raises(PeerError, match="decryption failed; trying charset"):
        gpgsm_home.import_p12(tmp_path / "unlucky.p12")
    assert _secret_fingerprints(gpgsm_home) == set()


def test_gpgsm_takes_no_key_from_a_file_with_several(
    issuer: Issuer, gpgsm_home: Gpgsm, tmp_path: Path
) -> None:
    """Why legacy=True refuses a key history: gpgsm then imports no key at all."""
    pairs = [_person(issuer, "rsa2048", f"Multi{n}") for n in range(2)]
    files = [pkcs12_bytes(k, c, [], P12_PASSWORD.encode(), friendly_name=f"M{n}",
                          legacy=True) for n, (k, c) in enumerate(pairs)]
    (tmp_path / "multi.p12").write_bytes(
        export._assemble(files, P12_PASSWORD.encode(), legacy=True))
    with pytest.raises(PeerError, match="a key has already been received"):
        gpgsm_home.import_p12(tmp_path / "multi.p12")
    assert _secret_fingerprints(gpgsm_home) == set()


@pytest.mark.parametrize("case", sorted(PKCS12_LIMITATIONS))
def test_gpgsm_p12_limitation_still_holds(exported: Export, gpgsm_home: Gpgsm,
                                         case: str) -> None:
    assert case == "gpgsm-p12-pbes2"
    with pytest.raises(PeerError, match='encryptedData error at "pkcs5PBES2-params"'):
        gpgsm_home.import_p12(exported("rsa2048", "modern").p12)
    assert _secret_fingerprints(gpgsm_home) == set()


def test_gpgsm_ec_limitation_holds_for_our_legacy_file(exported: Export,
                                                     gpgsm_home: Gpgsm) -> None:
    """LIMITATIONS["gpgsm-ecdh"] (proved with OpenSSL's file in the harness) holds for ours."""
    with pytest.raises(PeerError, match="Segmentation fault"):
        gpgsm_home.import_p12(exported("p256", "legacy").p12)


# --- OpenSSL ------------------------------------------------------------------------------

OPENSSL_INFO = {
    "modern": [f"MAC: sha256, Iteration {ITERATIONS}",
               f"PKCS7 Encrypted data: PBES2, PBKDF2, AES-256-CBC, Iteration {ITERATIONS}, "
               "PRF hmacWithSHA256",
               f"Shrouded Keybag: PBES2, PBKDF2, AES-256-CBC, Iteration {ITERATIONS}, "
               "PRF hmacWithSHA256"],
    "legacy": [f"MAC: sha1, Iteration {LEGACY_ITERATIONS}",
               "PKCS7 Encrypted data: pbeWithSHA1And3-KeyTripleDES-CBC, "
               f"Iteration {LEGACY_ITERATIONS}",
               f"Shrouded Keybag: pbeWithSHA1And3-KeyTripleDES-CBC, Iteration {LEGACY_ITERATIONS}"],
}


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("kind", KINDS)
def test_openssl_reads_both_forms_without_legacy_provider(
    exported: Export, kind: str, form: str
) -> None:
    # No -legacy: OpenSSL 3 needs it for RC2 and RC4, not for 3DES, and we write no RC2.
    item: Exported = exported(kind, form)
    info = run(["openssl", "pkcs12", "-info", "-noout", "-in", item.p12,
                "-passin", f"pass:{P12_PASSWORD}"]).stderr.decode()
    for line in OPENSSL_INFO[form]:
        assert line in info, info
    out = run(["openssl", "pkcs12", "-in", item.p12, "-nodes",
               "-passin", f"pass:{P12_PASSWORD}"]).stdout
    blocks = _pem_blocks_with_attributes(out)
    (key_attrs, key_pem), = [(a, p) for a, p in blocks if b"PRIVATE KEY" in p]
    key = serialization.load_pem_private_key(key_pem, None)
    assert key.public_key() == item.key.public_key()
    certs = {x509.load_pem_x509_certificate(p): a for a, p in blocks if b"CERTIFICATE" in p}
    assert len(certs) == 3
    # Key and certificate carry the same localKeyID and friendlyName: how clients pair them.
    assert certs[item.cert] == key_attrs
    assert key_attrs["friendlyName"] == item.name
    assert key_attrs["localKeyID"] == _fingerprint(item.cert)


def _pem_blocks_with_attributes(out: bytes) -> list[tuple[dict[str, str], bytes]]:
    """``openssl pkcs12 -nodes`` output: each PEM block with the bag attributes above it."""
    blocks: list[tuple[dict[str, str], bytes]] = []
    attrs: dict[str, str] = {}
    pem: list[str] | None = None
    for line in out.decode().splitlines():
        if pem is not None:
            pem.append(line)
            if line.startswith("-----END "):
                blocks.append((attrs, ("\n".join(pem) + "\n").encode()))
                attrs, pem = {}, None
        elif line.startswith("-----BEGIN "):
            pem = [line]
        elif m := re.match(r"\s+(friendlyName|localKeyID): (.*?)\s*$", line):
            attrs[m[1]] = m[2].replace(" ", "") if m[1] == "localKeyID" else m[2]
    return blocks


@pytest.mark.parametrize("form", FORMS)
def test_openssl_refuses_a_wrong_passphrase(exported: Export, form: str) -> None:
    with pytest.raises(PeerError, match="invalid password"):
        run(["openssl", "pkcs12", "-info", "-noout", "-in", exported("rsa2048", form).p12,
             "-passin", "pass:not-the-password"])
