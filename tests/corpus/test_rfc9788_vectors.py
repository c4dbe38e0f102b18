"""RFC 9788 Appendix C.1 signed-only vectors (tests/vectors/rfc9788/SOURCE.md).

Each is verified against RFC 9216's RSA CA at 2021-03-01; the output message must carry the
protected header fields, and the verdict must name the scheme and every protected field.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest

import smimekit
from smimekit.errors import VerificationError

from .vectors import crypto_cert

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "rfc9788"
AT = dt.datetime(2021, 3, 1, tzinfo=dt.UTC)
FIELDS = ("Subject", "Message-ID", "From", "To", "Date", "User-Agent")


@dataclasses.dataclass(frozen=True)
class Row:
    file: str
    scheme: str
    content_type: str


ROWS = [
    Row("smime-multipart-hp.eml", "rfc9788", "text/plain"),
    Row("smime-one-part-complex-hp.eml", "rfc9788", "multipart/mixed"),
    Row("smime-multipart-complex-rfc8551hp.eml", "rfc8551", "multipart/mixed"),
]


def _anchor() -> list:
    return [crypto_cert("rfc9216-smime-example-keys", "pem", "ca.rsa.crt")]


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.file)
def test_vector_verifies_and_shows_its_protected_fields(row: Row) -> None:
    data = (VECTORS / row.file).read_bytes()
    result = smimekit.verify(data, trust=_anchor(), at=AT, revocation=None)
    verdict = result.verdict
    assert verdict.valid and verdict.from_address == "alice@smime.example"
    hp = verdict.header_protection
    assert hp is not None and (hp.scheme, hp.mode) == (row.scheme, "clear")
    assert hp.protected == FIELDS and hp.disagreed == () and hp.obscured == ()
    subject = row.file.removesuffix(".eml")
    assert f"protected headers ({row.scheme}, clear): " + ", ".join(FIELDS) in verdict.summary()
    shown = result.as_message()
    assert shown.get_all("Subject") == [subject]
    assert shown.get_all("Message-ID") == [f"<{subject}@example>"]
    assert shown.get_content_type() == row.content_type
    assert subject.encode() in result.content.split(b"\r\n\r\n", 1)[1]


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.file)
def test_vector_with_a_rewritten_outer_subject_still_shows_the_protected_one(row: Row) -> None:
    """A list or an attacker changes the outer Subject: the signature still holds (it does not
    cover the outside), the protected Subject is shown, the change is reported."""
    data = (VECTORS / row.file).read_bytes()
    subject = row.file.removesuffix(".eml").encode()
    changed = data.replace(b"Subject: " + subject, b"Subject: [list] " + subject, 1)
    result = smimekit.verify(changed, trust=_anchor(), at=AT, revocation=None)
    hp = result.verdict.header_protection
    assert hp is not None and hp.disagreed == ("Subject",)
    assert result.as_message().get_all("Subject") == [subject.decode()]


def test_vector_whose_protected_section_was_altered_fails() -> None:
    data = (VECTORS / "smime-multipart-hp.eml").read_bytes()
    protected_from = b"Subject: smime-multipart-hp\nMessage-ID: <smime-multipart-hp@example>\nFrom:"
    start = data.index(protected_from, data.index(b"--54f"))
    forged = data[:start] + data[start:].replace(b"From: Alice", b"From: Mallory", 1)
    with pytest.raises(VerificationError):
        smimekit.verify(forged, trust=_anchor(), at=AT, revocation=None)
