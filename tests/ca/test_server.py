"""The CA's HTTP server on loopback: CRL, OCSP (POST, GET), certificates; HTTP edge cases;
``openssl ocsp`` as an independent client; smimekit's own revocation checking end to end.

One PKI and one server per module: root -> issuing CA (with a delegated OCSP responder) ->
end entities whose AIA OCSP or CRL distribution point names the running server. The root's
CRL (of CA certificates) is handed to the validation layer locally: the server publishes the
issuing CA's CRL only.
"""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import logging
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

sys.path.insert(0, str(Path(__file__).parents[1] / "revocation"))

from revpki import Party, issue

from smimekit.ca.crl import build_crl
from smimekit.ca.ocsp import CertStatus, OCSPResponder, build_responder_certificate
from smimekit.keys.signer import LocalSigner
from smimekit.service.ca_endpoints import MAX_BODY, CAServer
from smimekit.store.db import Revocation
from smimekit.validation.fetchers import UrllibFetcher
from smimekit.validation.ocsp import evaluate_ocsp, ocsp_question
from smimekit.validation.revinfo import Context
from smimekit.validation.revocation import (
    RevocationOptions,
    RevocationPolicy,
    RevocationReport,
    check_chain,
)

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
HOUR = dt.timedelta(hours=1)
WEEK = dt.timedelta(days=7)
REVOKED_AT = NOW - 2 * HOUR



def der(value: x509.Certificate | x509.CertificateRevocationList) -> bytes:
    return value.public_bytes(serialization.Encoding.DER)


@dataclass
class CA:
    """The CA's state as the server sees it: what it issued, what it revoked."""

    root: Party
    ca: Party
    responder: OCSPResponder
    root_crl: x509.CertificateRevocationList
    issued: set[int] = field(default_factory=set)
    revoked: dict[int, tuple[dt.datetime, str | None]] = field(default_factory=dict)
    crl_der: bytes = b""

    def lookup(self, serial: int) -> CertStatus:
        if serial in self.revoked:
            at, reason = self.revoked[serial]
            return CertStatus.revoked(at, x509.ReasonFlags.key_compromise if reason else None)
        return CertStatus.good() if serial in self.issued else CertStatus.unknown()

    def publish(self) -> None:
        revocations = [Revocation(format(s, "x"), at, reason)
                       for s, (at, reason) in self.revoked.items()]
        self.crl_der = der(build_crl(self.ca.cert, LocalSigner(self.ca.key), revocations,
                                     number=len(revocations) + 1, this_update=NOW - HOUR,
                                     next_update=NOW + WEEK))


@dataclass
class Served:
    state: CA
    server: CAServer
    ocsp_good: Party
    ocsp_revoked: Party
    ocsp_unknown: Party
    crl_good: Party
    crl_revoked: Party

    def chain(self, party: Party) -> list[x509.Certificate]:
        return [party.cert, self.state.ca.cert, self.state.root.cert]


def make_ca() -> CA:
    root = issue("Server Root", None, ca=True)
    ca = issue("Server Issuing CA", root, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    responder_cert = build_responder_certificate(ca.cert, LocalSigner(ca.key), key.public_key(),
                                                 now=NOW - HOUR)
    root_crl = build_crl(root.cert, LocalSigner(root.key), [], number=1, this_update=NOW - HOUR,
                         next_update=NOW + 30 * WEEK, for_ca_certificates=True)
    state = CA(root, ca, OCSPResponder(ca.cert, responder_cert, key, lambda s: state.lookup(s)),
               root_crl)
    state.publish()
    return state


def serve(state: CA) -> CAServer:
    return CAServer("127.0.0.1", 0, crl=lambda: state.crl_der, ocsp=state.responder,
                    certs={"issuing.der": der(state.ca.cert), "root.der": der(state.root.cert)})


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    state = make_ca()
    with serve(state) as server:
        base = server.url
        ocsp_url, crl_url = f"{base}/ocsp", f"{base}/crl/issuing.crl"
        parties = [issue(f"ocsp-{n}", state.ca, ocsp_url=ocsp_url)
                   for n in ("good", "revoked", "unknown")]
        parties += [issue(f"crl-{n}", state.ca, crl_url=crl_url) for n in ("good", "revoked")]
        state.issued = {p.cert.serial_number for i, p in enumerate(parties) if i != 2}
        for p in (parties[1], parties[4]):
            state.revoked[p.cert.serial_number] = (REVOKED_AT, "key-compromise")
        state.publish()
        yield Served(state, server, *parties)


def fetch(url: str, data: bytes | None = None, headers: dict[str, str] | None = None,
          method: str | None = None) -> tuple[int, Message, bytes]:
    """The answer's headers as http.client gives them: names match in any case (RFC 9110
    5.1; the server sends them in lower case)."""
    request = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return reply.status, reply.headers, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def raw(server: CAServer, method: str, path: str, body: bytes | None = None,
        headers: dict[str, str] | None = None) -> tuple[int, Message, bytes]:
    """http.client, for requests urllib will not make (no Content-Length, odd methods)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        headers = dict(headers or {})
        if body is not None:
            headers.setdefault("Content-Length", str(len(body)))
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders(body)
        reply = connection.getresponse()
        return reply.status, reply.headers, reply.read()
    finally:
        connection.close()


def ocsp_request(party: Party, issuer: Party, *, nonce: bool = False) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(party.cert, issuer.cert, hashes.SHA256())
    if nonce:
        builder = builder.add_extension(x509.OCSPNonce(b"0123456789abcdef"), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def max_age(headers: Message) -> int:
    directives = dict(d.strip().partition("=")[::2] for d in headers["Cache-Control"].split(","))
    return int(directives["max-age"])


# -- what is served ---------------------------------------------------------------------


def test_port_zero_picks_a_free_port(served: Served) -> None:
    assert served.server.port > 0
    assert served.server.url == f"http://127.0.0.1:{served.server.port}"


def _seconds_left(until: dt.datetime, before: dt.datetime, after: dt.datetime) -> range:
    """The max-age a server may give for ``until`` when it read its clock between ``before``
    and ``after``: whole seconds, rounded down (a fixed slack fails across a second's edge)."""
    return range(int((until - after).total_seconds()),
                 int((until - before).total_seconds()) + 1)


def test_crl_is_served_cacheable_until_next_update(served: Served) -> None:
    before = dt.datetime.now(dt.UTC)
    status, headers, body = fetch(served.server.url + "/crl/issuing.crl")
    after = dt.datetime.now(dt.UTC)
    assert status == 200 and headers["Content-Type"] == "application/pkix-crl"
    assert body == served.state.crl_der
    crl = x509.load_der_x509_crl(body)
    assert crl.is_signature_valid(served.state.ca.key.public_key())
    assert len(crl) == 2
    assert max_age(headers) in _seconds_left(NOW + WEEK, before, after)
    assert "public" in headers["Cache-Control"] and "Expires" in headers
    assert "Last-Modified" in headers


def test_certificates_are_served(served: Served) -> None:
    for name, cert in (("issuing.der", served.state.ca.cert), ("root.der", served.state.root.cert)):
        status, headers, body = fetch(f"{served.server.url}/certs/{name}")
        assert status == 200 and headers["Content-Type"] == "application/pkix-cert"
        assert x509.load_der_x509_certificate(body) == cert


def test_head_gives_headers_only(served: Served) -> None:
    status, headers, body = raw(served.server, "HEAD", "/crl/issuing.crl")
    assert status == 200 and body == b""
    assert headers["Content-Length"] == str(len(served.state.crl_der))


def test_ocsp_post_answers_and_is_not_cached(served: Served) -> None:
    status, headers, body = fetch(
        served.server.url + "/ocsp", ocsp_request(served.ocsp_good, served.state.ca),
        {"Content-Type": "application/ocsp-request"})
    assert status == 200 and headers["Content-Type"] == "application/ocsp-response"
    assert headers["Cache-Control"] == "no-store"
    assert ocsp.load_der_ocsp_response(body).certificate_status == ocsp.OCSPCertStatus.GOOD


@pytest.mark.parametrize("form", ["encoded", "plain", "double-slash", "urlsafe-unpadded"])
def test_ocsp_get_forms(served: Served, form: str) -> None:
    request = ocsp_request(served.ocsp_revoked, served.state.ca)
    text = base64.b64encode(request).decode()
    path = {
        "encoded": "/ocsp/" + urllib.parse.quote(text, safe=""),
        "plain": "/ocsp/" + text,  # '/' and '+' left as they are
        "double-slash": "/ocsp//" + urllib.parse.quote(text, safe=""),  # AIA URL ending in /
        "urlsafe-unpadded": "/ocsp/" + base64.urlsafe_b64encode(request).decode().rstrip("="),
    }[form]
    before = dt.datetime.now(dt.UTC)
    status, headers, body = raw(served.server, "GET", path)
    after = dt.datetime.now(dt.UTC)
    assert status == 200 and headers["Content-Type"] == "application/ocsp-response"
    response = ocsp.load_der_ocsp_response(body)
    assert response.certificate_status == ocsp.OCSPCertStatus.REVOKED
    # RFC 5019 6.2: cacheable until nextUpdate, 12 hours after thisUpdate; the answer may be
    # one the responder kept from an earlier test (5 minutes), so its own thisUpdate counts
    next_update = response.next_update_utc
    assert next_update is not None
    assert next_update - response.this_update_utc == dt.timedelta(hours=12)
    assert max_age(headers) in _seconds_left(next_update, before, after)


def test_ocsp_garbage_gets_an_ocsp_malformed_request(served: Served) -> None:
    post = {"Content-Type": "application/ocsp-request"}
    for status, _, body in (
        fetch(served.server.url + "/ocsp", b"not DER", post),
        raw(served.server, "GET", "/ocsp/" + base64.b64encode(b"not DER").decode()),
    ):
        assert status == 200
        assert ocsp.load_der_ocsp_response(body).response_status == (
            ocsp.OCSPResponseStatus.MALFORMED_REQUEST)


@pytest.mark.parametrize(("method", "path", "expected", "allow"), [
    ("GET", "/", 404, None),
    ("GET", "/crl/other.crl", 404, None),
    ("GET", "/certs/nope.der", 404, None),
    ("GET", "/certs/../crl/issuing.crl", 404, None),
    ("POST", "/elsewhere", 404, None),
    ("POST", "/crl/issuing.crl", 405, "GET, HEAD"),
    ("PUT", "/certs/root.der", 405, "GET, HEAD"),
    ("GET", "/ocsp", 405, "POST"),
    ("DELETE", "/ocsp", 405, "POST"),
    ("GET", "/ocsp/!!!not-base64!!!", 400, None),
    ("GET", "/ocsp/", 405, "POST"),
    ("GET", "/ocsp//", 400, None),
    ("BREW", "/ocsp", 501, None),
])
def test_status_codes(served: Served, method: str, path: str, expected: int,
                      allow: str | None) -> None:
    body = b"x" if method in ("POST", "PUT") else None
    headers = {"Content-Type": "application/ocsp-request"} if body else {}
    status, reply_headers, reply = raw(served.server, method, path, body, headers)
    assert status == expected
    assert reply_headers.get("Allow") == allow
    assert b"Traceback" not in reply and len(reply) < 100


def test_post_limits(served: Served) -> None:
    big = raw(served.server, "POST", "/ocsp", None, {"Content-Length": str(MAX_BODY + 1),
                                                     "Content-Type": "application/ocsp-request"})
    assert big[0] == 413
    assert raw(served.server, "POST", "/ocsp", None, {})[0] == 411
    assert raw(served.server, "POST", "/ocsp", None, {"Content-Length": "ten"})[0] == 400
    assert raw(served.server, "POST", "/ocsp", b"abc", {"Content-Type": "text/plain"})[0] == 415
    # No Content-Type at all is taken as an OCSP request.
    status, _, body = raw(served.server, "POST", "/ocsp/",
                          ocsp_request(served.ocsp_good, served.state.ca))
    assert status == 200 and ocsp.load_der_ocsp_response(body).certificate_status == (
        ocsp.OCSPCertStatus.GOOD)


def test_one_access_log_line_per_request_and_no_traceback(
        served: Served, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="smimekit.service")
    # a marker in every path: a late line from an earlier test's request on the shared
    # server must not count
    mark = f"?t={uuid.uuid4().hex}"
    fetch(served.server.url + "/crl/issuing.crl" + mark)
    raw(served.server, "GET", "/nowhere" + mark)
    raw(served.server, "BREW", "/ocsp" + mark)
    fetch(served.server.url + "/ocsp" + mark,
          ocsp_request(served.ocsp_good, served.state.ca, nonce=True),
          {"Content-Type": "application/ocsp-request"})
    deadline = time.monotonic() + 10
    while True:  # the line is written once the answer is sent: wait for the last one
        access = [r for r in caplog.records if r.name == "smimekit.service.access"
                  and hasattr(r, "status") and str(getattr(r, "path", "")).endswith(mark)]
        if len(access) >= 4 or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    # one line per request; each handler thread logs after its answer is sent, so lines of
    # back-to-back requests may land in either order
    assert sorted((r.method, r.status) for r in access) == sorted([  # type: ignore[attr-defined]
        ("GET", 200), ("GET", 404), ("BREW", 501), ("POST", 200)])
    assert all(r.exc_info is None for r in caplog.records)


def test_broken_crl_source_is_503_with_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    state = make_ca()

    def broken() -> bytes:
        raise RuntimeError("store unreachable")

    caplog.set_level(logging.INFO, logger="smimekit.service")
    with CAServer("127.0.0.1", 0, crl=broken, ocsp=state.responder, certs={}) as server:
        status, _, body = fetch(server.url + "/crl/issuing.crl")
    assert status == 503 and b"Traceback" not in body
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == ["CRL unavailable"]
    assert errors[0].exc_info is None and errors[0].error == "RuntimeError"  # type: ignore[attr-defined]


def test_stop_closes_the_port_and_serve_forever_stops() -> None:
    state = make_ca()
    server = serve(state).start()
    url = server.url
    assert fetch(url + "/certs/root.der")[0] == 200
    server.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "/certs/root.der", timeout=2)
    foreground = serve(state)
    thread = threading.Thread(target=foreground.serve_forever, args=(0.05,))
    thread.start()
    assert fetch(foreground.url + "/certs/root.der")[0] == 200
    foreground.stop()
    thread.join(5)
    assert not thread.is_alive()


# -- openssl ocsp as the client ---------------------------------------------------------

openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")


@pytest.fixture(scope="module")
def pem_files(served: Served, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ocsp-openssl")
    for name, party in (("root", served.state.root), ("issuer", served.state.ca),
                        ("good", served.ocsp_good), ("revoked", served.ocsp_revoked),
                        ("unknown", served.ocsp_unknown)):
        (folder / f"{name}.pem").write_bytes(party.pem_cert())
    return folder


def openssl_ocsp(folder: Path, *args: str) -> str:
    out = subprocess.run(["openssl", "ocsp", "-issuer", str(folder / "issuer.pem"),
                          "-CAfile", str(folder / "root.pem"), "-resp_text", *args],
                         capture_output=True, text=True, timeout=20, check=False)
    return out.stdout + out.stderr


@pytest.mark.interop
@openssl
@pytest.mark.parametrize("nonce", ["-nonce", "-no_nonce"])
def test_openssl_ocsp_post(served: Served, pem_files: Path, nonce: str) -> None:
    for name, expected in (("good", "good"), ("revoked", "revoked"), ("unknown", "unknown")):
        text = openssl_ocsp(pem_files, "-cert", str(pem_files / f"{name}.pem"), "-url",
                            served.server.url + "/ocsp", nonce)
        assert f"{name}.pem: {expected}" in text, text
        assert "Response verify OK" in text, text
        assert "WARNING: no nonce in response" not in text
        if nonce == "-nonce":
            assert "OCSP Nonce" in text, text
        if name == "revoked":
            assert "Reason: keyCompromise" in text, text


@pytest.mark.interop
@openssl
def test_openssl_ocsp_over_get(served: Served, pem_files: Path) -> None:
    """openssl 3.0's client only POSTs: its request goes out as a GET from urllib, and its
    answer is read back with ``-respin``."""
    for name in ("good", "revoked", "unknown"):
        request, response = pem_files / f"{name}.req", pem_files / f"{name}.resp"
        openssl_ocsp(pem_files, "-cert", str(pem_files / f"{name}.pem"), "-no_nonce",
                     "-reqout", str(request))
        encoded = urllib.parse.quote(base64.b64encode(request.read_bytes()).decode(), safe="")
        status, headers, body = fetch(f"{served.server.url}/ocsp/{encoded}")
        assert status == 200 and "max-age" in headers["Cache-Control"]
        response.write_bytes(body)
        text = openssl_ocsp(pem_files, "-cert", str(pem_files / f"{name}.pem"),
                            "-respin", str(response))
        assert f"{name}.pem: {name}" in text, text
        assert "Response verify OK" in text, text


# -- smimekit's revocation checking against the server ----------------------------------


def hard(served: Served) -> RevocationOptions:
    return RevocationOptions(policy=RevocationPolicy.HARD, crls=[served.state.root_crl],
                             timeout=5)


def check(served: Served, party: Party) -> RevocationReport:
    return check_chain(served.chain(party), options=hard(served))


def test_validation_over_ocsp_good_revoked_unknown(served: Served) -> None:
    ocsp_url = served.server.url + "/ocsp"
    good = check(served, served.ocsp_good)
    assert good.ok and [s.status for s in good.statuses] == ["good", "good"]
    assert (good.statuses[0].protocol, good.statuses[0].url) == ("ocsp", ocsp_url)
    assert "delegated responder" in good.statuses[0].detail

    revoked = check(served, served.ocsp_revoked)
    assert not revoked.ok and revoked.revoked
    first = revoked.statuses[0]
    assert (first.status, first.protocol, first.reason) == ("revoked", "ocsp", "keyCompromise")
    assert first.revoked_at == REVOKED_AT

    unknown = check(served, served.ocsp_unknown)
    assert not unknown.ok and not unknown.revoked
    assert unknown.statuses[0].status == "unknown"
    assert "does not know the certificate" in (unknown.statuses[0].detail or "")
    assert "hard revocation policy" in unknown.reasons[0]


def test_validation_over_crl_good_and_revoked(served: Served) -> None:
    crl_url = served.server.url + "/crl/issuing.crl"
    good = check(served, served.crl_good)
    assert good.ok and (good.statuses[0].protocol, good.statuses[0].url) == ("crl", crl_url)
    revoked = check(served, served.crl_revoked)
    assert not revoked.ok
    first = revoked.statuses[0]
    assert (first.status, first.protocol, first.reason) == ("revoked", "crl", "keyCompromise")


def test_validation_over_crl_unknown_when_the_crl_is_unavailable() -> None:
    state = make_ca()

    def broken() -> bytes:
        raise RuntimeError("no CRL yet")

    with CAServer("127.0.0.1", 0, crl=broken, ocsp=state.responder, certs={}) as server:
        party = issue("crl-nobody", state.ca, crl_url=server.url + "/crl/issuing.crl")
        report = check_chain([party.cert, state.ca.cert, state.root.cert],
                             options=RevocationOptions(policy=RevocationPolicy.HARD,
                                                       crls=[state.root_crl], timeout=5))
    assert not report.ok and report.statuses[0].status == "unknown"
    assert "503" in (report.statuses[0].detail or "")


def test_validation_fetcher_over_get(served: Served) -> None:
    question = ocsp_question(served.ocsp_good.cert, served.state.ca.cert, nonce=False)
    data = UrllibFetcher(timeout=5).get_ocsp(served.server.url + "/ocsp", question.der)
    now = dt.datetime.now(dt.UTC)
    answer = evaluate_ocsp(data, served.ocsp_good.cert, served.state.ca.cert,
                           Context(at=now, now=now))
    assert answer.status == "good" and answer.fresh
