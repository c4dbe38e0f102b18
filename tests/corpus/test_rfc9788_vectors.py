"""RFC 9788 Appendix C vectors (tests/vectors/rfc9788/SOURCE.md names each one's section).

Signed-only (C.2) and signed-and-encrypted (C.3, decrypted with RFC 9216's Bob) messages are
verified against RFC 9216's RSA CA at 2021-03-01; the output message must carry the protected
header fields, and the verdict must name the scheme, the mode and every protected field.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest

import smimekit
from smimekit.errors import NoRecipientError, VerificationError

from .vectors import crypto_cert, crypto_key

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


# RFC 9788 Appendix C.3: signed-and-encrypted vectors (envelopedData around signedData, to
# Alice and Bob of RFC 9216). Each row is what the RFC's "Decrypted and Unwrapped" section
# shows: the protected header fields, in order, and what the sender's HCP put outside.

PEM = ("rfc9216-smime-example-keys", "pem")
ENCRYPTED_HEADER_TAIL = (
    "MIME-Version: 1.0",
    "Content-Transfer-Encoding: 7bit",
)


@dataclasses.dataclass(frozen=True)
class EncryptedRow:
    file: str
    section: str
    date: str
    obscured: tuple[str, ...]
    legacy: bool
    content_type: str
    extra: tuple[str, ...] = ()
    """Protected fields after User-Agent (In-Reply-To, References of a reply)."""

    @property
    def name(self) -> str:
        return self.file.removesuffix(".eml")

    def protected_lines(self) -> list[str]:
        return [
            f"Subject: {self.name}",
            f"Message-ID: <{self.name}@example>",
            "From: Alice <alice@smime.example>",
            "To: Bob <bob@smime.example>",
            f"Date: {self.date}",
            "User-Agent: Sample MUA Version 1.0",
            *self.extra,
        ]


BASELINE_OBSCURED = ("Subject",)
SHY_OBSCURED = ("Subject", "From", "To", "Date")
"""hcp_shy: the outer From and To lose their display names, the Date moves to UTC."""

ENCRYPTED_ROWS = [
    EncryptedRow("smime-signed-enc-hp-baseline.eml", "C.3.1", "Sat, 20 Feb 2021 10:09:02 -0500",
                 BASELINE_OBSCURED, legacy=False, content_type="text/plain"),
    EncryptedRow("smime-signed-enc-hp-baseline-legacy.eml", "C.3.2",
                 "Sat, 20 Feb 2021 10:10:02 -0500", BASELINE_OBSCURED, legacy=True,
                 content_type="text/plain"),
    EncryptedRow("smime-signed-enc-hp-shy.eml", "C.3.3", "Sat, 20 Feb 2021 10:12:02 -0500",
                 SHY_OBSCURED, legacy=False, content_type="text/plain"),
    EncryptedRow("smime-signed-enc-hp-shy-legacy.eml", "C.3.4", "Sat, 20 Feb 2021 10:13:02 -0500",
                 SHY_OBSCURED, legacy=True, content_type="text/plain"),
    EncryptedRow("smime-signed-enc-hp-baseline-reply.eml", "C.3.5",
                 "Sat, 20 Feb 2021 10:15:02 -0500", BASELINE_OBSCURED, legacy=False,
                 content_type="text/plain",
                 extra=("In-Reply-To: <smime-signed-enc-hp-baseline@example>",
                        "References: <smime-signed-enc-hp-baseline@example>")),
]


def _bob() -> tuple:
    return crypto_key(*PEM, "bob.encrypt.key"), crypto_cert(*PEM, "bob.encrypt.crt")


def _header_block(content: bytes) -> list[str]:
    head = content.split(b"\r\n\r\n", 1)[0].decode("ascii")
    return head.replace("\r\n ", " ").split("\r\n")


@pytest.mark.parametrize("row", ENCRYPTED_ROWS, ids=lambda r: r.section)
def test_encrypted_vector_decrypts_verifies_and_shows_its_protected_fields(
    row: EncryptedRow,
) -> None:
    data = (VECTORS / row.file).read_bytes()
    key, cert = _bob()
    result = smimekit.decrypt_verify(data, key, cert, trust=_anchor(), at=AT, revocation=None)
    verdict = result.verdict
    assert verdict.valid and verdict.from_address == "alice@smime.example"
    assert [layer.kind for layer in verdict.layers] == ["encrypted", "signed"]
    hp = verdict.header_protection
    assert hp is not None and (hp.scheme, hp.mode) == ("rfc9788", "cipher")
    assert hp.protected == FIELDS + tuple(line.split(":", 1)[0] for line in row.extra)
    assert hp.obscured == row.obscured and hp.disagreed == ()
    assert hp.legacy_display_removed is row.legacy
    assert hp.problems == () and hp.notes == ()
    assert "obscured outside: " + ", ".join(row.obscured) in verdict.summary()
    # The header block shown is the protected one the RFC prints, with no HP-Outer left in it
    # and none of the obscured outer values ("[...]", the bare addresses, the UTC date).
    header = _header_block(result.content)
    protected = row.protected_lines()
    assert header[: len(protected)] == protected
    assert header[len(protected):] == [*ENCRYPTED_HEADER_TAIL,
                                       f'Content-Type: {row.content_type}; charset="utf-8";'
                                       ' hp="cipher"']
    shown = result.as_message()
    assert shown.get_all("Subject") == [row.name]
    assert shown.get_all("From") == ["Alice <alice@smime.example>"]
    body = result.content.split(b"\r\n\r\n", 1)[1]
    # The body is the RFC's, without the legacy display element of section 2.1.2.
    assert body.startswith(b"This is the\r\n" + row.name.encode() + b"\r\nmessage.\r\n")
    assert body.endswith(b"\r\n-- \r\nAlice\r\nalice@smime.example\r\n")
    assert b"Subject: " not in body


@pytest.mark.parametrize("row", ENCRYPTED_ROWS, ids=lambda r: r.section)
def test_encrypted_vector_decrypt_alone_reads_the_protection_and_keeps_the_signature(
    row: EncryptedRow,
) -> None:
    """decrypt() shows the protected fields over the still-signed part; verifying that part
    later cannot know it was encrypted, so it reads hp="cipher" as "clear" (RFC 9788
    section 10.2) and the signature still holds."""
    data = (VECTORS / row.file).read_bytes()
    key, cert = _bob()
    opened = smimekit.decrypt(data, key, cert)
    assert (opened.cipher, opened.recipient) == ("aes128-cbc", "ktri-rsaes_pkcs1v15")
    hp = opened.header_protection
    assert hp is not None and (hp.scheme, hp.mode) == ("rfc9788", "cipher")
    assert hp.obscured == row.obscured
    assert _header_block(opened.content)[:6] == row.protected_lines()[:6]
    later = smimekit.verify(opened.content, trust=_anchor(), at=AT, revocation=None)
    assert later.verdict.valid
    assert later.verdict.header_protection is not None
    assert later.verdict.header_protection.mode == "clear"


@pytest.mark.parametrize("row", ENCRYPTED_ROWS, ids=lambda r: r.section)
def test_encrypted_vector_with_a_rewritten_outer_subject_reports_it(row: EncryptedRow) -> None:
    """HP-Outer records "[...]" as the outer Subject: a list tag added on the way is not what
    the sender sent, so it is reported, and the protected Subject is still the one shown."""
    data = (VECTORS / row.file).read_bytes()
    changed = data.replace(b"Subject: [...]\r\n", b"Subject: [list] [...]\r\n", 1)
    assert changed != data
    key, cert = _bob()
    result = smimekit.decrypt_verify(changed, key, cert, trust=_anchor(), at=AT, revocation=None)
    hp = result.verdict.header_protection
    assert result.verdict.valid and hp is not None and hp.disagreed == ("Subject",)
    assert result.as_message().get_all("Subject") == [row.name]


def test_encrypted_vector_is_not_for_carlos() -> None:
    data = (VECTORS / ENCRYPTED_ROWS[0].file).read_bytes()
    key = crypto_key(*PEM, "carlos.encrypt.key")
    cert = crypto_cert(*PEM, "carlos.encrypt.crt")
    with pytest.raises(NoRecipientError):
        smimekit.decrypt(data, key, cert)


def test_complex_encrypted_vector_drops_both_legacy_display_elements() -> None:
    """C.3.12: multipart/mixed (alternative text/plain + text/html, inline PNG) under hcp_shy;
    both main body parts carry a legacy display element, the HTML one as a <div> of class
    header-protection-legacy-display (RFC 9788 sections 2.1.2, 4.5.3). Neither may be shown,
    and the image is untouched."""
    row = EncryptedRow("smime-signed-enc-complex-hp-shy-legacy.eml", "C.3.12",
                       "Sat, 20 Feb 2021 12:13:02 -0500", SHY_OBSCURED, legacy=True,
                       content_type="multipart/mixed")
    data = (VECTORS / row.file).read_bytes()
    key, cert = _bob()
    result = smimekit.decrypt_verify(data, key, cert, trust=_anchor(), at=AT, revocation=None)
    assert result.verdict.valid and result.verdict.from_address == "alice@smime.example"
    hp = result.verdict.header_protection
    assert hp is not None and (hp.scheme, hp.mode) == ("rfc9788", "cipher")
    assert hp.protected == FIELDS and hp.obscured == SHY_OBSCURED and hp.disagreed == ()
    assert hp.legacy_display_removed and hp.problems == ()
    assert _header_block(result.content) == [
        *row.protected_lines(),
        "MIME-Version: 1.0",
        'Content-Type: multipart/mixed; boundary="88b"; hp="cipher"',
    ]
    shown = result.as_message()
    parts = {p.get_content_type(): p for p in shown.walk() if not p.is_multipart()}
    assert sorted(parts) == ["image/png", "text/html", "text/plain"]
    plain = parts["text/plain"].get_content()
    assert plain.startswith(f"This is the\r\n{row.name}\r\nmessage.\r\n")
    assert "Subject:" not in plain and "From:" not in plain
    html = parts["text/html"].get_content()
    assert "header-protection-legacy-display" not in html and "Subject:" not in html
    assert f"<b>{row.name}</b>" in html
    for part in (parts["text/plain"], parts["text/html"]):
        assert part.get_param("hp-legacy-display") is None
    png = parts["image/png"].get_content()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and png.endswith(b"IEND\xaeB`\x82")
    assert len(png) == 169


RFC8551_ENCRYPTED = "smime-enc-signed-complex-rfc8551hp-baseline.eml"


def test_encrypted_rfc8551_vector_infers_confidentiality_from_the_outer_fields() -> None:
    """C.3.17: RFC 8551 wrapping (message/rfc822, LF line endings inside) under encryption.
    RFC 9788 section 4.10.2: read as hp="cipher", with the actual outer fields in place of
    HP-Outer, so the outer Subject "[...]" is an obscured field, not one changed on the way."""
    data = (VECTORS / RFC8551_ENCRYPTED).read_bytes()
    key, cert = _bob()
    result = smimekit.decrypt_verify(data, key, cert, trust=_anchor(), at=AT, revocation=None)
    verdict = result.verdict
    assert verdict.valid and verdict.from_address == "alice@smime.example"
    assert verdict.warnings == ()
    hp = verdict.header_protection
    assert hp is not None and (hp.scheme, hp.mode) == ("rfc8551", "cipher")
    assert hp.protected == FIELDS and hp.obscured == ("Subject",) and hp.disagreed == ()
    name = RFC8551_ENCRYPTED.removesuffix(".eml")
    assert _header_block(result.content) == [
        f"Subject: {name}",
        f"Message-ID: <{name}@example>",
        "From: Alice <alice@smime.example>",
        "To: Bob <bob@smime.example>",
        "Date: Sat, 20 Feb 2021 12:28:02 -0500",
        "User-Agent: Sample MUA Version 1.0",
        "MIME-Version: 1.0",
        'Content-Type: multipart/mixed; boundary="144"',
    ]
    parts = [p.get_content_type() for p in result.as_message().walk()]
    assert parts == ["multipart/mixed", "multipart/alternative", "text/plain", "text/html",
                     "image/png"]


def test_encrypted_rfc8551_vector_still_reports_an_outer_field_the_sender_did_not_protect(
) -> None:
    data = (VECTORS / RFC8551_ENCRYPTED).read_bytes()
    added = data.replace(b"User-Agent: Sample MUA", b"Reply-To: mallory@evil.example\r\n"
                         b"User-Agent: Sample MUA", 1)
    key, cert = _bob()
    result = smimekit.decrypt_verify(added, key, cert, trust=_anchor(), at=AT, revocation=None)
    hp = result.verdict.header_protection
    assert hp is not None and hp.disagreed == ("Reply-To",) and hp.obscured == ("Subject",)
    assert result.as_message().get_all("Reply-To") is None


@pytest.mark.parametrize(
    "file", [*(r.file for r in ENCRYPTED_ROWS), RFC8551_ENCRYPTED], ids=lambda f: f[:-4]
)
def test_encrypted_vector_with_a_forged_outer_from_is_not_valid(file: str) -> None:
    """Whatever the header protection infers about the outside, an outer From naming another
    address than the signer's still fails the sender binding."""
    data = (VECTORS / file).read_bytes()
    forged = data.replace(b"From: Alice <alice@smime.example>\r\n",
                          b"From: Alice <mallory@evil.example>\r\n", 1)
    forged = forged.replace(b"From: alice@smime.example\r\n", b"From: mallory@evil.example\r\n", 1)
    assert forged != data
    key, cert = _bob()
    result = smimekit.decrypt_verify(forged, key, cert, trust=_anchor(), at=AT, revocation=None,
                                     raise_for_failure=False)
    assert not result.verdict.valid
    assert result.as_message().get_all("From") == ["Alice <alice@smime.example>"]


NO_HP_ENCRYPTED = "smime-signed-enc.eml"


def test_encrypted_vector_without_header_protection_reports_none() -> None:
    """C.1.4, the counterexample: signed and encrypted, no header protection. The summary must
    claim none, and the header block is the (unprotected) outer one."""
    data = (VECTORS / NO_HP_ENCRYPTED).read_bytes()
    key, cert = _bob()
    result = smimekit.decrypt_verify(data, key, cert, trust=_anchor(), at=AT, revocation=None)
    verdict = result.verdict
    assert verdict.valid and verdict.from_address == "alice@smime.example"
    assert [layer.kind for layer in verdict.layers] == ["encrypted", "signed"]
    assert verdict.header_protection is None and "protected headers" not in verdict.summary()
    assert smimekit.decrypt(data, key, cert).header_protection is None
    shown = result.as_message()
    assert shown.get_all("Subject") == ["smime-signed-enc"]
    assert shown.get_content_type() == "text/plain"
    assert result.content.split(b"\r\n\r\n", 1)[1].startswith(
        b"This is the\r\nsmime-signed-enc\r\nmessage.\r\n")


def test_encrypted_vector_without_header_protection_has_one_mime_version() -> None:
    data = (VECTORS / NO_HP_ENCRYPTED).read_bytes()
    key, cert = _bob()
    result = smimekit.decrypt_verify(data, key, cert, trust=_anchor(), at=AT, revocation=None)
    assert _header_block(result.content).count("MIME-Version: 1.0") == 1
