"""PKCS#12, Apple configuration profiles and PEM chains for users' mail clients.

The algorithms are read back from the DER with asn1crypto, the encrypted parts are opened with
cryptography's primitives (so the pairing attributes of the certificate bags can be checked),
and the files are loaded with cryptography's and smimekit's own PKCS#12 loaders. The real
clients (OpenSSL, NSS, gpgsm) are in tests/interop/test_pkcs12_import.py.
"""

from __future__ import annotations

import hashlib
import plistlib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from asn1crypto import pkcs12 as asn1_pkcs12
from cryptography import x509
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from cryptography.hazmat.primitives.serialization import pkcs12
from pki import PKI, Identity

import smimekit
from smimekit.ca import export
from smimekit.ca.export import (
    ITERATIONS,
    LEGACY_ITERATIONS,
    gpgsm_kdf_safe,
    mobileconfig_bytes,
    pem_chain,
    pkcs12_bytes,
    pkcs12_gpgsm_kdf_safe,
)
from smimekit.errors import CAError

PASS = b"correct horse battery"
# A salt for which gpgsm 2.2.40 derives a wrong 3DES key with PASS and 2,048 iterations
# (found by search; tests/interop/test_pkcs12_import.py proves the effect on gpgsm itself).
GPGSM_BAD_SALT = (108).to_bytes(8, "big")


@pytest.fixture(scope="module")
def alice(pki: PKI) -> Identity:
    return pki.person("alice", "rsa2048")


@pytest.fixture(scope="module")
def bob(pki: PKI) -> Identity:
    return pki.person("bob", "p256")


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The default form at 2,048 iterations: for tests about anything but the count."""
    monkeypatch.setattr(export, "ITERATIONS", 2048)
    yield


@pytest.fixture(scope="module")
def modern(pki: PKI, alice: Identity) -> bytes:
    """The default form at its real iteration count (about 0.4 s to write)."""
    return pkcs12_bytes(alice.key, alice.cert, [pki.inter, pki.root], PASS,
                        friendly_name="Alice")


@pytest.fixture(scope="module")
def legacy(pki: PKI, alice: Identity) -> bytes:
    return pkcs12_bytes(alice.key, alice.cert, [pki.inter, pki.root], PASS,
                        friendly_name="Alice", legacy=True)


@pytest.fixture(params=["modern", "legacy"])
def form(request: pytest.FixtureRequest) -> tuple[str, bytes]:
    return request.param, request.getfixturevalue(request.param)


# --- reading the files back ---------------------------------------------------------------


def _pfx(p12: bytes) -> Any:
    return asn1_pkcs12.Pfx.load(p12)


def _encrypted_algorithms(p12: bytes) -> list[Any]:
    """The encryption algorithm of every encryptedData and every shrouded key bag."""
    algs = []
    for info in _pfx(p12).authenticated_safe:
        if info["content_type"].native == "encrypted_data":
            algs.append(info["content"]["encrypted_content_info"]["content_encryption_algorithm"])
        else:
            algs += [bag["bag_value"]["encryption_algorithm"]
                     for bag in asn1_pkcs12.SafeContents.load(info["content"].native)]
    return algs


def _bmp(passphrase: bytes) -> bytes:
    return passphrase.decode().encode("utf-16-be") + b"\x00\x00"


def _decrypt(alg: Any, data: bytes, passphrase: bytes) -> bytes:
    """Open a PBES2 (PBKDF2-SHA256, AES-256-CBC) or PKCS#12 3DES encrypted part."""
    if alg["algorithm"].native == "pbes2":
        kdf = alg["parameters"]["key_derivation_func"]["parameters"]
        key = PBKDF2HMAC(hashes.SHA256(), 32, kdf["salt"].native,
                         kdf["iteration_count"].native).derive(passphrase)
        cipher = Cipher(algorithms.AES(key),
                        modes.CBC(alg["parameters"]["encryption_scheme"]["parameters"].native))
        block = 128
    else:
        assert alg["algorithm"].native == "pkcs12_sha1_tripledes_3key"
        salt, n = alg["parameters"]["salt"].native, alg["parameters"]["iterations"].native
        key = export._pkcs12_kdf(hashlib.sha1, _bmp(passphrase), salt, n, 1, 24)
        iv = export._pkcs12_kdf(hashlib.sha1, _bmp(passphrase), salt, n, 2, 8)
        cipher = Cipher(TripleDES(key), modes.CBC(iv))
        block = 64
    dec = cipher.decryptor()
    unpad = padding.PKCS7(block).unpadder()
    return unpad.update(dec.update(data) + dec.finalize()) + unpad.finalize()


def _bags(p12: bytes, passphrase: bytes) -> list[Any]:
    """Every safe bag, with the encryptedData parts opened."""
    bags: list[Any] = []
    for info in _pfx(p12).authenticated_safe:
        if info["content_type"].native == "data":
            bags += list(asn1_pkcs12.SafeContents.load(info["content"].native))
        else:
            eci = info["content"]["encrypted_content_info"]
            plain = _decrypt(eci["content_encryption_algorithm"],
                             eci["encrypted_content"].native, passphrase)
            bags += list(asn1_pkcs12.SafeContents.load(plain))
    return bags


def _attrs(bag: Any) -> dict[str, Any]:
    return {a["type"].native: a["values"].native[0] for a in bag["bag_attributes"]}


def _cert_of(bag: Any) -> x509.Certificate:
    return x509.load_der_x509_certificate(bag["bag_value"]["cert_value"].parsed.untag().dump())


def _key_of(bag: Any, passphrase: bytes) -> Any:
    return serialization.load_der_private_key(bag["bag_value"].untag().dump(), passphrase)


def _sha1(cert: x509.Certificate) -> bytes:
    return cert.fingerprint(hashes.SHA1())


# --- the two forms ------------------------------------------------------------------------


def test_default_form_is_pbes2_aes256_pbkdf2_sha256_with_hmac_sha256(modern: bytes) -> None:
    algs = _encrypted_algorithms(modern)
    assert len(algs) == 2  # the certificates (encryptedData) and the key bag
    for alg in algs:
        assert alg["algorithm"].native == "pbes2"
        kdf = alg["parameters"]["key_derivation_func"]
        assert kdf["algorithm"].native == "pbkdf2"
        assert kdf["parameters"]["prf"]["algorithm"].native == "sha256"
        assert kdf["parameters"]["iteration_count"].native == ITERATIONS == 600_000
        assert alg["parameters"]["encryption_scheme"]["algorithm"].native == "aes256_cbc"
    mac = _pfx(modern)["mac_data"]
    assert mac["mac"]["digest_algorithm"]["algorithm"].native == "sha256"
    assert len(mac["mac"]["digest"].native) == 32
    # The MAC is as costly to test a guess against as the bags (cryptography writes 2,048).
    assert mac["iterations"].native == ITERATIONS
    assert len(mac["mac_salt"].native) == 16


def test_legacy_form_is_3des_with_sha1_mac(legacy: bytes) -> None:
    algs = _encrypted_algorithms(legacy)
    assert len(algs) == 2
    for alg in algs:
        assert alg["algorithm"].dotted == "1.2.840.113549.1.12.1.3"  # 3-key 3DES, SHA-1 KDF
        assert alg["parameters"]["iterations"].native == LEGACY_ITERATIONS == 2048
    mac = _pfx(legacy)["mac_data"]
    assert mac["mac"]["digest_algorithm"]["algorithm"].native == "sha1"
    assert mac["iterations"].native == LEGACY_ITERATIONS


def test_round_trip_through_cryptography(form: tuple[str, bytes], pki: PKI,
                                         alice: Identity) -> None:
    _, p12 = form
    loaded = pkcs12.load_pkcs12(p12, PASS)
    assert loaded.key is not None and loaded.cert is not None
    assert loaded.key.public_key() == alice.key.public_key()
    assert loaded.cert.certificate == alice.cert
    assert loaded.cert.friendly_name == b"Alice"
    assert [c.certificate for c in loaded.additional_certs] == [pki.inter, pki.root]


def test_round_trip_through_smimekit_loaders(form: tuple[str, bytes], alice: Identity) -> None:
    _, p12 = form
    assert smimekit.load_private_key(p12, PASS).public_key() == alice.key.public_key()
    assert alice.cert in smimekit.load_certificates(p12, PASS)


def test_wrong_passphrase_opens_nothing(form: tuple[str, bytes]) -> None:
    _, p12 = form
    with pytest.raises(ValueError):
        pkcs12.load_pkcs12(p12, b"correct horse battery staple")


def test_key_and_certificate_carry_the_same_local_key_id_and_name(
    form: tuple[str, bytes], pki: PKI, alice: Identity
) -> None:
    _, p12 = form
    bags = _bags(p12, PASS)
    keys = [b for b in bags if b["bag_id"].native == "pkcs8_shrouded_key_bag"]
    certs = {_cert_of(b): b for b in bags if b["bag_id"].native == "cert_bag"}
    assert len(keys) == 1 and set(certs) == {alice.cert, pki.inter, pki.root}
    assert _key_of(keys[0], PASS).public_key() == alice.key.public_key()
    expected = {"friendly_name": "Alice", "local_key_id": _sha1(alice.cert)}
    assert _attrs(keys[0]) == expected
    assert _attrs(certs[alice.cert]) == expected
    assert _attrs(certs[pki.inter]) == _attrs(certs[pki.root]) == {}


@pytest.mark.parametrize("legacy_form", [False, True], ids=["modern", "legacy"])
def test_non_ascii_passphrase_round_trips(fast: None, alice: Identity, legacy_form: bool
                                          ) -> None:
    # The MAC key is derived from the passphrase as a BMPString (RFC 7292 B.1): a wrong
    # conversion would show here as a MAC failure.
    passphrase = "pässwörd 🔑 ключ".encode()
    p12 = pkcs12_bytes(alice.key, alice.cert, [], passphrase,
                       friendly_name="Alice", legacy=legacy_form)
    assert pkcs12.load_pkcs12(p12, passphrase).cert.certificate == alice.cert
    with pytest.raises(ValueError):
        pkcs12.load_pkcs12(p12, b"passwort")


def test_p256_key_round_trips(fast: None, bob: Identity) -> None:
    for legacy_form in (False, True):
        p12 = pkcs12_bytes(bob.key, bob.cert, [], PASS,
                           friendly_name="Bob", legacy=legacy_form)
        loaded = pkcs12.load_pkcs12(p12, PASS)
        assert loaded.key.public_key() == bob.key.public_key()


# --- key history --------------------------------------------------------------------------


def test_older_keys_ride_along_each_paired_with_its_certificate(
    fast: None, pki: PKI, alice: Identity
) -> None:
    old = [pki.person("alice", "rsa2048", fresh_key=True) for _ in range(2)]
    p12 = pkcs12_bytes(alice.key, alice.cert, [pki.inter], PASS,
                       friendly_name="Alice", extra=[(o.key, o.cert) for o in old])
    bags = _bags(p12, PASS)
    keys = [b for b in bags if b["bag_id"].native == "pkcs8_shrouded_key_bag"]
    certs = {_cert_of(b): b for b in bags if b["bag_id"].native == "cert_bag"}
    assert len(keys) == 3
    assert set(certs) == {alice.cert, pki.inter, *(o.cert for o in old)}
    for person in (alice, *old):
        (bag,) = [b for b in keys
                  if _key_of(b, PASS).public_key() == person.key.public_key()]
        assert _attrs(bag) == _attrs(certs[person.cert])
        assert _attrs(bag)["local_key_id"] == _sha1(person.cert)
    names = sorted(_attrs(b)["friendly_name"] for b in keys)
    until = f"Alice (until {old[0].cert.not_valid_after_utc:%Y-%m-%d})"
    assert names == ["Alice", until, f"{until[:-1]}, serial {old[1].cert.serial_number:x})"]
    # Readers that take one key take the current one.
    loaded = pkcs12.load_pkcs12(p12, PASS)
    assert loaded.cert.certificate == alice.cert
    assert smimekit.load_private_key(p12, PASS).public_key() == alice.key.public_key()


def test_legacy_form_refuses_a_key_history(alice: Identity, bob: Identity) -> None:
    with pytest.raises(CAError, match="one key"):
        pkcs12_bytes(alice.key, alice.cert, [], PASS, friendly_name="Alice",
                     legacy=True, extra=[(bob.key, bob.cert)])


# --- bad input ----------------------------------------------------------------------------


def test_bad_input_is_refused_with_a_clear_message(pki: PKI, alice: Identity,
                                                   bob: Identity) -> None:
    x25519 = pki.person("xavier", "x25519")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"passphrase": b""}, "non-empty passphrase"),
        ({"passphrase": "text"}, "non-empty passphrase"),
        ({"passphrase": b"\xff\xfe"}, "UTF-8"),
        ({"friendly_name": " "}, "friendly name"),
        ({"cert": bob.cert}, "does not match the certificate"),
        ({"key": x25519.key, "cert": x25519.cert}, "X25519PrivateKey cannot be exported"),
        ({"extra": [(bob.key, alice.cert)]}, "extra pair 1: the private key does not match"),
        ({"extra": [(alice.key, alice.cert)]}, "more than once"),
        ({"chain": [pki.inter, b"root"]}, "chain entry 2"),
        ({"cert": alice.cert.public_bytes(serialization.Encoding.PEM)}, "expected a cert"),
    ]
    for change, message in cases:
        args: dict[str, Any] = {"key": alice.key, "cert": alice.cert, "chain": [],
                                "passphrase": PASS, "friendly_name": "Alice", **change}
        with pytest.raises(CAError, match=message):
            pkcs12_bytes(**args)


# --- gpgsm's PKCS#12 KDF ------------------------------------------------------------------


def _gpgsm_string_to_key(salt: bytes, iterations: int, pw: bytes, length: int) -> bytes:
    """A line-by-line port of string_to_key() in GnuPG 2.2.40 sm/minip12.c, bug included."""
    buf_i = bytearray(salt[i % len(salt)] for i in range(64))
    j = 0
    for _ in range(0, 64, 2):
        buf_i += bytes([0, pw[j] if j < len(pw) else 0])
        j += 1
        if j > len(pw):  # the trailing zero is included
            j = 0
    key = b""
    while True:
        h = hashlib.sha1(bytes([1]) * 64 + bytes(buf_i)).digest()
        for _ in range(1, iterations):
            h = hashlib.sha1(h).digest()
        key += h[:length - len(key)]
        if len(key) == length:
            return key
        num_b1 = int.from_bytes((h * 4)[:64], "big") + 1
        for i in (0, 64):
            num_ij = (int.from_bytes(buf_i[i:i + 64], "big") + num_b1) % (1 << 512)
            n = (num_ij.bit_length() + 7) // 8  # gcry_mpi_print(GCRYMPI_FMT_USG): no zeros
            buf_i[i:i + n] = num_ij.to_bytes(n, "big")


def test_gpgsm_kdf_safe_is_exactly_when_gpgsms_3des_key_is_right() -> None:
    # One iteration keeps this fast; the flaw is in the step between rounds, not the count.
    pw = b"interop-secret"
    unsafe = 0
    for n in range(4000):
        salt = n.to_bytes(8, "big")
        right = export._pkcs12_kdf(hashlib.sha1, _bmp(pw), salt, 1, 1, 24)
        agrees = _gpgsm_string_to_key(salt, 1, pw, 24) == right
        assert gpgsm_kdf_safe(salt, 1, pw) is agrees, salt.hex()
        unsafe += not agrees
    # About 2 salts in 256 (a leading zero byte in either of the two blocks).
    assert 10 <= unsafe <= 60


def test_gpgsm_gets_the_known_bad_salt_wrong() -> None:
    assert not gpgsm_kdf_safe(GPGSM_BAD_SALT, 2048, PASS)
    right = export._pkcs12_kdf(hashlib.sha1, _bmp(PASS), GPGSM_BAD_SALT, 2048, 1, 24)
    wrong = _gpgsm_string_to_key(GPGSM_BAD_SALT, 2048, PASS, 24)
    assert wrong[:20] == right[:20] and wrong[20:] != right[20:]
    # Only the 24-byte 3DES key takes a second round: the 8-byte IV is right.
    assert gpgsm_kdf_safe(bytes(8), 2048, PASS)


def test_legacy_files_always_have_gpgsm_safe_salts(alice: Identity) -> None:
    for _ in range(40):
        p12 = pkcs12_bytes(alice.key, alice.cert, [], PASS, friendly_name="Alice",
                           legacy=True)
        salts = export._tripledes_params(p12)
        assert len(salts) == 2
        assert all(gpgsm_kdf_safe(s, n, PASS) for s, n in salts)


def test_legacy_export_retries_with_fresh_salts(monkeypatch: pytest.MonkeyPatch,
                                                alice: Identity) -> None:
    seen: list[bytes] = []

    def unlucky_three_times(p12: bytes, passphrase: bytes) -> bool:
        seen.append(p12)
        return len(seen) > 3

    monkeypatch.setattr(export, "pkcs12_gpgsm_kdf_safe", unlucky_three_times)
    pkcs12_bytes(alice.key, alice.cert, [], PASS, friendly_name="Alice",
                 legacy=True)
    assert len(seen) == 4
    assert len({s for p12 in seen for s, _ in export._tripledes_params(p12)}) == 8


def test_legacy_export_gives_up_rather_than_write_a_file_gpgsm_cannot_read(
    monkeypatch: pytest.MonkeyPatch, alice: Identity
) -> None:
    monkeypatch.setattr(export, "pkcs12_gpgsm_kdf_safe", lambda p12, pw: False)
    with pytest.raises(CAError, match="gpgsm-safe"):
        pkcs12_bytes(alice.key, alice.cert, [], PASS, friendly_name="Alice",
                     legacy=True)


def test_default_form_has_nothing_for_gpgsm_to_get_wrong(modern: bytes) -> None:
    assert export._tripledes_params(modern) == []
    assert pkcs12_gpgsm_kdf_safe(modern, PASS)


# --- Apple configuration profile ----------------------------------------------------------


def _profile(p12: bytes, pki: PKI, passphrase: str | None = PASS.decode()) -> dict[str, Any]:
    data = mobileconfig_bytes(p12, passphrase=passphrase, identifier="org.example.smime.alice",
                              display_name="Alice's S/MIME", organization="Example Org",
                              ca_certs=[pki.root, pki.inter])
    assert data.startswith(b"<?xml")
    profile = plistlib.loads(data)
    assert isinstance(profile, dict)
    return profile


def test_mobileconfig_installs_the_identity_and_the_ca(legacy: bytes, pki: PKI,
                                                       alice: Identity) -> None:
    profile = _profile(legacy, pki)
    assert profile["PayloadType"] == "Configuration"
    assert profile["PayloadVersion"] == 1
    assert profile["PayloadIdentifier"] == "org.example.smime.alice"
    assert profile["PayloadDisplayName"] == "Alice's S/MIME"
    assert profile["PayloadOrganization"] == "Example Org"
    payloads = profile["PayloadContent"]
    assert [p["PayloadType"] for p in payloads] == [
        "com.apple.security.pkcs12", "com.apple.security.root", "com.apple.security.pkcs1"]
    uuids = [profile["PayloadUUID"], *(p["PayloadUUID"] for p in payloads)]
    assert len(set(uuids)) == 4
    assert all(uuid.UUID(u).version == 4 for u in uuids)
    ids = [p["PayloadIdentifier"] for p in payloads]
    assert len(set(ids)) == 3 and all(i.startswith("org.example.smime.alice.") for i in ids)
    assert all(p["PayloadVersion"] == 1 for p in payloads)

    identity, root, inter = payloads
    assert identity["PayloadContent"] == legacy
    assert identity["Password"] == PASS.decode()
    loaded = pkcs12.load_pkcs12(identity["PayloadContent"], identity["Password"].encode())
    assert loaded.cert.certificate == alice.cert
    assert loaded.key.public_key() == alice.key.public_key()
    assert x509.load_der_x509_certificate(root["PayloadContent"]) == pki.root
    assert x509.load_der_x509_certificate(inter["PayloadContent"]) == pki.inter
    assert root["PayloadDisplayName"] == "Test Root"


def test_mobileconfig_without_password_leaves_it_to_the_device(legacy: bytes,
                                                              pki: PKI) -> None:
    (identity, *_) = _profile(legacy, pki, passphrase=None)["PayloadContent"]
    assert "Password" not in identity


def test_mobileconfig_refuses_bad_input(fast: None, legacy: bytes, pki: PKI,
                                        alice: Identity, bob: Identity) -> None:
    history = pkcs12_bytes(alice.key, alice.cert, [], PASS, friendly_name="Alice",
                           extra=[(bob.key, bob.cert)])
    certs_only = pkcs12.serialize_key_and_certificates(
        None, None, None, [alice.cert],
        serialization.BestAvailableEncryption(PASS))
    good: dict[str, Any] = {"p12": legacy, "passphrase": PASS.decode(),
                            "identifier": "org.example.smime", "display_name": "S/MIME",
                            "organization": "Example", "ca_certs": [pki.root]}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"passphrase": "wrong"}, "does not open"),
        ({"passphrase": ""}, "empty profile password"),
        ({"p12": b"not a pkcs12 file"}, "not a PKCS#12 file"),
        ({"p12": history}, "holds 2 keys"),
        ({"p12": certs_only}, "holds no private key"),
        ({"identifier": ""}, "reverse-DNS"),
        ({"identifier": "org example"}, "reverse-DNS"),
        ({"display_name": ""}, "display name"),
        ({"ca_certs": [b"pem"]}, "CA entry 1"),
    ]
    for change, message in cases:
        with pytest.raises(CAError, match=message):
            mobileconfig_bytes(**{**good, **change})


# --- PEM ----------------------------------------------------------------------------------


def test_pem_chain_round_trips_in_order(pki: PKI, alice: Identity) -> None:
    pem = pem_chain([alice.cert, pki.inter, pki.root])
    assert pem.count(b"-----BEGIN CERTIFICATE-----") == 3
    assert x509.load_pem_x509_certificates(pem) == [alice.cert, pki.inter, pki.root]


def test_pem_chain_refuses_nothing_or_not_certificates(alice: Identity) -> None:
    with pytest.raises(CAError, match="no certificates"):
        pem_chain([])
    with pytest.raises(CAError, match="entry 2"):
        pem_chain([alice.cert, "cert"])
