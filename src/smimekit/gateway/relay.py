"""Re-injection: hand a :class:`~smimekit.gateway.model.Delivery` to the next hop over SMTP.

The next hop is Postfix's second ``smtpd`` (FILTER_README's re-injection port, usually
127.0.0.1:10026), or the re-injection smtpd behind a before-queue proxy filter, spoken to in
the clear over loopback by the small SMTP client of this module. What comes back is an
:class:`Accepted` naming the recipients the next hop refused (with their replies), or a
:class:`~smimekit.errors.GatewayError`: ``permanent`` when the next hop refused the message
itself with a 5xx, else temporary (connection refused or lost, timeout, a 4xx).

Connections are kept open between messages (up to :attr:`NextHop.max_idle` idle ones, each
closed after :attr:`NextHop.idle_seconds` unused, none reused past
:attr:`NextHop.reuse_seconds`: Postfix's own SMTP client caches its connections so) instead of
a connection, a greeting, EHLO and QUIT per message. A connection on which the next hop
refused or deferred anything is closed, not kept: the retry meets a fresh smtpd process (one
started after a ``postfix reload`` reads the new configuration; a kept one still has the
old). Each transaction on a kept connection begins with RSET; with the next
hop's PIPELINING, RSET, MAIL, the RCPTs and DATA go in one write (RFC 2920). A kept
connection found broken before the end-of-data mark was written is replaced by a new one
for the same transaction (the next hop cannot have accepted anything on it); once the mark
is written, a lost reply is a temporary error as before, so the rule "250 to Postfix only
after the next hop's 250" is unchanged.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass

from smimekit.errors import GatewayError
from smimekit.gateway.dsn import reply_text
from smimekit.gateway.model import Delivery


@dataclass(frozen=True)
class Refused:
    """The next hop's answer to one recipient it did not accept."""

    code: int
    text: str

    @property
    def permanent(self) -> bool:
        return 500 <= self.code < 600

    def __str__(self) -> str:
        return reply_text(f"{self.code} {self.text}")


@dataclass(frozen=True)
class Accepted:
    """The next hop took the message for every recipient not in ``refused``."""

    reply: str
    """Its answer to the message (e.g. "2.0.0 Ok: queued as 4Q8..."), one line."""
    refused: Mapping[str, Refused]


def parse_address(text: str, *, any_port: bool = False) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) as a host and a port number; with
    ``any_port``, port 0 too (a listener on any free port).

    Raises:
        ValueError: no port, or not a number in 1..65535.
    """
    host, sep, port = text.rpartition(":")
    lowest = 0 if any_port else 1
    if not sep or not host or not port.isdigit() or not lowest <= int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def _mail_options(delivery: Delivery) -> list[str]:
    options = []
    if not delivery.data.isascii():  # C speed: a Python loop took 0.14 s per MB
        options.append("BODY=8BITMIME")
    if not (delivery.mail_from.isascii() and all(r.isascii() for r in delivery.recipients)):
        options.append("SMTPUTF8")
    return options


_LINE_ENDS = re.compile(rb"\r\n|\n|\r")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MAX_REPLY_LINES = 100


def wire_data(data: bytes) -> bytes:
    """``data`` as it goes after DATA: every line end CRLF (a lone CR or LF made one), a
    final CRLF, each line's leading dot doubled, and the end-of-data mark ``.<CRLF>``.

    Counting is C speed; the regular expression runs only when a lone CR or LF is there
    (aiosmtplib ran one over every message, about a quarter of a node's time for 1 MB)."""
    crlf = data.count(b"\r\n")
    if data.count(b"\r") != crlf or data.count(b"\n") != crlf:
        data = _LINE_ENDS.sub(b"\r\n", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    if data.startswith(b"."):
        data = b"." + data
    if b"\r\n." in data:
        data = data.replace(b"\r\n.", b"\r\n..")
    return data + b".\r\n"


class _Lost(Exception):
    """The connection failed (closed, reset, timed out, a reply that is no SMTP)."""

    def __init__(self, detail: str, *, ended: bool = False) -> None:
        super().__init__(detail)
        self.ended = ended
        """The message data had begun to be written: the next hop may have it."""


@dataclass(frozen=True)
class _Reply:
    code: int
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


class _Connection:
    """One SMTP connection to the next hop, after its greeting and EHLO."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 timeout: float) -> None:
        self.reader, self.writer, self.timeout = reader, writer, timeout
        self.extensions: dict[str, str] = {}
        self.used = False
        """A transaction has been begun on it (it is a kept connection)."""
        self.idle_since = 0.0
        self.opened_at = time.monotonic()

    async def reply(self) -> _Reply:
        lines: list[str] = []
        while True:
            try:
                raw = await asyncio.wait_for(self.reader.readuntil(b"\n"), self.timeout)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError,
                    TimeoutError) as exc:
                raise _Lost(str(exc) or type(exc).__name__) from None
            line = raw.rstrip(b"\r\n").decode("utf-8", "replace")
            if len(line) < 3 or not line[:3].isdigit() or line[3:4] not in ("", " ", "-") \
                    or len(lines) >= _MAX_REPLY_LINES:
                raise _Lost(f"not an SMTP reply: {line[:80]!r}")
            lines.append(line[4:])
            if line[3:4] != "-":
                return _Reply(int(line[:3]), "\n".join(lines))

    async def write(self, data: bytes) -> None:
        try:
            self.writer.write(data)
            await asyncio.wait_for(self.writer.drain(), self.timeout)
        except (OSError, TimeoutError) as exc:
            raise _Lost(str(exc) or type(exc).__name__) from None

    async def command(self, line: str, encoding: str = "ascii") -> _Reply:
        await self.write(line.encode(encoding) + b"\r\n")
        return await self.reply()

    def close(self, *, quit: bool = False) -> None:
        try:
            if quit:
                self.writer.write(b"QUIT\r\n")
            self.writer.close()
        except (OSError, RuntimeError):
            pass


class _Refusal(Exception):
    """The next hop answered a step of the transaction with a 4xx or 5xx."""

    def __init__(self, reply: _Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


class NextHop:
    """The SMTP server the gateway hands its output to."""

    max_idle = 16
    """Connections kept open between messages, at most (each ties up one smtpd)."""
    idle_seconds = 2.0
    """A kept connection unused this long is closed (QUIT); Postfix's own SMTP client keeps
    its connections as long (smtp_connection_cache_time_limit)."""
    reuse_seconds = 300.0
    """A connection this old is not kept (smtp_connection_reuse_time_limit)."""

    def __init__(self, address: str, *, timeout: float = 60.0,
                 helo: str | None = None) -> None:
        """``address``: ``host:port``; ``timeout``: seconds for each step of the dialogue.

        Raises:
            ValueError: ``address`` is not ``host:port``.
        """
        self.host, self.port = parse_address(address)
        self.timeout = timeout
        self._helo = helo or socket.gethostname()
        self._idle: list[_Connection] = []
        self.opened = 0
        """Connections opened so far (tests, figures)."""

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    async def send(self, delivery: Delivery) -> Accepted:
        """Hand ``delivery`` over in one SMTP transaction.

        Returns what the next hop accepted; when it refused every recipient, ``refused``
        names them all.

        Raises:
            GatewayError: temporary when the next hop cannot be reached, drops the
                connection, times out or answers 4xx to the sender or the data; permanent
                when it answers 5xx to them.
        """
        options = _mail_options(delivery)
        for address in (delivery.mail_from, *delivery.recipients):
            if _CONTROL.search(address):
                raise GatewayError(f"the next hop {self} cannot take this message: the"
                                   f" address {address!r} cannot go on a command line",
                                   permanent=True)
        data = wire_data(delivery.data)
        while True:
            connection = self._take()
            kept = connection is not None
            try:
                if connection is None:
                    connection = await self._open()
                accepted = await self._transaction(connection, delivery, options, data)
            except _Lost as exc:
                if connection is not None:
                    connection.close()
                if kept and not exc.ended:
                    continue  # a kept connection had gone: nothing was taken, a new one
                raise GatewayError(f"the next hop {self} did not take the message:"
                                   f" {reply_text(str(exc), 200)}") from None
            except _Refusal as exc:
                if connection is not None:  # not kept after a refusal (see the module)
                    connection.close(quit=True)
                code = exc.reply.code
                raise GatewayError(
                    f"the next hop {self} answered {reply_text(str(exc.reply))}",
                    permanent=500 <= code < 600) from None
            except GatewayError:
                self._give_back(connection)
                raise
            except BaseException:
                if connection is not None:
                    connection.close()
                raise
            if accepted.refused:
                connection.close(quit=True)
            else:
                self._give_back(connection)
            return accepted

    async def _open(self) -> _Connection:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.timeout)
        except (OSError, TimeoutError) as exc:
            raise _Lost(str(exc) or type(exc).__name__) from None
        self.opened += 1
        connection = _Connection(reader, writer, self.timeout)
        try:
            greeting = await connection.reply()
            if greeting.code != 220:
                raise _Refusal(greeting)
            hello = await connection.command(f"EHLO {self._helo}")
            if hello.code != 250:
                raise _Refusal(hello)
        except BaseException:
            connection.close()
            raise
        for line in hello.text.split("\n")[1:]:
            name, _, value = line.strip().partition(" ")
            connection.extensions[name.upper()] = value
        return connection

    async def _transaction(self, connection: _Connection, delivery: Delivery,
                           options: list[str], data: bytes) -> Accepted:
        ext = connection.extensions
        options = list(options)
        if "SMTPUTF8" in options and "SMTPUTF8" not in ext:
            raise GatewayError(f"the next hop {self} cannot take this message: SMTPUTF8 is"
                               " not supported by this server", permanent=True)
        if "SIZE" in ext:
            options.insert(0, f"SIZE={len(data) - 3}")
        encoding = "utf-8" if "SMTPUTF8" in options else "ascii"
        try:
            lines = [f"MAIL FROM:<{delivery.mail_from}>{''.join(' ' + o for o in options)}"]
            lines += [f"RCPT TO:<{r}>" for r in delivery.recipients]
            wire = [line.encode(encoding) for line in lines]
        except UnicodeEncodeError as exc:
            raise GatewayError(f"the next hop {self} cannot take this message: {exc}",
                               permanent=True) from None
        reset = connection.used  # a kept connection: RSET first
        commands = ([b"RSET"] if reset else []) + wire + [b"DATA"]
        connection.used = True
        if "PIPELINING" in ext:
            await connection.write(b"".join(c + b"\r\n" for c in commands))
            replies = [await connection.reply() for _ in commands]
        else:
            replies = []
            for command in commands:
                if command == b"DATA" and all(a.code >= 400 for a in replies[1 + reset:]):
                    break  # every recipient refused: no DATA
                replies.append(await connection.command(command.decode(encoding), encoding))
                if replies[-1].code >= 400 and len(replies) <= 1 + reset:
                    break  # RSET or MAIL refused
        if reset:
            rset, replies = replies[0], replies[1:]
            if rset.code != 250:
                raise _Lost(f"RSET answered {rset}")
        mail = replies[0]
        if mail.code >= 400:
            raise _Refusal(mail)
        answers = replies[1:1 + len(delivery.recipients)]
        refused = {r: Refused(a.code, a.text)
                   for r, a in zip(delivery.recipients, answers, strict=True) if a.code >= 400}
        if len(refused) == len(delivery.recipients):
            if len(replies) > len(answers) + 1 and replies[-1].code == 354:
                await connection.write(b".\r\n")  # it wants data all the same: end it empty
                await connection.reply()
            return Accepted("", refused)
        if replies[-1].code != 354:
            raise _Refusal(replies[-1])
        try:
            await connection.write(data)
            final = await connection.reply()
        except _Lost as exc:
            raise _Lost(str(exc), ended=True) from None
        if final.code != 250:
            raise _Refusal(final)
        return Accepted(reply_text(final.text, 200), refused)

    def _take(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if now - connection.idle_since < self.idle_seconds \
                    and not connection.reader.at_eof():
                return connection
            connection.close(quit=True)
        return None

    def _give_back(self, connection: _Connection | None) -> None:
        if connection is None:
            return
        if len(self._idle) >= self.max_idle or connection.writer.is_closing() \
                or time.monotonic() - connection.opened_at >= self.reuse_seconds:
            connection.close(quit=True)
            return
        connection.idle_since = time.monotonic()
        self._idle.append(connection)
        asyncio.get_running_loop().call_later(self.idle_seconds + 0.1, self._expire)

    def _expire(self) -> None:
        now = time.monotonic()
        for connection in [c for c in self._idle if now - c.idle_since >= self.idle_seconds]:
            self._idle.remove(connection)
            connection.close(quit=True)

    async def close(self) -> None:
        """Close the kept connections (QUIT)."""
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close(quit=True)
