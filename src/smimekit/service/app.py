"""The root ASGI application of the CA's HTTP service and its mount table.

Plain ASGI rather than Starlette: the endpoints answer a handful of fixed paths with bytes, a
mount table is a dozen lines, and the request handling stays a pure function of the request
(``Request`` in, ``Response`` out) that tests call without a socket. Starlette would add a
dependency and its own routing rules (redirecting slashes, which ``/ocsp/`` must not get)
for nothing the CA uses.

Every request, whatever it is for, gets here first:

* HTTP/1.1 without ``Host`` (or with an empty one), and any request with two ``Host``
  lines, is answered 400 (RFC 9112 3.2; granian accepts them);
* a method that is not a standard HTTP method is answered 501, like the old server did;
* the mounts are tried longest prefix first; no mount is 404;
* an exception in a sub-application is one log line naming its type and a 500, never a
  traceback on the wire;
* one access-log line on the ``smimekit.service.access`` logger, with every byte of the
  method and the request target that is not printable ASCII written as ``\\xNN`` (no terminal
  escape sequence reaches a log viewer), the target cut to 80 characters.

A mounted application sees ``path`` without its prefix and the prefix in ``root_path``
(ASGI). It answers through :func:`send_response`; ``Connection: close`` on an answer makes
the server close the connection after it (what a request with an unread body gets).
"""

from __future__ import annotations

import http
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ASGIApp", "Mount", "Request", "Response", "ServiceApp", "error_response",
           "escape_for_log", "read_body", "send_response"]

log = logging.getLogger("smimekit.service")
access_log = logging.getLogger("smimekit.service.access")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE",
                     "CONNECT"})
"""What is not one of these is answered 501 (RFC 9110 9.1)."""
LOG_TARGET_LENGTH = 80


@dataclass(frozen=True)
class Response:
    """What a handler answers; ``Content-Length`` (and ``Date``) are the server's."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    close: bool = False
    """Close the connection after this answer (the request body may be unread)."""


@dataclass(frozen=True)
class Request:
    """The parts of an HTTP request the handlers look at (header names in lower case)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""

    @classmethod
    def from_scope(cls, scope: Scope, body: bytes = b"") -> Request:
        headers: dict[str, str] = {}
        for name, value in scope.get("headers", ()):
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        return cls(scope["method"], scope["path"], headers, body)


def error_response(status: int, allow: str | None = None, *, close: bool = False) -> Response:
    """A short plain-text answer: ``404 Not Found``."""
    body = f"{status} {http.HTTPStatus(status).phrase}\n".encode()
    headers = {"Content-Type": "text/plain; charset=utf-8"}
    if allow:
        headers["Allow"] = allow
    return Response(status, body, headers, close=close)


async def send_response(send: Send, response: Response, *, head: bool = False) -> None:
    """Send ``response`` (headers only for HEAD, with the body's Content-Length)."""
    headers = [(name.lower().encode("latin-1"), value.encode("latin-1"))
               for name, value in response.headers.items()]
    headers.append((b"content-length", str(len(response.body)).encode()))
    if response.close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else response.body})


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or None when it grows past ``limit`` bytes (then it is left unread
    and the answer must close the connection)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def escape_for_log(data: bytes | str) -> str:
    """Printable ASCII as it is, every other byte (controls, ESC, DEL, non-ASCII) as
    ``\\xNN``, backslash doubled: a log line cannot carry a terminal escape sequence."""
    raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
    out = []
    for byte in raw:
        if byte == 0x5C:
            out.append("\\\\")
        elif 0x20 <= byte < 0x7F:
            out.append(chr(byte))
        else:
            out.append(f"\\x{byte:02x}")
    return "".join(out)


@dataclass(frozen=True)
class Mount:
    """``app`` answers the paths under ``prefix`` ("" for the root, else "/name")."""

    prefix: str
    app: ASGIApp

    def __post_init__(self) -> None:
        if self.prefix and (not self.prefix.startswith("/") or self.prefix.endswith("/")):
            raise ValueError(f"a mount prefix is '' or '/name', not {self.prefix!r}")

    def matches(self, path: str) -> bool:
        return not self.prefix or path == self.prefix or path.startswith(self.prefix + "/")


class ServiceApp:
    """The root ASGI application: the checks every request gets, the mount table, the
    access log, lifespan (each mount's ``startup``/``shutdown`` are not called: the
    sub-applications are built ready by the loader that makes this object)."""

    def __init__(self, mounts: Sequence[Mount]) -> None:
        self.mounts = sorted(mounts, key=lambda m: len(m.prefix), reverse=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":  # websockets: nothing here takes them
            await send({"type": "websocket.close", "code": 1003})
            return
        started = time.perf_counter()
        sent = {"status": 0, "size": 0}

        async def logged_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                sent["status"] = message["status"]
            elif message["type"] == "http.response.body":
                sent["size"] += len(message.get("body", b""))
            await send(message)

        try:
            await self._dispatch(scope, receive, logged_send)
        except Exception as exc:
            log.error("request failed", extra={"error": type(exc).__name__})
            if not sent["status"]:
                await send_response(logged_send, error_response(500, close=True))
        finally:
            self._access_log(scope, sent["status"], sent["size"], started)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        head = scope["method"] == "HEAD"
        # RFC 9112 3.2: 400 for HTTP/1.1 without Host, and for more than one Host line.
        # granian puts an empty Host into the scope when the request had none.
        hosts = [value for name, value in scope.get("headers", ()) if name.lower() == b"host"]
        if len(hosts) > 1 or (scope.get("http_version") == "1.1"
                              and not (hosts and hosts[0].strip())):
            await send_response(send, error_response(400, close=True), head=head)
            return
        if scope["method"] not in METHODS:
            await send_response(send, error_response(501, close=True))
            return
        path = scope["path"]
        for mount in self.mounts:
            if mount.matches(path):
                child = dict(scope)
                if mount.prefix:
                    child["root_path"] = scope.get("root_path", "") + mount.prefix
                    child["path"] = path[len(mount.prefix):] or "/"
                await mount.app(child, receive, send)
                return
        await send_response(send, error_response(404), head=head)

    @staticmethod
    async def _lifespan(receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    @staticmethod
    def _access_log(scope: Scope, status: int, size: int, started: float) -> None:
        client = scope.get("client") or ("-", 0)
        target = scope.get("raw_path") or scope.get("path", "").encode("utf-8",
                                                                      "surrogateescape")
        if scope.get("query_string"):
            target = target + b"?" + scope["query_string"]
        path = escape_for_log(target)
        if len(path) > LOG_TARGET_LENGTH:
            path = path[:LOG_TARGET_LENGTH - 3] + "..."
        method = escape_for_log(scope.get("method", "-"))
        millis = (time.perf_counter() - started) * 1000
        access_log.info(
            '%s "%s %s" %d %d %.1fms', client[0], method, path, status, size, millis,
            extra={"client": client[0], "method": method, "path": path, "status": status,
                   "size": size, "ms": round(millis, 2)},
        )
