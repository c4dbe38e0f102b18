"""The parts of issue 10 joined through the CLI: a correspondent's signed mail is harvested,
then ``lookup`` and ``encrypt --to ADDR`` find the encryption certificate the correspondent
announced (SMIMEEncryptionKeyPreference) for their signing-only certificate, and the
correspondent decrypts what was sent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from pki import PKI

import smimekit
from smimekit.cli.main import main

MAIL = (b"From: hana@example.org\r\nTo: me@example.net\r\nSubject: hello\r\n"
        b"Message-ID: <h1@example.org>\r\nContent-Type: text/plain\r\n\r\nHi, it is Hana.\r\n")
REPLY = (b"From: me@example.net\r\nTo: hana@example.org\r\nSubject: Re: hello\r\n"
         b"Content-Type: text/plain\r\n\r\nThe answer, for Hana only.\r\n")


def test_harvested_certificate_is_looked_up_and_encrypted_to(
        pki: PKI, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    signer = pki.person("hana", "p256", key_usage="sign")
    enc = pki.person("hana-enc", "rsa2048", email="hana@example.org", key_usage="encrypt")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "hana.eml").write_bytes(
        smimekit.sign(MAIL, signer.key, signer.cert, chain=[pki.inter],
                      encryption_cert=enc.cert))
    root = tmp_path / "root.pem"
    root.write_bytes(pki.root.public_bytes(serialization.Encoding.PEM))
    config = tmp_path / "smimekit.toml"
    config.write_text('[directory]\norder = ["store", "harvested"]\n', encoding="utf-8")
    cli = ["--data-dir", str(tmp_path / "data"), "--config", str(config)]
    checks = ["--trust", str(root), "--revocation", "offline"]

    # no store yet (nothing harvested): exit 1, one line saying why
    assert main([*cli, "lookup", "hana@example.org", *checks]) == 1
    assert "no certificate source is set up" in capsys.readouterr().err

    assert main([*cli, "directory", "harvest", str(inbox), *checks, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["valid"] == 1

    assert main([*cli, "lookup", "hana@example.org", *checks, "--json"]) == 0
    (answer,) = json.loads(capsys.readouterr().out)["results"]
    first = answer["certificates"][0]
    assert first["serial"] == format(enc.cert.serial_number, "x")  # the announced one
    assert first["source"] == "harvested" and "hana.eml" in first["where"]
    # the signing-only certificate is no encryption certificate: refused, not chosen
    assert format(signer.cert.serial_number, "x") not in {
        c["serial"] for c in answer["certificates"]}

    (tmp_path / "reply.eml").write_bytes(REPLY)
    out = tmp_path / "to-hana.eml"
    assert main([*cli, "encrypt", "--to", "hana@example.org", *checks,
                 str(tmp_path / "reply.eml"), "-o", str(out)]) == 0
    decrypted = smimekit.decrypt(out.read_bytes(), enc.key, enc.cert)
    assert b"The answer, for Hana only." in decrypted.content
