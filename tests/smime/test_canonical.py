"""Raw-byte MIME handling: line endings, splitting, 7-bit conversion."""

from __future__ import annotations

import pytest

from smimekit.errors import MIMEError
from smimekit.smime.canonical import (
    Entity,
    b64_lines,
    make_7bit,
    needs_encoding,
    parse_headers,
    split_multipart,
    to_crlf,
)


def test_to_crlf_converts_bare_lf_and_keeps_crlf() -> None:
    assert to_crlf(b"a\nb\r\nc\n") == b"a\r\nb\r\nc\r\n"


def test_folded_headers_keep_their_exact_bytes() -> None:
    fields = parse_headers(b"Subject: one\r\n two\r\nFrom: a@b")
    assert [f.name for f in fields] == ["Subject", "From"]
    assert fields[0].raw == b"Subject: one\r\n two"
    assert fields[0].value() == "one two"


def test_malformed_header_line_is_a_mime_error() -> None:
    with pytest.raises(MIMEError, match="malformed header line 1") as raised:
        parse_headers(b"no colon here")
    assert "colon" not in str(raised.value)  # the position, never the text
    with pytest.raises(MIMEError, match="malformed header line 3") as raised:
        parse_headers(b"Subject: a\r\n folded\r\njust a secret body line\r\nTo: b")
    assert "secret" not in str(raised.value)


def test_split_multipart_returns_parts_exactly_as_sent() -> None:
    body = b"preamble\r\n--b\r\nA: 1\r\n\r\nfirst\r\n--b\r\n\r\nsecond\r\n\r\n--b--\r\nepilogue"
    assert split_multipart(body, "b") == [b"A: 1\r\n\r\nfirst", b"\r\nsecond\r\n"]


def test_split_multipart_without_closing_delimiter_is_truncated() -> None:
    with pytest.raises(MIMEError, match="truncated"):
        split_multipart(b"--b\r\n\r\nx\r\n", "b")


def test_split_multipart_stops_at_max_parts_without_reading_the_rest() -> None:
    body = b"--b\r\n1\r\n--b\r\n2\r\n--b\r\n3\r\n--b--\r\n"
    assert split_multipart(body, "b", max_parts=2) == [b"1", b"2"]
    assert split_multipart(body, "b", max_parts=3) == [b"1", b"2", b"3"]
    assert split_multipart(body, "b", max_parts=4) == [b"1", b"2", b"3"]
    # Past max_parts nothing is read, not even whether the body is closed ...
    assert split_multipart(body[:-9], "b", max_parts=2) == [b"1", b"2"]
    # ... but a body that ends before it is still truncated.
    with pytest.raises(MIMEError, match="truncated"):
        split_multipart(body[:-9], "b", max_parts=3)


def test_split_multipart_without_any_delimiter() -> None:
    with pytest.raises(MIMEError, match="no delimiter"):
        split_multipart(b"nothing here", "b")


def test_eight_bit_text_becomes_quoted_printable() -> None:
    out = make_7bit(b"Content-Type: text/plain\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n")
    assert not needs_encoding(out)
    assert b"Content-Transfer-Encoding: quoted-printable" in out
    assert b"Gr=C3=BC=C3=9Fe" in out


def test_eight_bit_binary_becomes_base64_inside_multipart() -> None:
    entity = (b'Content-Type: multipart/mixed; boundary="x"\r\n\r\n--x\r\n'
              b"Content-Type: text/plain\r\n\r\nhi\r\n--x\r\n"
              b"Content-Type: application/octet-stream\r\n\r\n\x00\xff\x80\r\n--x--\r\n")
    out = make_7bit(entity)
    assert not needs_encoding(out)
    assert b"Content-Transfer-Encoding: base64" in out
    assert b"\r\n\r\nhi\r\n" in out  # the ASCII part is untouched


def test_long_lines_are_encoded() -> None:
    assert needs_encoding(b"x" * 999)
    assert not needs_encoding(b"x" * 998)
    assert not needs_encoding(make_7bit(b"Content-Type: text/plain\r\n\r\n" + b"y" * 2000))


def test_seven_bit_content_is_left_byte_for_byte() -> None:
    entity = b"Content-Type: text/plain\r\n\r\nplain\r\n"
    assert make_7bit(entity) is entity


def test_b64_lines_are_76_wide_with_crlf() -> None:
    lines = b64_lines(bytes(200)).split(b"\r\n")
    assert all(len(line) <= 76 for line in lines)
    assert lines[-1] == b""


def test_entity_reads_legacy_p7m_filename() -> None:
    ent = Entity.parse(b'Content-Type: application/octet-stream; name="SMIME.P7M"\r\n\r\n')
    assert ent.filename == "smime.p7m"


def test_boundary_text_inside_a_line_is_not_a_delimiter() -> None:
    body = b"--b\r\nx --b y\r\n--bz\r\n--b--\r\n"
    assert split_multipart(body, "b") == [b"x --b y\r\n--bz"]


def test_has_long_line_edges() -> None:
    from smimekit.smime.canonical import has_long_line

    assert not has_long_line(b"a" * 998 + b"\r\n" + b"b" * 998)
    assert has_long_line(b"a" * 999 + b"\r\nb")
    assert has_long_line(b"ok\r\n" * 1000 + b"c" * 999)
    assert not has_long_line(b"ok\r\n" * 100000)


def test_errors_about_header_values_do_not_quote_them() -> None:
    # the gateway replies and logs these: no message text in them (review 12 item 9)
    entity = Entity.parse(b"Content-Transfer-Encoding: secret-plans\r\n\r\nbody")
    with pytest.raises(MIMEError, match="unknown Content-Transfer-Encoding") as raised:
        entity.decoded_body()
    assert "secret" not in str(raised.value)
    with pytest.raises(MIMEError, match="no delimiter") as raised:
        split_multipart(b"nothing here", "secret-boundary")
    assert "secret" not in str(raised.value)
