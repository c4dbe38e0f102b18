"""Header protection round trips: what smimekit's sending side writes (smime/hp.py), read back
by its receiving side (smime/hp_read.py) through verify, decrypt and decrypt_verify.

Every protected field comes back with its value as sent, the verdict lists them, the fields
each header confidentiality policy hid are reported as obscured (and nothing as disagreeing),
and a legacy display element is not shown a second time.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import email.utils

import pytest
from pki import NOW, Identity

import smimekit
from smimekit.smime.canonical import Entity

# -0500 on purpose: hcp_shy writes the outer Date in UTC.
DATE = email.utils.format_datetime(NOW.astimezone(email.utils.parsedate_to_datetime(
    "Mon, 07 Dec 2026 00:00:00 -0500").tzinfo))
FIELDS = [
    ("From", "Alice Example <alice@example.org>"),
    ("To", "Bob Example <bob@example.org>"),
    ("Cc", "Carol <carol@example.org>"),
    ("Subject", "=?utf-8?q?Quarterly_figures_=E2=80=94_draft?="),
    ("Date", DATE),
    ("Message-ID", "<hp-roundtrip@example.org>"),
    ("In-Reply-To", "<earlier@example.org>"),
    ("References", "<earlier@example.org>"),
    ("Keywords", "figures, confidential"),
]
PLAIN = b"Content-Type: text/plain; charset=us-ascii\r\n\r\nThe figures are attached.\r\n"
ALTERNATIVE = (b'Content-Type: multipart/alternative; boundary="alt"\r\n\r\n'
               b"--alt\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
               b"The figures are attached.\r\n"
               b"--alt\r\nContent-Type: text/html; charset=us-ascii\r\n\r\n"
               b"<html><body><p>The figures are attached.</p></body></html>\r\n--alt--\r\n")
NAMES = tuple(name for name, _ in FIELDS)

# What each policy hides outside (RFC 9788 3.2): the Subject becomes [...], Keywords goes;
# shy also drops display names and moves the Date to UTC.
OBSCURED = {
    "baseline": ("Subject", "Keywords"),
    "shy": ("From", "To", "Cc", "Subject", "Date", "Keywords"),
    "none": (),
}


def _message(body: bytes = PLAIN) -> bytes:
    return "".join(f"{n}: {v}\r\n" for n, v in FIELDS).encode() + b"MIME-Version: 1.0\r\n" + body


def _assert_restored(content: bytes) -> None:
    shown = Entity.parse(content)
    for name, value in FIELDS:
        assert [h.value() for h in shown.headers if h.lname == name.lower()] == [value], name
    assert not any(h.lname == "hp-outer" for h in shown.headers)


def _assert_body(content: bytes, body: bytes) -> None:
    shown = email.message_from_bytes(content, policy=email.policy.default)
    assert isinstance(shown, email.message.EmailMessage)
    texts = [part.get_content() for part in shown.walk() if not part.is_multipart()]
    for text in texts:
        assert "Subject:" not in text and "header-protection-legacy-display" not in text
        assert "The figures are attached." in text
    assert len(texts) == (2 if body is ALTERNATIVE else 1)


@pytest.mark.parametrize("opaque", [False, True], ids=["multipart-signed", "opaque"])
def test_signed_only_round_trip_restores_every_field(alice: Identity, trust: list,
                                                     opaque: bool) -> None:
    signed = smimekit.sign(_message(), alice.key, alice.cert, opaque=opaque)
    result = smimekit.verify(signed, trust=trust)
    verdict = result.verdict
    assert verdict.valid, verdict.summary()
    hp = verdict.header_protection
    assert hp is not None and (hp.scheme, hp.mode) == ("rfc9788", "clear")
    assert set(NAMES) <= set(hp.protected)
    assert hp.obscured == () and hp.disagreed == () and hp.problems == ()
    assert "protected headers (rfc9788, clear)" in verdict.summary()
    _assert_restored(result.content)


@pytest.mark.parametrize("legacy", [False, True], ids=["plain", "legacy-display"])
@pytest.mark.parametrize("hcp", ["baseline", "shy", "none"])
@pytest.mark.parametrize("body", [PLAIN, ALTERNATIVE], ids=["text", "alternative"])
def test_encrypted_round_trip(bob: Identity, hcp: str, legacy: bool, body: bytes) -> None:
    sealed = smimekit.encrypt(_message(body), [bob.cert], hcp=hcp, legacy_display=legacy,
                              check_recipients=False)
    result = smimekit.decrypt(sealed, bob.key, bob.cert)
    hp = result.header_protection
    assert hp is not None and (hp.scheme, hp.mode) == ("rfc9788", "cipher")
    assert set(NAMES) <= set(hp.protected)
    assert hp.obscured == OBSCURED[hcp] and hp.disagreed == () and hp.problems == ()
    assert hp.legacy_display_removed is (legacy and hcp != "none")
    _assert_restored(result.content)
    _assert_body(result.content, body)


@pytest.mark.parametrize("legacy", [False, True], ids=["plain", "legacy-display"])
@pytest.mark.parametrize("hcp", ["baseline", "shy", "none"])
def test_sign_encrypt_round_trip(alice: Identity, bob: Identity, trust: list, hcp: str,
                                 legacy: bool) -> None:
    sealed = smimekit.sign_encrypt(_message(ALTERNATIVE), alice.key, alice.cert, [bob.cert],
                                   hcp=hcp, legacy_display=legacy, check_recipients=False)
    result = smimekit.decrypt_verify(sealed, bob.key, bob.cert, trust=trust)
    verdict = result.verdict
    assert verdict.valid, verdict.summary()
    assert verdict.from_address == "alice@example.org"
    hp = verdict.header_protection
    assert hp is not None and hp.mode == "cipher" and hp.obscured == OBSCURED[hcp]
    assert hp.disagreed == ()
    assert "protected headers (rfc9788, cipher)" in verdict.summary()
    _assert_restored(result.content)
    _assert_body(result.content, ALTERNATIVE)

    # decrypt, then verify the output: the same fields, the signature untouched.
    decrypted = smimekit.decrypt(sealed, bob.key, bob.cert)
    _assert_restored(decrypted.content)
    assert decrypted.header_protection is not None
    assert decrypted.header_protection.obscured == OBSCURED[hcp]
    again = smimekit.verify(decrypted.content, trust=trust)
    assert again.verdict.valid and again.verdict.header_protection is not None
    assert again.verdict.header_protection.disagreed == ()
    _assert_restored(again.content)
    _assert_body(again.content, ALTERNATIVE)


def test_without_header_protection_nothing_is_claimed(alice: Identity, bob: Identity,
                                                      trust: list) -> None:
    sealed = smimekit.sign_encrypt(_message(), alice.key, alice.cert, [bob.cert],
                                   header_protection=False, check_recipients=False)
    result = smimekit.decrypt_verify(sealed, bob.key, bob.cert, trust=trust)
    assert result.verdict.valid and result.verdict.header_protection is None
    _assert_restored(result.content)


def test_relay_rewriting_the_obscured_subject_is_reported(bob: Identity) -> None:
    sealed = smimekit.encrypt(_message(), [bob.cert], check_recipients=False)
    assert b"Subject: [...]" in sealed
    tampered = sealed.replace(b"Subject: [...]", b"Subject: URGENT: wire the money", 1)
    result = smimekit.decrypt(tampered, bob.key, bob.cert)
    assert result.header_protection is not None
    assert result.header_protection.disagreed == ("Subject",)
    _assert_restored(result.content)
