"""Header protection, the sending side (RFC 9788): the HCPs, protect(), and the recipes.

The reading side (what decrypt/verify make of hp=, HP-Outer, legacy display) is tested with
it; here the bytes we write are checked against what RFC 9788 says they must be.
"""

from __future__ import annotations

import email
import email.policy
import re

import pytest
from hpwire import wire_payload
from pki import Identity, message

import smimekit
from smimekit.errors import MIMEError, SignatureInvalidError, UnsupportedError
from smimekit.smime.canonical import Entity, split_head_body
from smimekit.smime.hp import (
    HeaderConfidentiality,
    hcp_baseline,
    hcp_named,
    hcp_no_confidentiality,
    hcp_shy,
    protect,
)
from smimekit.smime.message import prepare_chunks

RICH = (
    b"From: Alice Example <alice@example.org>\r\n"
    b"To: Bob <bob@example.org>, \"Carol, C.\" <carol@example.org>\r\n"
    b"Cc: dave@example.org\r\n"
    b"Bcc: eve@example.org\r\n"
    b"Received: from relay.example.org by mx.example.org\r\n"
    b"Subject: The Jones contract\r\n"
    b"Keywords: contract, urgent\r\n"
    b"Comments: not for the file\r\n"
    b"Date: Sat, 20 Feb 2021 10:09:02 -0500\r\n"
    b"Message-ID: <hp-1@example.org>\r\n"
    b"In-Reply-To: <hp-0@example.org>\r\n"
    b"HP-Outer: Subject: forged from outside\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=us-ascii\r\n"
    b"\r\n"
    b"Let's meet at eight.\r\n"
)


def _protect(raw: bytes, mode: str, **kwargs: object) -> tuple[bytes, Entity]:
    """(the new outer header section, the payload parsed)."""
    outer, entity = prepare_chunks(raw)
    done = protect(outer, entity, mode=mode, **kwargs)  # type: ignore[arg-type]
    head = b"".join(h.raw + b"\r\n" for h in done.outer)
    return head, Entity.parse(b"".join(bytes(c) for c in done.entity))


def _fields(head_or_entity: bytes | Entity) -> list[tuple[str, str]]:
    headers = (head_or_entity.headers if isinstance(head_or_entity, Entity)
               else Entity.parse(head_or_entity + b"\r\n").headers)
    return [(h.name, h.value()) for h in headers]


# --- the header confidentiality policies (RFC 9788 3.2) ------------------------------------


def test_hcp_baseline_hides_the_subject_and_drops_keywords_and_comments() -> None:
    assert hcp_baseline("Subject", "The Jones contract") == "[...]"
    assert hcp_baseline("SUBJECT", "x") == "[...]"
    assert hcp_baseline("Keywords", "contract") is None
    assert hcp_baseline("comments", "not for the file") is None
    for name, value in [("From", "Alice <alice@example.org>"), ("To", "bob@example.org"),
                        ("Date", "Sat, 20 Feb 2021 10:09:02 -0500"),
                        ("Message-ID", "<hp-1@example.org>"), ("References", "<a@b>")]:
        assert hcp_baseline(name, value) == value


def test_hcp_shy_also_strips_display_names_and_gives_the_date_in_utc() -> None:
    # RFC 9788 test vector C.3.7 (hcp_shy): "From: alice@smime.example" outside, bare
    assert hcp_shy("From", "Alice Example <alice@example.org>") == "alice@example.org"
    assert hcp_shy("To", 'Bob <bob@example.org>, "Carol, C." <carol@example.org>') == (
        "bob@example.org, carol@example.org")
    assert hcp_shy("Cc", "dave@example.org") == "dave@example.org"  # unchanged: not hidden
    # a From of several mailboxes is not "an RFC 5322 mailbox": left as it is
    assert hcp_shy("From", "A <a@example.org>, B <b@example.org>") == (
        "A <a@example.org>, B <b@example.org>")
    assert hcp_shy("Date", "Sat, 20 Feb 2021 10:09:02 -0500") == (
        "Sat, 20 Feb 2021 15:09:02 +0000")
    assert hcp_shy("Date", "Sat, 20 Feb 2021 10:09:02 -0000") == (
        "Sat, 20 Feb 2021 10:09:02 +0000")
    assert hcp_shy("Subject", "x") == "[...]"
    assert hcp_shy("Keywords", "x") is None
    assert hcp_shy("Message-ID", "<hp-1@example.org>") == "<hp-1@example.org>"


def test_hcp_shy_leaves_what_it_cannot_parse_alone() -> None:
    # A group or an unparseable value is not rewritten on a guess: the mail must be delivered.
    assert hcp_shy("To", "undisclosed-recipients:;") == "undisclosed-recipients:;"
    assert hcp_shy("Date", "yesterday, around noon") == "yesterday, around noon"


def test_hcp_no_confidentiality_changes_nothing() -> None:
    assert hcp_no_confidentiality("Subject", "The Jones contract") == "The Jones contract"
    assert hcp_no_confidentiality("Keywords", "contract") == "contract"


def test_hcp_by_name_and_unknown_name() -> None:
    assert hcp_named("shy") is HeaderConfidentiality.SHY
    assert HeaderConfidentiality.SHY.function is hcp_shy
    assert hcp_named(HeaderConfidentiality.NONE).function is hcp_no_confidentiality
    with pytest.raises(UnsupportedError, match="unknown header confidentiality policy 'strict'"):
        hcp_named("strict")


# --- protect(): the payload and the outside ------------------------------------------------


def test_clear_mode_copies_the_fields_in_and_changes_nothing_outside() -> None:
    head, payload = _protect(RICH, "clear")
    original = [(n, v) for n, v in _fields(RICH.split(b"\r\n\r\n")[0])
                if not n.lower().startswith(("content-", "mime-version"))]
    # The outside is the input's (minus the forged HP-Outer, which is nobody's to claim).
    assert _fields(head) == [f for f in original if f[0] != "HP-Outer"]
    copied = [f for f in _fields(payload) if not f[0].lower().startswith("content-")]
    assert copied == [f for f in original if f[0] not in ("Bcc", "Received", "HP-Outer")]
    assert payload.params["hp"] == "clear"
    assert payload.content_type == "text/plain" and payload.params["charset"] == "us-ascii"
    assert payload.body == b"Let's meet at eight.\r\n"


def test_cipher_mode_baseline_hides_outside_and_records_hp_outer() -> None:
    head, payload = _protect(RICH, "cipher")
    outside = dict(_fields(head))
    assert outside["Subject"] == "[...]"
    assert "Keywords" not in outside and "Comments" not in outside
    assert outside["From"] == "Alice Example <alice@example.org>"
    assert outside["Bcc"] == "eve@example.org"  # not protected: left to the transport
    assert "HP-Outer" not in outside
    assert payload.params["hp"] == "cipher"
    inside = _fields(payload)
    assert ("Subject", "The Jones contract") in inside
    assert ("Keywords", "contract, urgent") in inside
    assert not any(name in ("Bcc", "Received") for name, _ in inside)
    # One HP-Outer per protected field still outside, with exactly the outer value; none
    # for the removed Keywords and Comments (their absence says "removed", RFC 9788 2.2).
    records = [v for n, v in inside if n == "HP-Outer"]
    protected_outside = [(n, v) for n, v in _fields(head) if n not in ("Bcc", "Received")]
    assert records == [f"{n}: {v}" for n, v in protected_outside]
    assert "Subject: forged from outside" not in records


def test_cipher_mode_shy_and_none() -> None:
    head, payload = _protect(RICH, "cipher", hcp=hcp_shy)
    outside = dict(_fields(head))
    assert outside["From"] == "alice@example.org"  # RFC 9788 C.3.7: bare addr-spec
    assert outside["To"] == "bob@example.org, carol@example.org"
    assert outside["Date"] == "Sat, 20 Feb 2021 15:09:02 +0000"
    assert "HP-Outer: From: alice@example.org" in payload.raw.decode()
    head, payload = _protect(RICH, "cipher", hcp=hcp_no_confidentiality)
    assert dict(_fields(head))["Subject"] == "The Jones contract"
    assert "HP-Outer: Subject: The Jones contract" in payload.raw.decode()


def test_a_policy_cannot_inject_header_lines() -> None:
    with pytest.raises(MIMEError, match="line break"):
        _protect(RICH, "cipher", hcp=lambda name, value: value + "\r\nBcc: mallory@example.net")


def test_a_payload_that_already_claims_hp_gets_only_our_claim() -> None:
    raw = RICH.replace(b"charset=us-ascii", b'charset=us-ascii; hp="clear"')
    _, payload = _protect(raw, "cipher")
    ctype = payload.get("content-type") or ""
    assert ctype.count("hp=") == 1 and payload.params["hp"] == "cipher"


def test_long_fields_are_folded_and_unfold_to_the_value() -> None:
    people = [f"Person {i} <person{i}@example.org>" for i in range(60)]
    many = ", ".join(people)
    raw = RICH.replace(b"Cc: dave@example.org", b"Cc: " + ",\r\n ".join(people).encode())
    _, payload = _protect(raw, "cipher")
    head, _ = split_head_body(payload.raw)
    assert max(len(line) for line in head.split(b"\r\n")) <= 998
    records = [v for n, v in _fields(payload) if n == "HP-Outer" and v.startswith("Cc:")]
    assert records == [f"Cc: {many}"]


def test_the_body_is_not_copied_for_a_large_message() -> None:
    body = b"0123456789abcdef" * 8 + b"\r\n"
    raw = message(body=body * 20_000)
    outer, entity = prepare_chunks(raw)
    done = protect(outer, entity, mode="cipher")
    assert isinstance(done.entity[-1], memoryview)  # still the view into the input
    assert bytes(done.entity[-1]).startswith(body)


# --- legacy display (RFC 9788 2.1.2) ------------------------------------------------------


def test_legacy_display_in_a_text_plain_payload() -> None:
    _, payload = _protect(RICH, "cipher", legacy_display=True)
    assert payload.params["hp-legacy-display"] == "1"
    assert payload.decoded_body() == (
        b"Subject: The Jones contract\r\n\r\nLet's meet at eight.\r\n")
    # Keywords and Comments were hidden too, but are not user-facing (RFC 9787 1.1.2).


def test_legacy_display_only_when_a_user_facing_field_is_hidden() -> None:
    _, payload = _protect(RICH, "cipher", hcp=hcp_no_confidentiality, legacy_display=True)
    assert "hp-legacy-display" not in payload.params
    _, payload = _protect(RICH, "clear", legacy_display=True)
    assert "hp-legacy-display" not in payload.params


def test_legacy_display_in_every_alternative_and_never_in_an_attachment() -> None:
    raw = RICH.split(b"Content-Type:")[0] + (
        b'Content-Type: multipart/mixed; boundary="m"\r\n\r\n'
        b'--m\r\nContent-Type: multipart/alternative; boundary="a"\r\n\r\n'
        b"--a\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nHi.\r\n"
        b"--a\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        b"<html><head><title>x</title></head><body class=\"m\"><p>Hi.</p></body></html>\r\n"
        b"--a--\r\n"
        b"--m\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename=a.txt"
        b"\r\n\r\nnotes\r\n--m--\r\n"
    )
    _, payload = _protect(raw, "cipher", hcp=hcp_shy, legacy_display=True)
    msg = email.message_from_bytes(payload.raw, policy=email.policy.default)
    plain, html_part, attachment = [p for p in msg.walk() if not p.is_multipart()]
    text = plain.get_content().replace("\r\n", "\n")
    assert plain.get_param("hp-legacy-display") == "1"
    assert text.startswith("From: Alice Example <alice@example.org>\n")
    assert "Subject: The Jones contract\n" in text and text.endswith("\n\nHi.")
    assert "Keywords" not in text  # not user-facing
    page = html_part.get_content().replace("\r\n", "\n")
    assert html_part.get_param("hp-legacy-display") == "1"
    assert re.search(r'<body class="m">\s*<div class="header-protection-legacy-display">\s*'
                     r"<pre>From: Alice Example &lt;alice@example.org&gt;", page)
    assert page.rstrip().endswith("<p>Hi.</p></body></html>")
    assert attachment.get_param("hp-legacy-display") is None
    assert attachment.get_content() == "notes"


def test_legacy_display_decodes_encoded_words_and_keeps_the_text_7bit() -> None:
    raw = RICH.replace(b"Subject: The Jones contract",
                       b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?=")
    _, payload = _protect(raw, "cipher", legacy_display=True)
    assert payload.raw.isascii()
    assert payload.params["charset"] == "utf-8"
    assert payload.decoded_body().decode("utf-8").startswith("Subject: Grüße aus Köln\r\n\r\n")


# --- the recipes protect by default ---------------------------------------------------------


@pytest.mark.parametrize("opaque", [False, True])
def test_sign_covers_the_headers_with_hp_clear(alice: Identity, trust: list, opaque: bool
                                               ) -> None:
    signed = smimekit.sign(message(), alice.key, alice.cert, opaque=opaque)
    head = signed.split(b"\r\n\r\n", 1)[0]
    assert b"Subject: test" in head  # signing hides nothing
    result = smimekit.verify(signed, trust=trust)
    assert result.verdict.valid
    payload = wire_payload(signed)
    assert payload.params["hp"] == "clear"
    assert ("Subject", "test") in _fields(payload)
    assert not any(name == "HP-Outer" for name, _ in _fields(payload))
    protection = result.verdict.header_protection
    assert protection is not None and "Subject" in protection.protected
    assert ("Subject", "test") in _fields(result.content.split(b"\r\n\r\n", 1)[0])


def test_the_signature_now_covers_the_subject(alice: Identity, trust: list) -> None:
    signed = smimekit.sign(message(), alice.key, alice.cert)
    outside, inside = signed.split(b"Subject: test", 1)
    tampered = outside + b"Subject: test" + inside.replace(b"Subject: test", b"Subject: paid", 1)
    with pytest.raises(SignatureInvalidError):
        smimekit.verify(tampered, trust=trust)


def test_sign_without_header_protection(alice: Identity) -> None:
    signed = smimekit.sign(message(), alice.key, alice.cert, header_protection=False)
    assert b"hp=" not in signed and signed.count(b"Subject: test") == 1


def test_encrypt_hides_the_subject_and_decrypts_to_the_protected_fields(
        alice: Identity, bob: Identity) -> None:
    sealed = smimekit.encrypt(message(), [bob.cert])
    outside = sealed.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nSubject: [...]\r\n" in outside and b"test" not in outside
    payload = wire_payload(sealed, bob.key, bob.cert)
    assert payload.params["hp"] == "cipher"
    fields = _fields(payload)
    assert ("Subject", "test") in fields and ("HP-Outer", "Subject: [...]") in fields
    assert payload.body == b"Hello, world.\r\n"
    # What decrypt shows: the protected fields, no HP-Outer record (smime/hp_read.py).
    shown = _fields(smimekit.decrypt(sealed, bob.key, bob.cert).content.split(b"\r\n\r\n")[0])
    assert ("Subject", "test") in shown and not any(n == "HP-Outer" for n, _ in shown)


@pytest.mark.parametrize(("hcp", "subject"), [("shy", b"[...]"), ("none", b"test")])
def test_encrypt_with_another_policy(bob: Identity, hcp: str, subject: bytes) -> None:
    sealed = smimekit.encrypt(message(), [bob.cert], hcp=hcp)
    assert b"\r\nSubject: " + subject + b"\r\n" in sealed.split(b"\r\n\r\n", 1)[0]
    payload = wire_payload(sealed, bob.key, bob.cert)
    assert ("HP-Outer", "Subject: " + subject.decode()) in _fields(payload)


def test_encrypt_without_header_protection_is_the_old_form(bob: Identity) -> None:
    sealed = smimekit.encrypt(message(), [bob.cert], header_protection=False)
    assert b"\r\nSubject: test\r\n" in sealed
    assert b"hp=" not in smimekit.decrypt(sealed, bob.key, bob.cert).content


def test_an_unknown_policy_is_refused_before_anything_is_done(alice: Identity, bob: Identity
                                                            ) -> None:
    with pytest.raises(UnsupportedError):
        smimekit.encrypt(message(), [bob.cert], hcp="loud")
    with pytest.raises(UnsupportedError):
        smimekit.sign_encrypt(message(), alice.key, alice.cert, [bob.cert], hcp="loud")


def test_sign_encrypt_marks_the_signed_payload_cipher(alice: Identity, bob: Identity,
                                                      trust: list) -> None:
    sealed = smimekit.sign_encrypt(message(), alice.key, alice.cert, [bob.cert],
                                   legacy_display=True)
    assert b"\r\nSubject: [...]\r\n" in sealed.split(b"\r\n\r\n", 1)[0]
    # Decrypting stops at the signature (its header block: the protected fields, read from
    # under the signature), and the payload under the signature is the innermost part,
    # marked hp="cipher".
    signed = smimekit.decrypt(sealed, bob.key, bob.cert).content
    assert b"multipart/signed" in signed.split(b"\r\n\r\n", 1)[0]
    result = smimekit.verify(signed, trust=trust)
    assert result.verdict.valid
    payload = wire_payload(signed)
    assert payload.params["hp"] == "cipher" and payload.params["hp-legacy-display"] == "1"
    assert ("Subject", "test") in _fields(payload)
    assert payload.decoded_body() == b"Subject: test\r\n\r\nHello, world.\r\n"
    assert smimekit.decrypt_verify(sealed, bob.key, bob.cert, trust=trust).verdict.valid


def test_a_layer_is_not_a_payload_sign_after_encrypt(alice: Identity, bob: Identity,
                                                     trust: list) -> None:
    # The payload is inside the encryption (hp="cipher" there); hp never goes on a layer.
    sealed = smimekit.encrypt(message(), [bob.cert])
    signed = smimekit.sign(sealed, alice.key, alice.cert)
    first_part = signed.split(b"\r\n\r\n", 2)[2]
    assert b"hp=" not in first_part.split(b"\r\n\r\n", 1)[0]
    result = smimekit.decrypt_verify(signed, bob.key, bob.cert, trust=trust)
    assert result.verdict.valid and b'hp="cipher"' in result.content


def test_encrypting_a_signed_message_hides_nothing_and_says_so(alice: Identity, bob: Identity,
                                                               trust: list) -> None:
    signed = smimekit.sign(message(), alice.key, alice.cert)
    warnings: list[str] = []
    sealed = smimekit.encrypt(signed, [bob.cert], on_warning=warnings.append,
                              check_recipients=True, trust=trust)
    assert b"\r\nSubject: test\r\n" in sealed.split(b"\r\n\r\n", 1)[0]
    assert any("use sign-encrypt" in w for w in warnings)
    result = smimekit.decrypt_verify(sealed, bob.key, bob.cert, trust=trust)
    assert result.verdict.valid and b'hp="clear"' in result.content
