"""The escrow key is the CA's key vault key, held as M-of-N Shamir shares.

``escrow init`` splits the vault's P-384 private scalar (48 bytes; the curve and the public
key come from ``vault.pem``) into one share per key recovery officer, writes each share file
protected for its officer (:mod:`smimekit.escrow.shares`), checks the shares, records the
escrow state in ``<data-dir>/ca/escrow.json`` and then deletes ``vault.p12``. The CA goes on
sealing users' encryption keys to the vault certificate (it never needed the private key for
that); opening them takes M officers.

``escrow.json`` (no secrets; written atomically)::

    {"version": 1, "escrow_id": "<16 hex>",
     "active": GENERATION,            the shares that count now
     "rekey": GENERATION | null}      the next vault key while a re-key runs

    GENERATION = {"generation": 1, "created_at": "...", "threshold": 3,
                  "vault_certificate": "<PEM>", "vault_fingerprint": "<sha256>",
                  "officers": [{"index": 1, "name": "...", "protection": "certificate",
                                "certificate": "<PEM>", "certificate_fingerprint": "...",
                                "commitment": "<sha256 of the share>"}, ...]}

Every share file carries the SHA-256 of its generation's public state (the *state digest*:
escrow id, generation, vault fingerprint, threshold, officers and commitments), inside its
authenticated data. A share is accepted only when its escrow id, generation, state digest,
officer and commitment all match ``escrow.json``, and the shares together must rebuild the
private key of the vault certificate: so a wrong share, a share of another escrow or of a
replaced generation, and an edited ``escrow.json`` are each refused by name.

``escrow.json`` lives in the data directory; the store is a separate trust domain. Every
ceremony that writes ``escrow.json`` appends, in the same store transaction, an audit row
(``escrow.init``, ``escrow.rotate``, ``escrow.rekey``; subject ``escrow <id>``) recording the
generation it made and its state digest. :func:`load_state` given the store checks the file
against that record (:func:`check_recorded`): a file of an older generation (an
``escrow.json`` restored after ``escrow rotate``, which would make the retired shares count
again) is refused as a rollback, one that does not match the digest recorded for its
generation as altered, and a missing file whose vault the store records as escrowed as
removed. docs/escrow.md ("Threat model") says what this does and does not stop.

This module holds the state (:func:`load_state`, :func:`save_state`), the share checks and the
reconstruction (:func:`check_share`, :func:`reconstruct`) and the key records
(:func:`key_records`, :func:`sealed_to`, :func:`open_record`). The ceremonies that change the
escrow (init, rotate, re-key, deposit) are in :mod:`smimekit.escrow.ceremony`; recovery is in
:mod:`smimekit.escrow.recovery`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from sqlalchemy import select

from smimekit.ca.home import CAHome
from smimekit.cms.keyinfo import matches_issuer_serial, matches_ski
from smimekit.errors import CAError, EscrowError
from smimekit.escrow.shamir import MAX_SHARES, Share, combine
from smimekit.escrow.shares import UnlockedShare, canonical
from smimekit.fsutil import atomic_write
from smimekit.keys.vault import KeyVault
from smimekit.store import Store, StoredKey, schema
from smimekit.store.db import certificate_emails

__all__ = [
    "RECORDING_ACTIONS",
    "STATE_FILE",
    "EscrowGeneration",
    "EscrowResult",
    "EscrowState",
    "Officer",
    "check_recorded",
    "check_share",
    "commitment",
    "fingerprint",
    "key_records",
    "load_state",
    "open_record",
    "pem",
    "reconstruct",
    "recorded",
    "save_state",
    "sealed_to",
]

STATE_FILE = "escrow.json"
STATE_VERSION = 1
_DOMAIN = b"smimekit escrow share commitment v1\x00"


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate, lower-case hex."""
    return cert.fingerprint(hashes.SHA256()).hex()


def pem(cert: x509.Certificate) -> str:
    """The certificate as PEM text."""
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def commitment(escrow_id: str, generation: int, share: Share) -> str:
    """SHA-256 over the share and where it belongs: names a wrong share without revealing it
    (a share is as random as a key)."""
    where = canonical({"escrow_id": escrow_id, "generation": generation,
                       "index": share.index, "threshold": share.threshold})
    return hashlib.sha256(_DOMAIN + where + b"\x00" + share.value).hexdigest()


@dataclass(frozen=True)
class Officer:
    """One key recovery officer of a generation, as ``escrow.json`` records them."""

    index: int
    name: str
    protection: str
    """``certificate`` or ``passphrase``."""
    certificate: x509.Certificate | None
    commitment: str

    @property
    def certificate_fingerprint(self) -> str | None:
        return fingerprint(self.certificate) if self.certificate is not None else None

    def public(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "protection": self.protection,
                "certificate_fingerprint": self.certificate_fingerprint,
                "commitment": self.commitment}


@dataclass(frozen=True)
class EscrowGeneration:
    """One sharing of one vault key: threshold, officers, share commitments."""

    escrow_id: str
    generation: int
    vault_cert: x509.Certificate
    threshold: int
    officers: tuple[Officer, ...]
    created_at: str

    @property
    def vault_fingerprint(self) -> str:
        return fingerprint(self.vault_cert)

    def public(self) -> dict[str, Any]:
        """What the state digest covers (and ``escrow status`` shows)."""
        return {"escrow_id": self.escrow_id, "generation": self.generation,
                "vault_fingerprint": self.vault_fingerprint, "threshold": self.threshold,
                "officers": [o.public() for o in self.officers],
                "created_at": self.created_at}

    def digest(self) -> str:
        """The state digest every share of this generation carries."""
        return hashlib.sha256(canonical(self.public())).hexdigest()

    def to_json(self) -> dict[str, Any]:
        data = self.public()
        del data["escrow_id"]
        data["vault_certificate"] = pem(self.vault_cert)
        for entry, officer in zip(data["officers"], self.officers, strict=True):
            entry["certificate"] = pem(officer.certificate) if officer.certificate else None
        return data

    @classmethod
    def from_json(cls, escrow_id: str, data: Any) -> EscrowGeneration:
        cert = x509.load_pem_x509_certificate(data["vault_certificate"].encode())
        officers = []
        for entry in data["officers"]:
            officer_cert = (x509.load_pem_x509_certificate(entry["certificate"].encode())
                            if entry.get("certificate") else None)
            officers.append(Officer(int(entry["index"]), str(entry["name"]),
                                    str(entry["protection"]), officer_cert,
                                    str(entry["commitment"])))
            if entry.get("certificate_fingerprint") != officers[-1].certificate_fingerprint:
                raise ValueError("officer certificate fingerprint")
        generation = cls(escrow_id, int(data["generation"]), cert, int(data["threshold"]),
                         tuple(officers), str(data["created_at"]))
        if data["vault_fingerprint"] != generation.vault_fingerprint:
            raise ValueError("vault fingerprint")
        n = len(officers)
        if not 2 <= generation.threshold <= n <= MAX_SHARES \
                or [o.index for o in officers] != list(range(1, n + 1)) \
                or len({o.name.lower() for o in officers}) != n \
                or any((o.protection == "certificate") != (o.certificate is not None)
                       or o.protection not in ("certificate", "passphrase")
                       for o in officers):
            raise ValueError("officers")
        return generation


@dataclass(frozen=True)
class EscrowState:
    """``escrow.json``: the active generation, and the next one while a re-key runs."""

    escrow_id: str
    active: EscrowGeneration
    rekey: EscrowGeneration | None = None

    def to_json(self) -> bytes:
        data = {"version": STATE_VERSION, "escrow_id": self.escrow_id,
                "active": self.active.to_json(),
                "rekey": self.rekey.to_json() if self.rekey else None}
        return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


@dataclass(frozen=True)
class EscrowResult:
    """What init, rotate and re-key produced."""

    state: EscrowState
    share_files: tuple[Path, ...]
    """The new share files, one per officer: hand each to its officer, then delete it here."""
    resealed: int = 0
    """Key records re-sealed to the new vault key (re-key only)."""


def load_state(home: CAHome, store: Store | None = None) -> EscrowState | None:
    """The escrow state of the CA in ``home``, or None when its vault is not under escrow.

    With ``store`` (every escrow operation passes it), the state is also checked against what
    the store's audit log recorded (:func:`check_recorded`); without it, only the file and
    ``vault.pem`` are read (for display, e.g. ``ca history``).

    Raises:
        EscrowError: ``escrow.json`` is damaged or edited inconsistently, ``vault.pem`` is not
            the vault key it describes, or (with ``store``) it was rolled back, altered or
            removed behind the store's back.
        CAError: no CA.
        StoreError: the audit log cannot be read.
    """
    path = home.path / STATE_FILE
    vault_cert = home.certificate("vault")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if store is not None:
            _check_not_removed(store, vault_cert, path)
        return None
    except OSError as exc:
        raise EscrowError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(raw)
        if data.get("version") != STATE_VERSION:
            raise EscrowError(f"{path} has an unknown version")
        escrow_id = str(data["escrow_id"])
        state = EscrowState(
            escrow_id, EscrowGeneration.from_json(escrow_id, data["active"]),
            EscrowGeneration.from_json(escrow_id, data["rekey"]) if data.get("rekey") else None)
    except EscrowError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise EscrowError(f"{path} is damaged or was edited ({exc}): refusing to use it"
                          ) from None
    known = [state.active.vault_cert] + ([state.rekey.vault_cert] if state.rekey else [])
    if vault_cert not in known:
        raise EscrowError(f"{home.path / 'vault.pem'} is not the vault certificate that"
                          f" {STATE_FILE} describes: one of them was altered")
    if store is not None:
        check_recorded(state, store)
    return state


# -- what the store recorded ----------------------------------------------------------------------

RECORDING_ACTIONS = ("escrow.init", "escrow.rotate", "escrow.rekey")
"""The audit actions that record a new generation of ``escrow.json``."""


@dataclass(frozen=True)
class _Recorded:
    row: int
    action: str
    details: dict[str, Any]

    @property
    def generation(self) -> int:
        return int(self.details.get("generation", 0))

    @property
    def rekey_started(self) -> bool:
        return self.action == "escrow.rekey" and self.details.get("phase") == "started"


def recorded(store: Store, escrow_id: str | None = None) -> list[_Recorded]:
    """The audit rows that recorded generations (of ``escrow_id``, or of every escrow), in
    log order: one per ceremony, so a handful.

    Raises:
        StoreError: the audit log cannot be read.
    """
    log = schema.audit_log
    query = select(log.c.id, log.c.action, log.c.details).where(
        log.c.action.in_(RECORDING_ACTIONS)).order_by(log.c.id)
    if escrow_id is not None:
        query = query.where(log.c.subject == f"escrow {escrow_id}")
    with store.transaction() as conn:
        rows = conn.execute(query).all()
    return [_Recorded(int(r.id), str(r.action), json.loads(r.details)) for r in rows]


def _made(rows: Sequence[_Recorded], generation: int) -> _Recorded | None:
    """The row that made ``generation`` (init, rotate, or the start of a re-key)."""
    for row in reversed(rows):
        if row.generation == generation and (row.action != "escrow.rekey" or row.rekey_started):
            return row
    return None


def _matches(row: _Recorded, generation: EscrowGeneration) -> bool:
    digest = row.details.get("state_digest")
    if digest is not None:
        return bool(digest == generation.digest())
    # re-key rows written before the digest was recorded name the new vault key
    return bool(row.details.get("to_vault") == generation.vault_fingerprint)


def check_recorded(state: EscrowState, store: Store) -> None:
    """``state`` (from ``escrow.json``) is the one the store's audit log last recorded.

    The newest row of this escrow fixes the current generation number and whether a re-key
    is under way; each generation in the file must match the digest recorded when it was made.

    Raises:
        EscrowError: the store has no record of this escrow; the file is of an older
            generation than recorded (rolled back: retired shares would count again) or a
            newer one (the store was rolled back or replaced); the file does not match the
            recorded state digest (altered); the re-key phase disagrees.
        StoreError: the audit log cannot be read.
    """
    rows = recorded(store, state.escrow_id)
    newest = state.rekey or state.active
    if not rows:
        raise EscrowError(
            f"the store's audit log has no record of escrow {state.escrow_id}: {STATE_FILE}"
            " does not belong to this store (another --database-url?) or the log was cut;"
            " refusing to use it")
    last = rows[-1]
    if newest.generation < last.generation:
        raise EscrowError(
            f"{STATE_FILE} was rolled back: it is at generation {newest.generation}, but the"
            f" store's audit log recorded generation {last.generation} (row {last.row});"
            f" an older {STATE_FILE} would let retired shares count again. Refusing: restore"
            f" the current {STATE_FILE}")
    if newest.generation > last.generation:
        raise EscrowError(
            f"{STATE_FILE} is at generation {newest.generation}, but the store's audit log"
            f" recorded only generation {last.generation} (row {last.row}): the store was"
            " rolled back or replaced; refusing")
    if (state.rekey is not None) != last.rekey_started:
        raise EscrowError(
            f"{STATE_FILE} and the store's audit log (row {last.row}) disagree on whether a"
            f" re-key is under way: one of them was rolled back; refusing")
    generations = [state.active] + ([state.rekey] if state.rekey is not None else [])
    for generation in generations:
        made = _made(rows, generation.generation)
        if made is None or not _matches(made, generation):
            raise EscrowError(
                f"{STATE_FILE} was altered: its generation {generation.generation} does not"
                " match the state the store's audit log recorded"
                + (f" (row {made.row})" if made is not None else "")
                + " (officers, threshold, commitments or vault key); refusing to use it")


def _check_not_removed(store: Store, vault_cert: x509.Certificate, path: Path) -> None:
    vault = fingerprint(vault_cert)
    for row in recorded(store):
        # init names the vault key it escrowed, a re-key the one it moved to
        if vault in (row.details.get("vault"), row.details.get("to_vault")):
            raise EscrowError(
                f"{path} is missing, but the store's audit log records that this vault key"
                f" was put under escrow (row {row.row}): the data directory was restored from"
                f" before 'escrow init' or {STATE_FILE} was removed; refusing")


def save_state(home: CAHome, state: EscrowState) -> None:
    """Write ``escrow.json`` atomically (fsynced). Raises EscrowError when it cannot."""
    try:
        atomic_write(home.path / STATE_FILE, state.to_json())
    except OSError as exc:
        raise EscrowError(f"cannot write {home.path / STATE_FILE}: {exc.strerror or exc}"
                          ) from None


# -- shares and reconstruction --------------------------------------------------------------------


def check_share(generation: EscrowGeneration, unlocked: UnlockedShare) -> None:
    """Whether one opened share counts for ``generation`` (see :func:`reconstruct`).

    Raises:
        EscrowError: it belongs to another escrow or generation, ``escrow.json`` does not
            match the state it was made for, or it does not match its officer or commitment.
    """
    h = unlocked.header
    what = f"the share in {unlocked.source} (officer {h.officer})"
    if h.escrow_id != generation.escrow_id:
        raise EscrowError(f"{what} belongs to another escrow ({h.escrow_id}, not"
                          f" {generation.escrow_id})")
    if h.generation != generation.generation:
        raise EscrowError(
            f"{what} is of generation {h.generation}, but the escrow is at generation"
            f" {generation.generation}: shares are replaced by 'escrow rotate' and"
            " 'escrow rekey', and old ones no longer count")
    if h.state_digest != generation.digest():
        raise EscrowError(f"{STATE_FILE} does not match the state {what} was made for:"
                          f" {STATE_FILE} was altered")
    officer = generation.officers[h.index - 1] if h.index <= len(generation.officers) else None
    if officer is None or officer.name != h.officer or h.threshold != generation.threshold:
        raise EscrowError(f"{what} does not match its officer in {STATE_FILE}")
    if commitment(generation.escrow_id, generation.generation, unlocked.share) \
            != officer.commitment:
        raise EscrowError(f"{what} does not match its commitment in {STATE_FILE}:"
                          " a wrong or altered share")


def reconstruct(
    generation: EscrowGeneration, shares: Sequence[UnlockedShare],
) -> ec.EllipticCurvePrivateKey:
    """The vault private key of ``generation`` from at least its threshold of shares.

    Every share must belong to this escrow, this generation and this state (``escrow.json``
    unedited), to the officer its index names, and match its commitment; one that does not
    is refused by name rather than skipped.

    Raises:
        EscrowError: too few shares, a share given twice, a wrong share, a share of another
            escrow or generation, ``escrow.json`` edited, or the shares do not rebuild the key
            of the vault certificate.
    """
    seen: set[int] = set()
    for unlocked in shares:
        check_share(generation, unlocked)
        if unlocked.header.index in seen:
            raise EscrowError(f"the share of officer {unlocked.header.officer} was given twice")
        seen.add(unlocked.header.index)
    if len(shares) < generation.threshold:
        raise EscrowError(f"{len(shares)} valid share{'s' if len(shares) != 1 else ''} given,"
                          f" {generation.threshold} needed (of {len(generation.officers)}"
                          " officers)")
    secret = combine([s.share for s in shares])
    public = generation.vault_cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise EscrowError("the vault certificate does not hold an EC key")
    try:
        key = ec.derive_private_key(int.from_bytes(secret, "big"), public.curve)
    except ValueError:
        key = None
    if key is None or key.public_key() != public:
        raise EscrowError("the shares do not rebuild the vault key (forged or mismatched"
                          " shares)")
    return key


# -- key records ---------------------------------------------------------------------------------


def sealed_to(sealed: bytes, cert: x509.Certificate) -> bool:
    """Whether a sealed key record names ``cert`` as a recipient (no key needed)."""
    try:
        info = cms.ContentInfo.load(sealed)
        for ri in info["content"]["recipient_infos"]:
            if ri.name == "kari":
                for rek in ri.chosen["recipient_encrypted_keys"]:
                    rid = rek["rid"]
                    if rid.name == "issuer_and_serial_number":
                        if matches_issuer_serial(rid.chosen, cert):
                            return True
                    elif matches_ski(rid.chosen["subject_key_identifier"].native, cert):
                        return True
            elif ri.name == "ktri":
                rid = ri.chosen["rid"]
                if (matches_issuer_serial(rid.chosen, cert)
                        if rid.name == "issuer_and_serial_number"
                        else matches_ski(rid.chosen.native, cert)):
                    return True
    except (ValueError, TypeError, KeyError):
        return False
    return False


def open_record(vault: KeyVault, store: Store,
                record: StoredKey) -> tuple[PrivateKeyTypes, x509.Certificate]:
    """Open one key record with the vault and check it: the certificate row is intact, names
    the record's owner, and certifies the key.

    Raises:
        EscrowError: the record or its certificate is missing, damaged or tampered.
    """
    what = f"key record {record.id} of {record.owner}"
    if record.certificate_fingerprint is None:
        raise EscrowError(f"{what} names no certificate")
    row = store.get_certificate(record.certificate_fingerprint)
    if row is None:
        raise EscrowError(f"{what}: its certificate is missing from the store")
    if hashlib.sha256(row.der).hexdigest() != record.certificate_fingerprint:
        raise EscrowError(f"{what}: its certificate row was altered")
    cert = row.certificate
    if record.owner not in certificate_emails(cert):
        raise EscrowError(f"{what}: its certificate names another address: tampered")
    try:
        return vault.open(record.sealed, cert), cert
    except CAError as exc:
        raise EscrowError(f"{what}: {exc}") from None


def key_records(store: Store, ids: Iterable[int] | None = None) -> list[StoredKey]:
    """Every key record (all users), or those with ``ids``, in id order."""
    k = schema.private_keys
    query = select(k).order_by(k.c.id)
    if ids is not None:
        query = query.where(k.c.id.in_(list(ids)))
    with store.transaction() as conn:
        rows = conn.execute(query).all()
    return [StoredKey(r.id, bytes(r.encrypted_pkcs8), r.owner, r.purpose,
                      r.certificate_fingerprint, r.created_at, r.retired_at) for r in rows]
