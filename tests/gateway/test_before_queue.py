"""``smimekit gateway serve`` as Postfix's before-queue proxy filter (SMTPD_PROXY_README;
docs/gateway.md "Before-queue attachment"): a real Postfix (tests/postfix.py,
``attach="before-queue"``), the real pipeline (tests/gwhome.py), swaks as the client. The
client's reply is the gateway's, given after the re-injection smtpd queued the result: one
queue pass; a gateway that is down costs the client a 4xx, never a message."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from gwhome import GatewayHome, make_home
from gwnodes import PostfixRig, postfix_rig
from pki import PKI
from postfix import Postfix, require_postfix

from smimekit import api

pytestmark = [pytest.mark.interop, pytest.mark.slow]


class Rig(PostfixRig):

    def send(self, sender: str, to: str, data: bytes, *, trusted: bool = True
             ) -> subprocess.CompletedProcess[str]:
        """One message with swaks, through the submission door (``trusted``: our users'
        outbound mail) or the public one; its transcript shows the server's replies."""
        port = self.postfix.submission_port if trusted else self.postfix.smtpd_port
        message = self.postfix.root.parent / "message.eml"
        message.write_bytes(data)
        return subprocess.run(
            ["swaks", "--server", "127.0.0.1", "--port", str(port),
             "--from", sender, "--to", to, "--helo", "client.test", "--data", str(message),
             "--hide-informational", "--hide-send"],
            capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def rig(tmp_path: Path, pki: PKI) -> Iterator[Rig]:
    require_postfix()
    home = make_home(tmp_path / "home", pki)
    with postfix_rig(tmp_path, home, Rig, attach="before-queue") as rig:
        yield rig


def _sent_lines(postfix: Postfix) -> list[str]:
    return [line for line in postfix.log().splitlines() if "status=sent" in line]


def test_outbound_and_inbound_pass_once_with_the_gateways_reply(rig: Rig) -> None:
    home = rig.home
    sender, [to], data = home.outbound(b"Quarterly figures.\r\n", "out-1@example.org")
    sent = rig.send(sender, to, data)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    # the client's 250 is the gateway's, which quotes the re-injection smtpd's queue id
    [queue_id] = re.findall(r"<-  250 2\.0\.0 Ok: queued as (\w+)", sent.stdout)
    assert f"queued as {queue_id}" in rig.node.log.read_text()
    sender, [to], data = home.inbound(b"Signed and sealed.\r\n", "in-1@example.org")
    sent = rig.send(sender, to, data, trusted=False)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    rig.postfix.wait(lambda: len(rig.sink.received) == 2, "both messages at the sink")
    rig.postfix.wait(lambda: not rig.postfix.queued(), "an empty Postfix queue")

    out = rig.sink.to(home.partner.email)
    [inbound] = rig.sink.to(home.bob.email)
    assert len(out) == 1
    opened = api.decrypt_verify(out[0].data, home.partner.key, home.partner.cert,
                                trust=[*home.chain, rig_root(home)], revocation=None)
    assert b"Quarterly figures." in opened.content
    message = inbound.message()
    assert "Signed and sealed." in message.get_content()
    assert "signature=valid" in " ".join(message["X-Smimekit-Result"].split())
    # one queue pass: each message was queued once (by the re-injection smtpd) and sent once
    assert len(_sent_lines(rig.postfix)) == 2
    queued = [line for line in rig.postfix.log().splitlines() if "postfix/cleanup" in line
              and "message-id=" in line]
    assert len(queued) == 2


def rig_root(home: GatewayHome) -> object:
    from cryptography import x509

    from smimekit.validation.trust import TrustStore

    [root] = [c for c in TrustStore(home.data_dir).anchors() if isinstance(c, x509.Certificate)]
    return root


def test_gateway_down_gives_the_client_a_4xx_and_loses_nothing(rig: Rig) -> None:
    home = rig.home
    rig.node.stop()
    sender, [to], data = home.outbound(b"While the gateway is down.\r\n", "down@example.org")
    refused = rig.send(sender, to, data)
    assert refused.returncode != 0
    replies = [line for line in refused.stdout.splitlines() if line.startswith("<")]
    assert any(line.lstrip("<* ").startswith("4") for line in replies), refused.stdout
    assert not any(line.lstrip("<* ").startswith("5") for line in replies), refused.stdout
    # The client still holds the message: Postfix queued nothing from it (it only tells its
    # postmaster, "451 4.3.0 Error: queue file write error", about the proxy failure).
    assert "connect to proxy filter" in rig.postfix.log()
    assert not [line for line in rig.postfix.log().splitlines()
                if "postfix/qmgr" in line and f"from=<{sender}>" in line]
    assert rig.sink.to(to) == []
    rig.node.start()
    sent = rig.send(sender, to, data)  # the client's retry
    assert sent.returncode == 0, sent.stdout + sent.stderr
    rig.postfix.wait(lambda: len(rig.sink.to(to)) == 1, "the message at the sink")
    rig.postfix.wait(lambda: not rig.postfix.queued(), "an empty Postfix queue")
    [got] = rig.sink.to(to)
    assert got.recipients == (to,) and got.mail_from == sender
    assert api.decrypt(got.data, home.partner.key, home.partner.cert).content


def test_identical_messages_in_one_second_both_arrive(rig: Rig) -> None:
    """Before the queue, Postfix's Received header has no queue id: the same bytes sent twice
    in a second are two messages to pass on, not a retry (the journal keys each transaction
    apart with --attach before-queue; by content, the second was answered 250 and dropped)."""
    home = rig.home
    sender, [to], data = home.outbound(b"Twice the same.\r\n", "same@example.org")
    for _ in range(2):
        sent = rig.send(sender, to, data)
        assert sent.returncode == 0, sent.stdout + sent.stderr
    rig.postfix.wait(lambda: len(rig.sink.to(to)) == 2, "both copies at the sink")
    rig.postfix.wait(lambda: not rig.postfix.queued(), "an empty Postfix queue")
    assert "nothing left to pass on" not in rig.node.log.read_text()
