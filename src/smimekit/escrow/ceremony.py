"""Escrow ceremonies: putting the vault key under escrow, changing officers, re-keying, and
depositing keys made elsewhere. Each writes its audit row.

* :func:`init_escrow` splits the vault key for the officers, writes the share files and
  ``escrow.json`` (fsynced), audits, and only then deletes ``vault.p12``.
* :func:`rotate_escrow`: M current shares in, a new generation out (new officers and/or
  threshold, the same vault key); key records untouched; the old shares stop counting.
* :func:`rekey_escrow`: M current shares in, a new vault key; every key record re-sealed to it
  in batches (one store transaction each), resumable; new shares for the same officers.
* :func:`deposit_key`: an encryption key generated elsewhere joins a user's key history;
  a certificate that allows signing is refused (non-repudiation).

The vault's private key is only ever in memory: as shares on disk, never whole.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from sqlalchemy import select

from smimekit.ca.home import CAHome
from smimekit.errors import CAError, EscrowError, KeyLoadError, PassphraseError
from smimekit.escrow.shamir import MAX_SHARES, combine, split
from smimekit.escrow.shares import (
    OfficerSpec,
    ShareHeader,
    UnlockedShare,
    protect_share,
    share_filename,
    unlock_share,
)
from smimekit.escrow.vault import (
    EscrowGeneration,
    EscrowResult,
    EscrowState,
    Officer,
    commitment,
    fingerprint,
    key_records,
    load_state,
    open_record,
    pem,
    reconstruct,
    save_state,
    sealed_to,
)
from smimekit.fsutil import atomic_write, private_dir
from smimekit.keys.protect import unprotect_key
from smimekit.keys.vault import KeyVault
from smimekit.store import Store, StoredKey, schema
from smimekit.store.db import certificate_emails

__all__ = [
    "check_deposit",
    "deposit_key",
    "init_escrow",
    "rekey_escrow",
    "rotate_escrow",
]



def _scalar(key: ec.EllipticCurvePrivateKey) -> bytes:
    size = (key.curve.key_size + 7) // 8
    return key.private_numbers().private_value.to_bytes(size, "big")


def _vault_ec_key(key: PrivateKeyTypes, cert: x509.Certificate) -> ec.EllipticCurvePrivateKey:
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise EscrowError("the vault key is not the EC key of vault.pem")
    return key


def _new_generation(
    escrow_id: str, generation: int, vault_cert: x509.Certificate,
    vault_key: ec.EllipticCurvePrivateKey, officers: Sequence[OfficerSpec], threshold: int,
    now: dt.datetime,
) -> tuple[EscrowGeneration, list[tuple[str, bytes]]]:
    """Split the vault key for ``officers``; the generation and the share files (in memory)."""
    for spec in officers:
        spec.check()
    if len({o.name.lower() for o in officers}) != len(officers):
        raise EscrowError("two officers have the same name")
    if not 2 <= threshold <= len(officers) <= MAX_SHARES:
        raise EscrowError(f"escrow needs 2 <= threshold <= officers <= {MAX_SHARES}"
                          f" (got {threshold} of {len(officers)})")
    secret = _scalar(vault_key)
    shares = split(secret, len(officers), threshold)
    # every share lies on the polynomial, and the first and last M each rebuild the key
    if combine(shares) != secret or combine(shares[-threshold:]) != secret:
        raise EscrowError("internal: the shares do not rebuild the vault key")
    records = tuple(
        Officer(s.index, spec.name,
                "certificate" if spec.certificate is not None else "passphrase",
                spec.certificate, commitment(escrow_id, generation, s))
        for s, spec in zip(shares, officers, strict=True))
    gen = EscrowGeneration(escrow_id, generation, vault_cert, threshold, records,
                           now.replace(microsecond=0).isoformat())
    files = []
    for share, spec in zip(shares, officers, strict=True):
        header = ShareHeader(escrow_id, generation, share.index, threshold, len(officers),
                             spec.name, gen.vault_fingerprint, gen.digest(), "", None)
        files.append((share_filename(escrow_id, generation, share.index, spec.name),
                      protect_share(header, share, spec)))
    # read the passphrase-protected files back as a reader will (certificate-protected ones
    # need the officer's key, which is not here)
    for (_, data), spec, share in zip(files, officers, shares, strict=True):
        if spec.passphrase is not None:
            back = unlock_share(data, passphrase=spec.passphrase)
            if back.share != share or back.header.state_digest != gen.digest():
                raise EscrowError("internal: a share file does not read back")
    return gen, files


def _write_shares(out_dir: Path, files: Sequence[tuple[str, bytes]]) -> tuple[Path, ...]:
    written = []
    try:
        private_dir(out_dir)
        for name, data in files:
            path = out_dir / name
            atomic_write(path, data)
            if path.read_bytes() != data:
                raise EscrowError(f"the share file {path} does not read back")
            written.append(path)
    except OSError as exc:
        raise EscrowError(f"cannot write the share files in {out_dir}:"
                          f" {exc.strerror or exc}") from None
    return tuple(written)


def _record_ids(store: Store) -> list[int]:
    k = schema.private_keys
    with store.transaction() as conn:
        return [int(i) for i in conn.execute(select(k.c.id).order_by(k.c.id)).scalars()]


def _reseal(store: Store, record: StoredKey, old: KeyVault, new: KeyVault) -> None:
    key, _cert = open_record(old, store, record)
    k = schema.private_keys
    with store.transaction() as conn:
        conn.execute(k.update().where(k.c.id == record.id)
                     .values(encrypted_pkcs8=new.seal(key)))


def _reseal_all(store: Store, old: KeyVault, new: KeyVault, batch_size: int,
                progress: Callable[[int, int], None] | None) -> int:
    """Re-seal every record still sealed to ``old``; one transaction per batch."""
    ids = _record_ids(store)
    done = 0
    for start in range(0, len(ids), batch_size):
        with store.transaction():
            for record in key_records(store, ids[start:start + batch_size]):
                if sealed_to(record.sealed, new.cert):
                    continue  # done by an earlier, interrupted run
                if not sealed_to(record.sealed, old.cert):
                    raise EscrowError(f"key record {record.id} of {record.owner} is sealed to"
                                      " neither the current nor the new vault key")
                _reseal(store, record, old, new)
                done += 1
        if progress is not None:
            progress(min(start + batch_size, len(ids)), len(ids))
    return done


# -- operations ------------------------------------------------------------------------------


def _now(now: dt.datetime | None) -> dt.datetime:
    return now or dt.datetime.now(dt.UTC)


def _officer_summary(generation: EscrowGeneration) -> list[dict[str, Any]]:
    return [{"name": o.name, "protection": o.protection,
             "certificate": o.certificate_fingerprint} for o in generation.officers]


def init_escrow(
    data_dir: Path | str,
    store: Store,
    ca_passphrase: bytes,
    officers: Sequence[OfficerSpec],
    threshold: int,
    out_dir: Path,
    *,
    actor: str,
    now: dt.datetime | None = None,
) -> EscrowResult:
    """Put the CA's vault key under escrow: shares for ``officers`` (any ``threshold``
    recover), ``escrow.json``, an ``escrow.init`` audit row, then ``vault.p12`` is deleted.

    The share files and ``escrow.json`` are written and fsynced before ``vault.p12`` goes; a
    run interrupted after ``escrow.json`` is finished by calling this again.

    Raises:
        EscrowError: already under escrow, bad officers or threshold, files not writable.
        PassphraseError: wrong CA passphrase.
        CAError: no CA, or its vault files are missing.
    """
    home = CAHome(data_dir)
    state = load_state(home, store)
    vault_p12 = home.path / "vault.p12"
    if state is not None:
        if vault_p12.exists():  # an interrupted init: the shares and the state are written
            _unlink(vault_p12)
            return EscrowResult(state, ())
        raise EscrowError("the vault key is under escrow already; change officers with"
                          " 'escrow rotate'")
    try:
        data = vault_p12.read_bytes()
    except FileNotFoundError:
        raise CAError(f"{vault_p12} is missing: the vault key is not here to escrow") from None
    try:
        key = unprotect_key(data, ca_passphrase, "the CA vault key")
    except PassphraseError as exc:
        raise PassphraseError(str(exc).replace("passphrase for", "CA passphrase for")) from None
    except KeyLoadError as exc:
        raise CAError(str(exc)) from None
    vault_cert = home.certificate("vault")
    escrow_id = secrets.token_hex(8)
    at = _now(now)
    gen, files = _new_generation(escrow_id, 1, vault_cert, _vault_ec_key(key, vault_cert),
                                 officers, threshold, at)
    del key
    written = _write_shares(out_dir, files)
    state = EscrowState(escrow_id, gen)
    with store.transaction():
        store.audit(actor, "escrow.init", f"escrow {escrow_id}", {
            "generation": 1, "threshold": threshold, "officers": _officer_summary(gen),
            "vault": gen.vault_fingerprint, "state_digest": gen.digest()})
        save_state(home, state)
    _unlink(vault_p12)
    return EscrowResult(state, written)


def _unlink(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
        fd = os.open(path.parent, os.O_RDONLY)  # the removal itself must survive a power cut
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise EscrowError(f"cannot remove {path}: {exc.strerror or exc}; remove it by hand"
                          ) from None


def _require(home: CAHome, store: Store) -> EscrowState:
    state = load_state(home, store)
    if state is None:
        raise EscrowError("the vault key is not under escrow: run 'smimekit escrow init'")
    return state


def rotate_escrow(
    data_dir: Path | str,
    store: Store,
    shares: Sequence[UnlockedShare],
    officers: Sequence[OfficerSpec],
    threshold: int,
    out_dir: Path,
    *,
    actor: str,
    now: dt.datetime | None = None,
) -> EscrowResult:
    """New officers and/or threshold for the same vault key: M current shares in, a new
    generation of shares out. Key records are untouched; the old shares stop counting.

    Raises:
        EscrowError: as for :func:`reconstruct`, bad officers or threshold, a re-key is
            under way.
    """
    home = CAHome(data_dir)
    state = _require(home, store)
    if state.rekey is not None:
        raise EscrowError("a re-key is under way: finish it ('escrow rekey') first")
    key = reconstruct(state.active, shares)
    gen, files = _new_generation(state.escrow_id, state.active.generation + 1,
                                 state.active.vault_cert, key, officers, threshold, _now(now))
    del key
    written = _write_shares(out_dir, files)
    new_state = EscrowState(state.escrow_id, gen)
    with store.transaction():
        store.audit(actor, "escrow.rotate", f"escrow {state.escrow_id}", {
            "generation": gen.generation, "threshold": threshold,
            "officers": _officer_summary(gen),
            "shares_used": [s.header.officer for s in shares], "state_digest": gen.digest()})
        save_state(home, new_state)
    return EscrowResult(new_state, written)


def rekey_escrow(
    data_dir: Path | str,
    store: Store,
    shares: Sequence[UnlockedShare],
    out_dir: Path,
    *,
    actor: str,
    officers: Sequence[OfficerSpec] = (),
    batch_size: int = 100,
    progress: Callable[[int, int], None] | None = None,
    now: dt.datetime | None = None,
) -> EscrowResult:
    """A new vault key: every key record re-sealed to it, new shares for the same officers.

    M shares of the active generation rebuild the current vault key A. The first run makes
    the new key B, writes its shares (same officers and threshold; ``officers`` replaces the
    protection of the officers it names, and must name every passphrase officer, whose
    passphrase is not kept) and records "re-keying from A to B" in ``escrow.json``; B's
    private key then exists only as those shares. Records are re-sealed in batches of
    ``batch_size``, each batch one store transaction; records already sealed to B are
    skipped, so a run that stopped anywhere is continued by running it again with the same
    (old) shares. At the end ``vault.pem`` becomes B's certificate, records sealed to A in
    the meantime are swept up, and B's generation becomes the active one. Stop issuance while
    a re-key runs.

    Raises:
        EscrowError: as for :func:`reconstruct`, a passphrase officer without a new
            passphrase, a damaged record (the batch is rolled back; nothing is lost).
    """
    home = CAHome(data_dir)
    state = _require(home, store)
    old = state.active
    vault_a = KeyVault(old.vault_cert, reconstruct(old, shares))
    written: tuple[Path, ...] = ()
    if state.rekey is None:
        by_name = {o.name.lower(): o for o in officers}
        unknown = set(by_name) - {o.name.lower() for o in old.officers}
        if unknown:
            raise EscrowError(f"not an officer of this escrow: {', '.join(sorted(unknown))}"
                              " (a re-key keeps the officers; use 'escrow rotate' to change"
                              " them)")
        specs = []
        for officer in old.officers:
            spec = by_name.get(officer.name.lower())
            if spec is None and officer.certificate is None:
                raise EscrowError(f"officer {officer.name} holds a passphrase-protected share:"
                                  " give the passphrase for the new share")
            specs.append(OfficerSpec(officer.name, certificate=officer.certificate)
                         if spec is None else OfficerSpec(officer.name, spec.certificate,
                                                          spec.passphrase))
        at = _now(now)
        created = KeyVault.create(home.config().organization, now=at)
        assert created.key is not None
        gen_b, files = _new_generation(state.escrow_id, old.generation + 1, created.cert,
                                       _vault_ec_key(created.key, created.cert), specs,
                                       old.threshold, at)
        del created
        written = _write_shares(out_dir, files)
        state = EscrowState(state.escrow_id, old, gen_b)
        with store.transaction():
            store.audit(actor, "escrow.rekey", f"escrow {state.escrow_id}", {
                "phase": "started", "from_vault": old.vault_fingerprint,
                "to_vault": gen_b.vault_fingerprint, "generation": gen_b.generation,
                "shares_used": [s.header.officer for s in shares],
                "state_digest": gen_b.digest()})
            save_state(home, state)
    elif officers:
        raise EscrowError("a re-key is under way and its new shares exist already: run"
                          " 'escrow rekey' again with the current shares only")
    new = state.rekey
    assert new is not None
    vault_b = KeyVault(new.vault_cert)
    batch_size = max(1, batch_size)
    resealed = _reseal_all(store, vault_a, vault_b, batch_size, progress)
    try:
        if home.certificate("vault") != new.vault_cert:
            atomic_write(home.path / "vault.pem", pem(new.vault_cert).encode())
    except OSError as exc:
        raise EscrowError(f"cannot write vault.pem: {exc.strerror or exc}") from None
    # records a running CA sealed to the old key before the switch
    resealed += _reseal_all(store, vault_a, vault_b, batch_size, None)
    final = EscrowState(state.escrow_id, new)
    with store.transaction():
        store.audit(actor, "escrow.rekey", f"escrow {state.escrow_id}", {
            "phase": "finished", "vault": new.vault_fingerprint,
            "generation": new.generation, "resealed": resealed, "state_digest": new.digest()})
        save_state(home, final)
    return EscrowResult(final, written, resealed)


# -- deposit ---------------------------------------------------------------------------------


def check_deposit(key: PrivateKeyTypes, cert: x509.Certificate, email: str) -> None:
    """A key may be escrowed only for encryption: its certificate must not allow signing.

    Raises:
        EscrowError: keyUsage allows digitalSignature or nonRepudiation (or is absent), lacks
            keyEncipherment/keyAgreement, the key is not the certificate's, or the
            certificate does not name ``email``.
    """
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise EscrowError("the certificate has no keyUsage, so its key may sign: signing keys"
                          " are never escrowed (non-repudiation)") from None
    signing = [n for n, on in (("digitalSignature", usage.digital_signature),
                               ("nonRepudiation", usage.content_commitment)) if on]
    if signing:
        raise EscrowError(
            f"the certificate allows signing ({', '.join(signing)}): signing keys are never"
            " escrowed, since anyone who could recover the key could sign as its holder"
            " (non-repudiation). Escrow only an encryption-only key")
    if not (usage.key_encipherment or usage.key_agreement):
        raise EscrowError("the certificate allows neither keyEncipherment nor keyAgreement:"
                          " not an encryption key")
    if key.public_key() != cert.public_key():
        raise EscrowError("the key is not the certificate's key")
    if email.strip().lower() not in certificate_emails(cert):
        raise EscrowError(f"the certificate does not name {email}")


def deposit_owner(cert: x509.Certificate) -> str:
    """Whose key history a deposited key joins when no address is given: the one address
    the certificate names.

    Raises:
        EscrowError: the certificate names no address, or several.
    """
    emails = sorted(certificate_emails(cert))
    if len(emails) != 1:
        named = f"names {', '.join(emails)}" if emails else "names no mail address"
        raise EscrowError(f"the certificate {named}: say whose key it is with --email")
    return emails[0]


def deposit_key(
    data_dir: Path | str,
    store: Store,
    key: PrivateKeyTypes,
    cert: x509.Certificate,
    email: str,
    *,
    actor: str,
) -> int:
    """Escrow an encryption key generated elsewhere (e.g. a user's own): sealed to the vault
    certificate into ``email``'s key history, with an ``escrow.deposit`` audit row. Needs no
    shares and no CA passphrase. Returns the record id.

    Raises:
        EscrowError: as for :func:`check_deposit`, or the key is in escrow already.
    """
    check_deposit(key, cert, email)
    home = CAHome(data_dir)
    load_state(home, store)  # refuses a vault.pem or escrow.json not as the store recorded
    vault = KeyVault(home.certificate("vault"))
    cert_fp = fingerprint(cert)
    with store.transaction():
        if any(r.certificate_fingerprint == cert_fp for r in store.private_keys_for(email)):
            raise EscrowError(f"the key of that certificate is in {email}'s escrow already")
        if store.get_certificate(cert_fp) is None:
            store.add_certificate(cert, "escrow-deposit")
        record = store.add_private_key(vault.seal(key), owner=email, purpose="encrypt",
                                       certificate_fingerprint=cert_fp)
        store.audit(actor, "escrow.deposit", email.strip().lower(), {
            "certificate": cert_fp, "serial": format(cert.serial_number, "x"),
            "record": record})
    return record
