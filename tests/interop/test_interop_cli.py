"""The ``smimekit`` command against the peers: a few end-to-end runs of the CLI contract
(DESIGN.md "CLI contract": complete messages in and out, exit 0/1, one line on stderr)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from checks import assert_complete_message, assert_is_protected
from peers import (
    ENTITY,
    PASSWORD,
    TIMEOUT,
    Gpgsm,
    NssDb,
    Pki,
    der_to_smime,
    message,
    openssl_encrypt,
    openssl_sign,
    openssl_verify,
    skip_unless_peer,
    smime_to_der,
    with_outer_headers,
)

SMIMEKIT = Path(sys.executable).with_name("smimekit")

pytestmark = [
    pytest.mark.interop,
    skip_unless_peer("openssl"),
    pytest.mark.skipif(not SMIMEKIT.exists(), reason=f"{SMIMEKIT} not installed"),
]


def cli(*args: str | Path, stdin: bytes = b"", env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(SMIMEKIT), *map(str, args)], input=stdin, capture_output=True,
                          timeout=TIMEOUT, check=False, env=env)


def ok(proc: subprocess.CompletedProcess[bytes]) -> subprocess.CompletedProcess[bytes]:
    assert proc.returncode == 0, proc.stderr.decode()
    return proc


def test_cli_sign_pss_sha384_stdin_stdout_verified_by_openssl(pki: Pki) -> None:
    a = pki["alice"]
    proc = ok(cli("sign", "--key", a.key, "--cert", a.cert, "--chain", pki.inter_cert,
                  "--digest", "sha384", "--pss", stdin=message("alice")))
    assert_is_protected(openssl_verify(proc.stdout, pki.root_cert), "clear")


def test_cli_sign_opaque_with_pkcs12_verified_by_cmsutil(
    nss: NssDb, pki: Pki, tmp_path: Path
) -> None:
    (tmp_path / "in.eml").write_bytes(message("carol"))
    (tmp_path / "pass").write_text(PASSWORD + "\n")
    ok(cli("sign", "--key", pki["carol"].p12, "--passphrase-file", tmp_path / "pass",
           "--chain", pki.inter_cert, "--opaque", tmp_path / "in.eml", "-o", tmp_path / "out"))
    ext = smime_to_der((tmp_path / "out").read_bytes())
    assert ext.signed_part is None
    assert_is_protected(nss.decode(ext.der), "clear", sender="carol")


def test_cli_encrypt_cbc_decrypted_by_cmsutil(nss: NssDb, pki: Pki, tmp_path: Path) -> None:
    (tmp_path / "in.eml").write_bytes(message())
    ok(cli("encrypt", "--to", pki["carol"].cert, "--to", pki["alice"].cert,
           "--cipher", "aes256-cbc", tmp_path / "in.eml", "-o", tmp_path / "out"))
    assert_is_protected(nss.decode(smime_to_der((tmp_path / "out").read_bytes()).der), "cipher")


def test_cli_decrypts_openssl_ecdh_gcm(pki: Pki, tmp_path: Path) -> None:
    b = pki["bob"]
    enc = tmp_path / "enc.eml"
    enc.write_bytes(with_outer_headers(openssl_encrypt(
        ENTITY, [(b.cert, ["ecdh_kdf_md:sha256"])], cipher="aes-256-gcm")))
    ok(cli("decrypt", "--key", b.key, "--cert", b.cert, enc, "-o", tmp_path / "out"))
    assert_complete_message((tmp_path / "out").read_bytes())


def test_cli_decrypts_gpgsm_message_with_legacy_pkcs12(
    gpgsm: Gpgsm, pki: Pki, tmp_path: Path
) -> None:
    enc = tmp_path / "enc.eml"
    enc.write_bytes(der_to_smime(gpgsm.encrypt(ENTITY, [pki["alice"].email]), "enveloped-data"))
    env = {"PATH": "/usr/bin:/bin", "SMIMEKIT_TEST_PASS": PASSWORD}
    proc = ok(cli("decrypt", "--key", pki["alice"].p12_legacy,
                  "--passphrase-env", "SMIMEKIT_TEST_PASS", enc, env=env))
    assert_complete_message(proc.stdout)


def test_cli_verifies_openssl_signature_and_writes_report(pki: Pki, tmp_path: Path) -> None:
    d = pki["dave"]
    signed = tmp_path / "signed.eml"
    signed.write_bytes(with_outer_headers(
        openssl_sign(ENTITY, d.key, d.cert, chain=[pki.inter_cert], digest="sha384"),
        sender="dave"))
    proc = ok(cli("verify", "--trust", pki.root_cert, "--report", tmp_path / "report.json",
                  signed, "-o", tmp_path / "out"))
    assert_complete_message((tmp_path / "out").read_bytes(), sender="dave")
    line = proc.stderr.decode().strip()
    assert "\n" not in line and "dave@example.org" in line
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["valid"] is True


def test_cli_refuses_tampered_openssl_signature_with_exit_1(pki: Pki, tmp_path: Path) -> None:
    a = pki["alice"]
    signed = tmp_path / "signed.eml"
    good = with_outer_headers(openssl_sign(ENTITY, a.key, a.cert, chain=[pki.inter_cert]))
    signed.write_bytes(good.replace(b"Hello from", b"Jello from"))
    proc = cli("verify", "--trust", pki.root_cert, signed, "-o", tmp_path / "out")
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert err.count("\n") <= 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists() or (tmp_path / "out").read_bytes() == b""
