"""load_pkcs12_identities: every key of a PKCS#12 file (a key history), MAC first, no tracebacks."""

from __future__ import annotations

import hashlib
import hmac
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from asn1crypto import algos, core
from asn1crypto import cms as asn1_cms
from asn1crypto import keys as asn1_keys
from asn1crypto import pkcs12 as asn1_pkcs12
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from cryptography.hazmat.primitives.serialization import pkcs12
from pki import PKI, Identity

from smimekit.ca import export
from smimekit.ca.export import pkcs12_bytes
from smimekit.errors import KeyLoadError, PassphraseError
from smimekit.keys import pkcs12 as pkcs12_module
from smimekit.keys.load import load_pkcs12
from smimekit.keys.pkcs12 import load_pkcs12_identities, pkcs12_kdf

PASS = b"correct horse battery staple"
OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")


@pytest.fixture(scope="module")
def history(pki: PKI) -> list[Identity]:
    """Carol's encryption keys, oldest first: RSA, then P-256, then the current RSA key."""
    return [pki.person("carol", "rsa2048", fresh_key=True),
            pki.person("carol", "p256", fresh_key=True),
            pki.person("carol", "rsa2048", fresh_key=True)]


def _history_p12(pki: PKI, history: list[Identity], iterations: int = 2048) -> bytes:
    """Our CA's default form; 2,048 iterations unless a test is about the real count."""
    old1, old2, current = history
    return pkcs12_bytes(current.key, current.cert, [pki.inter, pki.root], PASS,
                        friendly_name="Carol", extra=[(old1.key, old1.cert),
                                                      (old2.key, old2.cert)],
                        iterations=iterations)


def _der(cert: object) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)  # type: ignore[attr-defined,no-any-return]


# --- a key history from our CA -----------------------------------------------------------


def test_history_file_yields_every_key_paired_with_its_certificate(
    pki: PKI, history: list[Identity]
) -> None:
    found = load_pkcs12_identities(_history_p12(pki, history), PASS)
    old1, old2, current = history
    assert len(found.identities) == 3
    for (key, cert), person in zip(found.identities, [current, old1, old2], strict=True):
        assert key.public_key() == person.key.public_key()
        assert cert == person.cert
    assert found.certificates == [pki.inter, pki.root]


@pytest.mark.slow  # 600,000 rounds: about 0.7 s to write and 0.8 s to read
def test_history_file_at_the_real_iteration_count_loads(
    pki: PKI, history: list[Identity]
) -> None:
    p12 = _history_p12(pki, history, iterations=export.ITERATIONS)
    found = load_pkcs12_identities(p12, PASS.decode())
    assert [cert for _key, cert in found.identities] == [history[2].cert, history[0].cert,
                                                         history[1].cert]


def test_load_pkcs12_still_takes_only_the_current_key(
    pki: PKI, history: list[Identity]
) -> None:
    key, cert, _extra = load_pkcs12(_history_p12(pki, history), PASS)
    assert key is not None and key.public_key() == history[2].key.public_key()
    assert cert == history[2].cert


def test_legacy_export_with_3des_and_sha1_mac_loads(pki: PKI, history: list[Identity]) -> None:
    person = history[1]
    p12 = pkcs12_bytes(person.key, person.cert, [pki.inter], PASS, friendly_name="Carol",
                       legacy=True)
    found = load_pkcs12_identities(p12, PASS)
    assert [(k.public_key(), c) for k, c in found.identities] == [
        (person.key.public_key(), person.cert)]
    assert found.certificates == [pki.inter]


def test_file_from_cryptography_loads(history: list[Identity]) -> None:
    person = history[0]
    p12 = pkcs12.serialize_key_and_certificates(
        b"carol", person.key, person.cert, None,  # type: ignore[arg-type]
        serialization.BestAvailableEncryption(PASS))
    ((key, cert),) = load_pkcs12_identities(p12, PASS).identities
    assert key.public_key() == person.key.public_key() and cert == person.cert


# --- files written by OpenSSL ------------------------------------------------------------


@pytest.fixture(scope="module")
def openssl_pems(tmp_path_factory: pytest.TempPathFactory, history: list[Identity]) -> Path:
    home = tmp_path_factory.mktemp("openssl-p12")
    (home / "key.pem").write_bytes(history[0].pem_key())
    (home / "cert.pem").write_bytes(history[0].pem_cert())
    return home


def _openssl_p12(home: Path, name: str, *args: str, passout: str = "pass:pw") -> bytes:
    out = home / f"{name}.p12"
    subprocess.run([str(OPENSSL), "pkcs12", "-export", "-inkey", str(home / "key.pem"),
                    "-in", str(home / "cert.pem"), "-passout", passout, "-out", str(out),
                    *args], check=True, capture_output=True, timeout=30)
    return out.read_bytes()


@needs_openssl
@pytest.mark.interop
@pytest.mark.filterwarnings("error")  # e.g. cryptography's two-key 3DES deprecation
@pytest.mark.parametrize("args", [
    pytest.param((), id="default-aes256-pbkdf2"),
    pytest.param(("-legacy",), id="legacy-3des-key-rc2-40-certs"),
    pytest.param(("-keypbe", "DES-EDE3-CBC", "-certpbe", "AES-128-CBC"), id="pbes2-3des"),
    pytest.param(("-legacy", "-keypbe", "PBE-SHA1-2DES", "-certpbe", "PBE-SHA1-RC2-128"),
                 id="2key-3des-rc2-128"),
    pytest.param(("-legacy", "-keypbe", "PBE-SHA1-RC2-40", "-certpbe", "PBE-SHA1-RC4-40"),
                 id="rc2-40-key-rc4-40-certs"),
    pytest.param(("-keypbe", "NONE", "-certpbe", "NONE"), id="unencrypted-bags"),
    pytest.param(("-macalg", "sha512"), id="sha512-mac"),
])
def test_openssl_files_load(openssl_pems: Path, history: list[Identity],
                            args: tuple[str, ...]) -> None:
    p12 = _openssl_p12(openssl_pems, "-".join(args) or "default", *args)
    ((key, cert),) = load_pkcs12_identities(p12, b"pw").identities
    assert key.public_key() == history[0].key.public_key()
    assert cert == history[0].cert
    with pytest.raises(PassphraseError, match="wrong passphrase"):
        load_pkcs12_identities(p12, b"not it")


@needs_openssl
@pytest.mark.interop
def test_openssl_empty_passphrase_opens_with_none_or_empty(openssl_pems: Path) -> None:
    p12 = _openssl_p12(openssl_pems, "empty", passout="pass:")
    for passphrase in (None, b"", ""):
        assert len(load_pkcs12_identities(p12, passphrase).identities) == 1
    with pytest.raises(PassphraseError):
        load_pkcs12_identities(p12, b"pw")


@needs_openssl
@pytest.mark.interop
def test_openssl_utf8_passphrase(openssl_pems: Path) -> None:
    p12 = _openssl_p12(openssl_pems, "utf8", passout="pass:pässwörd €")
    assert len(load_pkcs12_identities(p12, "pässwörd €").identities) == 1


@needs_openssl
@pytest.mark.interop
def test_openssl_file_without_mac_loads_and_a_wrong_passphrase_still_fails(
    openssl_pems: Path,
) -> None:
    p12 = _openssl_p12(openssl_pems, "nomac", "-nomac")
    assert len(load_pkcs12_identities(p12, b"pw").identities) == 1
    with pytest.raises(PassphraseError, match="wrong passphrase"):
        load_pkcs12_identities(p12, b"not it")


# --- RFC 9579 PBMAC1 -----------------------------------------------------------------------


def _with_pbmac1(p12: bytes, passphrase: bytes) -> bytes:
    pfx = asn1_pkcs12.Pfx.load(p12)
    salt = os.urandom(16)
    key = PBKDF2HMAC(hashes.SHA256(), 32, salt, 2048).derive(passphrase)
    mac = crypto_hmac.HMAC(key, hashes.SHA256())
    mac.update(bytes(pfx["auth_safe"]["content"]))
    params = pkcs12_module._Pbmac1Params({
        "key_derivation_func": {"algorithm": "pbkdf2", "parameters": {
            "salt": algos.Pbkdf2Salt(name="specified", value=salt),
            "iteration_count": 2048, "key_length": 32, "prf": {"algorithm": "sha256"}}},
        "message_auth_scheme": {"algorithm": "sha256"},
    })
    return asn1_pkcs12.Pfx({
        "version": "v3",
        "auth_safe": asn1_cms.ContentInfo.load(pfx["auth_safe"].dump()),
        "mac_data": {"mac": {"digest_algorithm": {"algorithm": "1.2.840.113549.1.5.14",
                                                  "parameters": core.Any.load(params.dump())},
                             "digest": mac.finalize()},
                     "mac_salt": b"NOT USED", "iterations": 1},
    }).dump()


def test_pbmac1_file_loads_and_checks_the_passphrase(
    pki: PKI, history: list[Identity]
) -> None:
    p12 = _with_pbmac1(_history_p12(pki, history), PASS)
    # An independent reader agrees the PBMAC1 is right (cryptography's OpenSSL reads RFC 9579).
    assert pkcs12.load_pkcs12(p12, PASS).key is not None
    assert len(load_pkcs12_identities(p12, PASS).identities) == 3
    with pytest.raises(PassphraseError, match="wrong passphrase"):
        load_pkcs12_identities(p12, b"not it")


# --- pairing -------------------------------------------------------------------------------


def _key_bag(identity: Identity, local_key_id: bytes | None) -> asn1_pkcs12.SafeBag:
    der = identity.key.private_bytes(serialization.Encoding.DER,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
    return _bag("key_bag", asn1_keys.PrivateKeyInfo.load(der), local_key_id)


def _cert_bag(cert: object, local_key_id: bytes | None) -> asn1_pkcs12.SafeBag:
    value = asn1_pkcs12.CertBag({"cert_id": "x509",
                                 "cert_value": asn1_x509.Certificate.load(_der(cert))})
    return _bag("cert_bag", value, local_key_id)


def _bag(kind: str, value: object, local_key_id: bytes | None) -> asn1_pkcs12.SafeBag:
    bag: dict[str, object] = {"bag_id": kind, "bag_value": value}
    if local_key_id is not None:
        bag["bag_attributes"] = [{"type": "local_key_id", "values": [local_key_id]}]
    return asn1_pkcs12.SafeBag(bag)


def _pfx(bags: list[asn1_pkcs12.SafeBag], passphrase: bytes | None = PASS,
         iterations: int = 2048) -> bytes:
    """A PFX with one plain safe, and an HMAC-SHA256 MAC unless ``passphrase`` is None."""
    safe = asn1_pkcs12.SafeContents(bags).dump()
    auth_safe = asn1_pkcs12.AuthenticatedSafe(
        [asn1_cms.ContentInfo({"content_type": "data", "content": safe})]).dump()
    pfx: dict[str, object] = {"version": "v3",
                              "auth_safe": {"content_type": "data", "content": auth_safe}}
    if passphrase is not None:
        salt = os.urandom(16)
        bmp = passphrase.decode().encode("utf-16-be") + b"\x00\x00"
        key = pkcs12_kdf(hashlib.sha256, bmp, salt, min(iterations, 2048), 3, 32)
        pfx["mac_data"] = {"mac": {"digest_algorithm": {"algorithm": "sha256"},
                                   "digest": hmac.new(key, auth_safe, "sha256").digest()},
                           "mac_salt": salt, "iterations": iterations}
    return asn1_pkcs12.Pfx(pfx).dump()


def test_keys_without_local_key_ids_are_paired_by_public_key(
    pki: PKI, history: list[Identity]
) -> None:
    old1, old2, current = history
    p12 = _pfx([_cert_bag(pki.inter, None), _cert_bag(old2.cert, None),
                _key_bag(current, None), _cert_bag(current.cert, None),
                _key_bag(old2, None), _key_bag(old1, None)])
    found = load_pkcs12_identities(p12, PASS)
    assert [cert for _key, cert in found.identities] == [current.cert, old2.cert, None]
    assert found.certificates == [pki.inter]


def test_local_key_id_naming_a_foreign_certificate_is_not_trusted(
    history: list[Identity],
) -> None:
    old1, _old2, current = history
    # The localKeyId points at old1's certificate; only the public key can be believed.
    p12 = _pfx([_key_bag(current, b"id"), _cert_bag(old1.cert, b"id"),
                _cert_bag(current.cert, b"other")])
    ((_key, cert),) = load_pkcs12_identities(p12, PASS).identities
    assert cert == current.cert


def test_file_with_certificates_only_has_no_identities(pki: PKI) -> None:
    found = load_pkcs12_identities(_pfx([_cert_bag(pki.root, None)]), PASS)
    assert found.identities == [] and found.certificates == [pki.root]


# --- passphrases and hostile files --------------------------------------------------------


def test_wrong_and_missing_passphrase(pki: PKI, history: list[Identity]) -> None:
    p12 = _history_p12(pki, history)
    with pytest.raises(PassphraseError, match="wrong passphrase"):
        load_pkcs12_identities(p12, b"wrong")
    with pytest.raises(PassphraseError, match="a passphrase is required"):
        load_pkcs12_identities(p12, None)


def test_tampered_mac_is_a_passphrase_error(pki: PKI,
                                            history: list[Identity]) -> None:
    pfx = asn1_pkcs12.Pfx.load(_history_p12(pki, history))
    digest = pfx["mac_data"]["mac"]["digest"].native
    tampered = pfx.dump().replace(digest, bytes([digest[0] ^ 1]) + digest[1:])
    with pytest.raises(PassphraseError, match="integrity check failed"):
        load_pkcs12_identities(tampered, PASS)


def test_tampered_content_never_decrypts(pki: PKI,
                                         history: list[Identity]) -> None:
    p12 = bytearray(_history_p12(pki, history))
    p12[len(p12) // 2] ^= 0x01  # inside an encrypted safe: only the MAC can tell
    with pytest.raises(KeyLoadError):
        load_pkcs12_identities(bytes(p12), PASS)


def test_truncated_files_fail_cleanly(history: list[Identity]) -> None:
    p12 = _pfx([_key_bag(history[0], b"1"), _cert_bag(history[0].cert, b"1")])
    for length in [0, 1, 2, 10, *range(20, len(p12) - 1, 97), len(p12) - 1]:
        with pytest.raises(KeyLoadError):
            load_pkcs12_identities(p12[:length], PASS)


@pytest.mark.parametrize("data", [
    b"\x30\x03\x02\x01\x03", b"\x00" * 64, b"-----BEGIN CERTIFICATE-----\n",
    random.Random(300).randbytes(300),  # fixed: every xdist worker must collect the same ids
    b"\x30\x80" + b"\x30\x80" * 2000,
])
def test_garbage_is_a_key_load_error(data: bytes) -> None:
    with pytest.raises(KeyLoadError) as caught:
        load_pkcs12_identities(data, PASS)
    assert caught.type is KeyLoadError and "PKCS#12" in str(caught.value)


def test_more_than_64_bags_are_refused(pki: PKI) -> None:
    with pytest.raises(KeyLoadError, match="more than 64 bags"):
        load_pkcs12_identities(_pfx([_cert_bag(pki.root, None)] * 65, None), None)


def test_huge_iteration_count_is_refused_before_any_work(history: list[Identity]) -> None:
    p12 = _pfx([_key_bag(history[0], None)], iterations=2**31 - 1)
    with pytest.raises(KeyLoadError, match="iterations"):
        load_pkcs12_identities(p12, PASS)


def test_total_work_is_bounded(pki: PKI, history: list[Identity],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pkcs12_module, "_MAX_WORK", 10_000)
    with pytest.raises(KeyLoadError, match="too long"):
        load_pkcs12_identities(_history_p12(pki, history), PASS)


def test_unknown_mac_algorithm_is_named(history: list[Identity]) -> None:
    p12 = _pfx([_key_bag(history[0], None)])
    sha256_oid = core.ObjectIdentifier("2.16.840.1.101.3.4.2.1").dump()
    sha3_oid = core.ObjectIdentifier("2.16.840.1.101.3.4.2.8").dump()  # same length
    with pytest.raises(KeyLoadError, match="unsupported PKCS#12 MAC algorithm sha3_256"):
        load_pkcs12_identities(p12.replace(sha256_oid, sha3_oid), PASS)


def test_unknown_bag_encryption_is_named(pki: PKI,
                                         history: list[Identity]) -> None:
    aes256_oid = core.ObjectIdentifier("2.16.840.1.101.3.4.1.42").dump()
    ofb_oid = core.ObjectIdentifier("2.16.840.1.101.3.4.1.43").dump()  # AES-256-OFB
    p12 = _history_p12(pki, history)
    with pytest.raises(KeyLoadError, match="aes256_ofb is not supported"):
        load_pkcs12_identities(p12.replace(aes256_oid, ofb_oid), PASS)
