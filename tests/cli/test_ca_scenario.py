"""The CA's whole lifecycle end to end through the CLI, on SQLite and on PostgreSQL:

init -> enrol -> sign and encrypt with the issued certificates -> verify with revocation
checked over OCSP at our own responder (``ca serve``) -> renew -> old mail still opens with the
renewed PKCS#12 (key history) -> revoke -> verification fails, via OCSP.

The certificates name ``http://pki.example.com`` (pkilint refuses loopback URLs), so the
verifying runs reach ``ca serve`` on loopback through ``http_proxy``, as a client behind a
proxy would; the server accepts absolute-form request targets.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from backends import Backend
from loopback import free_port

from smimekit.cli.main import main
from smimekit.store import Store

pytestmark = pytest.mark.slow

PASS = "correct horse battery staple"
MESSAGE = (b"From: alice@example.com\r\nTo: bob@example.com\r\nSubject: plans\r\n"
           b"Date: Sat, 28 Nov 2026 10:00:00 +0000\r\n\r\nMeet at noon.\r\n")


@pytest.fixture
def served(backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
           ) -> Iterator[tuple[Backend, Path]]:
    monkeypatch.setenv("SMIMEKIT_PASSPHRASE", PASS)
    assert main([*backend.cli_args(), "ca", "init", "--org", "Example Ltd", "--base-url",
                 "http://pki.example.com", "--key-type", "p256", "--country", "GB"]) == 0
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "smimekit.cli.main", *backend.cli_args(), "ca", "serve",
         "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={**os.environ, "SMIMEKIT_PASSPHRASE": PASS})
    try:
        for _ in range(150):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/certs/root.der", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{port}")
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        yield backend, tmp_path
    finally:
        server.terminate()
        server.wait(timeout=10)
    stderr = server.stderr.read() if server.stderr else b""
    assert b"Traceback" not in stderr


def _passphrases(results: Path) -> dict[str, str]:
    with results.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {row["email"]: row[next(k for k in row if "pass" in k)] for row in rows}


def test_lifecycle_end_to_end(served: tuple[Backend, Path],
                              capsys: pytest.CaptureFixture[str]) -> None:
    backend, tmp = served

    def cli(*args: str | Path) -> int:
        return main([*backend.cli_args(), *map(str, args)])

    users = tmp / "users.csv"
    users.write_text("email,name,department\nalice@example.com,Alice Liddell,Sales\n"
                     "bob@example.com,Bob Builder,Works\n")
    issued = tmp / "issued"
    # short validity, so that 'renew --due 30d' has work today
    assert cli("ca", "enroll", "--csv", users, "--out", issued, "--validity", "20d",
               "--key-type", "rsa2048") == 0
    secrets = _passphrases(issued / "results.csv")
    for who, secret in secrets.items():
        (tmp / f"{who}.pass").write_text(secret)
    assert cli("ca", "chain", "--root-only", "-o", tmp / "root.pem") == 0
    assert cli("ca", "chain", "-o", tmp / "chain.pem") == 0
    (tmp / "msg.eml").write_bytes(MESSAGE)

    alice_sign = issued / "alice@example.com.sign.p12"
    bob_enc_cert = issued / "bob@example.com.encrypt.pem"
    bob_enc_p12 = issued / "bob@example.com.encrypt.p12"
    # Alice signs and encrypts to Bob; Bob decrypts and verifies, revocation via our OCSP
    assert cli("sign-encrypt", "--key", alice_sign, "--passphrase-file",
               tmp / "alice@example.com.pass", "--to", bob_enc_cert, "--certs",
               tmp / "chain.pem", "--trust", tmp / "root.pem", "--revocation", "hard",
               "--no-self", tmp / "msg.eml",
               "-o", tmp / "sealed.eml") == 0
    verify = ["--trust", tmp / "root.pem", "--revocation", "hard", "--no-aia",
              "--report", tmp / "verdict.json"]
    assert cli("decrypt-verify", "--key", bob_enc_p12, "--passphrase-file",
               tmp / "bob@example.com.pass", *verify, tmp / "sealed.eml",
               "-o", tmp / "opened.eml") == 0, capsys.readouterr().err
    assert b"Meet at noon." in (tmp / "opened.eml").read_bytes()
    verdict = (tmp / "verdict.json").read_text()
    assert '"ocsp"' in verdict.lower()

    # renewal: Bob's encryption certificate is re-keyed, his old mail still opens
    renewed = tmp / "renewed"
    assert cli("ca", "renew", "--due", "30d", "--out", renewed, "--key-type", "rsa2048") == 0
    new_secrets = _passphrases(renewed / "renewals.csv")
    (tmp / "bob-new.pass").write_text(new_secrets["bob@example.com"])
    new_p12 = renewed / "bob@example.com.encrypt.p12"
    assert cli("decrypt", "--key", new_p12, "--passphrase-file", tmp / "bob-new.pass",
               tmp / "sealed.eml", "-o", tmp / "old-mail.eml") == 0, capsys.readouterr().err
    assert b"Meet at noon." in (tmp / "old-mail.eml").read_bytes()

    # revocation of Alice's signing certificate: our OCSP says revoked, verification fails
    capsys.readouterr()
    alice_sign_pem = renewed / "alice@example.com.sign.pem"
    assert alice_sign_pem.exists()
    assert cli("sign", "--key", renewed / "alice@example.com.sign.p12", "--passphrase-file",
               _write(tmp / "alice-new.pass", new_secrets["alice@example.com"]),
               tmp / "msg.eml", "-o", tmp / "signed.eml") == 0
    assert cli("verify", *verify, tmp / "signed.eml", "-o", tmp / "content") == 0
    assert cli("ca", "revoke", "--email", "alice@example.com", "--reason",
               "key-compromise") == 0
    capsys.readouterr()
    # a fresh cache: the good answer fetched above stays valid until its nextUpdate (12 h)
    assert cli("verify", *verify, "--revocation-cache", tmp / "fresh-cache",
               tmp / "signed.eml", "-o", tmp / "content2") == 1
    err = capsys.readouterr().err
    assert "revoked" in err.lower(), err
    assert not (tmp / "content2").exists()

    with Store.open(backend.url, backend.data_dir) as store:
        assert store.verify_audit_log() == []
        actions = [e.action for e in store.audit_entries()]
    for action in ("ca.init", "ca.enroll", "ca.renew", "ca.revoke", "ca.crl"):
        assert action in actions


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
