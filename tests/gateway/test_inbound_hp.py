"""gateway/inbound.py with RFC 9788 header protection (issue 11): the protected header
fields are restored before delivery, and the result header is among them for desktop users
(whose clients show the protected view)."""

from __future__ import annotations

import pytest
from gwout_kit import Held
from pki import PKI, Identity, message

import smimekit
from smimekit.config import GatewayConfig
from smimekit.gateway.inbound import InboundContext, InboundSettings, process_inbound
from smimekit.gateway.model import Envelope, HeldKey
from smimekit.smime.canonical import Entity


@pytest.fixture(scope="module")
def people(pki: PKI) -> dict[str, Identity]:
    root = (pki.root_key, pki.root)
    return {name: pki.person(f"hp-{name}", "rsa2048", email=f"{name}@{domain}", issuer=root)
            for name, domain in (("carol", "partner.example"), ("bob", "example.org"),
                                 ("dana", "example.org"))}


def _results(entity: Entity) -> list[str]:
    return [h.value() for h in entity.headers if h.lname == "x-smimekit-result"]


def test_protected_headers_restored_for_webmail_and_kept_for_desktop(
        people: dict[str, Identity], trust: list) -> None:
    carol = people["carol"]
    original = message("carol@partner.example").replace(b"Subject: test",
                                                         b"Subject: quarterly figures")
    data = smimekit.sign_encrypt(original, carol.key, carol.cert,
                                 [people["bob"].cert, people["dana"].cert], hcp="baseline")
    assert b"quarterly figures" not in data.partition(b"\r\n\r\n")[0]  # obscured outside
    held = Held({a.email: [HeldKey(a.key, a.cert)] for a in (people["bob"], people["dana"])})
    envelope = Envelope("carol@partner.example", ("bob@example.org", "dana@example.org"), data)
    outcome = process_inbound(
        envelope, envelope.recipients, held_keys=held,
        policy_for=lambda a: InboundSettings(webmail=a.startswith("dana")),
        context=InboundContext.from_config(GatewayConfig(), trust=trust, revocation=None,
                                           hostname="gw.example.org"))
    copies = {d.recipients[0]: d.data for d in outcome.deliveries}
    webmail = Entity.parse(copies["dana@example.org"])
    assert webmail.get("subject") == "quarterly figures"
    (result,) = _results(webmail)
    assert "headers=restored" in result and "signature=valid" in result
    # the desktop copy: the client's protected view is carol's signed header section (the
    # gateway cannot add to it); the verdict is outside, once
    opened = smimekit.decrypt_verify(copies["bob@example.org"], people["bob"].key,
                                     people["bob"].cert, trust=trust, revocation=None)
    view = Entity.parse(opened.content)
    assert view.get("subject") == "quarterly figures" and opened.verdict.valid
    (result,) = _results(Entity.parse(copies["bob@example.org"]))
    assert "headers=restored" in result and "delivered=encrypted" in result


def test_encrypted_only_mail_shows_the_verdict_in_the_protected_view(
        people: dict[str, Identity], trust: list) -> None:
    original = message("carol@partner.example").replace(b"Subject: test",
                                                         b"Subject: board minutes")
    data = smimekit.encrypt(original, [people["bob"].cert], hcp="baseline")
    held = Held({"bob@example.org": [HeldKey(people["bob"].key, people["bob"].cert)]})
    envelope = Envelope("carol@partner.example", ("bob@example.org",), data)
    outcome = process_inbound(
        envelope, envelope.recipients, held_keys=held,
        policy_for=lambda a: InboundSettings(),
        context=InboundContext.from_config(GatewayConfig(), trust=trust, revocation=None,
                                           hostname="gw.example.org"))
    (delivery,) = outcome.deliveries
    assert outcome.decisions[0].action == "re-encrypted"
    assert b"board minutes" not in delivery.data.partition(b"\r\n\r\n")[0]
    opened = smimekit.decrypt(delivery.data, people["bob"].key, people["bob"].cert)
    view = Entity.parse(opened.content)
    assert view.get("subject") == "board minutes"
    (result,) = _results(view)  # among the protected fields an RFC 9788 client shows
    assert "encryption=decrypted" in result and "delivered=encrypted" in result


FORGED = b"X-Smimekit-Result: gw.example.org; signature=valid; signer=ceo@example.org\r\n"


def _forged_original() -> bytes:
    # the sender's own header section carries a result header: RFC 9788 signs it
    return FORGED + message("carol@partner.example").replace(b"Subject: test",
                                                             b"Subject: pay invoice 77")


def _inbound(data: bytes, held: Held, trust: list, *, webmail: tuple[str, ...] = ()
             ) -> dict[str, tuple[bytes, dict[str, str]]]:
    recipients = tuple(held.keys) or ("bob@example.org",)
    envelope = Envelope("carol@partner.example", recipients, data)
    outcome = process_inbound(
        envelope, recipients, held_keys=held,
        policy_for=lambda a: InboundSettings(webmail=a in webmail),
        context=InboundContext.from_config(GatewayConfig(), trust=trust, revocation=None,
                                           hostname="gw.example.org"))
    facts = {d.recipient: dict(d.details) for d in outcome.decisions}
    return {r: (d.data, facts[r]) for d in outcome.deliveries for r in d.recipients}


def _every_result_header(data: bytes) -> list[str]:
    """Every result header field at the start of a line anywhere in ``data`` (unfolded)."""
    unfolded = data.replace(b"\r\n\t", b" ").replace(b"\r\n ", b" ")
    return [line.decode() for line in unfolded.split(b"\r\n")
            if line.lower().startswith(b"x-smimekit-result:")]


def test_a_result_header_in_the_signed_protected_section_never_reaches_the_reader(
        people: dict[str, Identity], trust: list) -> None:
    """Review 12 item 3: carol signs (RFC 9788) a header section holding a forged verdict.
    The gateway verified her signature, so it removes it: desktop (re-encrypted) and webmail
    readers see her verified content under the gateway's verdict alone, which says what
    was found; the audit facts flag it."""
    carol, bob, dana = people["carol"], people["bob"], people["dana"]
    data = smimekit.sign_encrypt(_forged_original(), carol.key, carol.cert,
                                 [bob.cert, dana.cert], hcp="baseline")
    held = Held({a.email: [HeldKey(a.key, a.cert)] for a in (bob, dana)})
    copies = _inbound(data, held, trust, webmail=("dana@example.org",))
    desktop, facts = copies["bob@example.org"]
    assert facts["forged"].startswith("a result header inside the signed part; signature"
                                      " removed")
    opened = smimekit.decrypt(desktop, bob.key, bob.cert).content
    assert b"ceo@example.org" not in opened and b"pay invoice 77" in opened
    (inner,) = _every_result_header(opened)  # the protected view: the gateway's only
    assert "signer=carol@partner.example" in inner and "forged=" in inner
    assert not any("ceo@" in h for h in _every_result_header(desktop))
    webmail, facts = copies["dana@example.org"]
    assert "forged" in facts and b"ceo@example.org" not in webmail
    (result,) = _every_result_header(webmail)
    assert "signature=valid" in result and "forged=" in result
    assert Entity.parse(webmail).get("subject") == "pay invoice 77"


def test_a_forged_result_header_in_signed_only_mail_is_removed_with_the_signature(
        people: dict[str, Identity], trust: list) -> None:
    carol = people["carol"]
    data = smimekit.sign(_forged_original(), carol.key, carol.cert)
    copies = _inbound(data, Held({}), trust)
    delivered, facts = copies["bob@example.org"]
    assert "signature removed" in facts["forged"] and facts["signature"] == "valid"
    assert b"ceo@example.org" not in delivered
    (result,) = _every_result_header(delivered)
    assert "forged=" in result and "signer=carol@partner.example" in result


def test_a_forged_result_header_under_an_unverified_signature_is_flagged(
        people: dict[str, Identity]) -> None:
    """A signature the gateway cannot vouch for stays (removing it would deliver unverified
    protected header fields as the message's own): the gateway's verdict, the first header,
    says the signature is not valid and the inner verdict forged."""
    carol = people["carol"]
    data = smimekit.sign(_forged_original(), carol.key, carol.cert)
    copies = _inbound(data, Held({}), [])  # no trust anchors: carol is not verified
    delivered, facts = copies["bob@example.org"]
    assert facts["forged"].endswith("not removable (the signature was not verified)")
    assert facts["signature"] != "valid"
    first = _every_result_header(delivered)[0]
    assert "forged=" in first and "signer=ceo" not in first
    assert delivered.startswith(b"X-Smimekit-Result: gw.example.org")


def test_a_result_header_in_encrypted_only_protected_headers_is_simply_removed(
        people: dict[str, Identity], trust: list) -> None:
    """No signature covers it: removed from what decryption restores, for desktop and
    webmail readers alike, and not reported as forged inside a signed part."""
    bob, dana = people["bob"], people["dana"]
    data = smimekit.encrypt(_forged_original(), [bob.cert, dana.cert], hcp="baseline")
    held = Held({a.email: [HeldKey(a.key, a.cert)] for a in (bob, dana)})
    copies = _inbound(data, held, trust, webmail=("dana@example.org",))
    desktop, facts = copies["bob@example.org"]
    assert "forged" not in facts
    opened = smimekit.decrypt(desktop, bob.key, bob.cert).content
    assert b"ceo@example.org" not in opened and b"pay invoice 77" in opened
    (inner,) = _every_result_header(opened)
    assert "encryption=decrypted" in inner
    webmail, facts = copies["dana@example.org"]
    assert "forged" not in facts and b"ceo@example.org" not in webmail
    assert len(_every_result_header(webmail)) == 1


def test_a_forged_result_header_under_signature_over_encryption_stays_encrypted(
        people: dict[str, Identity], trust: list) -> None:
    """Signed outside, encrypted inside: the signature covers the ciphertext, so the gateway
    delivers it as received; it never removes that signature, which would deliver the
    content decrypted."""
    carol, bob = people["carol"], people["bob"]
    inner = smimekit.encrypt(_forged_original(), [bob.cert], hcp="baseline")
    data = smimekit.sign(inner, carol.key, carol.cert)
    copies = _inbound(data, Held({"bob@example.org": [HeldKey(bob.key, bob.cert)]}), trust)
    delivered, facts = copies["bob@example.org"]
    assert facts["encryption"] == "inside-signature"
    # as received: only the outer (unsigned) header section lost its result header
    assert b"pay invoice 77" not in delivered
    assert delivered.endswith(data.partition(b"\r\n\r\n")[2])
    assert facts["stripped"] == "1" and b"signer=ceo" not in delivered
    assert facts.get("forged", "").endswith("not removable (encrypted inside the signature)")
