"""Review 12 item 9: the gateway's SMTP replies and its log carry no message content, even
for a message it refuses because its header cannot be read (``gateway serve`` as a process
with the real policy pipeline, tests/gwhome.py, its next hop a saving sink)."""

from __future__ import annotations

import smtplib
from pathlib import Path

import pytest
from gwhome import make_home
from gwnodes import Node
from pki import PKI
from smtpkit import sink

pytestmark = [pytest.mark.slow]

WORD = "Xylophone-7731-confidential"


def _malformed(sender: str, to: str) -> bytes:
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: plans\r\n"
            f"the {WORD} figures are attached\r\n\r\nbody\r\n").encode()


def test_an_unreadable_header_is_refused_without_quoting_it(tmp_path: Path) -> None:
    """Our user's message (the trusted door) is refused with 554 naming the line, not its
    text; the same from outside (the public door) is dropped without a DSN (no backscatter),
    and neither the reply nor the log quotes it."""
    home = make_home(tmp_path, PKI())
    with sink() as (handler, sink_port):
        node = Node("quiet", sink_port, data_dir=home.data_dir, database_url=None,
                    config=home.config, log_dir=tmp_path)
        node.start()
        try:
            sender, to = home.alice.email, home.partner.email  # outbound, trusted door
            with smtplib.SMTP("127.0.0.1", node.submission_port, timeout=60) as client:
                with pytest.raises(smtplib.SMTPDataError) as refused:
                    client.sendmail(sender, [to], _malformed(sender, to))
            code, text = refused.value.smtp_code, refused.value.smtp_error.decode()
            sender, to = home.partner.email, home.bob.email  # inbound, public door
            with smtplib.SMTP("127.0.0.1", node.port, timeout=60) as client:
                client.ehlo()
                client.mail(sender)
                client.rcpt(to)
                outside = client.data(_malformed(sender, to))
        finally:
            node.stop()
        log = node.log.read_text()
    assert handler.received == []  # neither went on
    assert code == 554 and "malformed header line 4" in text, text
    assert WORD not in text and "figures" not in text
    assert outside[0] == 250, outside  # taken and dropped: no bounce to a forged sender
    assert WORD not in outside[1].decode() and "figures" not in outside[1].decode()
    assert "malformed header line 4" in log  # the reason is logged, the content is not
    assert WORD not in log and "figures" not in log
    assert "Traceback" not in log
