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
from fakeclamd import EICAR
from gwout_kit import pipeline_holding
from loopback import TcpRelay, free_port, wait_for_port
from pki import PKI, Identity
from postfix import Postfix, require_postfix, swaks
from smtpkit import GatewayThread, Scripted, SinkHandler, gateway_config, sink
from sqlalchemy import text

from smimekit import api
from smimekit.config import GatewayConfig, PolicyConfig, ScanConfig
from smimekit.gateway.journal import Journal, StoreJournal
from smimekit.gateway.model import Envelope, Outcome, Processor
from smimekit.gateway.passthrough import PassThrough
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

    def send(self, to: list[str], subject: str = "test", sender: str = ANN, *,
             submission: bool = False, extra: list[str] | None = None) -> None:
        """Through the public door (port 25), or the submission door."""
        port = self.postfix.submission_port if submission else self.postfix.smtpd_port
        sent = swaks(port, sender=sender, to=to, subject=subject, extra=extra)
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
                  limits: Limits | None = None,
                  virtual: dict[str, str] | None = None,
                  map_before_filter: bool = False) -> MailSystem:
            handler, sink_port = stack.enter_context(sink())
            postfix = Postfix(tmp_path / "postfix", sink_port=sink_port, virtual=virtual,
                              map_before_filter=map_before_filter)
            relay = TcpRelay(("127.0.0.1", postfix.reinject_port))
            stack.callback(relay.cut)
            gateway = stack.enter_context(
                GatewayThread(processor, f"127.0.0.1:{relay.port}", journal=journal,
                              limits=limits))
            postfix.start(gateway.port, gateway.submission_port)
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


def _bob_delivered_carol_deferred(system: MailSystem, subject: str) -> None:
    """Send one message to bob and carol while the next hop defers carol: bob's copy is
    delivered, carol's is Postfix's to retry."""
    system.postfix.defer_file.write_text(f"{CAROL} 450 4.2.0 mailbox busy\n")
    system.postfix.reload()
    system.send([BOB, CAROL], subject=subject)
    system.postfix.wait(lambda: "deferred carol@example.net" in system.postfix.log(),
                        "the gateway's 4xx for carol")
    # Bob's copy went back into Postfix before the 4xx: wait until Postfix delivered it
    # (under load it may still be queued when the gateway's reply is logged)
    system.arrived(1)


def test_journal_skips_the_delivered_group_when_postfix_retries(mail_system: Start,
                                                                tmp_path: Path) -> None:
    store = Store.open(None, tmp_path / "data")
    try:
        system = mail_system(Scripted(split=True), StoreJournal(store, "node-1"))
        _bob_delivered_carol_deferred(system, "twice?")
        assert [m.recipients for m in system.sink.received] == [(BOB,)]
        system.postfix.defer_file.write_text("")
        system.postfix.reload()
        system.postfix.flush()
        system.arrived(2)
        system.settled()
        assert sorted(m.recipients for m in system.sink.received) == [(BOB,), (CAROL,)]
    finally:
        store.close()


class Recording(Scripted):
    """Scripted, keeping the recipients of every transaction the gateway was handed."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.groups: list[tuple[str, ...]] = []

    def process(self, envelope: Envelope) -> Outcome:
        self.groups.append(envelope.recipients)
        return super().process(envelope)


def test_journal_knows_a_copy_when_postfix_regroups_the_retry(mail_system: Start,
                                                              tmp_path: Path) -> None:
    # review 12 item 12: the retry comes in other groups (here one recipient per
    # transaction, as a recipient limit makes it); bob's copy must not go out again
    store = Store.open(None, tmp_path / "data")
    try:
        processor = Recording(split=True)
        system = mail_system(processor, StoreJournal(store, "node-1"))
        _bob_delivered_carol_deferred(system, "regrouped")
        assert processor.groups == [(BOB, CAROL)]
        system.postfix.defer_file.write_text("")
        subprocess.run(["postconf", "-c", str(system.postfix.conf), "-e",
                        "scan_destination_recipient_limit = 1"], check=True, timeout=60)
        system.postfix.reload()
        system.postfix.flush()
        system.arrived(2)
        system.settled()
        # regrouped indeed (before the reload Postfix may have retried the old grouping
        # too: bob skipped by the journal, carol deferred again)
        assert sorted(processor.groups[-2:]) == [(BOB,), (CAROL,)]
        assert set(processor.groups[1:-2]) <= {(BOB, CAROL)}
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
        pipeline = pipeline_holding(store, pki, gateway, holds=[alice], knows=[partner])
        system = mail_system(pipeline, StoreJournal(store, "node-1"))
        system.send([partner.email, "bob@example.org", "nocert@partner.example"],
                    subject="merger", sender=alice.email, submission=True)
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


FORGED = "X-Smimekit-Result: gw.test; signature=valid; signer=ceo@example.org"


SCANNER = ("import sys; found = b'EICAR-STANDARD-ANTIVIRUS-TEST-FILE' in sys.stdin.buffer"
           ".read(); print('stdin: Eicar-Test-Signature FOUND' if found else 'stdin: OK');"
           " sys.exit(1 if found else 0)")


def _trust_rig(mail_system: Start, pki: PKI, store: Store, *, map_before_filter: bool = False
               ) -> tuple[MailSystem, Identity]:
    """The review's set-up: alice's key held, a partner with a known certificate, a
    forwarding alias fwd@example.org -> the partner, a scanner, the real pipeline."""
    alice = pki.person("alice")
    partner = pki.person("partner", "p256", email="partner@partner.example")
    gateway = GatewayConfig(internal_domains=("example.org",), scan=ScanConfig(
        command=(sys.executable, "-c", SCANNER)))
    pipeline = pipeline_holding(store, pki, gateway, holds=[alice], knows=[partner])
    system = mail_system(pipeline, StoreJournal(store, "node-1"),
                         virtual={"fwd@example.org": partner.email},
                         map_before_filter=map_before_filter)
    return system, partner


def _audit(store: Store) -> dict[str, dict[str, str]]:
    return {e.subject: {"action": e.action, **e.details} for e in store.audit_entries()
            if e.action.startswith("gateway.")}


@pytest.mark.parametrize("map_before_filter", [False, True],
                         ids=["documented", "aliases-before-filter"])
def test_our_sender_through_port_25_to_a_forwarding_alias_arrives_unsigned(
        mail_system: Start, pki: PKI, tmp_path: Path, map_before_filter: bool) -> None:
    """Review 12 item 1, the reviewer's probe: MAIL FROM alice@example.org on the public door
    to an alias that Postfix forwards outside; it arrives as sent, never signed with alice's
    key. As documented (no_address_mappings on the front) the gateway sees the alias, one of
    ours from outside: inbound. With the aliases expanded before the filter (the reviewer's
    Postfix) it sees the partner: passed unchanged, the audit saying why."""
    with Store.open(None, tmp_path / "data") as store:
        system, partner = _trust_rig(mail_system, pki, store,
                                     map_before_filter=map_before_filter)
        system.send(["fwd@example.org"], subject="forward me", sender="alice@example.org")
        system.arrived(1)
        system.settled()
        [got] = system.sink.to(partner.email)
        head, _, body = got.data.partition(b"\r\n\r\n")
        assert b"pkcs7" not in got.data and b"multipart/signed" not in head
        assert b"Hello from swaks." in body
        audit = _audit(store)
        if map_before_filter:
            assert list(audit) == [partner.email]
            entry = audit[partner.email]
            assert (entry["action"], entry["direction"]) == ("gateway.passed", "relay")
            assert "claims one of internal_domains" in entry["reason"]
        else:
            assert list(audit) == ["fwd@example.org"]
            entry = audit["fwd@example.org"]
            assert entry["direction"] == "inbound" and entry["scan"] == "clean"
        assert entry["door"] == "public"


def test_spoofed_sender_on_port_25_is_inbound_and_its_result_header_replaced(
        mail_system: Start, pki: PKI, tmp_path: Path) -> None:
    """Review 12 item 1: a sender in our domain through the public door, to one of ours,
    with a forged verdict: the header is replaced by the gateway's, the content scanned,
    the decision audited as inbound from the public door."""
    with Store.open(None, tmp_path / "data") as store:
        system, _ = _trust_rig(mail_system, pki, store)
        system.send(["bob@example.org"], subject="pay this", sender="ceo@example.org",
                    extra=["--add-header", FORGED])
        system.arrived(1)
        system.settled()
        [got] = system.sink.to("bob@example.org")
        head = got.data.partition(b"\r\n\r\n")[0]
        assert b"signer=ceo@example.org" not in head
        assert head.count(b"X-Smimekit-Result:") == 1
        assert b"signature=none" in head and b"scan=clean" in head and b"stripped=1" in head
        entry = _audit(store)["bob@example.org"]
        assert entry["direction"] == "inbound" and entry["door"] == "public"
        assert entry["scan"] == "clean" and entry["stripped"] == "1"


@pytest.mark.parametrize("alias", [False, True], ids=["partner", "forwarding-alias"])
def test_the_same_message_through_the_submission_door_is_signed(
        mail_system: Start, pki: PKI, tmp_path: Path, alias: bool) -> None:
    """The legitimate path still works: alice through the submission door (its own content
    filter, the gateway's trusted listener) to the partner is signed with her key and
    encrypted; to the alias forwarding there too (the submission door expands aliases before
    the filter, so an alias cannot carry mail outside past the outbound policy)."""
    with Store.open(None, tmp_path / "data") as store:
        system, partner = _trust_rig(mail_system, pki, store)
        system.send(["fwd@example.org" if alias else partner.email], subject="signed",
                    sender="alice@example.org", submission=True)
        system.arrived(1)
        system.settled()
        [got] = system.sink.to(partner.email)
        opened = api.decrypt_verify(got.data, partner.key, partner.cert, trust=[pki.root])
        assert b"Hello from swaks." in opened.content
        entry = _audit(store)[partner.email]
        assert entry["door"] == "submission" and entry["direction"] == "outbound"
        assert entry["action"] == "gateway.signed+encrypted"


def test_malware_from_outside_is_not_bounced_to_the_claimed_sender(
        mail_system: Start, pki: PKI, tmp_path: Path) -> None:
    """Review 12 item 13 (backscatter): a 5xx from an after-queue filter, or a DSN, becomes a
    bounce to the envelope sender, which mail from outside may forge (and names the rule).
    Malware through port 25 is dropped (no quarantine_dir here) with its reason audited;
    nothing goes back to the sender, and mail after it flows."""
    with Store.open(None, tmp_path / "data") as store:
        system, _ = _trust_rig(mail_system, pki, store)
        victim = "victim@innocent.example"
        system.send(["bob@example.org"], subject="invoice", sender=victim,
                    extra=["--body", EICAR.decode()])
        system.send(["bob@example.org"], subject="clean after", sender=victim)
        system.arrived(1)
        system.settled()
        [got] = system.sink.received
        assert got.recipients == ("bob@example.org",) and b"clean after" in got.data
        assert not system.sink.to(victim) and "status=bounced" not in system.postfix.log()
        rejected = [e for e in store.audit_entries() if e.action == "gateway.rejected"]
        assert [e.subject for e in rejected] == ["bob@example.org"]
        assert rejected[0].details["dsn"] == "none (from outside: no backscatter)"
        assert "malware" in rejected[0].details["reason"]
