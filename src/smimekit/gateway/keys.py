"""The keys the gateway holds for users and the organisation, at rest in the store.

Two layers, so that opening one of ten thousand users' keys costs a microsecond, not a KDF:

* the **master key** (32 random bytes) is sealed with AES-256-GCM, either under a key that
  scrypt (n=2^15, r=8, p=1) derives from the key passphrase (``[gateway]
  key_passphrase_file``), or, with ``pkcs11_module``, inside a PKCS#11 token by a
  non-extractable AES-256 key that never leaves it (:class:`TokenKek`); the result is one row
  of the store's ``schema_meta``, so every node sharing the store opens the same master key
  with the same passphrase or token key;
* each **held key** (PKCS#8 DER) is sealed with AES-256-GCM under the master key, the
  certificate's SHA-256 fingerprint bound in as associated data (a sealed key moved to another
  row does not open); or, imported with ``into_token`` (``gateway keys import
  --into-token``), it is a sensitive, non-extractable private key object inside the token
  (:mod:`smimekit.keys.token_keys`) and its row holds only where it is: ``pkcs11:`` and the
  token's label and the object's ``CKA_ID`` (the certificate's SHA-256 fingerprint). Such a
  key signs and decrypts inside the token; the gateway never sees it.

Nothing is ever stored or logged in the clear. Retired keys stay in the history:
:meth:`StoreHeldKeys.decryption_keys` returns every encryption key a user ever had, newest
first, so mail encrypted to an old certificate still opens. Only decryption uses the history:
what the gateway signs with or encrypts to (:meth:`StoreHeldKeys.signing_key`,
:meth:`StoreHeldKeys.encryption_certificate`) is the *current* key, the newest by its
certificate's notBefore (then notAfter) among the keys not retired and valid now, whatever
order they were imported in.

Keys come in as PKCS#12 (what ``smimekit ca issue`` writes, with the whole key history):
:func:`import_pkcs12`. Each key's purpose follows its certificate's key usage. Keys sealed
in the store move into the token later with :meth:`StoreHeldKeys.move_to_token` (``gateway
keys move-to-token``): the row becomes a reference only once the token holds the key and it
has done a private operation there; there is no way back (the token's objects are
non-extractable).

A key object found in the token is checked against its certificate when first opened (RSA
modulus; an ECDH or ECDSA round for EC). A token that fails (gone, session lost) or a key
object deleted from it is a :class:`~smimekit.errors.KeyLoadError`, which the pipeline turns
into a temporary GatewayError (4xx, Postfix keeps the mail); after a token failure the next
use opens a new session.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed448, ed25519, rsa, x448, x25519
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from smimekit.config import GatewayConfig
from smimekit.errors import ConfigError, GatewayError, KeyLoadError, PassphraseError
from smimekit.gateway.model import HeldKey
from smimekit.keys.load import key_matches
from smimekit.store import Store
from smimekit.store.db import certificate_emails
from smimekit.store.gateway_keys import GatewayKeyRow

if TYPE_CHECKING:
    from smimekit.keys.token_keys import TokenKeyring

__all__ = [
    "TOKEN_KEY_LABEL",
    "Imported",
    "MasterKeySource",
    "Moved",
    "StoreHeldKeys",
    "TokenKek",
    "import_pkcs12",
    "master_key_sealing",
    "master_key_source",
    "open_held_keys",
    "purpose_of",
    "read_key_passphrase",
    "token_reference",
    "where",
]

TOKEN_KEY_LABEL = "smimekit-gateway-master"  # noqa: S105 (a key label, not a secret)
"""The label of the AES-256 key in the PKCS#11 token that seals the gateway's master key."""

_SCRYPT = {"n": 2**15, "r": 8, "p": 1}
_MASTER_AAD = b"smimekit gateway master key v1"
_KEY_AAD = b"smimekit gateway key v1 "
_SEAL_VERSION = b"\x01"


def read_key_passphrase(path: Path | None) -> bytes:
    """The passphrase in ``path`` (one line; the trailing newline is not part of it).

    Raises:
        ConfigError: no ``key_passphrase_file`` is configured, it cannot be read, or it is
            empty.
    """
    if path is None:
        raise ConfigError("gateway.key_passphrase_file is not set: the gateway's key store"
                          " cannot be opened without it")
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"gateway.key_passphrase_file: cannot read {path}:"
                          f" {exc.strerror or exc}") from None
    secret = text.rstrip(b"\r\n")
    if not secret:
        raise ConfigError(f"gateway.key_passphrase_file: {path} is empty")
    return secret


@dataclass(frozen=True)
class TokenKek:
    """A non-extractable AES-256 key in a PKCS#11 token that seals the master key (AES-GCM
    inside the token). ``repr`` never shows the PIN."""

    module: Path
    token_label: str
    pin: str = field(repr=False)
    key_label: str = TOKEN_KEY_LABEL

    @contextmanager
    def _key(self, create: bool) -> Iterator[Any]:
        from pkcs11 import Attribute, KeyType, ObjectClass
        from pkcs11 import exceptions as p11

        from smimekit.keys.pkcs11 import _close_quietly, _open_session

        # The process's shared login (keys/pkcs11.py): the held keys in the token
        # (TokenKeyring) may be logged in already, and a second C_Login would fail.
        _, session, login = _open_session(self.module, self.token_label, self.pin, rw=create,
                                          error=KeyLoadError)
        try:
            try:
                key = session.get_key(ObjectClass.SECRET_KEY, KeyType.AES,
                                      label=self.key_label)
            except p11.NoSuchKey:
                if not create:
                    raise KeyLoadError(f"token {self.token_label!r} holds no key labelled"
                                       f" {self.key_label!r}") from None
                key = session.generate_key(KeyType.AES, 256, label=self.key_label,
                                           store=True, template={
                                               Attribute.SENSITIVE: True,
                                               Attribute.EXTRACTABLE: False})
            except p11.MultipleObjectsReturned:
                raise KeyLoadError(f"token {self.token_label!r} holds more than one key"
                                   f" labelled {self.key_label!r}") from None
            except p11.PKCS11Error as exc:
                raise KeyLoadError(f"token {self.token_label!r} cannot find or make the key"
                                   f" {self.key_label!r}: {type(exc).__name__}") from None
            yield key
        finally:
            _close_quietly(session, login)

    def seal(self, master: bytes) -> dict[str, Any]:
        """The sealed master key's record (the token's key is made when missing)."""
        from pkcs11 import GCMParams, Mechanism

        nonce = os.urandom(12)
        with self._key(create=True) as key:
            sealed = key.encrypt(master, mechanism=Mechanism.AES_GCM,
                                 mechanism_param=GCMParams(nonce, _MASTER_AAD, 128))
        return {"kdf": "pkcs11", "label": self.key_label,
                "nonce": base64.b64encode(nonce).decode(),
                "sealed": base64.b64encode(bytes(sealed)).decode()}

    def open(self, nonce: bytes, sealed: bytes) -> bytes:
        """The master key, opened inside the token."""
        from pkcs11 import GCMParams, Mechanism
        from pkcs11 import exceptions as p11

        with self._key(create=False) as key:
            try:
                return bytes(key.decrypt(sealed, mechanism=Mechanism.AES_GCM,
                                         mechanism_param=GCMParams(nonce, _MASTER_AAD, 128)))
            except p11.PKCS11Error:
                raise KeyLoadError(f"the gateway's master key does not open with the key"
                                   f" {self.key_label!r} of token {self.token_label!r}"
                                   " (another token's key, or damaged)") from None


MasterKeySource = bytes | TokenKek
"""What opens the master key: the key passphrase, or a token's key."""


def master_key_source(config: GatewayConfig) -> MasterKeySource:
    """The configured source: the token when ``pkcs11_module`` is set (with ``token_label``
    and ``pin_file``), else the passphrase of ``key_passphrase_file``.

    Raises:
        ConfigError: a token without its label or PIN file, an unreadable or empty file, or
            neither a token nor a passphrase file.
    """
    if config.pkcs11_module is None:
        return read_key_passphrase(config.key_passphrase_file)
    if not config.token_label:
        raise ConfigError("gateway.pkcs11_module is set but gateway.token_label is not")
    if config.pin_file is None:
        raise ConfigError("gateway.pkcs11_module is set but gateway.pin_file is not")
    try:
        pin = config.pin_file.read_text().rstrip("\r\n")
    except (OSError, UnicodeError) as exc:
        raise ConfigError(f"gateway.pin_file: cannot read {config.pin_file}: {exc}") from None
    if not pin:
        raise ConfigError(f"gateway.pin_file: {config.pin_file} is empty")
    return TokenKek(config.pkcs11_module, config.token_label, pin)


def _kek(passphrase: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase)


def _new_master(source: MasterKeySource) -> tuple[bytes, str]:
    master = AESGCM.generate_key(256)
    if isinstance(source, TokenKek):
        return master, json.dumps({"v": 1, **source.seal(master)}, sort_keys=True)
    passphrase = source
    salt, nonce = os.urandom(16), os.urandom(12)
    sealed = AESGCM(_kek(passphrase, salt, **_SCRYPT)).encrypt(nonce, master, _MASTER_AAD)
    text = json.dumps({"v": 1, "kdf": "scrypt", **_SCRYPT,
                       "salt": base64.b64encode(salt).decode(),
                       "nonce": base64.b64encode(nonce).decode(),
                       "sealed": base64.b64encode(sealed).decode()}, sort_keys=True)
    return master, text


def _open_master(text: str, source: MasterKeySource) -> bytes:
    try:
        record = json.loads(text)
        if record.get("v") != 1 or record.get("kdf") not in ("scrypt", "pkcs11"):
            raise ValueError("unknown format")
    except (ValueError, TypeError, AttributeError) as exc:
        raise KeyLoadError(f"the gateway's master key in the store is damaged ({exc})") from None
    if record["kdf"] == "pkcs11" and not isinstance(source, TokenKek):
        raise KeyLoadError("the gateway's master key is sealed by a PKCS#11 token, but no"
                           " gateway.pkcs11_module is configured")
    if record["kdf"] == "scrypt" and isinstance(source, TokenKek):
        raise KeyLoadError("the gateway's master key is sealed under a passphrase, but"
                           " gateway.pkcs11_module names a token")
    if isinstance(source, TokenKek):
        try:
            nonce, sealed = (base64.b64decode(record[k]) for k in ("nonce", "sealed"))
        except (ValueError, KeyError, TypeError) as exc:
            raise KeyLoadError(f"the gateway's master key in the store is damaged ({exc})"
                               ) from None
        return source.open(nonce, sealed)
    passphrase = source
    try:
        salt, nonce, sealed = (base64.b64decode(record[k]) for k in ("salt", "nonce", "sealed"))
        n, r, p = int(record["n"]), int(record["r"]), int(record["p"])
        if not (2**14 <= n <= 2**20 and 1 <= r <= 16 and 1 <= p <= 4):
            raise ValueError("scrypt parameters out of range")
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyLoadError(f"the gateway's master key in the store is damaged ({exc})") from None
    try:
        return AESGCM(_kek(passphrase, salt, n, r, p)).decrypt(nonce, sealed, _MASTER_AAD)
    except InvalidTag:
        raise PassphraseError("wrong passphrase for the gateway's key store"
                              " (gateway.key_passphrase_file)") from None


def master_key_sealing(store: Store) -> str | None:
    """How the store's master key is sealed: ``scrypt`` (under the key passphrase),
    ``pkcs11`` (inside a token), or None when the store has none yet (or an unknown form,
    which opening reports)."""
    text = store.gateway_master_key()
    if text is None:
        return None
    try:
        kdf = json.loads(text).get("kdf")
    except (ValueError, AttributeError):
        return None
    return kdf if kdf in ("scrypt", "pkcs11") else None


def _seal(master: bytes, key: PrivateKeyTypes, fingerprint: str) -> bytes:
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    nonce = os.urandom(12)
    return _SEAL_VERSION + nonce + AESGCM(master).encrypt(
        nonce, der, _KEY_AAD + fingerprint.encode())


def _unseal(master: bytes, row: GatewayKeyRow) -> PrivateKeyTypes:
    sealed = row.sealed
    if sealed[:1] != _SEAL_VERSION or len(sealed) < 13 + 16:
        raise KeyLoadError(f"held key {row.fingerprint[:16]} is damaged")
    try:
        der = AESGCM(master).decrypt(sealed[1:13], sealed[13:],
                                     _KEY_AAD + row.fingerprint.encode())
    except InvalidTag:
        raise KeyLoadError(f"held key {row.fingerprint[:16]} does not open under the gateway's"
                           " master key (damaged, or sealed for another store)") from None
    return serialization.load_der_private_key(der, None)


_TOKEN_REF = b"pkcs11:"


def _token_ref(token_label: str, key_id: bytes) -> bytes:
    return _TOKEN_REF + json.dumps({"token": token_label, "id": key_id.hex()},
                                   sort_keys=True).encode()


def token_reference(row: GatewayKeyRow) -> tuple[str, bytes] | None:
    """(token label, CKA_ID) of a key held in a PKCS#11 token; None for a sealed key.

    Raises:
        KeyLoadError: the row says "token" but the reference is damaged.
    """
    if not row.sealed.startswith(_TOKEN_REF):
        return None
    try:
        record = json.loads(row.sealed[len(_TOKEN_REF):])
        return str(record["token"]), bytes.fromhex(record["id"])
    except (ValueError, KeyError, TypeError):
        raise KeyLoadError(f"held key {row.fingerprint[:16]}: its token reference is damaged"
                           ) from None


def where(row: GatewayKeyRow) -> str:
    """Where a held key lives, for ``gateway keys list``: ``store`` (sealed under the master
    key) or ``token 'LABEL'``."""
    try:
        ref = token_reference(row)
    except KeyLoadError:
        return "token (damaged reference)"
    return "store" if ref is None else f"token {ref[0]!r}"


def _object_label(owner: str, fingerprint: str) -> str:
    """The ``CKA_LABEL`` of a held key's object in the token."""
    return f"smimekit-held {owner or 'organisation'} {fingerprint[:16]}"


def _signs(purpose: str) -> bool:
    return purpose in ("sign", "both", "organisation")


def _decrypts(purpose: str) -> bool:
    return purpose in ("encrypt", "both")


def _prove(key: PrivateKeyTypes, purpose: str) -> None:
    """One private operation with a key object in the token, checked with the certificate's
    public key: a signature over a random digest for a signing key, else an RSA decryption
    of a random secret or an ECDH agreement with a fresh key.

    Raises:
        KeyLoadError: the token fails, or the object is not the certificate's key.
    """
    from cryptography.hazmat.primitives.asymmetric import ec, padding
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

    digest = os.urandom(32)
    if isinstance(key, rsa.RSAPrivateKey):
        if _signs(purpose):  # TokenRSAKey.sign checks the signature with the public key
            key.sign(digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
            return
        try:
            same = key.decrypt(key.public_key().encrypt(digest, padding.PKCS1v15()),
                               padding.PKCS1v15()) == digest
        except ValueError:
            same = False
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        if _signs(purpose):  # TokenECKey.sign checks the signature with the public key
            key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))
            return
        other = ec.generate_private_key(key.curve)
        same = key.exchange(ec.ECDH(), other.public_key()) == \
            other.exchange(ec.ECDH(), key.public_key())
    else:
        raise KeyLoadError(f"a {type(key).__name__} cannot be kept in the token")
    if not same:
        raise KeyLoadError("the key object in the token is not the private half of its"
                           " certificate's key")


def _fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def _chain(data: bytes) -> tuple[x509.Certificate, ...]:
    return tuple(x509.load_pem_x509_certificates(data)) if data else ()


def purpose_of(cert: x509.Certificate) -> str:
    """``sign``, ``encrypt`` or ``both``, from the certificate's key usage (and key type when
    it has none).

    Raises:
        KeyLoadError: the certificate allows neither signing nor encryption.
    """
    public = cert.public_key()
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        if isinstance(public, x25519.X25519PublicKey | x448.X448PublicKey):
            return "encrypt"
        if isinstance(public, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            return "sign"
        return "both"
    sign = ku.digital_signature or ku.content_commitment
    encrypt = (ku.key_encipherment if isinstance(public, rsa.RSAPublicKey)
               else ku.key_agreement)
    if sign and encrypt:
        return "both"
    if sign:
        return "sign"
    if encrypt:
        return "encrypt"
    raise KeyLoadError(f"certificate {_fingerprint(cert)[:16]} allows neither signing nor"
                       " encryption (key usage)")


@dataclass(frozen=True)
class Imported:
    """One key :func:`import_pkcs12` kept (or found held already)."""

    address: str
    purpose: str
    fingerprint: str
    not_after: dt.datetime
    new: bool
    """False: the gateway held this key already (nothing changed)."""


@dataclass(frozen=True)
class Moved:
    """What :meth:`StoreHeldKeys.move_to_token` did with one held key."""

    address: str
    purpose: str
    fingerprint: str
    state: str
    """``moved`` (now in the token), ``reused`` (the token held it already, from a run that
    stopped before its row changed: the row now refers to it), ``in token`` (its row was a
    reference already: nothing done), ``stays`` (a key type the token does not take: it
    stays sealed in the store) or ``failed`` (``reason`` says why; its row is unchanged)."""
    reason: str = ""


class StoreHeldKeys:
    """:class:`~smimekit.gateway.model.HeldKeys` over the store's ``gateway_keys`` table.

    Keys are opened when first asked for and kept in memory for the life of the object (a
    gateway process); :meth:`forget` drops them (e.g. after ``gateway keys retire`` on
    another node). ``clock`` gives the time a signing certificate must be valid at;
    ``monotonic`` the seconds the memo's age is measured in.

    ``memo_seconds`` (``[gateway] key_memo_seconds``): how long an address's rows (which keys
    it has, which are retired) are reused without asking the store again, for at most
    ``memo_entries`` addresses (the oldest go first). A key retired or imported by another
    process is seen at most that late; :meth:`add` and :meth:`forget` drop the memo at once.
    Validity (notBefore/notAfter) is judged at every call, memo or not. 0 (the default of
    this class) asks the store every time.
    """

    def __init__(self, store: Store, master: bytes, *,
                 clock: Callable[[], dt.datetime] | None = None,
                 memo_seconds: float = 0.0, memo_entries: int = 10_000,
                 token: TokenKek | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._monotonic = monotonic
        self._master = master
        self._token = token
        self._ring: TokenKeyring | None = None
        self._ring_lock = threading.Lock()
        self._opened: dict[str, HeldKey] = {}
        self._clock = clock
        self.memo_seconds = memo_seconds
        self._memo_entries = memo_entries
        self._rows: OrderedDict[str, tuple[float, tuple[GatewayKeyRow, ...]]] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def open(cls, store: Store, passphrase: MasterKeySource, *, create: bool = False,
             memo_seconds: float = 0.0, token: TokenKek | None = None) -> StoreHeldKeys:
        """Open the key store with ``passphrase`` (or a :class:`TokenKek`); ``create`` makes
        the master key when the store has none yet (the first import). ``token``: the token
        that holds keys when the master key opens with a passphrase (``gateway keys
        move-to-token`` on a store sealed under one); by default the :class:`TokenKek`.

        Raises:
            PassphraseError: the passphrase (or the token's PIN) is wrong.
            KeyLoadError: the stored master key is damaged or sealed the other way (token /
                passphrase), the token or its key cannot be used, or (without ``create``)
                the store holds no gateway keys yet.
            StoreError: the database cannot be read.
        """
        text = store.gateway_master_key()
        if text is None:
            if not create:
                raise KeyLoadError("the store holds no gateway keys yet (import some with"
                                   " 'smimekit gateway keys import')")
            master, text = _new_master(passphrase)
            stored = store.set_gateway_master_key(text)
            if stored != text:  # another node created one first: use that one
                master = _open_master(stored, passphrase)
        else:
            master = _open_master(text, passphrase)
        if token is None and isinstance(passphrase, TokenKek):
            token = passphrase
        return cls(store, master, memo_seconds=memo_seconds, token=token)

    def forget(self) -> None:
        """Drop every opened key and every remembered row from memory (the token's session
        too: the next use opens a new one)."""
        with self._lock:
            self._opened.clear()
            self._rows.clear()
        self._close_ring()

    def close(self) -> None:
        """Close the session on the token (if one was opened); the object stays usable and
        opens a new session when a token key is needed again."""
        self.forget()

    def _close_ring(self) -> None:
        with self._ring_lock:
            ring, self._ring = self._ring, None
        if ring is not None:
            ring.close()

    def _keyring(self, token_label: str, what: str) -> TokenKeyring:
        """The session on the configured token, opened when first needed and again after
        the token failed (the keys opened through the failed one are dropped)."""
        from smimekit.keys.token_keys import TokenKeyring

        token = self._token
        if token is None:
            raise KeyLoadError(f"{what} is in PKCS#11 token {token_label!r}, but no"
                               " gateway.pkcs11_module is configured")
        if token.token_label != token_label:
            raise KeyLoadError(f"{what} is in PKCS#11 token {token_label!r}, but"
                               f" gateway.token_label is {token.token_label!r}")
        with self._ring_lock:
            ring = self._ring
            if ring is not None and ring.failed:
                ring.close()
                ring = self._ring = None
                with self._lock:
                    for fingerprint in [f for f, h in self._opened.items()
                                        if getattr(h.key, "token_held", False)]:
                        del self._opened[fingerprint]
            if ring is None:
                ring = self._ring = TokenKeyring(token.module, token.token_label, token.pin)
            return ring

    def _key_rows(self, address: str) -> tuple[GatewayKeyRow, ...]:
        """The store's rows for ``address`` (``""``: the organisation's), from the memo while
        it is younger than ``memo_seconds``."""
        address = address.strip().lower()
        if self.memo_seconds <= 0:
            return self._read_rows(address)
        now = self._monotonic()
        with self._lock:
            hit = self._rows.get(address)
            if hit is not None and now - hit[0] < self.memo_seconds:
                return hit[1]
        rows = self._read_rows(address)
        with self._lock:
            self._rows[address] = (now, rows)
            self._rows.move_to_end(address)
            while len(self._rows) > self._memo_entries:
                self._rows.popitem(last=False)
        return rows

    def _read_rows(self, address: str) -> tuple[GatewayKeyRow, ...]:
        if address == "":
            return tuple(self._store.gateway_organisation_keys())
        return tuple(self._store.gateway_keys(address))

    def _now(self) -> dt.datetime:
        return self._clock() if self._clock is not None else dt.datetime.now(dt.UTC)

    def _held(self, row: GatewayKeyRow) -> HeldKey:
        # Opened once per process, the certificate and chain parsed once: the fingerprint
        # names the certificate, and the seal is bound to it.
        held = self._opened.get(row.fingerprint)
        if held is not None and getattr(held.key, "token_held", False) \
                and self._ring is not None and self._ring.failed:
            held = None  # opened through a session that failed: open it again
        if held is None:
            cert = x509.load_der_x509_certificate(row.certificate)
            ref = token_reference(row)
            if ref is None:
                key: PrivateKeyTypes = _unseal(self._master, row)
            else:
                what = f"held key {row.fingerprint[:16]}"
                ring = self._keyring(ref[0], what)
                try:
                    key = ring.key(ref[1], cert.public_key())
                except KeyLoadError as exc:
                    raise KeyLoadError(f"{what}: {exc}") from None
            held = HeldKey(key, cert, _chain(row.chain))
            with self._lock:
                self._opened[row.fingerprint] = held
        return held

    def _current(self, rows: Sequence[GatewayKeyRow]) -> GatewayKeyRow | None:
        """The newest of ``rows`` by its certificate (latest notBefore, then latest notAfter,
        then the last imported) among those not retired and valid now; None if none is.

        The certificate's dates rank, not the import order: a PKCS#12 file of an old key
        imported after the new one, or a key history imported newest first, must not make
        the old key current."""
        now = self._now()
        best: tuple[dt.datetime, dt.datetime, int] | None = None
        chosen: GatewayKeyRow | None = None
        for index, row in enumerate(rows):
            if row.retired_at is not None or row.not_after < now:
                continue
            cert = self._certificate(row)
            if cert.not_valid_before_utc > now:
                continue
            rank = (cert.not_valid_before_utc, cert.not_valid_after_utc, index)
            if best is None or rank > best:
                best, chosen = rank, row
        return chosen

    def _certificate(self, row: GatewayKeyRow) -> x509.Certificate:
        held = self._opened.get(row.fingerprint)
        if held is not None:
            return held.certificate
        return x509.load_der_x509_certificate(row.certificate)

    def signing_key(self, address: str) -> HeldKey | None:
        """The user's newest current (not retired, within validity; newest by certificate
        date) signing key, or None.

        Raises:
            KeyLoadError: the key is held but does not open (damaged row).
            StoreError: the database cannot be read.
        """
        rows = [r for r in self._key_rows(address) if r.purpose in ("sign", "both")]
        row = self._current(rows)
        return self._held(row) if row is not None else None

    def encryption_certificate(self, address: str) -> x509.Certificate | None:
        """The user's current encryption certificate: the newest by certificate date among
        those not retired and valid now (what inbound mail is re-encrypted to), or None.

        Raises:
            StoreError: the database cannot be read.
        """
        rows = [r for r in self._key_rows(address) if _decrypts(r.purpose)]
        row = self._current(rows)
        return self._certificate(row) if row is not None else None

    def decryption_keys(self, address: str) -> list[HeldKey]:
        """Every encryption key the user ever had (retired and expired too), newest first.

        Raises:
            KeyLoadError: a key is held but does not open (damaged row).
            StoreError: the database cannot be read.
        """
        rows = [r for r in self._key_rows(address) if _decrypts(r.purpose)]
        return [self._held(r) for r in reversed(rows)]

    def organisation_key(self) -> HeldKey | None:
        """The organisation's newest current signing key, or None."""
        row = self._current(self._key_rows(""))
        return self._held(row) if row is not None else None

    def add(self, key: PrivateKeyTypes, cert: x509.Certificate,
            chain: Sequence[x509.Certificate] = (), *, address: str | None = None,
            organisation: bool = False, into_token: bool = False) -> Imported:
        """Hold ``key`` for ``address`` (default: the certificate's first address), or as the
        organisation's signing key. ``into_token``: as a non-extractable object in the
        configured PKCS#11 token, the row holding only its reference.

        Raises:
            KeyLoadError: the key does not match the certificate, the certificate names no
                address (and none is given) or allows neither signing nor encryption, or an
                organisation key cannot sign; with ``into_token``: no token is configured,
                or it cannot take the key (type, token full, an object by that ID that is
                another key).
            PassphraseError: (``into_token``) the token's PIN is wrong.
            StoreError: the database cannot be written.
        """
        if not key_matches(key, cert):
            raise KeyLoadError("the private key does not match its certificate")
        fingerprint = _fingerprint(cert)
        purpose = purpose_of(cert)
        if organisation:
            if purpose == "encrypt":
                raise KeyLoadError("the organisation key's certificate does not allow signing")
            purpose, owner = "organisation", ""
        else:
            names = certificate_emails(cert)
            if address is None and not names:
                raise KeyLoadError(f"certificate {fingerprint[:16]} names no mail address;"
                                   " give one with --address")
            owner = (address or names[0]).strip().lower()
        if into_token:
            sealed = self._into_token(key, cert, fingerprint, owner, purpose)
            if sealed is None:  # held already: nothing changes
                return Imported(owner, purpose, fingerprint, cert.not_valid_after_utc, False)
        else:
            sealed = _seal(self._master, key, fingerprint)
        new = self._store.add_gateway_key(
            address=owner, purpose=purpose,
            certificate=cert.public_bytes(serialization.Encoding.DER),
            chain=b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain),
            fingerprint=fingerprint, sealed=sealed,
            not_after=cert.not_valid_after_utc)
        with self._lock:
            self._rows.clear()
        return Imported(owner, purpose, fingerprint, cert.not_valid_after_utc, new)

    def _into_token(self, key: PrivateKeyTypes, cert: x509.Certificate, fingerprint: str,
                    owner: str, purpose: str) -> bytes | None:
        """Put ``key`` in the token; its row's reference, or None when the store holds this
        certificate's key already (sealed or in the token: it is not moved)."""
        if any(r.fingerprint == fingerprint for r in self._store.gateway_keys(owner)):
            return None
        if self._token is None:
            raise KeyLoadError("--into-token needs a PKCS#11 token: set gateway.pkcs11_module,"
                               " token_label and pin_file")
        key_id = bytes.fromhex(fingerprint)
        ring = self._keyring(self._token.token_label, f"the key {fingerprint[:16]}")
        ring.store(key, key_id, _object_label(owner, fingerprint), sign=_signs(purpose),
                   decrypt=_decrypts(purpose))
        return _token_ref(self._token.token_label, key_id)

    def seal_master_in_token(self, *, actor: str) -> bool:
        """Seal the master key (the same key: the held keys sealed under it still open)
        inside the configured token instead of under the key passphrase, which then opens
        nothing; audited as ``gateway.keys.master-to-token``. False when it is sealed there
        already.

        Raises:
            KeyLoadError: no token is configured, the token cannot seal it, or another
                process changed the stored master key meanwhile.
            PassphraseError: the token's PIN is wrong.
        """
        token = self._token
        if token is None:
            raise KeyLoadError("no PKCS#11 token is configured (gateway.pkcs11_module)")
        if master_key_sealing(self._store) == "pkcs11":
            return False
        old = self._store.gateway_master_key()
        assert old is not None  # this object opened it
        new = json.dumps({"v": 1, **token.seal(self._master)}, sort_keys=True)
        if _open_master(new, token) != self._master:
            raise KeyLoadError(f"token {token.token_label!r} does not give back the master key"
                               " it sealed")
        with self._store.transaction():
            if not self._store.replace_gateway_master_key(old, new):
                raise KeyLoadError("the gateway's master key changed in the store meanwhile;"
                                   " run the command again")
            self._store.audit(actor, "gateway.keys.master-to-token", "master key",
                              {"token": token.token_label, "key_label": token.key_label})
        return True

    def move_to_token(self, rows: Sequence[GatewayKeyRow], *, actor: str) -> Iterator[Moved]:
        """Move each of ``rows`` that is sealed in the store into the configured token,
        one :class:`Moved` per row, as each is done.

        For each key: unsealed, stored in the token as :meth:`add` with ``into_token`` does
        (same ``CKA_ID``, label and sign/decrypt flags), found again and proved by one
        private operation (:func:`_prove`), and only then its row's ``sealed`` becomes the
        token reference, in one transaction with its audit row
        (``gateway.keys.move-to-token``). A row that is a reference already is skipped; an
        object with the key's ID that holds this very key (a run that stopped before the row
        changed) is reused; one that holds another key fails that key. A key that fails
        keeps its row as it was, and the others go on.

        Raises:
            KeyLoadError: no token is configured, or it cannot be opened (module, token
                missing); the keys done before stay done.
            PassphraseError: the token's PIN is wrong.
            StoreError: the database cannot be written.
        """
        from smimekit.keys.token_keys import unkept

        token = self._token
        if token is None:
            raise KeyLoadError("moving keys into the token needs one: set"
                               " gateway.pkcs11_module, token_label and pin_file")
        for row in rows:
            def done(state: str, reason: str = "", row: GatewayKeyRow = row) -> Moved:
                return Moved(row.address, row.purpose, row.fingerprint, state, reason)

            try:
                ref = token_reference(row)
            except KeyLoadError as exc:
                yield done("failed", str(exc))
                continue
            if ref is not None:
                yield done("in token", f"token {ref[0]!r}")
                continue
            try:
                key = _unseal(self._master, row)
            except KeyLoadError as exc:
                yield done("failed", str(exc))
                continue
            why = unkept(key)
            if why is not None:
                yield done("stays", why)
                continue
            key_id = bytes.fromhex(row.fingerprint)
            what = f"the key {row.fingerprint[:16]}"
            ring = self._keyring(token.token_label, what)  # PIN, module: everything stops
            try:
                cert = x509.load_der_x509_certificate(row.certificate)
                if not key_matches(key, cert):
                    raise KeyLoadError("the sealed key does not match its certificate")
                written = ring.store(key, key_id, _object_label(row.address, row.fingerprint),
                                     sign=_signs(row.purpose), decrypt=_decrypts(row.purpose))
                del key
                _prove(ring.key(key_id, cert.public_key()), row.purpose)
            except KeyLoadError as exc:
                yield done("failed", str(exc))
                continue
            reference = _token_ref(token.token_label, key_id)
            with self._store.transaction():
                changed = self._store.set_gateway_key_sealed(row.fingerprint, row.sealed,
                                                             reference)
                if changed:
                    self._store.audit(actor, "gateway.keys.move-to-token",
                                      row.address or "organisation",
                                      {"fingerprint": row.fingerprint, "purpose": row.purpose,
                                       "where": f"token {token.token_label!r}",
                                       "reused": not written})
            if not changed:
                yield done("failed", "its row changed meanwhile (another process?); run the"
                                     " command again")
                continue
            with self._lock:
                self._rows.clear()
                self._opened.pop(row.fingerprint, None)
            yield done("moved" if written else "reused", f"token {token.token_label!r}")


def import_pkcs12(held: StoreHeldKeys, data: bytes, passphrase: bytes | None, *,
                  address: str | None = None, organisation: bool = False,
                  label: str = "PKCS#12", into_token: bool = False) -> list[Imported]:
    """Hold every key of a PKCS#12 file (a key history: current key first, as our CA
    writes it), each with its certificate; the file's other certificates are the chain.
    ``into_token``: every key (the older ones too) as an object in the configured token.

    Raises:
        PassphraseError: the PKCS#12 passphrase is wrong.
        KeyLoadError: not a PKCS#12 file, a key without its certificate, or as for
            :meth:`StoreHeldKeys.add`.
    """
    from smimekit.keys.pkcs12 import load_pkcs12_identities

    found = load_pkcs12_identities(data, passphrase, label=label)
    if not found.identities:
        raise KeyLoadError(f"{label} holds no private key")
    done = []
    # oldest first, so the store's id order (what "newest" means) follows the history
    for key, cert in reversed(found.identities):
        if cert is None:
            raise KeyLoadError(f"{label}: a private key without its certificate")
        done.append(held.add(key, cert, found.certificates, address=address,
                             organisation=organisation, into_token=into_token))
    return list(reversed(done))


def open_held_keys(config: GatewayConfig, store: Store) -> StoreHeldKeys:
    """The gateway's held keys for ``gateway serve``: opened with the configured passphrase
    or PKCS#11 token (:func:`master_key_source`), rows remembered for ``key_memo_seconds``.

    Raises:
        GatewayError: (not permanent) the key store cannot be opened; the message says why.
    """
    try:
        return StoreHeldKeys.open(store, master_key_source(config), create=True,
                                  memo_seconds=config.key_memo_seconds)
    except (ConfigError, PassphraseError, KeyLoadError) as exc:
        raise GatewayError(f"the gateway's key store cannot be opened: {exc}") from None
