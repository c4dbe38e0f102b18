"""Gateway nodes as real processes, for the fault, multi-node and benchmark runs.

- :class:`Node`: ``smimekit gateway serve`` in a subprocess (its own store URL, listen port and
  next hop), which a test can ``kill -9``, restart on the same port, and read the peak memory
  (VmHWM) of.
- :class:`GateRelay`: a :class:`~loopback.TcpRelay` that can also stall a transaction at the
  two moments that matter for exactly-once: before the end of DATA reaches the next hop (the
  next hop never gets the message) or after it (the next hop has it, the reply never comes
  back: the one window where SMTP itself allows a duplicate, RFC 1047).
- :func:`pg_store`: a PostgreSQL schema of its own for a test, as tests/backends.py makes.
- :func:`send`: messages with unique Message-IDs into Postfix over one SMTP connection;
  :func:`tally`: what the sink got, by Message-ID, with the SHA-256 of each body.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import os
import secrets
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
import pytest
from backends import PG_DB, PG_HOST, PG_PORT, _pg_user
from loopback import TcpRelay, free_port
from postfix import Postfix

from smimekit.store import Store

if TYPE_CHECKING:
    from gwhome import GatewayHome
    from smtpkit import SinkHandler


@contextmanager
def pg_store(data_dir: Path, *, port: int = PG_PORT) -> Iterator[str]:
    """A fresh store in a schema of its own on the test PostgreSQL (created, dropped after):
    its URL, through ``port`` (a relay in front of PostgreSQL, for the database-down test)."""
    user = _pg_user()
    if user is None:
        pytest.skip(f"no PostgreSQL server answers at {PG_HOST}:{PG_PORT}")
    schema = f"smimekit_test_{secrets.token_hex(6)}"
    conninfo = dict(host=PG_HOST, port=PG_PORT, dbname=PG_DB, user=user, autocommit=True)
    with psycopg.connect(**conninfo) as conn:  # type: ignore[arg-type]
        conn.execute(f'CREATE SCHEMA "{schema}"')
    direct = f"postgresql+psycopg://{user}@{PG_HOST}:{PG_PORT}/{PG_DB}" \
             f"?options=-csearch_path%3D{schema}"
    Store.open(direct, data_dir, create=True).close()
    try:
        yield direct.replace(f":{PG_PORT}/", f":{port}/") + "&connect_timeout=3"
    finally:
        with psycopg.connect(**conninfo) as conn:  # type: ignore[arg-type]
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def journal_nodes(url: str, data_dir: Path) -> Counter[str]:
    """Recipient copies recorded in the shared delivery journal, by the node that sent them."""
    from sqlalchemy import func, select

    from smimekit.store.schema import gateway_deliveries

    with Store.open(url, data_dir) as store, store.read() as conn:
        rows = conn.execute(select(gateway_deliveries.c.node, func.count())
                            .group_by(gateway_deliveries.c.node)).all()
    return Counter({str(node): int(count) for node, count in rows})


class FrontsPostfix(Postfix):
    """:class:`~postfix.Postfix` in front of several gateway nodes: one front smtpd per node
    (:attr:`fronts`; the first is :attr:`smtpd_port`), each handing its mail to its own node
    first and to the others, in order, when that one is down (Postfix 3.5's list of next hops
    in ``content_filter``); the same for the trusted door (:attr:`submission_fronts` to the
    nodes' ``--listen-submission`` addresses, when ``submission`` names them). Before-queue
    (``attach``), each front has its own node as its proxy filter, without the others to fall
    back on (``smtpd_proxy_filter`` names one)."""

    def __init__(self, root: Path, *, sink_port: int, nodes: list[tuple[str, int]],
                 submission: list[tuple[str, int]] | None = None, maxproc: int = 4,
                 attach: str = "after-queue") -> None:
        super().__init__(root, sink_port=sink_port, maxproc=maxproc, attach=attach)
        self.nodes = nodes
        """Each node's (address, port)."""
        self.gateway_host = nodes[0][0]
        self.submission = submission or []
        """Each node's trusted door (address, port)."""
        self.fronts = [self.smtpd_port] + [free_port() for _ in nodes[1:]]
        self.submission_fronts = [self.submission_port] + [free_port()
                                                           for _ in self.submission[1:]]

    @staticmethod
    def _filter(doors: list[tuple[str, int]], first: int) -> str:
        order = doors[first:] + doors[:first]
        return "scan:" + ",".join(f"[{host}]:{port}" for host, port in order)

    def _write_config(self) -> None:
        super()._write_config()
        main = (self.conf / "main.cf").read_text()
        main = main.replace(f"content_filter = scan:[127.0.0.1]:{self.gateway_port}",
                            f"content_filter = {self._filter(self.nodes, 0)}")
        (self.conf / "main.cf").write_text(main)
        master = (self.conf / "master.cf").read_text()
        if self.attach == "before-queue":
            if self.submission:
                first = self.proxy_options(self.submission_gateway_port or self.gateway_port
                                           or 0, self.gateway_host)
                master = master.replace(first, self.proxy_options(self.submission[0][1],
                                                                  self.submission[0][0]))
            for i, port in enumerate(self.fronts[1:], start=1):
                master += (f"127.0.0.1:{port} inet n - n - - smtpd"
                           f"{self.proxy_options(self.nodes[i][1], self.nodes[i][0])}\n")
            for i, port in enumerate(self.submission_fronts[1:], start=1):
                host, gateway = self.submission[i]
                master += (f"127.0.0.1:{port} inet n - n - - smtpd"
                           f"{self.proxy_options(gateway, host)}\n")
            (self.conf / "master.cf").write_text(master)
            return
        if self.submission:
            door = f"127.0.0.1:{self.submission_port} inet n - n - - smtpd\n  -o content_filter="
            assert door in master
            head, _, rest = master.partition(door)
            master = head + door + self._filter(self.submission, 0) + rest.partition("\n")[1] \
                + rest.partition("\n")[2]
        for i, port in enumerate(self.fronts[1:], start=1):
            master += (f"127.0.0.1:{port} inet n - n - - smtpd\n"
                       f"  -o content_filter={self._filter(self.nodes, i)}\n")
        for i, port in enumerate(self.submission_fronts[1:], start=1):
            master += (f"127.0.0.1:{port} inet n - n - - smtpd\n"
                       f"  -o content_filter={self._filter(self.submission, i)}\n")
        (self.conf / "master.cf").write_text(master)

    def start(self, gateway_port: int | None = None, submission_port: int | None = None
              ) -> None:
        super().start(self.nodes[0][1] if gateway_port is None else gateway_port,
                      submission_port)
        for port in self.fronts[1:] + self.submission_fronts[1:]:
            self._wait_listening(port)


class Node:
    """``smimekit gateway serve`` as a process of its own."""

    def __init__(self, name: str, next_hop: int, *, data_dir: Path, database_url: str | None,
                 config: Path | None = None, port: int | None = None,
                 log_dir: Path | None = None, host: str = "127.0.0.1",
                 submission_port: int | None = None, attach: str = "after-queue",
                 workers: int = 1) -> None:
        self.name, self.next_hop, self.data_dir = name, next_hop, data_dir
        self.host = host
        """The address it listens on: any of 127.0.0.0/8 (Linux routes the whole block to
        the loopback interface), so nodes can be separate hosts on one machine."""
        self.database_url, self.config = database_url, config
        self.port = port or free_port()
        self.submission_port = submission_port or free_port()
        """The trusted door (``--listen-submission``)."""
        self.attach = attach
        """How Postfix hands mail over (``--attach``)."""
        self.workers = workers
        """Worker processes (``--workers``; 1: the node serves in its own process)."""
        self.log = (log_dir or data_dir.parent) / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.peak_rss_kib = 0
        self.pids: list[int] = []
        """Every process this node has been (the journal names a node host:pid)."""

    def start(self) -> Node:
        args = [sys.executable, "-m", "smimekit.cli.main", "--data-dir", str(self.data_dir)]
        if self.database_url:
            args += ["--database-url", self.database_url]
        args += ["--config", str(self.config or self._relay_config())]
        args += ["gateway", "serve", "--listen", f"{self.host}:{self.port}",
                 "--listen-submission", f"{self.host}:{self.submission_port}",
                 "--next-hop", f"127.0.0.1:{self.next_hop}", "--grace", "5",
                 "--attach", self.attach]
        if self.workers != 1:
            args += ["--workers", str(self.workers)]
        env = {**os.environ, "SMIMEKIT_ACTOR": self.name}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=log, env=env)
        self.pids.append(self.process.pid)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited: {self.log.read_text()[-3000:]}")
            try:
                for port in (self.port, self.submission_port):
                    socket.create_connection((self.host, port), timeout=1).close()
                if self.workers > 1 and len(self.children()) < self.workers:
                    raise OSError("the workers are starting")
                return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"{self.name} does not listen: {self.log.read_text()[-3000:]}")

    def _relay_config(self) -> Path:
        """No internal_domains: every message passes unchanged (relay), audited; the key
        store is opened all the same (gateway serve always needs its passphrase)."""
        secret = self.data_dir.parent / f"{self.name}.gateway.pass"
        secret.write_text("a long gateway key passphrase\n")
        config = self.data_dir.parent / f"{self.name}.toml"
        config.write_text(f'[gateway]\nkey_passphrase_file = "{secret}"\n')
        return config

    def children(self) -> list[int]:
        """The pids of the node's worker processes (``--workers``), from /proc."""
        if self.process is None:
            return []
        pid = self.process.pid
        try:
            listed = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        except OSError:
            return []
        return [int(child) for child in listed.split()]

    def _proc_files(self, name: str) -> list[str]:
        """/proc/PID/``name`` of each of the node's processes still there (workers too)."""
        assert self.process is not None
        texts = []
        for pid in [self.process.pid, *self.children()]:
            try:
                texts.append(Path(f"/proc/{pid}/{name}").read_text())
            except OSError:
                continue
        return texts

    def _sample_rss(self) -> None:
        """The node's VmHWM; with workers, the sum of its processes' (which counts the
        pages they share since the fork more than once)."""
        if self.process is None:
            return
        total = 0
        for status in self._proc_files("status"):
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        self.peak_rss_kib = max(self.peak_rss_kib, total)

    def cpu_seconds(self) -> float:
        """The CPU time (user and system) the node's processes have used so far, seconds
        (workers included while they run)."""
        if self.process is None:
            return 0.0
        ticks = 0
        for stat in self._proc_files("stat"):
            fields = stat[stat.rindex(")") + 2:].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        return ticks / os.sysconf("SC_CLK_TCK")

    def kill9(self) -> None:
        """``kill -9``: no grace, no cleanup, connections cut mid-transaction."""
        assert self.process is not None
        self._sample_rss()
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        self._sample_rss()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def peak_rss(self) -> int:
        """The node's peak resident memory so far, KiB (its VmHWM)."""
        self._sample_rss()
        return self.peak_rss_kib


END_OF_DATA = b"\r\n.\r\n"


class GateRelay(TcpRelay):
    """A relay that can stall the transaction carrying the end of DATA.

    ``stall = "before"``: the chunk with the end of DATA is held back (the next hop never
    completes the message); ``"after"``: it goes through and the next hop's reply to it is
    held back (the next hop has the message, the client never hears so). :attr:`stalled` is
    set when it happens; :meth:`cut` ends it."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.stall: str | None = None
        self.stalled = threading.Event()
        super().__init__(target)

    def _connected(self, client: socket.socket, upstream: socket.socket) -> None:
        hold = threading.Event()  # this connection's replies held back
        threading.Thread(target=self._forward, args=(client, upstream, hold),
                         daemon=True).start()
        threading.Thread(target=self._back, args=(upstream, client, hold),
                         daemon=True).start()

    def _forward(self, source: socket.socket, sink: socket.socket,
                 hold: threading.Event) -> None:
        try:
            while data := source.recv(65536):
                if self.stall is not None and END_OF_DATA in data and not self.stalled.is_set():
                    if self.stall == "before":
                        self.stalled.set()
                        return  # never sent: the next hop drops the transaction at the cut
                    hold.set()
                    sink.sendall(data)
                    self.stalled.set()
                    continue
                sink.sendall(data)
        except OSError:
            pass

    def _back(self, source: socket.socket, sink: socket.socket,
              hold: threading.Event) -> None:
        try:
            while data := source.recv(65536):
                while hold.is_set():
                    time.sleep(0.01)
                    if self._listener is None:
                        return
                sink.sendall(data)
        except OSError:
            pass


def message(message_id: str, sender: str, to: str, body: bytes) -> bytes:
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {message_id}\r\n"
            f"Message-ID: <{message_id}>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=us-ascii\r\n\r\n").encode() + body


def body_for(message_id: str, size: int = 2000) -> bytes:
    """A body of about ``size`` octets, distinct per message (CRLF lines of 76 characters)."""
    seed = hashlib.sha256(message_id.encode()).hexdigest()
    line = (seed * 2)[:74].encode() + b"\r\n"
    return line * max(1, size // len(line))


def body_hash(data: bytes) -> str:
    """SHA-256 of the body as it arrived (after the header block Postfix prepends to)."""
    _, _, body = data.partition(b"\r\n\r\n")
    return hashlib.sha256(body).hexdigest()


def send(port: int, ids: Iterable[str], *, sender: str, to: list[str],
         size: int = 2000) -> dict[str, str]:
    """Submit one message per id to 127.0.0.1:``port``; the ids Postfix accepted (250),
    each with the SHA-256 of its body. A refused one (4xx/5xx) is left out: no promise
    was made for it."""
    accepted: dict[str, str] = {}
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        for message_id in ids:
            body = body_for(message_id, size)
            try:
                client.sendmail(sender, to, message(message_id, sender, ", ".join(to), body))
            except smtplib.SMTPResponseException:
                client.rset()
                continue
            except smtplib.SMTPRecipientsRefused:
                continue
            accepted[message_id] = hashlib.sha256(body).hexdigest()
    return accepted


def tally(received: Iterable[object]) -> dict[str, list[str]]:
    """Message-ID -> the body hashes of every copy the sink got of it."""
    copies: dict[str, list[str]] = {}
    for got in received:
        data: bytes = got.data  # type: ignore[attr-defined]
        parsed = email.message_from_bytes(data, policy=email.policy.compat32)
        message_id = (parsed["Message-ID"] or "").strip().strip("<>")
        copies.setdefault(message_id, []).append(body_hash(data))
    return copies


@dataclass
class PostfixRig:
    """A private Postfix in front of one gateway node, whose next hop delivers to a saving
    sink (:func:`postfix_rig`); tests add their own ways of sending."""

    home: GatewayHome
    postfix: Postfix
    node: Node
    sink: SinkHandler


R = TypeVar("R", bound=PostfixRig)


@contextmanager
def postfix_rig(tmp_path: Path, home: GatewayHome, rig: type[R], *,
                attach: str = "after-queue", **postfix_options: Any) -> Iterator[R]:
    """Start the sink, a :class:`Postfix` (``attach``, ``postfix_options``) and a node of
    ``home`` on SQLite behind it; yield them as a ``rig``; stop them all at the end."""
    from smtpkit import sink

    with ExitStack() as stack:
        handler, sink_port = stack.enter_context(sink())
        postfix = Postfix(tmp_path / "postfix", sink_port=sink_port, attach=attach,
                          **postfix_options)
        node = Node("node-1", postfix.reinject_port, data_dir=home.data_dir,
                    database_url=None, config=home.config, log_dir=tmp_path, attach=attach)
        node.start()
        stack.callback(node.stop)
        postfix.start(node.port, node.submission_port)
        stack.callback(postfix.stop)
        yield rig(home, postfix, node, handler)
