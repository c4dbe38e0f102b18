"""Loopback helpers for tests: a file server over real HTTP, and a free port."""

from __future__ import annotations

import http.server
import socket
import threading
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class FileServer:
    """Any bytes over real HTTP on loopback; counts the requests it serves."""

    files: dict[str, bytes] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)
    redirects: dict[str, str] = field(default_factory=dict)
    """path -> Location of a 302."""
    unsized: set[str] = field(default_factory=set)
    """Paths served without Content-Length (the body ends when the connection closes)."""
    content_type: str = "application/pkix-crl"

    def __post_init__(self) -> None:
        files, hits, redirects, unsized = self.files, self.hits, self.redirects, self.unsized
        content_type = self.content_type

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.lstrip("/")
                hits[path] += 1
                if path in redirects:
                    self.send_response(302)
                    self.send_header("Location", redirects[path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = files.get(path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                if path not in unsized:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"{self.base}/{path}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def free_port() -> int:
    """A TCP port nobody listens on now (on all interfaces, as openssl ocsp binds)."""
    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])
