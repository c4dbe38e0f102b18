"""escrow.json is checked against the store's audit log (a separate trust domain): an older
copy restored after ``rotate`` (which would make retired shares count again), an edited
one, one removed behind the store's back, or one the store never recorded is refused, before
any share is looked at. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from escrow_kit import CA_PASS, LEAVER, Env, make_leaver

from smimekit.errors import EscrowError
from smimekit.escrow import vault
from smimekit.escrow.ceremony import deposit_key, init_escrow, rekey_escrow, rotate_escrow
from smimekit.escrow.recovery import escrow_status, recover_keys
from smimekit.escrow.shares import OfficerSpec
from smimekit.escrow.vault import check_share, load_state
from smimekit.store import Store

ROLLBACK = r"escrow\.json was rolled back: it is at generation 1, but the store's audit log" \
           r" recorded generation 2"


def _rotate(env: Env, out: Path) -> None:
    rotate_escrow(env.data_dir, env.store, env.shares("Alice", "Dave", "Erin"),
                  [o.spec for o in env.officers[:3]], 2, out, actor="test")


def _recover(env: Env, shares: Any) -> list[Any]:
    return recover_keys(env.data_dir, env.store, shares, email=LEAVER, reason="r", actor="t")


def test_escrow_json_restored_after_rotate_is_refused_as_a_rollback(
        env: Env, tmp_path: Path) -> None:
    make_leaver(env.cax)
    env.escrow()
    state_file = env.home.path / "escrow.json"
    backup = tmp_path / "escrow.json.gen1"
    shutil.copy(state_file, backup)
    _rotate(env, tmp_path / "gen2")
    current = state_file.read_bytes()
    shutil.copy(backup, state_file)  # the attack: the retired generation is back on disk
    # Without the store, the file alone looks fine and the retired shares would count:
    old = load_state(env.home)
    assert old is not None and old.active.generation == 1
    check_share(old.active, env.shares("Bob")[0])
    # Every operation reads it with the store, and refuses before looking at a share.
    with pytest.raises(EscrowError, match=ROLLBACK):
        load_state(env.home, env.store)
    with pytest.raises(EscrowError, match=ROLLBACK):
        _recover(env, env.shares("Alice", "Bob", "Carol"))
    with pytest.raises(EscrowError, match=ROLLBACK):
        rotate_escrow(env.data_dir, env.store, env.shares("Alice", "Bob", "Carol"),
                      [o.spec for o in env.officers], 3, tmp_path / "again", actor="test")
    with pytest.raises(EscrowError, match=ROLLBACK):
        escrow_status(env.data_dir, env.store)
    rows = [e.details for e in env.store.audit_entries() if e.action == "escrow.recover"]
    assert [(r["outcome"], "rolled back" in r["error"]) for r in rows] == [("refused", True)]
    # The current escrow.json back: the current shares work, the retired ones do not.
    state_file.write_bytes(current)
    assert len(_recover(env, env.shares("Bob", "Carol", generation=2,
                                        directory=tmp_path / "gen2"))) == 3
    with pytest.raises(EscrowError, match="generation 1, but the escrow is at generation 2"):
        _recover(env, env.shares("Alice", "Bob", "Carol"))
    assert env.store.verify_audit_log() == []


def test_current_escrow_json_after_rotate_works_as_before(env: Env, tmp_path: Path) -> None:
    leaver = make_leaver(env.cax)
    env.escrow()
    _rotate(env, tmp_path / "gen2")
    state = load_state(env.home, env.store)
    assert state is not None and state.active.generation == 2
    pairs = _recover(env, env.shares("Bob", "Carol", generation=2, directory=tmp_path / "gen2"))
    assert [c for _, c in pairs] == leaver.certs
    with pytest.raises(EscrowError, match="generation 1, but the escrow is at generation 2"):
        _recover(env, env.shares("Alice", "Dave", "Erin"))


def test_tampered_officer_list_is_refused_without_any_share(env: Env) -> None:
    env.escrow()
    path = env.home.path / "escrow.json"
    original = path.read_text()
    for edit in (lambda d: d["active"]["officers"][0].update(name="Mallory"),
                 lambda d: d["active"]["officers"].pop()
                 or d["active"].update(threshold=2),
                 lambda d: d["active"].update(threshold=2)):
        data = json.loads(original)
        edit(data)
        path.write_text(json.dumps(data))
        with pytest.raises(EscrowError, match=r"escrow\.json was altered: its generation 1"
                                              r" does not match the state the store's audit"):
            load_state(env.home, env.store)
    path.write_text(original)
    assert load_state(env.home, env.store) is not None


def test_escrow_json_the_store_never_recorded_is_refused(env: Env, tmp_path: Path) -> None:
    env.escrow()
    with Store.open(None, tmp_path / "other-store") as other:
        with pytest.raises(EscrowError, match=r"has no record of escrow .*: escrow\.json does"
                                              r" not belong to this store"):
            load_state(env.home, other)
        with pytest.raises(EscrowError, match="no record of escrow"):
            recover_keys(env.data_dir, other, env.shares("Alice", "Bob", "Carol"),
                         email=LEAVER, reason="r", actor="t")


def test_escrow_json_of_a_newer_generation_than_the_store_is_refused(
        env: Env, tmp_path: Path) -> None:
    """The store restored from a backup taken before a rotate: the file is ahead."""
    env.escrow()
    before = tmp_path / "store-before"
    with Store.open(None, before) as snapshot:
        for entry in env.store.audit_entries():  # the log as it was, in a second store
            snapshot.audit(entry.actor, entry.action, entry.subject, entry.details)
    _rotate(env, tmp_path / "gen2")
    with Store.open(None, before) as old_store:
        with pytest.raises(EscrowError, match="at generation 2, but the store's audit log"
                                              " recorded only generation 1"):
            load_state(env.home, old_store)


def test_escrow_json_removed_while_the_store_records_the_escrow_is_refused(
        env: Env, tmp_path: Path) -> None:
    vault_p12 = env.home.path / "vault.p12"
    saved = vault_p12.read_bytes()
    env.escrow()
    (env.home.path / "escrow.json").unlink()
    vault_p12.write_bytes(saved)  # the data dir restored from before escrow init
    with pytest.raises(EscrowError, match="is missing, but the store's audit log records"):
        load_state(env.home, env.store)
    # init would otherwise split the restored vault key afresh for whoever holds the CA
    # passphrase, and the officers' escrow would be bypassed
    with pytest.raises(EscrowError, match="restored from before 'escrow init'"):
        init_escrow(env.data_dir, env.store, CA_PASS, [o.spec for o in env.officers], 3,
                    tmp_path / "fresh", actor="test")


def test_rekey_phases_are_recorded_and_a_rolled_back_rekey_is_refused(
        env: Env, tmp_path: Path) -> None:
    make_leaver(env.cax)
    env.escrow()
    state_file = env.home.path / "escrow.json"
    gen1 = state_file.read_bytes()
    officers = [OfficerSpec(o.name, passphrase=o.passphrase) for o in env.officers
                if o.passphrase is not None]
    rekey_escrow(env.data_dir, env.store, env.shares("Alice", "Bob", "Dave"),
                 tmp_path / "rekeyed", actor="test", officers=officers)
    digests = [e.details.get("state_digest") for e in env.store.audit_entries()
               if e.action == "escrow.rekey"]
    state = load_state(env.home, env.store)
    assert state is not None and digests == [state.active.digest()] * 2
    state_file.write_bytes(gen1)
    with pytest.raises(EscrowError):  # vault.pem is the new key: refused either way
        load_state(env.home, env.store)


def test_rekey_rows_of_the_previous_version_are_still_accepted(
        env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stores written before the state digest was recorded for a re-key (only the new vault
    fingerprint was): the escrow goes on working, a rollback is still refused."""
    leaver = make_leaver(env.cax)
    env.escrow()
    real_audit = env.store.audit

    def old_audit(actor: str, action: str, subject: str,
                  details: dict[str, Any] | None = None) -> Any:
        if action == "escrow.rekey" and details is not None:
            details = {k: v for k, v in details.items() if k != "state_digest"}
        return real_audit(actor, action, subject, details)

    monkeypatch.setattr(env.store, "audit", old_audit)
    officers = [OfficerSpec(o.name, passphrase=o.passphrase) for o in env.officers
                if o.passphrase is not None]
    gen1 = (env.home.path / "escrow.json").read_bytes()
    rekey_escrow(env.data_dir, env.store, env.shares("Alice", "Bob", "Dave"),
                 tmp_path / "rekeyed", actor="test", officers=officers)
    monkeypatch.undo()
    assert not any("state_digest" in e.details for e in env.store.audit_entries()
                   if e.action == "escrow.rekey")
    pairs = _recover(env, env.shares("Bob", "Carol", "Erin", generation=2,
                                     directory=tmp_path / "rekeyed"))
    assert [c for _, c in pairs] == leaver.certs
    (env.home.path / "escrow.json").write_bytes(gen1)
    with pytest.raises(EscrowError):
        load_state(env.home, env.store)


def test_deposit_refuses_an_escrow_json_not_as_recorded(env: Env, tmp_path: Path,
                                                       pki: Any) -> None:
    env.escrow()
    path = env.home.path / "escrow.json"
    data = json.loads(path.read_text())
    data["active"]["officers"][1]["name"] = "Mallory"
    path.write_text(json.dumps(data))
    who = pki.person("depositor", "p256", key_usage="encrypt")
    with pytest.raises(EscrowError, match=r"escrow\.json was altered"):
        deposit_key(env.data_dir, env.store, who.key, who.cert, who.email, actor="test")


def test_the_record_check_reads_only_this_escrows_rows(env: Env) -> None:
    env.escrow()
    state = load_state(env.home, env.store)
    assert state is not None
    rows = vault.recorded(env.store, state.escrow_id)
    assert [r.action for r in rows] == ["escrow.init"]
    assert rows[0].details["state_digest"] == state.active.digest()


def test_escrow_json_removed_after_a_rekey_is_refused(env: Env, tmp_path: Path) -> None:
    env.escrow()
    officers = [OfficerSpec(o.name, passphrase=o.passphrase) for o in env.officers
                if o.passphrase is not None]
    rekey_escrow(env.data_dir, env.store, env.shares("Alice", "Bob", "Dave"),
                 tmp_path / "rekeyed", actor="test", officers=officers)
    (env.home.path / "escrow.json").unlink()
    with pytest.raises(EscrowError, match="is missing, but the store's audit log records"):
        load_state(env.home, env.store)
