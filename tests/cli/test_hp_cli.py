"""The header-protection options of sign, encrypt and sign-encrypt (RFC 9788)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from hpwire import wire_payload
from pki import PKI, Identity, message

from smimekit.cli.main import main


@pytest.fixture()
def files(tmp_path: Path, pki: PKI, alice: Identity, bob: Identity) -> Path:
    (tmp_path / "root.pem").write_bytes(pki.root.public_bytes(serialization.Encoding.PEM))
    for who in (alice, bob):
        name = who.email.split("@")[0]
        (tmp_path / f"{name}.pem").write_bytes(who.pem_cert())
        (tmp_path / f"{name}.key").write_bytes(who.pem_key())
    (tmp_path / "msg.eml").write_bytes(message())
    return tmp_path


def _outside(path: Path) -> bytes:
    return path.read_bytes().split(b"\r\n\r\n", 1)[0] + b"\r\n"


def _encrypt(files: Path, *options: str) -> int:
    return main(["encrypt", "--to", str(files / "bob.pem"), "--trust", str(files / "root.pem"),
                 *options, str(files / "msg.eml"), "-o", str(files / "out.eml")])


def _wire(files: Path, bob: Identity) -> bytes:
    """The payload as sent (the CLI's decrypt shows the protected view: tests/hpwire.py)."""
    return wire_payload((files / "out.eml").read_bytes(), bob.key, bob.cert).raw


def _decrypted(files: Path) -> bytes:
    assert main(["decrypt", "--key", str(files / "bob.key"), "--cert", str(files / "bob.pem"),
                 str(files / "out.eml"), "-o", str(files / "plain.eml")]) == 0
    return (files / "plain.eml").read_bytes()


def test_encrypt_protects_headers_by_default(files: Path, bob: Identity) -> None:
    assert _encrypt(files) == 0
    outside = _outside(files / "out.eml")
    assert b"Subject: [...]\r\n" in outside and b"Subject: test" not in outside
    plain = _decrypted(files)
    assert b"Subject: test\r\n" in plain and b'hp="cipher"' in plain
    assert b"HP-Outer: Subject: [...]\r\n" in _wire(files, bob)
    assert b"HP-Outer" not in plain


def test_encrypt_hcp_shy(files: Path, bob: Identity) -> None:
    assert _encrypt(files, "--hcp", "shy") == 0
    outside = _outside(files / "out.eml")
    assert b"From: alice@example.org\r\n" in outside and b"Date: " in outside
    assert b"HP-Outer: From: alice@example.org\r\n" in _wire(files, bob)


def test_encrypt_hcp_none_hides_nothing_but_still_protects(files: Path, bob: Identity
                                                           ) -> None:
    assert _encrypt(files, "--hcp", "none") == 0
    assert b"Subject: test\r\n" in _outside(files / "out.eml")
    assert b"HP-Outer: Subject: test\r\n" in _wire(files, bob)


def test_encrypt_legacy_display(files: Path, bob: Identity) -> None:
    assert _encrypt(files, "--legacy-display") == 0
    wire = _wire(files, bob)
    assert b'hp-legacy-display="1"' in wire
    assert wire.endswith(b"\r\n\r\nSubject: test\r\n\r\nHello, world.\r\n")
    # decrypt shows the body once, without the element (RFC 9788 legacy display).
    plain = _decrypted(files)
    assert b"hp-legacy-display" not in plain
    assert plain.endswith(b"\r\n\r\nHello, world.\r\n") and plain.count(b"Subject: ") == 1


def test_encrypt_without_header_protection(files: Path) -> None:
    assert _encrypt(files, "--no-header-protection") == 0
    assert b"Subject: test\r\n" in _outside(files / "out.eml")
    assert b"hp=" not in _decrypted(files)


@pytest.mark.parametrize("option", [["--hcp", "shy"], ["--legacy-display"]])
def test_policy_options_need_header_protection(files: Path, option: list[str],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert _encrypt(files, "--no-header-protection", *option) == 2
    err = capsys.readouterr().err
    assert "cannot go with --no-header-protection" in err and "Traceback" not in err
    assert not (files / "out.eml").exists()


def test_an_unknown_policy_is_a_usage_error(files: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert _encrypt(files, "--hcp", "loud") == 2
    assert "'loud' is not one of 'baseline', 'shy', 'none'" in capsys.readouterr().err


def test_sign_encrypt_with_policy_and_legacy_display(files: Path, bob: Identity) -> None:
    assert main(["sign-encrypt", "--key", str(files / "alice.key"),
                 "--cert", str(files / "alice.pem"), "--to", str(files / "bob.pem"),
                 "--trust", str(files / "root.pem"), "--hcp", "shy", "--legacy-display",
                 str(files / "msg.eml"), "-o", str(files / "out.eml")]) == 0
    outside = _outside(files / "out.eml")
    assert b"Subject: [...]\r\n" in outside and b"From: alice@example.org\r\n" in outside
    assert main(["decrypt-verify", "--key", str(files / "bob.key"),
                 "--cert", str(files / "bob.pem"), "--trust", str(files / "root.pem"),
                 str(files / "out.eml"), "-o", str(files / "plain.eml")]) == 0
    plain = (files / "plain.eml").read_bytes()
    assert b'hp="cipher"' in plain and b"Subject: test\r\n" in plain
    assert b"HP-Outer: From: alice@example.org\r\n" in _wire(files, bob)
    assert b"HP-Outer" not in plain and b"hp-legacy-display" not in plain


def test_sign_protects_headers_and_can_be_told_not_to(files: Path) -> None:
    argv = ["sign", "--key", str(files / "alice.key"), "--cert", str(files / "alice.pem"),
            str(files / "msg.eml"), "-o", str(files / "out.eml")]
    assert main(argv) == 0
    signed = (files / "out.eml").read_bytes()
    assert b'hp="clear"' in signed and signed.count(b"Subject: test\r\n") == 2
    assert main([*argv, "--no-header-protection"]) == 0
    signed = (files / "out.eml").read_bytes()
    assert b"hp=" not in signed and signed.count(b"Subject: test\r\n") == 1


def test_sign_has_no_policy_option(files: Path) -> None:
    # Signing hides nothing (hp="clear"), so there is no policy to choose.
    assert main(["sign", "--key", str(files / "alice.key"), "--cert", str(files / "alice.pem"),
                 "--hcp", "shy", str(files / "msg.eml")]) == 2
