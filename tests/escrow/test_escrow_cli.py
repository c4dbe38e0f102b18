"""``smimekit escrow`` end to end, on SQLite and PostgreSQL: the leaver, the lost device,
officer rotation, re-key (interrupted and resumed), deposits, tampering on disk, and the audit
row of every recovery attempt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from escrow_kit import LEAVER, Env, Leaver, make_leaver
from pki import PKI

import smimekit.escrow.ceremony as ceremony
from smimekit.ca.export import pkcs12_bytes
from smimekit.cli.main import main
from smimekit.store import Store, schema

CA_PASS = "correct horse battery staple"
BOB_KEY_PASS = b"bob's own key passphrase"
CAROL_P12_PASS = b"carol's p12 passphrase"


@pytest.fixture
def kit(env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Env, Path]:
    """Officer files in ``tmp_path/officers``: certificates, keys (plain PEM, encrypted PEM,
    PKCS#12) and share passphrases, and the CA passphrase in the environment."""
    monkeypatch.setenv("SMIMEKIT_PASSPHRASE", CA_PASS)
    monkeypatch.setenv("SMIMEKIT_ACTOR", "auditor-test")
    d = tmp_path / "officers"
    d.mkdir()
    alice, bob, carol, dave, erin = env.officers
    for who in (alice, bob, carol):
        assert who.spec.certificate is not None
        (d / f"{who.name.split()[0].lower()}.pem").write_bytes(
            who.spec.certificate.public_bytes(serialization.Encoding.PEM))
    assert alice.key is not None and bob.key is not None and carol.key is not None
    (d / "alice.key").write_bytes(alice.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (d / "bob.key").write_bytes(bob.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(BOB_KEY_PASS)))
    (d / "bob.pass").write_bytes(BOB_KEY_PASS + b"\n")
    assert carol.spec.certificate is not None
    (d / "carol.p12").write_bytes(pkcs12_bytes(carol.key, carol.spec.certificate, [],
                                               CAROL_P12_PASS, friendly_name="Carol",
                                               iterations=2048))
    (d / "carol.pass").write_bytes(CAROL_P12_PASS)
    for who in (dave, erin):
        assert who.passphrase is not None
        (d / f"{who.name.split()[0].lower()}.pass").write_bytes(who.passphrase + b"\n")
    return env, d


def _run(env: Env, *args: str | Path) -> int:
    return main([*env.backend.cli_args(), *map(str, args)])


def _officer_args(d: Path) -> list[str]:
    return ["--officer", f"Alice Officer=cert:{d / 'alice.pem'}",
            "--officer", f"Bob Officer=cert:{d / 'bob.pem'}",
            "--officer", f"Carol Officer=cert:{d / 'carol.pem'}",
            "--officer", f"Dave Officer=passphrase:{d / 'dave.pass'}",
            "--officer", f"Erin Officer=passphrase:{d / 'erin.pass'}"]


def _share(env: Env, d: Path, name: str, generation: int = 1,
           directory: Path | None = None) -> list[str]:
    path = env.share_file(name, generation, directory)
    spec = {"Alice": f"{path},key={d / 'alice.key'}",
            "Bob": f"{path},key={d / 'bob.key'},passphrase-file={d / 'bob.pass'}",
            "Carol": f"{path},key={d / 'carol.p12'},passphrase-file={d / 'carol.pass'}",
            "Dave": f"{path},passphrase-file={d / 'dave.pass'}",
            "Erin": f"{path},passphrase-file={d / 'erin.pass'}"}[name]
    return ["--share", spec]


def _shares(env: Env, d: Path, *names: str, generation: int = 1,
            directory: Path | None = None) -> list[str]:
    return [a for n in names for a in _share(env, d, n, generation, directory)]


def _escrow_init(env: Env, d: Path) -> None:
    assert _run(env, "escrow", "init", "--officers", "5", "--threshold", "3",
                *_officer_args(d), "--out", env.shares_dir) == 0


def _recoveries(env: Env) -> list[dict]:  # type: ignore[type-arg]
    with Store.open(env.backend.url, env.data_dir) as store:
        assert store.verify_audit_log() == []
        return [e.details | {"actor": e.actor, "subject": e.subject}
                for e in store.audit_entries() if e.action == "escrow.recover"]


def _passphrase(out: str) -> str:
    line = next(x for x in out.splitlines() if x.startswith("PKCS#12 passphrase"))
    return line.rsplit(": ", 1)[1]


def _setup(kit: tuple[Env, Path]) -> tuple[Env, Path, Leaver]:
    env, d = kit
    leaver = make_leaver(env.cax)
    for n, mail in enumerate(leaver.mails, 1):
        (d.parent / f"mail{n}.eml").write_bytes(mail)
    _escrow_init(env, d)
    return env, d, leaver


# -- the leaver and the lost device ---------------------------------------------------------------


def test_leaver_recovered_with_three_shares_and_not_with_two(
        kit: tuple[Env, Path], capsys: pytest.CaptureFixture[str]) -> None:
    env, d, leaver = _setup(kit)
    tmp = d.parent
    assert not (env.home.path / "vault.p12").exists()
    capsys.readouterr()
    assert _run(env, "escrow", "status") == 0
    out = capsys.readouterr().out
    assert "generation 1: any 3 of 5 officers recover" in out and "key records: 3" in out

    # M-1 shares: refused, nothing written
    assert _run(env, "escrow", "recover", "--user", LEAVER, "--reason", "leaver LV-1",
                *_shares(env, d, "Alice", "Dave"), "--decrypt", tmp / "mail1.eml",
                "--out-dir", tmp / "plain") == 1
    assert "2 valid shares given, 3 needed" in capsys.readouterr().err
    assert not (tmp / "plain").exists()

    # M shares: every mail of every year opens
    args = [tmp / f"mail{n}.eml" for n in (1, 2, 3)]
    assert _run(env, "escrow", "recover", "--user", LEAVER, "--reason", "leaver LV-1",
                *_shares(env, d, "Alice", "Dave", "Carol"),
                *[a for m in args for a in ("--decrypt", m)], "--out-dir", tmp / "plain") == 0
    assert "recovered 3 keys" in capsys.readouterr().out
    for n, body in enumerate(leaver.bodies, 1):
        assert (tmp / "plain" / f"mail{n}.eml").read_bytes().endswith(body)

    rows = _recoveries(env)
    assert [r["outcome"] for r in rows] == ["refused", "recovered"]
    assert rows[1]["officers"] == ["Alice Officer", "Dave Officer", "Carol Officer"]
    assert rows[1]["keys"] == 3 and rows[1]["reason"] == "leaver LV-1"
    assert rows[1]["actor"] == "cli:auditor-test" and rows[1]["subject"] == LEAVER
    assert _run(env, "log", "verify") == 0


def test_lost_device_history_back_as_pkcs12(kit: tuple[Env, Path],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    env, d, leaver = _setup(kit)
    tmp = d.parent
    capsys.readouterr()
    assert _run(env, "escrow", "recover", "--user", LEAVER, "--reason", "lost laptop HD-7",
                *_shares(env, d, "Bob", "Erin", "Alice"), "--out", tmp / "history.p12") == 0
    (tmp / "p12.pass").write_text(_passphrase(capsys.readouterr().out))
    for n, body in enumerate(leaver.bodies, 1):
        assert _run(env, "decrypt", "--key", tmp / "history.p12", "--passphrase-file",
                    tmp / "p12.pass", tmp / f"mail{n}.eml", "-o", tmp / f"out{n}.eml") == 0
        assert (tmp / f"out{n}.eml").read_bytes().endswith(body)
    # only the latest year
    assert _run(env, "escrow", "recover", "--user", LEAVER, "--reason", "this year only",
                *_shares(env, d, "Bob", "Erin", "Alice"), "--from", "2999-01-01",
                "--out", tmp / "none.p12") == 1
    assert "nothing in escrow for leaver@example.com in that period" in capsys.readouterr().err
    assert not (tmp / "none.p12").exists()


# -- refusals -------------------------------------------------------------------------------------


def test_wrong_share_passphrase_refused_and_audited(kit: tuple[Env, Path],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    env, d, _ = _setup(kit)
    tmp = d.parent
    (d / "wrong.pass").write_text("not Dave's passphrase at all")
    wrong = f"{env.share_file('Dave')},passphrase-file={d / 'wrong.pass'}"
    assert _run(env, "escrow", "recover", "--user", LEAVER, "--reason", "r",
                *_shares(env, d, "Alice", "Bob"), "--share", wrong,
                "--out", tmp / "x.p12") == 1
    err = capsys.readouterr().err
    assert "wrong passphrase" in err and "Traceback" not in err
    assert not (tmp / "x.p12").exists()
    (row,) = _recoveries(env)
    assert row["outcome"] == "refused" and "wrong passphrase" in row["error"]


def test_share_specs_explain_themselves(kit: tuple[Env, Path],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    env, d, _ = _setup(kit)
    tmp = d.parent
    base = ["escrow", "recover", "--user", LEAVER, "--reason", "r", "--out", tmp / "x.p12"]
    assert _run(env, *base, "--share", str(env.share_file("Alice"))) == 1
    assert "encrypted to officer Alice Officer's certificate" in (err := capsys.readouterr().err)
    assert "key=KEYFILE" in err
    assert _run(env, *base, "--share", f"{env.share_file('Alice')},pin=1") == 2
    assert _run(env, "escrow", "recover", "--user", LEAVER, *_shares(env, d, "Alice"),
                "--out", tmp / "x.p12") == 2  # --reason is required
    assert _run(env, "escrow", "recover", "--user", LEAVER, "--reason", "r",
                *_shares(env, d, "Alice")) == 2  # neither --out nor --decrypt
    assert not (tmp / "x.p12").exists()
    assert len(_recoveries(env)) == 2  # the two attempts that got as far as the shares


def test_tampering_on_disk_is_detected(kit: tuple[Env, Path],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    env, d, _ = _setup(kit)
    tmp = d.parent
    recover = ["escrow", "recover", "--user", LEAVER, "--reason", "tamper check",
               *_shares(env, d, "Alice", "Bob", "Dave"), "--out", tmp / "x.p12"]
    capsys.readouterr()
    # escrow.json edited: the threshold lowered
    state_path = env.home.path / "escrow.json"
    original = state_path.read_text()
    data = json.loads(original)
    data["active"]["threshold"] = 2
    state_path.write_text(json.dumps(data))
    assert _run(env, *recover) == 1
    assert "escrow.json was altered" in capsys.readouterr().err
    state_path.write_text(original)
    # a share file edited
    share = env.share_file("Dave")
    share_text = share.read_text()
    share.write_text(share_text.replace("any 3 recover", "any 2 recover"))
    assert _run(env, *recover) == 1
    assert "altered" in capsys.readouterr().err
    share.write_text(share_text)
    # a sealed key record altered in the database
    with Store.open(env.backend.url, env.data_dir) as store:
        k = schema.private_keys
        with store.transaction() as conn:
            row = conn.execute(k.select().order_by(k.c.id)).first()
            assert row is not None
            sealed = bytearray(row.encrypted_pkcs8)
            sealed[-25] ^= 1
            conn.execute(k.update().where(k.c.id == row.id).values(encrypted_pkcs8=bytes(sealed)))
    assert _run(env, *recover) == 1
    assert "damaged or tampered" in capsys.readouterr().err
    assert not (tmp / "x.p12").exists()
    assert [r["outcome"] for r in _recoveries(env)] == ["refused"] * 3


# -- rotation and re-key --------------------------------------------------------------------------


def test_rotate_then_old_shares_no_longer_count(kit: tuple[Env, Path],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    env, d, leaver = _setup(kit)
    tmp = d.parent
    new_dir = tmp / "gen2"
    assert _run(env, "escrow", "rotate", *_shares(env, d, "Alice", "Bob", "Erin"),
                "--officer", f"Alice Officer=cert:{d / 'alice.pem'}",
                "--officer", f"Dave Officer=passphrase:{d / 'dave.pass'}",
                "--officer", f"Erin Officer=passphrase:{d / 'erin.pass'}",
                "--threshold", "2", "--out", new_dir) == 0
    assert "generation 2, any 2 of 3" in capsys.readouterr().out
    assert _run(env, "escrow", "recover", "--user", LEAVER, "--reason", "r",
                *_share(env, d, "Alice", 2, new_dir), *_share(env, d, "Bob"),
                "--out", tmp / "x.p12") == 1
    assert "generation 1, but the escrow is at generation 2" in capsys.readouterr().err
    assert _run(env, "escrow", "check-share", *_share(env, d, "Dave")) == 1
    assert _run(env, "escrow", "check-share", *_share(env, d, "Dave", 2, new_dir)) == 0
    assert "counts for escrow" in capsys.readouterr().out
    assert _run(env, "escrow", "recover", "--user", LEAVER, "--reason", "r",
                *_shares(env, d, "Dave", "Alice", generation=2, directory=new_dir),
                "--decrypt", tmp / "mail1.eml", "--out-dir", tmp / "plain") == 0
    assert (tmp / "plain" / "mail1.eml").read_bytes().endswith(leaver.bodies[0])


def test_rekey_interrupted_then_resumed(kit: tuple[Env, Path], monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    env, d, leaver = _setup(kit)
    make_leaver(env.cax, "second@example.com")
    tmp = d.parent
    new_dir = tmp / "rekeyed"
    rekey = ["escrow", "rekey", *_shares(env, d, "Carol", "Dave", "Erin"), "--out", new_dir,
             "--batch-size", "2"]
    passphrases = ["--officer", f"Dave Officer=passphrase:{d / 'dave.pass'}",
                   "--officer", f"Erin Officer=passphrase:{d / 'erin.pass'}"]
    real = ceremony._reseal
    calls = {"n": 0}

    def dies_on_the_fourth(*args: object) -> None:
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError("the machine went down")
        real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(ceremony, "_reseal", dies_on_the_fourth)
    assert _run(env, *rekey, *passphrases) == 1
    assert "internal error" in capsys.readouterr().err
    monkeypatch.setattr(ceremony, "_reseal", real)
    assert _run(env, "escrow", "status") == 0
    assert "re-key under way" in (out := capsys.readouterr().out)
    assert "key records: 6 (4 sealed to the active vault key, 2 to the next)" in out
    assert _run(env, *rekey) == 0
    assert "re-keyed (4 key records re-sealed)" in capsys.readouterr().out
    assert _run(env, "escrow", "status", "--json") == 0
    status = json.loads(capsys.readouterr().out)
    assert status["generation"] == 2 and status["sealed_to_active"] == 6
    assert status["rekey_to"] is None
    # the new shares open everything, the old ones nothing
    assert _run(env, "escrow", "recover", "--user", LEAVER, "--reason", "after rekey",
                *_shares(env, d, "Alice", "Bob", "Dave", generation=2, directory=new_dir),
                *[a for n in (1, 2, 3) for a in ("--decrypt", tmp / f"mail{n}.eml")],
                "--out-dir", tmp / "plain") == 0
    for n, body in enumerate(leaver.bodies, 1):
        assert (tmp / "plain" / f"mail{n}.eml").read_bytes().endswith(body)
    assert _run(env, "escrow", "recover", "--user", "second@example.com", "--reason", "r",
                *_shares(env, d, "Alice", "Bob", "Dave"), "--out", tmp / "x.p12") == 1
    assert "generation 1" in capsys.readouterr().err


# -- deposits -------------------------------------------------------------------------------------


def test_deposit_encryption_key_and_refuse_a_signing_key(
        kit: tuple[Env, Path], pki: PKI, capsys: pytest.CaptureFixture[str]) -> None:
    env, d, _ = _setup(kit)
    tmp = d.parent
    for usage in ("encrypt", "sign"):
        who = pki.person(f"dep-{usage}", "rsa2048", email="dep@example.com", key_usage=usage)
        (tmp / f"{usage}.pem").write_bytes(who.pem_cert())
        (tmp / f"{usage}.key").write_bytes(who.pem_key())
    assert _run(env, "escrow", "deposit", "--key", tmp / "sign.key", "--cert",
                tmp / "sign.pem", "--email", "dep@example.com") == 1
    err = capsys.readouterr().err
    assert "signing keys are never escrowed" in err and "non-repudiation" in err
    assert _run(env, "escrow", "deposit", "--key", tmp / "encrypt.key", "--cert",
                tmp / "encrypt.pem", "--email", "dep@example.com") == 0
    assert _run(env, "escrow", "recover", "--user", "dep@example.com", "--reason",
                "deposit check", *_shares(env, d, "Alice", "Bob", "Carol"),
                "--out", tmp / "dep.p12") == 0
    assert "recovered 1 key of dep@example.com" in capsys.readouterr().out


def test_deposit_without_email_uses_the_one_address_of_the_certificate(
        kit: tuple[Env, Path], pki: PKI, capsys: pytest.CaptureFixture[str]) -> None:
    env, d, _ = _setup(kit)
    tmp = d.parent
    who = pki.person("dep-own", "rsa2048", email="own@example.com", key_usage="encrypt")
    (tmp / "enc.pem").write_bytes(who.pem_cert())
    (tmp / "enc.key").write_bytes(who.pem_key())
    assert _run(env, "escrow", "deposit", "--key", tmp / "enc.key", "--cert",
                tmp / "enc.pem") == 0
    assert "for own@example.com" in capsys.readouterr().out
    assert _run(env, "escrow", "recover", "--user", "own@example.com", "--reason",
                "deposit check", *_shares(env, d, "Alice", "Bob", "Carol"),
                "--out", tmp / "own.p12") == 0
    assert "recovered 1 key of own@example.com" in capsys.readouterr().out


def test_init_refusals(kit: tuple[Env, Path], capsys: pytest.CaptureFixture[str]) -> None:
    env, d = kit
    assert _run(env, "escrow", "init", "--officers", "4", "--threshold", "3",
                *_officer_args(d), "--out", env.shares_dir) == 2
    assert _run(env, "escrow", "init", "--threshold", "3", "--officer", "Zed=ssh:x",
                "--out", env.shares_dir) == 2
    assert _run(env, "escrow", "init", "--threshold", "6", *_officer_args(d),
                "--out", env.shares_dir) == 1
    assert "threshold" in capsys.readouterr().err
    assert (env.home.path / "vault.p12").exists()
    _escrow_init(env, d)
    assert _run(env, "escrow", "init", "--threshold", "3", *_officer_args(d),
                "--out", env.shares_dir) == 1
    assert "under escrow already" in capsys.readouterr().err


def test_restored_escrow_json_after_rotate_is_refused_as_a_rollback(
        kit: tuple[Env, Path], capsys: pytest.CaptureFixture[str]) -> None:
    env, d, _ = _setup(kit)
    tmp = d.parent
    state_file = env.home.path / "escrow.json"
    generation1 = state_file.read_bytes()
    assert _run(env, "escrow", "rotate", *_shares(env, d, "Alice", "Bob", "Erin"),
                "--officer", f"Alice Officer=cert:{d / 'alice.pem'}",
                "--officer", f"Dave Officer=passphrase:{d / 'dave.pass'}",
                "--threshold", "2", "--out", tmp / "gen2") == 0
    state_file.write_bytes(generation1)  # an old backup put back
    capsys.readouterr()
    for args in (["escrow", "check-share", *_share(env, d, "Carol")],
                 ["escrow", "recover", "--user", LEAVER, "--reason", "after rollback",
                  *_shares(env, d, "Alice", "Bob", "Carol"), "--out", tmp / "x.p12"],
                 ["escrow", "status"]):
        assert _run(env, *args) == 1
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and "escrow.json was rolled back" in err, err
        assert "recorded generation 2" in err
    assert not (tmp / "x.p12").exists()
    rows = _recoveries(env)
    assert [r["outcome"] for r in rows] == ["refused"] and "rolled back" in rows[0]["error"]


def test_recover_of_an_unknown_user_is_audited_as_refused(
        kit: tuple[Env, Path], capsys: pytest.CaptureFixture[str]) -> None:
    env, d, _ = _setup(kit)
    tmp = d.parent
    capsys.readouterr()
    assert _run(env, "escrow", "recover", "--user", "Nobody@Example.com",
                "--reason", "HR-1 who is this", *_shares(env, d, "Alice", "Bob", "Dave"),
                "--out", tmp / "x.p12") == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "no key of nobody@example.com is in escrow" in err
    assert not (tmp / "x.p12").exists()
    [row] = _recoveries(env)
    assert row["outcome"] == "refused" and row["keys"] == 0
    assert row["subject"] == "nobody@example.com" and row["reason"] == "HR-1 who is this"
    assert row["officers"] == ["Alice Officer", "Bob Officer", "Dave Officer"]
    assert "no key of nobody@example.com is in escrow" in row["error"]
    assert row["actor"] == "cli:auditor-test"


def test_check_share_leaves_the_audit_row_assess_counts(kit: tuple[Env, Path]) -> None:
    env, d, _leaver = _setup(kit)
    assert _run(env, "escrow", "check-share", *_share(env, d, "Dave")) == 0
    rows = [e for e in env.store.audit_entries() if e.action == "escrow.check-share"]
    assert len(rows) == 1
    assert rows[0].actor == "cli:auditor-test"
    assert rows[0].details == {"officer": "Dave Officer", "index": 4, "generation": 1}
    # a share that does not count leaves no row
    assert _run(env, "escrow", "check-share", f"--share={d / 'dave.pass'}") == 1
    assert len([e for e in env.store.audit_entries()
                if e.action == "escrow.check-share"]) == 1
