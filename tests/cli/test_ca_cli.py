"""``smimekit ca``: init, issue (generated keys and CSR), chain, revoke, crl, serve, the offline
root, key history and a PKCS#11 token, through the command line on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from backends import Backend
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12
from loopback import free_port
from softhsm import init_tokens, require_module

from smimekit.cli.main import main
from smimekit.store import Store

PASS = "correct horse battery staple"
BASE = "http://pki.example.com"
MESSAGE = b"From: alice@example.com\r\nTo: bob@example.com\r\nSubject: hi\r\n\r\nHello.\r\n"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    secret = tmp_path / "ca.pass"
    secret.write_text(PASS + "\n")
    monkeypatch.setenv("SMIMEKIT_PASSPHRASE", PASS)
    return tmp_path


def run(backend: Backend, *args: str) -> int:
    return main([*backend.cli_args(), *args])


def init(backend: Backend, *extra: str) -> None:
    assert run(backend, "ca", "init", "--org", "Example Ltd", "--base-url", BASE,
               "--key-type", "p256", "--country", "GB", *extra) == 0


def passphrase_of(out: str) -> str:
    match = re.search(r"PKCS#12 passphrase .*: (\S+)", out)
    assert match, out
    return match.group(1)


def test_issue_sign_encrypt_roundtrip(backend: Backend, env: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    init(backend)
    out_dir = env / "alice"
    assert run(backend, "ca", "issue", "--email", "alice@example.com", "--name", "Alice A",
               "--key-type", "p256", "--out", str(out_dir), "--mobileconfig") == 0
    out = capsys.readouterr().out
    secret = passphrase_of(out).encode()
    names = sorted(p.name for p in out_dir.iterdir())
    assert names == ["alice@example.com.encrypt.mobileconfig", "alice@example.com.encrypt.p12",
                     "alice@example.com.encrypt.pem", "alice@example.com.sign.mobileconfig",
                     "alice@example.com.sign.p12", "alice@example.com.sign.pem"]
    assert oct((out_dir / "alice@example.com.sign.p12").stat().st_mode & 0o777) == "0o600"
    loaded = pkcs12.load_pkcs12((out_dir / "alice@example.com.sign.p12").read_bytes(), secret)
    assert loaded.key is not None and loaded.cert is not None
    assert run(backend, "ca", "chain", "-o", str(env / "chain.pem")) == 0
    chain = x509.load_pem_x509_certificates((env / "chain.pem").read_bytes())
    assert [c.subject.rfc4514_string() for c in chain] == [
        "CN=Example Ltd S/MIME Issuing CA,O=Example Ltd,C=GB",
        "CN=Example Ltd S/MIME Root CA,O=Example Ltd,C=GB"]
    assert run(backend, "ca", "chain", "--root-only", "-o", str(env / "root.pem")) == 0

    # sign with the signing PKCS#12, verify against the CA root with its own CRL
    (env / "msg.eml").write_bytes(MESSAGE)
    (env / "p12.pass").write_text(secret.decode())
    assert run(backend, "sign", "--key", str(out_dir / "alice@example.com.sign.p12"),
               "--passphrase-file", str(env / "p12.pass"), str(env / "msg.eml"),
               "-o", str(env / "signed.eml")) == 0
    assert run(backend, "ca", "crl", "-o", str(env / "issuing.crl")) == 0
    data = Path(backend.data_dir) / "ca" / "root.crl"
    verify = ["verify", "--trust", str(env / "root.pem"), "--revocation", "hard",
              "--crl", str(env / "issuing.crl"), "--crl", str(data), "--no-aia"]
    assert run(backend, *verify, str(env / "signed.eml"), "-o", str(env / "content")) == 0
    # encrypt to the encryption certificate, decrypt with its PKCS#12
    assert run(backend, "encrypt", "--to", str(out_dir / "alice@example.com.encrypt.pem"),
               "--no-recipient-check", str(env / "msg.eml"), "-o", str(env / "enc.eml")) == 0
    assert run(backend, "decrypt", "--key", str(out_dir / "alice@example.com.encrypt.p12"),
               "--passphrase-file", str(env / "p12.pass"), str(env / "enc.eml"),
               "-o", str(env / "dec.eml")) == 0
    assert b"Hello." in (env / "dec.eml").read_bytes()

    # revoke by address: the next CRL lists both, and verification now fails
    capsys.readouterr()
    assert run(backend, "ca", "revoke", "--email", "alice@example.com",
               "--reason", "key-compromise") == 0
    assert capsys.readouterr().out.count("revoked") == 2
    assert run(backend, "ca", "crl", "-o", str(env / "issuing2.crl")) == 0
    crl = x509.load_der_x509_crl((env / "issuing2.crl").read_bytes())
    assert len(crl) == 2
    verify[verify.index(str(env / "issuing.crl"))] = str(env / "issuing2.crl")
    assert run(backend, *verify, str(env / "signed.eml"), "-o", str(env / "content2")) == 1
    assert "revoked" in capsys.readouterr().err
    with Store.open(backend.url, backend.data_dir) as store:
        actions = [e.action for e in store.audit_entries()]
        assert store.verify_audit_log() == []
    assert actions[:3] == ["ca.init", "ca.crl", "ca.issue"]
    assert actions.count("ca.revoke") == 2


def test_issue_from_openssl_csr(backend: Backend, env: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    init(backend)
    key, csr = env / "k.pem", env / "req.pem"
    subprocess.run(["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-subj", "/CN=ignored", "-out", csr], check=True, capture_output=True)
    assert run(backend, "ca", "issue", "--email", "bob@example.com", "--csr", str(csr),
               "--purpose", "both", "--out", str(env / "bob")) == 0
    out = capsys.readouterr().out
    assert "passphrase" not in out  # nothing secret was made
    cert = env / "bob" / "bob@example.com.both.pem"
    check = subprocess.run(["openssl", "x509", "-in", cert, "-noout", "-ext",
                            "keyUsage,subjectAltName"], capture_output=True, text=True)
    assert "Digital Signature, Key Encipherment" in check.stdout
    assert "email:bob@example.com" in check.stdout
    # the certificate holds the CSR's key
    pub = subprocess.run(["openssl", "x509", "-in", cert, "-noout", "-pubkey"],
                         capture_output=True).stdout
    assert pub == subprocess.run(["openssl", "pkey", "-in", key, "-pubout"],
                                 capture_output=True).stdout


def test_legacy_p12_and_key_history(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    backend = Backend("sqlite", None, env / "data")
    init(backend)
    assert run(backend, "ca", "issue", "--email", "carol@example.com", "--purpose", "encrypt",
               "--key-type", "rsa2048", "--legacy-p12", "--out", str(env / "c")) == 0
    secret = passphrase_of(capsys.readouterr().out)
    info = subprocess.run(["openssl", "pkcs12", "-info", "-noout", "-in",
                           env / "c" / "carol@example.com.encrypt.p12", "-passin",
                           f"pass:{secret}"], capture_output=True, text=True)
    assert info.returncode == 0, info.stderr
    assert "pbeWithSHA1And3-KeyTripleDES-CBC" in info.stderr
    assert run(backend, "ca", "history", "--email", "carol@example.com",
               "--out", str(env / "h")) == 0
    assert "1 encryption key(s)" in capsys.readouterr().out


def test_offline_root(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    backend = Backend("sqlite", None, env / "data")
    init(backend)
    usb = env / "usb.p12"
    assert run(backend, "ca", "export-root", "-o", str(usb), "--remove") == 0
    assert not (env / "data" / "ca" / "root.p12").exists()
    assert run(backend, "ca", "root-crl") == 1
    assert "root key is offline" in capsys.readouterr().err
    # issuing still works without the root
    assert run(backend, "ca", "issue", "--email", "d@example.com", "--key-type", "p256",
               "--out", str(env / "d")) == 0
    assert run(backend, "ca", "import-root", str(usb)) == 0
    assert run(backend, "ca", "root-crl") == 0
    crl = x509.load_der_x509_crl((env / "data" / "ca" / "root.crl").read_bytes())
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 2


@pytest.mark.parametrize("args,message", [
    (["ca", "issue", "--email", "x@example.com"], "no CA in"),
    (["ca", "revoke", "abc"], "no CA in"),
])
def test_without_a_ca(env: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                      message: str) -> None:
    assert main(["--data-dir", str(env / "empty"), *args]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_bad_input(env: Path, capsys: pytest.CaptureFixture[str],
                   monkeypatch: pytest.MonkeyPatch) -> None:
    backend = Backend("sqlite", None, env / "data")
    init(backend)
    assert run(backend, "ca", "init", "--org", "X", "--base-url", BASE) == 1
    assert "exists already" in capsys.readouterr().err
    (env / "garbage.csr").write_bytes(b"\x30\x03\x02\x01")
    cases = [
        (["ca", "issue", "--email", "e@example.com", "--csr", str(env / "garbage.csr"),
          "--purpose", "sign"], 1, "CSR cannot be read"),
        (["ca", "issue", "--email", "e@example.com", "--csr", str(env / "garbage.csr")], 2,
         "--purpose"),
        (["ca", "issue", "--email", "not-an-address"], 1, "not a mailbox address"),
        (["ca", "issue", "--email", "e@example.com", "--validity", "900d"], 1,
         "outside 1..825 days"),
        (["ca", "issue", "--email", "e@example.com", "--validity", "soon"], 2, "expected"),
        (["ca", "issue", "--email", "e@example.com", "--profile", "nope"], 2, "nope"),
        (["ca", "revoke", "zz"], 1, "not a hexadecimal serial"),
        (["ca", "revoke", "--email", "e@example.com", "--reason", "whim"], 1, "reason"),
        (["ca", "revoke"], 2, "SERIAL or --email"),
        (["ca", "issue", "--email", "dup@example.com", "--key-type", "p256", "--out",
          str(env / "dup")], 0, ""),
        (["ca", "issue", "--email", "DUP@example.com", "--out", str(env / "dup2")], 1,
         "already holds a live"),
    ]
    for args, status, message in cases:
        assert run(backend, *args) == status, args
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (args, err)
    monkeypatch.setenv("SMIMEKIT_PASSPHRASE", "wrong passphrase!")
    assert run(backend, "ca", "issue", "--email", "e@example.com") == 1
    assert "wrong CA passphrase" in capsys.readouterr().err
    with Store.open(None, env / "data") as store:
        assert store.issued_for("e@example.com") == []


def _cli(env: Path, *args: str, extra_env: dict[str, str] | None = None,
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "smimekit.cli.main", "--data-dir",
                           str(env / "data"), *args], capture_output=True, text=True,
                          env={**os.environ, **(extra_env or {})}, timeout=120)


def test_serve_answers_openssl_ocsp(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    backend = Backend("sqlite", None, env / "data")
    init(backend)
    for who in ("good", "bad"):
        assert run(backend, "ca", "issue", "--email", f"{who}@example.com", "--purpose",
                   "sign", "--key-type", "p256", "--out", str(env / who)) == 0
    assert run(backend, "ca", "revoke", "--email", "bad@example.com",
               "--reason", "key-compromise") == 0
    assert run(backend, "ca", "chain", "--root-only", "-o", str(env / "root.pem")) == 0
    home = env / "data" / "ca"
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "smimekit.cli.main", "--data-dir",
                               str(env / "data"), "ca", "serve", "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{url}/certs/root.der", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        crl = x509.load_der_x509_crl(urllib.request.urlopen(f"{url}/crl/issuing.crl").read())
        assert len(crl) == 1
        root_crl = urllib.request.urlopen(f"{url}/crl/root.crl").read()
        assert root_crl == (home / "root.crl").read_bytes()
        for who, status in (("good", "good"), ("bad", "revoked")):
            out = subprocess.run(
                ["openssl", "ocsp", "-issuer", home / "issuing.pem", "-cert",
                 env / who / f"{who}@example.com.sign.pem", "-url", f"{url}/ocsp",
                 "-CAfile", env / "root.pem", "-nonce"], capture_output=True, text=True,
                timeout=30)
            assert f": {status}" in out.stdout, out.stdout + out.stderr
            assert "Response verify OK" in out.stderr
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert b"Traceback" not in server.stderr.read()  # type: ignore[union-attr]


def test_issuing_key_in_softhsm(env: Path) -> None:
    module = require_module()
    hsm = {**init_tokens(env, ["smimekit"], pin="4711-4711", so_pin="0815-0815"),
           "SMIMEKIT_PKCS11_PIN": "4711-4711"}
    conf = hsm["SOFTHSM2_CONF"]
    made = _cli(env, "ca", "init", "--org", "Example Ltd", "--base-url", BASE,
                "--key-type", "p384", "--pkcs11-module", module, extra_env=hsm)
    assert made.returncode == 0, made.stderr
    assert not (env / "data" / "ca" / "issuing.p12").exists()
    issued = _cli(env, "ca", "issue", "--email", "h@example.com", "--purpose", "sign",
                  "--key-type", "p256", "--out", str(env / "h"), extra_env=hsm)
    assert issued.returncode == 0, issued.stderr
    cert = x509.load_pem_x509_certificate((env / "h" / "h@example.com.sign.pem").read_bytes())
    issuing = x509.load_pem_x509_certificate((env / "data" / "ca" / "issuing.pem")
                                             .read_bytes())
    cert.verify_directly_issued_by(issuing)
    no_pin = _cli(env, "ca", "issue", "--email", "i@example.com", "--out", str(env / "i"),
                  extra_env={"SOFTHSM2_CONF": str(conf)})
    assert no_pin.returncode == 1 and "PIN" in no_pin.stderr
    wrong = _cli(env, "ca", "issue", "--email", "i@example.com", "--out", str(env / "i"),
                 extra_env={**hsm, "SMIMEKIT_PKCS11_PIN": "0000"})
    assert wrong.returncode == 1 and "Traceback" not in wrong.stderr
    crl = _cli(env, "ca", "crl", "-o", str(env / "c.crl"), extra_env=hsm)
    assert crl.returncode == 0, crl.stderr
    assert x509.load_der_x509_crl((env / "c.crl").read_bytes()).is_signature_valid(
        issuing.public_key())  # type: ignore[arg-type]



@pytest.mark.slow
def test_locked_or_missing_database(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import sqlite3

    backend = Backend("sqlite", None, env / "data")
    init(backend)
    out = env / "x"
    holder = sqlite3.connect(env / "data" / "smimekit.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process is writing
    try:
        assert run(backend, "ca", "issue", "--email", "x@example.com", "--key-type", "p256",
                   "--out", str(out)) == 1
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    err = capsys.readouterr().err
    assert "locked by another process" in err and "Traceback" not in err
    assert not out.exists()
    gone = ["--data-dir", str(env / "data"), "--database-url",
            "postgresql+psycopg://nobody@127.0.0.1:1/nothing"]
    assert main([*gone, "ca", "issue", "--email", "x@example.com", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    # the CA records its store (SQLite): another one is refused before it is even contacted
    assert "keeps its records in SQLite" in err and "Traceback" not in err
    assert not out.exists()
    with Store.open(None, env / "data") as store:
        assert store.issued_for("x@example.com") == []


def test_issue_internationalised_addresses_and_refuse_invalid_idna(
        backend: Backend, env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """RFC 9598 through ``ca issue``: an IDN domain and a UTF-8 local part are issued; an
    address that is not valid IDNA 2008 is one line on stderr and exit 1, nothing issued."""
    init(backend)
    assert run(backend, "ca", "issue", "--email", "Zoë@bücher.example.org", "--key-type",
               "p256", "--purpose", "sign", "--out", str(env / "zoe")) == 0
    capsys.readouterr()
    (pem,) = [p for p in (env / "zoe").iterdir() if p.suffix == ".pem"]
    cert = x509.load_pem_x509_certificate(pem.read_bytes())
    (other,) = cert.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.OtherName)
    assert other.type_id.dotted_string == "1.3.6.1.5.5.7.8.9"
    assert "zoë@xn--bcher-kva.example.org".encode() in other.value
    for bad in ("y@☃.example.org", "x@xn--zz.example.org", "x@-a.example.org"):
        assert run(backend, "ca", "issue", "--email", bad, "--key-type", "p256",
                   "--out", str(env / "bad")) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "is not a mailbox address" in err, err
        assert "Traceback" not in err
    assert not (env / "bad").exists()


def test_issue_records_the_identity_check_for_assess(backend: Backend, env: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from smimekit.store import Store

    init(backend)
    assert run(backend, "ca", "issue", "--email", "vetted@example.com", "--out",
               str(env / "v"), "--identity-check", "passport seen by HR, ticket 4411") == 0
    for bad in ("", "two\nlines", "x" * 201):
        assert run(backend, "ca", "issue", "--email", "bad@example.com", "--out",
                   str(env / "b"), "--identity-check", bad) == 1
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and "identity check must be one line" in err
    assert not (env / "b").exists()
    store = Store.open(backend.url, backend.data_dir, create=False)
    try:
        rows = [e for e in store.audit_entries() if e.action == "ca.issue"]
        assert store.get_user("bad@example.com") is None
    finally:
        store.close()
    assert [(r.subject, r.details["identity"]) for r in rows] == [
        ("vetted@example.com", "passport seen by HR, ticket 4411")]
