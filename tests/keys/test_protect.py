"""Keys at rest (smimekit.keys.protect): what the PKCS#12 really uses, and old files still open."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from asn1crypto import pkcs12 as asn1_pkcs12
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12

from smimekit.errors import PassphraseError
from smimekit.keys.protect import KDF_ROUNDS, protect_key, unprotect_key

PASS = b"correct horse battery staple"


def _key_bag_params(p12: bytes) -> list[tuple[str, str, str, int]]:
    """(scheme, cipher, PRF, iterations) of every shrouded key bag."""
    pfx = asn1_pkcs12.Pfx.load(p12)
    found = []
    for info in pfx.authenticated_safe:
        assert info["content_type"].native == "data"  # the key alone: no encryptedData
        for bag in asn1_pkcs12.SafeContents.load(info["content"].native):
            assert bag["bag_id"].native == "pkcs8_shrouded_key_bag"
            alg = bag["bag_value"]["encryption_algorithm"]
            params = alg["parameters"]
            kdf = params["key_derivation_func"]["parameters"]
            found.append((alg["algorithm"].native,
                          params["encryption_scheme"]["algorithm"].native,
                          kdf["prf"]["algorithm"].native, kdf["iteration_count"].native))
    return found


def test_mac_costs_as_much_as_the_key_bag() -> None:
    p12 = protect_key(ec.generate_private_key(ec.SECP256R1()), PASS)
    assert _key_bag_params(p12) == [("pbes2", "aes256_cbc", "sha256", KDF_ROUNDS)]
    mac = asn1_pkcs12.Pfx.load(p12)["mac_data"]
    assert mac["mac"]["digest_algorithm"]["algorithm"].native == "sha256"
    assert mac["iterations"].native == KDF_ROUNDS == 200_000
    assert len(mac["mac_salt"].native) >= 16


def test_protected_key_opens_with_cryptography_and_openssl(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    p12 = protect_key(key, PASS)
    assert unprotect_key(p12, PASS).public_key() == key.public_key()
    # an independent reader checks the MAC too
    (tmp_path / "k.p12").write_bytes(p12)
    done = subprocess.run(["openssl", "pkcs12", "-in", str(tmp_path / "k.p12"), "-noout",
                           "-passin", "pass:" + PASS.decode()], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with pytest.raises(PassphraseError):
        unprotect_key(p12, b"not the passphrase")


def test_non_utf8_passphrase_is_refused_clearly() -> None:
    # PKCS#12 passwords are text (RFC 7292 B.1): cryptography refuses other bytes with a
    # bare ValueError, which would reach the user as an internal error
    with pytest.raises(PassphraseError, match="UTF-8"):
        protect_key(ec.generate_private_key(ec.SECP256R1()), b"\xff\xfe latin-1 \xe9t\xe9")


def test_non_ascii_passphrase_round_trips() -> None:
    secret = "Pässwörter sind schön 🔑".encode()
    key = ec.generate_private_key(ec.SECP256R1())
    assert unprotect_key(protect_key(key, secret), secret).public_key() == key.public_key()


def test_key_file_with_the_old_2048_mac_still_opens() -> None:
    """Files written before the MAC followed the key bag (cryptography's 2,048) keep working."""
    key = ec.generate_private_key(ec.SECP256R1())
    old = pkcs12.serialize_key_and_certificates(
        None, key, None, None,
        serialization.PrivateFormat.PKCS12.encryption_builder().kdf_rounds(KDF_ROUNDS)
        .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .hmac_hash(hashes.SHA256()).build(PASS))
    assert asn1_pkcs12.Pfx.load(old)["mac_data"]["iterations"].native == 2048
    assert unprotect_key(old, PASS).public_key() == key.public_key()


def test_protect_takes_well_under_a_second() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    start = time.perf_counter()
    protect_key(key, PASS)
    assert time.perf_counter() - start < 1.0
