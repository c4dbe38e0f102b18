"""decrypt / decrypt-verify with a key history: every key of a PKCS#12 file, repeated --key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from pki import PKI, Identity, message

import smimekit
from smimekit.ca.export import pkcs12_bytes
from smimekit.cli.main import main

PASS = b"correct horse battery staple"
BODY = b"For the old key only.\r\n"


@pytest.fixture(scope="module")
def history(pki: PKI) -> list[Identity]:
    """Dana's encryption keys, oldest first: RSA, then P-256, then the current RSA key."""
    return [pki.person("dana", "rsa2048", fresh_key=True),
            pki.person("dana", "p256", fresh_key=True),
            pki.person("dana", "rsa2048", fresh_key=True)]


@pytest.fixture
def files(tmp_path: Path, pki: PKI, history: list[Identity],
          monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("SMIMEKIT_PASSPHRASE", raising=False)
    old1, old2, current = history
    (tmp_path / "history.p12").write_bytes(pkcs12_bytes(
        current.key, current.cert, [pki.inter, pki.root], PASS, friendly_name="Dana",
        extra=[(old1.key, old1.cert), (old2.key, old2.cert)], iterations=2048))
    (tmp_path / "current.p12").write_bytes(pkcs12_bytes(
        current.key, current.cert, [pki.inter], PASS, friendly_name="Dana", iterations=2048))
    for n, person in enumerate(history, 1):
        (tmp_path / f"dana{n}.pem").write_bytes(person.pem_cert())
        (tmp_path / f"dana{n}.key").write_bytes(person.pem_key())
        (tmp_path / f"dana{n}.enc.key").write_bytes(person.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(PASS)))
        (tmp_path / f"to-dana{n}.eml").write_bytes(smimekit.encrypt(
            message(body=BODY), [person.cert], check_recipients=False))
    (tmp_path / "root.pem").write_bytes(pki.root.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "pass.txt").write_bytes(PASS + b"\n")
    return tmp_path


def _decrypt(files: Path, *args: str | Path) -> int:
    return main(["decrypt", *map(str, args), "-o", str(files / "out.eml")])


@pytest.mark.parametrize("n", [1, 2, 3])
def test_history_p12_opens_mail_to_every_certificate_it_holds(
    files: Path, n: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _decrypt(files, "--key", files / "history.p12", "--passphrase-file",
                    files / "pass.txt", files / f"to-dana{n}.eml") == 0
    assert (files / "out.eml").read_bytes().endswith(BODY)
    assert "decrypted" in capsys.readouterr().err


def test_current_only_p12_cannot_open_mail_to_an_old_certificate(
    files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _decrypt(files, "--key", files / "current.p12", "--passphrase-file",
                    files / "pass.txt", files / "to-dana1.eml") == 1
    assert "no matching recipient" in capsys.readouterr().err


def test_repeated_key_tries_each_file(files: Path) -> None:
    # An old PEM key (no certificate: tried on every RSA recipient) next to the current P12.
    assert _decrypt(files, "--key", files / "current.p12", "--key", files / "dana1.key",
                    "--passphrase-file", files / "pass.txt", files / "to-dana1.eml") == 0
    assert (files / "out.eml").read_bytes().endswith(BODY)
    # Two encrypted PEM keys under one passphrase, one with its --cert.
    assert _decrypt(files, "--key", files / "dana2.enc.key", "--key", files / "dana1.enc.key",
                    "--cert", files / "dana2.pem", "--passphrase-file", files / "pass.txt",
                    files / "to-dana2.eml") == 0


def test_cert_that_fits_no_key_is_refused(files: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert _decrypt(files, "--key", files / "dana1.key", "--cert", files / "dana3.pem",
                    files / "to-dana1.eml") == 1
    assert "belongs to none of the --key keys" in capsys.readouterr().err


def test_wrong_passphrase_for_the_history_file(files: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    (files / "wrong.txt").write_bytes(b"not it\n")
    assert _decrypt(files, "--key", files / "history.p12", "--passphrase-file",
                    files / "wrong.txt", files / "to-dana1.eml") == 1
    err = capsys.readouterr().err
    assert err.startswith("smimekit: error:") and "wrong passphrase" in err
    assert "Traceback" not in err


def test_missing_passphrase_without_a_terminal_says_how_to_give_one(
    files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _decrypt(files, "--key", files / "history.p12", files / "to-dana1.eml") == 1
    assert "--passphrase-file" in capsys.readouterr().err


def test_truncated_history_file_fails_cleanly(files: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    data = (files / "history.p12").read_bytes()
    (files / "cut.p12").write_bytes(data[: len(data) // 2])
    assert _decrypt(files, "--key", files / "cut.p12", "--passphrase-file",
                    files / "pass.txt", files / "to-dana1.eml") == 1
    err = capsys.readouterr().err
    assert err.startswith("smimekit: error:") and "Traceback" not in err


def test_decrypt_verify_with_the_history_file(
    files: Path, alice: Identity, history: list[Identity]
) -> None:
    signed = smimekit.sign_encrypt(message(body=BODY), alice.key, alice.cert,
                                   [history[0].cert], include_self=False,
                                   check_recipients=False)
    (files / "se.eml").write_bytes(signed)
    assert main(["decrypt-verify", "--key", str(files / "history.p12"), "--passphrase-file",
                 str(files / "pass.txt"), "--trust", str(files / "root.pem"),
                 "--report", str(files / "r.json"), str(files / "se.eml"),
                 "-o", str(files / "out.eml")]) == 0
    layers = [x["kind"] for x in json.loads((files / "r.json").read_text())["layers"]]
    assert layers == ["encrypted", "signed"]
    assert (files / "out.eml").read_bytes().endswith(BODY)
