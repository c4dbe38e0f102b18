"""Re-injection: hand a :class:`~smimekit.gateway.model.Delivery` to the next hop over SMTP.

The next hop is Postfix's second ``smtpd`` (FILTER_README's re-injection port, usually
127.0.0.1:10026), or the re-injection smtpd behind a before-queue proxy filter, spoken to in
the clear over loopback with aiosmtplib. What comes back is an :class:`Accepted` naming the
recipients the next hop refused (with their replies), or a
:class:`~smimekit.errors.GatewayError`: ``permanent`` when the next hop refused the message
itself with a 5xx, else temporary (connection refused or lost, timeout, a 4xx).

Connections are kept open between messages (up to :attr:`NextHop.max_idle` idle ones, each
closed after :attr:`NextHop.idle_seconds` unused, none reused past
:attr:`NextHop.reuse_seconds`: Postfix's own SMTP client caches its connections so) instead of
a connection, a greeting, EHLO and QUIT per message: one ``aiosmtplib.SMTP`` runs one
transaction after another (``rset``, ``mail``, ``rcpt``, ``data``). A connection on which the
next hop refused or deferred anything is closed, not kept: the retry meets a fresh smtpd
process (one started after a ``postfix reload`` reads the new configuration; a kept one still
has the old). Each transaction on a kept connection begins with RSET. A kept connection found
broken before DATA (at RSET, MAIL or a RCPT) is replaced by a new one for the same
transaction: the next hop cannot have accepted anything on it. Lost during ``data()``, which
writes DATA and after the 354 the whole message with its end-of-data mark, it is a temporary
error with no second send (the next hop may have the message), so the rule "250 to Postfix
only after the next hop's 250" is unchanged. aiosmtplib's ``data()`` makes every line end CRLF
and doubles leading dots itself.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass

import aiosmtplib
import aiosmtplib.email

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


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_QUIT_SECONDS = 5.0
"""A next hop that has not answered QUIT in this time is disconnected all the same."""


def _sendable(address: str) -> bool:
    """aiosmtplib puts ``address`` on the command line unchanged (it parses it with
    ``email.utils.parseaddr``, which would turn ``a:b@x`` into ``b@x`` and ``a,b@x`` into
    ``a``: another mailbox) and nothing in it can end the command line."""
    if _CONTROL.search(address):
        return False
    try:
        return aiosmtplib.email.quote_address(address) == f"<{address}>"
    except ValueError:
        return False


def _size(data: bytes) -> int:
    """RFC 1870's SIZE of ``data``: its length once aiosmtplib's ``data()`` has made every
    lone CR or LF a CRLF and added a final CRLF (what the next hop counts), by counting at C
    speed rather than a second pass of aiosmtplib's regular expression."""
    crlf = data.count(b"\r\n")
    size = len(data) + (data.count(b"\r") - crlf) + (data.count(b"\n") - crlf)
    return size if data.endswith((b"\r", b"\n")) else size + 2


class _Lost(Exception):
    """The connection failed (closed, reset, timed out, a reply that is no SMTP)."""

    def __init__(self, detail: str, *, ended: bool = False) -> None:
        super().__init__(detail)
        self.ended = ended
        """The message data may have been written: the next hop may have it."""


class _Refusal(Exception):
    """The next hop answered a step of the transaction with a 4xx or 5xx."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code} {text}")
        self.code = code


def _failure(exc: BaseException, *, ended: bool = False) -> _Lost | _Refusal:
    """aiosmtplib's exception (or an OSError, a timeout) as a refusal or a lost connection."""
    if isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code >= 100:
        return _Refusal(exc.code, exc.message)
    return _Lost(str(exc) or type(exc).__name__, ended=ended)


_ERRORS = (aiosmtplib.SMTPException, OSError, TimeoutError)


class _Connection:
    """One aiosmtplib client connected to the next hop, after its greeting and EHLO."""

    def __init__(self, client: aiosmtplib.SMTP) -> None:
        self.client = client
        self.used = False
        """A transaction has been begun on it (it is a kept connection)."""
        self.idle_since = 0.0
        self.opened_at = time.monotonic()


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
        self._quitting: set[asyncio.Task[None]] = set()
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
            if not _sendable(address):
                raise GatewayError(f"the next hop {self} cannot take this message: the"
                                   f" address {address!r} cannot go on a command line",
                                   permanent=True)
        while True:
            connection = self._take()
            kept = connection is not None
            try:
                if connection is None:
                    connection = await self._open()
                accepted = await self._transaction(connection, delivery, options)
            except _Lost as exc:
                if connection is not None:
                    connection.client.close()
                if kept and not exc.ended:
                    continue  # a kept connection had gone: nothing was taken, a new one
                raise GatewayError(f"the next hop {self} did not take the message:"
                                   f" {reply_text(str(exc), 200)}") from None
            except _Refusal as exc:
                if connection is not None:  # not kept after a refusal (see the module)
                    self._quit(connection)
                raise GatewayError(f"the next hop {self} answered {reply_text(str(exc))}",
                                   permanent=500 <= exc.code < 600) from None
            except GatewayError:
                self._give_back(connection)
                raise
            except BaseException:
                if connection is not None:
                    connection.client.close()
                raise
            if accepted.refused:
                self._quit(connection)
            else:
                self._give_back(connection)
            return accepted

    async def _open(self) -> _Connection:
        client = aiosmtplib.SMTP(hostname=self.host, port=self.port, timeout=self.timeout,
                                 local_hostname=self._helo, use_tls=False, start_tls=False)
        try:
            await client.connect()
            self.opened += 1
            await client.ehlo()
        except _ERRORS as exc:
            client.close()
            raise _failure(exc) from None
        except BaseException:
            client.close()
            raise
        return _Connection(client)

    async def _transaction(self, connection: _Connection, delivery: Delivery,
                           options: list[str]) -> Accepted:
        client = connection.client
        options = list(options)
        if "SMTPUTF8" in options and not client.supports_extension("smtputf8"):
            raise GatewayError(f"the next hop {self} cannot take this message: SMTPUTF8 is"
                               " not supported by this server", permanent=True)
        if client.supports_extension("size"):
            options.insert(0, f"SIZE={_size(delivery.data)}")
        encoding = "utf-8" if "SMTPUTF8" in options else "ascii"
        refused: dict[str, Refused] = {}
        try:
            if connection.used:  # a kept connection: RSET first
                try:
                    await client.rset()
                except aiosmtplib.SMTPResponseException as exc:
                    raise _Lost(f"RSET answered {exc.code} {exc.message}") from None
            connection.used = True
            await client.mail(delivery.mail_from, options=options, encoding=encoding)
            for recipient in delivery.recipients:
                try:
                    await client.rcpt(recipient, encoding=encoding)
                except aiosmtplib.SMTPRecipientRefused as exc:
                    if exc.code < 400:
                        raise
                    refused[recipient] = Refused(exc.code, exc.message)
        except _ERRORS as exc:
            raise _failure(exc) from None
        if len(refused) == len(delivery.recipients):
            return Accepted("", refused)  # every recipient refused: no DATA
        try:
            final = await client.data(delivery.data)
        except _ERRORS as exc:
            # aiosmtplib writes DATA, and after the 354 the data and its end at once: lost
            # there, the next hop may have the message (no second send).
            raise _failure(exc, ended=True) from None
        return Accepted(reply_text(final.message, 200), refused)

    def _take(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if now - connection.idle_since < self.idle_seconds \
                    and connection.client.is_connected:
                return connection
            self._quit(connection)
        return None

    def _give_back(self, connection: _Connection | None) -> None:
        if connection is None:
            return
        if len(self._idle) >= self.max_idle or not connection.client.is_connected \
                or time.monotonic() - connection.opened_at >= self.reuse_seconds:
            self._quit(connection)
            return
        connection.idle_since = time.monotonic()
        self._idle.append(connection)
        asyncio.get_running_loop().call_later(self.idle_seconds + 0.1, self._expire)

    def _expire(self) -> None:
        now = time.monotonic()
        for connection in [c for c in self._idle if now - c.idle_since >= self.idle_seconds]:
            self._idle.remove(connection)
            self._quit(connection)

    def _quit(self, connection: _Connection) -> None:
        """QUIT and close ``connection`` in the background (nobody waits for the 221)."""
        if not connection.client.is_connected:
            connection.client.close()
            return
        task = asyncio.get_running_loop().create_task(self._quit_now(connection.client))
        self._quitting.add(task)
        task.add_done_callback(self._quitting.discard)

    @staticmethod
    async def _quit_now(client: aiosmtplib.SMTP) -> None:
        try:
            await client.quit(timeout=_QUIT_SECONDS)
        except _ERRORS:
            pass
        finally:
            client.close()

    async def close(self) -> None:
        """Close the kept connections (QUIT)."""
        idle, self._idle = self._idle, []
        for connection in idle:
            self._quit(connection)
        if self._quitting:
            await asyncio.gather(*self._quitting, return_exceptions=True)
