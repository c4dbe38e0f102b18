"""The DSN (RFC 3464) and the one-line reply text of the gateway."""

from __future__ import annotations

import datetime as dt
import email
import email.policy

import pytest

from smimekit.gateway.dsn import Failed, build_dsn, reply_text

ARRIVAL = dt.datetime(2026, 12, 7, 1, 0, tzinfo=dt.UTC)


def test_reply_text_is_one_printable_ascii_line() -> None:
    assert reply_text("a\r\n250 injected\tline é") == "a 250 injected line ?"
    assert len(reply_text("x" * 1000, 50)) == 50


def test_dsn_fields_and_structure() -> None:
    original = b"From: ann@example.org\r\nSubject: plans\r\n\r\nsecret body\r\n"
    dsn = build_dsn("ann@example.org",
                    [Failed("bob@example.net", "no certificate"),
                     Failed("j\u00f6rg@example.net", "refused by the next hop", "5.1.1",
                            "550 5.1.1 unknown\r\nuser")],
                    original, reporting_mta="gw.example.org", arrival=ARRIVAL)
    assert (dsn.mail_from, dsn.recipients) == ("", ("ann@example.org",))
    assert b"secret body" not in dsn.data and b"Subject: plans" in dsn.data
    parsed = email.message_from_bytes(dsn.data, policy=email.policy.default)
    _, status, _ = parsed.get_payload()
    per_message, bob, jorg = status.get_payload()
    assert per_message["Reporting-MTA"] == "dns; gw.example.org"
    assert bob["Diagnostic-Code"] == "smtp; 550 5.7.1 no certificate"
    assert jorg["Final-Recipient"] == "utf-8; j\\x{F6}rg@example.net"
    assert (jorg["Status"], jorg["Diagnostic-Code"]) == ("5.1.1", "smtp; 550 5.1.1 unknown user")


def test_no_dsn_for_a_bounce() -> None:
    with pytest.raises(ValueError, match="null reverse-path"):
        build_dsn("", [Failed("bob@example.net", "x")], b"", reporting_mta="gw",
                  arrival=ARRIVAL)
