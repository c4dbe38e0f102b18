"""Faults with a real Postfix in front of real gateway processes (``smimekit gateway serve``)
on one PostgreSQL store: every message Postfix accepted reaches the sink exactly once.

How it is measured: each message has a unique Message-ID and a body of its own; the sink
(an aiosmtpd server that keeps everything) is tallied by Message-ID, and the SHA-256 of each
copy's body is compared with the one sent. A message Postfix refused at submission (4xx/5xx,
e.g. a full spool) was never promised and is left out. The gateway passes mail unchanged here
(no internal_domains: the relay behaviour), so the body hashes must match exactly.

The one duplicate SMTP itself allows (RFC 1047): the next hop took a message and its 250
never reached the gateway. :func:`test_kill_9_after_the_next_hop_took_the_message` makes it
happen on purpose and shows it is the only one.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from gwhome import GatewayHome, make_home
from gwnodes import GateRelay, Node, body_for, pg_store, send, tally
from loopback import TcpRelay
from pki import PKI
from postfix import Postfix, require_postfix
from smtpkit import SinkHandler, sink

from smimekit import api

pytestmark = [pytest.mark.interop, pytest.mark.slow]

ANN, BOB = "ann@example.org", "bob@example.net"


@dataclass
class Rig:
    postfix: Postfix
    sink: SinkHandler
    relay: GateRelay
    """Between the gateway and Postfix's re-injection smtpd."""
    node: Node
    database_url: str
    data_dir: Path
    home: GatewayHome | None = None

    def submit(self, prefix: str, count: int, *, size: int = 2000) -> dict[str, str]:
        return send(self.postfix.smtpd_port, [f"{prefix}-{i}@faults.test" for i in range(count)],
                    sender=ANN, to=[BOB], size=size)

    def wait_delivered(self, sent: dict[str, str], timeout: float = 90.0) -> None:
        self.postfix.wait(lambda: set(sent) <= set(tally(self.sink.received)),
                          f"{len(sent)} messages at the sink", timeout)
        self.postfix.wait(lambda: not self.postfix.queued(), "an empty Postfix queue", timeout)

    def copies(self) -> dict[str, list[str]]:
        return tally(self.sink.received)

    def kill(self) -> None:
        """``kill -9`` of the node mid-transaction: the half-sent transaction to the next hop
        dies with its connection."""
        self.node.kill9()
        self.relay.cut()

    def revive(self) -> None:
        """The relay passing everything again, a new node process on the same port, and
        Postfix told to try its deferred mail now."""
        self.relay.stall = None
        self.relay.restore()
        self.node.start()
        self.postfix.flush()

    def wait_answered(self, count: int, timeout: float = 90.0) -> None:
        """Wait until Postfix has logged the gateway's 250 for ``count`` messages.

        At the sink is not yet answered: the gateway may still owe Postfix the 250 for the
        last of them, and a kill in that window is the duplicate SMTP allows
        (:func:`test_kill_9_after_the_next_hop_took_the_message`). Call this before a kill
        that must cost no duplicate."""
        doors = [f"relay=127.0.0.1[127.0.0.1]:{port}, "
                 for port in (self.node.port, self.node.submission_port)]
        self.postfix.wait(lambda: sum(any(door in line for door in doors)
                                      and "status=sent" in line
                                      for line in self.postfix.log().splitlines()) >= count,
                          f"the gateway's 250 for {count} message(s)", timeout)


def assert_exactly_once(copies: dict[str, list[str]], sent: dict[str, str]) -> None:
    missing = sorted(set(sent) - set(copies))
    twice = sorted(i for i in sent if len(copies.get(i, [])) > 1)
    altered = sorted(i for i in sent if i in copies and set(copies[i]) != {sent[i]})
    assert (missing, twice, altered) == ([], [], []), "lost, duplicated, altered"


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    require_postfix()
    with ExitStack() as stack:
        yield _rig(stack, tmp_path)


def _rig(stack: ExitStack, tmp_path: Path, *, database_port: int | None = None,
         spool: str | None = None, pki: PKI | None = None) -> Rig:
    """Sink, Postfix, relay, one node on a fresh PostgreSQL store; with ``pki``, the node
    runs the real pipeline (tests/gwhome.py) instead of passing mail unchanged."""
    data_dir = tmp_path / "home" / "data" if pki else tmp_path / "data"
    data_dir.mkdir(parents=True)
    url = stack.enter_context(pg_store(data_dir, **(
        {"port": database_port} if database_port else {})))
    home = make_home(tmp_path / "home", pki, database_url=url) if pki else None
    handler, sink_port = stack.enter_context(sink())
    postfix = Postfix(tmp_path / "postfix", sink_port=sink_port)
    if spool is not None:
        queue = tmp_path / "postfix" / "queue"
        queue.mkdir(parents=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={spool},mode=0755", "tmpfs",
                        str(queue)], check=True, capture_output=True)
        stack.callback(subprocess.run, ["umount", "-l", str(queue)], check=False)
    relay = GateRelay(("127.0.0.1", postfix.reinject_port))
    stack.callback(relay.cut)
    node = Node("node-1", relay.port, data_dir=data_dir, database_url=url,
                config=home.config if home else None, log_dir=tmp_path)
    postfix.start(node.port, node.submission_port)
    stack.callback(postfix.stop)
    node.start()
    stack.callback(node.stop)
    return Rig(postfix, handler, relay, node, url, data_dir, home)


def test_kill_9_while_handing_over_loses_nothing(rig: Rig) -> None:
    rig.relay.stall = "before"  # the end of DATA never reaches the next hop
    victim = rig.submit("victim", 1)
    assert rig.relay.stalled.wait(30), rig.postfix.log()[-3000:]
    others = rig.submit("other", 9)  # passed on while the victim hangs
    rig.postfix.wait(lambda: set(others) <= set(rig.copies()), "the others at the sink")
    rig.wait_answered(len(others))  # at the sink is not yet answered
    rig.kill()
    assert rig.postfix.queued(), "Postfix must keep the message the gateway never answered"
    assert "victim-0@faults.test" not in rig.copies()
    rig.revive()
    sent = {**victim, **others}
    rig.wait_delivered(sent)
    assert_exactly_once(rig.copies(), sent)


def test_kill_9_after_the_next_hop_took_the_message(rig: Rig) -> None:
    """The window SMTP allows a duplicate in: the next hop has the message, the gateway dies
    before it hears the 250. Postfix hands the message over again; nothing was journalled,
    so it goes out a second time. Measured: that message twice (same body), no other."""
    rig.relay.stall = "after"
    victim = rig.submit("victim", 1)
    assert rig.relay.stalled.wait(30), rig.postfix.log()[-3000:]
    rig.postfix.wait(lambda: "victim-0@faults.test" in rig.copies(), "the first copy")
    rig.kill()
    others = rig.submit("other", 9)  # queued while the gateway is down
    rig.revive()
    sent = {**victim, **others}
    rig.wait_delivered(sent)
    copies = rig.copies()
    assert copies["victim-0@faults.test"] == [victim["victim-0@faults.test"]] * 2
    assert_exactly_once(copies, others)


def test_next_hop_down_and_back(rig: Rig) -> None:
    before = rig.submit("before", 5)
    rig.wait_delivered(before)
    rig.relay.cut()
    during = rig.submit("during", 20)
    rig.postfix.wait(lambda: "451 4.3.0" in rig.postfix.log() and len(rig.postfix.queued()) >= 20,
                     "Postfix to keep every message on the gateway's 4xx")
    assert not set(during) & set(rig.copies())
    rig.relay.restore()
    rig.postfix.flush()
    sent = {**before, **during}
    rig.wait_delivered(sent)
    assert_exactly_once(rig.copies(), sent)


def test_database_down_defers_and_nothing_is_lost(tmp_path: Path) -> None:
    require_postfix()
    with ExitStack() as stack:
        database = TcpRelay(("127.0.0.1", 5432))
        stack.callback(database.cut)
        rig = _rig(stack, tmp_path, database_port=database.port)
        before = rig.submit("before", 5)
        rig.wait_delivered(before)
        database.cut()
        during = rig.submit("during", 10)
        # the relay's decisions are audited before the journal is asked: whichever of the
        # two store reads or writes comes first gives the 4xx
        rig.postfix.wait(lambda: any(reason in rig.postfix.log() for reason in (
            "delivery journal cannot be read", "audit log cannot be written")),
            "the gateway's 4xx for the store")
        assert not set(during) & set(rig.copies()), "nothing passes without the journal"
        database.restore()
        rig.postfix.flush()
        sent = {**before, **during}
        rig.wait_delivered(sent)
        assert_exactly_once(rig.copies(), sent)
        assert "Traceback" not in rig.node.log.read_text()


def test_full_spool_disk_defers_and_nothing_is_lost(tmp_path: Path) -> None:
    """Postfix's queue on a 32 MiB tmpfs. First nearly full (256 KiB left, below Postfix's
    own floor of 1.5 x message_size_limit): Postfix refuses new mail (452, no promise made)
    and the gateway's re-injection is refused the same way, so the gateway answers 4xx and
    Postfix keeps the message. Then full to the last block (ENOSPC: Postfix cannot even write
    its defer logs). Room again: every accepted message arrives once."""
    require_postfix()
    with ExitStack() as stack:
        rig = _rig(stack, tmp_path, spool="32m")
        with (rig.postfix.conf / "main.cf").open("a") as main:
            main.write("service_throttle_time = 2s\n")  # a daemon failing for lack of room
        rig.postfix.reload()                              # is retried soon (default 60 s)
        rig.relay.cut()  # hold the messages in the queue while the disk fills
        queued = rig.submit("queued", 10)
        assert len(queued) == 10
        rig.postfix.wait(lambda: len(rig.postfix.queued()) >= 10, "10 messages queued")
        queue = tmp_path / "postfix" / "queue"
        free = os.statvfs(queue)
        room = free.f_bavail * free.f_frsize - 256 * 1024
        (queue / "filler").write_bytes(bytes(room))
        refused = rig.submit("refused", 3)
        assert refused == {}, "Postfix must refuse mail it has no room for"
        rig.relay.restore()
        rig.postfix.flush()
        rig.postfix.wait(lambda: any(
            "status=deferred" in line and "451 4.3.0" in line
            and "Insufficient system storage" in line
            for line in rig.postfix.log().splitlines()),
            "the gateway's 4xx quoting the re-injection's refusal for lack of room", 60)
        # The last blocks: ENOSPC. Postfix's processes may free a block while dd writes (a
        # temporary file of theirs removed): fill again, a few times at most.
        fillers = [queue / "filler"]
        for n in range(2, 12):
            fillers.append(queue / f"filler{n}")
            subprocess.run(["dd", "if=/dev/zero", f"of={fillers[-1]}", "bs=4k"],
                           capture_output=True, check=False)
            if os.statvfs(queue).f_bavail == 0:
                break
        assert os.statvfs(queue).f_bavail == 0
        rig.postfix.flush()
        time.sleep(3)
        assert not set(queued) & set(rig.copies())
        for filler in fillers:
            filler.unlink()
        rig.postfix.flush()
        rig.wait_delivered(queued, timeout=120)
        assert_exactly_once(rig.copies(), queued)


def test_kill_9_with_the_real_pipeline_delivers_each_message_once_encrypted(
        tmp_path: Path) -> None:
    """The same kill as above with the node signing and encrypting (alice -> partner): a
    copy's bytes differ on every pass, so the count is by Message-ID, and each copy must
    decrypt to the body sent."""
    require_postfix()
    with ExitStack() as stack:
        pki = PKI()
        rig = _rig(stack, tmp_path, pki=pki)
        assert rig.home is not None
        alice, partner = rig.home.alice.email, rig.home.partner.email

        def submit(prefix: str, count: int) -> dict[str, str]:
            return send(rig.postfix.submission_port,  # the trusted door: signed
                        [f"{prefix}-{i}@faults.test" for i in range(count)],
                        sender=alice, to=[partner])

        rig.relay.stall = "before"
        victim = submit("victim", 1)
        assert rig.relay.stalled.wait(60), rig.postfix.log()[-3000:]
        others = submit("other", 4)
        rig.postfix.wait(lambda: set(others) <= set(rig.copies()), "the others", 90)
        rig.wait_answered(len(others))  # else a kill before a 250 may rightly duplicate
        rig.kill()
        rig.revive()
        sent = {**victim, **others}
        rig.wait_delivered(sent)
        copies = rig.copies()
        assert sorted(copies) == sorted(sent) and all(len(copies[i]) == 1 for i in sent)
        for got in rig.sink.received:
            [message_id] = tally([got])
            assert b"application/pkcs7-mime" in got.data.partition(b"\r\n\r\n")[0]
            clear = api.decrypt(got.data, rig.home.partner.key, rig.home.partner.cert).content
            assert body_for(message_id) in clear
