"""gateway/dlp.py: rules counted in the decoded text, thresholds, actions, bounded time."""

from __future__ import annotations

import base64
import os
import stat
import time
from pathlib import Path

import pytest
from malformed.cases import count_splits

from smimekit.config import DlpRule
from smimekit.errors import ConfigError, GatewayError
from smimekit.gateway import dlp

CARDS = DlpRule(name="cards", patterns=(r"\b(?:\d[ -]?){13,16}\b",), action="require-encryption")
SECRET = DlpRule(name="secret", keywords=("project x",), threshold=2)
SALARY = DlpRule(name="salary", keywords=("salary",), action="quarantine", direction="outbound")
VIRUSY = DlpRule(name="bad", keywords=("confidential merger",), action="reject",
                 direction="inbound")


def _message(body: bytes, *, ctype: str = "text/plain; charset=utf-8", cte: str = "7bit",
             subject: str = "hello") -> bytes:
    return (f"From: a@example.org\r\nTo: b@example.org\r\nSubject: {subject}\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: {ctype}\r\n"
            f"Content-Transfer-Encoding: {cte}\r\n\r\n").encode() + body


def _multipart(*parts: bytes) -> bytes:
    body = b"".join(b"--BOUND\r\n" + p + b"\r\n" for p in parts) + b"--BOUND--\r\n"
    return (b"From: a@example.org\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=BOUND\r\n\r\n" + body)


def test_threshold_counts_keywords_case_insensitively_and_as_whole_words() -> None:
    once = dlp.evaluate([SECRET], _message(b"About Project X.\r\n"), "outbound")
    assert once.fired == () and once.action is None
    twice = dlp.evaluate([SECRET], _message(b"PROJECT X and project\r\n  x again\r\n"),
                         "outbound")
    assert twice.fired == (dlp.Fired("secret", "warn", 2),) and twice.action == "warn"
    inside_words = dlp.evaluate([SECRET], _message(b"subproject xy, subproject xylophone\r\n"),
                                "outbound")
    assert inside_words.fired == ()


def test_base64_quoted_printable_and_html_parts_are_decoded() -> None:
    card = b"Card 4111 1111 1111 1111, and project x"
    b64 = b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n" \
        + base64.encodebytes(card)
    qp = (b"Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
          b"pro=\r\nject =78 is here\r\n")
    htm = (b"Content-Type: text/html\r\n\r\n<p>the <b>project</b> &#120; plan"
           b"<script>project x</script></p>\r\n")
    result = dlp.evaluate([CARDS, SECRET], _multipart(b64, qp, htm), "outbound")
    # the script's text counts too: for data loss, unseen text still leaves
    assert result.fired == (dlp.Fired("cards", "require-encryption", 1),
                            dlp.Fired("secret", "warn", 4))
    assert result.action == "require-encryption"
    assert result.summary() == "cards(1):require-encryption, secret(4):warn"


def test_subject_encoded_word_is_counted() -> None:
    result = dlp.evaluate([SECRET], _message(b"project x\r\n",
                                             subject="=?utf-8?q?Project_X?="), "inbound")
    assert result.fired == (dlp.Fired("secret", "warn", 2),)


def test_strongest_action_wins_and_direction_filters_rules() -> None:
    text = _message(b"salary of the confidential merger, project x project x\r\n")
    rules = [SECRET, SALARY, VIRUSY]
    out = dlp.evaluate(rules, text, "outbound")
    assert [f.rule for f in out.fired] == ["secret", "salary"] and out.action == "quarantine"
    inbound = dlp.evaluate(rules, text, "inbound")
    assert [f.rule for f in inbound.fired] == ["secret", "bad"] and inbound.action == "reject"
    assert inbound.names("reject") == ("bad",)


def test_encrypted_parts_and_attachments_are_not_read_but_noted() -> None:
    enc = (b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(b"project x" * 3))
    pdf = (b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           + base64.encodebytes(b"project x project x"))
    result = dlp.evaluate([SECRET], _multipart(enc, pdf), "inbound")
    assert result.fired == ()
    assert any("encrypted" in n for n in result.notes)


def test_attached_message_is_read() -> None:
    inner = _message(b"project x, project x\r\n")
    part = b"Content-Type: message/rfc822\r\n\r\n" + inner
    assert dlp.evaluate([SECRET], _multipart(part), "inbound").action == "warn"


def test_bad_rules_are_config_errors_naming_the_rule() -> None:
    with pytest.raises(ConfigError, match=r"gateway\.dlp\[0\] \(x\): the pattern .* compile"):
        dlp.compile_rules([DlpRule(name="x", patterns=("(",))])
    with pytest.raises(ConfigError, match=r"gateway\.dlp\[0\] \(x\): give keywords"):
        dlp.compile_rules([DlpRule(name="x")])
    with pytest.raises(ConfigError, match="matches the empty text"):
        dlp.compile_rules([DlpRule(name="x", patterns=(r"\d*",))])
    with pytest.raises(ConfigError, match="threshold must be 1"):
        dlp.compile_rules([DlpRule(name="x", keywords=("a",), threshold=0)])
    with pytest.raises(ConfigError, match=r"gateway\.dlp\[1\] \(x\): another rule"):
        dlp.compile_rules([DlpRule(name="x", keywords=("a",)), DlpRule(name="x",
                                                                        keywords=("b",))])


@pytest.mark.parametrize("pattern", [r"(a+)+b", r"x(?:\w+\s?)*$", r"(x|y+)*z", r"((ab)*c)+d"])
def test_catastrophic_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(ConfigError, match="exponential time"):
        dlp.compile_rules([DlpRule(name="evil", patterns=(pattern,))])


@pytest.mark.parametrize("pattern", [r"\b(?:\d[ -]?){13,16}\b", r"(?:a++)+b",
                                     r"[A-Z]{2}\d{2}(?: ?\d{4}){4}", r"\w+@\w+"])
def test_ordinary_patterns_are_accepted(pattern: str) -> None:
    assert len(dlp.compile_rules([DlpRule(name="ok", patterns=(pattern,))]).rules) == 1


def test_rules_are_compiled_once() -> None:
    rules = (CARDS, SECRET)
    assert dlp.compile_rules(rules) is dlp.compile_rules(list(rules))


def test_large_text_is_counted_across_windows_in_bounded_time() -> None:
    # matches on both sides of every window edge, each counted once
    chunk = b"x" * 1000 + b" project x "
    body = chunk * 2000  # ~2 MB, 2,000 matches
    started = time.monotonic()
    result = dlp.evaluate([DlpRule(name="p", keywords=("project x",))], _message(body),
                          "outbound")
    assert result.fired == (dlp.Fired("p", "warn", 2000),)
    assert time.monotonic() - started < 5


def test_text_past_the_cap_is_not_read_and_the_result_says_so(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dlp, "MAX_TEXT", 100)
    result = dlp.evaluate([SECRET], _message(b"a" * 200 + b" project x project x\r\n"),
                          "outbound")
    assert result.truncated and result.fired == ()


def test_parts_past_the_part_limit_are_not_split(monkeypatch: pytest.MonkeyPatch) -> None:
    sizes = count_splits(monkeypatch, dlp)
    many = _multipart(*[b"Content-Type: text/plain\r\n\r\nproject x"] * (dlp.MAX_PARTS * 3))
    result = dlp.evaluate([SECRET], many, "outbound")
    assert any("too many" in note for note in result.notes)
    assert sizes == [dlp.MAX_PARTS]  # the root counts as one part: one more than it may read


def test_unreadable_message_gives_a_note_not_an_error() -> None:
    result = dlp.evaluate([SECRET], b"\x00\x01 not a message", "inbound")
    assert result.fired == ()


def test_quarantine_writes_a_private_file_atomically(tmp_path: Path) -> None:
    where = tmp_path / "q" / "held"
    path = dlp.quarantine(b"the message", where, label="<id@example.org>")
    assert path.parent == where and path.read_bytes() == b"the message"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(where.stat().st_mode) == 0o700
    assert path.name.startswith("_id_example.org_-")
    assert len(os.listdir(where)) == 1
    second = dlp.quarantine(b"again", where)
    assert second != path


def test_quarantine_without_a_directory_or_unwritable_is_a_gateway_error(
        tmp_path: Path) -> None:
    with pytest.raises(GatewayError, match="quarantine_dir is not set") as info:
        dlp.quarantine(b"m", None)
    assert info.value.permanent
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(GatewayError, match="cannot write to the quarantine") as info:
        dlp.quarantine(b"m", blocker / "sub")
    assert not info.value.permanent


def test_alternatives_count_once_by_the_one_that_matches_most() -> None:
    text = b"Content-Type: text/plain\r\n\r\nproject x\r\n"
    htm = b"Content-Type: text/html\r\n\r\n<p>project x, <i>project x</i></p>\r\n"
    body = (b"--ALT\r\n" + text + b"\r\n--ALT\r\n" + htm + b"\r\n--ALT--\r\n")
    alternative = (b"Content-Type: multipart/alternative; boundary=ALT\r\n\r\n" + body)
    extra = b"Content-Type: text/plain\r\n\r\nproject x\r\n"
    result = dlp.evaluate([DlpRule(name="p", keywords=("project x",), threshold=4)],
                          _multipart(alternative, extra), "outbound")
    assert result.fired == ()  # 2 (the HTML alternative) + 1, not 1 + 2 + 1
    result = dlp.evaluate([DlpRule(name="p", keywords=("project x",), threshold=3)],
                          _multipart(alternative, extra), "outbound")
    assert result.fired == (dlp.Fired("p", "warn", 3),)


def test_hostile_markup_is_read_in_linear_time() -> None:
    htm = b"Content-Type: text/html\r\n\r\n" + b"<" * 2_000_000 + b"<script>" * 200_000 \
        + b" project x project x"
    started = time.monotonic()
    result = dlp.evaluate([SECRET], _multipart(htm), "outbound")
    assert result.fired == (dlp.Fired("secret", "warn", 2),)
    assert time.monotonic() - started < 5


def test_slow_patterns_stop_at_the_time_budget_and_say_so(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dlp, "TIME_BUDGET", 0.3)
    quadratic = DlpRule(name="q", patterns=(r"\d+-\d+x",))  # no nesting, but O(n^2)
    started = time.monotonic()
    result = dlp.evaluate([quadratic], _message(b"1" * 400_000 + b"\r\n"), "outbound")
    elapsed = time.monotonic() - started
    assert result.truncated and result.fired == ()
    assert any("the rest was not counted" in n for n in result.notes)
    assert elapsed < 5
