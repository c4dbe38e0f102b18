"""``smimekit ca serve`` with least privilege: by default the real server process unlocks the
delegated OCSP signer only (the issuing, root and vault key files are moved out of the data
directory while it runs) and serves the CRL the store holds; ``--sign-crls`` holds the
issuing key and re-signs a CRL that nears its nextUpdate."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from backends import Backend
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from loopback import free_port
from softhsm import init_tokens, require_module

from smimekit.ca.home import CAHome
from smimekit.ca.issuance import CRL_VALIDITY, CertificateAuthority, fingerprint
from smimekit.cli.main import main
from smimekit.keys.signer import LocalSigner
from smimekit.service.ca_endpoints import ocsp_only_server
from smimekit.store import Store

PASS = "correct horse battery staple"
BASE = "http://pki.example.com"
KEY_FILES = ("issuing.p12", "root.p12", "vault.p12")


@pytest.fixture(autouse=True)
def _no_proxy_for_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.delenv("http_proxy", raising=False)
    monkeypatch.delenv("HTTP_PROXY", raising=False)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SMIMEKIT_PASSPHRASE", PASS)
    backend = Backend("sqlite", None, tmp_path / "data")
    assert main([*backend.cli_args(), "ca", "init", "--org", "Example Ltd", "--base-url",
                 BASE, "--key-type", "p256", "--country", "GB"]) == 0
    for who in ("good", "bad"):
        assert main([*backend.cli_args(), "ca", "issue", "--email", f"{who}@example.com",
                     "--purpose", "sign", "--key-type", "p256",
                     "--out", str(tmp_path / who)]) == 0
    assert main([*backend.cli_args(), "ca", "revoke", "--email", "bad@example.com",
                 "--reason", "key-compromise"]) == 0
    return tmp_path


def wait_until_serving(server: subprocess.Popen[bytes], url: str) -> None:
    """Until ``ca serve`` hands out the root certificate (at most 15 s); a server that exits
    meanwhile fails the test with its stderr."""
    for _ in range(150):
        try:
            urllib.request.urlopen(f"{url}/certs/root.der", timeout=1).read()
            return
        except OSError:
            assert server.poll() is None, server.stderr.read()  # type: ignore[union-attr]
            time.sleep(0.1)


@contextmanager
def serving(env: Path, *extra: str) -> Iterator[str]:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "smimekit.cli.main", "--data-dir",
                               str(env / "data"), "ca", "serve", "--port", str(port), *extra],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(server, url)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)
        err = server.stderr.read()  # type: ignore[union-attr]
        assert b"Traceback" not in err, err


@contextmanager
def keys_moved_away(env: Path) -> Iterator[None]:
    """The issuing, root and vault keys out of the data directory (chmod stops no root)."""
    home, away = env / "data" / "ca", env / "away"
    away.mkdir()
    for name in KEY_FILES:
        os.rename(home / name, away / name)
    try:
        yield
    finally:
        for name in KEY_FILES:
            os.rename(away / name, home / name)


def ask_ocsp(url: str, env: Path, who: str) -> ocsp.OCSPResponse:
    home = env / "data" / "ca"
    cert = x509.load_pem_x509_certificate(
        (env / who / f"{who}@example.com.sign.pem").read_bytes())
    issuer = x509.load_pem_x509_certificate((home / "issuing.pem").read_bytes())
    request = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA256()).build()
    http_request = urllib.request.Request(
        f"{url}/ocsp", data=request.public_bytes(serialization.Encoding.DER),
        headers={"Content-Type": "application/ocsp-request"})
    return ocsp.load_der_ocsp_response(urllib.request.urlopen(http_request, timeout=10).read())


def assert_signed_by_ocsp_signer(response: ocsp.OCSPResponse, env: Path) -> None:
    signer = x509.load_pem_x509_certificate((env / "data" / "ca" / "ocsp.pem").read_bytes())
    assert response.certificates == [signer]
    public = signer.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert response.signature_hash_algorithm is not None
    public.verify(response.signature, response.tbs_response_bytes,
                  ec.ECDSA(response.signature_hash_algorithm))


def newest_crl_number(env: Path) -> int:
    issuer = x509.load_pem_x509_certificate((env / "data" / "ca" / "issuing.pem").read_bytes())
    with Store.open(None, env / "data") as store:
        latest = store.latest_crl(fingerprint(issuer), with_der=False)
    assert latest is not None
    return latest.number


def crl_number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def test_default_serve_answers_without_the_issuing_key(env: Path) -> None:
    published = newest_crl_number(env)
    issuing = x509.load_pem_x509_certificate((env / "data" / "ca" / "issuing.pem").read_bytes())
    with keys_moved_away(env), serving(env) as url:
        for who, status in (("good", ocsp.OCSPCertStatus.GOOD),
                            ("bad", ocsp.OCSPCertStatus.REVOKED)):
            response = ask_ocsp(url, env, who)
            assert response.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
            assert response.certificate_status == status
            assert_signed_by_ocsp_signer(response, env)
        data = urllib.request.urlopen(f"{url}/crl/issuing.crl", timeout=10).read()
        crl = x509.load_der_x509_crl(data)
        assert crl.is_signature_valid(issuing.public_key())  # type: ignore[arg-type]
        assert crl_number(crl) == published and len(crl) == 1
        root_crl = urllib.request.urlopen(f"{url}/crl/root.crl", timeout=10).read()
        assert root_crl == (env / "data" / "ca" / "root.crl").read_bytes()
    assert newest_crl_number(env) == published  # nothing signed


def test_default_serve_serves_a_crl_published_meanwhile(env: Path) -> None:
    with serving(env) as url:
        before = x509.load_der_x509_crl(
            urllib.request.urlopen(f"{url}/crl/issuing.crl", timeout=10).read())
        assert main(["--data-dir", str(env / "data"), "ca", "crl"]) == 0  # the cron job
        after = x509.load_der_x509_crl(
            urllib.request.urlopen(f"{url}/crl/issuing.crl", timeout=10).read())
    assert crl_number(after) == crl_number(before) + 1


def _publish_stale_crl(env: Path) -> int:
    """A CRL signed long enough ago that less than half its validity is left."""
    home = CAHome(env / "data")
    with Store.open(None, env / "data") as store:
        cax = CertificateAuthority(home.unlock(PASS.encode()), store, actor="test")
        crl = cax.publish_crl(now=dt.datetime.now(dt.UTC) - CRL_VALIDITY * 3 / 4)
    return crl_number(crl)


def test_default_serve_does_not_resign_a_stale_crl(env: Path) -> None:
    stale = _publish_stale_crl(env)
    with keys_moved_away(env), serving(env) as url:
        crl = x509.load_der_x509_crl(
            urllib.request.urlopen(f"{url}/crl/issuing.crl", timeout=10).read())
    assert crl_number(crl) == stale
    assert newest_crl_number(env) == stale


def test_sign_crls_mode_resigns_a_stale_crl(env: Path) -> None:
    stale = _publish_stale_crl(env)
    issuing = x509.load_pem_x509_certificate((env / "data" / "ca" / "issuing.pem").read_bytes())
    with serving(env, "--sign-crls", "--crl-check-interval", "1"):
        for _ in range(100):  # the schedule, not a CRL request, re-signs it
            if newest_crl_number(env) > stale:
                break
            time.sleep(0.1)
        assert newest_crl_number(env) == stale + 1
    with Store.open(None, env / "data") as store:
        latest = store.latest_crl(fingerprint(issuing))
    assert latest is not None and latest.der is not None
    crl = x509.load_der_x509_crl(latest.der)
    assert crl.is_signature_valid(issuing.public_key())  # type: ignore[arg-type]
    assert crl.next_update_utc is not None
    assert crl.next_update_utc - dt.datetime.now(dt.UTC) > CRL_VALIDITY * 0.9
    assert len(crl) == 1


def test_sign_crls_mode_needs_the_issuing_key(env: Path) -> None:
    with keys_moved_away(env):
        result = subprocess.run(
            [sys.executable, "-m", "smimekit.cli.main", "--data-dir", str(env / "data"),
             "ca", "serve", "--sign-crls", "--port", str(free_port())],
            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "issuing.p12" in result.stderr and "Traceback" not in result.stderr


def _cli(env: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "smimekit.cli.main", "--data-dir", str(env / "data"),
         "ca", "serve", "--port", str(free_port())],
        capture_output=True, text=True, timeout=60)


def test_serve_without_the_ocsp_signer_key_fails_clearly(env: Path) -> None:
    os.unlink(env / "data" / "ca" / "ocsp.p12")
    result = _cli(env)
    assert result.returncode == 1, result.stderr
    assert "OCSP signer key" in result.stderr and "missing" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_serve_with_an_expired_ocsp_signer_fails_clearly(env: Path) -> None:
    home = CAHome(env / "data")
    unlocked = home.unlock(PASS.encode())
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=200)
    home.replace_ocsp_signer(unlocked, PASS.encode(), now=long_ago)
    result = _cli(env)
    assert result.returncode == 1, result.stderr
    assert "OCSP signer certificate expired" in result.stderr
    assert "'smimekit ca crl'" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    # the cron job that holds the issuing key renews it; serving works again
    assert main(["--data-dir", str(env / "data"), "ca", "crl"]) == 0
    renewed = x509.load_pem_x509_certificate((env / "data" / "ca" / "ocsp.pem").read_bytes())
    assert renewed.not_valid_after_utc - dt.datetime.now(dt.UTC) > dt.timedelta(days=80)
    with keys_moved_away(env), serving(env) as url:
        response = ask_ocsp(url, env, "good")
        assert response.certificate_status == ocsp.OCSPCertStatus.GOOD
        assert_signed_by_ocsp_signer(response, env)


def test_ca_crl_renews_an_ocsp_signer_that_expires_soon(
        env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = CAHome(env / "data")
    home.replace_ocsp_signer(home.unlock(PASS.encode()), PASS.encode(),
                             now=dt.datetime.now(dt.UTC) - dt.timedelta(days=80))
    old = home.certificate("ocsp")
    assert main(["--data-dir", str(env / "data"), "ca", "crl"]) == 0
    assert "renewed the OCSP signer" in capsys.readouterr().err
    new = home.certificate("ocsp")
    assert new != old and new.not_valid_after_utc > old.not_valid_after_utc
    assert main(["--data-dir", str(env / "data"), "ca", "crl"]) == 0  # not due again
    assert home.certificate("ocsp") == new


def _reachable(root: Any) -> Iterator[Any]:
    """Every object reachable from ``root`` through attributes, containers and closures."""
    seen: set[int] = set()
    todo = [root]
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, str | bytes | int | float | bool | type(None)):
            continue
        seen.add(id(obj))
        yield obj
        if type(obj).__module__.startswith("sqlalchemy"):
            continue  # the store's connection pool: no keys there
        if isinstance(obj, dict):
            todo.extend(obj.keys())
            todo.extend(obj.values())
        elif isinstance(obj, list | tuple | set | frozenset):
            todo.extend(obj)
        if hasattr(obj, "__dict__") and not isinstance(obj, type):
            todo.extend(vars(obj).values())
        for slot in getattr(type(obj), "__slots__", ()):
            if hasattr(obj, slot):
                todo.append(getattr(obj, slot))
        if isinstance(obj, type) and obj.__module__.startswith("smimekit"):
            todo.extend(v for k, v in vars(obj).items() if not k.startswith("__"))
        closure = getattr(obj, "__closure__", None)
        if closure:
            todo.extend(cell.cell_contents for cell in closure)
        if hasattr(obj, "__self__") and not isinstance(obj, type):
            todo.append(obj.__self__)


def test_default_server_object_holds_no_issuing_key(env: Path) -> None:
    home = CAHome(env / "data")
    with keys_moved_away(env):
        signer = home.open_ocsp_signer(PASS.encode())
    issuing_public = signer.issuing.public_key()
    with Store.open(None, env / "data") as store:
        server = ocsp_only_server("127.0.0.1", 0, signer, store, fingerprint(signer.issuing))
        try:
            objects = list(_reachable(server))
        finally:
            server.stop()
    private = [o for o in objects if isinstance(o, ec.EllipticCurvePrivateKey)]
    assert len(private) == 1 and private[0].public_key() == signer.cert.public_key()
    assert not [o for o in objects if isinstance(o, LocalSigner)
                or type(o).__module__ == "smimekit.keys.pkcs11"]
    assert not any(isinstance(o, ec.EllipticCurvePrivateKey)
                   and o.public_key() == issuing_public for o in objects)
    assert not any(hasattr(o, "signer") or hasattr(o, "root_signer") for o in objects)
    # the walk does reach the responder that holds the OCSP key
    assert any(type(o).__name__ == "OCSPResponder" for o in objects)


def test_default_serve_of_a_token_ca_never_logs_into_the_token(tmp_path: Path) -> None:
    module = require_module()
    hsm = {**os.environ, **init_tokens(tmp_path, ["smimekit"], pin="4711-4711",
                                       so_pin="0815-0815"),
           "SMIMEKIT_PKCS11_PIN": "4711-4711", "SMIMEKIT_PASSPHRASE": PASS}
    cli = [sys.executable, "-m", "smimekit.cli.main", "--data-dir", str(tmp_path / "data")]
    for args in (["ca", "init", "--org", "Example Ltd", "--base-url", BASE, "--key-type",
                  "p384", "--pkcs11-module", module],
                 ["ca", "issue", "--email", "good@example.com", "--purpose", "sign",
                  "--key-type", "p256", "--out", str(tmp_path / "good")]):
        made = subprocess.run([*cli, *args], capture_output=True, text=True, env=hsm,
                              timeout=120)
        assert made.returncode == 0, made.stderr
    # no PIN and no token at all for the server: it must not need them
    os.rename(tmp_path / "tokens", tmp_path / "tokens-away")
    port = free_port()
    server = subprocess.Popen(
        [*cli, "ca", "serve", "--port", str(port)], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env={k: v for k, v in hsm.items()
                                     if k not in ("SMIMEKIT_PKCS11_PIN", "SOFTHSM2_CONF")})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(server, url)
        response = ask_ocsp(url, tmp_path, "good")
        assert response.certificate_status == ocsp.OCSPCertStatus.GOOD
        assert_signed_by_ocsp_signer(response, tmp_path)
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert b"Traceback" not in server.stderr.read()  # type: ignore[union-attr]
