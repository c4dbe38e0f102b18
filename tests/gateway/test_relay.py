"""The re-injection client (gateway/relay.py, aiosmtplib) against a real SMTP server (aiosmtpd,
with and without PIPELINING): kept connections, their replacement when broken, the data on the
wire, the SIZE declared."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from loopback import TcpRelay, free_port
from smtpkit import SinkHandler, message, sink

from smimekit.errors import GatewayError
from smimekit.gateway.model import Delivery
from smimekit.gateway.relay import NextHop

ANN, BOB, CAROL = "ann@example.org", "bob@example.net", "carol@example.net"


class _Pipelining(SinkHandler):
    """The sink announcing PIPELINING (aiosmtpd reads commands in order, as RFC 2920
    needs)."""

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        return [responses[0], "250-PIPELINING", *responses[1:]]


@pytest.fixture(params=["plain", "pipelining"])
def server(request: pytest.FixtureRequest) -> Iterator[tuple[SinkHandler, int]]:
    with sink(_Pipelining() if request.param == "pipelining" else None) as found:
        yield found


def _run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_messages_share_one_connection(server: tuple[SinkHandler, int]) -> None:
    handler, port = server

    async def go() -> tuple[int, list[str]]:
        hop = NextHop(f"127.0.0.1:{port}", timeout=10)
        replies = []
        for i in range(5):
            accepted = await hop.send(Delivery(ANN, (BOB,), message(f"m{i}")))
            replies.append(accepted.reply)
        await hop.close()
        return hop.opened, replies

    opened, replies = _run(go())  # type: ignore[misc]
    assert opened == 1
    assert replies == [f"2.0.0 Ok: queued as SINK{i + 1}" for i in range(5)]
    assert [m.data for m in handler.received] == [message(f"m{i}") for i in range(5)]


def test_after_a_refusal_the_connection_is_not_kept(server: tuple[SinkHandler, int]
                                                    ) -> None:
    """A next hop that refused or deferred anything is asked again on a new connection (a
    fresh smtpd: after a postfix reload, one with the new configuration)."""
    handler, port = server
    handler.refuse.add(CAROL)
    handler.defer.add("dave@example.net")

    async def go() -> NextHop:
        hop = NextHop(f"127.0.0.1:{port}", timeout=10)
        everyone = await hop.send(Delivery(ANN, (CAROL, "dave@example.net"), message("no")))
        assert everyone.reply == ""
        assert {r: a.code for r, a in everyone.refused.items()} == {
            CAROL: 550, "dave@example.net": 450}
        some = await hop.send(Delivery(ANN, (BOB, CAROL), message("some")))
        assert set(some.refused) == {CAROL} and "SINK1" in some.reply
        handler.data_reply = "554 5.3.4 too big"
        with pytest.raises(GatewayError) as refused:
            await hop.send(Delivery(ANN, (BOB,), message("big")))
        assert refused.value.permanent and "554 5.3.4 too big" in str(refused.value)
        handler.data_reply = None
        await hop.send(Delivery(ANN, (BOB,), message("after")))
        await hop.close()
        return hop

    hop = _run(go())
    assert hop.opened == 4  # type: ignore[attr-defined]  # one per refusal, and the first
    assert [(m.recipients, m.message()["Subject"]) for m in handler.received] == [
        ((BOB,), "some"), ((BOB,), "after")]


def test_a_broken_kept_connection_is_replaced_and_nothing_doubles() -> None:
    with sink() as (handler, port):
        relay = TcpRelay(("127.0.0.1", port))

        async def go() -> NextHop:
            hop = NextHop(f"127.0.0.1:{relay.port}", timeout=10)
            await hop.send(Delivery(ANN, (BOB,), message("before")))
            relay.cut()  # the kept connection drops (as when smtpd times out)
            with pytest.raises(GatewayError) as down:
                await hop.send(Delivery(ANN, (BOB,), message("down")))
            assert not down.value.permanent
            relay.restore()
            await hop.send(Delivery(ANN, (BOB,), message("back")))
            relay.cut()
            relay.restore()  # dropped while idle, the next hop up: the message goes
            await hop.send(Delivery(ANN, (BOB,), message("again")))
            await hop.close()
            return hop

        try:
            hop = _run(go())
        finally:
            relay.cut()
    assert [m.message()["Subject"] for m in handler.received] == ["before", "back", "again"]
    assert hop.opened == 3  # type: ignore[attr-defined]


def test_the_reply_lost_after_the_data_is_temporary_and_not_resent() -> None:
    """Once the end of data is written on a kept connection, a lost reply is a 4xx for
    Postfix (which retries: the duplicate SMTP allows), never a second send on a new
    connection."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    ends: list[int] = []  # the end-of-data marks received, by connection

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            ends.append(0)
            stream = conn.makefile("rb")
            conn.sendall(b"220 test\r\n")
            in_data = False
            for line in stream:
                if in_data:
                    if line == b".\r\n":
                        in_data = False
                        ends[-1] += 1
                        if ends[-1] == 2:
                            break  # the second message: hang up without a reply
                        conn.sendall(b"250 2.0.0 Ok: queued\r\n")
                elif line.startswith(b"DATA"):
                    in_data = True
                    conn.sendall(b"354 go\r\n")
                elif line.startswith(b"QUIT"):
                    break
                else:
                    conn.sendall(b"250 ok\r\n")
            stream.close()
            conn.close()

    threading.Thread(target=serve, daemon=True).start()

    async def go() -> None:
        hop = NextHop(f"127.0.0.1:{listener.getsockname()[1]}", timeout=5)
        await hop.send(Delivery(ANN, (BOB,), message("first")))
        with pytest.raises(GatewayError) as lost:
            await hop.send(Delivery(ANN, (BOB,), message("lost")))
        assert not lost.value.permanent
        await hop.close()

    try:
        _run(go())
    finally:
        listener.close()
    assert ends == [2]


def test_odd_line_ends_and_dots_arrive_made_crlf_and_unstuffed(
        server: tuple[SinkHandler, int]) -> None:
    handler, port = server
    data = b"Subject: x\r\n\r\n.first\nbare LF\rbare CR\r\n..two\r\n."

    async def go() -> None:
        hop = NextHop(f"127.0.0.1:{port}", timeout=10)
        await hop.send(Delivery(ANN, (BOB,), data))
        await hop.close()

    _run(go())
    [got] = handler.received
    assert got.data == b"Subject: x\r\n\r\n.first\r\nbare LF\r\nbare CR\r\n..two\r\n.\r\n"


class _Sizes(SinkHandler):
    """The sink announcing SIZE and keeping the SIZE= of each MAIL FROM."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        self.sizes += [int(o[5:]) for o in options if o.upper().startswith("SIZE=")]
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"


@pytest.mark.parametrize("data", [
    b"Subject: a\r\n\r\nbody\r\n",
    b"Subject: a\r\n\r\nno final line end",
    b"Subject: a\n\nlone LF\nlone CR\r.dot\r\r\n\n\r",
    b"Subject: a\r\n\r\n" + b"x" * 998 + b"\r\n.\r\n",
])
def test_the_size_declared_is_what_the_next_hop_receives(data: bytes) -> None:
    """RFC 1870: SIZE counts the octets after the 354 with CRLF line ends, without the
    end-of-data mark and the doubled dots (aiosmtpd's content is that, unstuffed)."""
    handler = _Sizes()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(),
                            data_size_limit=10_000_000)
    controller.start()

    async def go() -> None:
        hop = NextHop(f"127.0.0.1:{controller.port}", timeout=10)
        await hop.send(Delivery(ANN, (BOB,), data))
        await hop.close()

    try:
        _run(go())
    finally:
        controller.stop()
    [got] = handler.received
    assert handler.sizes == [len(got.data)]


@pytest.mark.parametrize("address", ["a:b@example.net", "a,b@example.net",
                                     "a(c)@example.net", "a b@example.net",
                                     "a\r\nRSET@example.net", "a\x00@example.net"])
def test_an_address_the_client_would_change_is_refused_before_anything_is_sent(
        address: str) -> None:
    """aiosmtplib parses addresses (email.utils.parseaddr): "a:b@x" would go as "b@x", another
    mailbox. Such an address is a permanent error and nothing reaches the next hop."""
    with sink() as (handler, port):

        async def go() -> NextHop:
            hop = NextHop(f"127.0.0.1:{port}", timeout=10)
            for delivery in (Delivery(address, (BOB,), message("from")),
                             Delivery(ANN, (BOB, address), message("to"))):
                with pytest.raises(GatewayError) as refused:
                    await hop.send(delivery)
                assert refused.value.permanent and "cannot go on a command line" in str(
                    refused.value)
            await hop.close()
            return hop

        hop = _run(go())
    assert hop.opened == 0  # type: ignore[attr-defined]
    assert handler.received == []
