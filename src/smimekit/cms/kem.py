"""KEMRecipientInfo (RFC 9629) for ML-KEM-768/1024 recipients (RFC 9936).

The sender encapsulates to the recipient's ML-KEM key; the shared secret goes through a KDF
(HKDF, RFC 8619) whose info is the DER of CMSORIforKEMOtherInfo (the wrap algorithm, the KEK
length and the optional ukm), and the KEK wraps the content-encryption key with AES key wrap
(RFC 3394). The whole is an OtherRecipientInfo of type id-ori-kem, which makes an
EnvelopedData version 3 (RFC 5652 6.1).

What we write: HKDF-SHA256 and AES-256 key wrap (kekLength 32) for ML-KEM-768 and
ML-KEM-1024, the choices RFC 9936 section 3 requires implementations to support. We read
HKDF with SHA-256/384/512, AES-128/192/256 key wrap and a ukm.

Unwrapping never says why it failed (RFC 3218 2.3): a ciphertext of the wrong length, a KEM
that is not the key's, a kekLength that does not fit the wrap algorithm, or a failed key
unwrap all end as ``None`` here, and the caller substitutes a random key.
"""

from __future__ import annotations

from typing import Any

from asn1crypto import cms, core
from cryptography import x509
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from smimekit.cms.algorithms import hash_algorithm
from smimekit.cms.asn1 import (
    HKDF_OID_BY_HASH,
    HKDF_OIDS,
    ID_ORI_KEM,
    ML_KEM_OIDS,
    AlgorithmIdentifier,
    CMSORIforKEMOtherInfo,
    KEMRecipientInfo,
)
from smimekit.cms.keyinfo import issuer_and_serial, matches_issuer_serial, matches_ski
from smimekit.errors import UnsupportedError
from smimekit.keys.kinds import key_algorithm_name

_WRAP = {  # AES key wrap (RFC 3394 / RFC 3565): OID -> KEK length
    "2.16.840.1.101.3.4.1.5": 16,
    "2.16.840.1.101.3.4.1.25": 24,
    "2.16.840.1.101.3.4.1.45": 32,
}
_AES256_WRAP = "2.16.840.1.101.3.4.1.45"
_OID_BY_NAME = {name: oid for oid, name in ML_KEM_OIDS.items()}


def is_kem_info(info: cms.RecipientInfo) -> bool:
    """Whether ``info`` is an OtherRecipientInfo of type id-ori-kem."""
    return bool(info.name == "ori" and info.chosen["ori_type"].dotted == ID_ORI_KEM)


def parse(info: cms.RecipientInfo) -> KEMRecipientInfo:
    """The KEMRecipientInfo inside an id-ori-kem OtherRecipientInfo (parse errors are left
    to the caller's :func:`smimekit.cms.asn1.guard`)."""
    kemri = KEMRecipientInfo.load(info.chosen["ori_value"].dump())
    kemri.native  # noqa: B018  parse every field now: a defect is found here, not later
    return kemri


def kem_name(kemri: KEMRecipientInfo) -> str:
    """"ML-KEM-768"..., or the dotted OID of a KEM we do not know."""
    oid = kemri["kem"]["algorithm"].dotted
    return ML_KEM_OIDS.get(oid, oid)


def build(cert: x509.Certificate, key: Any, cek: bytes, *, use_ski: bool) -> cms.RecipientInfo:
    """An id-ori-kem RecipientInfo carrying ``cek`` for ``cert``'s ML-KEM key ``key``."""
    name = key_algorithm_name(key)
    if name not in _OID_BY_NAME:  # pragma: no cover - the caller dispatches ML-KEM keys only
        raise UnsupportedError(f"{name} cannot receive mail through KEMRecipientInfo")
    shared_secret, kemct = key.encapsulate()
    wrap = AlgorithmIdentifier({"algorithm": _AES256_WRAP})
    kek_length = _WRAP[_AES256_WRAP]
    kek = _kek(shared_secret, "sha256", wrap, kek_length, None)
    if use_ski:
        from smimekit.cms.keyinfo import subject_key_id

        rid = cms.RecipientIdentifier({"subject_key_identifier": subject_key_id(cert)})
    else:
        rid = cms.RecipientIdentifier({"issuer_and_serial_number": issuer_and_serial(cert)})
    kemri = KEMRecipientInfo(
        {
            "version": 0,  # RFC 9629 3: always 0
            "rid": rid,
            "kem": {"algorithm": _OID_BY_NAME[name]},  # parameters absent (RFC 9936 3)
            "kemct": kemct,
            "kdf": {"algorithm": HKDF_OID_BY_HASH["sha256"]},
            "kek_length": kek_length,
            "wrap": wrap,
            "encrypted_key": aes_key_wrap(kek, cek),
        }
    )
    return cms.RecipientInfo(
        name="ori",
        value=cms.OtherRecipientInfo(
            {"ori_type": ID_ORI_KEM, "ori_value": core.Any.load(kemri.dump())}
        ),
    )


def _kek(
    shared_secret: bytes,
    hash_name: str,
    wrap: AlgorithmIdentifier,
    kek_length: int,
    ukm: bytes | None,
) -> bytes:
    other: dict[str, Any] = {"wrap": wrap, "kek_length": kek_length}
    if ukm is not None:
        other["ukm"] = ukm
    info = CMSORIforKEMOtherInfo(other).dump()
    # RFC 9629 5: the shared secret is the IKM and CMSORIforKEMOtherInfo the info; HKDF
    # takes no salt here (RFC 9936 3 uses HKDF as RFC 8619 defines it, salt absent).
    return HKDF(algorithm=hash_algorithm(hash_name), length=kek_length, salt=None,
                info=info).derive(shared_secret)


def rid_matches(kemri: KEMRecipientInfo, cert: x509.Certificate) -> bool:
    rid = kemri["rid"]
    if rid.name == "issuer_and_serial_number":
        return matches_issuer_serial(rid.chosen, cert)
    return matches_ski(rid.chosen.native, cert)


def fits_key(kemri: KEMRecipientInfo, key: Any) -> bool:
    """Whether the slot's KEM is the one of ``key`` (ML-KEM-768 vs 1024)."""
    return kem_name(kemri) == key_algorithm_name(key)


def unwrap(kemri: KEMRecipientInfo, key: Any) -> bytes | None:
    """The content-encryption key from one KEMRecipientInfo, or None on any failure.

    Raises:
        UnsupportedError: a KDF other than HKDF (the only one RFC 9936 names); the message
            says which.
    """
    kdf_oid = kemri["kdf"]["algorithm"].dotted
    if kdf_oid not in HKDF_OIDS:
        raise UnsupportedError(f"unsupported KEMRecipientInfo key derivation {kdf_oid}")
    if not isinstance(kemri["kdf"]["parameters"], core.Void):  # RFC 8619 2: absent
        return None
    if kemri["version"].native != 0 or not fits_key(kemri, key):
        return None
    if not isinstance(kemri["kem"]["parameters"], core.Void):
        return None
    wrap = kemri["wrap"]
    kek_length = kemri["kek_length"].native
    if _WRAP.get(wrap["algorithm"].dotted) != kek_length:
        return None
    ukm = kemri["ukm"].native
    try:
        shared_secret = key.decapsulate(kemri["kemct"].native)
        kek = _kek(shared_secret, HKDF_OIDS[kdf_oid], wrap, kek_length, ukm)
        return aes_key_unwrap(kek, kemri["encrypted_key"].native)
    except (ValueError, TypeError, InvalidUnwrap):  # one generic failure (RFC 3218)
        return None
