"""The scanning hook (``[gateway.scan]``): clear content goes to a command or a clamd socket.

A command gets the message on stdin and answers by its exit status: 0 clean, 1 infected
(its first line of output names what it found), anything else (or no answer within
``timeout``) a failure. A socket speaks clamd's ``INSTREAM`` (``zINSTREAM\\0``, then chunks
each preceded by its length as four big-endian bytes, then a zero length; the answer is
``stream: OK`` or ``stream: NAME FOUND``) over ``unix:/path`` or ``tcp:host:port``.

A failure follows ``on_failure``: ``defer`` raises a temporary :class:`GatewayError` (the
SMTP client gets a 4xx and tries again later), ``pass`` lets the message through with the
failure in its result.
"""

from __future__ import annotations

import re
import socket
import struct
import subprocess
from dataclasses import dataclass
from typing import Literal

from smimekit.config import ScanConfig
from smimekit.errors import ConfigError, GatewayError

__all__ = ["ScanResult", "Scanner"]

CHUNK = 64 * 1024
MAX_ANSWER = 4096

Status = Literal["clean", "infected", "failed"]


@dataclass(frozen=True)
class ScanResult:
    status: Status
    detail: str = ""
    """What was found (infected), or why the scan failed; one printable line."""


def _line(text: str) -> str:
    first = text.strip().splitlines()[0] if text.strip() else ""
    return re.sub(r"[^\x20-\x7e]", "?", first)[:200]


class Scanner:
    """The configured hook; :meth:`check` applies ``on_failure``."""

    def __init__(self, config: ScanConfig) -> None:
        """Raises ConfigError: neither or both of ``command`` and ``socket``, a socket
        address that is not ``unix:/path`` or ``tcp:host:port``, a timeout not above 0."""
        if bool(config.command) == bool(config.socket):
            raise ConfigError("[gateway.scan] needs exactly one of command and socket")
        if config.timeout <= 0:
            raise ConfigError("gateway.scan.timeout must be more than 0 seconds")
        self.config = config
        self._address: str | tuple[str, int] | None = None
        if config.socket:
            self._address = _parse_socket(config.socket)

    def scan(self, message: bytes) -> ScanResult:
        """One scan of ``message``; a failure is a result, never an exception."""
        if self._address is None:
            return self._run_command(message)
        return self._ask_clamd(message, self._address)

    def check(self, message: bytes) -> ScanResult:
        """:meth:`scan`, with ``on_failure = "defer"`` turning a failure into an error.

        Raises:
            GatewayError: (temporary) the scan failed and the policy defers.
        """
        result = self.scan(message)
        if result.status == "failed" and self.config.on_failure == "defer":
            raise GatewayError(f"the content scanner failed ({result.detail}); try again"
                               " later")
        return result

    def _run_command(self, message: bytes) -> ScanResult:
        try:
            done = subprocess.run(
                list(self.config.command), input=message, capture_output=True,
                timeout=self.config.timeout, check=False)
        except subprocess.TimeoutExpired:
            return ScanResult("failed", f"no answer within {self.config.timeout:g} s")
        except OSError as exc:
            return ScanResult("failed", f"cannot run {self.config.command[0]}:"
                                        f" {exc.strerror or exc}")
        if done.returncode == 0:
            return ScanResult("clean")
        output = done.stdout.decode("utf-8", "replace") or done.stderr.decode("utf-8", "replace")
        if done.returncode == 1:
            return ScanResult("infected", _line(output) or "found by the scanner")
        return ScanResult("failed", f"the scanner exited with status {done.returncode}"
                                    + (f": {_line(output)}" if _line(output) else ""))

    def _ask_clamd(self, message: bytes, address: str | tuple[str, int]) -> ScanResult:
        try:
            with _connect(address, self.config.timeout) as conn:
                conn.sendall(b"zINSTREAM\0")
                view = memoryview(message)
                for start in range(0, len(view), CHUNK):
                    piece = view[start:start + CHUNK]
                    conn.sendall(struct.pack(">I", len(piece)))
                    conn.sendall(piece)
                conn.sendall(struct.pack(">I", 0))
                answer = _read_answer(conn)
        except TimeoutError:
            return ScanResult("failed", f"clamd gave no answer within {self.config.timeout:g} s")
        except OSError as exc:
            return ScanResult("failed", f"cannot reach clamd at {self.config.socket}:"
                                        f" {exc.strerror or exc}")
        return _judge(answer)


def _connect(address: str | tuple[str, int], timeout: float) -> socket.socket:
    if isinstance(address, tuple):
        return socket.create_connection(address, timeout=timeout)  # names, IPv4 and IPv6
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(timeout)
        conn.connect(address)
    except BaseException:
        conn.close()
        raise
    return conn


def _read_answer(conn: socket.socket) -> str:
    data = b""
    while b"\0" not in data and len(data) < MAX_ANSWER:
        piece = conn.recv(MAX_ANSWER)
        if not piece:
            break
        data += piece
    return data.split(b"\0", 1)[0].decode("utf-8", "replace").strip()


def _judge(answer: str) -> ScanResult:
    # "stream: OK", "stream: Eicar-Signature FOUND", "INSTREAM size limit exceeded. ERROR"
    _, _, verdict = answer.rpartition(": ")
    if answer.endswith(" FOUND"):
        return ScanResult("infected", _line(verdict.removesuffix(" FOUND")) or "found")
    if verdict == "OK":
        return ScanResult("clean")
    return ScanResult("failed", f"clamd answered: {_line(answer) or 'nothing'}")


def _parse_socket(value: str) -> str | tuple[str, int]:
    kind, _, rest = value.partition(":")
    if kind == "unix" and rest.startswith("/"):
        return rest
    if kind == "tcp":
        host, _, port = rest.rpartition(":")
        host = host.strip("[]")
        if host and port.isdigit() and 0 < int(port) < 65536:
            return host, int(port)
    raise ConfigError(f"gateway.scan.socket must be unix:/path or tcp:host:port, not {value!r}")
