"""Signature spoofing, crafted with the test PKI: the attack classes of "Johnny, You Are Fired"
and a few more, each with the verdict smimekit must give.

The cast: alice@example.org (trusted, the genuine signer), bob@example.org (trusted),
attacker@evil.example (trusted: an attacker with a real certificate of their own), and "rogue"
(a certificate for alice's address from a CA nobody trusts). The boss, boss@corp.example, has
no certificate at all: every attack tries to make a verdict say that the boss signed.

An assertion that fails here documents a gap in smimekit; it states what the verdict should
say and is not weakened to match what it says today.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import re
from collections.abc import Callable

import pytest
from asn1crypto import cms
from pki import DATE, NOW, PKI, Identity, _name, ca_cert, message, new_key

import smimekit
from smimekit.cms.signed import SignerSpec, sign_data
from smimekit.errors import (
    MalformedError,
    MIMEError,
    NoSignatureError,
    SignatureInvalidError,
    UntrustedError,
    VerificationError,
)
from smimekit.smime.canonical import Entity
from smimekit.smime.message import build_multipart_signed, build_pkcs7_mime, prepare
from smimekit.validation.verdict import Verdict

BOSS = "boss@corp.example"
ATTACKER = "attacker@evil.example"
FIRED = b"You are fired."
SENDER_REASON = r"(?i)\bsender\b|\bFrom\b"


# --- the cast ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def attacker(pki: PKI) -> Identity:
    return pki.person("attacker", "p256", email=ATTACKER, issuer=(pki.root_key, pki.root))


@pytest.fixture(scope="module")
def rogue(pki: PKI) -> Identity:
    """A certificate for alice's own address, issued by a CA that is not trusted."""
    key = new_key("p256#rogue-root")
    root = ca_cert(key, _name("Rogue Root"), key, _name("Rogue Root"))  # type: ignore[arg-type]
    return pki.person("rogue", "p256", email="alice@example.org", issuer=(key, root))  # type: ignore[arg-type]


# --- helpers -------------------------------------------------------------------------------


def _verdict(data: bytes, trust: list, **kw: object) -> Verdict:
    return smimekit.verify(data, trust=trust, raise_for_failure=False, **kw).verdict  # type: ignore[arg-type]


def _reasons(verdict: Verdict) -> str:
    return " | ".join(verdict.all_reasons())


def _entity(signed: bytes) -> bytes:
    """The MIME entity of a message smimekit built (what follows its MIME-Version line)."""
    return signed.split(b"MIME-Version: 1.0\r\n", 1)[1]


def _headers(sender: str = "alice@example.org", date: str = DATE) -> bytes:
    return (f"From: {sender}\r\nTo: bob@example.org\r\nSubject: news\r\nDate: {date}\r\n"
            "Message-ID: <spoof@example.org>\r\nMIME-Version: 1.0\r\n").encode()


def _multipart(subtype: str, *parts: bytes, sender: str = "alice@example.org") -> bytes:
    body = b"".join(b"--outer\r\n" + p + b"\r\n" for p in parts) + b"--outer--\r\n"
    return (_headers(sender) + f'Content-Type: multipart/{subtype}; boundary="outer"\r\n\r\n'
            .encode() + body)


def _text(body: bytes = FIRED, ctype: bytes = b"text/plain") -> bytes:
    return b"Content-Type: " + ctype + b"\r\n\r\n" + body


def _with_headers(data: bytes, *lines: bytes) -> bytes:
    """Add header lines at the top of a message, outside any signature."""
    return b"".join(line + b"\r\n" for line in lines) + data


def _detached(entity: bytes, der: bytes) -> bytes:
    """A multipart/signed from alice showing ``entity`` next to the signature ``der``."""
    outer = Entity.parse(message()).outer_headers
    return build_multipart_signed(outer, entity, der, "sha-256")


def _signed_data(der: bytes) -> cms.ContentInfo:
    return cms.ContentInfo.load(der)


def _assert_not_signed(v: Verdict, *, partial: bool) -> None:
    assert not v.valid
    assert not v.signed and v.signers == ()
    assert v.partially_signed is partial
    assert re.search(r"not signed", _reasons(v)), _reasons(v)
    assert v.summary().startswith("NOT SIGNED: ")


def _refused_or_invalid(call: Callable[[], Verdict], reason: str) -> None:
    """Either refused as malformed, or judged not valid, naming ``reason`` in both cases."""
    try:
        verdict = call()
    except MalformedError as exc:
        assert re.search(reason, str(exc)), str(exc)
        return
    assert not verdict.valid, verdict.summary()
    assert re.search(reason, _reasons(verdict)), _reasons(verdict)


# --- 1. unsigned parts around a genuinely signed one ----------------------------------------


def test_unsigned_text_before_a_signed_part_is_partially_signed(alice: Identity, trust: list
                                                                 ) -> None:
    signed = smimekit.sign(message(), alice.key, alice.cert)
    forged = _multipart("mixed", _text(), _entity(signed))
    _assert_not_signed(_verdict(forged, trust), partial=True)
    with pytest.raises(NoSignatureError, match="only a part of the message is signed"):
        smimekit.verify(forged, trust=trust)


def test_unsigned_text_after_a_signed_part_is_partially_signed(alice: Identity, trust: list
                                                                ) -> None:
    signed = smimekit.sign(message(), alice.key, alice.cert)
    forged = _multipart("mixed", _entity(signed), _text(b"P.S. " + FIRED))
    _assert_not_signed(_verdict(forged, trust), partial=True)


def test_unsigned_html_alternative_to_a_signed_part_is_partially_signed(alice: Identity,
                                                                         trust: list) -> None:
    # multipart/alternative: a client shows the last alternative it can render, the HTML.
    signed = smimekit.sign(message(), alice.key, alice.cert)
    forged = _multipart("alternative", _entity(signed), _text(b"<b>" + FIRED + b"</b>",
                                                              b"text/html"))
    _assert_not_signed(_verdict(forged, trust), partial=True)


def test_opaque_signed_part_inside_unsigned_mixed_is_partially_signed(alice: Identity,
                                                                       trust: list) -> None:
    signed = smimekit.sign(message(), alice.key, alice.cert, opaque=True)
    forged = _multipart("mixed", _text(), _entity(signed))
    _assert_not_signed(_verdict(forged, trust), partial=True)


def test_signed_message_attached_as_rfc822_is_partially_signed(alice: Identity, trust: list
                                                                ) -> None:
    signed = smimekit.sign(message(), alice.key, alice.cert)
    forged = _multipart("mixed", _text(), b"Content-Type: message/rfc822\r\n\r\n" + signed)
    _assert_not_signed(_verdict(forged, trust), partial=True)


def test_forwarded_signed_message_does_not_sign_the_outer_message(alice: Identity, trust: list
                                                                   ) -> None:
    """A whole signed message forwarded as the (unsigned) body: alice signed nothing here."""
    signed = smimekit.sign(message(), alice.key, alice.cert)
    forward = (_headers(ATTACKER) + b"Content-Type: message/rfc822\r\n\r\n" + signed)
    v = _verdict(forward, trust)
    assert not v.valid and not v.signed and v.signers == ()
    assert v.from_address == ATTACKER
    assert re.search(r"not signed", _reasons(v)), _reasons(v)
    with pytest.raises(NoSignatureError):
        smimekit.verify(forward, trust=trust)


def test_signed_part_among_unsigned_ones_inside_encryption_is_partially_signed(
        alice: Identity, bob: Identity, trust: list) -> None:
    """Encrypted to bob: inside, unsigned text next to alice's genuine signed part."""
    signed = smimekit.sign(message(), alice.key, alice.cert)
    sealed = smimekit.encrypt(_multipart("mixed", _text(), _entity(signed)), [bob.cert])
    v = smimekit.decrypt_verify(sealed, bob.key, bob.cert, trust=trust,
                                raise_for_failure=False).verdict
    assert v.encrypted and not v.valid and not v.signed and v.signers == ()
    assert re.search(r"not signed", _reasons(v)), _reasons(v)
    # The buried signature must be reported as partial signing, as without the encryption.
    assert v.partially_signed, _reasons(v)


def test_text_in_preamble_and_epilogue_is_never_released_as_signed(alice: Identity,
                                                                   trust: list) -> None:
    signed = smimekit.sign(message(), alice.key, alice.cert)
    forged = signed.replace(b"This is an S/MIME signed message",
                            b"<b>" + FIRED + b"</b><div style='display:none'>")
    forged += b"Epilogue: " + FIRED + b"\r\n"
    result = smimekit.verify(forged, trust=trust)
    assert result.verdict.valid  # alice's signature is genuine and covers the first part
    assert FIRED not in result.content
    assert b"Hello, world." in result.content


def test_signature_over_an_empty_part_releases_nothing_else(alice: Identity, trust: list
                                                            ) -> None:
    der = sign_data(b"", [SignerSpec(alice.key, alice.cert)])
    forged = _detached(b"", der).replace(b"This is an S/MIME signed message", FIRED)
    result = smimekit.verify(forged + FIRED + b"\r\n", trust=trust)
    assert result.verdict.valid  # a genuine signature over nothing
    assert FIRED not in result.content
    assert result.content.endswith(b"MIME-Version: 1.0\r\n\r\n")


def test_multipart_signed_with_a_third_unsigned_part_is_refused(alice: Identity, trust: list
                                                                ) -> None:
    signed = smimekit.sign(message(), alice.key, alice.cert)
    boundary = re.search(rb'boundary="([^"]+)"', signed)
    assert boundary is not None
    close = b"--" + boundary.group(1) + b"--"
    forged = signed.replace(close, b"--" + boundary.group(1) + b"\r\n" + _text() + b"\r\n"
                            + close)
    with pytest.raises(MIMEError, match="exactly 2 parts"):
        smimekit.verify(forged, trust=trust, raise_for_failure=False)


def test_second_content_type_header_at_the_root_is_refused_or_fails(alice: Identity,
                                                                    trust: list) -> None:
    """Two Content-Type fields (RFC 2045 allows one): a reader taking the last one renders
    the raw multipart body as HTML, attacker's preamble first."""
    signed = smimekit.sign(message(), alice.key, alice.cert)
    forged = signed.replace(b"This is an S/MIME signed message",
                            b"<b>" + FIRED + b"</b><div style='display:none'>")
    head, body = forged.split(b"\r\n\r\n", 1)
    forged = head + b"\r\nContent-Type: text/html\r\n\r\n" + body
    _refused_or_invalid(lambda: _verdict(forged, trust), r"(?i)content-type")


# --- 2. nested messages and the sender ------------------------------------------------------


def _wrapped(outer_from: str, inner_from: str) -> bytes:
    """RFC 8551 3.1 header protection: a whole message inside the signature."""
    inner = (f"From: {inner_from}\r\nTo: bob@example.org\r\nSubject: notice\r\n"
             f"Date: {DATE}\r\nContent-Type: text/plain\r\n\r\n").encode() + FIRED + b"\r\n"
    return message(sender=outer_from, body=inner, headers=b"Content-Type: message/rfc822\r\n")


def test_wrapped_message_with_the_same_from_is_valid(alice: Identity, trust: list) -> None:
    signed = smimekit.sign(_wrapped("alice@example.org", "alice@example.org"), alice.key,
                           alice.cert)
    result = smimekit.verify(signed, trust=trust)
    assert result.verdict.valid and result.verdict.signers[0].from_match is True
    assert FIRED in result.content


def test_wrapped_message_whose_inner_from_differs_fails_the_sender_binding(
        alice: Identity, trust: list) -> None:
    """Signed by alice, outer From alice, but the protected inner message says From: boss.
    A client showing the protected headers shows the boss as the signed sender."""
    signed = smimekit.sign(_wrapped("alice@example.org", BOSS), alice.key, alice.cert)
    v = _verdict(signed, trust)
    assert not v.valid, v.summary()
    assert v.signers and v.signers[0].from_match is False
    assert re.search(SENDER_REASON, _reasons(v)) and BOSS in _reasons(v), _reasons(v)


def test_released_message_shows_the_protected_headers_not_the_forged_outer_ones(
        alice: Identity, trust: list) -> None:
    """Header protection: the outer Subject is not signed and the attacker rewrote it. The
    verdict is about alice's signature (valid), but the message handed back must carry the
    signed headers, once each, not the forged outer copy in front of them."""
    signed = smimekit.sign(_wrapped("alice@example.org", "alice@example.org"), alice.key,
                           alice.cert)
    forged = signed.replace(b"Subject: test", b"Subject: You are fired", 1)
    result = smimekit.verify(forged, trust=trust)
    assert result.verdict.valid
    released = result.as_message()
    assert released.get_all("Subject") == ["notice"]
    assert released.get_all("From") == ["alice@example.org"]


def test_outer_from_differing_from_the_wrapped_message_fails(alice: Identity, trust: list
                                                             ) -> None:
    signed = smimekit.sign(_wrapped(BOSS, "alice@example.org"), alice.key, alice.cert)
    v = _verdict(signed, trust)
    assert not v.valid and v.signers[0].from_match is False
    assert re.search(SENDER_REASON, _reasons(v)), _reasons(v)
    with pytest.raises(UntrustedError):
        smimekit.verify(signed, trust=trust)


def test_untrusted_inner_signature_under_a_trusted_outer_one_fails(
        alice: Identity, rogue: Identity, trust: list) -> None:
    inner = smimekit.sign(message(), rogue.key, rogue.cert, opaque=True)
    outer = smimekit.sign(inner, alice.key, alice.cert)
    v = _verdict(outer, trust)
    assert [layer.kind for layer in v.layers] == ["signed", "signed"]
    assert len(v.signers) == 2 and v.signers[0].valid and not v.signers[1].trusted
    assert not v.valid
    with pytest.raises(UntrustedError):
        smimekit.verify(outer, trust=trust)


def _signed_header_block(who: Identity, signed_from: str, outer: bytes) -> bytes:
    """A whole message (header block included) signed as it is, as ``openssl cms -sign -in
    message.eml`` does, under the unsigned ``outer`` header lines."""
    entity = (f"From: {signed_from}\r\nSubject: notice\r\nDate: {DATE}\r\n"
              "Content-Type: text/plain\r\n\r\n").encode() + FIRED + b"\r\n"
    der = sign_data(entity, [SignerSpec(who.key, who.cert)])
    return build_multipart_signed(Entity.parse(outer + b"\r\n").headers, entity, der, "sha-256")


def test_signed_from_of_the_boss_under_the_attackers_outer_from_fails(
        attacker: Identity, trust: list) -> None:
    """The attacker signs a header block saying From: boss and puts their own address outside:
    a client showing the signed headers shows the boss."""
    signed = _signed_header_block(attacker, BOSS, f"From: {ATTACKER}\r\n".encode())
    v = _verdict(signed, trust)
    assert not v.valid and v.signers[0].from_match is False
    assert v.from_address == BOSS and v.unsigned_from == ATTACKER
    assert re.search(rf"sender {re.escape(BOSS)} is not an address", _reasons(v)), _reasons(v)


def test_signed_from_of_the_boss_without_any_outer_from_fails(attacker: Identity,
                                                              trust: list) -> None:
    signed = _signed_header_block(attacker, BOSS, b"To: bob@example.org\r\n")
    v = _verdict(signed, trust)
    assert not v.valid and v.from_address == BOSS and v.unsigned_from is None
    assert v.signers[0].from_match is False


def test_outer_from_in_display_name_disguise_is_a_mismatch(alice: Identity, trust: list
                                                           ) -> None:
    """Alice's genuine signed header block; outside, a From whose display name is alice's
    address but whose address is the boss's."""
    outer = f'From: "alice@example.org" <{BOSS}>\r\n'.encode()
    v = _verdict(_signed_header_block(alice, "alice@example.org", outer), trust)
    assert not v.valid and v.unsigned_from == BOSS
    assert v.from_address == "alice@example.org"
    assert BOSS in v.summary()


def test_unsigned_outer_sender_of_someone_else_fails_with_a_signed_from(
        alice: Identity, trust: list) -> None:
    outer = f"From: alice@example.org\r\nSender: {BOSS}\r\n".encode()
    v = _verdict(_signed_header_block(alice, "alice@example.org", outer), trust)
    assert not v.valid and v.unsigned_from is None and v.signers[0].from_match is False
    assert re.search(rf"sender {re.escape(BOSS)} is not an address", _reasons(v)), _reasons(v)


# --- 3. forged "verified" headers -----------------------------------------------------------

FORGED = (
    b"X-Smimekit-Verified: yes",
    b"X-Smimekit-Signer: " + BOSS.encode(),
    b"Authentication-Results: mx.example.org; smime=pass header.from=" + BOSS.encode()
    + b"; dkim=pass; spf=pass",
    b"X-S/MIME-Status: valid signature",
)


def test_forged_verified_headers_on_an_unsigned_message_are_ignored(trust: list) -> None:
    forged = _with_headers(message(sender=BOSS, body=FIRED + b"\r\n").replace(
        b"Subject: test", b"Subject: [signed] [verified] notice"), *FORGED)
    _assert_not_signed(_verdict(forged, trust), partial=False)
    with pytest.raises(NoSignatureError, match="not signed"):
        smimekit.verify(forged, trust=trust)


def test_forged_verified_headers_do_not_change_a_signed_verdict(alice: Identity, trust: list
                                                                ) -> None:
    signed = smimekit.sign(message(), alice.key, alice.cert)
    at = dt.datetime.now(dt.UTC)
    clean = _verdict(signed, trust, at=at)
    forged = _verdict(_with_headers(signed, *FORGED), trust, at=at)
    assert clean.valid
    assert forged.to_dict() == clean.to_dict()


def test_forged_verified_headers_do_not_rescue_an_untrusted_signature(rogue: Identity,
                                                                      trust: list) -> None:
    signed = smimekit.sign(message(), rogue.key, rogue.cert)
    at = dt.datetime.now(dt.UTC)
    forged = _with_headers(signed, *FORGED)
    v = _verdict(forged, trust, at=at)
    assert not v.valid and v.signers[0].intact and not v.signers[0].trusted
    assert v.to_dict() == _verdict(signed, trust, at=at).to_dict()
    with pytest.raises(UntrustedError):
        smimekit.verify(forged, trust=trust)


def test_forged_verified_headers_do_not_rescue_an_altered_message(alice: Identity,
                                                                  trust: list) -> None:
    signed = smimekit.sign(message(), alice.key, alice.cert)
    forged = _with_headers(signed.replace(b"Hello, world.", b"You are fired"), *FORGED)
    v = _verdict(forged, trust)
    assert not v.valid and v.signers == ()
    assert re.search(r"digest mismatch", _reasons(v)), _reasons(v)
    with pytest.raises(SignatureInvalidError):
        smimekit.verify(forged, trust=trust)


# --- 4. display names and sender fields -----------------------------------------------------


@pytest.mark.parametrize("from_field", [
    f'"{BOSS}" <{ATTACKER}>',
    f"=?utf-8?q?boss=40corp=2Eexample?= <{ATTACKER}>",
    f"{ATTACKER} ({BOSS})",
], ids=["quoted-address-as-name", "encoded-word-name", "comment"])
def test_display_name_trick_is_valid_for_the_real_address_only(attacker: Identity,
                                                               trust: list,
                                                               from_field: str) -> None:
    signed = smimekit.sign(message(sender=from_field), attacker.key, attacker.cert)
    v = _verdict(signed, trust)
    assert v.valid, _reasons(v)
    assert v.from_address == ATTACKER
    assert v.signers[0].email == (ATTACKER,) and v.signers[0].from_match is True
    summary = v.summary()
    assert f"<{ATTACKER}>" in summary
    assert BOSS not in summary and "boss" not in summary.lower()


def test_display_name_in_the_certificate_subject_comes_with_the_real_address(
        pki: PKI, trust: list) -> None:
    """The attacker's CA let them pick the CN; the summary still shows their address."""
    spoof = pki.person(BOSS, "p256", email="attacker2@evil.example",
                       issuer=(pki.root_key, pki.root))
    signed = smimekit.sign(message(sender='"The Boss" <attacker2@evil.example>'), spoof.key,
                           spoof.cert)
    v = _verdict(signed, trust)
    assert v.valid and v.from_address == "attacker2@evil.example"
    assert re.search(rf"signer CN={re.escape(BOSS)}[^<]*<attacker2@evil\.example>",
                     v.summary()), v.summary()


def test_address_used_as_display_name_without_quotes_fails(attacker: Identity, trust: list
                                                           ) -> None:
    """From: boss@corp.example <attacker@evil.example> is not valid RFC 5322 (an unquoted @ in
    a phrase): readers disagree on which address it names, so it must not pass."""
    signed = smimekit.sign(message(sender=f"{BOSS} <{ATTACKER}>"), attacker.key, attacker.cert)
    v = _verdict(signed, trust)
    assert not v.valid and v.signers[0].from_match is False
    assert re.search(SENDER_REASON, _reasons(v)), _reasons(v)


def test_from_of_the_boss_signed_by_the_attacker_fails(attacker: Identity, trust: list) -> None:
    signed = smimekit.sign(message(sender=BOSS), attacker.key, attacker.cert)
    v = _verdict(signed, trust)
    assert not v.valid and v.signers[0].intact and v.signers[0].trusted
    assert v.signers[0].from_match is False
    assert re.search(rf"sender {re.escape(BOSS)} is not an address", _reasons(v)), _reasons(v)
    with pytest.raises(UntrustedError):
        smimekit.verify(signed, trust=trust)


def test_sender_header_of_someone_else_fails(alice: Identity, trust: list) -> None:
    signed = _with_headers(smimekit.sign(message(), alice.key, alice.cert),
                           b"Sender: " + BOSS.encode())
    v = _verdict(signed, trust)
    assert not v.valid and v.signers[0].from_match is False
    assert BOSS in _reasons(v)


def test_second_from_header_of_someone_else_fails(alice: Identity, trust: list) -> None:
    """Two From fields (RFC 5322 3.6 allows one): a reader showing the second shows the boss."""
    signed = smimekit.sign(message(), alice.key, alice.cert)
    forged = signed.replace(b"From: alice@example.org\r\n",
                            b"From: alice@example.org\r\nFrom: " + BOSS.encode() + b"\r\n", 1)
    _refused_or_invalid(lambda: _verdict(forged, trust), SENDER_REASON)


def test_message_without_from_is_not_valid(alice: Identity, trust: list) -> None:
    """RFC 8550 3: the From/Sender must match the certificate; with no From there is no
    sender to bind, so the verdict cannot say who sent it (Johnny I2 'from is nonexistent')."""
    signed = smimekit.sign(message().replace(b"From: alice@example.org\r\n", b""), alice.key,
                           alice.cert)
    v = _verdict(signed, trust)
    assert v.from_address is None
    assert not v.valid, v.summary()
    assert v.signers[0].from_match is not True
    assert re.search(SENDER_REASON, _reasons(v)), _reasons(v)


# --- 5. every signer must pass; zero signers fails ------------------------------------------


def _two_signers(first: Identity, second: Identity) -> bytes:
    outer, entity = prepare(message())
    der = sign_data(entity, [SignerSpec(first.key, first.cert),
                             SignerSpec(second.key, second.cert)])
    return build_multipart_signed(outer, entity, der, "sha-256")


def test_two_valid_signers_pass(alice: Identity, pki: PKI, trust: list) -> None:
    alice2 = pki.person("alice2", "p256", email="alice@example.org",
                        issuer=(pki.root_key, pki.root))
    v = _verdict(_two_signers(alice, alice2), trust)
    assert v.valid and len(v.signers) == 2 and all(s.valid for s in v.signers)


def test_one_untrusted_signer_among_two_fails(alice: Identity, rogue: Identity, trust: list
                                              ) -> None:
    data = _two_signers(alice, rogue)
    v = _verdict(data, trust)
    assert not v.valid and len(v.signers) == 2
    assert sorted(s.trusted for s in v.signers) == [False, True]
    assert all(s.intact and s.from_match for s in v.signers)
    assert re.search(r"(?i)trust|anchor|chain|issuer", _reasons(v)), _reasons(v)
    with pytest.raises(UntrustedError):
        smimekit.verify(data, trust=trust)


def test_one_signer_not_matching_the_from_among_two_fails(alice: Identity, bob: Identity,
                                                          trust: list) -> None:
    v = _verdict(_two_signers(alice, bob), trust)
    assert not v.valid and len(v.signers) == 2
    by_email = {s.email: s for s in v.signers}
    assert by_email[(alice.email,)].valid
    assert by_email[(bob.email,)].from_match is False and not by_email[(bob.email,)].valid
    assert re.search(r"sender alice@example\.org is not an address of the signer's"
                     r" certificate \(bob@example\.org\)", _reasons(v)), _reasons(v)


def _splice(base: bytes, extra: bytes) -> bytes:
    """Add the SignerInfos (and certificates) of ``extra`` to the SignedData ``base``."""
    info, other = _signed_data(base), _signed_data(extra)
    sd, osd = info["content"], other["content"]
    infos, more = list(sd["signer_infos"]), list(osd["signer_infos"])
    sd["signer_infos"] = cms.SignerInfos(infos + more)
    sd["certificates"] = cms.CertificateSet(list(sd["certificates"]) + list(osd["certificates"]))
    return info.dump(force=True)


def test_signer_over_other_content_among_two_fails(alice: Identity, bob: Identity, trust: list
                                                   ) -> None:
    """Johnny C2 rebuilt: a genuine SignerInfo of bob over other content spliced in (DER sorts
    the SET OF SignerInfo, so its position is not ours to choose)."""
    outer, entity = prepare(message())
    good = sign_data(entity, [SignerSpec(alice.key, alice.cert)])
    other = sign_data(b"Content-Type: text/plain\r\n\r\nsomething else\r\n",
                      [SignerSpec(bob.key, bob.cert)])
    data = build_multipart_signed(outer, entity, _splice(good, other), "sha-256")
    v = _verdict(data, trust)
    assert not v.valid and v.signed and v.signers == ()
    assert re.search(r"signer [12] \(.*bob.*\): message digest mismatch", _reasons(v)), \
        _reasons(v)
    with pytest.raises(SignatureInvalidError):
        smimekit.verify(data, trust=trust)


def _without_signers(der: bytes, *, drop_content: bool = False) -> bytes:
    info = _signed_data(der)
    sd = info["content"]
    sd["signer_infos"] = cms.SignerInfos([])
    if drop_content:
        sd["digest_algorithms"] = cms.DigestAlgorithms([])
        sd["encap_content_info"] = cms.ContentInfo({"content_type": "data"})
    return info.dump(force=True)


def test_zero_signers_in_a_multipart_signed_fails(alice: Identity, trust: list) -> None:
    outer, entity = prepare(message())
    der = _without_signers(sign_data(entity, [SignerSpec(alice.key, alice.cert)]))
    data = build_multipart_signed(outer, entity, der, "sha-256")
    v = _verdict(data, trust)
    assert not v.valid and v.signers == ()
    assert re.search(r"zero signers", _reasons(v)), _reasons(v)
    assert not v.summary().startswith("VALID")
    with pytest.raises(NoSignatureError, match="zero signers"):
        smimekit.verify(data, trust=trust)


def test_zero_signers_in_an_opaque_message_fails(alice: Identity, trust: list) -> None:
    outer, entity = prepare(message())
    der = _without_signers(sign_data(entity, [SignerSpec(alice.key, alice.cert)],
                                     detached=False))
    data = build_pkcs7_mime(outer, der, "signed_data")
    v = _verdict(data, trust)
    assert not v.valid and v.signers == ()
    assert re.search(r"zero signers", _reasons(v)), _reasons(v)
    with pytest.raises(NoSignatureError):
        smimekit.verify(data, trust=trust)


def test_certs_only_message_is_not_a_signature(alice: Identity, trust: list) -> None:
    outer, entity = prepare(message())
    der = _without_signers(sign_data(entity, [SignerSpec(alice.key, alice.cert)]),
                           drop_content=True)
    data = build_pkcs7_mime(outer, der, "signed_data").replace(
        b"smime-type=signed-data", b"smime-type=certs-only").replace(b"smime.p7m", b"smime.p7c")
    v = _verdict(data, trust)
    assert not v.valid and v.signers == ()
    assert re.search(r"zero signers|not signed", _reasons(v)), _reasons(v)
    with pytest.raises(NoSignatureError):
        smimekit.verify(data, trust=trust)


# --- 6. signed content confusion ------------------------------------------------------------


def test_econtent_differing_from_the_displayed_part_is_content_confusion(alice: Identity,
                                                                         trust: list) -> None:
    """Johnny C1 rebuilt: alice's signature embeds what she signed; another text is shown."""
    der = sign_data(b"Content-Type: text/plain\r\n\r\nYou are promoted.\r\n",
                    [SignerSpec(alice.key, alice.cert)], detached=False)
    data = _detached(_text(), der)
    v = _verdict(data, trust)
    assert not v.valid and v.signed and v.signers == ()
    assert re.search(r"content confusion", _reasons(v)), _reasons(v)
    with pytest.raises(SignatureInvalidError, match="content confusion"):
        smimekit.verify(data, trust=trust)


def test_opaque_signature_without_its_content_fails(alice: Identity, trust: list) -> None:
    outer, entity = prepare(message())
    der = sign_data(entity, [SignerSpec(alice.key, alice.cert)], detached=True)
    data = build_pkcs7_mime(outer, der, "signed_data")
    v = _verdict(data, trust)
    assert not v.valid and v.signers == ()
    assert re.search(r"without its signed content", _reasons(v)), _reasons(v)
    with pytest.raises(SignatureInvalidError):
        smimekit.verify(data, trust=trust)


@pytest.mark.parametrize("signed_text", [b"", b"Content-Type: text/plain\r\n\r\nYou are"
                                         b" promoted.\r\n"], ids=["empty", "different"])
def test_signature_over_another_first_part_fails(alice: Identity, trust: list,
                                                 signed_text: bytes) -> None:
    der = sign_data(signed_text, [SignerSpec(alice.key, alice.cert)])
    data = _detached(_text(), der)
    v = _verdict(data, trust)
    assert not v.valid and v.signers == ()
    assert re.search(r"message digest mismatch", _reasons(v)), _reasons(v)
    with pytest.raises(SignatureInvalidError):
        smimekit.verify(data, trust=trust)


# --- 7. replay under a new Date -------------------------------------------------------------


def _redated(signed: bytes, when: dt.datetime) -> bytes:
    new = email.utils.format_datetime(when).encode()
    return signed.replace(b"Date: " + DATE.encode(), b"Date: " + new, 1)


def test_genuine_signature_replayed_under_a_later_date_fails(alice: Identity, trust: list
                                                             ) -> None:
    signed = smimekit.sign(message(), alice.key, alice.cert, signing_time=NOW)
    later = NOW + dt.timedelta(hours=2)
    replayed = _redated(signed, later)
    v = _verdict(replayed, trust, at=later + dt.timedelta(minutes=1))
    assert not v.valid and v.signers[0].intact and v.signers[0].trusted
    assert re.search(r"more than an hour older than the Date header", _reasons(v)), _reasons(v)
    with pytest.raises(VerificationError, match="re-used signature"):
        smimekit.verify(replayed, trust=trust, at=later + dt.timedelta(minutes=1))


def test_date_within_the_hour_of_signing_is_accepted(alice: Identity, trust: list) -> None:
    signed = smimekit.sign(message(), alice.key, alice.cert, signing_time=NOW)
    later = NOW + dt.timedelta(minutes=30)
    v = _verdict(_redated(signed, later), trust, at=later + dt.timedelta(minutes=1))
    assert v.valid, _reasons(v)
