"""A tiny server speaking clamd's INSTREAM protocol, for the scanning hook's tests.

It reads ``zINSTREAM\\0`` and length-prefixed chunks up to the zero length, then answers
``stream: Eicar-Test-Signature FOUND`` when the stream holds the EICAR test string, else
``stream: OK`` (NUL-terminated, as for the z-prefixed command). ``mode`` makes it misbehave:
``silent`` never answers, ``error`` answers with clamd's size-limit error.
"""

from __future__ import annotations

import socketserver
import struct
import threading
from pathlib import Path
from typing import Any

# The EICAR anti-virus test file (https://www.eicar.org), in two pieces so that this source
# file is not itself detected.
EICAR = (b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*")


class _Handler(socketserver.BaseRequestHandler):
    server: Any

    def handle(self) -> None:
        conn = self.request
        conn.settimeout(10)
        command = b""
        while not command.endswith(b"\0"):
            byte = conn.recv(1)
            if not byte:
                return
            command += byte
        self.server.commands.append(command)
        data = bytearray()
        while True:
            size = struct.unpack(">I", _exact(conn, 4))[0]
            if size == 0:
                break
            data += _exact(conn, size)
        self.server.received.append(bytes(data))
        if self.server.mode == "silent":
            self.server.release.wait(30)
            return
        if self.server.mode == "error":
            conn.sendall(b"INSTREAM size limit exceeded. ERROR\0")
        elif EICAR in data:
            conn.sendall(b"stream: Eicar-Test-Signature FOUND\0")
        else:
            conn.sendall(b"stream: OK\0")


def _exact(conn: Any, size: int) -> bytes:
    out = b""
    while len(out) < size:
        piece = conn.recv(size - len(out))
        if not piece:
            raise ConnectionError("closed")
        out += piece
    return out


class _Unix(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class _Tcp(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


class FakeClamd:
    """Serve on ``unix`` (a socket path) or TCP loopback; ``address`` is the config value."""

    def __init__(self, unix: Path | None = None, mode: str = "normal") -> None:
        server: Any = _Unix(str(unix), _Handler) if unix else _Tcp(("127.0.0.1", 0), _Handler)
        server.mode = mode
        server.commands = []
        server.received = []
        server.release = threading.Event()
        self.server = server
        self.address = f"unix:{unix}" if unix else f"tcp:127.0.0.1:{server.server_address[1]}"
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)

    @property
    def received(self) -> list[bytes]:
        return list(self.server.received)

    def __enter__(self) -> FakeClamd:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.release.set()
        self.server.shutdown()
        self.server.server_close()
