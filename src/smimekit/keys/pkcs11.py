"""CA keys in a PKCS#11 token (an HSM; SoftHSM2 in the tests), through ``python-pkcs11``.

:func:`generate_ca_key` makes a sensitive, non-extractable key pair in the token;
:func:`open_signer` finds one by token label and key label. Either gives a
:class:`Pkcs11Signer`, a :class:`~smimekit.keys.signer.Signer` for
:func:`~smimekit.keys.signer.sign_builder`.

PKCS#11 login state belongs to the application and the token, not to one session: a second
``C_Login`` fails with ``CKR_USER_ALREADY_LOGGED_IN`` and ``C_Logout`` on any session logs
every session out (PKCS#11 2.40 section 5.6). So the signers of this process share one login
session per token, counted, and each signer keeps its own session for its own operations. A
later signer's PIN is compared with the one the token accepted (an HMAC under a per-process
key; the PIN itself is never kept).

Every signature is checked with the public key before it is returned, so a token fault
(RSA-CRT faults leak the key) or a public key object that does not belong to the private key
never reaches a certificate.
"""

from __future__ import annotations

import ctypes
import enum
import hashlib
import hmac
import logging
import os
import secrets
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import pkcs11
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11 import exceptions as p11
from pkcs11.types import SignMixin

from smimekit.cms import der
from smimekit.errors import CAError, PassphraseError, SmimeError
from smimekit.keys.signer import hash_for

__all__ = ["KEY_TYPES", "Pkcs11Signer", "generate_ca_key", "load_module", "open_signer",
           "reinitialise"]

log = logging.getLogger(__name__)

KEY_TYPES = ("rsa3072", "rsa4096", "p256", "p384", "ed25519")
"""The key types :func:`generate_ca_key` makes: the values of ``smimekit.ca.CAKeyType``."""

# CKA_EC_PARAMS: namedCurve OIDs (RFC 5480 2.1.1.1); Ed25519 as the RFC 8410 OID, or the
# PrintableString "edwards25519" that PKCS#11 3.0 also allows (read only).
_CURVES: dict[bytes, tuple[str, ec.EllipticCurve, int]] = {
    der.oid("1.2.840.10045.3.1.7"): ("p256", ec.SECP256R1(), 65),
    der.oid("1.3.132.0.34"): ("p384", ec.SECP384R1(), 97),
}
_ED25519_PARAMS = (der.oid("1.3.101.112"), b"\x13\x0cedwards25519")

# DigestInfo prefix for SHA-256 (RFC 8017 section 9.2, note 1), for tokens without
# CKM_SHA256_RSA_PKCS that sign a DigestInfo with plain CKM_RSA_PKCS.
_SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")

_SELF_TEST = b"smimekit PKCS#11 self-test"


def _kind_of(key_type: str | enum.Enum) -> str:
    value = key_type.value if isinstance(key_type, enum.Enum) else key_type
    if value not in KEY_TYPES:
        raise CAError(f"unsupported CA key type {value!r}; expected one of {', '.join(KEY_TYPES)}")
    return str(value)


def _name(exc: BaseException) -> str:
    # python-pkcs11 exceptions often have an empty str(); the class names the CKR_ code.
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -- the module and the token ---------------------------------------------------------------


# The error class for trouble with the module, the token or a key: CAError for the CA's keys,
# KeyLoadError for the keys the mail gateway holds (keys/token_keys.py). PIN trouble is always
# PassphraseError.
_Error = type[SmimeError]


def _token(module_path: str | os.PathLike[str], token_label: str, error: _Error = CAError,
           ) -> tuple[str, pkcs11.Token]:
    shown = os.fspath(module_path)
    # One name per file: python-pkcs11 keeps a loaded module per path string.
    path = os.path.realpath(shown)
    if not os.path.isfile(path):
        raise error(f"PKCS#11 module {shown} not found")
    try:
        lib = load_module(path)
    except p11.PKCS11Error as exc:
        raise error(f"cannot load PKCS#11 module {shown}: {_name(exc)}") from None
    try:
        return path, lib.get_token(token_label=token_label)
    except p11.NoSuchToken:
        raise error(f"no token labelled {token_label!r} in PKCS#11 module {shown}") from None
    except p11.MultipleTokensReturned:
        raise error(f"more than one token labelled {token_label!r} in {shown}") from None
    except p11.PKCS11Error as exc:
        raise error(f"cannot list the tokens of {shown}: {_name(exc)}") from None


# -- several threads -------------------------------------------------------------------------
#
# python-pkcs11 initialises a module with C_Initialize(NULL): a promise that no two threads
# call into it at once (PKCS#11 2.40 section 5.4), and SoftHSM2 then turns its own locks off.
# A process may hold several signers and keyrings on one module, each with a session and a
# lock of its own, and use them from several threads (the gateway's processing threads, a
# program using the API): four signers signing in four threads crashed SoftHSM2 (SIGSEGV) or
# got CKR_GENERAL_ERROR. So each module is initialised again, once per process and before
# any session is opened, with CKF_OS_LOCKING_OK: it locks its own state.

_CKF_OS_LOCKING_OK = 0x00000002
_CKR_CANT_LOCK = 0x0000000A


class _InitArgs(ctypes.Structure):
    """CK_C_INITIALIZE_ARGS: no mutex callbacks, the OS-locking flag."""

    _fields_ = [("CreateMutex", ctypes.c_void_p), ("DestroyMutex", ctypes.c_void_p),
                ("LockMutex", ctypes.c_void_p), ("UnlockMutex", ctypes.c_void_p),
                ("flags", ctypes.c_ulong), ("pReserved", ctypes.c_void_p)]


_Call = ctypes.CFUNCTYPE(ctypes.c_ulong, ctypes.c_void_p)


class _FunctionListHead(ctypes.Structure):
    """The start of CK_FUNCTION_LIST: its version, then C_Initialize and C_Finalize."""

    _fields_ = [("version", ctypes.c_ubyte * 2), ("C_Initialize", _Call),
                ("C_Finalize", _Call)]


_locking_lock = threading.Lock()
_locking: dict[str, bool] = {}
"""Per module path: whether it was initialised with OS locking (False: it cannot lock)."""


def _initialise_for_threads(path: str) -> bool:
    """Finalise the module python-pkcs11 just initialised and initialise it again with
    CKF_OS_LOCKING_OK, through its own function list (the same loaded library: ``dlopen``
    of one path gives one handle). A module that cannot lock is initialised as before and
    named in the log: calls to it from several threads at once are then not safe.

    Raises:
        pkcs11.exceptions.PKCS11Error: the module refused either call.
    """
    library = ctypes.CDLL(path)
    functions = ctypes.POINTER(_FunctionListHead)()
    rv = library.C_GetFunctionList(ctypes.byref(functions))
    if rv != 0 or not functions:
        raise p11.PKCS11Error(f"C_GetFunctionList failed (CKR 0x{rv:x})")
    head = functions.contents
    rv = head.C_Finalize(None)
    if rv != 0:
        raise p11.PKCS11Error(f"C_Finalize failed (CKR 0x{rv:x})")
    args = _InitArgs(flags=_CKF_OS_LOCKING_OK)
    rv = head.C_Initialize(ctypes.cast(ctypes.pointer(args), ctypes.c_void_p))
    if rv == _CKR_CANT_LOCK:
        rv = head.C_Initialize(None)
        if rv == 0:
            log.warning("PKCS#11 module cannot lock for several threads: keep the gateway's"
                        " processing_threads at 1", extra={"module": path})
            return False
    if rv != 0:
        raise p11.PKCS11Error(f"C_Initialize with OS locking failed (CKR 0x{rv:x})")
    return True


def load_module(module_path: str | os.PathLike[str]) -> Any:
    """python-pkcs11's loaded module (one per path), initialised with OS locking the first
    time this process loads it.

    Raises:
        pkcs11.exceptions.PKCS11Error: the module cannot be loaded or initialised.
    """
    path = os.path.realpath(os.fspath(module_path))
    lib = pkcs11.lib(path)
    with _locking_lock:
        if path not in _locking:
            _locking[path] = _initialise_for_threads(path)
    return lib


def reinitialise(module_path: str | os.PathLike[str]) -> None:
    """Finalise and initialise the module again, with OS locking: every session and login
    of this process on it is gone. (The tests do this to point SoftHSM2 at another token
    directory; python-pkcs11's own ``reinitialize`` would leave it without locks.)"""
    path = os.path.realpath(os.fspath(module_path))
    pkcs11.lib(path)
    with _locking_lock, _logins_lock:
        _logins.clear()
        _locking[path] = _initialise_for_threads(path)


@dataclass
class _Login:
    session: pkcs11.Session
    pin_mac: bytes
    users: int


_PIN_KEY = secrets.token_bytes(32)
_logins: dict[tuple[str, bytes], _Login] = {}
_logins_lock = threading.Lock()
_generate_lock = threading.Lock()  # the label check and the generation, as one step


def _pin_mac(pin: str) -> bytes:
    return hmac.new(_PIN_KEY, pin.encode("utf-8"), hashlib.sha256).digest()


def _login(where: tuple[str, bytes], token: pkcs11.Token, pin: str,
           error: _Error = CAError) -> None:
    """Log in to ``token`` once for this process, or check ``pin`` against that login."""
    label = token.label
    with _logins_lock:
        entry = _logins.get(where)
        if entry is not None:
            if not hmac.compare_digest(entry.pin_mac, _pin_mac(pin)):
                raise PassphraseError(f"wrong user PIN for token {label!r}")
            entry.users += 1
            return
        try:
            session = token.open(user_pin=pin)
        except (p11.PinIncorrect, p11.PinInvalid, p11.PinLenRange):
            raise PassphraseError(f"wrong user PIN for token {label!r}") from None
        except p11.PinLocked:
            raise PassphraseError(f"the user PIN of token {label!r} is locked") from None
        except p11.PinExpired:
            raise PassphraseError(f"the user PIN of token {label!r} has expired") from None
        except p11.UserPinNotInitialized:
            raise error(f"token {label!r} has no user PIN set") from None
        except (p11.UserAlreadyLoggedIn, p11.AnotherUserAlreadyLoggedIn):
            raise error(
                f"token {label!r} is already logged in by other code in this process; "
                "cannot check the PIN") from None
        except p11.PKCS11Error as exc:
            raise error(f"cannot log in to token {label!r}: {_name(exc)}") from None
        _logins[where] = _Login(session, _pin_mac(pin), 1)


def _logout(where: tuple[str, bytes]) -> None:
    with _logins_lock:
        entry = _logins.get(where)
        if entry is None:
            return
        entry.users -= 1
        if entry.users > 0:
            return
        del _logins[where]
        try:
            entry.session.close()
        except p11.PKCS11Error:
            pass  # the token went away; nothing is left to log out of


def _drop_login(where: tuple[str, bytes]) -> None:
    """Forget the login of ``where`` after the token lost it (reset, re-inserted): the next
    session logs in again with its PIN instead of trusting a login that is gone. Its users
    still ``_logout``, which then finds nothing to do."""
    with _logins_lock:
        entry = _logins.pop(where, None)
    if entry is not None:
        try:
            entry.session.close()
        except p11.PKCS11Error:
            pass


# -- public keys ---------------------------------------------------------------------------


def find_objects(session: pkcs11.Session, template: dict[Attribute, Any]) -> list[Any]:
    """The session's objects matching ``template``.

    Raises:
        pkcs11.exceptions.PKCS11Error: the search failed (the session lost, say). The search
            iterator's finaliser then fails too (C_FindObjectsFinal on the same dead
            session) while the first error unwinds, and python-pkcs11 prints that second
            error's traceback to stderr. :func:`_quiet_search_finalisers` keeps that one
            quiet; the first error is raised for the caller to name.
    """
    _quiet_search_finalisers()
    return list(session.get_objects(template))


_finaliser_hooks_lock = threading.Lock()
_finaliser_hooks: list[Any] = [None, None]
"""The wrappers this module put in place: sys.excepthook's, sys.unraisablehook's."""


def _quiet_search_finalisers() -> None:
    """Keep python-pkcs11's search finaliser from printing a second error's traceback.

    Its Cython finaliser reports the error twice: a traceback through ``sys.excepthook``,
    then "Exception ignored in" through ``sys.unraisablehook``. Each hook in place is wrapped,
    for good, by one that passes on everything but a PKCS#11 error raised inside
    python-pkcs11's ``_finalize``; it is wrapped again only when somebody has replaced it
    since (pytest does, around each test). Wrapping for the length of each search and putting
    the previous hook back after loses hooks when two threads search at once (the second
    puts back the first one's wrapper); swapping ``sys.stderr`` did worse.
    """
    with _finaliser_hooks_lock:
        if sys.excepthook is not _finaliser_hooks[0]:
            excepthook = sys.excepthook

            def quiet_excepthook(kind: type[BaseException], value: BaseException,
                                 traceback: TracebackType | None) -> None:
                if not _from_search_finaliser(value, traceback):
                    excepthook(kind, value, traceback)

            sys.excepthook = _finaliser_hooks[0] = quiet_excepthook
        if sys.unraisablehook is not _finaliser_hooks[1]:
            unraisablehook = sys.unraisablehook

            def quiet_unraisablehook(unraisable: Any) -> None:
                if not _from_search_finaliser(unraisable.exc_value, unraisable.exc_traceback):
                    unraisablehook(unraisable)

            sys.unraisablehook = _finaliser_hooks[1] = quiet_unraisablehook


def _from_search_finaliser(value: BaseException | None,
                           traceback: TracebackType | None) -> bool:
    """Whether ``value`` is a PKCS#11 error raised in python-pkcs11's operation finaliser
    (its Cython frames are named in full: ``pkcs11._pkcs11.SearchIter._finalize``)."""
    if not isinstance(value, p11.PKCS11Error):
        return False
    while traceback is not None:
        code = traceback.tb_frame.f_code
        if code.co_name.rpartition(".")[2] == "_finalize" and "pkcs11" in code.co_filename:
            return True
        traceback = traceback.tb_next
    return False


def _point(value: bytes, size: int) -> bytes:
    # CKA_EC_POINT is DER OCTET STRING { point } (PKCS#11 2.40 2.3.3); some tokens return the
    # bare point. The two differ in length, so there is no ambiguity.
    if len(value) == size:
        return value
    if len(value) == size + 2 and value[0] == 0x04 and value[1] == size:
        return value[2:]
    raise CAError("the token's public key point is malformed")


def _public_key(
    key_type: KeyType, public: pkcs11.PublicKey,
) -> tuple[str, CertificateIssuerPublicKeyTypes]:
    try:
        if key_type == KeyType.RSA:
            n = int.from_bytes(public[Attribute.MODULUS], "big")
            e = int.from_bytes(public[Attribute.PUBLIC_EXPONENT], "big")
            return f"rsa{n.bit_length()}", rsa.RSAPublicNumbers(e, n).public_key()
        params = bytes(public[Attribute.EC_PARAMS])
        point = bytes(public[Attribute.EC_POINT])
    except p11.PKCS11Error as exc:
        raise CAError(f"cannot read the public key from the token: {_name(exc)}") from None
    except ValueError as exc:
        raise CAError(f"the token's RSA public key is unusable: {exc}") from None
    if key_type == KeyType.EC:
        if params not in _CURVES:
            raise CAError(f"unsupported CA curve (EC parameters {params.hex()})")
        kind, curve, size = _CURVES[params]
        try:
            return kind, ec.EllipticCurvePublicKey.from_encoded_point(curve, _point(point, size))
        except ValueError:
            raise CAError("the token's EC public key is not a point on its curve") from None
    if key_type == KeyType.EC_EDWARDS:
        if params not in _ED25519_PARAMS:
            raise CAError(f"unsupported Edwards curve (EC parameters {params.hex()}); "
                          "only Ed25519 signs certificates here")
        return "ed25519", ed25519.Ed25519PublicKey.from_public_bytes(_point(point, 32))
    raise CAError(f"unsupported CA key type {key_type.name} in the token")


# -- the signer ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """How the token makes an X.509 signature for one key."""

    mechanism: Mechanism
    prehash: hashes.SHA256 | hashes.SHA384 | None  # hash here, token signs the digest
    prefix: bytes = b""  # DigestInfo before the digest (RSA without a combined mechanism)


def _plan(kind: str, mechanisms: set[Mechanism], label: str) -> _Plan:
    if kind.startswith("rsa"):
        if Mechanism.SHA256_RSA_PKCS in mechanisms:
            return _Plan(Mechanism.SHA256_RSA_PKCS, None)
        if Mechanism.RSA_PKCS in mechanisms:
            return _Plan(Mechanism.RSA_PKCS, hashes.SHA256(), _SHA256_DIGEST_INFO)
        raise CAError(f"token {label!r} offers no RSA PKCS#1 v1.5 signing mechanism")
    if kind in ("p256", "p384"):
        combined, digest = ((Mechanism.ECDSA_SHA256, hashes.SHA256()) if kind == "p256"
                            else (Mechanism.ECDSA_SHA384, hashes.SHA384()))
        if combined in mechanisms:
            return _Plan(combined, None)
        # SoftHSM 2.6 has CKM_ECDSA only: it signs a digest made here.
        if Mechanism.ECDSA in mechanisms:
            return _Plan(Mechanism.ECDSA, digest)
        raise CAError(f"token {label!r} offers no ECDSA signing mechanism")
    if Mechanism.EDDSA in mechanisms:
        return _Plan(Mechanism.EDDSA, None)
    raise CAError(f"token {label!r} cannot make Ed25519 signatures (no CKM_EDDSA)")


def _mechanisms(token: pkcs11.Token) -> set[Mechanism]:
    try:
        return set(token.slot.get_mechanisms())
    except p11.PKCS11Error as exc:
        raise CAError(f"cannot list the mechanisms of token {token.label!r}: {_name(exc)}",
                      ) from None


class Pkcs11Signer:
    """A CA private key that stays in a PKCS#11 token.

    Make one with :func:`open_signer` or :func:`generate_ca_key`, and :meth:`close` it (or
    use it as a context manager). It keeps one session open; :meth:`sign` may be called from
    several threads.
    """

    def __init__(
        self,
        *,
        session: pkcs11.Session,
        private: SignMixin,
        public: CertificateIssuerPublicKeyTypes,
        key_type: str,
        plan: _Plan,
        token_label: str,
        key_label: str,
        login: tuple[str, bytes],
    ) -> None:
        self._session = session
        self._private = private
        self._public = public
        self._plan = plan
        self._login = login
        self._lock = threading.Lock()
        self._closed = False
        self.key_type = key_type
        """``rsa3072``, ``rsa4096`` (``rsa<bits>`` for other RSA keys), ``p256``, ``p384`` or
        ``ed25519``."""
        self.token_label = token_label
        self.key_label = key_label

    def public_key(self) -> CertificateIssuerPublicKeyTypes:
        """The public half, as read from the token's public key object."""
        return self._public

    def sign(self, data: bytes) -> bytes:
        """Sign ``data`` for X.509 (see :func:`smimekit.keys.signer.hash_for`) in the token.

        Raises:
            CAError: the signer is closed, the token refuses, or the signature it returns
                does not verify with the public key.
        """
        plan = self._plan
        payload = data
        if plan.prehash is not None:
            h = hashes.Hash(plan.prehash)
            h.update(data)
            payload = plan.prefix + h.finalize()
        with self._lock:
            if self._closed:
                raise CAError(f"the PKCS#11 signer for key {self.key_label!r} is closed")
            try:
                raw = self._private.sign(payload, mechanism=plan.mechanism)
            except p11.PKCS11Error as exc:
                raise CAError(f"token {self.token_label!r} could not sign with key "
                              f"{self.key_label!r}: {_name(exc)}") from None
        signature = self._encode(bytes(raw))
        self._check(data, signature)
        return signature

    def _encode(self, raw: bytes) -> bytes:
        if not isinstance(self._public, ec.EllipticCurvePublicKey):
            return raw
        # PKCS#11 gives r || s, each as long as the group order (2.40 section 2.3.1); X.509
        # wants the DER Ecdsa-Sig-Value of RFC 3279 section 2.2.3.
        half = (self._public.curve.key_size + 7) // 8
        if len(raw) != 2 * half:
            raise CAError(f"token {self.token_label!r} returned a {len(raw)}-byte ECDSA "
                          f"signature; expected {2 * half}")
        return encode_dss_signature(int.from_bytes(raw[:half], "big"),
                                    int.from_bytes(raw[half:], "big"))

    def _check(self, data: bytes, signature: bytes) -> None:
        public = self._public
        try:
            if isinstance(public, rsa.RSAPublicKey):
                public.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
            elif isinstance(public, ec.EllipticCurvePublicKey):
                digest = hash_for(public)
                assert digest is not None
                public.verify(signature, data, ec.ECDSA(digest))
            elif isinstance(public, ed25519.Ed25519PublicKey):
                public.verify(signature, data)
        except InvalidSignature:
            raise CAError(f"the signature from token {self.token_label!r} does not verify with "
                          f"the public key labelled {self.key_label!r}") from None

    def close(self) -> None:
        """Close the session; the last signer of a token also logs out. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._session.close()
            except p11.PKCS11Error:
                pass  # the token or its module went away; nothing left to close
            _logout(self._login)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    def __enter__(self) -> Pkcs11Signer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:  # never the PIN
        state = ", closed" if self._closed else ""
        return (f"Pkcs11Signer(token={self.token_label!r}, key={self.key_label!r}, "
                f"type={self.key_type}{state})")


def _signer(
    token: pkcs11.Token, session: pkcs11.Session, private: pkcs11.Key, public: pkcs11.Key,
    key_label: str, login: tuple[str, bytes],
) -> Pkcs11Signer:
    if not isinstance(private, pkcs11.PrivateKey) or not isinstance(public, pkcs11.PublicKey):
        raise CAError(f"objects labelled {key_label!r} are not a key pair")
    if not isinstance(private, SignMixin):  # python-pkcs11 adds it when CKA_SIGN is true
        raise CAError(f"key {key_label!r} in token {token.label!r} is not allowed to sign")
    try:
        key_type = KeyType(private.key_type)
    except (ValueError, p11.PKCS11Error):
        raise CAError(f"key {key_label!r} has a key type this CA cannot use") from None
    kind, public_key = _public_key(key_type, public)
    signer = Pkcs11Signer(
        session=session, private=private, public=public_key, key_type=kind,
        plan=_plan(kind, _mechanisms(token), token.label), token_label=token.label,
        key_label=key_label, login=login)
    signer.sign(_SELF_TEST)  # the public key object belongs to the private key
    return signer


def _open_session(
    module_path: str | os.PathLike[str], token_label: str, pin: str, *, rw: bool,
    error: _Error = CAError,
) -> tuple[pkcs11.Token, pkcs11.Session, tuple[str, bytes]]:
    path, token = _token(module_path, token_label, error)
    login = (path, bytes(token.serial))
    _login(login, token, pin, error)
    try:
        # No PIN here: the session shares the login above, and closing it will not log out.
        session = token.open(rw=rw)
    except p11.PKCS11Error as exc:
        _logout(login)
        raise error(f"cannot open a session on token {token_label!r}: {_name(exc)}") from None
    return token, session, login


def _close_quietly(session: pkcs11.Session, login: tuple[str, bytes]) -> None:
    try:
        session.close()
    except p11.PKCS11Error:
        pass
    _logout(login)


@contextmanager
def _closed_on_failure(session: pkcs11.Session, login: tuple[str, bytes], token_label: str,
                       key_label: str) -> Iterator[None]:
    """Close the session (and log out) if the block fails; token errors become CAError."""
    try:
        yield
    except p11.PKCS11Error as exc:
        _close_quietly(session, login)
        raise CAError(f"token {token_label!r} failed on key {key_label!r}: "
                      f"{_name(exc)}") from None
    except BaseException:
        _close_quietly(session, login)
        raise


def open_signer(
    module_path: str | os.PathLike[str], token_label: str, key_label: str, pin: str,
) -> Pkcs11Signer:
    """Open the private key labelled ``key_label`` in the token labelled ``token_label``.

    Raises:
        PassphraseError: the user PIN is wrong, locked or expired.
        CAError: the module file is missing or cannot be loaded, there is no such token or
            key (or more than one), the key type cannot sign certificates here, or its public
            key object is missing or does not match it.
    """
    token, session, login = _open_session(module_path, token_label, pin, rw=False)
    with _closed_on_failure(session, login, token_label, key_label):
        try:
            private = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=key_label)
        except p11.NoSuchKey:
            raise CAError(f"no private key labelled {key_label!r} in token "
                          f"{token_label!r}") from None
        except p11.MultipleObjectsReturned:
            raise CAError(f"more than one private key labelled {key_label!r} in token "
                          f"{token_label!r}") from None
        try:
            key_id = bytes(private[Attribute.ID]) or None
        except p11.PKCS11Error:
            key_id = None
        try:
            public = session.get_key(object_class=ObjectClass.PUBLIC_KEY, label=key_label,
                                     id=key_id)
        except p11.NoSuchKey:
            raise CAError(f"token {token_label!r} has no public key object for key "
                          f"{key_label!r}") from None
        except p11.MultipleObjectsReturned:
            raise CAError(f"more than one public key labelled {key_label!r} in token "
                          f"{token_label!r}") from None
        return _signer(token, session, private, public, key_label, login)


def _generate(session: pkcs11.Session, kind: str, key_label: str,
              ) -> tuple[pkcs11.PublicKey, pkcs11.PrivateKey]:
    key_id = secrets.token_bytes(16)  # binds the two halves (CKA_ID), as PKCS#11 tools do
    private_template: dict[Attribute, Any] = {
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
    }
    public_template: dict[Attribute, Any] = {Attribute.PRIVATE: False}
    options: dict[str, Any] = {
        "id": key_id, "label": key_label, "store": True,
        "capabilities": MechanismFlag.SIGN | MechanismFlag.VERIFY,
        "private_template": private_template,
    }
    if kind.startswith("rsa"):
        public_template[Attribute.PUBLIC_EXPONENT] = (65537).to_bytes(3, "big")
        public, private = session.generate_keypair(
            KeyType.RSA, int(kind[3:]), public_template=public_template, **options)
        return public, private
    if kind == "ed25519":
        params = session.create_domain_parameters(
            KeyType.EC_EDWARDS, {Attribute.EC_PARAMS: _ED25519_PARAMS[0]}, local=True)
    else:
        oid = next(k for k, (name, _, _) in _CURVES.items() if name == kind)
        params = session.create_domain_parameters(
            KeyType.EC, {Attribute.EC_PARAMS: oid}, local=True)
    public, private = params.generate_keypair(public_template=public_template, **options)
    return public, private


def generate_ca_key(
    module_path: str | os.PathLike[str], token_label: str, key_label: str, pin: str,
    key_type: str | enum.Enum,
) -> Pkcs11Signer:
    """Generate a CA key pair in the token: private half sensitive and never extractable.

    ``key_type`` is ``"rsa3072"``, ``"rsa4096"``, ``"p256"``, ``"p384"`` or ``"ed25519"``
    (or a ``CAKeyType``).

    Raises:
        PassphraseError: the user PIN is wrong, locked or expired.
        CAError: the key type is unknown or the token cannot make or use it, the module or
            token is missing, or an object labelled ``key_label`` exists already (it is
            never replaced).
    """
    kind = _kind_of(key_type)
    token, session, login = _open_session(module_path, token_label, pin, rw=True)
    with _closed_on_failure(session, login, token_label, key_label):
        needed = {"ed25519": {Mechanism.EC_EDWARDS_KEY_PAIR_GEN}, "p256": {
            Mechanism.EC_KEY_PAIR_GEN}, "p384": {Mechanism.EC_KEY_PAIR_GEN}}.get(
            kind, {Mechanism.RSA_PKCS_KEY_PAIR_GEN})
        mechanisms = _mechanisms(token)
        if not needed <= mechanisms:
            raise CAError(f"token {token_label!r} cannot generate {kind} keys "
                          f"(no {', '.join(sorted(m.name for m in needed))})")
        _plan(kind, mechanisms, token_label)  # refuse before generating a key it cannot use
        with _generate_lock:  # other processes can still race us; PKCS#11 has no lock
            try:
                # Any object class: a certificate or public key by that name is taken too.
                taken = find_objects(session, {Attribute.LABEL: key_label})
            except p11.PKCS11Error as exc:
                raise CAError(f"cannot search token {token_label!r}: {_name(exc)}") from None
            if taken:
                raise CAError(f"token {token_label!r} already holds an object labelled "
                              f"{key_label!r}; refusing to generate another")
            try:
                public, private = _generate(session, kind, key_label)
            except p11.PKCS11Error as exc:
                raise CAError(f"token {token_label!r} could not generate a {kind} key: "
                              f"{_name(exc)}") from None
        return _signer(token, session, private, public, key_label, login)
