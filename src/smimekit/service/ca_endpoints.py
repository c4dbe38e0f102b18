"""The CA's endpoints: CRLs, OCSP (POST and GET) and the CA certificates, as one ASGI
sub-application (:class:`CAEndpoints`, mounted at the root of :class:`ServiceApp`: the CA's
base URL is what certificates name in their AIA and CRL distribution points).

::

    GET  /crl/issuing.crl          application/pkix-crl     the current CRL
    GET  /crl/root.crl             application/pkix-crl     the root's CRL (CA certificates)
    POST /ocsp  (or /ocsp/)        application/ocsp-request -> application/ocsp-response
    GET  /ocsp/<base64, URL-encoded DER request>            RFC 6960 A.1, RFC 5019 5
    GET  /certs/<name>             application/pkix-cert    e.g. issuing.der, root.der

Responses: 404 for any other path, 405 (with Allow) for a method a path does not take, 411
for a POST without Content-Length (or with Transfer-Encoding: the body of an OCSP request
is small and has a length), 413 for a body over :data:`MAX_BODY`, 415 for a POST of another
media type, 400 for a GET request that is not base64, 503 when the CRL cannot be had. A
request that is base64 but not an OCSP request gets HTTP 200 with an OCSP
``malformedRequest`` answer, as RFC 6960 wants. An answer to a request whose body may be
unread (400, 411, 413, 415) closes the connection. Failures make one log line on the
``smimekit.service.ca`` logger naming the exception type; the access log is
:class:`ServiceApp`'s.

The CRL and GET OCSP answers carry ``Cache-Control: max-age`` up to their nextUpdate,
``Last-Modified`` and ``Expires`` (RFC 5019 6.2), so HTTP caches can serve them; POST answers
are not cached.

What a request gets is a pure function of the request (:meth:`CAEndpoints.answer`); the
ASGI part only reads the body of an OCSP POST, bounded, and sends the answer. The work
(a store lookup and one signature) runs on the worker's event loop: it is short and
CPU-bound, and workers are processes (``ca serve --workers``).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import email.utils
import logging
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp

from smimekit.ca.home import OcspSigner
from smimekit.ca.ocsp import IssuedRecords, OCSPResponder, store_lookup
from smimekit.errors import CAError
from smimekit.service.app import (
    Mount,
    Receive,
    Request,
    Response,
    Scope,
    Send,
    ServiceApp,
    error_response,
    read_body,
    send_response,
)
from smimekit.service.runner import EmbeddedServer, ServerLimits

if TYPE_CHECKING:
    from smimekit.store.revocation import PublishedCrl

__all__ = ["MAX_BODY", "CAEndpoints", "CAServer", "PublishedCrls", "StoredCrl", "ca_app",
           "ocsp_only_endpoints", "ocsp_only_server"]

log = logging.getLogger("smimekit.service.ca")

MAX_BODY = 64 * 1024
"""Largest POST body accepted (an OCSP request is a few hundred bytes)."""

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


class CAEndpoints:
    """The CA's endpoints as an ASGI application; what each path answers is a pure function
    of the request (:meth:`answer`), no socket in sight.

    ``crl`` is called for each CRL request and returns the current DER (cache it), as is
    ``root_crl`` for ``/crl/root.crl``; ``certs`` maps names under ``/certs/``
    (``issuing.der``, ``root.der``) to DER certificates.
    """

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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request.from_scope(scope)
        response = self.before_body(request)
        if response is None:
            body = await read_body(receive, MAX_BODY)
            if body is None:
                response = error_response(413, close=True)
            else:
                response = self.answer(Request(request.method, request.path, request.headers,
                                               body))
        await send_response(send, response, head=request.method == "HEAD")

    def before_body(self, request: Request) -> Response | None:
        """The answer to a request whose body need not be read: anything but a POST to
        ``/ocsp`` with an acceptable length (its body is read, then :meth:`answer`)."""
        kind, _ = self.route(request.path)
        if request.method != "POST" or kind != "ocsp":
            return self.answer(request)
        if "transfer-encoding" in request.headers:
            return error_response(411, close=True)  # chunked bodies are not read
        length_text = request.headers.get("content-length")
        if length_text is None:
            return error_response(411, close=True)
        if not length_text.isascii() or not length_text.isdigit():
            return error_response(400, close=True)
        if int(length_text) > MAX_BODY:
            return error_response(413, close=True)
        return None

    def answer(self, request: Request) -> Response:
        """What ``request`` (with its body) gets."""
        kind, arg = self.route(request.path)
        if request.method in ("GET", "HEAD"):
            return self.get(kind, arg)
        if kind == "none":
            return error_response(404)
        if request.method != "POST" or kind != "ocsp":
            return error_response(405, allow="POST" if kind == "ocsp" else "GET, HEAD")
        media = (request.headers.get("content-type") or OCSP_REQUEST_TYPE).split(";")[0]
        if media.strip().lower() != OCSP_REQUEST_TYPE:
            return error_response(415, close=True)
        return self.answer_ocsp(request.body, cacheable=False)

    def get(self, kind: str, arg: str | None) -> Response:
        if kind == "crl":
            assert arg is not None
            return self.get_crl(arg)
        if kind == "cert":
            assert arg is not None
            return Response(200, self.certs[arg], {"Content-Type": CERT_TYPE})
        if kind == "ocsp-get":
            assert arg is not None
            request = _ocsp_get_request(arg)
            if request is None:
                return error_response(400)
            return self.answer_ocsp(request, cacheable=True)
        if kind == "ocsp":
            return error_response(405, allow="POST")
        return error_response(404)

    def get_crl(self, path: str) -> Response:
        source, cache = self.crls[path]
        try:
            data = source()
            this_update, next_update = cache.times(data)
        except Exception as exc:  # a missing or broken CRL: the client may try later
            log.error("CRL unavailable", extra={"error": type(exc).__name__})
            return error_response(503)
        headers = {"Content-Type": CRL_TYPE,
                   **_cache_headers(this_update, next_update, dt.datetime.now(dt.UTC))}
        return Response(200, data, headers)

    def answer_ocsp(self, request: bytes, *, cacheable: bool) -> Response:
        answer = self.responder.respond(request)
        headers = {"Content-Type": OCSP_RESPONSE_TYPE}
        if cacheable:
            headers.update(self._ocsp_cache_headers(answer))
        else:
            headers["Cache-Control"] = "no-store"
        return Response(200, answer, headers)

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


class PublishedCrls(Protocol):
    def latest_crl(self, issuer_fingerprint: str, *,
                   with_der: bool = True) -> PublishedCrl | None: ...


class StoredCrl:
    """The newest CRL the store holds for one issuer, as published by whichever process
    holds the issuing key (``ca crl``, ``ca serve --sign-crls``); never signs one. Each call
    asks only for the newest number and loads the DER again when it changed.

    When the store cannot be read (the database is away), the CRL this process last had is
    served for as long as it is valid (before its nextUpdate), with one warning per outage:
    a client that hard-fails on a missing CRL keeps working through a database outage, and
    gets nothing it could not have had from an HTTP cache. Past nextUpdate the error stands
    (the server answers 503). Call :meth:`warm` once at start so that every worker holds one.
    """

    def __init__(self, store: PublishedCrls, issuer_fingerprint: str, *,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        self._store = store
        self._issuer = issuer_fingerprint
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: tuple[int, bytes, dt.datetime | None] | None = None
        self._outage = False

    def warm(self) -> None:
        """Load the newest CRL now, if the store has one and can be read."""
        try:
            self()
        except Exception as exc:  # nothing published yet, or the store is away: later
            log.info("no CRL held at start", extra={"error": type(exc).__name__})

    def __call__(self) -> bytes:
        """Raises:
            CAError: no CRL has been published yet (the server answers 503).
            StoreError: the store cannot be read and no valid CRL is held.
        """
        try:
            der = self._newest()
        except CAError:
            raise
        except Exception as exc:
            held = self._held()
            if held is None:
                raise
            if not self._outage:
                self._outage = True
                log.warning("store unreadable: serving the CRL held until its nextUpdate",
                            extra={"error": type(exc).__name__})
            return held
        self._outage = False
        return der

    def _held(self) -> bytes | None:
        with self._lock:
            cache = self._cache
        if cache is None:
            return None
        _number, der, next_update = cache
        if next_update is None or self._clock() >= next_update:
            return None
        return der

    def _newest(self) -> bytes:
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
            self._cache = (full.number, full.der, full.next_update)
        return full.der


def ca_app(endpoints: CAEndpoints) -> ServiceApp:
    """The service with the CA's endpoints at its root (the CA's base URL)."""
    return ServiceApp([Mount("", endpoints)])


def ocsp_only_endpoints(signer: OcspSigner, store: Any, issuer_fingerprint: str, *,
                        root_crl: Callable[[], bytes] | None = None) -> CAEndpoints:
    """The least-privilege endpoints of ``ca serve``: OCSP answers signed by the delegated
    OCSP signer, the newest CRL from the store (:class:`StoredCrl`), the CA certificates.
    They hold no issuing key, so they cannot sign a CRL or a certificate.

    ``store`` offers ``issued_status`` and ``latest_crl`` (a :class:`smimekit.store.Store`).

    Raises:
        CAError: the OCSP signer certificate does not fit the issuing CA.
    """
    lookup_store: IssuedRecords = store
    crl_store: PublishedCrls = store
    responder = OCSPResponder(signer.issuing, signer.cert, signer.key,
                              store_lookup(lookup_store, issuer_fingerprint))
    der = serialization.Encoding.DER
    crl = StoredCrl(crl_store, issuer_fingerprint)
    crl.warm()
    return CAEndpoints(crl, responder,
                       {"issuing.der": signer.issuing.public_bytes(der),
                        "root.der": signer.root.public_bytes(der)}, root_crl)


def ocsp_only_server(host: str, port: int, signer: OcspSigner, store: Any,
                     issuer_fingerprint: str, *,
                     root_crl: Callable[[], bytes] | None = None,
                     limits: ServerLimits | None = None) -> CAServer:
    """:func:`ocsp_only_endpoints` served in process (:class:`CAServer`).

    Raises:
        CAError: the OCSP signer certificate does not fit the issuing CA.
        OSError: the address cannot be bound.
    """
    endpoints = ocsp_only_endpoints(signer, store, issuer_fingerprint, root_crl=root_crl)
    return CAServer.of(host, port, endpoints, limits=limits)


class CAServer(EmbeddedServer):
    """The CA's CRL, OCSP and certificate endpoints, served by granian in this process
    (tests, the library, benchmarks); ``smimekit ca serve`` runs forked workers instead
    (:func:`smimekit.service.runner.serve`).

    Port 0 picks a free port, read back from :attr:`port` and :attr:`url` once the server
    is bound (at construction). Use :meth:`start` / :meth:`stop` (or ``with``) to run it on
    a thread of its own, or :meth:`serve_forever` to run it in the caller's thread until
    :meth:`stop` is called from another one.
    """

    def __init__(self, host: str, port: int, *, crl: Callable[[], bytes],
                 ocsp: OCSPResponder, certs: Mapping[str, bytes],
                 root_crl: Callable[[], bytes] | None = None,
                 limits: ServerLimits | None = None) -> None:
        """``root_crl``, when given, is served at ``/crl/root.crl`` (the root's CRL, which
        covers the issuing CA).

        Raises:
            OSError: the address cannot be bound.
        """
        self.endpoints = CAEndpoints(crl, ocsp, certs, root_crl)
        super().__init__(ca_app(self.endpoints), host, port, limits=limits)

    @classmethod
    def of(cls, host: str, port: int, endpoints: CAEndpoints, *,
           limits: ServerLimits | None = None) -> CAServer:
        """A server for endpoints made already (:func:`ocsp_only_endpoints`)."""
        server = cls.__new__(cls)
        server.endpoints = endpoints
        EmbeddedServer.__init__(server, ca_app(endpoints), host, port, limits=limits)
        return server
