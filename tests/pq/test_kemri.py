"""KEMRecipientInfo (RFC 9629) with ML-KEM (RFC 9936): what others wrote decrypts, what we
write has the RFC's structure and round-trips beside classical recipients, hostile input
fails with the one generic error.

Vectors (shared corpus, read at test time): ``pqc-cms/lamps-cms-kyber-example`` is the RFC 9936
worked example (github.com/lamps-wg/cms-kyber ``example/``); ``pqc-cms/hackathon-cms-v3/
cryptonext`` are CryptoNext's IETF hackathon messages (README.md of ``pqc-cms``).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import cms, core
from corpus.vectors import corpus_path
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap
from pki import PKI

from smimekit.cms import Cipher, RecipientOptions, decrypt_enveloped, encrypt_enveloped, kem
from smimekit.cms import recipients as recipients_module
from smimekit.cms.asn1 import KEMRecipientInfo
from smimekit.errors import (
    ASN1Error,
    DecryptionError,
    EncryptionError,
    KeyLoadError,
    NoRecipientError,
)
from smimekit.keys.load import load_certificate, load_private_key

PLAIN = b"Content-Type: text/plain\r\n\r\npost-quantum secret\r\n"
CN = ("pqc-cms", "hackathon-cms-v3", "cryptonext", "artifacts_cms_v3")
EXAMPLE = ("pqc-cms", "lamps-cms-kyber-example")
STEMS = ["ML-KEM-768-2.16.840.1.101.3.4.4.2", "ML-KEM-1024-2.16.840.1.101.3.4.4.3"]
VARIANTS = ["id-alg-hkdf-with-sha256", "id-alg-hkdf-with-sha512", "ukm", "auth"]


def _cn(name: str) -> Path:
    return corpus_path(*CN, name)


@pytest.mark.parametrize("stem", STEMS)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("with_cert", [True, False])
def test_cryptonext_kemri_messages_decrypt(stem: str, variant: str, with_cert: bool) -> None:
    key = load_private_key(_cn(f"{stem}_expandedkey_priv.der"))
    cert = load_certificate(_cn(f"{stem}_ee.der")) if with_cert else None
    out = decrypt_enveloped(_cn(f"{stem}_kemri_{variant}.der").read_bytes(), [(key, cert)])
    assert out.content == _cn("expected_plaintext.txt").read_bytes()
    assert out.recipient == f"kemri-{stem.split('-2.16')[0].lower()}"
    assert out.authenticated == (variant == "auth")


def test_cryptonext_ukm_is_the_one_the_readme_names() -> None:
    info = cms.ContentInfo.load(_cn(f"{STEMS[0]}_kemri_ukm.der").read_bytes())
    kemri = kem.parse(info["content"]["recipient_infos"][0])
    assert kemri["ukm"].native == _cn("ukm.txt").read_bytes()


@pytest.mark.parametrize("variant", VARIANTS)
def test_cryptonext_ml_kem_512_is_unsupported(pki: PKI, variant: str) -> None:
    stem = "ML-KEM-512-2.16.840.1.101.3.4.4.1"
    with pytest.raises(KeyLoadError, match="ML-KEM-512 private keys are not supported"):
        load_private_key(_cn(f"{stem}_expandedkey_priv.der"))
    # Another person's ML-KEM key finds no slot of its own in it.
    other = pki.person("kem-other", "mlkem768")
    with pytest.raises(NoRecipientError):
        decrypt_enveloped(_cn(f"{stem}_kemri_{variant}.der").read_bytes(),
                          [(other.key, None)])


def _hex(name: str) -> bytes:
    return bytes.fromhex("".join(corpus_path(*EXAMPLE, name).read_text().split()))


def _example_der() -> bytes:
    pem = corpus_path(*EXAMPLE, "ML-KEM-512.cms").read_text().splitlines()
    return base64.b64decode("".join(line for line in pem if not line.startswith("-----")))


def test_rfc9936_example_kdf_and_key_wrap_from_its_shared_secret() -> None:
    info = cms.ContentInfo.load(_example_der())
    kemri = kem.parse(info["content"]["recipient_infos"][0])
    assert kem.kem_name(kemri) == "ML-KEM-512"
    assert kemri["kemct"].native == _hex("ciphertext.txt")
    other_info = kem.CMSORIforKEMOtherInfo(
        {"wrap": kemri["wrap"], "kek_length": kemri["kek_length"].native})
    assert other_info.dump() == _hex("ori_info.txt")
    kek = kem._kek(_hex("shared_secret.txt"), "sha256", kemri["wrap"],
                   kemri["kek_length"].native, None)
    assert kek == _hex("kek.txt")
    assert kemri["encrypted_key"].native == _hex("encrypted_cek.txt")
    assert aes_key_unwrap(kek, kemri["encrypted_key"].native) == _hex("cek.txt")


class _ExampleKey:
    """Stands in for the example's ML-KEM-512 private key, which cryptography cannot load:
    decapsulating the example's ciphertext gives the example's shared secret."""

    def decapsulate(self, ciphertext: bytes) -> bytes:
        assert ciphertext == _hex("ciphertext.txt")
        return _hex("shared_secret.txt")


def test_rfc9936_example_content_decrypts_with_its_shared_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(recipients_module, "is_ml_kem_key", lambda k: isinstance(k, _ExampleKey))
    monkeypatch.setattr(kem, "key_algorithm_name", lambda k: "ML-KEM-512")
    out = decrypt_enveloped(_example_der(), [(_ExampleKey(), None)])  # type: ignore[list-item]
    assert out.content == corpus_path(*EXAMPLE, "plaintext.txt").read_bytes()
    assert out.cipher == "aes128-gcm"


def test_rfc9936_example_key_and_certificate_are_unsupported() -> None:
    with pytest.raises(KeyLoadError, match="ML-KEM-512 private keys are not supported"):
        load_private_key(corpus_path(*EXAMPLE, "ML-KEM-512-both.priv"))
    cert = load_certificate(corpus_path(*EXAMPLE, "ML-KEM-512.pem"))
    with pytest.raises(EncryptionError, match="ML-KEM-512 keys are not supported"):
        encrypt_enveloped(PLAIN, [cert])


# -- what we write ---------------------------------------------------------------------------


def _kemris(der: bytes) -> list[KEMRecipientInfo]:
    body = cms.ContentInfo.load(der)["content"]
    return [kem.parse(i) for i in body["recipient_infos"] if kem.is_kem_info(i)]


@pytest.mark.parametrize("cipher", list(Cipher))
def test_mixed_pq_and_classical_recipients_each_decrypt(pki: PKI, cipher: Cipher) -> None:
    people = [pki.person("kem-768", "mlkem768"), pki.person("kem-1024", "mlkem1024"),
              pki.person("kem-rsa", "rsa2048"), pki.person("kem-p256", "p256")]
    der = encrypt_enveloped(PLAIN, [p.cert for p in people], cipher=cipher)
    body = cms.ContentInfo.load(der)["content"]
    assert sorted(i.name for i in body["recipient_infos"]) == ["kari", "ktri", "ori", "ori"]
    if not cipher.authenticated:
        assert body["version"].native == "v3"  # RFC 5652 6.1: ori present
    for person in people:
        assert decrypt_enveloped(der, [(person.key, person.cert)]).content == PLAIN
        assert decrypt_enveloped(der, [(person.key, None)]).content == PLAIN


@pytest.mark.parametrize(("kind", "oid"), [("mlkem768", "2.16.840.1.101.3.4.4.2"),
                                           ("mlkem1024", "2.16.840.1.101.3.4.4.3")])
def test_kemri_we_write_follows_rfc9936(pki: PKI, kind: str, oid: str) -> None:
    who = pki.person(f"kem-shape-{kind}", kind)
    (kemri,) = _kemris(encrypt_enveloped(PLAIN, [who.cert]))
    assert kemri["version"].native == 0
    assert kemri["rid"].name == "issuer_and_serial_number"
    assert kemri["kem"]["algorithm"].dotted == oid
    assert isinstance(kemri["kem"]["parameters"], core.Void)
    assert len(kemri["kemct"].native) == (1088 if kind == "mlkem768" else 1568)
    assert kemri["kdf"]["algorithm"].dotted == "1.2.840.113549.1.9.16.3.28"  # HKDF-SHA256
    assert isinstance(kemri["kdf"]["parameters"], core.Void)
    assert kemri["kek_length"].native == 32
    assert kemri["wrap"]["algorithm"].dotted == "2.16.840.1.101.3.4.1.45"  # aes256-wrap
    assert isinstance(kemri["ukm"], core.Void)
    assert len(kemri["encrypted_key"].native) == 40  # a 32-byte CEK wrapped


def test_subject_key_identifier_rid(pki: PKI) -> None:
    who = pki.person("kem-ski", "mlkem768")
    der = encrypt_enveloped(PLAIN, [who.cert], options=RecipientOptions(use_ski=True))
    (kemri,) = _kemris(der)
    assert kemri["rid"].name == "subject_key_identifier"
    assert decrypt_enveloped(der, [(who.key, who.cert)]).content == PLAIN


def test_ml_dsa_certificate_cannot_be_encrypted_to(pki: PKI) -> None:
    signer = pki.person("kem-dsa", "mldsa65")
    with pytest.raises(EncryptionError, match="cannot receive encrypted mail"):
        encrypt_enveloped(PLAIN, [signer.cert])


def test_wrong_ml_kem_key_finds_no_slot(pki: PKI) -> None:
    who, other = pki.person("kem-a", "mlkem768"), pki.person("kem-b", "mlkem1024")
    der = encrypt_enveloped(PLAIN, [who.cert])
    with pytest.raises(NoRecipientError):
        decrypt_enveloped(der, [(other.key, other.cert)])


# -- hostile input ---------------------------------------------------------------------------


def _rewrite(der: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    """``der`` with its first KEMRecipientInfo rebuilt after ``change`` on its fields."""
    info = cms.ContentInfo.load(der)
    body = info["content"]
    infos = list(body["recipient_infos"])
    kemri = kem.parse(infos[0])
    fields: dict[str, Any] = {name: kemri[name] for name, *_ in KEMRecipientInfo._fields}
    change(fields)
    fields = {k: v for k, v in fields.items() if not isinstance(v, core.Void)}
    infos[0] = cms.RecipientInfo(name="ori", value=cms.OtherRecipientInfo(
        {"ori_type": kem.ID_ORI_KEM,
         "ori_value": core.Any.load(KEMRecipientInfo(fields).dump())}))
    body["recipient_infos"] = cms.RecipientInfos(infos)
    return info.dump(force=True)


def _set(name: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(fields: dict[str, Any]) -> None:
        fields[name] = value
    return change


HOSTILE: dict[str, Callable[[dict[str, Any]], None]] = {
    "ciphertext one byte short": lambda f: f.update(kemct=f["kemct"].native[:-1]),
    "ciphertext one byte long": lambda f: f.update(kemct=f["kemct"].native + b"\0"),
    "ciphertext altered": lambda f: f.update(
        kemct=bytes([f["kemct"].native[0] ^ 1]) + f["kemct"].native[1:]),
    "KEM OID of ML-KEM-1024": _set("kem", {"algorithm": "2.16.840.1.101.3.4.4.3"}),
    "KEM OID of ML-KEM-512": _set("kem", {"algorithm": "2.16.840.1.101.3.4.4.1"}),
    "kekLength 16 with aes256-wrap": _set("kek_length", 16),
    "kekLength 65535": _set("kek_length", 65535),
    "wrap aes128 with kekLength 32": _set("wrap", {"algorithm": "2.16.840.1.101.3.4.1.5"}),
    "HKDF-SHA512 instead of SHA-256": _set(
        "kdf", {"algorithm": "1.2.840.113549.1.9.16.3.30"}),
    "ukm added": _set("ukm", b"not what the sender used"),
    "encrypted key altered": lambda f: f.update(
        encrypted_key=bytes(8) + f["encrypted_key"].native[8:]),
    "encrypted key truncated": lambda f: f.update(
        encrypted_key=f["encrypted_key"].native[:-8]),
}


@pytest.mark.parametrize("cipher", [Cipher.AES256_GCM, Cipher.AES256_CBC])
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_kemri_gives_the_one_generic_error(pki: PKI, case: str, cipher: Cipher) -> None:
    who = pki.person("kem-hostile", "mlkem768")
    classical = pki.person("kem-hostile-rsa", "rsa2048")
    der = _rewrite(encrypt_enveloped(PLAIN, [who.cert], cipher=cipher), HOSTILE[case])
    with pytest.raises(DecryptionError) as exc:
        decrypt_enveloped(der, [(who.key, who.cert)])
    # The same type and text as a classical recipient's failure: no oracle.
    wrong = encrypt_enveloped(PLAIN, [classical.cert], cipher=cipher)
    with pytest.raises(DecryptionError) as classical_exc:
        decrypt_enveloped(wrong, [(pki.person("kem-hostile-rsa2", "rsa2048").key,
                                   classical.cert)])
    assert type(exc.value) is type(classical_exc.value) is DecryptionError
    assert str(exc.value) == str(classical_exc.value)


def test_truncated_pq_message_is_malformed(pki: PKI) -> None:
    who = pki.person("kem-trunc", "mlkem768")
    der = encrypt_enveloped(PLAIN, [who.cert])
    for cut in (10, 200, len(der) // 2, len(der) - 1):
        with pytest.raises((ASN1Error, DecryptionError)):
            decrypt_enveloped(der[:cut], [(who.key, who.cert)])


def test_kemri_version_other_than_zero_is_malformed(pki: PKI) -> None:
    who = pki.person("kem-version", "mlkem768")
    der = _rewrite(encrypt_enveloped(PLAIN, [who.cert]), _set("version", 1))
    with pytest.raises(ASN1Error, match="KEMRecipientInfo: version must be 0"):
        decrypt_enveloped(der, [(who.key, who.cert)])


def test_enveloped_data_with_ori_must_be_version_3(pki: PKI) -> None:
    who = pki.person("kem-edver", "mlkem768")
    der = encrypt_enveloped(PLAIN, [who.cert], cipher=Cipher.AES256_CBC)
    info = cms.ContentInfo.load(der)
    info["content"]["version"] = "v2"
    with pytest.raises(ASN1Error, match="version must be 3"):
        decrypt_enveloped(info.dump(force=True), [(who.key, who.cert)])




def test_every_single_bit_flip_in_the_kemri_is_refused(pki: PKI) -> None:
    """One bit flipped in each byte of the KEMRecipientInfo in turn (AES-GCM: the content is
    authenticated, the recipient slot is not): every change ends in an SmimeError, never in
    plaintext."""
    from smimekit.errors import SmimeError

    who = pki.person("kem-sweep", "mlkem768")
    der = encrypt_enveloped(PLAIN, [who.cert], cipher=Cipher.AES256_GCM)
    (kemri,) = _kemris(der)
    raw = kemri.dump()
    start = der.index(raw)
    released = []
    for position in range(start, start + len(raw)):
        tampered = bytearray(der)
        tampered[position] ^= 1 << (position % 8)
        try:
            out = decrypt_enveloped(bytes(tampered), [(who.key, who.cert)])
        except SmimeError:
            continue
        released.append((position - start, out.content[:16]))
    assert released == []
