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
