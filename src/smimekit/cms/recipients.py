"""RecipientInfo: wrap the content-encryption key for a recipient, and unwrap it.

KeyTransRecipientInfo (RSA PKCS#1 v1.5, RSAES-OAEP; RFC 5652 6.2.1, RFC 8017),
KeyAgreeRecipientInfo (ephemeral-static ECDH on P-256/384/521, RFC 5753; X25519/X448,
RFC 8418) with AES key wrap (RFC 3394), and KEMRecipientInfo for ML-KEM (RFC 9629, RFC 9936;
in :mod:`smimekit.cms.kem`).

Unwrapping never says why it failed: a wrong key, bad padding or a failed key unwrap all
yield a random key of the right length (RFC 3218 section 2.3), so the failure surfaces only
as one generic :class:`~smimekit.errors.DecryptionError` after content decryption.

The private key may be a software key or one that stays in a PKCS#11 token
(:mod:`smimekit.keys.token_keys`: ``RSAPrivateKey`` / ``EllipticCurvePrivateKey`` subclasses
whose ``decrypt`` / ``exchange`` run in the token). A token key raises the same
``ValueError`` for a bad padding (it checks PKCS#1 v1.5 padding itself, over raw RSA), so the
random-key path above is the same; a token that fails raises
:class:`~smimekit.errors.KeyLoadError`, which passes through (it does not depend on the
ciphertext, and the caller must retry later rather than report a message that does not
decrypt).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any

from asn1crypto import algos, cms, core, keys
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, x448, x25519
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from smimekit.cms import kem
from smimekit.cms.algorithms import hash_algorithm
from smimekit.cms.asn1 import ECCCMSSharedInfo
from smimekit.cms.keyinfo import issuer_and_serial, matches_issuer_serial, matches_ski
from smimekit.dn import display_name
from smimekit.errors import EncryptionError, LegacyAlgorithmError, UnsupportedError
from smimekit.keys.kinds import certificate_public_key, is_ml_kem_key, unsupported_pq_algorithm

WRAP_OIDS = {
    "aes128_wrap": ("2.16.840.1.101.3.4.1.5", 16),
    "aes192_wrap": ("2.16.840.1.101.3.4.1.25", 24),
    "aes256_wrap": ("2.16.840.1.101.3.4.1.45", 32),
}
_WRAP_BY_OID = {oid: (name, size) for name, (oid, size) in WRAP_OIDS.items()}

# kari scheme name -> (kdf kind, hash name)
_SCHEMES = {
    "dh_single_pass_std_dh_sha1kdf": ("x963", "sha1"),
    "dh_single_pass_std_dh_sha224kdf": ("x963", "sha224"),
    "dh_single_pass_std_dh_sha256kdf": ("x963", "sha256"),
    "dh_single_pass_std_dh_sha384kdf": ("x963", "sha384"),
    "dh_single_pass_std_dh_sha512kdf": ("x963", "sha512"),
    "dh_single_pass_cofactor_dh_sha1kdf": ("x963", "sha1"),
    "dh_single_pass_cofactor_dh_sha224kdf": ("x963", "sha224"),
    "dh_single_pass_cofactor_dh_sha256kdf": ("x963", "sha256"),
    "dh_single_pass_cofactor_dh_sha384kdf": ("x963", "sha384"),
    "dh_single_pass_cofactor_dh_sha512kdf": ("x963", "sha512"),
    "dh_single_pass_std_dh_hkdf_sha256": ("hkdf", "sha256"),
    "dh_single_pass_std_dh_hkdf_sha384": ("hkdf", "sha384"),
    "dh_single_pass_std_dh_hkdf_sha512": ("hkdf", "sha512"),
}
# What we write: the X9.63 KDF hash sized to the curve (RFC 5753 section 8), HKDF for X curves.
_EC_KDF = {"secp256r1": "sha256", "secp384r1": "sha384", "secp521r1": "sha512"}


@dataclass(frozen=True)
class RecipientOptions:
    """How to wrap for RSA (OAEP or v1.5) and ECDH recipients."""

    oaep: bool = False
    oaep_hash: str = "sha256"
    ecdh_kdf: str | None = None  # X9.63 KDF hash; None = sized to the curve
    use_ski: bool = False


def wrap_algorithm_for(cek_len: int) -> str:
    return {16: "aes128_wrap", 24: "aes192_wrap"}.get(cek_len, "aes256_wrap")


def build(cert: x509.Certificate, cek: bytes, options: RecipientOptions) -> cms.RecipientInfo:
    """A RecipientInfo carrying ``cek`` for ``cert``'s public key.

    Raises:
        EncryptionError: the certificate's key cannot receive encrypted mail.
    """
    try:
        key = certificate_public_key(cert)
    except (ValueError, UnsupportedAlgorithm):
        missing = unsupported_pq_algorithm(cert.public_key_algorithm_oid.dotted_string)
        what = f"{missing} keys are not supported" if missing else "its public key is unusable"
        raise EncryptionError(f"cannot encrypt to {display_name(cert.subject)}: {what}") from None
    if is_ml_kem_key(key):
        return kem.build(cert, key, cek, use_ski=options.use_ski)
    if isinstance(key, rsa.RSAPublicKey):
        try:
            return _build_ktri(cert, key, cek, options)
        except ValueError:
            raise EncryptionError(
                f"cannot encrypt to {display_name(cert.subject)}: its RSA key is unusable"
            ) from None
    if isinstance(key, ec.EllipticCurvePublicKey | x25519.X25519PublicKey | x448.X448PublicKey):
        return _build_kari(cert, key, cek, options)
    raise EncryptionError(
        f"cannot encrypt to {display_name(cert.subject)}: {type(key).__name__} keys cannot"
        " receive encrypted mail"
    )


@functools.cache
def _oaep_algorithm(hash_name: str) -> bytes:
    """The RSAES-OAEP AlgorithmIdentifier (MGF1 with the same hash), DER: built once per
    hash, since asn1crypto takes about 2 ms to build it (a tenth of a small message's cost)."""
    return cms.KeyEncryptionAlgorithm(
        {
            "algorithm": "rsaes_oaep",
            "parameters": algos.RSAESOAEPParams(
                {
                    "hash_algorithm": {"algorithm": hash_name},
                    "mask_gen_algorithm": {
                        "algorithm": "mgf1",
                        "parameters": {"algorithm": hash_name},
                    },
                }
            ),
        }
    ).dump()


def _rid_ktri(cert: x509.Certificate, use_ski: bool) -> tuple[cms.RecipientIdentifier, str]:
    if use_ski:
        from smimekit.cms.keyinfo import subject_key_id

        return cms.RecipientIdentifier({"subject_key_identifier": subject_key_id(cert)}), "v2"
    return cms.RecipientIdentifier({"issuer_and_serial_number": issuer_and_serial(cert)}), "v0"


def _build_ktri(
    cert: x509.Certificate, key: rsa.RSAPublicKey, cek: bytes, options: RecipientOptions
) -> cms.RecipientInfo:
    rid, version = _rid_ktri(cert, options.use_ski)
    if options.oaep:
        h = hash_algorithm(options.oaep_hash)
        alg = cms.KeyEncryptionAlgorithm.load(_oaep_algorithm(options.oaep_hash))
        encrypted = key.encrypt(cek, padding.OAEP(padding.MGF1(h), h, None))
    else:
        alg = cms.KeyEncryptionAlgorithm({"algorithm": "rsaes_pkcs1v15", "parameters": core.Null()})
        encrypted = key.encrypt(cek, padding.PKCS1v15())
    return cms.RecipientInfo(
        name="ktri",
        value=cms.KeyTransRecipientInfo(
            {
                "version": version,
                "rid": rid,
                "key_encryption_algorithm": alg,
                "encrypted_key": encrypted,
            }
        ),
    )


def _shared_info(wrap_der: bytes, ukm: bytes | None, key_len: int) -> bytes:
    info: dict[str, Any] = {
        "key_info": algos.AlgorithmIdentifier.load(wrap_der),
        "supp_pub_info": (key_len * 8).to_bytes(4, "big"),
    }
    if ukm is not None:
        info["entity_u_info"] = ukm
    return ECCCMSSharedInfo(info).dump()


def _kdf(kind: str, hash_name: str, secret: bytes, shared_info: bytes, length: int) -> bytes:
    h = hash_algorithm(hash_name, allow_legacy=True)  # SHA-1 X9.63 KDF is OpenSSL's default
    if kind == "hkdf":
        # RFC 8418 section 2.2: no salt, the shared secret as IKM, SharedInfo as info.
        return HKDF(algorithm=h, length=length, salt=None, info=shared_info).derive(secret)
    return X963KDF(algorithm=h, length=length, sharedinfo=shared_info).derive(secret)


def _build_kari(
    cert: x509.Certificate, key: Any, cek: bytes, options: RecipientOptions
) -> cms.RecipientInfo:
    wrap_name = wrap_algorithm_for(len(cek))
    wrap_oid, wrap_len = WRAP_OIDS[wrap_name]
    wrap_der = algos.AlgorithmIdentifier({"algorithm": wrap_oid}).dump()
    if isinstance(key, ec.EllipticCurvePublicKey):
        eph: Any = ec.generate_private_key(key.curve)
        secret = eph.exchange(ec.ECDH(), key)
        point = eph.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        # RFC 5753 section 3.1.1: id-ecPublicKey, parameters absent (the curve is the
        # recipient's).
        originator = keys.PublicKeyInfo({"algorithm": {"algorithm": "ec"}, "public_key": point})
        hash_name = options.ecdh_kdf or _EC_KDF.get(key.curve.name, "sha256")
        scheme, kind = f"dh_single_pass_std_dh_{hash_name}kdf", "x963"
    else:
        is_x25519 = isinstance(key, x25519.X25519PublicKey)
        eph = x25519.X25519PrivateKey.generate() if is_x25519 else x448.X448PrivateKey.generate()
        secret = eph.exchange(key)
        raw = eph.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        originator = keys.PublicKeyInfo(
            {"algorithm": {"algorithm": "x25519" if is_x25519 else "x448"}, "public_key": raw}
        )
        hash_name = "sha256" if is_x25519 else "sha512"
        scheme, kind = f"dh_single_pass_std_dh_hkdf_{hash_name}", "hkdf"
    kek = _kdf(kind, hash_name, secret, _shared_info(wrap_der, None, wrap_len), wrap_len)
    if options.use_ski:
        from smimekit.cms.keyinfo import subject_key_id

        rid = cms.KeyAgreementRecipientIdentifier(
            {"r_key_id": {"subject_key_identifier": subject_key_id(cert)}}
        )
    else:
        rid = cms.KeyAgreementRecipientIdentifier(
            {"issuer_and_serial_number": issuer_and_serial(cert)}
        )
    kari = cms.KeyAgreeRecipientInfo(
        {
            "version": "v3",
            "originator": cms.OriginatorIdentifierOrKey({"originator_key": originator}),
            "key_encryption_algorithm": {
                "algorithm": scheme,
                "parameters": core.Any.load(wrap_der),
            },
            "recipient_encrypted_keys": [{"rid": rid, "encrypted_key": aes_key_wrap(kek, cek)}],
        }
    )
    return cms.RecipientInfo(name="kari", value=kari)


# -- unwrapping -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A recipient slot that one of our keys may open."""

    key: PrivateKeyTypes
    info: cms.RecipientInfo
    encrypted_key: cms.RecipientEncryptedKey | None  # for kari: our slot
    exact: bool  # matched by certificate, not only by key type
    description: str
    kemri: Any = None  # for id-ori-kem: the parsed KEMRecipientInfo


def candidates(
    infos: list[cms.RecipientInfo],
    keypairs: list[tuple[PrivateKeyTypes, x509.Certificate | None]],
) -> list[Candidate]:
    """Every (key, recipient slot) pair worth trying, exact certificate matches first."""
    found: list[Candidate] = []
    for key, cert in keypairs:
        for info in infos:
            if info.name == "ktri" and isinstance(key, rsa.RSAPrivateKey):
                ktri = info.chosen
                if cert is not None:
                    exact = _rid_matches(ktri["rid"], cert)
                else:
                    exact = _rid_names_key(ktri["rid"], key)
                if cert is None or exact:
                    alg = ktri["key_encryption_algorithm"]["algorithm"].native
                    found.append(Candidate(key, info, None, exact, f"ktri-{alg}"))
            elif info.name == "kari" and _is_agreement_key(key):
                kari = info.chosen
                for rek in kari["recipient_encrypted_keys"]:
                    exact = cert is not None and _kari_rid_matches(rek["rid"], cert)
                    if cert is None or exact:
                        scheme = kari["key_encryption_algorithm"]["algorithm"].native
                        found.append(Candidate(key, info, rek, exact, f"kari-{scheme}"))
            elif is_ml_kem_key(key) and kem.is_kem_info(info):
                kemri = kem.parse(info)
                exact = cert is not None and kem.rid_matches(kemri, cert)
                # Without a certificate, only slots of the key's own parameter set.
                if exact or (cert is None and kem.fits_key(kemri, key)):
                    description = f"kemri-{kem.kem_name(kemri).lower()}"
                    found.append(Candidate(key, info, None, exact, description, kemri))
    found.sort(key=lambda c: not c.exact)
    return found


def _rid_names_key(rid: cms.RecipientIdentifier, key: rsa.RSAPrivateKey) -> bool:
    """Without a certificate, a subject key identifier (RFC 5280 4.2.1.2 method 1) still
    names the key for certain."""
    if rid.name != "subject_key_identifier":
        return False
    return bool(
        rid.chosen.native == x509.SubjectKeyIdentifier.from_public_key(key.public_key()).digest
    )


def _is_agreement_key(key: PrivateKeyTypes) -> bool:
    return isinstance(
        key, ec.EllipticCurvePrivateKey | x25519.X25519PrivateKey | x448.X448PrivateKey
    )


def _rid_matches(rid: cms.RecipientIdentifier, cert: x509.Certificate) -> bool:
    if rid.name == "issuer_and_serial_number":
        return matches_issuer_serial(rid.chosen, cert)
    return matches_ski(rid.chosen.native, cert)


def _kari_rid_matches(rid: cms.KeyAgreementRecipientIdentifier, cert: x509.Certificate) -> bool:
    if rid.name == "issuer_and_serial_number":
        return matches_issuer_serial(rid.chosen, cert)
    return matches_ski(rid.chosen["subject_key_identifier"].native, cert)


def unwrap(candidate: Candidate, key_len: int) -> bytes | None:
    """The content-encryption key from one slot.

    For a slot matched by our certificate, any failure yields a random key (RFC 3218 2.3),
    so the failure surfaces later as the same generic error. For a slot only guessed from
    the key type (no certificate given), a failure means "not ours": None, try the next.
    """
    try:
        if candidate.kemri is not None:
            cek = kem.unwrap(candidate.kemri, candidate.key)
        elif candidate.info.name == "ktri":
            cek = _unwrap_ktri(candidate.info.chosen, candidate.key)
        else:
            assert candidate.encrypted_key is not None
            cek = _unwrap_kari(
                candidate.info.chosen, candidate.encrypted_key, candidate.key, key_len
            )
    except (LegacyAlgorithmError, UnsupportedError):
        raise
    except (ValueError, TypeError, InvalidUnwrap, KeyError, IndexError):
        cek = None
    if cek is None or len(cek) != key_len:
        return os.urandom(key_len) if candidate.exact else None
    return cek


def _unwrap_ktri(ktri: cms.KeyTransRecipientInfo, key: PrivateKeyTypes) -> bytes:
    assert isinstance(key, rsa.RSAPrivateKey)
    alg = ktri["key_encryption_algorithm"]
    name = alg["algorithm"].native
    encrypted = ktri["encrypted_key"].native
    if name == "rsaes_oaep":
        params = alg["parameters"]
        h = hash_algorithm(params["hash_algorithm"]["algorithm"].native, allow_legacy=True)
        mgf_params = params["mask_gen_algorithm"]["parameters"]
        mh = hash_algorithm(mgf_params["algorithm"].native, allow_legacy=True)
        source = params["p_source_algorithm"]
        if source["algorithm"].native != "p_specified":  # RFC 8017 A.2.1: the only one
            raise UnsupportedError(f"unsupported OAEP label source {source['algorithm'].dotted}")
        label = source["parameters"].native or None
        return key.decrypt(encrypted, padding.OAEP(padding.MGF1(mh), h, label))
    if name in ("rsaes_pkcs1v15", "rsa"):
        return key.decrypt(encrypted, padding.PKCS1v15())
    raise UnsupportedError(f"unsupported key transport algorithm {name}")


_ORIGINATOR_OID = {
    "ec": "1.2.840.10045.2.1",
    "x25519": "1.3.101.110",
    "x448": "1.3.101.111",
}


def _key_kind(key: PrivateKeyTypes) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return "ec"
    if isinstance(key, x25519.X25519PrivateKey):
        return "x25519"
    return "x448" if isinstance(key, x448.X448PrivateKey) else "other"


def _unwrap_kari(
    kari: cms.KeyAgreeRecipientInfo,
    rek: cms.RecipientEncryptedKey,
    key: PrivateKeyTypes,
    key_len: int,
) -> bytes:
    alg = kari["key_encryption_algorithm"]
    scheme = alg["algorithm"].native
    if scheme not in _SCHEMES:
        raise UnsupportedError(f"unsupported key agreement scheme {scheme}")
    kind, hash_name = _SCHEMES[scheme]
    wrap_der = alg["parameters"].dump()
    wrap_oid = algos.AlgorithmIdentifier.load(wrap_der)["algorithm"].dotted
    if wrap_oid not in _WRAP_BY_OID:
        raise UnsupportedError(f"unsupported key wrap algorithm {wrap_oid}")
    wrap_len = _WRAP_BY_OID[wrap_oid][1]
    originator = kari["originator"]
    if originator.name != "originator_key":
        raise UnsupportedError(
            "static-static key agreement (originator certificate) is not supported"
        )
    # The ephemeral key's algorithm must be our key's (RFC 5753 3.1.1, RFC 8418 2): the
    # identifier is not covered by the tag, so a changed one must not pass unnoticed.
    declared = originator.chosen["algorithm"]["algorithm"].dotted
    if declared != _ORIGINATOR_OID.get(_key_kind(key)):
        raise ValueError("originator key algorithm does not fit the recipient key")
    point = originator.chosen["public_key"].native
    if isinstance(point, dict):  # asn1crypto may parse an EC point into a dict
        point = originator.chosen["public_key"].contents[1:]
    if isinstance(key, ec.EllipticCurvePrivateKey):
        peer: Any = ec.EllipticCurvePublicKey.from_encoded_point(key.curve, bytes(point))
        secret = key.exchange(ec.ECDH(), peer)
    elif isinstance(key, x25519.X25519PrivateKey):
        _canonical(bytes(point), _X25519_P, "X25519")
        secret = key.exchange(x25519.X25519PublicKey.from_public_bytes(bytes(point)))
    elif isinstance(key, x448.X448PrivateKey):
        _canonical(bytes(point), _X448_P, "X448")
        secret = key.exchange(x448.X448PublicKey.from_public_bytes(bytes(point)))
    else:  # pragma: no cover - filtered by candidates()
        raise ValueError("not an agreement key")
    ukm = kari["ukm"].native if kari["ukm"].native is not None else None
    kek = _kdf(kind, hash_name, secret, _shared_info(wrap_der, ukm, wrap_len), wrap_len)
    return aes_key_unwrap(kek, rek["encrypted_key"].native)


_X25519_P = 2**255 - 19
_X448_P = 2**448 - 2**224 - 1


def _canonical(point: bytes, prime: int, name: str) -> None:
    """Refuse a Montgomery u-coordinate that is not below the field's prime.

    RFC 7748 section 5 makes X25519 ignore the top bit of the last byte and reduce values of
    p and above, so 2**255 - p encodings (and 2**448 - p for X448) give the same shared
    secret as a canonical one. The ephemeral key is outside the AEAD tag: without this check
    a changed message (the top bit flipped) would still decrypt. A sender following RFC 7748
    never writes one.
    """
    if int.from_bytes(point, "little") >= prime:
        raise ValueError(f"the originator's {name} key is not canonically encoded"
                         " (u-coordinate not below the field prime)")


_ = hashes  # re-exported for type checkers of callers
