"""Loopback helpers for tests: a file server over real HTTP, a free port, a relay that can be
cut, waiting for a server process to listen, waiting for a condition, and throwaway TLS
files for a loopback server."""

from __future__ import annotations

import datetime as dt
import http.server
import ipaddress
import os
import random
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


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


_PORTS = (16000, 32000)
"""Where :func:`free_port` looks: below Linux's ephemeral range (32768-60999), so neither a
client socket nor another ``bind(0)`` is handed the port between the pick and the server's
bind; each xdist worker takes a slice of its own."""
_given: set[int] = set()


def _port_slice() -> tuple[int, int]:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "") or 1)
    index = int(worker[2:]) if worker[:2] == "gw" and worker[2:].isdigit() else 0
    span = (_PORTS[1] - _PORTS[0]) // max(workers, 1)
    low = _PORTS[0] + min(index, max(workers, 1) - 1) * span
    return low, low + span


def free_port(*, udp: bool = False) -> int:
    """A TCP port nobody listens on now (on all interfaces, as openssl ocsp binds), and free
    for UDP on 127.0.0.1 too when ``udp`` (DNS needs both).

    Never the same port twice in one test process: a test picks several ports before its
    servers bind them, and ``bind(0)`` gives a port that was just closed again about once in
    10,000 pairs (enough for a few CI runs in a hundred to start two servers on one port).
    """
    low, high = _port_slice()
    for _ in range(1000):
        port = random.randrange(low, high)
        if port in _given:
            continue
        try:
            with socket.socket() as tcp:
                tcp.bind(("", port))
                if udp:
                    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as datagram:
                        datagram.bind(("127.0.0.1", port))
        except OSError:
            continue
        _given.add(port)
        return port
    raise RuntimeError(f"no free port left in {low}-{high} for this test process")


class TcpRelay:
    """A TCP relay on a loopback port to ``target`` (host, port), which a test can cut and
    restore: :meth:`cut` closes the listening socket and every relayed connection, so the
    client sees its connections drop and new ones refused, as when a database server goes
    away; :meth:`restore` listens on the same port again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self.restore()

    def restore(self) -> None:
        """Listen (again) on :attr:`port`."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        self._thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._thread.start()

    def cut(self) -> None:
        """Stop listening and drop every relayed connection."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    stop = cut

    def _accept(self, listener: socket.socket) -> None:
        listener.settimeout(0.05)
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [client, upstream]
            self._connected(client, upstream)

    def _connected(self, client: socket.socket, upstream: socket.socket) -> None:
        """Carry a new connection's bytes both ways (a subclass may hold some back)."""
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def wait_for_port(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if process.poll() is not None:
                err = process.stderr.read() if process.stderr else b""
                raise AssertionError(f"{what} exited: {err!r}") from None
            time.sleep(0.05)
    raise AssertionError(f"{what} does not listen on {port}")


def url_line(process: subprocess.Popen[bytes], port: int) -> str:
    """The line ``ca serve`` prints on stderr once it answers (granian may warn first)."""
    assert process.stderr is not None
    seen = []
    for _ in range(20):
        line = process.stderr.readline().decode()
        seen.append(line)
        if f"on http://127.0.0.1:{port} (Ctrl-C to stop)" in line:
            return line
        if not line:
            break
    raise AssertionError("".join(seen))


def wait_until(condition: Callable[[], object], what: str, timeout: float = 30.0, *,
               detail: Callable[[], str] = lambda: "") -> None:
    """Poll ``condition()`` every 0.1 s until it is true; after ``timeout`` seconds fail,
    naming ``what`` and adding ``detail()`` (a log tail, say)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    more = detail()
    raise AssertionError(f"timed out waiting for {what}" + (f":\n{more}" if more else ""))


def tls_files(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 / localhost, as
    (CA certificate, server certificate, server key) files in ``folder``; the key is the
    owner's alone (mode 0600). slapd's LDAPS and Postfix's STARTTLS use them."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "slapd test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                       False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_file, cert_file, key_file = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    return ca_file, cert_file, key_file
