"""``sign`` / ``encrypt`` / ``sign-encrypt`` of input that is not a MIME message: binary
content is refused unless ``--content-type`` names its type; headerless text is protected as
text/plain with a warning; a message is used as it is, without one."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from pki import PKI, Identity, message

import smimekit
from smimekit.cli.main import main
from smimekit.smime.canonical import Entity

# NUL, bare LF and CR, bytes that are not UTF-8: what a PNG or a zip file holds
GARBAGE = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe\x00binary\nline\rend\x00"


@pytest.fixture()
def files(tmp_path: Path, pki: PKI, alice: Identity, bob: Identity) -> Path:
    (tmp_path / "root.pem").write_bytes(pki.root.public_bytes(serialization.Encoding.PEM))
    for who in (alice, bob):
        name = who.email.split("@")[0]
        (tmp_path / f"{name}.pem").write_bytes(who.pem_cert())
        (tmp_path / f"{name}.key").write_bytes(who.pem_key())
    (tmp_path / "image.png").write_bytes(GARBAGE)
    (tmp_path / "notes.txt").write_bytes("Meeting at 10.\nBring the Müller file.\n".encode())
    (tmp_path / "msg.eml").write_bytes(message())
    return tmp_path


def _sign(files: Path, *extra: str | Path) -> list[str]:
    return ["sign", "--key", str(files / "alice.key"), "--cert", str(files / "alice.pem"),
            *map(str, extra)]


def _encrypt(files: Path, *extra: str | Path) -> list[str]:
    return ["encrypt", "--to", str(files / "bob.pem"), "--trust", str(files / "root.pem"),
            "--revocation", "offline", *map(str, extra)]


def _sign_encrypt(files: Path, *extra: str | Path) -> list[str]:
    return ["sign-encrypt", "--key", str(files / "alice.key"), "--cert",
            str(files / "alice.pem"), "--to", str(files / "bob.pem"), "--trust",
            str(files / "root.pem"), "--revocation", "offline", *map(str, extra)]


@pytest.mark.parametrize("command", [_sign, _encrypt, _sign_encrypt],
                         ids=["sign", "encrypt", "sign-encrypt"])
def test_binary_input_without_content_type_is_refused(
        files: Path, capsys: pytest.CaptureFixture[str], command) -> None:  # type: ignore[no-untyped-def]
    out = files / "out.p7m"
    assert main(command(files, files / "image.png", "-o", out)) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a MIME message" in err and "--content-type" in err
    assert "Traceback" not in err
    assert not out.exists()


def test_binary_input_with_content_type_is_signed_as_that_type_byte_for_byte(
        files: Path, pki: PKI, capsys: pytest.CaptureFixture[str]) -> None:
    signed = files / "signed.eml"
    assert main(_sign(files, "--content-type", "image/png", files / "image.png", "-o",
                      signed)) == 0
    assert capsys.readouterr().err == ""
    result = smimekit.verify(signed.read_bytes(), trust=[pki.root], raise_for_failure=False)
    assert result.verdict.signers[0].intact and result.verdict.signers[0].trusted
    entity = Entity.parse(result.content.split(b"MIME-Version: 1.0\r\n", 1)[1])
    assert entity.content_type == "image/png"
    assert 'filename="image.png"' in (entity.get("content-disposition") or "")
    assert entity.decoded_body() == GARBAGE


def test_binary_input_with_content_type_is_encrypted_byte_for_byte(files: Path) -> None:
    sealed, opened = files / "sealed.p7m", files / "opened.eml"
    assert main(_encrypt(files, "--content-type", "application/octet-stream",
                         files / "image.png", "-o", sealed)) == 0
    assert main(["decrypt", "--key", str(files / "bob.key"), "--cert", str(files / "bob.pem"),
                 str(sealed), "-o", str(opened)]) == 0
    entity = Entity.parse(opened.read_bytes().split(b"MIME-Version: 1.0\r\n", 1)[1])
    assert entity.content_type == "application/octet-stream"
    assert entity.decoded_body() == GARBAGE
    assert base64.b64decode(entity.body) == GARBAGE


def test_headerless_text_is_protected_as_text_plain_with_a_warning(
        files: Path, pki: PKI, capsys: pytest.CaptureFixture[str]) -> None:
    signed = files / "signed.eml"
    assert main(_sign(files, files / "notes.txt", "-o", signed)) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "warning" in err and "no MIME header block" in err
    result = smimekit.verify(signed.read_bytes(), trust=[pki.root], raise_for_failure=False)
    assert result.verdict.signers[0].intact
    entity = Entity.parse(result.content.split(b"MIME-Version: 1.0\r\n", 1)[1])
    assert entity.content_type == "text/plain" and entity.params["charset"] == "utf-8"
    assert entity.decoded_body().decode() == "Meeting at 10.\r\nBring the Müller file.\r\n"


def test_a_message_is_used_as_it_is_without_a_warning(
        files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_sign(files, files / "msg.eml", "-o", files / "signed.eml")) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("bad", ["png", "multipart/mixed", "message/rfc822",
                                 "text/plain\r\nBcc: x@evil.example"])
def test_bad_content_type_is_a_usage_error(files: Path, capsys: pytest.CaptureFixture[str],
                                           bad: str) -> None:
    out = files / "out.eml"
    assert main(_sign(files, "--content-type", bad, files / "image.png", "-o", out)) == 2
    assert "--content-type" in capsys.readouterr().err
    assert not out.exists()
