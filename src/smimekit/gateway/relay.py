"""Re-injection: hand a :class:`~smimekit.gateway.model.Delivery` to the next hop over SMTP.

The next hop is Postfix's second ``smtpd`` (FILTER_README's re-injection port, usually
127.0.0.1:10026), spoken to with aiosmtplib, in the clear over loopback. What comes back
is an :class:`Accepted` naming the recipients the next hop refused (with their replies), or a
:class:`~smimekit.errors.GatewayError`: ``permanent`` when the next hop refused the message
itself with a 5xx, else temporary (connection refused or lost, timeout, a 4xx).
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass

import aiosmtplib

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


class NextHop:
    """The SMTP server the gateway hands its output to."""

    def __init__(self, address: str, *, timeout: float = 60.0,
                 helo: str | None = None) -> None:
        """``address``: ``host:port``; ``timeout``: seconds for each step of the dialogue.

        Raises:
            ValueError: ``address`` is not ``host:port``.
        """
        self.host, self.port = parse_address(address)
        self.timeout = timeout
        self._helo = helo or socket.gethostname()

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
        client = aiosmtplib.SMTP(hostname=self.host, port=self.port, timeout=self.timeout,
                                 local_hostname=self._helo, start_tls=False, use_tls=False)
        try:
            await client.connect()
            errors, reply = await client.sendmail(
                delivery.mail_from, list(delivery.recipients), delivery.data,
                mail_options=_mail_options(delivery))
            refused = {r: Refused(e.code, e.message) for r, e in errors.items()}
            accepted = Accepted(reply_text(reply, 200), refused)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            accepted = Accepted("", {e.recipient: Refused(e.code, e.message)
                                     for e in exc.recipients})
        except aiosmtplib.SMTPResponseException as exc:
            client.close()
            raise GatewayError(
                f"the next hop {self} answered {reply_text(f'{exc.code} {exc.message}')}",
                permanent=500 <= exc.code < 600) from None
        except (aiosmtplib.SMTPNotSupported, ValueError) as exc:
            # ValueError: an address aiosmtplib will not put on a command line
            client.close()
            raise GatewayError(f"the next hop {self} cannot take this message: {exc}",
                               permanent=True) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            client.close()
            detail = reply_text(str(exc) or type(exc).__name__, 200)
            raise GatewayError(f"the next hop {self} did not take the message: {detail}"
                               ) from None
        # The message is the next hop's now: a failing QUIT must not turn it into a 4xx
        # (Postfix would send it again).
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            client.close()
        return accepted
