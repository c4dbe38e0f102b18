"""Dual-key senders through the CLI with our own CA (``ca issue``'s default ``dual``: P-256
signing-only + RSA-3072 encryption-only), on SQLite and PostgreSQL: the sent copy of
sign-encrypt stays readable, and sign announces the encryption certificate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from backends import Backend
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from smimekit.cli.main import main

pytestmark = pytest.mark.slow

PASS = "correct horse battery staple"
P12_PASS = "p12 passphrase for tests"
MESSAGE = (b"From: alice@example.com\r\nTo: bob@example.com\r\nSubject: plans\r\n\r\n"
           b"Meet at noon.\r\n")


@pytest.fixture
def issued(backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SMIMEKIT_PASSPHRASE", PASS)
    cli = backend.cli_args()
    assert main([*cli, "ca", "init", "--org", "Example Ltd", "--base-url",
                 "http://pki.example.com", "--key-type", "p256", "--country", "GB"]) == 0
    (tmp_path / "p12.pass").write_text(P12_PASS)
    out = tmp_path / "issued"
    assert main([*cli, "ca", "issue", "--email", "alice@example.com", "--out", str(out),
                 "--p12-passphrase-file", str(tmp_path / "p12.pass")]) == 0  # dual
    assert main([*cli, "ca", "issue", "--email", "bob@example.com", "--purpose", "encrypt",
                 "--key-type", "p256", "--out", str(out),
                 "--p12-passphrase-file", str(tmp_path / "p12.pass")]) == 0
    assert main([*cli, "ca", "chain", "--root-only", "-o", str(tmp_path / "root.pem")]) == 0
    assert main([*cli, "trust", "add", str(tmp_path / "root.pem")]) == 0
    (tmp_path / "msg.eml").write_bytes(MESSAGE)
    return out


def _fingerprint(path: Path) -> str:
    return x509.load_pem_x509_certificate(path.read_bytes()).fingerprint(hashes.SHA256()).hex()


def test_sign_encrypt_with_a_signing_only_certificate_keeps_the_sent_copy(
        backend: Backend, issued: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    cli = backend.cli_args()
    key = ["--passphrase-file", str(tmp_path / "p12.pass")]
    alice_sign = issued / "alice@example.com.sign.p12"
    assert main([*cli, "sign-encrypt", "--key", str(alice_sign), *key,
                 "--to", str(issued / "bob@example.com.encrypt.pem"), "--revocation",
                 "offline", str(tmp_path / "msg.eml"), "-o", str(tmp_path / "sealed.eml")]) \
        == 0, capsys.readouterr().err
    # the sender reads the sent copy with the encryption key the store named ...
    assert main([*cli, "decrypt", "--key", str(issued / "alice@example.com.encrypt.p12"), *key,
                 str(tmp_path / "sealed.eml"), "-o", str(tmp_path / "copy.eml")]) == 0
    assert b"Meet at noon." in (tmp_path / "copy.eml").read_bytes()
    # ... and bob learns where to answer encrypted
    assert main([*cli, "decrypt-verify", "--key", str(issued / "bob@example.com.encrypt.p12"),
                 *key, "--revocation", "offline", "--report", str(tmp_path / "v.json"),
                 str(tmp_path / "sealed.eml"), "-o", str(tmp_path / "bob.eml")]) == 0
    signer = json.loads((tmp_path / "v.json").read_text())["signers"][0]
    assert signer["encryption_cert"]["sha256"] == _fingerprint(
        issued / "alice@example.com.encrypt.pem")
    assert "encrypt answers to: " in capsys.readouterr().err

    # --no-self: the copy is for bob only
    assert main([*cli, "sign-encrypt", "--key", str(alice_sign), *key, "--no-self",
                 "--to", str(issued / "bob@example.com.encrypt.pem"), "--revocation",
                 "offline", str(tmp_path / "msg.eml"), "-o", str(tmp_path / "noself.eml")]) == 0
    capsys.readouterr()
    assert main([*cli, "decrypt", "--key", str(issued / "alice@example.com.encrypt.p12"), *key,
                 str(tmp_path / "noself.eml"), "-o", str(tmp_path / "x.eml")]) == 1


def test_sign_announces_the_encryption_certificate_our_ca_issued(
        backend: Backend, issued: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    cli = backend.cli_args()
    assert main([*cli, "sign", "--key", str(issued / "alice@example.com.sign.p12"),
                 "--passphrase-file", str(tmp_path / "p12.pass"), str(tmp_path / "msg.eml"),
                 "-o", str(tmp_path / "signed.eml")]) == 0
    assert main([*cli, "verify", "--revocation", "offline", "--report",
                 str(tmp_path / "v.json"), str(tmp_path / "signed.eml"),
                 "-o", str(tmp_path / "content")]) == 0, capsys.readouterr().err
    verdict = json.loads((tmp_path / "v.json").read_text())
    assert verdict["signers"][0]["encryption_cert"]["sha256"] == _fingerprint(
        issued / "alice@example.com.encrypt.pem")


def test_without_a_ca_sign_encrypt_needs_self_cert_or_no_self(
        backend: Backend, issued: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    # another data directory: no CA, so no store to find alice's encryption certificate in
    other = ["--data-dir", str(tmp_path / "elsewhere")]
    args = ["sign-encrypt", "--key", str(issued / "alice@example.com.sign.p12"),
            "--passphrase-file", str(tmp_path / "p12.pass"), "--trust",
            str(tmp_path / "root.pem"), "--certs", str(tmp_path / "root.pem"),
            "--no-recipient-check", "--to", str(issued / "bob@example.com.encrypt.pem"),
            str(tmp_path / "msg.eml")]
    capsys.readouterr()
    assert main([*other, *args, "-o", str(tmp_path / "refused.eml")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "cannot receive mail" in err and "--self-cert" in err and "--no-self" in err, err
    assert not (tmp_path / "refused.eml").exists()

    assert main([*other, *args, "--self-cert", str(issued / "alice@example.com.encrypt.pem"),
                 "-o", str(tmp_path / "sealed.eml")]) == 0
    assert main([*other, "decrypt", "--key", str(issued / "alice@example.com.encrypt.p12"),
                 "--passphrase-file", str(tmp_path / "p12.pass"), str(tmp_path / "sealed.eml"),
                 "-o", str(tmp_path / "copy.eml")]) == 0
    assert main([*other, *args, "--no-self", "-o", str(tmp_path / "noself.eml")]) == 0


def test_verify_completes_a_chain_from_the_data_directorys_own_ca(
        backend: Backend, issued: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from smimekit import sign
    from smimekit.keys.pkcs12 import load_pkcs12_identities

    identities, _ = load_pkcs12_identities(
        (issued / "alice@example.com.sign.p12").read_bytes(), P12_PASS.encode())
    key, cert = identities[0]
    assert cert is not None
    # only the signer's certificate travels: the issuing CA must come from DATA-DIR/ca
    (tmp_path / "bare.eml").write_bytes(sign(MESSAGE, key, cert))
    assert main([*backend.cli_args(), "verify", "--no-aia", "--revocation", "offline",
                 str(tmp_path / "bare.eml"), "-o", str(tmp_path / "content")]) == 0, \
        capsys.readouterr().err
