"""``gateway serve --workers N``: one node as N forked worker processes.

One gateway process is one Python process, CPU-bound in one core. With ``--workers N`` the
parent binds the listening sockets (so a bad address is one line and exit 1, before any
fork), forks N workers that inherit them (each accepts on the shared sockets; the kernel
spreads the connections) and supervises:

- each worker opens, after the fork, everything that must not be shared: its store
  connection, the key store (master key unsealed, or its own PKCS#11 login), the pipeline,
  its asyncio loop. The parent opens none of these (it prunes the journal and closes the
  store before forking), so nothing secret passes through the environment or a pipe and no
  database connection crosses a fork;
- a worker that dies unexpectedly is logged (one line) and replaced; more than
  :data:`MAX_RESTARTS` (at least N) restarts within :data:`RESTART_WINDOW` seconds and the
  parent stops the others and exits 1, saying why. A worker of the first N that cannot start
  (its configuration, the store, the key passphrase) exits :data:`CANNOT_START`: the parent
  stops and exits 1 at once (replacing it would fail the same way);
- SIGTERM or SIGINT to the parent: it closes its copies of the sockets, forwards SIGTERM to
  the workers (each stops accepting and lets its messages in flight finish within
  ``grace``), waits for them and exits 0;
- a worker never outlives the parent: ``PR_SET_PDEATHSIG`` (SIGTERM) on Linux, and a check
  of ``getppid()`` right after it is set (the parent may have died before).

The journal names a node ``host:pid``: each worker journals the copies it sent under its own
pid. The no-loss rule is unchanged: a worker killed mid-message never answered 250, Postfix
keeps the message and tries again.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import time
from collections import deque
from collections.abc import Callable

from smimekit.gateway.relay import parse_address

log = logging.getLogger("smimekit.gateway")

RESTART_WINDOW = 10.0
"""Seconds over which worker restarts are counted."""
CANNOT_START = 78
"""A worker's exit status when it cannot start (EX_CONFIG): the parent gives up at once."""
_PR_SET_PDEATHSIG = 1
BACKLOG = 1024


def max_restarts(workers: int) -> int:
    """Restarts allowed within :data:`RESTART_WINDOW` before the parent gives up."""
    return max(3, workers)


def bind(listen: str) -> socket.socket:
    """A TCP socket bound to ``listen`` (``host:port``) and listening, inheritable.

    Raises:
        OSError: the address cannot be bound.
    """
    host, port = parse_address(listen, any_port=True)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=BACKLOG)
    sock.set_inheritable(True)
    return sock


def _die_with_parent(parent: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the check below at least
        pass
    if os.getppid() != parent:  # the parent died before the prctl
        os._exit(0)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        return f"killed by {signal.Signals(signum).name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


class GiveUp(Exception):
    """The parent stops: the message says why (one line)."""


def supervise(workers: int, worker: Callable[[], int], grace: float) -> None:
    """Fork ``workers`` processes running ``worker`` (its return value is the exit status)
    and supervise them until SIGTERM or SIGINT (see the module docstring).

    Raises:
        GiveUp: workers keep dying, or one cannot start.
    """
    parent = os.getpid()
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}

    def spawn() -> int:
        # SIGTERM and SIGINT blocked across the fork: one that comes before the worker has
        # its own handling waits (the parent's handler would only flag the worker's copy)
        signals = set(previous)
        signal.pthread_sigmask(signal.SIG_BLOCK, signals)
        pid = -1
        try:
            pid = os.fork()
        finally:
            if pid != 0:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)
        if pid == 0:
            status = 1
            try:
                for signum in previous:  # nothing in flight yet: a signal ends it at once
                    signal.signal(signum, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)
                _die_with_parent(parent)
                status = worker()
            except Exception as exc:  # a bug: one line, no traceback (the parent replaces it)
                log.error("worker %d failed: internal error (%s): %s", os.getpid(),
                          type(exc).__name__, exc)
                status = 1
            except BaseException:  # KeyboardInterrupt, SystemExit: end this worker
                status = 1
            finally:
                logging.shutdown()
                os._exit(status)
        log.info("worker %d started", pid)
        return pid

    children: set[int] = set()
    first: set[int] = set()  # the workers started with the node
    restarts: deque[float] = deque()
    allowed = max_restarts(workers)
    reason: str | None = None
    try:
        for _ in range(workers):
            first.add(spawn())
        children |= first
        while not stopping and reason is None:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid, status = 0, 0
            if pid == 0 or pid not in children:
                time.sleep(0.1)
                continue
            children.discard(pid)
            if (pid in first and os.WIFEXITED(status)
                    and os.WEXITSTATUS(status) == CANNOT_START):
                # at the node's start: the configuration, the store or the keys; replacing it
                # would fail the same way (a replacement that cannot start, the database
                # down for a moment, counts as a death below)
                reason = f"worker {pid} could not start (see its error above)"
                break
            now = time.monotonic()
            restarts.append(now)
            while restarts and restarts[0] < now - RESTART_WINDOW:
                restarts.popleft()
            if len(restarts) > allowed:
                reason = (f"worker {pid} died ({_describe(status)}): {len(restarts)} workers"
                          f" died within {RESTART_WINDOW:g} s, more than {allowed}; giving up")
                break
            log.warning("worker %d died (%s); starting another", pid, _describe(status))
            if not stopping:
                children.add(spawn())
    finally:
        _stop(children, grace)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if reason is not None:
        raise GiveUp(reason)


def _stop(children: set[int], grace: float) -> None:
    """SIGTERM every worker; wait for them (their grace and a margin), then SIGKILL."""
    for pid in children:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace + 10
    while children:
        for pid in list(children):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                children.discard(pid)
        if not children:
            break
        if time.monotonic() > deadline:
            for pid in children:
                log.warning("worker %d did not stop in time; killed", pid)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                os.waitpid(pid, 0)
            children.clear()
            break
        time.sleep(0.05)
