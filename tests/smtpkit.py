"""SMTP helpers for the gateway's tests: a sink that keeps what it is given (aiosmtpd) and
the gateway's SMTP front run in a thread of its own, both on loopback ports."""

from __future__ import annotations

import asyncio
import email
import email.message
import email.policy
import hashlib
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from loopback import free_port

from smimekit.errors import GatewayError
from smimekit.gateway.journal import Journal, MemoryJournal
from smimekit.gateway.model import Decision, Delivery, Envelope, Outcome, Processor, Refusal
from smimekit.gateway.relay import NextHop
from smimekit.gateway.server import GatewayHandler, GatewayServer, Limits


@dataclass(frozen=True)
class Received:
    mail_from: str
    recipients: tuple[str, ...]
    data: bytes

    def message(self) -> email.message.EmailMessage:
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, email.message.EmailMessage)
        return parsed

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class SinkHandler:
    received: list[Received] = field(default_factory=list)
    defer: set[str] = field(default_factory=set)
    """Recipients answered 450 at RCPT."""
    refuse: set[str] = field(default_factory=set)
    """Recipients answered 550 at RCPT."""
    data_reply: str | None = None
    """Answer to DATA instead of 250 (e.g. "554 5.3.4 too big")."""

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        if address in self.refuse:
            return f"550 5.1.1 <{address}>: Recipient address rejected"
        if address in self.defer:
            return f"450 4.2.0 <{address}>: try again later"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_reply is not None:
            return self.data_reply
        sender = "" if envelope.mail_from == "<>" else envelope.mail_from
        self.received.append(Received(sender, tuple(envelope.rcpt_tos),
                                      envelope.original_content))
        return f"250 2.0.0 Ok: queued as SINK{len(self.received)}"

    def to(self, recipient: str) -> list[Received]:
        return [m for m in self.received if recipient in m.recipients]


class Scripted:
    """A processor doing what a test says: refuse some recipients, raise, or pass."""

    def __init__(self, *, refuse: dict[str, str] | None = None,
                 error: BaseException | None = None, split: bool = False,
                 reject: dict[str, str] | None = None) -> None:
        self.refuse = refuse or {}
        self.reject = reject or {}
        """A message to one of these recipients is refused whole (a permanent error)."""
        self.error = error
        self.split = split
        self.calls = 0

    def process(self, envelope: Envelope) -> Outcome:
        self.calls += 1
        if self.error is not None:
            raise self.error
        for r in envelope.recipients:
            if r in self.reject:
                raise GatewayError(self.reject[r], permanent=True)
        passing = tuple(r for r in envelope.recipients if r not in self.refuse)
        groups = [(r,) for r in passing] if self.split else [passing] if passing else []
        deliveries = tuple(Delivery(envelope.mail_from, g, envelope.data) for g in groups)
        decisions = tuple(Decision(r, "outbound", "passed", "test") for r in passing)
        refused = tuple(Refusal(r, why) for r, why in self.refuse.items()
                        if r in envelope.recipients)
        return Outcome(deliveries, decisions, refused)


@contextmanager
def sink(handler: SinkHandler | None = None) -> Iterator[tuple[SinkHandler, int]]:
    """An SMTP server on 127.0.0.1 that keeps every message: (its handler, its port);
    ``handler`` a SinkHandler of the test's own (one that answers EHLO otherwise, say)."""
    handler = handler or SinkHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(),
                            data_size_limit=None, enable_SMTPUTF8=True)
    controller.start()
    try:
        yield handler, controller.port
    finally:
        controller.stop()


class GatewayThread:
    """The gateway's SMTP front on its own event loop in a thread: the public door
    (:attr:`port`) and the trusted door (:attr:`submission_port`, ``listen_submission``),
    one handler behind both."""

    def __init__(self, processor: Processor, next_hop: str, *, journal: Journal | None = None,
                 limits: Limits | None = None, timeout: float = 10.0,
                 attach: str = "after-queue", threads: int = 2,
                 sock: socket.socket | None = None) -> None:
        self.journal = journal if journal is not None else MemoryJournal()
        self.handler = GatewayHandler(processor, self.journal,
                                      NextHop(next_hop, timeout=timeout), limits=limits or Limits(),
                                      reporting_mta="gateway.test", attach=attach,
                                      threads=threads)
        self.server = GatewayServer(self.handler, "127.0.0.1:0", sock=sock)
        self.submission = GatewayServer(self.handler, "127.0.0.1:0", trusted=True)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def submission_port(self) -> int:
        return self.submission.port

    def __enter__(self) -> GatewayThread:
        self._thread.start()
        for server in (self.server, self.submission):
            asyncio.run_coroutine_threadsafe(server.start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        for server in (self.server, self.submission):
            asyncio.run_coroutine_threadsafe(server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def gateway_config(tmp_path: Path, extra: str = "") -> Path:
    """A configuration whose [gateway] opens the held keys (none held: mail passes as relay)."""
    secret = tmp_path / "gateway.pass"
    secret.write_text("a long gateway key passphrase\n")
    config = tmp_path / "smimekit.toml"
    config.write_text(f'[gateway]\nkey_passphrase_file = "{secret}"\n{extra}')
    return config


def message(subject: str = "hello", body: str = "Hello.\r\n", *,
            sender: str = "ann@example.org", to: str = "bob@example.net") -> bytes:
    """A small plain-text message with CRLF line ends."""
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{hashlib.sha256(subject.encode()).hexdigest()[:16]}@example.org>\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n{body}"
            ).encode()
