"""recover_keys(): the leaver's whole key history with M shares and not with M-1, periods,
tampered records, and an audit row for every attempt. On SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from escrow_kit import LEAVER, NOW, Env, make_leaver

import smimekit
from smimekit.errors import EscrowError
from smimekit.escrow.ceremony import rekey_escrow
from smimekit.escrow.recovery import escrow_status, record_refusal, recover_keys
from smimekit.escrow.shamir import Share
from smimekit.escrow.shares import UnlockedShare
from smimekit.escrow.vault import key_records
from smimekit.store import schema


def _recover(env: Env, *names: str, **kwargs: object) -> list:  # type: ignore[type-arg]
    options: dict = {"email": LEAVER, "reason": "leaver: ticket 4711", "actor": "test",
                     **kwargs}
    return recover_keys(env.data_dir, env.store, env.shares(*names), **options)


def _recoveries(env: Env) -> list[dict]:  # type: ignore[type-arg]
    return [e.details | {"subject": e.subject, "actor": e.actor}
            for e in env.store.audit_entries() if e.action == "escrow.recover"]


def test_leaver_history_recovered_with_three_shares_not_with_two(env: Env) -> None:
    leaver = make_leaver(env.cax)
    env.escrow()
    pairs = _recover(env, "Alice", "Dave", "Bob")
    assert [c for _, c in pairs] == leaver.certs
    for mail, body in zip(leaver.mails, leaver.bodies, strict=True):
        assert smimekit.decrypt(mail, None, keys=pairs).content.endswith(body)
    with pytest.raises(EscrowError, match="2 valid shares given, 3 needed"):
        _recover(env, "Alice", "Erin")
    ok, refused = _recoveries(env)
    assert ok["outcome"] == "recovered" and ok["keys"] == 3 and ok["subject"] == LEAVER
    assert ok["officers"] == ["Alice Officer", "Dave Officer", "Bob Officer"]
    assert ok["reason"] == "leaver: ticket 4711" and ok["actor"] == "test"
    assert refused["outcome"] == "refused" and refused["keys"] == 0
    assert "3 needed" in refused["error"]
    assert env.store.verify_audit_log() == []


def test_period_selects_the_certificates_valid_in_it(env: Env) -> None:
    leaver = make_leaver(env.cax)
    env.escrow()
    first_year = _recover(env, "Alice", "Bob", "Carol", since=NOW - dt.timedelta(days=1500),
                          until=NOW - dt.timedelta(days=1000))
    assert [c for _, c in first_year] == leaver.certs[:1]
    recent = _recover(env, "Alice", "Bob", "Carol", since=NOW - dt.timedelta(days=10))
    assert [c for _, c in recent] == leaver.certs[2:]
    assert _recover(env, "Alice", "Bob", "Carol", until=NOW - dt.timedelta(days=3000)) == []
    with pytest.raises(EscrowError, match="ends before it starts"):
        _recover(env, "Alice", "Bob", "Carol", since=NOW, until=NOW - dt.timedelta(days=1))
    assert [r["keys"] for r in _recoveries(env)] == [1, 1, 0, 0]


def test_no_reason_refused_and_audited(env: Env) -> None:
    make_leaver(env.cax)
    env.escrow()
    with pytest.raises(EscrowError, match="needs a reason"):
        _recover(env, "Alice", "Bob", "Carol", reason="  ")
    (row,) = _recoveries(env)
    assert row["outcome"] == "refused"


def test_wrong_share_refused_by_name(env: Env) -> None:
    make_leaver(env.cax)
    env.escrow()
    shares = env.shares("Alice", "Bob", "Carol")
    # Carol's header with a share value that is not Carol's
    fake = UnlockedShare(shares[2].header, Share(3, 3, bytes(48)), "forged.share")
    with pytest.raises(EscrowError, match=r"forged\.share .*commitment"):
        recover_keys(env.data_dir, env.store, [*shares[:2], fake], email=LEAVER,
                     reason="r", actor="test")
    assert "commitment" in _recoveries(env)[0]["error"]


@pytest.mark.parametrize("change", ["flip", "swap-owner", "cert-row"])
def test_tampered_escrow_record_refused(env: Env, change: str) -> None:
    make_leaver(env.cax)
    make_leaver(env.cax, "other@example.com")
    env.escrow()
    k, c = schema.private_keys, schema.certificates
    records = key_records(env.store)
    target = records[1]
    with env.store.transaction() as conn:
        if change == "flip":
            flipped = bytearray(target.sealed)
            flipped[-30] ^= 0x40
            conn.execute(k.update().where(k.c.id == target.id)
                         .values(encrypted_pkcs8=bytes(flipped)))
        elif change == "swap-owner":  # another user's record filed under the leaver
            conn.execute(k.update().where(k.c.id == records[4].id).values(owner=LEAVER))
        else:  # the certificate row's DER replaced by another certificate
            other = env.store.get_certificate(records[4].certificate_fingerprint or "")
            assert other is not None
            conn.execute(c.update().where(c.c.fingerprint == target.certificate_fingerprint)
                         .values(der=other.der))
    match = {"flip": "damaged or tampered", "swap-owner": "names another address",
             "cert-row": "certificate row was altered"}[change]
    with pytest.raises(EscrowError, match=match):
        _recover(env, "Alice", "Bob", "Carol")
    (row,) = _recoveries(env)
    assert row["outcome"] == "refused" and match.split()[0] in row["error"]
    assert env.store.verify_audit_log() == []


def test_recovery_refused_during_a_rekey(env: Env) -> None:
    make_leaver(env.cax)
    env.escrow()

    def stop(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rekey_escrow(env.data_dir, env.store, env.shares("Alice", "Bob", "Carol"),
                     env.shares_dir / "new", actor="test", batch_size=1, progress=stop,
                     officers=[o.spec for o in env.officers if o.passphrase])
    with pytest.raises(EscrowError, match="re-key is under way"):
        _recover(env, "Alice", "Bob", "Carol")
    status = escrow_status(env.data_dir, env.store)
    assert (status.sealed_to_active, status.sealed_to_next, status.sealed_elsewhere) == (2, 1, 0)
    assert status.to_json()["rekey_to"] is not None


def test_not_under_escrow_refused(env: Env) -> None:
    make_leaver(env.cax)
    with pytest.raises(EscrowError, match="not under escrow"):
        recover_keys(env.data_dir, env.store, [], email=LEAVER, reason="r", actor="t")


def test_status_without_secrets(env: Env) -> None:
    make_leaver(env.cax)
    before = escrow_status(env.data_dir, env.store)
    assert before.state is None and before.vault_key_on_disk and before.records == 3
    env.escrow()
    status = escrow_status(env.data_dir, env.store)
    data = status.to_json()
    assert data["under_escrow"] and data["generation"] == 1 and data["threshold"] == 3
    assert [o["name"] for o in data["officers"]][:2] == ["Alice Officer", "Bob Officer"]
    assert data["officers"][3]["protection"] == "passphrase"
    assert (status.records, status.sealed_to_active, status.vault_key_on_disk) == (3, 3, False)
    text = json.dumps(data)
    assert "commitment" not in text and "PRIVATE" not in text


def test_record_refusal_is_an_audit_row(env: Env) -> None:
    record_refusal(env.store, actor="test", email="X@Example.com", reason="r",
                   error="share did not open", officers=["Dave Officer"])
    (row,) = _recoveries(env)
    assert row["subject"] == "x@example.com" and row["outcome"] == "refused"


def test_unknown_user_refused_and_audited_as_refused(env: Env) -> None:
    make_leaver(env.cax)
    env.escrow()
    with pytest.raises(EscrowError, match=r"no key of stranger@example\.com is in escrow"):
        _recover(env, "Alice", "Bob", "Carol", email="Stranger@example.com")
    [row] = _recoveries(env)
    assert row["outcome"] == "refused" and row["keys"] == 0
    assert row["subject"] == "stranger@example.com"
    assert "no key of stranger@example.com" in row["error"]
    # too few shares: refused for that reason, saying nothing about who is in escrow
    with pytest.raises(EscrowError, match="2 valid shares given, 3 needed"):
        _recover(env, "Alice", "Bob", email="stranger@example.com")
