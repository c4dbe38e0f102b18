"""The SMTP front: Postfix's content filter hands every message here (aiosmtpd).

The no-loss contract (docs/gateway.md "No lost mail"): the reply to the end of DATA is 250
only after the next hop accepted everything the :class:`~smimekit.gateway.model.Processor`
made of the message (and the DSN for the recipients it refused). Anything else is a 4xx, so
Postfix keeps the message and tries again: the processor failing (a non-permanent
:class:`~smimekit.errors.GatewayError` or any other exception), the journal unreadable, the
next hop down, slow or answering 4xx. A 5xx (Postfix bounces, naming the reason) only when the
policy refuses the whole message or every recipient, or the next hop refuses it with a 5xx.
Retries do not hand the next hop what it took already: :mod:`smimekit.gateway.journal`.

Limits: the SIZE extension and aiosmtpd's ``data_size_limit`` (552 past ``max_message_size``;
the excess is read and dropped, never held), ``max_recipients`` (452 for each recipient past
it: Postfix sends those in a later transaction), lines of at most 1000 octets (500).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import logging
import re
import secrets
import socket
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email._header_value_parser import get_addr_spec, get_angle_addr
from email.errors import HeaderParseError
from typing import Any, TypeVar

from aiosmtpd.smtp import MISSING, SMTP
from aiosmtpd.smtp import Envelope as SmtpEnvelope
from aiosmtpd.smtp import Session as SmtpSession

from smimekit.errors import GatewayError, StoreError
from smimekit.gateway.dsn import Failed, build_dsn, reply_text
from smimekit.gateway.journal import (
    Journal,
    delivery_keys,
    legacy_message_key,
    message_key,
)
from smimekit.gateway.model import Delivery, Envelope, Outcome, Processor
from smimekit.gateway.relay import NextHop, parse_address

log = logging.getLogger("smimekit.gateway")

T = TypeVar("T")

OK = "250 2.0.0 Ok: {detail}"
TEMPORARY = "451 4.3.0 {detail}; Postfix keeps the message and tries again"
TOO_MANY_RECIPIENTS = "452 4.5.3 Error: too many recipients"
REFUSED = "550 5.7.1 {detail}"
"""Every recipient refused by policy (Postfix bounces, naming the reasons)."""
POLICY_REJECT = "554 5.7.1 {detail}"
"""The policy refuses the message itself."""
NEXT_HOP_REJECT = "554 5.0.0 {detail}"


@dataclass(frozen=True)
class Limits:
    max_message_size: int = 50 * 1024 * 1024
    max_recipients: int = 1000


ATTACHMENTS = ("after-queue", "before-queue")
"""How Postfix hands mail to the gateway (docs/gateway.md): FILTER_README's content filter
after the queue, or SMTPD_PROXY_README's proxy filter before it."""


class GatewayHandler:
    """The aiosmtpd handler: hooks for RCPT (the recipient limit) and DATA (the work).

    ``attach``: ``"after-queue"`` (Postfix's content filter; the default) or
    ``"before-queue"`` (Postfix's smtpd_proxy_filter). Before the queue, Postfix's Received
    header carries no queue id, so two identical messages in one second from one client are
    the same bytes: the journal then names each transaction apart (a fresh key, never
    looked up) instead of by its content, which would pass the second one on as "already
    delivered". A client's retry of a message partly delivered is then delivered again to
    the recipients that had it (a duplicate, never a loss). Such a key is never read, so
    before the queue nothing is written to the journal either.

    ``threads``: the processing runs on a pool of this many threads of its own (the SMTP of
    every connection on the event loop). Not asyncio's default pool: its up to
    ``cpu_count + 4`` threads, all busy under load, fight over the GIL and cost the node a
    fifth more CPU per message (docs/benchmarks.md)."""

    def __init__(self, processor: Processor, journal: Journal, next_hop: NextHop, *,
                 limits: Limits = Limits(), reporting_mta: str | None = None,
                 attach: str = "after-queue", threads: int = 2) -> None:
        if attach not in ATTACHMENTS:
            raise ValueError(f"attach must be one of {', '.join(ATTACHMENTS)}")
        if threads < 1:
            raise ValueError("threads must be at least 1")
        self.attach = attach
        self.threads = threads
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._running: set[asyncio.Future[Any]] = set()
        self._closed = False
        self.processor = processor
        self.journal = journal
        self.next_hop = next_hop
        self.limits = limits
        self.reporting_mta = reporting_mta or socket.gethostname()
        self.in_flight = 0
        """Messages between the end of DATA and the reply."""

    def __dir__(self) -> list[str]:
        # as _BulkDataSMTP.__dir__: aiosmtpd looks for handle_ and auth_ hooks of the
        # handler on every connection
        return _hook_names(type(self), ("handle_", "auth_"))

    async def _in_pool(self, work: Callable[..., T], *args: Any) -> T:
        """``work(*args)`` on the processing threads.

        Raises:
            GatewayError: (temporary: 4xx) the gateway is stopping (:meth:`close`).
        """
        if self._closed:
            raise GatewayError("the S/MIME gateway is stopping")
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                self.threads, thread_name_prefix="gateway-work")
        future = asyncio.get_running_loop().run_in_executor(self._pool, work, *args)
        self._running.add(future)
        future.add_done_callback(self._running.discard)
        return await future

    async def close(self, wait: float = 10.0) -> None:
        """Take no more work, drop work not begun, and wait up to ``wait`` seconds for the
        work still running on the processing threads, so that the store is not closed
        under it (a thread cannot be stopped: past that it runs on, its reply lost, and
        Postfix retries the message)."""
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        running = [f for f in self._running if not f.done()]
        if running:
            await asyncio.wait(running, timeout=wait)

    async def handle_RCPT(self, server: SMTP, session: SmtpSession, envelope: SmtpEnvelope,
                          address: str, rcpt_options: list[str]) -> str:
        if len(envelope.rcpt_tos) >= self.limits.max_recipients:
            return TOO_MANY_RECIPIENTS
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: SmtpSession,
                          envelope: SmtpEnvelope) -> str:
        mail_from = envelope.mail_from or ""
        data = envelope.original_content or b""
        peer = session.peer
        received = Envelope(
            mail_from="" if mail_from == "<>" else mail_from,
            recipients=tuple(envelope.rcpt_tos), data=data,
            peer=f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or ""),
            trusted=getattr(server, "trusted", False) is True)
        # Shielded: when Postfix hangs up (its timeout, a network cut) while the message is
        # being passed on, the work still ends with the journal written, so that Postfix's
        # retry finds it delivered rather than delivering it twice.
        return await asyncio.shield(self.pass_on(received))

    async def pass_on(self, envelope: Envelope) -> str:
        """Process ``envelope`` and hand the result to the next hop; the SMTP reply."""
        # before the queue each transaction apart (see the class): a random key, no hash
        # of the whole message on the event loop
        key = (secrets.token_hex(32) if self.attach == "before-queue"
               else message_key(envelope))
        self.in_flight += 1
        try:
            reply = await self._pass_on(envelope, key)
        except Exception as exc:  # a bug must cost a retry, never the message
            log.error("message %s: internal error (%s); answered 4xx", key[:16],
                      type(exc).__name__)
            reply = TEMPORARY.format(detail="internal error in the S/MIME gateway")
        finally:
            self.in_flight -= 1
        log.info("message %s from %s, %d recipient(s): %s", key[:16], envelope.peer or "-",
                 len(envelope.recipients), reply)
        return reply

    async def _pass_on(self, envelope: Envelope, key: str) -> str:
        try:
            outcome: Outcome = await self._in_pool(self.processor.process, envelope)
        except GatewayError as exc:
            template = POLICY_REJECT if exc.permanent else TEMPORARY
            return template.format(detail=reply_text(str(exc)))
        except StoreError as exc:  # keys, certificates: the database is down
            log.warning("message %s: the store is unavailable (%s)", key[:16],
                        reply_text(str(exc), 200))
            return TEMPORARY.format(detail="the store is unavailable")
        for decision in outcome.decisions:
            log.info("message %s: %s %s %s: %s", key[:16], decision.direction,
                     decision.recipient, decision.action, reply_text(decision.reason, 200))
        try:
            # the old key too: rows journalled before the upgrade (gateway/journal.py);
            # before the queue a fresh key of this transaction: no rows to look up
            done = (frozenset() if self.attach == "before-queue"
                    else await self._in_pool(  # the old key's hash off the event loop too
                        lambda: self.journal.delivered(key, legacy_message_key(envelope))))
        except Exception as exc:
            log.warning("message %s: the delivery journal cannot be read (%s)", key[:16],
                        reply_text(str(exc), 200))
            return TEMPORARY.format(detail="the delivery journal cannot be read")

        failed = [Failed(r.recipient, reply_text(r.reason)) for r in outcome.refused]
        delivered = sum(1 for k in done if not k.startswith("dsn:"))
        temporary: list[str] = []
        replies: list[str] = []
        for delivery, keys in zip(outcome.deliveries, delivery_keys(outcome.deliveries),
                                  strict=True):
            todo = [(r, k) for r, k in zip(delivery.recipients, keys, strict=True)
                    if k not in done]
            if not todo:
                continue  # a retry: the next hop has it already
            part = Delivery(delivery.mail_from, tuple(r for r, _ in todo), delivery.data)
            try:
                accepted = await self.next_hop.send(part)
            except GatewayError as exc:
                if not exc.permanent:
                    temporary.append(str(exc))
                else:
                    failed += [Failed(r, f"refused by the next hop: {exc}", "5.0.0")
                               for r, _ in todo]
                continue
            took = [k for r, k in todo if r not in accepted.refused]
            for r, _ in todo:
                answer = accepted.refused.get(r)
                if answer is None:
                    continue
                if answer.permanent:
                    failed.append(Failed(r, "refused by the next hop", _status(answer.text),
                                         remote_reply=str(answer)))
                else:
                    temporary.append(f"the next hop deferred {r}: {answer}")
            if took:
                delivered += len(took)
                replies.append(accepted.reply)
                await self._record(key, took, accepted.reply)

        reported = any(k.startswith("dsn:") for k in done)
        if failed and not delivered and not temporary and not reported:
            # Nothing of the message passes: Postfix's own bounce names the reasons (unless
            # an earlier attempt sent a DSN already: then the rest is reported the same way).
            reasons = "; ".join(f"{f.recipient}: {f.reason}" for f in failed)
            template = REFUSED if outcome.refused else NEXT_HOP_REJECT
            return template.format(detail=reply_text(reasons))
        unreported = [f for f in failed if f"dsn:{f.recipient.lower()}" not in done]
        if unreported:
            problem = await self._notify(envelope, key, unreported)
            if problem is not None:
                temporary.append(problem)
        if temporary:
            return TEMPORARY.format(detail=reply_text(temporary[0]))
        detail = "; ".join(_said(r) for r in replies if _said(r)) or "nothing left to pass on"
        return OK.format(detail=reply_text(detail, 300))

    async def _record(self, key: str, keys: Sequence[str], reply: str) -> None:
        if self.attach == "before-queue":
            return  # a key of this transaction only: nothing will ever look it up
        try:
            if self._closed:  # stopping: the copies were delivered, journal them all the same
                self.journal.record(key, keys, reply)
            else:
                await self._in_pool(self.journal.record, key, keys, reply)
        except Exception as exc:
            # Delivered all the same: a 250 now is right. Only a retry of this message
            # (after a failure elsewhere in it) would hand these recipients a second copy.
            log.warning("message %s: the delivery journal cannot be written (%s)", key[:16],
                        reply_text(str(exc), 200))

    async def _notify(self, envelope: Envelope, key: str,
                      failed: Sequence[Failed]) -> str | None:
        """Send the DSN for ``failed``; a reason to answer 4xx, or None."""
        if not envelope.mail_from:
            log.info("message %s: %d recipient(s) refused; no DSN for a bounce", key[:16],
                     len(failed))
            return None
        dsn = build_dsn(envelope.mail_from, failed, envelope.data,
                        reporting_mta=self.reporting_mta, arrival=dt.datetime.now(dt.UTC))
        try:
            accepted = await self.next_hop.send(dsn)
        except GatewayError as exc:
            if not exc.permanent:
                return f"the DSN to the sender was not taken: {exc}"
            log.warning("message %s: the DSN to the sender was refused (%s)", key[:16], exc)
            return None
        if accepted.refused:
            log.warning("message %s: the DSN to the sender was refused (%s)", key[:16],
                        next(iter(accepted.refused.values())))
            return None
        await self._record(key, [f"dsn:{f.recipient.lower()}" for f in failed],
                           accepted.reply)
        return None


_NEXT_HOP_OK = re.compile(r"^(?:2\.\d{1,3}\.\d{1,3}\s+)?(?:ok\b:?\s*)?", re.I)


def _said(reply: str) -> str:
    """What the next hop said past its status and "Ok" ("queued as 4Fx"), for our own
    ``250 2.0.0 Ok: ...`` (not "250 2.0.0 Ok: 2.0.0 Ok: queued as ...")."""
    return _NEXT_HOP_OK.sub("", reply, count=1).strip()


_END = b"\r\n.\r\n"
_DATA_CHUNK = 256 * 1024
"""How much the reader may buffer while DATA is read in bulk (commands keep the 1001 line
limit)."""


_HOOK_NAMES: dict[tuple[type, tuple[str, ...]], list[str]] = {}


def _hook_names(cls: type, prefixes: tuple[str, ...]) -> list[str]:
    """The attributes of ``cls`` that begin with one of ``prefixes``, computed once per
    class: a hook set on an instance, or added to the class after its first connection,
    would not be seen (nothing does either)."""
    names = _HOOK_NAMES.get((cls, prefixes))
    if names is None:
        names = [n for n in dir(cls) if n.startswith(prefixes)]
        _HOOK_NAMES[(cls, prefixes)] = names
    return names


class _BulkDataSMTP(SMTP):
    """aiosmtpd's SMTP with DATA read in large pieces instead of line by line.

    aiosmtpd awaits every line of DATA (a 1 MB message: 14,000 awaits, about 60 ms in
    Python). This reads up to the end-of-data mark ``<CRLF>.<CRLF>`` with
    ``StreamReader.readuntil`` in pieces of up to :data:`_DATA_CHUNK`, never past the mark
    (what follows it stays in the reader for the next command). What is accepted is what
    aiosmtpd accepts: only ``<CRLF>.<CRLF>`` ends the data (a bare LF or CR never does, as in
    Postfix: no SMTP smuggling between the two), one leading dot is removed from each line
    that has one, a message past ``data_size_limit`` is read to its end and dropped as it
    comes (552), a line longer than ``line_length_limit`` octets with its CRLF gives 500.
    """

    trusted = False
    """The listener is the trusted door (:class:`GatewayServer` ``trusted``)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Replies go out at once (TCP_NODELAY). asyncio sets it itself only on sockets made
        # with proto IPPROTO_TCP, which a socket bound by socket.create_server (the parent
        # of ``--workers``) is not: there Nagle's algorithm held each reply written in two
        # pieces until the client's delayed ACK, up to 40 ms a command, and a node of two
        # workers passed half the messages of one (docs/benchmarks.md).
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass  # the connection is already gone: aiosmtpd finds out
        super().connection_made(transport)

    def __dir__(self) -> list[str]:
        # aiosmtpd's __init__ builds its tables of commands and AUTH mechanisms from
        # dir(self) and inspect.getmembers(self) on every connection: a few hundred
        # attributes looked up each time (before the queue, each message is a connection of
        # its own: 5% of the node's CPU). Those tables are all it asks dir() for.
        return _hook_names(type(self), ("smtp_", "auth_"))

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        # aiosmtpd's own (1.4) defines a typing.Protocol class at every call, for its type
        # checker: every MAIL and RCPT built a class (6% of the node's CPU). The same parse
        # without it, and an address that makes email's parser fail with IndexError ("a@")
        # is a syntax error (aiosmtpd answers "500 Error: (IndexError) ..."):
        # tests/gateway/test_smtp_front.py compares the two.
        if not arg:
            return "", ""
        address: Any  # email's AngleAddr or AddrSpec token: both have addr_spec
        try:
            if arg.lstrip().startswith("<"):
                address, rest = get_angle_addr(arg)
            else:
                address, rest = get_addr_spec(arg)
        except (HeaderParseError, IndexError):  # IndexError: email's parser on "a@"
            return None, None
        addr: str = address.addr_spec
        localpart = addr.rpartition("@")[0]
        if self.local_part_limit and len(localpart) > self.local_part_limit:
            return None, None
        return addr, rest


    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        reader = self._reader
        # The reader's buffer limit is the 1001-octet line limit of commands: raised while
        # DATA is read so that it comes in large pieces, restored after (the limit is a
        # private attribute of asyncio's StreamReader: without it DATA is read in pieces of
        # about 2 KB, correct and slower).
        limit = getattr(reader, "_limit", None)
        if isinstance(limit, int):
            reader._limit = max(limit, _DATA_CHUNK)  # type: ignore[attr-defined]
        try:
            content, problem = await _read_data(reader, self.data_size_limit,
                                                self.line_length_limit)
        except asyncio.IncompleteReadError:
            log.info("connection lost during DATA")
            self._writer.close()
            return
        except asyncio.CancelledError:
            log.info("connection lost during DATA")
            self._writer.close()
            raise
        finally:
            if isinstance(limit, int):
                reader._limit = limit  # type: ignore[attr-defined]
        if problem is not None:
            await self.push(problem)
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            return
        self.envelope.content = content
        self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push("250 OK" if status is MISSING else status)


def _partial_end(received: bytearray) -> int:
    """The length of the longest proper beginning of ``<CRLF>.<CRLF>`` that ``received``
    ends with (0: none)."""
    for n in (4, 3, 2, 1):
        if received.endswith(_END[:n]):
            return n
    return 0


async def _read_data(reader: asyncio.StreamReader, size_limit: int | None, line_limit: int
                     ) -> tuple[bytes, str | None]:
    """The message data up to and without the end-of-data mark, dots unstuffed; or b"" and
    the error reply (552 too much data, 500 a line too long).

    Raises:
        asyncio.IncompleteReadError: the client closed the connection before the end mark.
    """
    # The CRLF that ended the DATA command: a lone dot on the first line ends the data too.
    received = bytearray(b"\r\n")
    dropped = 0  # octets read and thrown away past the size limit
    while True:
        partial = _partial_end(received)
        if partial:
            # The mark may have begun in what was read: read exactly what would complete
            # it. Never past the mark: if these octets do not complete it, the mark is at
            # least that far ahead.
            received += await reader.readexactly(len(_END) - partial)
        else:
            try:
                received += await reader.readuntil(_END)
            except asyncio.LimitOverrunError as exc:
                received += await reader.read(exc.consumed)
        if received.endswith(_END):
            break
        if size_limit and len(received) + dropped - 2 - 3 > size_limit:
            # Too much even if the mark's dot and CRLF are in it: keep only the tail the
            # mark may begin in (bounded memory).
            dropped += len(received) - 4
            del received[:-4]
    if dropped:
        return b"", "552 Error: Too much mail data"
    del received[-3:]  # the mark's ".<CRLF>": left is "<CRLF>" and the lines with their CRLF
    if size_limit and len(received) - 2 > size_limit:
        return b"", "552 Error: Too much mail data"
    if _line_too_long(received, 2, line_limit):
        return b"", "500 Line too long (see RFC5321 4.5.3.1.6)"
    if b"\r\n." in received:
        received = received.replace(b"\r\n.", b"\r\n")
    del received[:2]
    return bytes(received), None


def _line_too_long(data: bytearray, start: int, limit: int) -> bool:
    """Whether a line of ``data`` from ``start`` on (lines end with CRLF, as the data does)
    is longer than ``limit`` octets with its CRLF. No list of lines (a message of empty
    lines would make millions of objects): each step jumps to the last CRLF within ``limit``
    octets, so it moves on by most of ``limit`` or finds the line too long."""
    pos, end = start, len(data)
    while pos < end:
        last = data.rfind(b"\r\n", pos, pos + limit)
        if last < 0:
            return True
        pos = last + 2
    return False


def _status(text: str) -> str:
    # The enhanced status code of a reply ("5.1.1 <x>: Recipient address rejected"), if any.
    first = text.split(" ", 1)[0]
    parts = first.split(".")
    if len(parts) == 3 and all(p.isdigit() for p in parts) and parts[0] in ("4", "5"):
        return first
    return "5.0.0"


class GatewayServer:
    """The listening socket, the SMTP protocol per connection, and a clean stop."""

    def __init__(self, handler: GatewayHandler, listen: str, *, hostname: str | None = None,
                 idle_timeout: float = 300.0, trusted: bool = False,
                 sock: socket.socket | None = None) -> None:
        """``listen``: ``host:port`` (port 0: any free port, see :attr:`port`).
        ``trusted``: this is the trusted door (``listen_submission``, only Postfix's
        submission smtpd hands mail here): mail from it may be outbound (signed with our
        users' keys); mail from any other listener is from outside. Two servers may share
        one handler. ``sock``: a socket bound and listening already at ``listen`` (a worker
        of ``gateway serve --workers``: the parent bound it before the fork).

        Raises:
            ValueError: ``listen`` is not ``host:port``.
        """
        self.handler = handler
        self.host, self.port = parse_address(listen, any_port=True)
        self.hostname = hostname or socket.gethostname()
        self.idle_timeout = idle_timeout
        self.trusted = trusted
        self._sock = sock
        self._server: asyncio.Server | None = None
        self._connections: weakref.WeakSet[SMTP] = weakref.WeakSet()

    def _protocol(self) -> SMTP:
        protocol = _BulkDataSMTP(self.handler, data_size_limit=self.handler.limits.max_message_size,
                    enable_SMTPUTF8=True, decode_data=False, hostname=self.hostname,
                    ident="smimekit gateway", timeout=self.idle_timeout)
        protocol.trusted = self.trusted
        self._connections.add(protocol)
        return protocol

    async def start(self) -> None:
        """Listen; :attr:`port` is the port bound.

        Raises:
            OSError: the address cannot be bound.
        """
        loop = asyncio.get_running_loop()
        if self._sock is not None:
            self._server = await loop.create_server(self._protocol, sock=self._sock)
        else:
            self._server = await loop.create_server(self._protocol, self.host, self.port)
        sockets: Sequence[Any] = self._server.sockets
        self.port = sockets[0].getsockname()[1]

    async def stop(self, grace: float = 0.0) -> None:
        """Stop listening; wait up to ``grace`` seconds for the messages being passed on to
        get their reply. A transaction still open then is cut off: Postfix sees no 250,
        keeps the message and tries again."""
        if self._server is not None:
            self._server.close()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + grace
            while self.handler.in_flight and loop.time() < deadline:
                await asyncio.sleep(0.05)
            for protocol in list(self._connections):
                if protocol.transport is not None:
                    protocol.transport.close()
            await self._server.wait_closed()
            self._server = None
        await self.handler.close()
        await self.handler.next_hop.close()
