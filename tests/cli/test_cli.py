"""The CLI contract of DESIGN.md: files or stdin/stdout, exit 0/1/2, one line, no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from pki import PKI, Identity, message

from smimekit.cli.main import main

PASS = b"correct horse battery staple"


@pytest.fixture()
def files(tmp_path: Path, pki: PKI, alice: Identity, bob: Identity) -> Path:
    (tmp_path / "root.pem").write_bytes(pki.root.public_bytes(serialization.Encoding.PEM))
    for who in (alice, bob):
        name = who.email.split("@")[0]
        (tmp_path / f"{name}.pem").write_bytes(who.pem_cert())
        (tmp_path / f"{name}.key").write_bytes(who.pem_key())
        (tmp_path / f"{name}.enc.key").write_bytes(who.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(PASS)))
        (tmp_path / f"{name}.p12").write_bytes(pkcs12.serialize_key_and_certificates(
            name.encode(), who.key, who.cert, None,  # type: ignore[arg-type]
            serialization.BestAvailableEncryption(PASS)))
    (tmp_path / "pass.txt").write_bytes(PASS + b"\n")
    (tmp_path / "msg.eml").write_bytes(message())
    return tmp_path


def run(*args: str | Path, stdin: bytes | None = None, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[bytes]:
    full_env = {**os.environ, **(env or {})}
    full_env.pop("SMIMEKIT_PASSPHRASE", None) if env is None else None
    return subprocess.run([sys.executable, "-m", "smimekit.cli.main", *map(str, args)],
                          input=stdin, capture_output=True, env=full_env, timeout=60,
                          check=False)


def test_sign_verify_round_trip_in_process(files: Path, capsys: pytest.CaptureFixture[str]
                                           ) -> None:
    assert main(["sign", "--key", str(files / "alice.key"), "--cert", str(files / "alice.pem"),
                 str(files / "msg.eml"), "-o", str(files / "signed.eml")]) == 0
    assert main(["verify", "--trust", str(files / "root.pem"), str(files / "signed.eml"),
                 "-o", str(files / "out.eml"), "--report", str(files / "report.json")]) == 0
    assert (files / "out.eml").read_bytes().endswith(b"Hello, world.\r\n")
    report = json.loads((files / "report.json").read_text())
    assert report["valid"] is True and report["signers"][0]["email"] == ["alice@example.org"]
    err = capsys.readouterr().err
    assert err.startswith("smimekit: VALID: signer CN=alice")
    assert err.count("\n") == 1


def test_stdin_to_stdout_and_summary_on_stderr(files: Path) -> None:
    signed = run("sign", "--key", files / "alice.key", "--cert", files / "alice.pem",
                 stdin=message())
    assert signed.returncode == 0 and signed.stdout.startswith(b"From: alice@example.org")
    verified = run("verify", "--trust", files / "root.pem", stdin=signed.stdout)
    assert verified.returncode == 0
    assert verified.stdout.endswith(b"Hello, world.\r\n")
    assert b"VALID: signer" in verified.stderr


def test_failed_verification_exits_1_with_one_line_and_writes_nothing(files: Path) -> None:
    main(["sign", "--key", str(files / "alice.key"), "--cert", str(files / "alice.pem"),
          str(files / "msg.eml"), "-o", str(files / "signed.eml")])
    tampered = (files / "signed.eml").read_bytes().replace(b"Hello, world.", b"Hello, World.")
    (files / "bad.eml").write_bytes(tampered)
    result = run("verify", "--trust", files / "root.pem", files / "bad.eml", "-o",
                 files / "out.eml", "--report", files / "r.json")
    assert result.returncode == 1
    assert result.stderr.count(b"\n") == 1 and b"Traceback" not in result.stderr
    assert b"digest mismatch" in result.stderr
    assert not (files / "out.eml").exists()
    assert json.loads((files / "r.json").read_text())["valid"] is False


def test_untrusted_signer_exits_1(files: Path) -> None:
    main(["sign", "--key", str(files / "alice.key"), "--cert", str(files / "alice.pem"),
          str(files / "msg.eml"), "-o", str(files / "signed.eml")])
    result = run("verify", "--trust", files / "bob.pem", files / "signed.eml")
    assert result.returncode == 1 and b"no chain to a trust anchor" in result.stderr


def test_encrypt_decrypt_with_passphrase_file_env_and_pkcs12(files: Path) -> None:
    assert main(["encrypt", "--to", str(files / "alice.pem"), "--to", str(files / "bob.pem"),
                 "--oaep", "--cipher", "aes128-cbc", str(files / "msg.eml"), "-o",
                 str(files / "enc.eml")]) == 0
    by_file = run("decrypt", "--key", files / "alice.enc.key", "--passphrase-file",
                  files / "pass.txt", files / "enc.eml")
    assert by_file.returncode == 0, by_file.stderr
    assert by_file.stdout.endswith(b"Hello, world.\r\n")
    by_env = run("decrypt", "--key", files / "bob.p12", "--passphrase-env", "MY_PASS",
                 files / "enc.eml", env={"MY_PASS": PASS.decode()})
    assert by_env.returncode == 0, by_env.stderr
    by_default_env = run("decrypt", "--key", files / "bob.enc.key", files / "enc.eml",
                         env={"SMIMEKIT_PASSPHRASE": PASS.decode()})
    assert by_default_env.returncode == 0, by_default_env.stderr


def test_encrypted_key_without_passphrase_fails_clearly_without_hanging(files: Path) -> None:
    main(["encrypt", "--to", str(files / "alice.pem"), str(files / "msg.eml"), "-o",
          str(files / "enc.eml")])
    result = run("decrypt", "--key", files / "alice.enc.key", files / "enc.eml", stdin=b"")
    assert result.returncode == 1
    assert b"needs a passphrase" in result.stderr and b"Traceback" not in result.stderr


def test_wrong_passphrase(files: Path) -> None:
    (files / "wrong.txt").write_text("nope\n")
    result = run("decrypt", "--key", files / "alice.enc.key", "--passphrase-file",
                 files / "wrong.txt", files / "msg.eml")
    assert result.returncode == 1 and b"wrong passphrase" in result.stderr


def test_wrong_key_gives_the_generic_decryption_error(files: Path) -> None:
    main(["encrypt", "--to", str(files / "alice.pem"), str(files / "msg.eml"), "-o",
          str(files / "enc.eml")])
    result = run("decrypt", "--key", files / "bob.key", "--cert", files / "bob.pem",
                 files / "enc.eml")
    assert result.returncode == 1
    assert result.stderr == b"smimekit: error: no matching recipient: the message is not" \
                            b" encrypted to this key\n"


def test_sign_encrypt_and_decrypt_verify(files: Path) -> None:
    assert main(["sign-encrypt", "--key", str(files / "alice.p12"), "--passphrase-file",
                 str(files / "pass.txt"), "--to", str(files / "bob.pem"), str(files / "msg.eml"),
                 "-o", str(files / "se.eml")]) == 0
    result = run("decrypt-verify", "--key", files / "bob.key", "--cert", files / "bob.pem",
                 "--trust", files / "root.pem", files / "se.eml", "--report", files / "r.json")
    assert result.returncode == 0, result.stderr
    layers = [x["kind"] for x in json.loads((files / "r.json").read_text())["layers"]]
    assert layers == ["encrypted", "signed"]


def test_validation_at_a_given_time(files: Path) -> None:
    main(["sign", "--key", str(files / "alice.key"), "--cert", str(files / "alice.pem"),
          str(files / "msg.eml"), "-o", str(files / "signed.eml")])
    result = run("verify", "--trust", files / "root.pem", "--at", "2099-01-01T00:00:00",
                 files / "signed.eml")
    assert result.returncode == 1 and b"expired" in result.stderr


@pytest.mark.parametrize("args", [
    ["sign", "--cert", "x.pem"],
    ["encrypt", "--cipher", "rot13", "--to", "x.pem"],
    ["verify", "--at", "yesterday"],
    ["no-such-command"],
])
def test_usage_errors_exit_2(files: Path, args: list[str]) -> None:
    result = run(*args, stdin=b"")
    assert result.returncode == 2
    assert b"Traceback" not in result.stderr


@pytest.mark.parametrize(("data", "words"), [
    (b"", b"empty"),
    (b"From: a@b\r\nContent-Type: application/pkcs7-mime\r\n"
     b"Content-Transfer-Encoding: base64\r\n\r\nMIIB", b"malformed"),
    (b"\x00\x01garbage", b"not encrypted"),
])
def test_hostile_input_exits_1_without_traceback(files: Path, data: bytes, words: bytes) -> None:
    result = run("decrypt", "--key", files / "alice.key", stdin=data)
    assert result.returncode == 1, result.stderr
    assert b"Traceback" not in result.stderr
    assert result.stderr.startswith(b"smimekit: error:") and words in result.stderr.lower()
    assert result.stdout == b""


def test_missing_key_file(files: Path) -> None:
    result = run("sign", "--key", files / "nope.key", "--cert", files / "alice.pem",
                 files / "msg.eml")
    assert result.returncode == 1 and b"cannot read key" in result.stderr
