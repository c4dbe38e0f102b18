"""The receiving side of header protection through the CLI: what verify, decrypt and
decrypt-verify write and say (RFC 9788; smime/hp_read.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from pki import PKI, Identity, message

from smimekit.cli.main import main


@pytest.fixture()
def files(tmp_path: Path, pki: PKI, alice: Identity, bob: Identity) -> Path:
    (tmp_path / "root.pem").write_bytes(pki.root.public_bytes(serialization.Encoding.PEM))
    for who in (alice, bob):
        name = who.email.split("@")[0]
        (tmp_path / f"{name}.pem").write_bytes(who.pem_cert())
        (tmp_path / f"{name}.key").write_bytes(who.pem_key())
    (tmp_path / "msg.eml").write_bytes(message().replace(
        b"Subject: test", b"Subject: the merger\r\nKeywords: board only"))
    return tmp_path


def _sign_encrypt(files: Path) -> None:
    assert main(["sign-encrypt", "--key", str(files / "alice.key"),
                 "--cert", str(files / "alice.pem"), "--to", str(files / "bob.pem"),
                 "--trust", str(files / "root.pem"), "--legacy-display",
                 str(files / "msg.eml"), "-o", str(files / "sealed.eml")]) == 0


def test_decrypt_verify_writes_the_protected_fields_and_reports_them(
        files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _sign_encrypt(files)
    capsys.readouterr()
    assert main(["decrypt-verify", "--key", str(files / "bob.key"),
                 "--cert", str(files / "bob.pem"), "--trust", str(files / "root.pem"),
                 "--report", str(files / "report.json"), str(files / "sealed.eml"),
                 "-o", str(files / "plain.eml")]) == 0
    err = capsys.readouterr().err
    assert err.startswith("smimekit: VALID") and err.count("\n") == 1
    assert "protected headers (rfc9788, cipher): From, To, Subject, Keywords, Date" in err
    assert "obscured outside: Subject, Keywords" in err
    plain = (files / "plain.eml").read_bytes()
    head = plain.split(b"\r\n\r\n", 1)[0]
    assert b"Subject: the merger\r\n" in head and b"Keywords: board only\r\n" in head
    assert b"[...]" not in plain and b"HP-Outer" not in plain
    assert plain.count(b"Subject: the merger") == 1  # the legacy display is not repeated
    report = json.loads((files / "report.json").read_text())["header_protection"]
    assert report["scheme"] == "rfc9788" and report["mode"] == "cipher"
    assert report["obscured"] == ["Subject", "Keywords"] and report["disagreed"] == []


def test_decrypt_names_the_protection_and_warns_on_a_rewritten_outer_subject(
        files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _sign_encrypt(files)
    sealed = (files / "sealed.eml").read_bytes()
    (files / "sealed.eml").write_bytes(sealed.replace(b"Subject: [...]", b"Subject: Re: lunch"))
    capsys.readouterr()
    assert main(["decrypt", "--key", str(files / "bob.key"), "--cert", str(files / "bob.pem"),
                 str(files / "sealed.eml"), "-o", str(files / "plain.eml")]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == ("smimekit: warning: outer header fields differ from what the sender"
                        " protected: Subject (the protected ones were written)")
    assert lines[1].startswith("smimekit: decrypted (aes256-gcm, ")
    assert "protected headers (rfc9788, cipher)" in lines[1]
    assert b"Subject: the merger\r\n" in (files / "plain.eml").read_bytes()
