"""The CA's HTTP service against hostile clients, over raw sockets on loopback: request
smuggling and desync, malformed and oversized requests, slowloris, idle keep-alive
connections, the connection bound, escape bytes for the access log, a negative OCSP serial,
and a graceful shutdown of the forked production server.

The server is the production one (granian) in process (``CAServer``), with a short head
deadline so the tests that wait for it stay short; the shutdown test runs the forked
workers of :func:`smimekit.service.runner.serve` in a child process.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from asn1crypto import ocsp as asn1_ocsp
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

sys.path.insert(0, str(Path(__file__).parents[1] / "revocation"))

from revpki import Party, issue
from test_server import CA, der, make_ca

from smimekit.service.ca_endpoints import MAX_BODY, CAServer
from smimekit.service.runner import ServerLimits

HEAD_TIMEOUT = 1.0
"""The head deadline of the server under test (seconds); production's default is 10."""
ROOT_GET = b"GET /certs/root.der HTTP/1.1\r\nHost: ca.test\r\n\r\n"
"""A complete request smuggled inside bodies: it must never be answered."""


@dataclass
class Hostile:
    state: CA
    server: CAServer
    party: Party

    def ocsp_request(self) -> bytes:
        builder = ocsp.OCSPRequestBuilder().add_certificate(
            self.party.cert, self.state.ca.cert, hashes.SHA256())
        return builder.build().public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def hostile() -> Iterator[Hostile]:
    state = make_ca()
    limits = ServerLimits(workers=1, head_timeout=HEAD_TIMEOUT, max_connections=2048)
    with CAServer("127.0.0.1", 0, crl=lambda: state.crl_der, ocsp=state.responder,
                  certs={"issuing.der": der(state.ca.cert), "root.der": der(state.root.cert)},
                  limits=limits) as server:
        party = issue("hostile-good", state.ca, ocsp_url=server.url + "/ocsp")
        state.issued = {party.cert.serial_number}
        yield Hostile(state, server, party)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class Exchange:
    replies: list[Reply]
    closed: bool
    """The server closed the connection (else it was still open when we stopped reading)."""
    rest: bytes = b""
    """Bytes after the last complete reply."""


def parse_replies(data: bytes, *, head: bool = False) -> tuple[list[Reply], bytes]:
    replies = []
    while b"\r\n\r\n" in data:
        top, _, after = data.partition(b"\r\n\r\n")
        lines = top.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = 0 if head else int(headers.get("content-length", "0"))
        if len(after) < length:
            break
        replies.append(Reply(status, headers, after[:length]))
        data = after[length:]
    return replies, data


def exchange(server: CAServer, data: bytes, *, wait: float = 1.5,
             head: bool = False) -> Exchange:
    """Send ``data`` at once, read until the server closes or ``wait`` seconds pass
    without a byte."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=wait) as sock:
        sock.sendall(data)
        received = b""
        closed = False
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    closed = True
                    break
                received += chunk
        except TimeoutError:
            pass
        except ConnectionResetError:
            closed = True
    replies, rest = parse_replies(received, head=head)
    return Exchange(replies, closed, rest)


def no_smuggled_answer(result: Exchange) -> bool:
    return not any(r.headers.get("content-type") == "application/pkix-cert"
                   for r in result.replies)


def with_body(start: str, body: bytes, *extra: str) -> bytes:
    lines = [start, "Host: ca.test", *extra, f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# -- bodies are bodies, never a second request ---------------------------------------------


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_get_and_head_bodies_are_not_parsed_as_requests(hostile: Hostile, method: str) -> None:
    result = exchange(hostile.server, with_body(f"{method} /crl/issuing.crl HTTP/1.1", ROOT_GET),
                      head=method == "HEAD")
    assert [r.status for r in result.replies] == [200]
    assert result.replies[0].headers["content-type"] == "application/pkix-crl"
    assert no_smuggled_answer(result) and result.rest == b""


@pytest.mark.parametrize(("start", "status"), [
    ("POST /nowhere HTTP/1.1", 404),
    ("POST /crl/issuing.crl HTTP/1.1", 405),
    ("PUT /certs/root.der HTTP/1.1", 405),
])
def test_bodies_of_refused_posts_are_not_parsed_as_requests(hostile: Hostile, start: str,
                                                            status: int) -> None:
    result = exchange(hostile.server, with_body(start, ROOT_GET))
    assert [r.status for r in result.replies] == [status]
    assert no_smuggled_answer(result) and result.rest == b""


def test_a_pipelined_request_after_a_body_is_answered_in_turn(hostile: Hostile) -> None:
    """The other side of the same coin: what follows a body *is* the next request."""
    result = exchange(hostile.server, with_body("POST /nowhere HTTP/1.1", b"abcd") + ROOT_GET)
    assert [r.status for r in result.replies] == [404, 200]


@pytest.mark.parametrize("lengths", [
    ("4", str(len(ROOT_GET))),  # different
    ("+4",), ("0_4",), ("-1",), ("4 4",), ("0x4",), ("4, 5",),
])
def test_bad_content_lengths_are_400_and_closed(hostile: Hostile, lengths: tuple[str, ...]) -> None:
    head = "POST /ocsp HTTP/1.1\r\nHost: ca.test\r\nContent-Type: application/ocsp-request\r\n"
    head += "".join(f"Content-Length: {value}\r\n" for value in lengths)
    result = exchange(hostile.server, head.encode() + b"\r\n" + ROOT_GET)
    assert [r.status for r in result.replies] == [400] and result.closed
    assert no_smuggled_answer(result)


def test_equal_duplicate_content_lengths_frame_one_body(hostile: Hostile) -> None:
    """RFC 9110 8.6 lets a recipient take equal duplicates as one: the body is the
    smuggled request, and it gets an OCSP answer, not a certificate."""
    body = ROOT_GET
    head = ("POST /ocsp HTTP/1.1\r\nHost: ca.test\r\nContent-Type: application/ocsp-request\r\n"
            f"Content-Length: {len(body)}\r\nContent-Length: {len(body)}\r\n\r\n")
    result = exchange(hostile.server, head.encode() + body)
    assert len(result.replies) == 1 and no_smuggled_answer(result)
    reply = result.replies[0]
    assert reply.status == 200 and ocsp.load_der_ocsp_response(reply.body).response_status == (
        ocsp.OCSPResponseStatus.MALFORMED_REQUEST)


def test_chunked_with_content_length_is_refused_and_closed(hostile: Hostile) -> None:
    chunked = b"0\r\n\r\n" + ROOT_GET
    head = ("POST /ocsp HTTP/1.1\r\nHost: ca.test\r\nContent-Type: application/ocsp-request\r\n"
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n")
    result = exchange(hostile.server, head.encode() + chunked)
    assert len(result.replies) == 1 and result.replies[0].status in (400, 411)
    assert result.closed and no_smuggled_answer(result)


def test_chunked_ocsp_post_is_411_and_closed(hostile: Hostile) -> None:
    body = hostile.ocsp_request()
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    head = ("POST /ocsp HTTP/1.1\r\nHost: ca.test\r\nContent-Type: application/ocsp-request\r\n"
            "Transfer-Encoding: chunked\r\n\r\n")
    result = exchange(hostile.server, head.encode() + chunked + ROOT_GET)
    assert [r.status for r in result.replies] == [411] and result.closed


# -- malformed requests ------------------------------------------------------------------


@pytest.mark.parametrize(("name", "data"), [
    ("obs-fold", b"GET /certs/root.der HTTP/1.1\r\nHost: ca.test\r\nX-A: a\r\n folded\r\n\r\n"),
    ("no Host", b"GET /certs/root.der HTTP/1.1\r\n\r\n"),
    ("empty Host", b"GET /certs/root.der HTTP/1.1\r\nHost:\r\n\r\n"),
    ("two Host lines", b"GET /certs/root.der HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n"),
    ("absurd version", b"GET /certs/root.der HTTP/7.3\r\nHost: ca.test\r\n\r\n"),
    ("not HTTP", b"GET /certs/root.der FTP/1.1\r\nHost: ca.test\r\n\r\n"),
    ("method with a control byte", b"G\x01T /certs/root.der HTTP/1.1\r\nHost: ca.test\r\n\r\n"),
    ("raw escape in the path", b"GET /certs/\x1b[31mroot.der HTTP/1.1\r\nHost: ca.test\r\n\r\n"),
    ("space in a header name", b"GET /certs/root.der HTTP/1.1\r\nHost: ca.test\r\nX A: 1\r\n\r\n"),
    ("bare LF line", b"GET /certs/root.der HTTP/1.1\nHost: ca.test\n\nGET / HTTP/1.1\r\n\r\n"),
])
def test_malformed_requests_are_400_and_closed(hostile: Hostile, name: str, data: bytes) -> None:
    result = exchange(hostile.server, data + ROOT_GET)
    if name == "bare LF line" and result.replies and result.replies[0].status == 200:
        # hyper reads a bare LF as a line end (RFC 9112 2.2 allows it); then the two
        # requests are two, each answered once, and the broken third is refused
        assert [r.status for r in result.replies][-1] == 400 and result.closed
        return
    assert [r.status for r in result.replies] == [400], name
    assert result.closed and no_smuggled_answer(result)


def test_http_09_gets_no_answer_of_its_kind(hostile: Hostile) -> None:
    result = exchange(hostile.server, b"GET /\r\n")
    # HTTP/0.9 would be the bare body; the server answers in HTTP/1.1, 400, and closes
    assert [r.status for r in result.replies] == [400] and result.closed


def test_http2_prior_knowledge_is_closed_unanswered(hostile: Hostile) -> None:
    result = exchange(hostile.server, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + ROOT_GET)
    assert result.replies == [] and result.closed  # HTTP/1.1 only: h2 is the proxy's


def test_absolute_form_target_is_served_once(hostile: Hostile) -> None:
    result = exchange(hostile.server, b"GET http://ca.test/certs/root.der HTTP/1.1\r\n"
                                      b"Host: ca.test\r\nConnection: close\r\n\r\n")
    assert [r.status for r in result.replies] == [200] and result.closed


def test_http_10_without_host_is_served(hostile: Hostile) -> None:
    result = exchange(hostile.server, b"GET /certs/root.der HTTP/1.0\r\n\r\n")
    assert [r.status for r in result.replies] == [200] and result.closed


@pytest.mark.parametrize("method", ["BREW", "PROPFIND", "X" * 200])
def test_unknown_methods_are_501(hostile: Hostile, method: str) -> None:
    result = exchange(hostile.server, f"{method} /ocsp HTTP/1.1\r\nHost: ca.test\r\n\r\n".encode())
    assert [r.status for r in result.replies] == [501] and result.closed


def test_header_section_over_the_limit_is_refused_and_closed(hostile: Hostile) -> None:
    big = b"X-Big: " + b"a" * (hostile.server.limits.max_head_bytes + 1) + b"\r\n"
    result = exchange(hostile.server,
                      b"GET /certs/root.der HTTP/1.1\r\nHost: ca.test\r\n" + big + b"\r\n")
    assert [r.status for r in result.replies] in ([431], [400]) and result.closed


def test_many_headers_within_the_limit_are_fine(hostile: Hostile) -> None:
    headers = b"".join(b"X-H%d: v\r\n" % n for n in range(60))
    result = exchange(hostile.server,
                      b"GET /certs/root.der HTTP/1.1\r\nHost: ca.test\r\n" + headers + b"\r\n")
    assert [r.status for r in result.replies] == [200]


def test_body_over_the_limit_is_413_and_closed(hostile: Hostile) -> None:
    head = ("POST /ocsp HTTP/1.1\r\nHost: ca.test\r\nContent-Type: application/ocsp-request\r\n"
            f"Content-Length: {MAX_BODY + 1}\r\n\r\n")
    result = exchange(hostile.server, head.encode() + b"\x00" * 1024)
    assert [r.status for r in result.replies] == [413] and result.closed


def test_a_body_shorter_than_its_length_times_out_without_an_answer(hostile: Hostile) -> None:
    head = ("POST /ocsp HTTP/1.1\r\nHost: ca.test\r\nContent-Type: application/ocsp-request\r\n"
            "Content-Length: 100\r\n\r\n")
    result = exchange(hostile.server, head.encode() + b"abc", wait=0.5)
    assert result.replies == [] and not result.closed  # still waiting for the body


# -- the access log ----------------------------------------------------------------------


def test_access_log_lines_carry_no_control_bytes(
        hostile: Hostile, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="smimekit.service.access")
    mark = str(time.monotonic_ns())
    close = "Host: ca.test\r\nConnection: close\r\n\r\n"
    target = f"/%1b[31mred-{mark}?q=%1b]2;title%07"
    exchange(hostile.server, f"GET {target} HTTP/1.1\r\n{close}".encode())
    exchange(hostile.server, f"GET /caf%C3%A9\\{mark} HTTP/1.1\r\n{close}".encode())
    raw_escape = exchange(hostile.server, b"GET /\x1b[31m HTTP/1.1\r\nHost: ca.test\r\n\r\n")
    assert [r.status for r in raw_escape.replies] == [400]  # refused by the parser
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [r.getMessage() for r in caplog.records
                 if r.name == "smimekit.service.access" and mark in r.getMessage()]
        if len(lines) >= 2:
            break
        time.sleep(0.02)
    assert len(lines) == 2, lines
    for line in caplog.records:
        text = line.getMessage()
        assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in text), repr(text)
    assert any("%1b[31mred" in line for line in lines)
    assert any("\\\\" in line for line in lines)  # a backslash is written doubled


# -- OCSP edge cases ---------------------------------------------------------------------


def test_negative_certid_serial_gets_an_ocsp_answer(hostile: Hostile) -> None:
    request = asn1_ocsp.OCSPRequest.load(hostile.ocsp_request())
    request["tbs_request"]["request_list"][0]["req_cert"]["serial_number"] = -12345
    body = request.dump(force=True)
    result = exchange(hostile.server, with_body("POST /ocsp HTTP/1.1", body,
                                                "Content-Type: application/ocsp-request"))
    assert [r.status for r in result.replies] == [200]
    answer = ocsp.load_der_ocsp_response(result.replies[0].body)
    assert answer.response_status in (ocsp.OCSPResponseStatus.MALFORMED_REQUEST,
                                      ocsp.OCSPResponseStatus.SUCCESSFUL)
    if answer.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL:
        assert answer.certificate_status == ocsp.OCSPCertStatus.UNKNOWN


# -- slow and idle clients ---------------------------------------------------------------


def ocsp_post(hostile: Hostile, sock: socket.socket | None = None) -> tuple[int, float]:
    """One OCSP POST (on ``sock`` kept alive, or a new connection); status and seconds."""
    body = hostile.ocsp_request()
    data = with_body("POST /ocsp HTTP/1.1", body, "Content-Type: application/ocsp-request")
    started = time.monotonic()
    own = sock is None
    sock = sock or socket.create_connection(("127.0.0.1", hostile.server.port), timeout=10)
    try:
        sock.sendall(data)
        received = b""
        while True:
            replies, _ = parse_replies(received)
            if replies:
                break
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed before the answer")
            received += chunk
        assert ocsp.load_der_ocsp_response(replies[0].body).certificate_status == (
            ocsp.OCSPCertStatus.GOOD)
        return replies[0].status, time.monotonic() - started
    finally:
        if own:
            sock.close()


class Tricklers:
    """``count`` connections, each sending a request head one byte per round that never
    ends; records when the server closed each one."""

    def __init__(self, port: int, count: int) -> None:
        self.socks = []
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.setblocking(False)
            self.socks.append(sock)
        self.closed_at: dict[int, float] = {}
        self.started = time.monotonic()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        head = b"GET /certs/root.der HTTP/1.1\r\nHost: ca.test\r\nX-Slow: " + b"a" * 10_000
        position = 0
        while not self.stop.is_set() and len(self.closed_at) < len(self.socks):
            byte = head[position % len(head):][:1]
            position += 1
            for index, sock in enumerate(self.socks):
                if index in self.closed_at:
                    continue
                try:
                    sock.send(byte)
                    if sock.recv(4096) == b"":
                        self.closed_at[index] = time.monotonic() - self.started
                except BlockingIOError:
                    pass  # nothing to read: still open
                except OSError:  # reset or broken pipe: closed by the server
                    self.closed_at[index] = time.monotonic() - self.started
            self.stop.wait(0.05)

    def __enter__(self) -> Tricklers:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)
        for sock in self.socks:
            sock.close()


@pytest.mark.slow
def test_slowloris_is_cut_by_the_head_deadline_while_clients_are_served(
        hostile: Hostile) -> None:
    count = 300
    latencies = []
    with Tricklers(hostile.server.port, count) as tricklers:
        keep_alive = socket.create_connection(("127.0.0.1", hostile.server.port), timeout=10)
        try:
            end = time.monotonic() + 3 * HEAD_TIMEOUT
            while time.monotonic() < end and len(latencies) < 200:
                status, seconds = ocsp_post(hostile)  # a new connection each time
                latencies.append(seconds)
                assert status == 200
                status, seconds = ocsp_post(hostile, keep_alive)
                latencies.append(seconds)
                assert status == 200
                time.sleep(0.05)
        finally:
            keep_alive.close()
        deadline = time.monotonic() + 10 * HEAD_TIMEOUT + 10
        while len(tricklers.closed_at) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        closed = dict(tricklers.closed_at)
    assert latencies and max(latencies) < 2.0, max(latencies)  # generous liveness bound
    assert len(closed) == count, f"{count - len(closed)} tricklers still open"
    # closed by the deadline for the whole head, though each sent a byte every 50 ms
    assert min(closed.values()) >= HEAD_TIMEOUT * 0.5


def test_idle_keep_alive_connections_are_closed_and_do_not_block_others(
        hostile: Hostile) -> None:
    idle = []
    try:
        for _ in range(150):
            sock = socket.create_connection(("127.0.0.1", hostile.server.port), timeout=10)
            ocsp_post(hostile, sock)  # one answer, then the connection idles, kept alive
            idle.append(sock)
        assert ocsp_post(hostile)[0] == 200
        deadline = time.monotonic() + HEAD_TIMEOUT * 5 + 5
        for sock in idle:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            assert sock.recv(1) == b""  # closed by the server, no stray bytes
    finally:
        for sock in idle:
            sock.close()


def test_connections_beyond_the_bound_wait_for_a_free_slot() -> None:
    """``max_connections`` bounds the connections a worker serves; the next one is served
    once the head deadline frees a slot, not refused and not served in parallel."""
    state = make_ca()
    limits = ServerLimits(workers=1, head_timeout=HEAD_TIMEOUT, max_connections=3)
    with CAServer("127.0.0.1", 0, crl=lambda: state.crl_der, ocsp=state.responder,
                  certs={"root.der": der(state.root.cert)}, limits=limits) as server:
        silent = [socket.create_connection(("127.0.0.1", server.port), timeout=10)
                  for _ in range(3)]
        opened = time.monotonic()  # the silent ones' head deadline runs from their accept
        try:
            # behind them in the backlog, which the worker takes in order: served only once
            # a deadline has closed a silent one and freed its slot, however slowly the
            # worker got to them (a fixed pause and window left 0.3 s of margin)
            waiting = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            with waiting:
                waiting.sendall(ROOT_GET)
                waiting.settimeout(HEAD_TIMEOUT * 5 + 5)
                replies, _ = parse_replies(waiting.recv(65536))
                served_after = time.monotonic() - opened
                assert [r.status for r in replies] == [200]
                assert served_after >= HEAD_TIMEOUT * 0.9, served_after
            for sock in silent:
                assert sock.recv(1) == b""  # the deadline closed them
        finally:
            for sock in silent:
                sock.close()


# -- graceful shutdown of the forked server ----------------------------------------------

SLOW_SERVER = Path(__file__).with_name("slow_ca_service.py")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_a_request_lets_it_finish_then_exits_0(sig: signal.Signals) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).parents[1] / "revocation"), *sys.path])}
    process = subprocess.Popen([sys.executable, str(SLOW_SERVER)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=env, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # "<port> <request hex>" once the workers answer
        assert line, process.stderr.read() if process.stderr else ""
        port_text, request_hex = line.split()
        body = bytes.fromhex(request_hex)
        with socket.create_connection(("127.0.0.1", int(port_text)), timeout=30) as sock:
            sock.sendall(with_body("POST /ocsp HTTP/1.1", body,
                                   "Content-Type: application/ocsp-request"))
            time.sleep(0.5)  # the lookup takes 2 s: the request is in flight
            process.send_signal(sig)
            received = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
        replies, _ = parse_replies(received)
        assert [r.status for r in replies] == [200]
        answer = ocsp.load_der_ocsp_response(replies[0].body)
        assert answer.certificate_status == ocsp.OCSPCertStatus.GOOD
        assert process.wait(timeout=30) == 0
        with pytest.raises(OSError):  # and the port is closed
            socket.create_connection(("127.0.0.1", int(port_text)), timeout=2).close()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    stderr = process.stderr.read() if process.stderr else ""
    assert "Traceback" not in stderr, stderr


@pytest.mark.slow
def test_signal_while_workers_load_stops_them_at_once() -> None:
    """A worker inherits the parent's signal handlers; a SIGTERM that comes while it loads
    the application must still end it, not wait for the kill timeout (20 s here)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).parents[1] / "revocation"), *sys.path])}
    process = subprocess.Popen([sys.executable, str(SLOW_SERVER), "--slow-start"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # both workers forked, neither loaded yet
            children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text()
            if len(children.split()) == 2:
                break
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert process.wait(timeout=30) == 0
        assert time.monotonic() - started < 10  # generous; a lost signal takes 20 s
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    stderr = process.stderr.read() if process.stderr else b""
    assert b"Traceback" not in stderr and b"Killing worker" not in stderr, stderr
