"""Postfix -> gateway -> Postfix -> sink, with a real Postfix (tests/postfix.py), swaks and
smtp-source: the no-loss contract as Postfix sees it."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from gwout_kit import PASS, harvest
from loopback import TcpRelay, free_port, wait_for_port
from pki import PKI
from postfix import Postfix, require_postfix, swaks
from smtpkit import GatewayThread, Scripted, SinkHandler, gateway_config, sink
from sqlalchemy import text

from smimekit import api
from smimekit.config import GatewayConfig, PolicyConfig
from smimekit.directory.harvest import HarvestedSource
from smimekit.directory.resolver import Resolver
from smimekit.gateway.journal import Journal, StoreJournal
from smimekit.gateway.keys import StoreHeldKeys
from smimekit.gateway.model import Processor
from smimekit.gateway.passthrough import PassThrough
from smimekit.gateway.pipeline import build_pipeline
from smimekit.gateway.server import Limits
from smimekit.store import Store

pytestmark = [pytest.mark.interop, pytest.mark.slow]

ANN, BOB, CAROL = "ann@example.org", "bob@example.net", "carol@example.net"


@dataclass
class MailSystem:
    postfix: Postfix
    sink: SinkHandler
    relay: TcpRelay
    """Between the gateway and Postfix's re-injection port: cut it to take the next hop
    down."""
    gateway: GatewayThread

    def send(self, to: list[str], subject: str = "test", sender: str = ANN) -> None:
        sent = swaks(self.postfix.smtpd_port, sender=sender, to=to, subject=subject)
        assert sent.returncode == 0, sent.stdout + sent.stderr

    def arrived(self, count: int) -> None:
        self.postfix.wait(lambda: len(self.sink.received) >= count,
                          f"{count} message(s) at the sink")

    def settled(self) -> None:
        """Postfix holds nothing any more."""
        self.postfix.wait(lambda: not self.postfix.queued(), "an empty Postfix queue")


Start = Callable[..., MailSystem]


@pytest.fixture
def mail_system(tmp_path: Path) -> Iterator[Start]:
    require_postfix()
    with ExitStack() as stack:
        def start(processor: Processor, journal: Journal | None = None,
                  limits: Limits | None = None) -> MailSystem:
            handler, sink_port = stack.enter_context(sink())
            postfix = Postfix(tmp_path / "postfix", sink_port=sink_port)
            relay = TcpRelay(("127.0.0.1", postfix.reinject_port))
            stack.callback(relay.cut)
            gateway = stack.enter_context(
                GatewayThread(processor, f"127.0.0.1:{relay.port}", journal=journal,
                              limits=limits))
            postfix.start(gateway.port)
            stack.callback(postfix.stop)
            return MailSystem(postfix, handler, relay, gateway)

        yield start


def test_mail_passes_through_the_gateway_once(mail_system: Start) -> None:
    processor = Scripted()
    system = mail_system(processor)
    system.send([BOB, CAROL], subject="through the gateway")
    system.arrived(1)
    system.settled()
    [got] = system.sink.received
    assert got.mail_from == ANN and sorted(got.recipients) == [BOB, CAROL]
    assert got.message()["Subject"] == "through the gateway"
    assert processor.calls == 1  # the re-injected copy is not filtered again
    assert "status=sent" in system.postfix.log()


def test_next_hop_down_keeps_the_message_queued_until_it_is_back(mail_system: Start) -> None:
    system = mail_system(PassThrough())
    system.relay.cut()
    system.send([BOB], subject="held")
    system.postfix.wait(lambda: "451 4.3.0" in system.postfix.log() and system.postfix.queued(),
                        "Postfix to defer the message on the gateway's 4xx")
    assert system.sink.received == []
    system.relay.restore()
    system.postfix.flush()
    system.arrived(1)
    system.settled()
    assert [m.message()["Subject"] for m in system.sink.received] == ["held"]


def test_policy_rejection_bounces_to_the_sender(mail_system: Start) -> None:
    reason = "encryption to reject@example.net is required and no certificate is known"
    system = mail_system(Scripted(reject={"reject@example.net": reason}))
    system.send(["reject@example.net"], subject="refused")
    system.arrived(1)
    system.settled()
    [bounce] = system.sink.received
    assert bounce.mail_from == "" and bounce.recipients == (ANN,)
    text = " ".join(bounce.data.decode(errors="replace").split())
    assert f"said: 554 5.7.1 {reason}" in text  # Postfix's bounce quotes the gateway's reply
    assert bounce.message().get_content_type() == "multipart/report"


def test_partial_refusal_sends_the_rest_and_a_dsn(mail_system: Start) -> None:
    system = mail_system(Scripted(refuse={CAROL: "the policy bounces mail to carol@example.net:"
                                                 " no certificate"}))
    system.send([BOB, CAROL], subject="partly")
    system.arrived(2)
    system.settled()
    [to_bob] = system.sink.to(BOB)
    assert to_bob.recipients == (BOB,) and to_bob.message()["Subject"] == "partly"
    [dsn] = system.sink.to(ANN)
    assert dsn.mail_from == "" and b"Final-Recipient: rfc822; carol@example.net" in dsn.data
    assert system.sink.to(CAROL) == []


def test_message_over_the_gateways_size_limit_bounces(mail_system: Start) -> None:
    system = mail_system(PassThrough(), limits=Limits(max_message_size=20_000))
    sent = swaks(system.postfix.smtpd_port, sender=ANN, to=[BOB], subject="too big",
                 body="y" * 70 + "\n" + ("z" * 76 + "\n") * 400)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    system.arrived(1)
    system.settled()
    [bounce] = system.sink.received
    assert bounce.mail_from == "" and bounce.recipients == (ANN,)
    # Postfix reads the gateway's SIZE announcement and bounces without sending the data
    assert "exceeds size limit 20000 of server" in " ".join(
        bounce.data.decode(errors="replace").split())
    assert system.sink.to(BOB) == []


def test_recipients_past_the_gateways_limit_arrive_in_later_transactions(
        mail_system: Start) -> None:
    processor = Scripted()
    system = mail_system(processor, limits=Limits(max_recipients=2))
    recipients = [f"user{i}@example.net" for i in range(5)]
    system.send(recipients, subject="many")
    system.postfix.wait(lambda: sum(len(m.recipients) for m in system.sink.received) == 5,
                        "every recipient at the sink")
    system.settled()
    delivered = sorted(r for m in system.sink.received for r in m.recipients)
    assert delivered == recipients  # each once
    assert processor.calls >= 3 and all(len(m.recipients) <= 2 for m in system.sink.received)


def test_journal_skips_the_delivered_group_when_postfix_retries(mail_system: Start,
                                                                tmp_path: Path) -> None:
    store = Store.open(None, tmp_path / "data")
    try:
        system = mail_system(Scripted(split=True), StoreJournal(store, "node-1"))
        system.postfix.defer_file.write_text(f"{CAROL} 450 4.2.0 mailbox busy\n")
        system.postfix.reload()
        system.send([BOB, CAROL], subject="twice?")
        system.postfix.wait(lambda: "deferred carol@example.net" in system.postfix.log(),
                            "the gateway's 4xx for carol")
        # Bob's copy went back into Postfix before the 4xx: wait until Postfix delivered it
        # (under load it may still be queued when the gateway's reply is logged)
        system.arrived(1)
        assert [m.recipients for m in system.sink.received] == [(BOB,)]
        system.postfix.defer_file.write_text("")
        system.postfix.reload()
        system.postfix.flush()
        system.arrived(2)
        system.settled()
        assert sorted(m.recipients for m in system.sink.received) == [(BOB,), (CAROL,)]
    finally:
        store.close()


def test_smtp_source_load_arrives_exactly_once(mail_system: Start) -> None:
    if shutil.which("smtp-source") is None:
        pytest.skip("smtp-source is not installed (make peers)")
    system = mail_system(PassThrough())
    count = 40
    subprocess.run(["smtp-source", "-c", "-m", str(count), "-s", "4", "-l", "2000",
                    "-f", ANN, "-t", BOB, f"127.0.0.1:{system.postfix.smtpd_port}"],
                   capture_output=True, timeout=120, check=True)
    system.arrived(count)
    system.settled()
    hashes = {m.sha256 for m in system.sink.received}
    assert len(system.sink.received) == count == len(hashes)


def test_gateway_process_down_and_back(tmp_path: Path) -> None:
    """``smimekit gateway serve`` as Postfix's content filter: stopped, Postfix keeps the mail;
    started again, the mail arrives once."""
    require_postfix()
    data_dir = tmp_path / "data"
    Store.open(None, data_dir).close()
    config = gateway_config(tmp_path)
    gateway_port = free_port()
    with ExitStack() as stack:
        handler, sink_port = stack.enter_context(sink())
        postfix = Postfix(tmp_path / "postfix", sink_port=sink_port)
        command = [sys.executable, "-m", "smimekit.cli.main", "--data-dir", str(data_dir),
                   "--config", str(config), "gateway", "serve",
                   "--listen", f"127.0.0.1:{gateway_port}",
                   "--next-hop", f"127.0.0.1:{postfix.reinject_port}", "--grace", "5"]

        def start_gateway() -> subprocess.Popen[bytes]:
            process = subprocess.Popen(command, stderr=subprocess.PIPE)
            stack.callback(_stop, process)
            wait_for_port(gateway_port, process, "gateway serve")
            return process

        postfix.start(gateway_port)
        stack.callback(postfix.stop)
        _stop(start_gateway())
        swaks(postfix.smtpd_port, sender=ANN, to=[BOB], subject="while down")
        postfix.wait(lambda: "status=deferred" in postfix.log() and postfix.queued(),
                     "Postfix to defer the message while the gateway is down")
        assert handler.received == []
        start_gateway()
        postfix.flush()
        postfix.wait(lambda: len(handler.received) == 1, "the message at the sink")
        postfix.wait(lambda: not postfix.queued(), "an empty Postfix queue")
    assert [m.message()["Subject"] for m in handler.received] == ["while down"]
    with Store.open(None, data_dir, create=False) as store:
        with store.read() as conn:
            rows = conn.execute(text("SELECT delivery_key FROM gateway_deliveries")).all()
    assert [r[0] for r in rows] == ["0:bob@example.net"]


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)


def test_policy_pipeline_through_postfix(mail_system: Start, pki: PKI, tmp_path: Path) -> None:
    """The issue's case end to end: one message from alice to a partner (encrypt always), a
    colleague (internal) and a partner address without a certificate (bounce)."""
    alice = pki.person("alice")
    partner = pki.person("partner", "p256", email="partner@partner.example")
    gateway = GatewayConfig(internal_domains=("example.org",),
                            domains={"partner.example": PolicyConfig(encrypt="always")})
    with Store.open(None, tmp_path / "data") as store:
        held = StoreHeldKeys.open(store, PASS, create=True)
        held.add(alice.key, alice.cert, (pki.inter,))
        harvest(store, pki, partner)
        resolver = Resolver([HarvestedSource(store)], trust=[pki.root], cache=None)
        pipeline = build_pipeline(gateway, store, held, resolver, trust=[pki.root],
                                  hostname="gw.test")
        system = mail_system(pipeline, StoreJournal(store, "node-1"))
        system.send([partner.email, "bob@example.org", "nocert@partner.example"],
                    subject="merger", sender=alice.email)
        system.arrived(3)
        system.settled()
        [to_partner] = system.sink.to(partner.email)
        assert to_partner.recipients == (partner.email,)
        opened = api.decrypt(to_partner.data, partner.key, partner.cert).content
        assert b"Hello from swaks." in opened
        [to_bob] = system.sink.to("bob@example.org")
        assert b"Hello from swaks." in to_bob.data  # internal: as sent
        [dsn] = system.sink.to(alice.email)
        assert dsn.mail_from == "" and b"nocert@partner.example" in dsn.data
        actions = sorted((e.action, e.subject) for e in store.audit_entries()
                         if e.action.startswith("gateway."))
        assert actions == [("gateway.bounced", "nocert@partner.example"),
                           ("gateway.passed", "bob@example.org"),
                           ("gateway.signed+encrypted", partner.email)]
