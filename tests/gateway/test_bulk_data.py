"""The SMTP front reads DATA in bulk (server._read_data): the same message, end mark, dot
unstuffing and limits as aiosmtpd's line-by-line reading, whatever pieces the bytes arrive
in, and never a byte past the end mark."""

from __future__ import annotations

import asyncio
import smtplib

import pytest
from smtpkit import GatewayThread, sink

from smimekit.gateway.passthrough import PassThrough
from smimekit.gateway.server import _read_data

LIMIT = 1001  # aiosmtpd's line_length_limit: 1000 octets and the CRLF


def read(stream: bytes, *, size_limit: int | None = 10_000, piece: int = 0,
         reader_limit: int = 64) -> tuple[bytes, str | None, bytes]:
    """(data, error reply, what is left in the reader) for ``stream`` fed in pieces of
    ``piece`` octets (0: at once) to a reader whose buffer limit is ``reader_limit``."""

    async def run() -> tuple[bytes, str | None, bytes]:
        reader = asyncio.StreamReader(limit=reader_limit)

        async def feed() -> None:
            step = piece or len(stream)
            for i in range(0, len(stream), step):
                reader.feed_data(stream[i:i + step])
                await asyncio.sleep(0)
            reader.feed_eof()

        feeding = asyncio.create_task(feed())
        data, problem = await _read_data(reader, size_limit, LIMIT)
        await feeding
        return data, problem, await reader.read()

    return asyncio.run(run())


@pytest.mark.parametrize("piece", [0, 1, 2, 3, 4, 5, 7, 64])
def test_end_mark_found_in_any_pieces_and_nothing_after_it_read(piece: int) -> None:
    body = b"Subject: x\r\n\r\nline one\r\n..dot stuffed\r\n.\r\nQUIT\r\n"
    data, problem, left = read(body, piece=piece)
    assert problem is None
    assert data == b"Subject: x\r\n\r\nline one\r\n.dot stuffed\r\n"
    assert left == b"QUIT\r\n"


@pytest.mark.parametrize("piece", [0, 1, 2])
def test_empty_message_and_a_lone_dot_on_the_first_line(piece: int) -> None:
    assert read(b".\r\nRSET\r\n", piece=piece) == (b"", None, b"RSET\r\n")
    assert read(b"x\r\n.\r\n", piece=piece) == (b"x\r\n", None, b"")


@pytest.mark.parametrize(("stream", "expected"), [
    (b"a\n.\r\nb\r\n.\r\n", b"a\n.\r\nb\r\n"),
    (b"a\r\n.\nb\r\n.\r\n", b"a\r\n\nb\r\n"),  # the line ".<LF>b" loses its dot
    (b"a\r.\r\nb\r\n.\r\n", b"a\r.\r\nb\r\n"),
])
def test_only_crlf_dot_crlf_ends_the_data(stream: bytes, expected: bytes) -> None:
    # A bare LF or CR around the dot is data (as for Postfix: no smuggled second message).
    data, problem, left = read(stream, piece=1)
    assert (data, problem, left) == (expected, None, b"")


def test_every_leading_dot_is_unstuffed_once() -> None:
    data, _, _ = read(b"..\r\n...x\r\n.y\r\n..\r\n.\r\n")
    assert data == b".\r\n..x\r\ny\r\n.\r\n"


def test_the_size_limit_is_exact_and_the_excess_is_dropped() -> None:
    line = b"x" * 98 + b"\r\n"
    exactly = line * 10
    assert read(exactly + b".\r\n", size_limit=1000, piece=7)[:2] == (exactly, None)
    data, problem, left = read(exactly + b"y\r\n.\r\nQUIT\r\n", size_limit=1000, piece=7)
    assert (data, left) == (b"", b"QUIT\r\n")
    assert problem is not None and problem.startswith("552")


def test_a_huge_message_is_not_held() -> None:
    # Past the limit only the last octets (where the end mark may begin) are kept.
    async def run() -> tuple[bytes, str | None, int]:
        reader = asyncio.StreamReader(limit=4096)
        reading = asyncio.create_task(_read_data(reader, 1000, LIMIT))
        most = 0
        for _ in range(200):
            reader.feed_data(b"y" * 500 + b"\r\n")
            await asyncio.sleep(0)
            most = max(most, len(reader._buffer))
        reader.feed_data(b".\r\n")
        data, problem = await reading
        return data, problem, most

    data, problem, most = asyncio.run(run())
    assert data == b"" and problem is not None and problem.startswith("552")
    assert most < 10_000


def test_a_line_over_1000_octets_is_500() -> None:
    ok = b"a" * 999 + b"\r\n"
    assert read(ok + b".\r\n", piece=100)[:2] == (ok, None)
    data, problem, _ = read(b"a" * 1000 + b"\r\n.\r\n", piece=100)
    assert data == b"" and problem is not None and problem.startswith("500")


def test_client_gone_before_the_end_mark() -> None:
    with pytest.raises(asyncio.IncompleteReadError):
        read(b"half a message\r\n.")


def test_pipelined_transactions_after_the_data_through_the_front() -> None:
    # Two messages on one connection: the second's commands follow the first's end mark.
    first, second = (b"Subject: one\r\n\r\n" + b"line\r\n" * 3000,
                     b"Subject: two\r\n\r\n.leading dot\r\n")
    with sink() as (handler, port), \
            GatewayThread(PassThrough(), f"127.0.0.1:{port}") as gateway:
        with smtplib.SMTP("127.0.0.1", gateway.port, timeout=30) as client:
            client.sendmail("ann@example.org", ["bob@example.net"], first)
            client.sendmail("ann@example.org", ["bob@example.net"], second)
    assert [m.data for m in handler.received] == [first, second]


def _line_by_line(stream: bytes) -> tuple[bytes, bytes]:
    """What aiosmtpd's reading makes of ``stream`` (lines ending in CRLF, a lone dot ends,
    a leading dot goes): the data and what is left."""
    lines, rest = [], stream
    while True:
        end = rest.index(b"\r\n") + 2
        line, rest = rest[:end], rest[end:]
        if line == b".\r\n":
            return b"".join(lines), rest
        lines.append(line[1:] if line.startswith(b".") else line)


def test_same_result_as_line_by_line_reading_on_random_streams() -> None:
    import random

    rng = random.Random(12)
    for _ in range(400):
        body = bytes(rng.choice(b"a.\r\n") for _ in range(rng.randrange(0, 40)))
        stream = body + b"\r\n.\r\nNOOP\r\n"
        expected, left = _line_by_line(stream)
        got = read(stream, piece=rng.randrange(0, 9), reader_limit=rng.choice([8, 16, 64]))
        assert got == (expected, None, left), stream


def test_line_limit_on_random_streams_as_line_by_line() -> None:
    import random

    async def run(stream: bytes, limit: int) -> tuple[bytes, str | None]:
        reader = asyncio.StreamReader(limit=64)
        reader.feed_data(stream)
        reader.feed_eof()
        return await _read_data(reader, None, limit)

    rng = random.Random(34)
    for _ in range(400):
        body = bytes(rng.choice(b"aa.\r\n") for _ in range(rng.randrange(0, 60)))
        stream = body + b"\r\n.\r\n"
        limit = rng.randrange(3, 12)
        expected, _ = _line_by_line(stream)
        # the lines as sent (stuffing dots included) up to the first lone dot
        lines = (b"\r\n" + stream).split(b"\r\n")[1:]
        lines = lines[:lines.index(b".")]
        too_long = any(len(line) + 2 > limit for line in lines)
        data, problem = asyncio.run(run(stream, limit))
        if too_long:
            assert data == b"" and problem is not None and problem.startswith("500"), stream
        else:
            assert (data, problem) == (expected, None), stream


def test_a_message_of_empty_lines_is_read_without_a_list_of_lines() -> None:
    import tracemalloc

    stream = b"\r\n" * 2_000_000 + b".\r\n"  # 4 MB
    tracemalloc.start()
    try:
        data, problem, _ = read(stream, size_limit=None, reader_limit=1 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert problem is None and data == b"\r\n" * 2_000_000
    assert peak < 4 * len(stream)
