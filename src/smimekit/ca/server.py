"""The CA's HTTP endpoints: CRL, OCSP (POST and GET) and the CA certificates.

::

    GET  /crl/issuing.crl          application/pkix-crl     the current CRL (``crl()``)
    POST /ocsp  (or /ocsp/)        application/ocsp-request -> application/ocsp-response
    GET  /ocsp/<base64, URL-encoded DER request>            RFC 6960 A.1, RFC 5019 5
    GET  /certs/<name>             application/pkix-cert    e.g. issuing.der, root.der

Built on the standard library's ``ThreadingHTTPServer`` rather than starlette + uvicorn
(DESIGN.md): the handlers are a few lines of synchronous work (one signature per OCSP
answer), it adds no dependency, and tests and ``smimekit ca serve`` start and stop it in
process. It is meant for loopback, behind a reverse proxy when published; DESIGN.md has
services listen on 127.0.0.1.

Responses: 404 for any other path, 405 (with Allow) for a method a path does not take, 411
for a POST without Content-Length, 413 for a body over :data:`MAX_BODY`, 415 for a POST of
another media type, 400 for a GET request that is not base64, 503 when the CRL cannot be had.
A request that is base64 but not an OCSP request gets HTTP 200 with an OCSP
``malformedRequest`` answer, as RFC 6960 wants. No traceback reaches the client or the log:
each request makes one access-log line on the ``smimekit.ca.server`` logger (client
address, method, path cut to 80 characters, status, size, milliseconds) and failures one
line naming the exception type.

The CRL and GET OCSP answers carry ``Cache-Control: max-age`` up to their nextUpdate,
``Last-Modified`` and ``Expires`` (RFC 5019 6.2), so HTTP caches can serve them; POST answers
are not cached.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import email.utils
import http.server
import logging
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp

from smimekit.ca.home import OcspSigner
from smimekit.ca.ocsp import IssuedRecords, OCSPResponder, store_lookup
from smimekit.errors import CAError

if TYPE_CHECKING:
    from smimekit.store.revocation import PublishedCrl

__all__ = ["MAX_BODY", "CAServer", "PublishedCrls", "ocsp_only_server"]

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
"""Largest POST body accepted (an OCSP request is a few hundred bytes)."""
TIMEOUT = 30.0
"""Seconds a connection may sit idle (or trickle a request) before it is closed."""

CRL_PATH = "/crl/issuing.crl"
ROOT_CRL_PATH = "/crl/root.crl"
OCSP_PATH = "/ocsp"
CERTS_PREFIX = "/certs/"

CRL_TYPE = "application/pkix-crl"
CERT_TYPE = "application/pkix-cert"
OCSP_REQUEST_TYPE = "application/ocsp-request"
OCSP_RESPONSE_TYPE = "application/ocsp-response"


def _http_date(when: dt.datetime) -> str:
    return email.utils.format_datetime(when.astimezone(dt.UTC), usegmt=True)


def _cache_headers(this_update: dt.datetime, next_update: dt.datetime | None,
                   now: dt.datetime) -> dict[str, str]:
    """RFC 5019 6.2: cacheable until nextUpdate (never in the past)."""
    if next_update is None:
        return {"Cache-Control": "no-cache"}
    max_age = max(0, int((next_update - now).total_seconds()))
    return {
        "Cache-Control": f"max-age={max_age}, public, no-transform, must-revalidate",
        "Last-Modified": _http_date(this_update),
        "Expires": _http_date(next_update),
    }


class _CrlCache:
    """The nextUpdate of the CRL bytes last served, so a large CRL is parsed once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._der: bytes | None = None
        self._times: tuple[dt.datetime, dt.datetime | None] | None = None

    def times(self, data: bytes) -> tuple[dt.datetime, dt.datetime | None]:
        with self._lock:
            if self._times is not None and (data is self._der or data == self._der):
                return self._times
        crl = x509.load_der_x509_crl(data)
        times = (crl.last_update_utc, crl.next_update_utc)
        with self._lock:
            self._der, self._times = data, times
        return times


class _Response:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None):
        self.status = status
        self.body = body
        self.headers = headers or {}


def _error(status: int, allow: str | None = None) -> _Response:
    body = f"{status} {http.HTTPStatus(status).phrase}\n".encode()
    headers = {"Content-Type": "text/plain; charset=utf-8"}
    if allow:
        headers["Allow"] = allow
    return _Response(status, body, headers)


def _ocsp_get_request(rest: str) -> bytes | None:
    """The DER request in the path after ``/ocsp/``: URL-encoded base64 (RFC 6960 A.1).

    Leading slashes are skipped (an AIA URL ending in '/' joined with another '/'); the
    URL-safe alphabet and missing padding are tolerated.
    """
    text = urllib.parse.unquote(rest.lstrip("/"))
    text = text.strip().translate(str.maketrans("-_", "+/")).replace(" ", "+")
    if not text:
        return None
    text += "=" * (-len(text) % 4)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return data or None


class _App:
    """What each path answers: pure functions of the request, no socket in sight."""

    def __init__(self, crl: Callable[[], bytes], responder: OCSPResponder,
                 certs: Mapping[str, bytes], root_crl: Callable[[], bytes] | None) -> None:
        self.crls = {CRL_PATH: (crl, _CrlCache())}
        if root_crl is not None:
            self.crls[ROOT_CRL_PATH] = (root_crl, _CrlCache())
        self.responder = responder
        self.certs = dict(certs)

    def route(self, path: str) -> tuple[str, str | None]:
        """(resource kind, argument) of a request path, query dropped."""
        path = path.split("?", 1)[0].split("#", 1)[0]
        if path.lower().startswith(("http://", "https://")):
            # absolute-form (RFC 9112 3.2.2), as sent through an HTTP proxy: keep the path
            path = "/" + path.split("/", 3)[3] if path.count("/") >= 3 else "/"
        if path in self.crls:
            return "crl", path
        if path in (OCSP_PATH, OCSP_PATH + "/"):
            return "ocsp", None
        if path.startswith(OCSP_PATH + "/"):
            return "ocsp-get", path[len(OCSP_PATH) + 1:]
        if path.startswith(CERTS_PREFIX) and path[len(CERTS_PREFIX):] in self.certs:
            return "cert", path[len(CERTS_PREFIX):]
        return "none", None

    def get(self, kind: str, arg: str | None) -> _Response:
        if kind == "crl":
            assert arg is not None
            return self.get_crl(arg)
        if kind == "cert":
            assert arg is not None
            return _Response(200, self.certs[arg], {"Content-Type": CERT_TYPE})
        if kind == "ocsp-get":
            assert arg is not None
            request = _ocsp_get_request(arg)
            if request is None:
                return _error(400)
            return self.answer_ocsp(request, cacheable=True)
        if kind == "ocsp":
            return _error(405, allow="POST")
        return _error(404)

    def get_crl(self, path: str) -> _Response:
        source, cache = self.crls[path]
        try:
            data = source()
            this_update, next_update = cache.times(data)
        except Exception as exc:  # a missing or broken CRL: the client may try later
            log.error("CRL unavailable", extra={"error": type(exc).__name__})
            return _error(503)
        headers = {"Content-Type": CRL_TYPE,
                   **_cache_headers(this_update, next_update, dt.datetime.now(dt.UTC))}
        return _Response(200, data, headers)

    def answer_ocsp(self, request: bytes, *, cacheable: bool) -> _Response:
        answer = self.responder.respond(request)
        headers = {"Content-Type": OCSP_RESPONSE_TYPE}
        if cacheable:
            headers.update(self._ocsp_cache_headers(answer))
        else:
            headers["Cache-Control"] = "no-store"
        return _Response(200, answer, headers)

    @staticmethod
    def _ocsp_cache_headers(answer: bytes) -> dict[str, str]:
        try:
            response = ocsp.load_der_ocsp_response(answer)
            if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
                return {"Cache-Control": "no-store"}
            return _cache_headers(response.this_update_utc, response.next_update_utc,
                                  dt.datetime.now(dt.UTC))
        except ValueError:
            return {"Cache-Control": "no-store"}


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "smimekit-ca"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    timeout = TIMEOUT
    # Headers and body go out in two writes; with Nagle's algorithm the second waits for the
    # client's delayed ACK (40 ms) on a kept-alive connection.
    disable_nagle_algorithm = True
    app: _App  # set on the subclass made per server

    # -- methods -----------------------------------------------------------------------

    def do_GET(self) -> None:
        self._serve(lambda kind, arg: self.app.get(kind, arg))

    def do_HEAD(self) -> None:
        self._serve(lambda kind, arg: self.app.get(kind, arg), head=True)

    def do_POST(self) -> None:
        self._serve(self._post)

    def _not_allowed(self) -> None:
        self._serve(lambda kind, arg: _error(404) if kind == "none" else _error(
            405, allow="POST" if kind == "ocsp" else "GET, HEAD"))

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _not_allowed

    def _post(self, kind: str, arg: str | None) -> _Response:
        if kind == "none":
            return _error(404)
        if kind != "ocsp":
            return _error(405, allow="GET, HEAD")
        if self.headers.get("Transfer-Encoding"):
            return _error(411)  # chunked bodies are not read: ask for a length
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            return _error(411)
        try:
            length = int(length_text)
        except ValueError:
            return _error(400)
        if length < 0:
            return _error(400)
        if length > MAX_BODY:
            return _error(413)
        media = (self.headers.get("Content-Type") or OCSP_REQUEST_TYPE).split(";")[0]
        body = self.rfile.read(length)
        if len(body) != length:
            return _error(400)
        if media.strip().lower() != OCSP_REQUEST_TYPE:
            return _error(415)
        return self.app.answer_ocsp(body, cacheable=False)

    # -- plumbing ----------------------------------------------------------------------

    def _serve(self, handler: Callable[[str, str | None], _Response], *,
               head: bool = False) -> None:
        started = time.perf_counter()
        try:
            kind, arg = self.app.route(self.path)
            response = handler(kind, arg)
        except Exception as exc:
            log.error("request failed", extra={"error": type(exc).__name__})
            response = _error(500)
        if response.status in (400, 411, 413, 415, 500):
            self.close_connection = True  # the body may be unread: do not parse it as HTTP
        try:
            self.send_response_only(response.status)
            self.send_header("Date", self.date_time_string())
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if not head:
                self.wfile.write(response.body)
        except OSError as exc:
            log.info("client went away", extra={"error": type(exc).__name__})
            self.close_connection = True
        self._access_log(response.status, 0 if head else len(response.body), started)

    def _access_log(self, status: int, size: int, started: float) -> None:
        path = self.path if len(self.path) <= 80 else self.path[:77] + "..."
        millis = (time.perf_counter() - started) * 1000
        log.info(
            '%s "%s %s" %d %d %.1fms', self.client_address[0], self.command, path, status,
            size, millis,
            extra={"client": self.client_address[0], "method": self.command, "path": path,
                   "status": status, "size": size, "ms": round(millis, 2)},
        )

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        # http.server's own errors (bad request line, header too long, unknown method):
        # a short plain answer, logged like the others.
        started = time.perf_counter()
        code = int(code)
        response = _error(code)
        self.close_connection = True
        try:
            self.send_response_only(code)
            self.send_header("Date", self.date_time_string())
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if getattr(self, "command", None) != "HEAD":
                self.wfile.write(response.body)
        except OSError:
            pass
        if not hasattr(self, "path"):
            self.path = "-"
        if not getattr(self, "command", None):
            self.command = "-"
        self._access_log(code, len(response.body), started)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # everything goes through _access_log


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver prints a traceback to stderr; one line is enough.
        log.error("connection failed", extra={"client": str(client_address[0])})


class PublishedCrls(Protocol):
    def latest_crl(self, issuer_fingerprint: str, *,
                   with_der: bool = True) -> PublishedCrl | None: ...


class StoredCrl:
    """The newest CRL the store holds for one issuer, as published by whichever process
    holds the issuing key (``ca crl``, ``ca serve --sign-crls``); never signs one. Each call
    asks only for the newest number and loads the DER again when it changed."""

    def __init__(self, store: PublishedCrls, issuer_fingerprint: str) -> None:
        self._store = store
        self._issuer = issuer_fingerprint
        self._lock = threading.Lock()
        self._cache: tuple[int, bytes] | None = None

    def __call__(self) -> bytes:
        """Raises:
            CAError: no CRL has been published yet (the server answers 503).
        """
        latest = self._store.latest_crl(self._issuer, with_der=False)
        if latest is None:
            raise CAError("no CRL published yet: run 'smimekit ca crl'")
        with self._lock:
            if self._cache is not None and self._cache[0] == latest.number:
                return self._cache[1]
        full = self._store.latest_crl(self._issuer)
        if full is None or full.der is None:
            raise CAError("no CRL published yet: run 'smimekit ca crl'")
        with self._lock:
            self._cache = (full.number, full.der)
        return full.der


def ocsp_only_server(host: str, port: int, signer: OcspSigner, store: Any,
                     issuer_fingerprint: str, *,
                     root_crl: Callable[[], bytes] | None = None) -> CAServer:
    """The least-privilege server of ``ca serve``: OCSP answers signed by the delegated OCSP
    signer, the newest CRL from the store (:class:`StoredCrl`), the CA certificates. It holds
    no issuing key, so it cannot sign a CRL or a certificate.

    ``store`` offers ``issued_record`` and ``latest_crl`` (a :class:`smimekit.store.Store`).

    Raises:
        CAError: the OCSP signer certificate does not fit the issuing CA.
        OSError: the address cannot be bound.
    """
    lookup_store: IssuedRecords = store
    crl_store: PublishedCrls = store
    responder = OCSPResponder(signer.issuing, signer.cert, signer.key,
                              store_lookup(lookup_store, issuer_fingerprint))
    der = serialization.Encoding.DER
    return CAServer(host, port, crl=StoredCrl(crl_store, issuer_fingerprint), ocsp=responder,
                    root_crl=root_crl, certs={"issuing.der": signer.issuing.public_bytes(der),
                                              "root.der": signer.root.public_bytes(der)})


class CAServer:
    """The CA's CRL, OCSP and certificate endpoints over HTTP.

    ``crl`` is called for each CRL request and returns the current DER (cache it), as is
    ``root_crl`` for ``/crl/root.crl``;
    ``certs`` maps names under ``/certs/`` (``issuing.der``, ``root.der``) to DER
    certificates. Port 0 picks a free port, read back from :attr:`port` and :attr:`url`
    once the server is bound (at construction).

    Use :meth:`start` / :meth:`stop` (or ``with``) to run it in a background thread, or
    :meth:`serve_forever` to run it in the caller's thread (the CLI: ``try:
    server.serve_forever() finally: server.stop()``).
    """

    def __init__(self, host: str, port: int, *, crl: Callable[[], bytes],
                 ocsp: OCSPResponder, certs: Mapping[str, bytes],
                 root_crl: Callable[[], bytes] | None = None) -> None:
        """``root_crl``, when given, is served at ``/crl/root.crl`` (the root's CRL, which
        covers the issuing CA).

        Raises:
            OSError: the address cannot be bound.
        """
        handler = type("Handler", (_Handler,), {"app": _App(crl, ocsp, certs, root_crl)})
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server_class = type("Server", (_Server,), {"address_family": family})
        self._httpd = server_class((host, port), handler)
        self.host = host
        self.port: int = self._httpd.server_address[1]
        self._thread: threading.Thread | None = None
        self._serving = threading.Event()

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:8080`` (a CA's ``base_url``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> CAServer:
        """Serve in a daemon thread until :meth:`stop`."""
        if self._thread is None:
            self._serving.set()
            self._thread = threading.Thread(target=self.serve_forever, args=(0.1,),
                                            name=f"ca-server-{self.port}", daemon=True)
            self._thread.start()
        return self

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serve in this thread until :meth:`stop` (from another thread) or an interrupt
        (KeyboardInterrupt propagates)."""
        self._serving.set()
        log.info("CA server started", extra={"url": self.url})
        try:
            self._httpd.serve_forever(poll_interval)
        finally:
            self._serving.clear()
            log.info("CA server stopped", extra={"url": self.url})

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._serving.is_set():
            self._serving.clear()
            self._httpd.shutdown()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> CAServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
