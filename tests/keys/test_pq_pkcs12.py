"""PKCS#12 carrying ML-DSA and ML-KEM keys: cryptography's writer refuses them, so
smimekit writes the file (keys/pkcs12.write_pkcs12) for the CA's keys at rest
(keys/protect.py), the person's .p12 (ca/export.py) and reads it back with its own reader;
the key vault seals and opens ML-KEM keys."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import pkcs12 as asn1_pkcs12
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import mldsa, mlkem, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from smimekit.ca.export import mobileconfig_bytes, pkcs12_bytes
from smimekit.errors import CAError, PassphraseError
from smimekit.keys.pkcs12 import load_pkcs12_identities, write_pkcs12
from smimekit.keys.protect import KDF_ROUNDS, protect_key, unprotect_key
from smimekit.keys.vault import KeyVault

PASS = b"correct horse battery staple"
OPENSSL = shutil.which("openssl")
ML_KEYS = [mldsa.MLDSA44PrivateKey, mldsa.MLDSA65PrivateKey, mldsa.MLDSA87PrivateKey,
           mlkem.MLKEM768PrivateKey, mlkem.MLKEM1024PrivateKey]
CA_KEY = mldsa.MLDSA65PrivateKey.generate()
CA_NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test ML-DSA CA")])


def _cert(key: PrivateKeyTypes, name: str, *, days: int = 30) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(CA_NAME)
            .public_key(key.public_key())  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=days))
            .sign(CA_KEY, None))


CA_CERT = _cert(CA_KEY, "Test ML-DSA CA", days=365)


def _structure(p12: bytes) -> dict[str, Any]:
    """What the file uses: MAC hash and iterations, and per safe its kind and PBES2 params."""
    pfx = asn1_pkcs12.Pfx.load(p12)
    mac = pfx["mac_data"]
    out: dict[str, Any] = {
        "mac": (mac["mac"]["digest_algorithm"]["algorithm"].native, mac["iterations"].native,
                len(mac["mac_salt"].native)),
        "safes": [],
    }

    def pbes2(alg: Any) -> tuple[str, str, str, int]:
        params = alg["parameters"]
        kdf = params["key_derivation_func"]["parameters"]
        return (alg["algorithm"].native, params["encryption_scheme"]["algorithm"].native,
                kdf["prf"]["algorithm"].native, kdf["iteration_count"].native)

    for info in pfx.authenticated_safe:
        kind = info["content_type"].native
        if kind == "encrypted_data":
            eci = info["content"]["encrypted_content_info"]
            out["safes"].append(("certificates", pbes2(eci["content_encryption_algorithm"])))
        else:
            for bag in asn1_pkcs12.SafeContents.load(info["content"].native):
                assert bag["bag_id"].native == "pkcs8_shrouded_key_bag"
                out["safes"].append(("key", pbes2(bag["bag_value"]["encryption_algorithm"])))
    return out


@pytest.mark.parametrize("kind", ML_KEYS, ids=lambda k: k.__name__)
def test_ml_key_and_chain_round_trip(kind: Any) -> None:
    key = kind.generate()
    cert = _cert(key, "alice")
    p12 = write_pkcs12([("alice (sign)", key, cert)], [CA_CERT], PASS, iterations=2048)
    read = load_pkcs12_identities(p12, PASS)
    assert len(read.identities) == 1
    loaded, loaded_cert = read.identities[0]
    assert isinstance(loaded, kind)
    assert loaded.public_key() == key.public_key()
    assert loaded_cert == cert
    assert read.certificates == [CA_CERT]
    params = ("pbes2", "aes256_cbc", "sha256", 2048)
    assert _structure(p12) == {"mac": ("sha256", 2048, 16),
                               "safes": [("certificates", params), ("key", params)]}


def test_key_history_pairs_by_local_key_id_current_key_first() -> None:
    new, old = mlkem.MLKEM768PrivateKey.generate(), mlkem.MLKEM768PrivateKey.generate()
    new_cert, old_cert = _cert(new, "alice"), _cert(old, "alice", days=10)
    p12 = write_pkcs12([("alice", new, new_cert), ("alice (old)", old, old_cert)], [CA_CERT],
                       PASS, iterations=2048)
    pfx = asn1_pkcs12.Pfx.load(p12)
    key_safe = next(i for i in pfx.authenticated_safe if i["content_type"].native == "data")
    attrs = [{a["type"].native: a["values"][0].native for a in bag["bag_attributes"]}
             for bag in asn1_pkcs12.SafeContents.load(key_safe["content"].native)]
    assert attrs == [
        {"friendly_name": "alice", "local_key_id": new_cert.fingerprint(hashes.SHA1())},
        {"friendly_name": "alice (old)",
         "local_key_id": old_cert.fingerprint(hashes.SHA1())},
    ]
    read = load_pkcs12_identities(p12, PASS)
    assert [(k.public_key(), c) for k, c in read.identities] == [
        (new.public_key(), new_cert), (old.public_key(), old_cert)]


def test_wrong_or_empty_passphrase_is_refused() -> None:
    key = mldsa.MLDSA44PrivateKey.generate()
    p12 = write_pkcs12([("a", key, _cert(key, "a"))], [], PASS, iterations=2048)
    with pytest.raises(PassphraseError, match="wrong passphrase"):
        load_pkcs12_identities(p12, b"not it")
    with pytest.raises(PassphraseError, match="non-empty"):
        write_pkcs12([("a", key, _cert(key, "a"))], [], b"", iterations=2048)
    with pytest.raises(PassphraseError, match="UTF-8"):
        write_pkcs12([("a", key, _cert(key, "a"))], [], b"\xff\xfe", iterations=2048)


@pytest.mark.skipif(OPENSSL is None, reason="openssl not installed")
def test_openssl_checks_the_mac_and_opens_the_certificates(tmp_path: Path) -> None:
    """OpenSSL 3.0 knows no ML key, but the file's MAC, PBES2 safes and certificate bags
    are standard: it verifies the MAC and decrypts the certificates."""
    key = mlkem.MLKEM1024PrivateKey.generate()
    path = tmp_path / "alice.p12"
    path.write_bytes(write_pkcs12([("alice", key, _cert(key, "alice"))], [CA_CERT], PASS,
                                  iterations=2048))
    assert OPENSSL is not None
    result = subprocess.run(
        [OPENSSL, "pkcs12", "-in", str(path), "-nokeys", "-passin", f"pass:{PASS.decode()}"],
        capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("-----BEGIN CERTIFICATE-----") == 2
    assert "friendlyName: alice" in result.stdout
    wrong = subprocess.run(
        [OPENSSL, "pkcs12", "-in", str(path), "-nokeys", "-passin", "pass:wrong"],
        capture_output=True, text=True, check=False)
    assert wrong.returncode != 0
    assert "mac verify error" in wrong.stderr.lower()


# -- keys at rest ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ML_KEYS, ids=lambda k: k.__name__)
def test_ml_keys_at_rest_round_trip(kind: Any) -> None:
    key = kind.generate()
    p12 = protect_key(key, PASS, rounds=1000)
    # the key alone (no certificate safe), with the key bag's count for the MAC too
    assert _structure(p12) == {"mac": ("sha256", 1000, 16),
                               "safes": [("key", ("pbes2", "aes256_cbc", "sha256", 1000))]}
    opened = unprotect_key(p12, PASS)
    assert isinstance(opened, kind)
    assert opened.public_key() == key.public_key()


def test_ml_key_at_rest_uses_the_default_rounds() -> None:
    p12 = protect_key(mldsa.MLDSA87PrivateKey.generate(), PASS)
    assert _structure(p12)["mac"] == ("sha256", KDF_ROUNDS, 16)


def test_ml_key_at_rest_refuses_a_wrong_passphrase() -> None:
    p12 = protect_key(mlkem.MLKEM768PrivateKey.generate(), PASS, rounds=1000)
    with pytest.raises(PassphraseError, match="wrong passphrase for the CA root key"):
        unprotect_key(p12, b"wrong", "the CA root key")
    with pytest.raises(PassphraseError):
        protect_key(mldsa.MLDSA65PrivateKey.generate(), b"")


# -- the person's .p12 (ca/export.py) --------------------------------------------------------


def test_person_p12_with_ml_keys_and_a_classical_history() -> None:
    """An ML-KEM encryption key that replaced an RSA one: the file holds both, current
    first; cryptography's writer would refuse it."""
    new, old = mlkem.MLKEM768PrivateKey.generate(), rsa.generate_private_key(65537, 2048)
    new_cert, old_cert = _cert(new, "alice"), _cert(old, "alice", days=5)
    p12 = pkcs12_bytes(new, new_cert, [CA_CERT], PASS, friendly_name="alice (encrypt)",
                       extra=[(old, old_cert)], iterations=2048)
    read = load_pkcs12_identities(p12, PASS)
    assert [c for _, c in read.identities] == [new_cert, old_cert]
    assert read.identities[0][0].public_key() == new.public_key()
    assert read.certificates == [CA_CERT]
    with pytest.raises(ValueError):  # why smimekit writes it: cryptography cannot read it
        pkcs12.load_pkcs12(p12, PASS)


def test_person_p12_with_an_ml_key_uses_the_documented_form() -> None:
    """docs/ca.md, "PKCS#12 files for mail clients", row "your passphrase": the same for an
    ML key as for the others (600,000 PBKDF2 iterations for both safes and the MAC)."""
    from smimekit.ca.export import ITERATIONS

    key = mlkem.MLKEM768PrivateKey.generate()
    p12 = pkcs12_bytes(key, _cert(key, "alice"), [CA_CERT], PASS, friendly_name="alice")
    params = ("pbes2", "aes256_cbc", "sha256", ITERATIONS)
    assert _structure(p12) == {"mac": ("sha256", ITERATIONS, 16),
                               "safes": [("certificates", params), ("key", params)]}


def test_legacy_person_p12_refuses_ml_keys() -> None:
    key = mldsa.MLDSA65PrivateKey.generate()
    with pytest.raises(CAError, match="legacy PKCS#12 form cannot carry an ML-DSA"):
        pkcs12_bytes(key, _cert(key, "alice"), [CA_CERT], PASS, friendly_name="alice",
                     legacy=True)


def test_person_p12_refuses_a_key_that_is_not_the_certificates() -> None:
    key = mldsa.MLDSA65PrivateKey.generate()
    other = mldsa.MLDSA65PrivateKey.generate()
    with pytest.raises(CAError, match="does not match"):
        pkcs12_bytes(key, _cert(other, "alice"), [CA_CERT], PASS, friendly_name="alice")


def test_mobileconfig_takes_an_ml_p12_and_checks_its_passphrase() -> None:
    key = mldsa.MLDSA44PrivateKey.generate()
    p12 = pkcs12_bytes(key, _cert(key, "alice"), [CA_CERT], PASS, friendly_name="alice",
                       iterations=2048)
    profile = mobileconfig_bytes(p12, passphrase=PASS.decode(), identifier="com.example.smime",
                                 display_name="alice", organization="Example",
                                 ca_certs=[CA_CERT])
    assert b"com.apple.security.pkcs12" in profile
    with pytest.raises(CAError, match="does not open"):
        mobileconfig_bytes(p12, passphrase="wrong", identifier="com.example.smime",
                           display_name="alice", organization="Example", ca_certs=[CA_CERT])


# -- escrow: the vault seals ML-KEM keys -----------------------------------------------------


@pytest.mark.parametrize("kind", [mlkem.MLKEM768PrivateKey, mlkem.MLKEM1024PrivateKey],
                         ids=lambda k: k.__name__)
def test_vault_seals_and_opens_ml_kem_keys(kind: Any) -> None:
    vault = KeyVault.create("Example Ltd")
    key = kind.generate()
    cert = _cert(key, "alice")
    sealed = vault.seal(key)
    opened = vault.open(sealed, cert)
    assert isinstance(opened, kind)
    assert opened.public_key() == key.public_key()
    with pytest.raises(CAError, match="does not belong"):
        vault.open(sealed, _cert(kind.generate(), "mallory"))
    tampered = bytearray(sealed)
    tampered[-20] ^= 1
    with pytest.raises(CAError, match="does not open"):
        vault.open(bytes(tampered), cert)


def test_public_pkcs12_loaders_read_ml_files(tmp_path: Path) -> None:
    """smimekit.load_pkcs12, load_certificates and load_private_key read what ca issue
    writes for ML keys (cryptography's reader cannot), and still refuse a wrong passphrase
    and garbage with the usual errors."""
    from smimekit.errors import KeyLoadError
    from smimekit.keys.load import load_certificates, load_pkcs12, load_private_key

    key = mlkem.MLKEM768PrivateKey.generate()
    cert = _cert(key, "bob")
    p12 = write_pkcs12([("bob (encrypt)", key, cert)], [CA_CERT], PASS, iterations=2048)
    loaded, loaded_cert, others = load_pkcs12(p12, PASS)
    assert loaded is not None and loaded.public_key() == key.public_key()
    assert loaded_cert == cert and others == [CA_CERT]
    path = tmp_path / "bob.p12"
    path.write_bytes(p12)
    assert load_certificates(str(path), PASS) == [cert, CA_CERT]
    assert load_private_key(str(path), PASS).public_key() == key.public_key()
    with pytest.raises(PassphraseError):
        load_pkcs12(p12, b"wrong")
    with pytest.raises(KeyLoadError, match="not a PKCS#12 file"):
        load_pkcs12(b"\x30\x03\x02\x01\x03", PASS)
