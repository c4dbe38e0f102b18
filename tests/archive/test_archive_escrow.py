"""Escrow as the key source of ``smimekit archive``: a user with two successive encryption
certificates, mail to each in a Maildir, the vault key under 2-of-3 officers. ``scan`` names
the user whose key history the old mail needs; ``decrypt`` and ``reencrypt`` take that
history with ``--user --share --share --reason``; too few shares are refused, nothing is
exported, and every attempt is in the audit log."""

from __future__ import annotations

import datetime as dt
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from pki import message

sys.path.insert(0, str(Path(__file__).parents[1] / "escrow"))

from escrow_kit import FAST, NOW, Env, env, officers, quick_scrypt  # noqa: F401  (fixtures)

import smimekit
from archive.corpus import write_maildir
from smimekit import archive
from smimekit.ca.profiles import Purpose
from smimekit.cli.main import main
from smimekit.store import Store

USER = "mover@example.com"
REASON = "case 812: mailbox migration"
BODIES = [b"Mail to the old certificate.\r\n", b"Mail to the current certificate.\r\n"]


@dataclass(frozen=True)
class Kit:
    env: Env
    maildir: Path
    certs: list[x509.Certificate]
    """The user's encryption certificates, old then current."""
    current_key: PrivateKeyTypes
    specs: list[str]
    """``--share`` specifications of the three officers."""


@pytest.fixture
def kit(env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Kit:  # noqa: F811
    monkeypatch.setenv("SMIMEKIT_ACTOR", "archivist-test")
    first = env.cax.issue_generated(USER, now=NOW - dt.timedelta(days=800), **FAST)
    old = first.item(Purpose.ENCRYPT)
    assert old is not None
    new = env.cax.renew(old.record, now=NOW - dt.timedelta(days=30))
    assert new.key is not None
    mails = [smimekit.encrypt(message(body=body), [cert], check_recipients=False)
             for body, cert in zip(BODIES, (old.cert, new.cert), strict=True)]
    maildir = tmp_path / "Maildir"
    write_maildir(maildir, mails)
    env.officers = env.officers[:3]  # Alice, Bob, Carol: certificate officers
    env.escrow(threshold=2)
    specs = []
    for officer in env.officers:
        assert officer.key is not None
        key_file = tmp_path / f"{officer.name.split()[0].lower()}.key"
        key_file.write_bytes(officer.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        specs.append(f"{env.share_file(officer.name)},key={key_file}")
    return Kit(env, maildir, [old.cert, new.cert], new.key, specs)


def _run(kit: Kit, *args: object) -> int:
    return main([*kit.env.backend.cli_args(), "archive", *map(str, args)])


def _escrow_args(kit: Kit, shares: int = 2) -> list[str]:
    args = ["--user", USER, "--reason", REASON]
    for spec in kit.specs[:shares]:
        args += ["--share", spec]
    return args


def _recoveries(kit: Kit) -> list[dict]:  # type: ignore[type-arg]
    with Store.open(kit.env.backend.url, kit.env.data_dir) as store:
        assert store.verify_audit_log() == []
        return [e.details | {"actor": e.actor, "subject": e.subject}
                for e in store.audit_entries() if e.action == "escrow.recover"]


def test_scan_names_the_user_whose_history_opens_the_old_mail(
        kit: Kit, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(kit, "scan", kit.maildir, "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["by_readability"] == {"escrow": 1, "now": 1}
    assert report["escrow_users"] == {USER: 1}
    assert _run(kit, "scan", kit.maildir) == 0
    out = capsys.readouterr().out
    assert "readable only through escrow" in out and USER in out
    assert _recoveries(kit) == []  # scanning recovers nothing


def test_decrypt_with_two_shares_exports_both_messages(
        kit: Kit, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "export"
    assert _run(kit, "decrypt", kit.maildir, "--out", out, *_escrow_args(kit)) == 0
    assert f"recovered 2 keys of {USER}" in capsys.readouterr().err
    records = [json.loads(line) for line in (out / archive.MANIFEST).read_text().splitlines()]
    exported = [r for r in records if r.get("status") == "decrypted"]
    assert len(exported) == 2
    plain = sorted((out / r["output"]).read_bytes() for r in exported)
    assert {p[-len(b):] for p in plain for b in BODIES if p.endswith(b)} == set(BODIES)
    (row,) = _recoveries(kit)
    assert row["outcome"] == "recovered" and row["keys"] == 2 and row["reason"] == REASON
    assert row["subject"] == USER and row["actor"] == "cli:archivist-test"
    assert row["output"] == "archive-decrypt"


def test_decrypt_with_one_share_is_refused_exports_nothing_and_is_audited(
        kit: Kit, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "export"
    assert _run(kit, "decrypt", kit.maildir, "--out", out, *_escrow_args(kit, 1)) == 1
    err = capsys.readouterr().err
    assert "1 valid share given, 2 needed" in err, err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert _run(kit, "decrypt", kit.maildir, "--out", out, *_escrow_args(kit)) == 0
    assert [r["outcome"] for r in _recoveries(kit)] == ["refused", "recovered"]


def test_escrow_options_go_together(kit: Kit, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "export"
    assert _run(kit, "decrypt", kit.maildir, "--out", out) == 2
    assert _run(kit, "decrypt", kit.maildir, "--out", out, "--user", USER,
                "--share", kit.specs[0]) == 2
    assert _run(kit, "decrypt", kit.maildir, "--out", out, "--reason", REASON) == 2
    assert "--user" in capsys.readouterr().err
    assert not out.exists() and _recoveries(kit) == []


def test_reencrypt_with_escrow_keys_moves_the_mail_to_the_current_certificate(
        kit: Kit, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(kit, "reencrypt", kit.maildir, *_escrow_args(kit)) == 0
    assert "re-encrypted 1, already current 1" in capsys.readouterr().err
    current = kit.certs[1]
    with Store.open(kit.env.backend.url, kit.env.data_dir) as store:
        report = archive.scan(kit.maildir, store=store)
    assert report.by_readability == {"now": 2}
    assert {r.serial for r in report.recipients} == {current.serial_number}
    opened = sorted(smimekit.decrypt(data, None, keys=[(kit.current_key, current)]).content
                    for _, data, _ in archive.iter_messages(kit.maildir))
    assert all(any(p.endswith(b) for b in BODIES) for p in opened)
    assert {b for p in opened for b in BODIES if p.endswith(b)} == set(BODIES)
    (row,) = _recoveries(kit)
    assert row["outcome"] == "recovered" and row["output"] == "archive-reencrypt"
