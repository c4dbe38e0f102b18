"""Postfix's own test tools at both ends of the gateway, as the issue asks: ``smtp-source``
sends into a real Postfix (tests/postfix.py), the gateway runs the policy pipeline, and
Postfix relays what it made to ``smtp-sink`` as the final destination, which dumps every
message to a file of its own (``-d``); the test counts and opens what arrived."""

from __future__ import annotations

import email
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from gwout_kit import pipeline_holding
from loopback import free_port, wait_for_port
from pki import PKI
from postfix import Postfix, require_postfix
from smtpkit import GatewayThread

from smimekit import api
from smimekit.config import GatewayConfig, PolicyConfig
from smimekit.gateway.journal import StoreJournal
from smimekit.store import Store

pytestmark = [pytest.mark.interop, pytest.mark.slow]


@contextmanager
def smtp_sink(dump: Path) -> Iterator[int]:
    """Postfix's smtp-sink on a free loopback port (yielded), each transaction dumped to a file
    of its own in ``dump`` (``-d``); stopped after."""
    if shutil.which("smtp-sink") is None:
        pytest.skip("smtp-sink is not installed (make peers)")
    port = free_port()
    # as root smtp-sink wants a user to switch to (-u); root, to write into the test's 0700
    # temporary directory
    process = subprocess.Popen(["smtp-sink", "-u", "root", "-d", f"{dump}/%Y%m%d%H%M%S.",
                                f"127.0.0.1:{port}", "64"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, process, "smtp-sink")
        yield port
    finally:
        process.terminate()
        process.communicate(timeout=30)


def _dumped(dump: Path) -> list[tuple[list[str], bytes]]:
    """Each message smtp-sink dumped: (its RCPT TO addresses, the message with CRLF)."""
    out = []
    for path in sorted(dump.iterdir()) if dump.exists() else []:
        lines = path.read_bytes().split(b"\n")
        # smtp-sink's own records (X-Client-Addr ... X-Rcpt-Args), then its Received header
        # of three lines, then the message as received
        at = next(i for i, line in enumerate(lines) if line.startswith(b"Received: "))
        rcpts = [line.split(b"<", 1)[1].split(b">", 1)[0].decode() for line in lines[:at]
                 if line.startswith(b"X-Rcpt-Args: ")]
        at += 1
        while lines[at].startswith((b"\t", b" ")):
            at += 1
        out.append((rcpts, b"\r\n".join(lines[at:])))
    return out


def test_smtp_source_through_the_policy_pipeline_into_smtp_sink(pki: PKI, tmp_path: Path) -> None:
    """Postfix's own tools at both ends, as the issue asks: smtp-source sends alice's mail to
    a partner (encrypt always) into Postfix, the gateway signs and encrypts every message,
    Postfix relays them to smtp-sink, which dumps each; every one arrived once, for the
    partner, opens with the partner's key and carries alice's valid signature."""
    require_postfix()
    if shutil.which("smtp-source") is None:
        pytest.skip("smtp-source is not installed (make peers)")
    alice = pki.person("alice")
    partner = pki.person("partner", "p256", email="partner@partner.example")
    gateway = GatewayConfig(internal_domains=("example.org",),
                            domains={"partner.example": PolicyConfig(encrypt="always")})
    dump = tmp_path / "smtp-sink"
    count = 12
    with ExitStack() as stack:
        store = stack.enter_context(Store.open(None, tmp_path / "data"))
        pipeline = pipeline_holding(store, pki, gateway, holds=[alice], knows=[partner])
        sink_port = stack.enter_context(smtp_sink(dump))
        postfix = Postfix(tmp_path / "postfix", sink_port=sink_port)
        gateway_thread = stack.enter_context(
            GatewayThread(pipeline, f"127.0.0.1:{postfix.reinject_port}",
                          journal=StoreJournal(store, "node-1")))
        postfix.start(gateway_thread.port, gateway_thread.submission_port)
        stack.callback(postfix.stop)
        subprocess.run(["smtp-source", "-c", "-m", str(count), "-s", "3", "-l", "3000",
                        "-S", "quarterly figures", "-f", alice.email, "-t", partner.email,
                        f"127.0.0.1:{postfix.submission_port}"],  # alice's own door
                       capture_output=True, timeout=120, check=True)
        postfix.wait(lambda: postfix.log().count("status=sent") >= 2 * count,
                     f"{count} messages through the gateway and on to smtp-sink", timeout=120)
        postfix.wait(lambda: not postfix.queued(), "an empty Postfix queue")
        arrived = _dumped(dump)
        actions = [e.action for e in store.audit_entries() if e.action.startswith("gateway.")]
    assert len(arrived) == count, [r for r, _ in arrived]
    ids = set()
    for rcpts, message in arrived:
        assert rcpts == [partner.email]
        head = message.partition(b"\r\n\r\n")[0]
        assert b"XXXXXXXX" not in message and b"quarterly figures" not in head  # hidden (hcp)
        opened = api.decrypt_verify(message, partner.key, partner.cert, trust=[pki.root])
        assert opened.verdict.valid  # type: ignore[attr-defined]
        [signer] = opened.verdict.signers  # type: ignore[attr-defined]
        assert signer.signer.emails == (alice.email,)
        assert b"XXXXXXXX" in opened.content and b"Subject: quarterly figures" in opened.content
        ids.add(email.message_from_bytes(opened.content)["Message-Id"])
    assert len(ids) == count  # each message once
    assert actions == ["gateway.signed+encrypted"] * count
