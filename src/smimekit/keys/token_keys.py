"""Users' private keys kept inside a PKCS#11 token (the mail gateway's held keys).

:class:`TokenKeyring` is one session on a token (sharing the process's login with the CA's
:class:`~smimekit.keys.pkcs11.Pkcs11Signer`, :mod:`smimekit.keys.pkcs11`). It stores a
private key as a sensitive, non-extractable token object (:meth:`TokenKeyring.store`) and
opens one by its ``CKA_ID`` (:meth:`TokenKeyring.key`) as a :class:`TokenRSAKey` or
:class:`TokenECKey`: subclasses of ``cryptography``'s ``RSAPrivateKey`` and
``EllipticCurvePrivateKey`` whose operations run in the token. So the CMS layer takes them
wherever it takes a software key (``SignerSpec.key``, the key pairs of
``decrypt_enveloped``), and ``private_bytes`` / ``private_numbers`` refuse.

* RSA signing: ``CKM_SHA*_RSA_PKCS`` (or ``CKM_RSA_PKCS`` over a DigestInfo), PSS with
  ``CKM_SHA*_RSA_PKCS_PSS``; every signature is checked with the public key before it is
  returned (a token fault must not leak the key, nor a wrong signature leave).
* RSA decryption, PKCS#1 v1.5: raw RSA in the token (``CKM_RSA_X_509``), the padding checked
  here, so the token never tells a valid padding from a bad one; a bad one raises the same
  ``ValueError`` as ``cryptography`` does and the CMS layer goes on with a random key (RFC
  3218 2.3). Tokens without raw RSA use ``CKM_RSA_PKCS``, whose refusal is that ``ValueError``
  too. OAEP: ``CKM_RSA_PKCS_OAEP``; a token that refuses the OAEP parameters (SoftHSM 2.6 does
  OAEP with SHA-1 only) gets raw RSA and the OAEP decoding here (RFC 8017 7.1.2).
* EC: ECDH with ``CKM_ECDH1_DERIVE`` (no KDF; the shared secret comes out as a session object
  that is read and destroyed, and the CMS layer runs the KDF), ECDSA with ``CKM_ECDSA`` over a
  digest made here.
* Token trouble (token gone, session closed, key object deleted, not logged in) is a
  :class:`~smimekit.errors.KeyLoadError`, never a ``ValueError``: it does not depend on the
  ciphertext, and the gateway must answer 4xx (keep the mail) rather than report a message
  that does not decrypt.
"""

from __future__ import annotations

import hmac
import os
import secrets
import threading
from collections.abc import Callable
from typing import Any, NoReturn, Self, TypeVar

import pkcs11
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import _serialization, hashes, serialization
from cryptography.hazmat.primitives._asymmetric import AsymmetricPadding
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric import padding as _pad
from cryptography.hazmat.primitives.asymmetric import utils as asym_utils
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.utils import Buffer
from pkcs11 import KDF, MGF, Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11

from smimekit.cms import der
from smimekit.errors import KeyLoadError
from smimekit.keys.pkcs11 import (
    _close_quietly,
    _drop_login,
    _mechanisms,
    _name,
    _open_session,
    find_objects,
)

__all__ = ["TokenECKey", "TokenKeyring", "TokenRSAKey", "unkept"]

_T = TypeVar("_T")

_CURVE_OIDS: dict[str, str] = {
    "secp256r1": "1.2.840.10045.3.1.7",
    "secp384r1": "1.3.132.0.34",
    "secp521r1": "1.3.132.0.35",
}

def unkept(key: PrivateKeyTypes) -> str | None:
    """Why ``key`` cannot be kept in a token by :meth:`TokenKeyring.store`, or None when it
    can (RSA, and EC on P-256, P-384 or P-521)."""
    if isinstance(key, rsa.RSAPrivateKey) or (
            isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in _CURVE_OIDS):
        return None
    return (f"a {type(key).__name__} cannot be kept in the token (RSA and EC P-256, P-384,"
            " P-521 keys can)")


# PKCS#11 names of the hashes OAEP, PSS and the combined RSA signing mechanisms use.
_HASHES: dict[str, tuple[Mechanism, MGF, Mechanism | None, Mechanism | None]] = {
    # name: (hash mechanism, MGF1 with it, PKCS#1 v1.5 sign, PSS sign)
    "sha1": (Mechanism.SHA_1, MGF.SHA1, Mechanism.SHA1_RSA_PKCS, Mechanism.SHA1_RSA_PKCS_PSS),
    "sha224": (Mechanism.SHA224, MGF.SHA224, Mechanism.SHA224_RSA_PKCS,
               Mechanism.SHA224_RSA_PKCS_PSS),
    "sha256": (Mechanism.SHA256, MGF.SHA256, Mechanism.SHA256_RSA_PKCS,
               Mechanism.SHA256_RSA_PKCS_PSS),
    "sha384": (Mechanism.SHA384, MGF.SHA384, Mechanism.SHA384_RSA_PKCS,
               Mechanism.SHA384_RSA_PKCS_PSS),
    "sha512": (Mechanism.SHA512, MGF.SHA512, Mechanism.SHA512_RSA_PKCS,
               Mechanism.SHA512_RSA_PKCS_PSS),
}
# DigestInfo prefixes (RFC 8017 9.2 note 1), for CKM_RSA_PKCS over a digest made here.
_DIGEST_INFO = {
    "sha1": "3021300906052b0e03021a05000414",
    "sha224": "302d300d06096086480165030402040500041c",
    "sha256": "3031300d060960864801650304020105000420",
    "sha384": "3041300d060960864801650304020205000430",
    "sha512": "3051300d060960864801650304020305000440",
}

# What the token says when the ciphertext (not the token) is at fault; SoftHSM answers
# CKR_GENERAL_ERROR for a bad padding. Anything else is the token's trouble.
_TOKEN_TROUBLE = (
    p11.DeviceError, p11.DeviceMemory, p11.DeviceRemoved, p11.TokenNotPresent,
    p11.TokenNotRecognised, p11.SessionClosed, p11.SessionHandleInvalid,
    p11.UserNotLoggedIn, p11.KeyHandleInvalid, p11.ObjectHandleInvalid,
    p11.FunctionFailed, p11.FunctionRejected, p11.FunctionNotSupported, p11.OperationActive,
    p11.KeyTypeInconsistent, p11.MechanismInvalid,
    p11.PinExpired, p11.HostMemory,
)
_PARAMETERS_REFUSED = (p11.ArgumentsBad, p11.MechanismParamInvalid)


def _int(data: bytes | int) -> int:
    return data if isinstance(data, int) else int.from_bytes(data, "big")


def _bytes(value: int) -> bytes:
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


class TokenKeyring:
    """One session on the token labelled ``token_label`` for the keys held there.

    The login is the process's shared one (:mod:`smimekit.keys.pkcs11`); operations on the
    session are serialised (a PKCS#11 session runs one operation at a time). ``close`` it when
    done (the last user of the token's login logs out).

    Raises (constructor):
        PassphraseError: the user PIN is wrong, locked or expired.
        KeyLoadError: the module is missing or cannot be loaded, or the token is not there.
    """

    def __init__(self, module: str | os.PathLike[str], token_label: str, pin: str) -> None:
        self.token_label = token_label
        self._token, self._session, self._login = _open_session(
            module, token_label, pin, rw=True, error=KeyLoadError)
        try:
            self.mechanisms = _mechanisms(self._token)
        except Exception as exc:
            _close_quietly(self._session, self._login)
            raise KeyLoadError(f"cannot list the mechanisms of token {token_label!r}: "
                               f"{exc}") from None
        self._lock = threading.RLock()
        self._closed = False
        self._refused_oaep: set[str] = set()
        self._login_dropped = False
        self.failed = False
        """Set when the token failed (session or device trouble, a key object gone): the
        owner should close this keyring and open a new one."""

    # -- running things in the token ------------------------------------------------------

    def run(self, what: str, call: Callable[[], _T]) -> _T:
        """``call()`` under the session lock; token errors become KeyLoadError (and
        ``ValueError`` passes, for the callers that raise it on purpose)."""
        with self._lock:
            if self._closed:
                raise KeyLoadError(f"the session on token {self.token_label!r} is closed")
            try:
                return call()
            except p11.PKCS11Error as exc:
                self._trouble(what, exc)

    def _trouble(self, what: str, exc: p11.PKCS11Error) -> NoReturn:
        if not self.failed:
            self.failed = True
            # The token may have lost the login (reset, re-inserted, logged out): log out
            # and forget it, so that the next keyring logs in again rather than trusting it.
            self._login_dropped = True
            _drop_login(self._login)
        raise KeyLoadError(f"token {self.token_label!r} could not {what}: {_name(exc)}"
                           ) from None

    # -- storing and finding keys ---------------------------------------------------------

    def _find(self, key_id: bytes) -> list[pkcs11.Object]:
        return find_objects(self._session, {Attribute.CLASS: ObjectClass.PRIVATE_KEY,
                                            Attribute.ID: key_id})

    def holds(self, key_id: bytes) -> bool:
        """Whether the token has a private key object with ``CKA_ID`` ``key_id``."""
        return bool(self.run("search its objects", lambda: self._find(key_id)))

    def store(self, key: PrivateKeyTypes, key_id: bytes, label: str, *, sign: bool,
              decrypt: bool) -> bool:
        """Keep ``key`` in the token: private, sensitive, never extractable, allowed to
        ``sign`` and/or ``decrypt`` (RSA) / derive (EC). False when an object with that
        ``CKA_ID`` holds this very key already (nothing is written).

        The key's parts go to the token through ``C_CreateObject`` and nowhere else.

        Raises:
            KeyLoadError: a key type the token path does not take (RSA and EC P-256, P-384,
                P-521 only), another key under that ``CKA_ID``, or the token refuses.
        """
        template: dict[Attribute, Any] = {
            Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.TOKEN: True,
            Attribute.PRIVATE: True, Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False,
            Attribute.ID: key_id, Attribute.LABEL: label, Attribute.SIGN: sign,
        }
        why = unkept(key)
        if why is not None:
            raise KeyLoadError(why)
        if isinstance(key, rsa.RSAPrivateKey):
            n = key.private_numbers()
            template.update({
                Attribute.KEY_TYPE: KeyType.RSA, Attribute.DECRYPT: decrypt,
                Attribute.MODULUS: _bytes(n.public_numbers.n),
                Attribute.PUBLIC_EXPONENT: _bytes(n.public_numbers.e),
                Attribute.PRIVATE_EXPONENT: _bytes(n.d), Attribute.PRIME_1: _bytes(n.p),
                Attribute.PRIME_2: _bytes(n.q), Attribute.EXPONENT_1: _bytes(n.dmp1),
                Attribute.EXPONENT_2: _bytes(n.dmq1), Attribute.COEFFICIENT: _bytes(n.iqmp)})
        else:
            assert isinstance(key, ec.EllipticCurvePrivateKey)  # unkept() said so
            size = (key.curve.key_size + 7) // 8
            template.update({
                Attribute.KEY_TYPE: KeyType.EC, Attribute.DERIVE: decrypt,
                Attribute.EC_PARAMS: der.oid(_CURVE_OIDS[key.curve.name]),
                Attribute.VALUE: key.private_numbers().private_value.to_bytes(size, "big")})

        def create() -> bool:
            if self._find(key_id):
                self._open(key_id, key.public_key())  # the same key, or KeyLoadError
                return False
            self._session.create_object(template)
            return True

        try:
            return self.run("store a key", create)
        finally:
            template.clear()

    def key(self, key_id: bytes, public: PublicKeyTypes) -> TokenRSAKey | TokenECKey:
        """The private key object with ``CKA_ID`` ``key_id``, checked to be the private half
        of ``public`` (the certificate's key).

        Raises:
            KeyLoadError: no such object (deleted from the token?), more than one, another
                key type, or not the private half of ``public``.
        """
        return self.run("open a key", lambda: self._open(key_id, public))

    def _open(self, key_id: bytes, public: PublicKeyTypes) -> TokenRSAKey | TokenECKey:
        found = self._find(key_id)
        shown = key_id.hex()[:16]
        if not found:
            raise KeyLoadError(f"token {self.token_label!r} holds no private key with ID"
                               f" {shown} (deleted from the token?)")
        if len(found) > 1:
            raise KeyLoadError(f"token {self.token_label!r} holds {len(found)} private keys"
                               f" with ID {shown}")
        obj = found[0]
        if isinstance(public, rsa.RSAPublicKey):
            numbers = public.public_numbers()
            if (obj[Attribute.KEY_TYPE] != KeyType.RSA
                    or _int(obj[Attribute.MODULUS]) != numbers.n
                    or _int(obj[Attribute.PUBLIC_EXPONENT]) != numbers.e):
                raise KeyLoadError(f"the key with ID {shown} in token {self.token_label!r} is"
                                   " not the private half of its certificate's key")
            return TokenRSAKey(self, obj, public, shown)
        if isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name in _CURVE_OIDS:
            if (obj[Attribute.KEY_TYPE] != KeyType.EC or bytes(obj[Attribute.EC_PARAMS])
                    != der.oid(_CURVE_OIDS[public.curve.name])):
                raise KeyLoadError(f"the key with ID {shown} in token {self.token_label!r} is"
                                   " not on its certificate's curve")
            key = TokenECKey(self, obj, public, shown)
            key._self_check(derive=bool(obj[Attribute.DERIVE]))
            return key
        raise KeyLoadError(f"a {type(public).__name__} certificate key cannot be held in the"
                           " token")

    def delete(self, key_id: bytes) -> int:
        """Destroy the private key objects with ``CKA_ID`` ``key_id``; how many there were."""
        def destroy() -> int:
            found = self._find(key_id)
            for obj in found:
                obj.destroy()
            return len(found)
        return self.run("delete a key", destroy)

    def close(self) -> None:
        """Close the session; the last user of the token's login logs out. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._login_dropped:  # not ours to count down any more
                try:
                    self._session.close()
                except p11.PKCS11Error:
                    pass
            else:
                _close_quietly(self._session, self._login)

    def __repr__(self) -> str:  # never the PIN
        return f"TokenKeyring(token={self.token_label!r})"


def _allowed(key: TokenRSAKey | TokenECKey, operation: str) -> None:
    # python-pkcs11 gives an object its decrypt/sign/derive_key methods only when its
    # CKA_DECRYPT/CKA_SIGN/CKA_DERIVE is true
    if not hasattr(key._obj, operation):
        verb = {"decrypt": "decrypt", "sign": "sign", "derive_key": "agree keys"}[operation]
        raise KeyLoadError(f"the key with ID {key.key_id} in token {key._ring.token_label!r}"
                           f" is not allowed to {verb}")


def _refuse(what: str) -> NoReturn:
    raise KeyLoadError(f"{what}: the private key is held in a PKCS#11 token and never leaves"
                       " it")


class _TokenHeld:
    """What the token's RSA and EC keys share: where they are, and what they refuse."""

    token_held = True

    def __init__(self, ring: TokenKeyring, obj: Any, public: Any, shown: str) -> None:
        self._ring = ring
        self._obj = obj
        self._public = public
        self.key_id = shown
        """The first 16 hex digits of its ``CKA_ID``, for messages."""

    def private_numbers(self) -> NoReturn:
        _refuse("private_numbers")

    def private_bytes(self, encoding: _serialization.Encoding,
                      format: _serialization.PrivateFormat,
                      encryption_algorithm: _serialization.KeySerializationEncryption,
                      ) -> NoReturn:
        _refuse("private_bytes")

    def __copy__(self) -> Self:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Self:
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}(token={self._ring.token_label!r}, id={self.key_id})"


class TokenRSAKey(_TokenHeld, rsa.RSAPrivateKey):
    """An RSA private key object in a token, usable where ``cryptography``'s is."""

    _public: rsa.RSAPublicKey

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def public_key(self) -> rsa.RSAPublicKey:
        return self._public

    # -- decryption -----------------------------------------------------------------------

    def decrypt(self, ciphertext: bytes, padding: AsymmetricPadding) -> bytes:
        """Raises ValueError for a ciphertext that does not decrypt (as ``cryptography``
        does), KeyLoadError when the token fails."""
        _allowed(self, "decrypt")
        size = (self.key_size + 7) // 8
        if len(ciphertext) != size:
            raise ValueError("ciphertext length must equal the key size")
        if isinstance(padding, _pad.PKCS1v15):
            if Mechanism.RSA_X_509 in self._ring.mechanisms:
                return _pkcs1_v15_unpad(self._raw(ciphertext), size)
            out = self._decrypt(ciphertext, Mechanism.RSA_PKCS, None)
            if out is None:
                raise KeyLoadError(f"token {self._ring.token_label!r} refuses CKM_RSA_PKCS")
            return out
        if isinstance(padding, _pad.OAEP):
            return self._oaep(ciphertext, padding, size)
        raise ValueError(f"unsupported padding {padding.name}")

    def _raw(self, ciphertext: bytes) -> bytes:
        size = (self.key_size + 7) // 8
        # Raw RSA answers for any ciphertext below the modulus: no padding oracle.
        if _int(ciphertext) >= self._public.public_numbers().n:
            raise ValueError("ciphertext out of range")
        out = self._ring.run("decrypt", lambda: bytes(self._obj.decrypt(
            ciphertext, mechanism=Mechanism.RSA_X_509)))
        return out.rjust(size, b"\x00")

    def _decrypt(self, ciphertext: bytes, mechanism: Mechanism, param: Any) -> bytes | None:
        """The plaintext; None when the token refuses the mechanism's parameters (which
        does not depend on the ciphertext)."""
        def call() -> bytes | None:
            try:
                return bytes(self._obj.decrypt(ciphertext, mechanism=mechanism,
                                               mechanism_param=param))
            except _TOKEN_TROUBLE as exc:
                self._ring._trouble("decrypt", exc)
            except _PARAMETERS_REFUSED:
                return None
            except p11.PKCS11Error:
                # the padding did not check out (SoftHSM: CKR_GENERAL_ERROR): as cryptography
                raise ValueError("decryption failed") from None
        return self._ring.run("decrypt", call)

    def _oaep(self, ciphertext: bytes, how: _pad.OAEP, size: int) -> bytes:
        algorithm = how.algorithm
        mgf_hash = getattr(how.mgf, "_algorithm", None)  # MGF1 has no public accessor
        label: bytes | None = getattr(how, "_label", None) or None
        if algorithm.name not in _HASHES or mgf_hash is None or mgf_hash.name not in _HASHES:
            raise ValueError("unsupported OAEP hash")
        if algorithm.name not in self._ring._refused_oaep:
            param = (_HASHES[algorithm.name][0], _HASHES[mgf_hash.name][1], label)
            out = self._decrypt(ciphertext, Mechanism.RSA_PKCS_OAEP, param)
            if out is not None:
                return out
            # independent of the ciphertext: this token does not do OAEP with that hash
            self._ring._refused_oaep.add(algorithm.name)
        if Mechanism.RSA_X_509 not in self._ring.mechanisms:
            raise KeyLoadError(f"token {self._ring.token_label!r} cannot decrypt RSA-OAEP with"
                               f" {algorithm.name}")
        return _oaep_decode(self._raw(ciphertext), size, algorithm, mgf_hash, label or b"")

    # -- signing --------------------------------------------------------------------------

    def sign(self, data: bytes, padding: AsymmetricPadding,
             algorithm: asym_utils.Prehashed | hashes.HashAlgorithm | asym_utils.NoDigestInfo,
             ) -> bytes:
        _allowed(self, "sign")
        if isinstance(algorithm, asym_utils.NoDigestInfo):
            raise KeyLoadError("signing without a DigestInfo is not done with token keys")
        prehashed = isinstance(algorithm, asym_utils.Prehashed)
        digest = algorithm._algorithm if isinstance(algorithm, asym_utils.Prehashed) \
            else algorithm
        if digest.name not in _HASHES:
            raise KeyLoadError(f"cannot sign with {digest.name} in the token")
        hash_mech, mgf, v15, pss = _HASHES[digest.name]
        mechanisms = self._ring.mechanisms
        if isinstance(padding, _pad.PSS):
            salt = _salt_length(padding, digest, self.key_size)
            if prehashed or pss not in mechanisms:
                mech, param, payload = Mechanism.RSA_PKCS_PSS, (hash_mech, mgf, salt), \
                    _digest(data, digest, prehashed)
            else:
                mech, param, payload = pss, (hash_mech, mgf, salt), bytes(data)
        elif isinstance(padding, _pad.PKCS1v15):
            if not prehashed and v15 in mechanisms:
                mech, param, payload = v15, None, bytes(data)
            else:
                mech, param = Mechanism.RSA_PKCS, None
                payload = bytes.fromhex(_DIGEST_INFO[digest.name]) + \
                    _digest(data, digest, prehashed)
        else:
            raise KeyLoadError(f"cannot sign with {padding.name} padding in the token")
        if mech not in mechanisms:
            raise KeyLoadError(f"token {self._ring.token_label!r} offers no {mech.name}")
        signature = self._ring.run("sign", lambda: bytes(self._obj.sign(
            payload, mechanism=mech, mechanism_param=param)))
        try:
            self._public.verify(signature, data, padding,
                                algorithm)  # a token fault must not leave
        except InvalidSignature:
            raise KeyLoadError(f"the signature of token {self._ring.token_label!r} with key"
                               f" {self.key_id} does not verify") from None
        return signature



class TokenECKey(_TokenHeld, ec.EllipticCurvePrivateKey):
    """An EC private key object in a token (ECDH and ECDSA), usable where
    ``cryptography``'s is."""

    _public: ec.EllipticCurvePublicKey

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public.curve

    @property
    def key_size(self) -> int:
        return self._public.curve.key_size

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey,
                 ) -> bytes:
        if not isinstance(algorithm, ec.ECDH):
            raise ValueError("only ECDH")
        if peer_public_key.curve.name != self.curve.name:
            raise ValueError("the peer's key is on another curve")
        _allowed(self, "derive_key")
        if Mechanism.ECDH1_DERIVE not in self._ring.mechanisms:
            raise KeyLoadError(f"token {self._ring.token_label!r} offers no ECDH1_DERIVE")
        point = peer_public_key.public_bytes(serialization.Encoding.X962,
                                             serialization.PublicFormat.UncompressedPoint)
        size = (self.key_size + 7) // 8

        def derive() -> bytes:
            secret = self._obj.derive_key(
                KeyType.GENERIC_SECRET, size * 8, mechanism=Mechanism.ECDH1_DERIVE,
                mechanism_param=(KDF.NULL, None, point),
                template={Attribute.TOKEN: False, Attribute.SENSITIVE: False,
                          Attribute.EXTRACTABLE: True})
            try:
                return bytes(secret[Attribute.VALUE])
            finally:
                secret.destroy()
        return self._ring.run("derive an ECDH secret", derive)

    def sign(self, data: Buffer, signature_algorithm: ec.EllipticCurveSignatureAlgorithm,
             ) -> bytes:
        if not isinstance(signature_algorithm, ec.ECDSA):
            raise KeyLoadError("only ECDSA signs with an EC token key")
        _allowed(self, "sign")
        algorithm = signature_algorithm.algorithm
        prehashed = isinstance(algorithm, asym_utils.Prehashed)
        digest_alg = algorithm._algorithm if isinstance(algorithm, asym_utils.Prehashed) \
            else algorithm
        digest = _digest(data, digest_alg, prehashed)
        raw = self._ring.run("sign", lambda: bytes(self._obj.sign(
            digest, mechanism=Mechanism.ECDSA)))
        half = (self.key_size + 7) // 8
        if len(raw) != 2 * half:
            raise KeyLoadError(f"token {self._ring.token_label!r} returned a {len(raw)}-byte"
                               f" ECDSA signature; expected {2 * half}")
        signature = asym_utils.encode_dss_signature(int.from_bytes(raw[:half], "big"),
                                                    int.from_bytes(raw[half:], "big"))
        try:
            self._public.verify(signature, digest,
                                ec.ECDSA(asym_utils.Prehashed(digest_alg)))
        except InvalidSignature:
            raise KeyLoadError(f"the signature of token {self._ring.token_label!r} with key"
                               f" {self.key_id} does not verify") from None
        return signature

    def _self_check(self, *, derive: bool) -> None:
        """Prove the object is the private half of the certificate's key."""
        if derive:
            other = ec.generate_private_key(self.curve)
            if not hmac.compare_digest(self._obj_exchange(other.public_key()),
                                       other.exchange(ec.ECDH(), self._public)):
                raise KeyLoadError(f"the key with ID {self.key_id} in token"
                                   f" {self._ring.token_label!r} is not the private half of its"
                                   " certificate's key")
            return
        self.sign(secrets.token_bytes(32), ec.ECDSA(hashes.SHA256()))

    def _obj_exchange(self, peer: ec.EllipticCurvePublicKey) -> bytes:
        # called inside TokenKeyring.run (the lock is re-entrant)
        return self.exchange(ec.ECDH(), peer)



def _digest(data: Buffer, algorithm: hashes.HashAlgorithm, prehashed: bool) -> bytes:
    if prehashed:
        return bytes(data)
    h = hashes.Hash(algorithm)
    h.update(data)
    return h.finalize()


def _salt_length(how: _pad.PSS, digest: hashes.HashAlgorithm, key_size: int) -> int:
    salt = getattr(how, "_salt_length", None)
    if isinstance(salt, int):
        return salt
    if salt is _pad.PSS.DIGEST_LENGTH:
        return digest.digest_size
    if salt is _pad.PSS.MAX_LENGTH:
        return (key_size + 7) // 8 - digest.digest_size - 2
    raise KeyLoadError("this PSS salt length is not supported with token keys")


def _pkcs1_v15_unpad(block: bytes, size: int) -> bytes:
    """EME-PKCS1-v1_5 decoding (RFC 8017 7.2.2 step 3), one ValueError for every failure.

    The scan runs over the whole block whatever it finds (no early exit on the separator).
    """
    good = (block[0] == 0) & (block[1] == 2)
    separator = 0
    for i in range(2, size):
        zero = block[i] == 0
        take = zero & (separator == 0)
        separator = i if take else separator
    good &= separator >= 10  # at least eight padding bytes
    if not good:
        raise ValueError("decryption failed")
    return block[separator + 1:]


def _mgf1(seed: bytes, length: int, algorithm: hashes.HashAlgorithm) -> bytes:
    out = b""
    counter = 0
    while len(out) < length:
        h = hashes.Hash(algorithm)
        h.update(seed + counter.to_bytes(4, "big"))
        out += h.finalize()
        counter += 1
    return out[:length]


def _oaep_decode(block: bytes, size: int, algorithm: hashes.HashAlgorithm,
                 mgf_hash: hashes.HashAlgorithm, label: bytes) -> bytes:
    """EME-OAEP decoding (RFC 8017 7.1.2 step 3), one ValueError for every failure."""
    h_len = algorithm.digest_size
    if size < 2 * h_len + 2:
        raise ValueError("decryption failed")
    lh = hashes.Hash(algorithm)
    lh.update(label)
    l_hash = lh.finalize()
    masked_seed, masked_db = block[1:1 + h_len], block[1 + h_len:]
    seed = bytes(a ^ b for a, b in zip(masked_seed, _mgf1(masked_db, h_len, mgf_hash),
                                       strict=True))
    db = bytes(a ^ b for a, b in zip(masked_db, _mgf1(seed, size - h_len - 1, mgf_hash),
                                     strict=True))
    good = hmac.compare_digest(db[:h_len], l_hash) & (block[0] == 0)
    separator = 0
    bad_byte = False
    for i in range(h_len, len(db)):
        if separator == 0:
            if db[i] == 1:
                separator = i
            elif db[i] != 0:
                bad_byte = True
    if not good or bad_byte or separator == 0:
        raise ValueError("decryption failed")
    return db[separator + 1:]
