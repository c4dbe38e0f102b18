"""smimekit lookup, and encrypt / sign-encrypt --to ADDR, through the real CLI over a real CA."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from kit import CA
from pki import PKI, Identity

from smimekit.cli.main import main

BOB = "bob@example.org"
MESSAGE = (b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: plans\r\n\r\n"
           b"Meet at noon.\r\n")


def _run(ca: CA, *args: str) -> int:
    config = ca.data_dir.parent / "smimekit.toml"
    if not config.exists():
        config.write_text('[directory]\norder = ["store"]\n')
    return main(["--data-dir", str(ca.data_dir), "--config", str(config), *args])


def _key_file(tmp_path: Path, key: object, name: str) -> Path:
    path = tmp_path / name
    path.write_bytes(key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return path


@pytest.fixture
def message(tmp_path: Path) -> Path:
    path = tmp_path / "msg.eml"
    path.write_bytes(MESSAGE)
    return path


def test_lookup_prints_the_chosen_certificate(
        ca: CA, capsys: pytest.CaptureFixture[str]) -> None:
    cert, _ = ca.issue(BOB)
    assert _run(ca, "lookup", "--revocation", "offline", BOB) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert out.startswith(f"{BOB}:\n  1. ")
    assert f"serial {cert.serial_number:x}" in out and "from store" in out
    assert f"notAfter {cert.not_valid_after_utc:%Y-%m-%d}" in out and "[our CA]" in out


def test_lookup_json_is_a_parsable_document(
        ca: CA, capsys: pytest.CaptureFixture[str]) -> None:
    cert, _ = ca.issue(BOB)
    assert _run(ca, "lookup", "--json", "--revocation", "offline", BOB,
                "nobody@example.org") == 1
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert document["version"] == 1
    found, missing = document["results"]
    assert found["ok"] and found["address"] == BOB
    (chosen,) = found["certificates"]
    assert chosen["sha256"] == cert.fingerprint(hashes.SHA256()).hex()
    assert chosen["rank"] == 1 and chosen["sources"] == ["store"] and chosen["ours"]
    assert x509.load_pem_x509_certificate(chosen["pem"].encode()) == cert
    assert found["sources"] == [{"source": "store", "status": "found", "candidates": 1,
                                 "error": None, "notes": [], "cached": False}]
    assert not missing["ok"] and missing["certificates"] == []
    assert missing["explanation"] == "no usable certificate for nobody@example.org: store: none"
    assert captured.err == f"smimekit: {missing['explanation']}\n"


def test_an_address_with_nothing_exits_1_with_one_line_naming_each_source(
        ca: CA, capsys: pytest.CaptureFixture[str]) -> None:
    ca.issue(BOB)
    ca.authority.revoke(email=BOB, reason="keyCompromise")
    assert _run(ca, "lookup", "--revocation", "offline", BOB) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"smimekit: no usable certificate for {BOB}: store: 1 candidate (")
    assert "revoked" in err


def test_lookup_refuses_an_unknown_source_and_a_non_address(
        ca: CA, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(ca, "lookup", "--source", "store,x500", BOB) == 2
    assert "unknown source 'x500'" in capsys.readouterr().err
    assert _run(ca, "lookup", "--revocation", "offline", "bob@") == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "not a mailbox address" in err


def test_encrypt_to_an_address_decrypts_with_the_holders_key(
        ca: CA, tmp_path: Path, message: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cert, key = ca.issue(BOB)
    sealed = tmp_path / "sealed.eml"
    assert _run(ca, "encrypt", "--to", BOB, "--revocation", "offline", str(message),
                "-o", str(sealed)) == 0, capsys.readouterr().err
    key_file = _key_file(tmp_path, key, "bob.key")
    assert _run(ca, "decrypt", "--key", str(key_file), str(sealed),
                "-o", str(tmp_path / "plain.eml")) == 0
    assert b"Meet at noon." in (tmp_path / "plain.eml").read_bytes()
    # an independent reader: OpenSSL opens what the resolver's choice was sent to
    cert_file = tmp_path / "bob.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    opened = subprocess.run(
        ["openssl", "cms", "-decrypt", "-in", str(sealed), "-inkey", str(key_file),
         "-recip", str(cert_file)], capture_output=True, timeout=30, check=False)
    assert opened.returncode == 0, opened.stderr
    assert b"Meet at noon." in opened.stdout


def test_mixed_files_and_addresses(
        ca: CA, pki: PKI, alice: Identity, tmp_path: Path, message: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    _, bob_key = ca.issue(BOB)
    alice_pem = tmp_path / "alice@example.org.pem"  # an '@' in a file name: still a file
    alice_pem.write_bytes(alice.pem_cert())
    root = tmp_path / "tests-root.pem"
    root.write_bytes(pki.root.public_bytes(serialization.Encoding.PEM))
    sealed = tmp_path / "sealed.eml"
    assert _run(ca, "encrypt", "--trust", str(root), "--to", str(alice_pem), "--to", BOB,
                "--revocation", "offline", str(message), "-o", str(sealed)) == 0, \
        capsys.readouterr().err
    for name, key in (("alice", alice.key), ("bob", bob_key)):
        assert _run(ca, "decrypt", "--key", str(_key_file(tmp_path, key, f"{name}.key")),
                    str(sealed), "-o", str(tmp_path / f"{name}.eml")) == 0
        assert b"Meet at noon." in (tmp_path / f"{name}.eml").read_bytes()


def test_encrypt_to_an_address_without_a_certificate_writes_nothing(
        ca: CA, tmp_path: Path, message: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca.issue(BOB)
    sealed = tmp_path / "sealed.eml"
    assert _run(ca, "encrypt", "--to", BOB, "--to", "nobody@example.org", "--revocation",
                "offline", str(message), "-o", str(sealed)) == 1
    err = capsys.readouterr().err
    assert err == ("smimekit: error: no usable certificate for nobody@example.org:"
                   " store: none\n")
    assert not sealed.exists()


def test_sign_encrypt_to_an_address(
        ca: CA, pki: PKI, alice: Identity, tmp_path: Path, message: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    _, bob_key = ca.issue(BOB)
    alice_key = _key_file(tmp_path, alice.key, "alice.key")
    alice_pem = tmp_path / "alice.pem"
    alice_pem.write_bytes(alice.pem_cert())
    root = tmp_path / "tests-root.pem"
    root.write_bytes(pki.root.public_bytes(serialization.Encoding.PEM))
    sealed = tmp_path / "sealed.eml"
    assert _run(ca, "sign-encrypt", "--key", str(alice_key), "--cert", str(alice_pem),
                "--trust", str(root), "--to", BOB, "--revocation", "offline", str(message),
                "-o", str(sealed)) == 0, capsys.readouterr().err
    assert _run(ca, "decrypt-verify", "--key", str(_key_file(tmp_path, bob_key, "bob.key")),
                "--trust", str(root), "--revocation", "offline", str(sealed),
                "-o", str(tmp_path / "plain.eml")) == 0, capsys.readouterr().err
    assert b"Meet at noon." in (tmp_path / "plain.eml").read_bytes()


def test_lookup_caches_a_directorys_answer_in_the_data_directory(
        ca: CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from kit import DirectorySource, ListSource

    from smimekit.directory import resolver
    from smimekit.directory.sources import Candidate

    cert, _ = ca.issue(BOB)
    directory = ListSource("ldap", [Candidate(cert, "ldap", where="uid=bob,ou=people")])
    monkeypatch.setattr(DirectorySource, "shared", directory)
    monkeypatch.setitem(resolver.SOURCES, "ldap", "kit:DirectorySource")
    (tmp_path / "smimekit.toml").write_text('[directory]\norder = ["ldap"]\n')
    offline = ("--revocation", "offline")

    def json_lookup(*args: str) -> dict:
        capsys.readouterr()
        assert _run(ca, "lookup", "--json", *offline, *args, BOB) == 0, \
            capsys.readouterr().err
        return json.loads(capsys.readouterr().out)["results"][0]

    assert json_lookup("--no-cache")["sources"][0]["cached"] is False
    assert not (ca.data_dir / "directory-cache").exists() and len(directory.asked) == 1
    first = json_lookup()
    assert first["certificates"][0]["where"] == "uid=bob,ou=people"
    folder = ca.data_dir / "directory-cache"
    assert oct(folder.stat().st_mode & 0o777) == "0o700" and len(list(folder.iterdir())) == 1
    assert json_lookup()["sources"][0]["cached"] is True and len(directory.asked) == 2
    assert json_lookup("--refresh")["sources"][0]["cached"] is False
    assert len(directory.asked) == 3


def test_without_any_source_encrypt_to_an_address_says_so(
        tmp_path: Path, message: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "empty-data"
    data.mkdir()
    (tmp_path / "smimekit.toml").write_text('[directory]\norder = ["store"]\n')
    assert main(["--data-dir", str(data), "--config", str(tmp_path / "smimekit.toml"),
                 "encrypt", "--to", BOB, str(message), "-o", str(tmp_path / "out.eml")]) == 1
    err = capsys.readouterr().err
    assert err == (f"smimekit: error: no usable certificate for {BOB}: no certificate source"
                   " is set up (a store in the data directory, or [directory] in the"
                   " configuration)\n")
    assert not (tmp_path / "out.eml").exists()
