"""ML-DSA / ML-KEM private keys in their PKCS#8 forms (RFC 9881 6, RFC 9935 6).

The files are the IETF hackathon's (``pqc-cms/hackathon-certs-r5/ossl35``, OpenSSL 3.5; and
``hackathon-cms-v3/cryptonext``) and the RFC 9936 example (``lamps-cms-kyber-example``), read
from the shared corpus (``tests/corpus/vectors.py``).
"""

from __future__ import annotations

import base64

import pytest
from corpus.vectors import corpus_path
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import mldsa, mlkem

from smimekit.errors import KeyLoadError, PassphraseError
from smimekit.keys.load import load_certificate, load_private_key

R5 = ("pqc-cms", "hackathon-certs-r5", "ossl35")
KINDS = {
    "ml-dsa-44-2.16.840.1.101.3.4.3.17": mldsa.MLDSA44PrivateKey,
    "ml-dsa-65-2.16.840.1.101.3.4.3.18": mldsa.MLDSA65PrivateKey,
    "ml-dsa-87-2.16.840.1.101.3.4.3.19": mldsa.MLDSA87PrivateKey,
    "ml-kem-768-2.16.840.1.101.3.4.4.2": mlkem.MLKEM768PrivateKey,
    "ml-kem-1024-2.16.840.1.101.3.4.4.3": mlkem.MLKEM1024PrivateKey,
}


@pytest.mark.parametrize("stem", sorted(KINDS))
def test_seed_and_both_forms_load_to_the_same_key(stem: str) -> None:
    seed = load_private_key(corpus_path(*R5, f"{stem}_seed_priv.der"))
    both = load_private_key(corpus_path(*R5, f"{stem}_both_priv.der"))
    assert isinstance(seed, KINDS[stem])
    assert isinstance(both, KINDS[stem])
    assert seed.private_bytes_raw() == both.private_bytes_raw()  # type: ignore[union-attr]


@pytest.mark.parametrize("stem", sorted(KINDS))
def test_expanded_only_form_is_refused_with_the_reason(stem: str) -> None:
    with pytest.raises(KeyLoadError, match="only the expanded key"):
        load_private_key(corpus_path(*R5, f"{stem}_expandedkey_priv.der"))


@pytest.mark.parametrize("stem", ["ml-kem-768-2.16.840.1.101.3.4.4.2",
                                  "ml-kem-1024-2.16.840.1.101.3.4.4.3"])
def test_ml_kem_key_matches_its_certificate(stem: str) -> None:
    key = load_private_key(corpus_path(*R5, f"{stem}_seed_priv.der"))
    cert = load_certificate(corpus_path(*R5, f"{stem}_ee.der"))
    assert key.public_key() == cert.public_key()


def test_both_form_in_pem_loads(tmp_path) -> None:  # type: ignore[no-untyped-def]
    der = corpus_path(*R5, "ml-dsa-65-2.16.840.1.101.3.4.3.18_both_priv.der").read_bytes()
    pem = base64.encodebytes(der)
    path = tmp_path / "key.pem"
    path.write_bytes(b"-----BEGIN PRIVATE KEY-----\n" + pem + b"-----END PRIVATE KEY-----\n")
    assert isinstance(load_private_key(path), mldsa.MLDSA65PrivateKey)


def test_both_form_with_a_foreign_expanded_key_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    der = bytearray(
        corpus_path(*R5, "ml-kem-768-2.16.840.1.101.3.4.4.2_both_priv.der").read_bytes()
    )
    der[-100] ^= 1  # inside the expanded key's copy of the encapsulation key
    with pytest.raises(KeyLoadError, match="seed and the expanded key differ"):
        load_private_key(bytes(der))


@pytest.mark.parametrize(
    ("parts", "name"),
    [
        ((*R5, "ml-kem-512-2.16.840.1.101.3.4.4.1_seed_priv.der"), "ML-KEM-512"),
        ((*R5, "slh-dsa-sha2-128f-2.16.840.1.101.3.4.3.21_priv.der"), "SLH-DSA"),
        (("pqc-cms", "hackathon-cms-v3", "cryptonext", "artifacts_cms_v3",
          "HASH-ML-DSA-65-2.16.840.1.101.3.4.3.33_expandedkey_priv.der"), "HashML-DSA"),
        (("pqc-cms", "lamps-cms-kyber-example", "ML-KEM-512-both.priv"), "ML-KEM-512"),
    ],
)
def test_algorithms_without_a_primitive_are_named_as_unsupported(
    parts: tuple[str, ...], name: str
) -> None:
    with pytest.raises(KeyLoadError, match=f"{name} private keys are not supported"):
        load_private_key(corpus_path(*parts))


def test_generated_keys_round_trip_through_pkcs8_pem() -> None:
    for cls in (mldsa.MLDSA65PrivateKey, mlkem.MLKEM1024PrivateKey):
        key = cls.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.BestAvailableEncryption(b"secret"))
        loaded = load_private_key(pem, b"secret")
        assert loaded.private_bytes_raw() == key.private_bytes_raw()  # type: ignore[union-attr]


def _pbes2(inner: bytes, password: bytes, iterations: int = 2048) -> bytes:
    """An EncryptedPrivateKeyInfo as OpenSSL 3.5 writes it (PBES2: PBKDF2-HMAC-SHA256,
    AES-256-CBC) around ``inner``, built from primitives: OpenSSL 3.0 cannot read PQ keys."""
    import os

    from asn1crypto import algos
    from asn1crypto import keys as asn1_keys
    from cryptography.hazmat.primitives import hashes, padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

    salt, iv = os.urandom(16), os.urandom(16)
    key = PBKDF2HMAC(hashes.SHA256(), 32, salt, iterations).derive(password)
    padder = padding.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    padded = padder.update(inner) + padder.finalize()
    return asn1_keys.EncryptedPrivateKeyInfo({
        "encryption_algorithm": {
            "algorithm": "pbes2",
            "parameters": {
                "key_derivation_func": {"algorithm": "pbkdf2", "parameters": {
                    "salt": algos.Pbkdf2Salt(name="specified", value=salt),
                    "iteration_count": iterations,
                    "prf": {"algorithm": "sha256"}}},
                "encryption_scheme": {"algorithm": "aes256_cbc", "parameters": iv},
            },
        },
        "encrypted_data": encryptor.update(padded) + encryptor.finalize(),
    }).dump()


@pytest.mark.parametrize("pem", [False, True])
def test_encrypted_both_form_loads(tmp_path, pem: bool) -> None:  # type: ignore[no-untyped-def]
    inner = corpus_path(*R5, "ml-kem-768-2.16.840.1.101.3.4.4.2_both_priv.der").read_bytes()
    der = _pbes2(inner, b"secret")
    data = der
    if pem:
        data = (b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n" + base64.encodebytes(der)
                + b"-----END ENCRYPTED PRIVATE KEY-----\n")
    key = load_private_key(data, b"secret")
    assert isinstance(key, mlkem.MLKEM768PrivateKey)
    expected = load_private_key(corpus_path(*R5, "ml-kem-768-2.16.840.1.101.3.4.4.2_seed_priv.der"))
    assert key.private_bytes_raw() == expected.private_bytes_raw()  # type: ignore[union-attr]
    with pytest.raises(PassphraseError, match="wrong passphrase"):
        load_private_key(data, b"not the passphrase")
    with pytest.raises(PassphraseError, match="passphrase is required"):
        load_private_key(data)


def test_encrypted_ml_kem_512_is_named_unsupported() -> None:
    inner = corpus_path(*R5, "ml-kem-512-2.16.840.1.101.3.4.4.1_seed_priv.der").read_bytes()
    with pytest.raises(KeyLoadError, match="ML-KEM-512 private keys are not supported"):
        load_private_key(_pbes2(inner, b"secret"), b"secret")
