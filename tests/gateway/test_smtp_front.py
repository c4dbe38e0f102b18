"""The gateway's SMTP front without Postfix: the no-loss replies, the DSN for refused
recipients, the limits and the journal, with a saving sink as the next hop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import smtplib
import socket
import threading
import time
import tracemalloc
from collections.abc import Iterator, Sequence

import pytest
from smtpkit import GatewayThread, Scripted, SinkHandler, message, sink

from smimekit.errors import GatewayError, StoreError
from smimekit.gateway.journal import MemoryJournal, legacy_message_key, message_key
from smimekit.gateway.model import Envelope, Outcome
from smimekit.gateway.passthrough import PassThrough
from smimekit.gateway.server import Limits

ANN, BOB, CAROL = "ann@example.org", "bob@example.net", "carol@example.net"


def send(port: int, sender: str, recipients: list[str], data: bytes,
         ) -> tuple[int, str, dict[str, tuple[int, bytes]]]:
    """One SMTP transaction: the reply to DATA and the refused recipients."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.test")
        code, text = client.mail(sender)
        assert code == 250, text
        refused = {}
        for r in recipients:
            rcode, rtext = client.rcpt(r)
            if rcode != 250:
                refused[r] = (rcode, rtext)
        if len(refused) == len(recipients):
            return 0, "", refused
        code, reply = client.data(data)
        return code, reply.decode(), refused


@pytest.fixture
def next_hop() -> Iterator[tuple[SinkHandler, int]]:
    with sink() as found:
        yield found


def test_passed_unchanged_and_250_only_with_the_next_hops_acceptance(next_hop) -> None:
    handler, port = next_hop
    data = message()
    with GatewayThread(PassThrough(), f"127.0.0.1:{port}") as gateway:
        code, reply, _ = send(gateway.port, ANN, [BOB, CAROL], data)
    assert code == 250 and reply == "2.0.0 Ok: queued as SINK1"  # its status said once
    [got] = handler.received
    assert (got.mail_from, got.recipients, got.data) == (ANN, (BOB, CAROL), data)


def test_next_hop_down_is_4xx_and_the_retry_delivers_once() -> None:
    data = message("retry")
    with sink() as (handler, port):
        pass  # the port is free again: nobody listens there
    journal = MemoryJournal()
    with GatewayThread(PassThrough(), f"127.0.0.1:{port}", journal=journal) as gateway:
        code, reply, _ = send(gateway.port, ANN, [BOB], data)
        assert code == 451 and "next hop" in reply and "tries again" in reply
        assert journal.rows == {}
    with sink() as (handler, port), GatewayThread(
            PassThrough(), f"127.0.0.1:{port}", journal=journal) as gateway:
        assert send(gateway.port, ANN, [BOB], data)[0] == 250
        assert send(gateway.port, ANN, [BOB], data)[0] == 250  # Postfix retrying once more
    assert len(handler.received) == 1 and handler.received[0].data == data


def test_permanent_policy_error_is_5xx_with_the_reason(next_hop) -> None:
    handler, port = next_hop
    refusing = Scripted(error=GatewayError("no certificate for bob@example.net and the"
                                           " policy forbids clear text", permanent=True))
    with GatewayThread(refusing, f"127.0.0.1:{port}") as gateway:
        code, reply, _ = send(gateway.port, ANN, [BOB], message())
    assert code == 554 and reply.startswith("5.7.1 no certificate for bob@example.net")
    assert handler.received == []


@pytest.mark.parametrize("error", [GatewayError("the key store is locked"),
                                   StoreError("cannot reach the database"),
                                   RuntimeError("secret detail\r\n250 fake")])
def test_temporary_or_unexpected_failure_is_4xx(next_hop, error: BaseException) -> None:
    handler, port = next_hop
    with GatewayThread(Scripted(error=error), f"127.0.0.1:{port}") as gateway:
        code, reply, _ = send(gateway.port, ANN, [BOB], message())
    assert code == 451 and handler.received == []
    if isinstance(error, RuntimeError):  # a bug: said plainly, without its text
        assert "internal error" in reply and "secret" not in reply


def test_partial_refusal_delivers_the_rest_and_sends_a_dsn(next_hop) -> None:
    handler, port = next_hop
    data = message("quarterly figures")
    processor = Scripted(refuse={CAROL: "no certificate for carol@example.net and the"
                                        " policy (domain example.net) says bounce"})
    with GatewayThread(processor, f"127.0.0.1:{port}") as gateway:
        code, _, _ = send(gateway.port, ANN, [BOB, CAROL], data)
    assert code == 250
    [to_bob] = handler.to(BOB)
    assert to_bob.data == data and CAROL not in to_bob.recipients
    [dsn] = handler.to(ANN)
    assert dsn.mail_from == ""  # the null reverse-path: a DSN never bounces
    report = dsn.message()
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    human, status, headers = report.get_payload()
    assert "carol@example.net: no certificate" in human.get_content()
    fields = status.get_payload()[1]
    assert fields["Final-Recipient"] == "rfc822; carol@example.net"
    assert (fields["Action"], fields["Status"]) == ("failed", "5.7.1")
    assert "policy (domain example.net) says bounce" in fields["Diagnostic-Code"]
    assert headers.get_content_type() == "text/rfc822-headers"
    assert b"Subject: quarterly figures" in dsn.data and b"Hello." not in dsn.data


def test_every_recipient_refused_is_5xx_without_a_dsn(next_hop) -> None:
    handler, port = next_hop
    processor = Scripted(refuse={BOB: "bounce: no certificate", CAROL: "bounce: revoked"})
    with GatewayThread(processor, f"127.0.0.1:{port}") as gateway:
        code, reply, _ = send(gateway.port, ANN, [BOB, CAROL], message())
    assert code == 550 and BOB in reply and "revoked" in reply
    assert handler.received == []


def test_a_bounce_gets_no_dsn(next_hop) -> None:
    handler, port = next_hop
    processor = Scripted(refuse={CAROL: "bounce: no certificate"})
    with GatewayThread(processor, f"127.0.0.1:{port}") as gateway:
        code, _, _ = send(gateway.port, "<>", [BOB, CAROL], message())
    assert code == 250
    assert [m.recipients for m in handler.received] == [(BOB,)]
    assert handler.received[0].mail_from == ""


def test_journal_skips_what_the_next_hop_took_before_a_4xx(next_hop) -> None:
    handler, port = next_hop
    handler.defer.add(CAROL)
    data = message("journal")
    journal = MemoryJournal()
    processor = Scripted(split=True)
    with GatewayThread(processor, f"127.0.0.1:{port}", journal=journal) as gateway:
        code, reply, _ = send(gateway.port, ANN, [BOB, CAROL], data)
        assert code == 451 and "deferred carol@example.net" in reply
        assert [m.recipients for m in handler.received] == [(BOB,)]
        key = message_key(Envelope(ANN, (BOB, CAROL), data))
        assert set(journal.rows[key]) == {"0:bob@example.net"}
        handler.defer.clear()
        assert send(gateway.port, ANN, [BOB, CAROL], data)[0] == 250
        assert send(gateway.port, ANN, [BOB, CAROL], data)[0] == 250
    assert processor.calls == 3
    assert sorted(m.recipients for m in handler.received) == [(BOB,), (CAROL,)]


def test_before_the_queue_nothing_is_journalled(next_hop) -> None:
    """Before the queue every transaction has a journal key of its own that nothing will
    look up: no rows are written for it (nor for its DSN)."""
    handler, port = next_hop
    handler.refuse.add(CAROL)
    journal = MemoryJournal()
    with GatewayThread(PassThrough(), f"127.0.0.1:{port}", journal=journal,
                       attach="before-queue") as gateway:
        code, _, _ = send(gateway.port, ANN, [BOB, CAROL], message("bq"))
        assert code == 250
    assert journal.rows == {}
    assert [m.recipients for m in handler.received] == [(BOB,), (ANN,)]  # the copy, the DSN


class _Threads:
    """A processor that notes which threads it ran on and how many at once."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.now = self.most = 0
        self.lock = threading.Lock()

    def process(self, envelope: Envelope) -> Outcome:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
            self.names.add(threading.current_thread().name)
        time.sleep(0.05)
        with self.lock:
            self.now -= 1
        return PassThrough().process(envelope)


@pytest.mark.parametrize("threads", [1, 2])
def test_messages_are_worked_on_by_the_processing_threads_only(next_hop, threads) -> None:
    handler, port = next_hop
    processor = _Threads()
    with GatewayThread(processor, f"127.0.0.1:{port}", threads=threads) as gateway:
        with concurrent.futures.ThreadPoolExecutor(6) as clients:
            codes = list(clients.map(
                lambda i: send(gateway.port, ANN, [BOB], message(f"t{i}"))[0], range(12)))
    assert codes == [250] * 12 and len(handler.received) == 12
    assert processor.most == threads
    assert all(n.startswith("gateway-work") for n in processor.names), processor.names


def test_a_retry_with_the_recipients_regrouped_delivers_nothing_twice(next_hop) -> None:
    # review 12 item 12: Postfix may hand the recipients over in other groups on a retry
    # (a recipient limit, some deferred): the journal knows the message, not the grouping
    handler, port = next_hop
    handler.defer.add(CAROL)
    data = message("regrouped")
    journal = MemoryJournal()
    with GatewayThread(Scripted(split=True), f"127.0.0.1:{port}", journal=journal) as gateway:
        assert send(gateway.port, ANN, [BOB, CAROL], data)[0] == 451
        assert [m.recipients for m in handler.received] == [(BOB,)]
        handler.defer.clear()
        for group in ([CAROL], [BOB], [CAROL, BOB]):  # apart, then in another order
            code, reply, _ = send(gateway.port, ANN, group, data)
            assert code == 250, reply
    assert sorted(m.recipients for m in handler.received) == [(BOB,), (CAROL,)]
    assert set(journal.rows) == {message_key(Envelope(ANN, (), data))}


def test_rows_journalled_under_the_old_key_are_still_found(next_hop) -> None:
    # the upgrade: a message half delivered by a gateway that keyed on the recipient list
    # is retried (same grouping) by this one: what the old rows hold is not sent again
    handler, port = next_hop
    data = message("upgraded")
    journal = MemoryJournal()
    journal.record(legacy_message_key(Envelope(ANN, (BOB, CAROL), data)),
                   ["0:bob@example.net"], "250 2.0.0 Ok: queued as OLD")
    with GatewayThread(Scripted(split=True), f"127.0.0.1:{port}", journal=journal) as gateway:
        assert send(gateway.port, ANN, [BOB, CAROL], data)[0] == 250
    assert [m.recipients for m in handler.received] == [(CAROL,)]


def test_recipient_refused_by_the_next_hop_gets_a_dsn(next_hop) -> None:
    handler, port = next_hop
    handler.refuse.add(CAROL)
    with GatewayThread(PassThrough(), f"127.0.0.1:{port}") as gateway:
        code, _, _ = send(gateway.port, ANN, [BOB, CAROL], message())
    assert code == 250
    [dsn] = handler.to(ANN)
    assert b"550 5.1.1 <carol@example.net>: Recipient address rejected" in dsn.data
    assert b"Status: 5.1.1" in dsn.data


def test_next_hop_5xx_to_the_data_is_5xx(next_hop) -> None:
    handler, port = next_hop
    handler.data_reply = "554 5.3.4 Message too big for system"
    with GatewayThread(PassThrough(), f"127.0.0.1:{port}") as gateway:
        code, reply, _ = send(gateway.port, ANN, [BOB], message())
    assert code == 554 and "5.3.4 Message too big" in reply


def test_size_limit_announced_and_enforced(next_hop) -> None:
    handler, port = next_hop
    limits = Limits(max_message_size=10_000, max_recipients=1000)
    big = message("big", "x" * 70 + "\r\n") + b"y" * 76 * 200
    big = b"\r\n".join(big[i:i + 76] for i in range(0, len(big), 76)) + b"\r\n"
    with GatewayThread(PassThrough(), f"127.0.0.1:{port}", limits=limits) as gateway:
        with smtplib.SMTP("127.0.0.1", gateway.port, timeout=30) as client:
            client.ehlo("client.test")
            assert client.has_extn("size") and client.esmtp_features["size"] == "10000"
            code, _ = client.mail(ANN, ["SIZE=20000"])
            assert code == 552
        code, _, _ = send(gateway.port, ANN, [BOB], big)
    assert code == 552 and handler.received == []


def test_recipients_past_the_limit_are_452(next_hop) -> None:
    handler, port = next_hop
    recipients = [f"user{i}@example.net" for i in range(5)]
    with GatewayThread(PassThrough(), f"127.0.0.1:{port}",
                       limits=Limits(max_recipients=3)) as gateway:
        code, _, refused = send(gateway.port, ANN, recipients, message())
    assert code == 250
    assert set(refused) == set(recipients[3:]) and {c for c, _ in refused.values()} == {452}
    assert handler.received[0].recipients == tuple(recipients[:3])


def test_line_over_1000_octets_is_refused(next_hop) -> None:
    handler, port = next_hop
    with GatewayThread(PassThrough(), f"127.0.0.1:{port}") as gateway:
        code, _, _ = send(gateway.port, ANN, [BOB], message("long", "z" * 1200 + "\r\n"))
    assert code == 500 and handler.received == []


class BrokenJournal(MemoryJournal):
    """The database behind the journal is down for reading, writing, or both."""

    def __init__(self, *, read: bool = True, write: bool = True) -> None:
        super().__init__()
        self.read_fails, self.write_fails = not read, not write

    def delivered(self, message_key: str, *older: str) -> frozenset[str]:
        if self.read_fails:
            raise StoreError("cannot reach the database at 127.0.0.1:5432")
        return super().delivered(message_key, *older)

    def record(self, message_key: str, delivery_keys: Sequence[str], reply: str) -> None:
        if self.write_fails:
            raise StoreError("cannot reach the database at 127.0.0.1:5432")
        super().record(message_key, delivery_keys, reply)


def test_journal_unreadable_is_4xx_and_nothing_passes(next_hop) -> None:
    handler, port = next_hop
    with GatewayThread(PassThrough(), f"127.0.0.1:{port}",
                       journal=BrokenJournal(read=False)) as gateway:
        code, reply, _ = send(gateway.port, ANN, [BOB], message())
    assert code == 451 and "journal cannot be read" in reply and "5432" not in reply
    assert handler.received == []


def test_journal_unwritable_after_delivery_is_still_250(next_hop) -> None:
    handler, port = next_hop
    with GatewayThread(PassThrough(), f"127.0.0.1:{port}",
                       journal=BrokenJournal(write=False)) as gateway:
        code, _, _ = send(gateway.port, ANN, [BOB], message())
    assert code == 250 and len(handler.received) == 1  # delivered: no retry, no duplicate


def test_utf8_addresses_and_8bit_body_pass_unchanged(next_hop) -> None:
    handler, port = next_hop
    sender, recipient = "j\u00f6rg@example.org", "\u00e5sa@example.net"
    data = ("From: j\u00f6rg@example.org\r\nTo: \u00e5sa@example.net\r\nSubject: gr\u00fc\u00dfe"
            "\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\nGr\u00fc\u00dfe.\r\n").encode()
    with GatewayThread(PassThrough(), f"127.0.0.1:{port}") as gateway, \
            smtplib.SMTP("127.0.0.1", gateway.port, timeout=30) as client:
        assert client.sendmail(sender, [recipient], data,
                               mail_options=["SMTPUTF8", "BODY=8BITMIME"]) == {}
    [got] = handler.received
    assert (got.mail_from, got.recipients, got.data) == (sender, (recipient,), data)


def test_a_huge_message_is_refused_without_being_held(next_hop) -> None:
    handler, port = next_hop
    limits = Limits(max_message_size=1_000_000, max_recipients=10)
    line = b"x" * 998 + b"\r\n"
    with GatewayThread(PassThrough(), f"127.0.0.1:{port}", limits=limits) as gateway:
        tracemalloc.start()
        try:
            with smtplib.SMTP("127.0.0.1", gateway.port, timeout=60) as client:
                client.ehlo("client.test")
                client.mail(ANN)
                client.rcpt(BOB)
                client.putcmd("data")
                assert client.getreply()[0] == 354
                for _ in range(20):  # 20 MB, a megabyte at a time
                    client.send(line * 1000)
                client.send(b".\r\n")
                code, _ = client.getreply()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert code == 552 and handler.received == []
    assert peak < 6_000_000  # the sending side's megabyte and the limit, not 20 MB


class Slow(PassThrough):
    def process(self, envelope: Envelope) -> Outcome:
        time.sleep(0.5)
        return super().process(envelope)


def test_client_gone_mid_message_still_journals_so_the_retry_adds_nothing(next_hop) -> None:
    handler, port = next_hop
    data = message("hung up")
    journal = MemoryJournal()
    with GatewayThread(Slow(), f"127.0.0.1:{port}", journal=journal) as gateway:
        client = smtplib.SMTP("127.0.0.1", gateway.port, timeout=30)
        client.ehlo("client.test")
        client.mail(ANN)
        client.rcpt(BOB)
        client.putcmd("data")
        assert client.getreply()[0] == 354
        client.send(data + b".\r\n")
        client.close()  # Postfix's timeout: no reply read, the message stays in its queue
        deadline = time.monotonic() + 10
        while not journal.rows and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(handler.received) == 1 and journal.rows
        assert send(gateway.port, ANN, [BOB], data)[0] == 250  # Postfix's retry
    assert len(handler.received) == 1


def test_after_a_dsn_the_rest_is_reported_by_dsn_not_by_a_bounce(next_hop) -> None:
    handler, port = next_hop
    handler.defer.add(BOB)
    data = message("reported once")
    processor = Scripted(refuse={CAROL: "bounce: no certificate"})
    with GatewayThread(processor, f"127.0.0.1:{port}") as gateway:
        assert send(gateway.port, ANN, [BOB, CAROL], data)[0] == 451  # bob deferred
        handler.defer.clear()
        handler.refuse.add(BOB)  # now refused for good
        code, _, _ = send(gateway.port, ANN, [BOB, CAROL], data)
    assert code == 250  # not a 5xx: Postfix would bounce carol a second time
    first, second = handler.to(ANN)
    assert b"Final-Recipient: rfc822; carol@example.net" in first.data
    assert b"Final-Recipient: rfc822; bob@example.net" in second.data
    assert b"carol@example.net" not in second.data.split(b"message/delivery-status")[1]


@pytest.mark.parametrize("arg", [
    "", "<>", "<ann@example.org>", "ann@example.org", "<ann@example.org> SIZE=100",
    " <ann@example.org>", "<\"odd person\"@example.org>", "<@relay.example:ann@example.org>",
    "<ann@[127.0.0.1]>", "<ann@example.org", "ann@", "<<ann@example.org>>", "@", "<ann>",
    "<ännä@bücher.example> SMTPUTF8", "<" + "x" * 70 + "@example.org>", "<a b@example.org>",
    "<ann@example.org>\x00", "(comment) ann@example.org", "<ann@example.org> BODY=8BITMIME",
])
@pytest.mark.parametrize("limit", [0, 64])
def test_address_parsing_is_aiosmtpds_own(arg: str, limit: int) -> None:
    """_BulkDataSMTP._getaddr (without the class aiosmtpd defines at every call) answers as
    aiosmtpd's SMTP._getaddr does."""
    from aiosmtpd.smtp import SMTP

    from smimekit.gateway.server import _BulkDataSMTP

    ours = object.__new__(_BulkDataSMTP)
    theirs = object.__new__(SMTP)
    ours.local_part_limit = theirs.local_part_limit = limit
    try:
        expected = SMTP._getaddr(theirs, arg)
    except IndexError:  # email's parser on "ann@": ours calls it a syntax error
        expected = (None, None)
    assert ours._getaddr(arg) == expected


def test_an_address_that_breaks_emails_parser_is_a_syntax_error(next_hop) -> None:
    with GatewayThread(PassThrough(), f"127.0.0.1:{next_hop[1]}") as gateway, \
            smtplib.SMTP("127.0.0.1", gateway.port, timeout=30) as client:
        client.ehlo("client.test")
        for command in ("MAIL FROM:<ann@>", "MAIL FROM: ann@"):
            assert client.docmd(command) == (553, b"5.1.3 Error: malformed address")
        assert client.mail(ANN)[0] == 250  # the session goes on


@pytest.mark.parametrize("bound_by", ["asyncio", "the parent of --workers"])
def test_replies_go_out_at_once_whoever_bound_the_socket(next_hop, bound_by: str) -> None:
    """TCP_NODELAY on every connection: asyncio sets it only on sockets it made itself with
    proto IPPROTO_TCP; a socket bound by ``gateway serve --workers`` before the fork is
    not, and Nagle's algorithm held multi-part replies until the client's delayed ACK."""
    from smimekit.gateway import workers

    sock = workers.bind("127.0.0.1:0") if bound_by != "asyncio" else None
    with GatewayThread(PassThrough(), f"127.0.0.1:{next_hop[1]}", sock=sock) as gateway, \
            smtplib.SMTP("127.0.0.1", gateway.port, timeout=30) as client:
        client.ehlo("client.test")
        [protocol] = list(gateway.server._connections)
        server_side = protocol.transport.get_extra_info("socket")
        assert server_side.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_stop_waits_for_the_work_on_the_processing_threads_and_takes_no_more(
        next_hop) -> None:
    """Past the grace, stop() still lets the message being processed finish (bounded) before
    it returns, so that ``gateway serve`` does not close the store under it; new work is
    refused with a 4xx reason."""
    entered, release = threading.Event(), threading.Event()

    class Slow:
        finished = False

        def process(self, envelope: Envelope) -> Outcome:
            entered.set()
            release.wait(10)
            time.sleep(0.2)
            Slow.finished = True
            return PassThrough().process(envelope)

    gateway = GatewayThread(Slow(), f"127.0.0.1:{next_hop[1]}")
    with gateway, concurrent.futures.ThreadPoolExecutor(1) as client:
        sending = client.submit(send, gateway.port, ANN, [BOB], message("slow"))
        assert entered.wait(10)
        stopping = asyncio.run_coroutine_threadsafe(gateway.server.stop(), gateway.loop)
        release.set()
        stopping.result(20)
        assert Slow.finished  # stop returned only once the work had ended
        with pytest.raises(GatewayError, match="stopping"):
            asyncio.run_coroutine_threadsafe(
                gateway.handler._in_pool(lambda: None), gateway.loop).result(10)
        with pytest.raises((smtplib.SMTPException, OSError)):
            sending.result(20)  # cut off: no 250, Postfix would try again
