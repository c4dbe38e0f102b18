"""``smimekit ca serve`` behind a real nginx, configured by the file we ship
(docs/deploy/nginx-ca.conf rendered into a temporary prefix): OCSP POST and GET, CRL and
certificates through nginx with their cache headers, nginx's cache, a couple of the hostile
requests of tests/ca/test_server_hostile.py, and ``ca serve`` exiting 0 on SIGTERM."""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from backends import Backend
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from loopback import free_port, url_line, wait_for_port

from smimekit.ca.issuance import fingerprint
from smimekit.cli.main import main
from smimekit.store import Store

PASS = "correct horse battery staple"
SHIPPED = Path(__file__).parents[2] / "docs" / "deploy" / "nginx-ca.conf"
NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)

pytestmark = [
    pytest.mark.interop,
    pytest.mark.slow,
    pytest.mark.skipif(NGINX is None, reason="nginx is not installed (make peers installs it)"),
]


@dataclass
class Fronted:
    url: str
    """nginx."""
    data: Path
    home: Path
    people: Path


def render(conf: Path, prefix: Path, listen: int, upstream: int) -> str:
    """The shipped file with its placeholders filled for a temporary prefix (and, as root,
    ``user root;`` so the workers may write there)."""
    text = conf.read_text()
    values = {"@LISTEN@": f"127.0.0.1:{listen}", "@SERVER_NAME@": "pki.example.com",
              "@UPSTREAM@": f"127.0.0.1:{upstream}", "@LOG_DIR@": str(prefix / "logs"),
              "@TEMP_DIR@": str(prefix / "temp"), "@CACHE_DIR@": str(prefix / "cache")}
    for placeholder, value in values.items():
        assert placeholder in text, placeholder
        text = text.replace(placeholder, value)
    assert not re.search(r"@[A-Z_]+@", text)
    if os.geteuid() == 0:
        text = "user root;\n" + text
    return text


@pytest.fixture(scope="module")
def fronted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fronted]:
    base = tmp_path_factory.mktemp("nginx-ca")
    os.environ["SMIMEKIT_PASSPHRASE"] = PASS
    try:
        backend = Backend("sqlite", None, base / "data")
        assert main([*backend.cli_args(), "ca", "init", "--org", "Example Ltd", "--base-url",
                     "http://pki.example.com", "--key-type", "p256", "--country", "GB"]) == 0
        for who in ("good", "bad"):
            assert main([*backend.cli_args(), "ca", "issue", "--email", f"{who}@example.com",
                         "--purpose", "sign", "--key-type", "p256",
                         "--out", str(base / who)]) == 0
        assert main([*backend.cli_args(), "ca", "revoke", "--email", "bad@example.com",
                     "--reason", "key-compromise"]) == 0
    finally:
        del os.environ["SMIMEKIT_PASSPHRASE"]

    ca_port, nginx_port = free_port(), free_port()
    serve = subprocess.Popen(
        [sys.executable, "-m", "smimekit.cli.main", "--data-dir", str(base / "data"), "ca",
         "serve", "--host", "127.0.0.1", "--port", str(ca_port), "--workers", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "SMIMEKIT_PASSPHRASE": PASS})
    prefix = base / "nginx"
    for folder in ("logs", "temp", "cache"):
        (prefix / folder).mkdir(parents=True)
    conf = prefix / "nginx.conf"
    conf.write_text(render(SHIPPED, prefix, nginx_port, ca_port))
    nginx: subprocess.Popen[bytes] | None = None
    try:
        assert serve.stderr is not None
        url_line(serve, ca_port)  # printed once the workers answer
        checked = subprocess.run([str(NGINX), "-t", "-p", str(prefix), "-c", str(conf), "-g",
                                  f"pid {prefix}/nginx.pid;"], capture_output=True, text=True,
                                 timeout=30)
        assert checked.returncode == 0, checked.stderr
        nginx = subprocess.Popen([str(NGINX), "-p", str(prefix), "-c", str(conf), "-g",
                                  f"daemon off; pid {prefix}/nginx.pid;"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_for_port(nginx_port, nginx, "nginx")
        yield Fronted(f"http://127.0.0.1:{nginx_port}", base / "data", base / "data" / "ca", base)
    finally:
        if nginx is not None:
            nginx.send_signal(signal.SIGQUIT)  # graceful
            try:
                nginx.wait(timeout=15)
            except subprocess.TimeoutExpired:
                nginx.kill()
                nginx.wait(10)
        serve.send_signal(signal.SIGTERM)
        try:
            code = serve.wait(timeout=30)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait(10)
            raise
        err = serve.stderr.read() if serve.stderr else b""
        assert code == 0, err
        assert b"Traceback" not in err, err


def get(url: str, data: bytes | None = None,
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as reply:
            return reply.status, {k.lower(): v for k, v in reply.headers.items()}, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def ocsp_request(fronted: Fronted, who: str) -> bytes:
    cert = x509.load_pem_x509_certificate(
        (fronted.people / who / f"{who}@example.com.sign.pem").read_bytes())
    issuer = x509.load_pem_x509_certificate((fronted.home / "issuing.pem").read_bytes())
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA256())
    return builder.build().public_bytes(serialization.Encoding.DER)


def test_ocsp_post_through_nginx_is_answered_and_not_cached(fronted: Fronted) -> None:
    for who, expected in (("good", ocsp.OCSPCertStatus.GOOD), ("bad", ocsp.OCSPCertStatus.REVOKED)):
        for _ in range(2):
            status, headers, body = get(fronted.url + "/ocsp", ocsp_request(fronted, who),
                                        {"Content-Type": "application/ocsp-request"})
            assert status == 200 and headers["content-type"] == "application/ocsp-response"
            assert headers["cache-control"] == "no-store"
            assert "x-cache-status" not in headers  # /ocsp is not cached at all
            assert ocsp.load_der_ocsp_response(body).certificate_status == expected


def test_ocsp_get_through_nginx_is_cached_until_next_update(fronted: Fronted) -> None:
    encoded = urllib.parse.quote(base64.b64encode(ocsp_request(fronted, "bad")).decode(), safe="")
    first = get(f"{fronted.url}/ocsp/{encoded}")
    second = get(f"{fronted.url}/ocsp/{encoded}")
    for status, headers, body in (first, second):
        assert status == 200 and "max-age" in headers["cache-control"]
        assert "expires" in headers and "last-modified" in headers
        response = ocsp.load_der_ocsp_response(body)
        assert response.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert first[1]["x-cache-status"] == "MISS" and second[1]["x-cache-status"] == "HIT"
    assert first[2] == second[2]  # the cached answer itself


def test_crl_and_certificates_through_nginx(fronted: Fronted) -> None:
    issuing = x509.load_pem_x509_certificate((fronted.home / "issuing.pem").read_bytes())
    status, headers, body = get(fronted.url + "/crl/issuing.crl")
    assert status == 200 and headers["content-type"] == "application/pkix-crl"
    assert "max-age" in headers["cache-control"] and "expires" in headers
    with Store.open(None, fronted.data) as store:
        latest = store.latest_crl(fingerprint(issuing))
    assert latest is not None and body == latest.der
    assert get(fronted.url + "/crl/root.crl")[2] == (fronted.home / "root.crl").read_bytes()
    for name in ("issuing", "root"):
        status, headers, body = get(f"{fronted.url}/certs/{name}.der")
        assert status == 200 and headers["content-type"] == "application/pkix-cert"
        assert x509.load_der_x509_certificate(body) == x509.load_pem_x509_certificate(
            (fronted.home / f"{name}.pem").read_bytes())
    assert get(fronted.url + "/nowhere")[0] == 404
    assert get(fronted.url + "/ocsp")[0] == 405


def raw(fronted: Fronted, data: bytes) -> list[int]:
    """The statuses of the replies nginx sends to ``data`` before it closes or idles."""
    port = int(fronted.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            pass
    return [int(m) for m in re.findall(rb"^HTTP/1\.[01] (\d{3}) ", received, re.M)]


SMUGGLED = b"GET /certs/root.der HTTP/1.1\r\nHost: pki.example.com\r\n\r\n"


def test_hostile_requests_through_nginx(fronted: Fronted) -> None:
    get_with_body = (b"GET /crl/issuing.crl HTTP/1.1\r\nHost: pki.example.com\r\n"
                     b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(SMUGGLED)) + SMUGGLED
    assert raw(fronted, get_with_body) == [200]
    post_404 = (b"POST /nowhere HTTP/1.1\r\nHost: pki.example.com\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n" % len(SMUGGLED)) + SMUGGLED
    assert raw(fronted, post_404) == [404]
    two_lengths = (b"POST /ocsp HTTP/1.1\r\nHost: pki.example.com\r\nContent-Length: 4\r\n"
                   b"Content-Length: %d\r\n\r\n" % len(SMUGGLED)) + SMUGGLED
    assert raw(fronted, two_lengths) == [400]
    assert raw(fronted, b"GET /certs/root.der HTTP/1.1\r\n\r\n") == [400]  # no Host
    big = (b"POST /ocsp HTTP/1.1\r\nHost: pki.example.com\r\nContent-Type: "
           b"application/ocsp-request\r\nContent-Length: %d\r\n\r\n" % (64 * 1024 + 1))
    assert raw(fronted, big) == [413]
