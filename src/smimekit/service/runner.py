"""Serving :class:`~smimekit.service.app.ServiceApp` with granian: forked workers for
``smimekit ca serve`` (:func:`serve`), or in this process for tests and the library
(:class:`EmbeddedServer`).

Why granian (2.8, Rust, HTTP/1.1 from hyper) and not uvicorn or hypercorn: the CA's HTTP
service faces clients we do not know, and the review of the old stdlib server found request
desync and slowloris. hyper parses HTTP/1.1 strictly (one Content-Length, digits only; no
Content-Length with chunked; no obs-fold; no HTTP/0.9); granian has a deadline for the whole
request head (``HTTP1Settings.header_read_timeout``; uvicorn and hypercorn only time out
single reads or idle keep-alive, so a client trickling a byte a second holds a connection
for ever), a bound on the connections a worker serves at once (``backpressure``; the rest
wait in the listen backlog), a bound on the head's size (``max_buffer_size``: 431), and
connections that cost a Rust task, not a thread. Workers are forked processes
(``granian.server.mp``, ``fork`` on Linux): :func:`serve` takes a *loader*, a closure called
in each worker after the fork, so the key the parent unlocked is inherited as memory (no
secret goes through the environment or a pipe) and each worker opens its own store
connection. The tests in ``tests/ca/test_server_hostile.py`` hold granian to all of this.

What granian does not have: a keep-alive idle timeout of its own and a cap on requests per
connection. The head deadline covers the first: hyper starts it when it waits for a request
head, idle keep-alive included, so an idle connection is closed after ``head_timeout``.

Graceful shutdown: SIGTERM or SIGINT to the parent stops accepting, lets the requests in
flight finish (``shutdown_timeout`` at most, then the workers are killed) and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from smimekit.service.app import ASGIApp

__all__ = ["EmbeddedServer", "ServerLimits", "default_workers", "serve"]

log = logging.getLogger("smimekit.service")


def default_workers() -> int:
    """The CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class ServerLimits:
    """How much a client may take of the server; the defaults are safe for a public CA."""

    workers: int = field(default_factory=default_workers)
    """Worker processes (:func:`serve`; an :class:`EmbeddedServer` has one)."""
    max_connections: int = 1024
    """Connections one worker serves at once; more wait in the listen backlog."""
    head_timeout: float = 10.0
    """Seconds for a whole request head, from the first byte awaited to the blank line;
    also how long an idle keep-alive connection stays open."""
    keep_alive: bool = True
    """Keep connections open between requests."""
    max_head_bytes: int = 16 * 1024
    """Largest request head (request line and headers); larger is 431 and closed."""
    backlog: int = 1024
    """Connections the kernel queues before a worker takes them."""
    shutdown_timeout: int = 10
    """Seconds the requests in flight get at shutdown before the workers are killed."""

    def __post_init__(self) -> None:
        if self.workers < 1 or self.max_connections < 1 or self.backlog < 1:
            raise ValueError("workers, max_connections and backlog must be at least 1")
        if not 0 < self.head_timeout <= 3600:
            raise ValueError("head_timeout must be in (0, 3600] seconds")
        if self.max_head_bytes < 8192:
            raise ValueError("max_head_bytes must be at least 8192")  # hyper's minimum
        if self.shutdown_timeout < 1:
            raise ValueError("shutdown_timeout must be at least 1 second")

    def http1(self) -> Any:
        from granian.http import HTTP1Settings

        return HTTP1Settings(header_read_timeout=max(1, int(self.head_timeout * 1000)),
                             keep_alive=self.keep_alive, max_buffer_size=self.max_head_bytes)


# granian's configure_logging() runs logging.config.dictConfig(), which closes every
# handler the process has; incremental mode only sets its loggers' levels.
_QUIET_LOGGING: dict[str, Any] = {"version": 1, "incremental": True, "handlers": {},
                                  "formatters": {}, "loggers": {}}


def _server_options(limits: ServerLimits, *, forked: bool) -> dict[str, Any]:
    from granian.constants import HTTPModes, Interfaces

    options = {
        "interface": Interfaces.ASGI,
        "http": HTTPModes.http1,  # HTTP/2 is for the proxy in front, if any
        "websockets": False,
        "backlog": limits.backlog,
        "backpressure": limits.max_connections,
        "http1_settings": limits.http1(),
        "log_dictconfig": _QUIET_LOGGING,
        "log_access": False,  # ServiceApp writes the access log, escaped
    }
    if forked:
        options |= {"workers": limits.workers, "workers_kill_timeout": limits.shutdown_timeout}
    return options


def _listen(host: str, port: int, backlog: int) -> tuple[Any, int]:
    """A socket made by granian (its options) and listening, and the port it got.

    Listening at once, not when the first worker starts: a client that connects as soon as
    :attr:`EmbeddedServer.port` is known waits in the backlog instead of being refused.
    """
    from granian._granian import ListenerSpec

    holder = ListenerSpec(host, port, backlog).build()
    probe = socket.socket(fileno=os.dup(holder.get_fd()))
    try:
        probe.listen(backlog)
        bound = probe.getsockname()[1]
    finally:
        probe.close()
    return holder, bound


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class EmbeddedServer:
    """One granian worker on an asyncio loop in this process: for tests, the library and
    benchmarks. The socket is bound at construction (port 0: a free port, read back from
    :attr:`port`); :meth:`start` serves on a thread of its own, :meth:`serve_forever` in the
    caller's thread, :meth:`stop` (from any thread) lets the requests in flight finish and
    closes the socket.
    """

    def __init__(self, app: ASGIApp, host: str, port: int, *,
                 limits: ServerLimits | None = None) -> None:
        """Raises:
            OSError: the address cannot be bound.
        """
        self.app = app
        self.host = host
        self.limits = limits or ServerLimits(workers=1)
        self._holder: Any = None
        self._holder, self.port = _listen(host, port, self.limits.backlog)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._granian: Any = None
        self._thread: threading.Thread | None = None
        self._running = threading.Event()
        self._stopped = threading.Event()
        self._stop_asked = False

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:8080`` (a CA's ``base_url``)."""
        return _url(self.host, self.port)

    def start(self) -> Self:
        """Serve on a daemon thread until :meth:`stop`; returns once the server accepts."""
        if self._thread is None:
            self._thread = threading.Thread(target=self.serve_forever,
                                            name=f"service-{self.port}", daemon=True)
            self._thread.start()
            self._running.wait(30)
        return self

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serve in this thread until :meth:`stop` is called from another one.
        ``poll_interval`` is accepted for the old server's callers and not needed."""
        from granian.server.embed import Server

        class _Bound(Server):
            # the socket bound at construction: its port is known before serving
            def _init_shared_socket(inner) -> None:
                inner._ssp, inner._shd = None, self._holder
                inner._sfd = self._holder.get_fd()

        loop = asyncio.new_event_loop()
        try:
            asyncio.set_event_loop(loop)
            with self._lock:
                if self._stop_asked or self._holder is None:
                    return
                self._granian = _Bound(self.app, address=self.host, port=self.port,
                                       log_level=_log_level("error"),
                                       **_server_options(self.limits, forked=False))
                self._loop = loop
            loop.call_soon(self._running.set)
            log.info("service started", extra={"url": self.url})
            loop.run_until_complete(self._granian.serve())
        finally:
            with self._lock:
                self._loop = None
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            asyncio.set_event_loop(None)
            self._running.set()
            self._stopped.set()
            log.info("service stopped", extra={"url": self.url})

    def stop(self) -> None:
        """Stop accepting, let the requests in flight finish, close the socket."""
        with self._lock:
            self._stop_asked = True
            loop, granian = self._loop, self._granian
        if loop is not None and granian is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(granian.stop)
            self._stopped.wait(self.limits.shutdown_timeout + 5)
        if self._thread is not None:
            self._thread.join(self.limits.shutdown_timeout + 5)
            self._thread = None
        with self._lock:
            self._granian = None
            self._holder = None  # dropping granian's socket holder closes the socket

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _log_level(name: str) -> Any:
    from granian.log import LogLevels

    return LogLevels(name)


def serve(loader: Callable[[], ASGIApp], host: str, port: int, limits: ServerLimits, *,
          on_ready: Callable[[str], None] | None = None) -> None:
    """Serve the application ``loader`` makes with ``limits.workers`` forked worker
    processes until SIGTERM or SIGINT (then gracefully: see the module docstring).

    ``loader`` runs in each worker after the fork: it opens what must not be shared
    across a fork (a store connection) and returns the application. ``on_ready`` is called
    in this process with the URL once the socket is bound and every worker has loaded its
    application (a worker still loading takes connections from the shared socket all the
    same, before it holds what it serves, e.g. the CRL it keeps through a database outage).

    Raises:
        OSError: the address cannot be bound.
        RuntimeError: the multiprocessing start method is not ``fork``.
        SystemExit: a worker failed (exit code 1; its error is logged).
    """
    from granian.server.mp import MPServer

    if multiprocessing.get_start_method() != "fork":
        raise RuntimeError("ca serve needs the 'fork' start method (Linux)")
    holder, bound = _listen(host, port, limits.backlog)
    loaded = multiprocessing.get_context("fork").Value("i", 0)

    def load() -> ASGIApp:
        try:
            app = loader()
        except Exception as exc:  # one line, not a traceback from multiprocessing
            log.error("worker could not start: %s", exc, extra={"error": type(exc).__name__})
            logging.shutdown()
            os._exit(1)
        with loaded.get_lock():
            loaded.value += 1
        return app

    parent = os.getpid()

    class _Bound(MPServer):
        def signal_handler_interrupt(self, *args: Any) -> None:
            # A forked worker runs the parent's handler until granian installs the worker's
            # own (after the loader): it would only flag this copied object, the signal
            # would be lost and the worker serve on until killed. Nothing is in flight
            # yet: end the worker at once.
            if os.getpid() != parent:
                os._exit(0)
            super().signal_handler_interrupt(*args)  # type: ignore[no-untyped-call]

        def _init_shared_socket(self) -> None:
            self._ssp, self._shd = None, holder
            self._sfd = holder.get_fd()
            listening = socket.socket(fileno=self._sfd)
            listening.set_inheritable(True)
            self._sso = listening

    server = _Bound(target="smimekit.service", address=host, port=bound,
                    log_level=_log_level("warning"),
                    **_server_options(limits, forked=True))
    if on_ready is not None:
        url = _url(host, bound)

        def announce() -> None:
            while loaded.value < limits.workers:
                if server.interrupt_signal or server.interrupt_children:
                    return
                time.sleep(0.1)
            on_ready(url)

        threading.Thread(target=announce, name="announce", daemon=True).start()
    server.serve(target_loader=load, wrap_loader=False)
