"""Recovery: a user's historic encryption keys back from escrow, with M officers' shares.

The whole API::

    from smimekit.escrow.recovery import recover_keys
    from smimekit.escrow.shares import unlock_share

    shares = [unlock_share(data, key=officer_key), unlock_share(other, passphrase=b"...")]
    pairs = recover_keys(data_dir, store, shares, email="leaver@example.com",
                         reason="ticket 4711: mailbox of a leaver", actor="cli:alice",
                         since=None, until=None)
    smimekit.decrypt(message, None, keys=pairs)

:func:`recover_keys` rebuilds the vault key in memory only (never written anywhere), opens the
user's key records whose certificates were valid at some time in ``[since, until]``, checks
each (its certificate row is intact, names the user and certifies the key) and returns
``(key, certificate)`` pairs, oldest first. Every call, successful or not, appends one
``escrow.recover`` row to the audit log in its own transaction (so call it outside any store
transaction): actor, the user as subject, and the reason, the officers whose shares were
offered, the period, the outcome, the number of keys and any error message. A refusal reveals
nothing but its reason. :func:`record_refusal` audits an attempt that failed before (a share
that did not open) or after (output not written). :func:`escrow_status` describes the escrow
without any secret.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from smimekit.ca.home import CAHome
from smimekit.dn import display_name
from smimekit.errors import EscrowError, StoreError
from smimekit.escrow.shares import UnlockedShare
from smimekit.escrow.vault import (
    EscrowState,
    key_records,
    load_state,
    open_record,
    reconstruct,
    sealed_to,
)
from smimekit.keys.vault import KeyVault
from smimekit.store import Store

__all__ = ["EscrowStatus", "escrow_status", "record_refusal", "recover_keys"]

ACTION = "escrow.recover"


def _overlaps(cert: x509.Certificate, since: dt.datetime | None,
              until: dt.datetime | None) -> bool:
    if since is not None and cert.not_valid_after_utc < since:
        return False
    return not (until is not None and cert.not_valid_before_utc > until)


def recover_keys(
    data_dir: Path | str,
    store: Store,
    shares: Sequence[UnlockedShare],
    *,
    email: str,
    reason: str,
    actor: str,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    details: Mapping[str, Any] | None = None,
) -> list[tuple[PrivateKeyTypes, x509.Certificate]]:
    """``email``'s escrowed encryption keys with their certificates, oldest first; only those
    whose certificate validity overlaps ``[since, until]`` (aware datetimes; None: open).
    ``details`` adds JSON-serialisable facts to the audit row (e.g. what the keys are for).

    An empty list means the user has keys in escrow, but none for that period (the attempt
    is still audited).

    Raises:
        EscrowError: no reason, not under escrow, a re-key under way, too few or wrong shares,
            shares of another escrow or generation, escrow data altered (``escrow.json``, a
            key record or its certificate), ``escrow.json`` rolled back or not as the store
            recorded it, no key of that user in escrow at all: nothing is returned, and the
            attempt is audited as refused.
        StoreError: the database failed, or the audit row cannot be written (then nothing
            is returned either).
    """
    email = email.strip().lower()
    facts: dict[str, Any] = {
        "reason": reason,
        "officers": [s.header.officer for s in shares],
        "from": since.isoformat() if since else None,
        "to": until.isoformat() if until else None,
        **(details or {}),
    }
    try:
        if not reason.strip():
            raise EscrowError("a recovery needs a reason (--reason): it goes into the audit"
                              " log")
        if since is not None and until is not None and since > until:
            raise EscrowError("the period ends before it starts")
        state = load_state(CAHome(data_dir), store)
        if state is None:
            raise EscrowError("the vault key is not under escrow: nothing to recover with"
                              " shares")
        if state.rekey is not None:
            raise EscrowError("a re-key is under way: finish it ('escrow rekey') before"
                              " recovering")
        vault = KeyVault(state.active.vault_cert, reconstruct(state.active, shares))
        records = store.private_keys_for(email, "encrypt")
        if not records:
            # Said only once M shares were accepted: fewer learn nothing about who is escrowed.
            raise EscrowError(f"no key of {email} is in escrow (an unknown user, or one whose"
                              " keys were never escrowed)")
        found: list[tuple[PrivateKeyTypes, x509.Certificate]] = []
        for record in records:
            if record.certificate_fingerprint is not None:
                row = store.get_certificate(record.certificate_fingerprint)
                if row is not None and not _overlaps(row.certificate, since, until):
                    continue
            found.append(open_record(vault, store, record))
        del vault
    except Exception as exc:
        _audit(store, actor, email, {**facts, "outcome": "refused", "keys": 0,
                                     "error": str(exc) or type(exc).__name__})
        raise
    _audit(store, actor, email, {
        **facts, "outcome": "recovered", "keys": len(found),
        "certificates": [format(c.serial_number, "x") for _, c in found]})
    return found


def record_refusal(
    store: Store,
    *,
    actor: str,
    email: str,
    reason: str,
    error: str,
    officers: Sequence[str] = (),
    details: Mapping[str, Any] | None = None,
) -> None:
    """Audit a recovery attempt that failed outside :func:`recover_keys` (a share that did
    not open, output that could not be written), as ``escrow.recover`` with outcome
    ``refused``.

    Raises:
        StoreError: the audit row cannot be written.
    """
    _audit(store, actor, email.strip().lower(), {
        "reason": reason, "officers": list(officers), **(details or {}),
        "outcome": "refused", "keys": 0, "error": error})


def _audit(store: Store, actor: str, email: str, details: dict[str, Any]) -> None:
    try:
        with store.transaction():
            store.audit(actor, ACTION, email, details)
    except StoreError as exc:
        raise StoreError(f"the recovery attempt could not be audited: {exc}") from None


@dataclass(frozen=True)
class EscrowStatus:
    """The escrow at a glance, without secrets (``smimekit escrow status``)."""

    vault_fingerprint: str
    """SHA-256 of ``vault.pem``, the certificate the CA seals keys to."""
    vault_key_on_disk: bool
    """``vault.p12`` is present: not under escrow (or an init that did not finish)."""
    state: EscrowState | None
    """None: not under escrow."""
    records: int
    """Key records in the store (every user's key history)."""
    sealed_to_active: int
    """Records sealed to the active vault key (``vault.pem`` outside a re-key)."""
    sealed_to_next: int
    """Records sealed to the next vault key (re-key under way)."""
    sealed_elsewhere: int
    """Records sealed to neither: recovery cannot open them."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        data: dict[str, Any] = {
            "under_escrow": self.state is not None,
            "vault_fingerprint": self.vault_fingerprint,
            "vault_key_on_disk": self.vault_key_on_disk,
            "records": self.records, "sealed_to_active": self.sealed_to_active,
            "sealed_to_next": self.sealed_to_next, "sealed_elsewhere": self.sealed_elsewhere,
        }
        if self.state is not None:
            active = self.state.active
            data.update({
                "escrow_id": self.state.escrow_id, "generation": active.generation,
                "threshold": active.threshold, "state_digest": active.digest(),
                "created_at": active.created_at,
                "officers": [{"index": o.index, "name": o.name, "protection": o.protection,
                              "certificate": display_name(o.certificate.subject)
                              if o.certificate else None} for o in active.officers],
                "rekey_to": self.state.rekey.vault_fingerprint if self.state.rekey else None,
            })
        return data


def escrow_status(data_dir: Path | str, store: Store) -> EscrowStatus:
    """The escrow state and how the key records are sealed.

    Raises:
        EscrowError: ``escrow.json`` is damaged or does not match ``vault.pem``.
        CAError: no CA.
    """
    home = CAHome(data_dir)
    state = load_state(home, store)
    vault_cert = home.certificate("vault")
    active = state.active.vault_cert if state is not None else vault_cert
    following = state.rekey.vault_cert if state is not None and state.rekey else None
    counts = [0, 0, 0]
    records = key_records(store)
    for record in records:
        if sealed_to(record.sealed, active):
            counts[0] += 1
        elif following is not None and sealed_to(record.sealed, following):
            counts[1] += 1
        else:
            counts[2] += 1
    return EscrowStatus(vault_cert.fingerprint(hashes.SHA256()).hex(),
                        (home.path / "vault.p12").is_file(), state, len(records), *counts)
