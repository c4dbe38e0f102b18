"""gateway/inbound.py: decrypt with held keys (the key history), verify, scan, DLP, deliver.

Messages are made with smimekit's API by people of the test PKI (tests/pki.py); the keys
the gateway holds are given through the HeldKeys protocol by a small in-memory holder.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from backends import Backend
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fakeclamd import EICAR
from gwout_kit import Held
from malformed.cases import multipart_signed, signature_part, signed_parts
from malformed.certs import BROKEN, replace_certificate, with_certificate_first
from pki import NOW, PKI, Identity, message

import smimekit
from smimekit.config import DlpRule, GatewayConfig, ScanConfig
from smimekit.errors import ConfigError, GatewayError, NoRecipientError
from smimekit.gateway.inbound import (
    InboundContext,
    InboundSettings,
    process_inbound,
    strip_header,
)
from smimekit.gateway.model import Envelope, HeldKey, Outcome
from smimekit.smime.canonical import Entity
from smimekit.store import Store

HEADER = "X-Smimekit-Result"


@pytest.fixture(scope="module")
def people(pki: PKI) -> dict[str, Identity]:
    root = (pki.root_key, pki.root)
    return {
        "carol": pki.person("carol", "rsa2048", email="carol@partner.example", issuer=root),
        "bob-old": pki.person("bob-old", "rsa2048", email="bob@example.org", issuer=root),
        "bob": pki.person("bob", "p256", email="bob@example.org", issuer=root),
        "dana": pki.person("dana", "rsa2048", email="dana@example.org", issuer=root),
        "erin": pki.person("erin", "rsa2048", email="erin@example.org", issuer=root),
    }


@pytest.fixture
def held(people: dict[str, Identity]) -> Held:
    def key(who: str) -> HeldKey:
        return HeldKey(people[who].key, people[who].cert)

    return Held({"bob@example.org": [key("bob"), key("bob-old")],
                 "dana@example.org": [key("dana")], "erin@example.org": [key("erin")]})


WEBMAIL = {"dana@example.org", "erin@example.org"}


def _policy(address: str) -> InboundSettings:
    return InboundSettings(webmail=address in WEBMAIL)


def _context(trust: list, **config: object) -> InboundContext:
    return InboundContext.from_config(GatewayConfig(**config),  # type: ignore[arg-type]
                                      trust=trust, hostname="gw.example.org")


def _signed(people: dict[str, Identity], body: bytes = b"Hello, world.\r\n",
            extra: bytes = b"") -> bytes:
    carol = people["carol"]
    return smimekit.sign(extra + message("carol@partner.example", body=body), carol.key,
                         carol.cert)


def _run(data: bytes, recipients: Sequence[str], held: Held, context: InboundContext,
         *, from_outside: bool = False) -> Outcome:
    envelope = Envelope("carol@partner.example", tuple(recipients), data)
    return process_inbound(envelope, recipients, held_keys=held, policy_for=_policy,
                           context=context, from_outside=from_outside)


def _results(data: bytes) -> list[str]:
    return [h.value() for h in Entity.parse(data).headers if h.lname == HEADER.lower()]


def _facts(value: str) -> dict[str, str]:
    items = [p.strip() for p in value.split(";")]
    return dict(p.split("=", 1) for p in items[1:])


def test_desktop_user_gets_it_re_encrypted_to_the_current_certificate(
        people: dict[str, Identity], held: Held, trust: list) -> None:
    # encrypted to bob's OLD certificate: the key history opens it
    data = smimekit.encrypt(_signed(people), [people["bob-old"].cert])
    outcome = _run(data, ["bob@example.org"], held, _context(trust))
    (delivery,) = outcome.deliveries
    assert delivery.recipients == ("bob@example.org",)
    (decision,) = outcome.decisions
    assert decision.action == "re-encrypted" and decision.direction == "inbound"
    assert "re-encrypted to the current certificate" in decision.reason
    assert "signed by carol@partner.example, valid" in decision.reason
    assert outcome.refused == ()
    (result,) = _results(delivery.data)
    facts = _facts(result)
    assert result.startswith("gw.example.org;")
    assert facts["encryption"] == "decrypted" and facts["signature"] == "valid"
    assert facts["signer"] == "carol@partner.example" and facts["delivered"] == "encrypted"
    # only the current key opens what is delivered, and carol's signature is still inside
    with pytest.raises(NoRecipientError):
        smimekit.decrypt(delivery.data, people["bob-old"].key, people["bob-old"].cert)
    opened = smimekit.decrypt_verify(delivery.data, people["bob"].key, people["bob"].cert,
                                     trust=trust, revocation=None)
    assert opened.verdict.valid and b"Hello, world." in opened.content


def test_webmail_user_gets_it_in_the_clear_with_the_verdict(
        people: dict[str, Identity], held: Held, trust: list) -> None:
    data = smimekit.encrypt(_signed(people), [people["dana"].cert])
    outcome = _run(data, ["dana@example.org"], held, _context(trust))
    (delivery,) = outcome.deliveries
    assert outcome.decisions[0].action == "decrypted"
    clear = Entity.parse(delivery.data)
    assert clear.content_type == "text/plain" and clear.body == b"Hello, world.\r\n"
    assert clear.get("subject") == "test" and clear.get("from") == "carol@partner.example"
    facts = _facts(_results(delivery.data)[0])
    assert facts["signature"] == "valid" and facts["delivered"] == "clear"


def test_recipients_with_the_same_result_share_a_delivery(
        people: dict[str, Identity], held: Held, trust: list) -> None:
    data = smimekit.encrypt(_signed(people), [people["dana"].cert, people["erin"].cert,
                                              people["bob"].cert])
    outcome = _run(data, ["dana@example.org", "erin@example.org", "bob@example.org"], held,
                   _context(trust))
    groups = sorted(d.recipients for d in outcome.deliveries)
    assert groups == [("bob@example.org",), ("dana@example.org", "erin@example.org")]
    assert [d.action for d in outcome.decisions] == ["decrypted", "decrypted", "re-encrypted"]


def test_result_headers_from_outside_are_stripped_first(
        people: dict[str, Identity], held: Held, trust: list) -> None:
    forged = (f"{HEADER}: gw.example.org; signature=valid;\r\n signer=ceo@example.org\r\n"
              f"x-smimekit-RESULT: encryption=decrypted\r\n").encode()
    plain = forged + message("carol@partner.example")
    outcome = _run(plain, ["dana@example.org"], held, _context(trust))
    (delivery,) = outcome.deliveries
    (result,) = _results(delivery.data)
    facts = _facts(result)
    assert facts["signature"] == "none" and "signer" not in facts
    assert facts["stripped"] == "2"
    assert outcome.decisions[0].details["stripped"] == "2"
    # a forged one inside the encryption, restored into the clear, goes as well
    inner = forged + message("carol@partner.example")
    data = smimekit.encrypt(inner, [people["dana"].cert])
    (delivery,) = _run(data, ["dana@example.org"], held, _context(trust)).deliveries
    (result,) = _results(delivery.data)
    assert _facts(result)["encryption"] == "decrypted" and "signer" not in _facts(result)
    # and a desktop user's re-encrypted copy carries none inside
    data = smimekit.encrypt(inner, [people["bob"].cert])
    (delivery,) = _run(data, ["bob@example.org"], held, _context(trust)).deliveries
    assert len(_results(delivery.data)) == 1
    opened = smimekit.decrypt(delivery.data, people["bob"].key, people["bob"].cert)
    # the outer headers around the decrypted entity: ours only, the forged ones gone
    assert len(_results(opened.content)) == 1 and b"ceo@example.org" not in opened.content


def test_mail_for_keys_the_gateway_does_not_hold_passes_unchanged(
        people: dict[str, Identity], held: Held, trust: list) -> None:
    data = smimekit.encrypt(_signed(people), [people["carol"].cert])  # not ours
    outcome = _run(data, ["bob@example.org", "frank@example.org"], held, _context(trust))
    # bob's keys were tried, frank has none: each is told which (two deliveries)
    assert [d.recipients for d in outcome.deliveries] == [("bob@example.org",),
                                                          ("frank@example.org",)]
    for delivery in outcome.deliveries:
        assert delivery.data.endswith(data)
        facts = _facts(_results(delivery.data)[0])
        assert facts["signature"] == "unknown" and facts["scan"] == "not-scanned"
        assert facts["delivered"] == "as-received"
    details = {d.recipient: d.details["encryption-detail"] for d in outcome.decisions}
    assert details == {"bob@example.org": "not encrypted to a key the gateway holds",
                       "frank@example.org": "no key of this recipient is held by the gateway"}
    reasons = {d.recipient: d.details["encryption"] for d in outcome.decisions}
    assert reasons == {"bob@example.org": "not-for-held-keys",
                       "frank@example.org": "not-decrypted"}
    assert all(d.action == "passed" for d in outcome.decisions)


def test_altered_ciphertext_passes_unchanged_and_says_so(
        people: dict[str, Identity], held: Held, trust: list) -> None:
    data = bytearray(smimekit.encrypt(message("carol@partner.example"), [people["dana"].cert]))
    body = data.index(b"\r\n\r\n") + 4
    spot = body + 200
    data[spot] = ord("A") if data[spot] != ord("A") else ord("B")
    outcome = _run(bytes(data), ["dana@example.org"], held, _context(trust))
    (delivery,) = outcome.deliveries
    assert delivery.data.endswith(bytes(data))
    assert outcome.decisions[0].details["encryption"] in ("failed", "not-for-held-keys")


def test_signed_mail_is_verified_and_valid_signers_harvested(
        people: dict[str, Identity], held: Held, trust: list, backend: Backend) -> None:
    with Store.open(backend.url, backend.data_dir) as store:
        context = dataclasses.replace(_context(trust), store=store)
        data = _signed(people)
        outcome = _run(data, ["bob@example.org"], held, context)
        (delivery,) = outcome.deliveries
        assert delivery.data.endswith(data)  # signed mail is delivered as it came
        assert outcome.decisions[0].action == "verified"
        facts = _facts(_results(delivery.data)[0])
        assert facts["signature"] == "valid" and facts["harvest"] == "new"
        kept = store.harvested_for("carol@partner.example")
        assert [row.certificate for row in kept] == [people["carol"].cert]
        again = _run(data, ["bob@example.org"], held, context)
        assert _facts(_results(again.deliveries[0].data)[0])["harvest"] == "known"


def test_bad_signature_is_reported_and_nothing_harvested(
        people: dict[str, Identity], held: Held, trust: list, tmp_path: Path) -> None:
    with Store.open(None, tmp_path / "data") as store:
        context = dataclasses.replace(_context(trust), store=store)
        data = _signed(people).replace(b"Hello, world.", b"Hello, World!")
        outcome = _run(data, ["bob@example.org"], held, context)
        facts = _facts(_results(outcome.deliveries[0].data)[0])
        assert facts["signature"] == "invalid" and "harvest" not in facts
        assert outcome.deliveries[0].data.endswith(data)
        assert store.harvested_for("carol@partner.example") == []
        untrusted = _run(_signed(people), ["bob@example.org"], held, dataclasses.replace(
            context, trust=()))
        facts = _facts(_results(untrusted.deliveries[0].data)[0])
        assert facts["signature"] == "invalid" and "signature-reason" in facts


def _with_signature(data: bytes, edit: Callable[[bytes], bytes]) -> bytes:
    """A multipart/signed message whose SignedData is replaced by ``edit(SignedData)``."""
    head, content, signature, boundary = signed_parts(data)
    der = base64.b64decode(signature.partition(b"\r\n\r\n")[2])
    return multipart_signed(head, [content, signature_part(edit(der))], boundary)


@pytest.mark.parametrize("kind", ["duplicate-extension", "x400-address-in-san",
                                  "bad-utf8-subject", "bit-string-cn"])
def test_certificates_that_cannot_be_read_give_a_verdict_not_a_retry(
        pki: PKI, people: dict[str, Identity], held: Held, trust: list, kind: str) -> None:
    """Before, cryptography's exception escaped process_inbound: a 451 that Postfix retried
    until the message bounced. Junk added to a genuine message (signed by key identifier,
    the junk first) is left out; the signer's own certificate unreadable is an invalid
    signature that says why."""
    carol = people["carol"]
    by_ski = smimekit.sign(message("carol@partner.example"), carol.key, carol.cert,
                           use_ski=True)
    junk = BROKEN[kind](people["dana"].cert, pki.root_key)
    genuine = _with_signature(by_ski, lambda der: with_certificate_first(der, junk))
    outcome = _run(genuine, ["bob@example.org"], held, _context(trust))
    (delivery,) = outcome.deliveries
    assert delivery.data.endswith(genuine)
    assert _facts(_results(delivery.data)[0])["signature"] == "valid"

    bad = BROKEN[kind](carol.cert, pki.root_key)
    forged = _with_signature(_signed(people), lambda der: replace_certificate(
        der, carol.cert.public_bytes(serialization.Encoding.DER), bad))
    outcome = _run(forged, ["bob@example.org"], held, _context(trust))
    (delivery,) = outcome.deliveries
    assert delivery.data.endswith(forged)
    facts = _facts(_results(delivery.data)[0])
    assert facts["signature"] == "invalid"
    assert "malformed signer certificate" in facts["signature-reason"]


def test_a_certificate_error_escaping_the_verdict_is_still_a_verdict(
        people: dict[str, Identity], held: Held, trust: list,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Should cryptography's own exceptions for an unreadable certificate ever escape again
    (smimekit.cms reads a message's certificates up front), the message still gets a verdict,
    not the 451 of a gateway bug that Postfix would retry until it bounced."""
    def unreadable(*args: object, **kwargs: object) -> None:
        raise x509.DuplicateExtension("Duplicate 2.5.29.17 extension found",
                                      x509.oid.ExtensionOID.SUBJECT_ALTERNATIVE_NAME)

    monkeypatch.setattr("smimekit.validation.assess.assess", unreadable)
    outcome = _run(_signed(people), ["bob@example.org"], held, _context(trust))
    facts = _facts(_results(outcome.deliveries[0].data)[0])
    assert facts["signature"] == "invalid" and "Duplicate" in facts["signature-reason"]


def test_webmail_user_keeps_a_signature_the_gateway_cannot_vouch_for(
        people: dict[str, Identity], held: Held) -> None:
    data = smimekit.encrypt(_signed(people), [people["dana"].cert])
    outcome = _run(data, ["dana@example.org"], held, _context([]))  # carol's root unknown
    delivered = Entity.parse(outcome.deliveries[0].data)
    assert delivered.content_type == "multipart/signed"
    assert _facts(_results(outcome.deliveries[0].data)[0])["signature"] == "invalid"


SCANNER = ("import sys; data = sys.stdin.buffer.read(); "
           "found = b'EICAR-STANDARD-ANTIVIRUS-TEST-FILE' in data; "
           "print('stdin: Eicar-Test-Signature FOUND' if found else 'stdin: OK'); "
           "sys.exit(1 if found else 0)")


def _scanning(trust: list, code: str = SCANNER, **more: object) -> InboundContext:
    return _context(trust, scan=ScanConfig(command=(sys.executable, "-c", code), **more))  # type: ignore[arg-type]


def test_decrypted_eicar_is_refused_for_every_recipient(
        people: dict[str, Identity], held: Held, trust: list) -> None:
    infected = _signed(people, body=EICAR + b"\r\n")
    data = smimekit.encrypt(infected, [people["bob"].cert, people["dana"].cert])
    outcome = _run(data, ["bob@example.org", "dana@example.org"], held, _scanning(trust))
    assert outcome.deliveries == ()
    assert [r.recipient for r in outcome.refused] == ["bob@example.org", "dana@example.org"]
    assert all("malware (stdin: Eicar-Test-Signature FOUND)" in r.reason
               for r in outcome.refused)
    assert {d.action for d in outcome.decisions} == {"rejected"}
    clean = smimekit.encrypt(_signed(people), [people["dana"].cert])
    ok = _run(clean, ["dana@example.org"], held, _scanning(trust))
    assert _facts(_results(ok.deliveries[0].data)[0])["scan"] == "clean"


def test_mail_from_outside_is_never_bounced_for_malware_or_a_rule(
        people: dict[str, Identity], held: Held, trust: list, tmp_path: Path) -> None:
    """Review 12 item 13: a refusal of mail from outside would bounce to a sender that may be
    forged and name the rule (backscatter). No Refusal (so no DSN and no 5xx): quarantined
    when quarantine_dir is set, else dropped; the audit facts keep the reason."""
    infected = smimekit.encrypt(_signed(people, body=EICAR + b"\r\n"), [people["bob"].cert])
    dropped = _run(infected, ["bob@example.org"], held, _scanning(trust), from_outside=True)
    assert dropped.deliveries == () and dropped.refused == ()
    (decision,) = dropped.decisions
    assert decision.action == "rejected" and "malware" in decision.reason
    assert "dropped without a DSN" in decision.reason
    assert decision.details["dsn"] == "none (from outside: no backscatter)"
    context = _context(trust, dlp=RULES, quarantine_dir=tmp_path / "q",
                       scan=ScanConfig(command=(sys.executable, "-c", SCANNER)))
    for data in (infected, message("carol@partner.example", body=b"cheap pills\r\n")):
        kept = _run(data, ["bob@example.org"], held, context, from_outside=True)
        assert kept.deliveries == () and kept.refused == ()
        (decision,) = kept.decisions
        assert decision.action == "quarantined" and "no DSN" in decision.reason
        assert Path(decision.details["quarantine"]).read_bytes().endswith(data)
    # require-encryption for a recipient without a certificate, no quarantine: dropped
    card = message("carol@partner.example", body=b"card 4111 1111 1111 1111\r\n")
    no_quarantine = _context(trust, dlp=tuple(r for r in RULES if r.action != "quarantine"))
    lost = _run(card, ["frank@example.org"], held, no_quarantine, from_outside=True)
    assert lost.refused == () and lost.decisions[0].action == "rejected"
    assert "requires encryption" in lost.decisions[0].reason
    assert "no backscatter" in lost.decisions[0].reason


def test_scanner_failure_defers_or_passes_with_a_warning(
        people: dict[str, Identity], held: Held, trust: list) -> None:
    broken = "import sys; sys.exit(3)"
    with pytest.raises(GatewayError, match="scanner failed") as info:
        _run(message("carol@partner.example"), ["bob@example.org"], held,
             _scanning(trust, broken))
    assert not info.value.permanent
    outcome = _run(message("carol@partner.example"), ["bob@example.org"], held,
                   _scanning(trust, broken, on_failure="pass"))
    facts = _facts(_results(outcome.deliveries[0].data)[0])
    assert facts["scan"] == "failed" and "status 3" in facts["scan-detail"]


RULES = (DlpRule(name="merger", keywords=("project x",), threshold=2),
         DlpRule(name="cards", patterns=(r"\b(?:\d[ -]?){13,16}\b",),
                 action="require-encryption", direction="inbound"),
         DlpRule(name="leak", keywords=("do not forward",), action="quarantine"),
         DlpRule(name="spam", keywords=("cheap pills",), action="reject", direction="inbound"),
         DlpRule(name="outgoing", keywords=("hello",), action="reject", direction="outbound"))


def test_dlp_warn_is_in_the_header_and_outbound_rules_do_not_apply(
        people: dict[str, Identity], held: Held, trust: list, tmp_path: Path) -> None:
    data = smimekit.encrypt(_signed(people, body=b"project x and Project X\r\n"),
                            [people["dana"].cert])
    outcome = _run(data, ["dana@example.org"], held,
                   _context(trust, dlp=RULES, quarantine_dir=tmp_path / "q"))
    facts = _facts(_results(outcome.deliveries[0].data)[0])
    assert facts["dlp"] == "merger(2):warn"
    assert outcome.decisions[0].details["dlp"] == "merger(2):warn"


def test_dlp_reject_refuses_and_quarantine_keeps_the_message(
        people: dict[str, Identity], held: Held, trust: list, tmp_path: Path) -> None:
    context = _context(trust, dlp=RULES, quarantine_dir=tmp_path / "q")
    spam = _run(message("carol@partner.example", body=b"cheap pills\r\n"),
                ["bob@example.org"], held, context)
    assert spam.deliveries == () and spam.refused[0].reason == \
        "rejected by the data-loss rule spam"
    leak = smimekit.encrypt(_signed(people, body=b"Do not forward.\r\n"),
                            [people["bob"].cert, people["dana"].cert])
    outcome = _run(leak, ["bob@example.org", "dana@example.org"], held, context)
    assert outcome.deliveries == () and outcome.refused == ()
    assert {d.action for d in outcome.decisions} == {"quarantined"}
    (kept,) = list((tmp_path / "q").iterdir())  # once for the message
    assert all(d.details["quarantine"] == str(kept) for d in outcome.decisions)
    assert kept.read_bytes().endswith(leak) and kept.stat().st_mode & 0o777 == 0o600
    assert kept.read_bytes().startswith(
        b"X-Smimekit-Envelope-From: <carol@partner.example>\r\n"
        b"X-Smimekit-Envelope-To: <bob@example.org>\r\n"
        b"X-Smimekit-Envelope-To: <dana@example.org>\r\n")


def test_dlp_require_encryption_encrypts_even_for_webmail_or_refuses(
        people: dict[str, Identity], held: Held, trust: list, tmp_path: Path) -> None:
    context = _context(trust, dlp=tuple(r for r in RULES if r.action != "quarantine"))
    card = message("carol@partner.example", body=b"card 4111 1111 1111 1111\r\n")
    outcome = _run(card, ["dana@example.org", "frank@example.org"], held, context)
    (delivery,) = outcome.deliveries
    assert delivery.recipients == ("dana@example.org",)
    assert outcome.decisions[0].action == "re-encrypted"
    opened = smimekit.decrypt(delivery.data, people["dana"].key, people["dana"].cert)
    assert b"4111 1111 1111 1111" in opened.content
    assert b"4111" not in delivery.data
    (refusal,) = outcome.refused
    assert refusal.recipient == "frank@example.org"
    assert "requires encryption" in refusal.reason
    quarantining = _context(trust, dlp=RULES, quarantine_dir=tmp_path / "q")
    outcome = _run(card, ["frank@example.org"], held, quarantining)
    assert outcome.decisions[0].action == "quarantined" and outcome.refused == ()


def test_unreadable_header_is_a_permanent_error(held: Held, trust: list) -> None:
    with pytest.raises(GatewayError, match="header cannot be read") as info:
        _run(b"no colon here\r\nFrom: x@y\r\n\r\nbody\r\n", ["bob@example.org"], held,
             _context(trust))
    assert info.value.permanent


def test_unreadable_header_from_outside_is_kept_or_dropped_never_bounced(
        held: Held, trust: list, tmp_path: Path) -> None:
    broken = b"no colon here\r\nFrom: x@y\r\n\r\nbody\r\n"
    dropped = _run(broken, ["bob@example.org"], held, _context(trust), from_outside=True)
    assert dropped.deliveries == () and dropped.refused == ()
    (decision,) = dropped.decisions
    assert decision.action == "rejected" and "no backscatter" in decision.reason
    assert "no colon" not in decision.reason  # nothing of the header in the audit
    kept = _run(broken, ["bob@example.org", "dana@example.org"], held,
                _context(trust, quarantine_dir=tmp_path / "q"), from_outside=True)
    assert kept.refused == () and {d.action for d in kept.decisions} == {"quarantined"}
    (path,) = {d.details["quarantine"] for d in kept.decisions}
    assert Path(path).read_bytes().endswith(broken)


def test_strip_header_keeps_the_body_exactly() -> None:
    raw = (b"Received: x\r\nX-Smimekit-Result: a;\r\n\tb\r\nSubject: s\r\n\r\n"
           b"X-Smimekit-Result: in the body\r\n")
    out, count = strip_header(raw, "x-smimekit-result")
    assert count == 1
    assert out == b"Received: x\r\nSubject: s\r\n\r\nX-Smimekit-Result: in the body\r\n"
    assert strip_header(out, HEADER) == (out, 0)


def test_context_checks_the_configuration(trust: list) -> None:
    with pytest.raises(ConfigError, match="quarantine_dir is not set"):
        _context(trust, dlp=(DlpRule(name="q", keywords=("x",), action="quarantine"),))
    with pytest.raises(ConfigError, match="not a header field name"):
        _context(trust, result_header="Bad Header:")


def test_triple_wrapped_mail_is_read_with_held_keys_and_delivered_as_received(
        people: dict[str, Identity], held: Held, trust: list) -> None:
    carol = people["carol"]
    inner = smimekit.encrypt(_signed(people, body=b"project x, project x\r\n"),
                             [people["dana"].cert])
    data = smimekit.sign(inner, carol.key, carol.cert)
    outcome = _run(data, ["dana@example.org", "frank@example.org"], held,
                   _context(trust, dlp=RULES[:1]))
    by_rcpt = {d.recipients: d for d in outcome.deliveries}
    dana = _facts(_results(by_rcpt[("dana@example.org",)].data)[0])
    assert dana["encryption"] == "inside-signature" and dana["signature"] == "valid"
    assert dana["dlp"] == "merger(2):warn"  # the inside was read
    assert by_rcpt[("dana@example.org",)].data.endswith(data)
    frank = _facts(_results(by_rcpt[("frank@example.org",)].data)[0])
    assert frank["encryption"] == "not-decrypted" and frank["scan"] == "not-scanned"


def test_signed_mail_is_verified_once_and_no_key_looked_up(
        people: dict[str, Identity], held: Held, trust: list,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import smimekit.validation.assess as assess_module

    calls = []
    real = assess_module.assess

    def counting(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(assess_module, "assess", counting)
    looked_up: list[str] = []
    real_keys = held.decryption_keys

    def keys(address: str) -> Sequence[HeldKey]:
        looked_up.append(address)
        return real_keys(address)

    monkeypatch.setattr(held, "decryption_keys", keys)
    recipients = [f"user{i}@example.org" for i in range(20)] + ["bob@example.org"]
    outcome = _run(_signed(people), recipients, held, _context(trust))
    assert len(calls) == 1
    assert looked_up == []  # no key store lookup for mail that is not encrypted
    (delivery,) = outcome.deliveries
    assert len(delivery.recipients) == 21


def test_policy_decrypt_off_and_verify_off_are_followed(
        people: dict[str, Identity], held: Held, trust: list) -> None:
    def policy(address: str) -> InboundSettings:
        return InboundSettings(decrypt=address != "bob@example.org",
                               verify=address != "dana@example.org", webmail=True)

    data = smimekit.encrypt(_signed(people), [people["bob"].cert, people["dana"].cert])
    envelope = Envelope("carol@partner.example", ("bob@example.org", "dana@example.org"), data)
    outcome = process_inbound(envelope, envelope.recipients, held_keys=held,
                              policy_for=policy, context=_context(trust))
    bob, dana = outcome.decisions
    assert bob.action == "passed" and bob.details["encryption-detail"] == \
        "decryption is off for this recipient"
    assert bob.details["policy"] == "decrypt=no, verify=yes, harvest=yes, webmail=yes"
    assert dana.action == "decrypted" and dana.details["signature"] == "not-checked"
    # not vouched for: dana keeps the signed structure
    (dana_copy,) = [d.data for d in outcome.deliveries if d.recipients == ("dana@example.org",)]
    assert Entity.parse(dana_copy).content_type == "multipart/signed"


@pytest.mark.parametrize(("raw", "expected", "count"), [
    (b"X-Smimekit-Result: a\nSubject: s\n\nbody\n", b"Subject: s\r\n\nbody\n", 1),
    (b"Subject: s\r\nX-SMIMEKIT-RESULT: a\r\n", b"Subject: s\r\n\r\n", 1),
    (b"X-Smimekit-Result: a\r\n\r\nbody", b"\r\nbody", 1),
    (b"\r\nX-Smimekit-Result: in the body\r\n", b"\r\nX-Smimekit-Result: in the body\r\n", 0),
    (b"X-Smimekit-Resultant: other\r\n\r\nb", b"X-Smimekit-Resultant: other\r\n\r\nb", 0),
])
def test_strip_header_edge_cases(raw: bytes, expected: bytes, count: int) -> None:
    assert strip_header(raw, HEADER) == (expected, count)


def test_key_history_from_rsa_to_ml_kem(pki: PKI, people: dict[str, Identity],
                                        trust: list) -> None:
    # gina's old RSA certificate was replaced by an ML-KEM-768 one (issue 11): mail sent to
    # the old one is re-encrypted to the new one
    root = (pki.root_key, pki.root)
    old = pki.person("gina-old", "rsa2048", email="gina@example.org", issuer=root)
    new = pki.person("gina", "mlkem768", email="gina@example.org", issuer=root)
    held = Held({"gina@example.org": [HeldKey(new.key, new.cert), HeldKey(old.key, old.cert)]})
    data = smimekit.encrypt(_signed(people), [old.cert])
    outcome = _run(data, ["gina@example.org"], held, _context(trust))
    assert outcome.decisions[0].action == "re-encrypted"
    opened = smimekit.decrypt_verify(outcome.deliveries[0].data, new.key, new.cert,
                                     trust=trust, revocation=None)
    assert opened.verdict.valid and b"Hello, world." in opened.content


def test_only_recipients_whose_own_key_opens_it_get_the_content(
        people: dict[str, Identity], held: Held, trust: list) -> None:
    # encrypted to dana alone, but bob (whose keys the gateway also holds) is on the envelope
    data = smimekit.encrypt(_signed(people, body=b"for dana only\r\n"), [people["dana"].cert])
    outcome = _run(data, ["dana@example.org", "bob@example.org"], held, _context(trust))
    copies = {d.recipients: d.data for d in outcome.deliveries}
    assert b"for dana only" in copies[("dana@example.org",)]
    assert copies[("bob@example.org",)].endswith(data)
    assert b"for dana only" not in copies[("bob@example.org",)]
    assert [d.action for d in outcome.decisions] == ["decrypted", "passed"]


def test_the_documented_scanning_and_dlp_example_loads(tmp_path: Path) -> None:
    import re

    from smimekit.config import load_config

    docs = Path(__file__).resolve().parents[2] / "docs" / "gateway.md"
    section = docs.read_text().split("## Scanning and DLP", 1)[1]
    example = re.search(r"```toml\n(.*?)```", section, re.S)
    assert example is not None
    (tmp_path / "smimekit.toml").write_text(example.group(1))
    gateway = load_config(tmp_path / "smimekit.toml").gateway
    assert gateway is not None
    context = InboundContext.from_config(gateway, hostname="gw")
    assert [c.rule.name for c in context.rules.rules] == ["cards", "merger"]
    assert context.scanner is not None and context.scanner.config.on_failure == "defer"


def test_expired_current_certificate_delivers_the_original_never_the_clear(
        pki: PKI, people: dict[str, Identity], trust: list) -> None:
    root = (pki.root_key, pki.root)
    lapsed = pki.person("hal", "rsa2048", email="hal@example.org", issuer=root,
                        not_before=NOW - dt.timedelta(days=30),
                        not_after=NOW - dt.timedelta(days=1))
    held = Held({"hal@example.org": [HeldKey(lapsed.key, lapsed.cert)]})
    data = smimekit.encrypt(_signed(people, body=b"still secret\r\n"), [lapsed.cert],
                            check_recipients=False)
    outcome = _run(data, ["hal@example.org"], held, _context(trust))
    (delivery,) = outcome.deliveries
    assert delivery.data.endswith(data) and b"still secret" not in delivery.data
    (decision,) = outcome.decisions
    assert decision.action == "passed"
    assert decision.details["re-encryption"].startswith("failed: ")
    assert decision.details["re-encryption"].endswith("; delivered as received")
    facts = _facts(_results(delivery.data)[0])
    assert facts["encryption"] == "decrypted" and facts["delivered"] == "as-received"
    assert facts["re-encryption"].startswith('"failed: ') and "expired" in facts["re-encryption"]


def test_inbound_mail_is_re_encrypted_to_the_current_key_never_a_retired_one(
        pki: PKI, people: dict[str, Identity], trust: list, backend: Backend) -> None:
    # review 12 item 2: the key history decrypts; only the current key (newest certificate,
    # not retired, valid now) is encrypted to, whatever order the keys were imported in
    from smimekit.gateway.keys import StoreHeldKeys

    now = dt.datetime.now(dt.UTC)
    root = (pki.root_key, pki.root)

    def jo(name: str, days_old: int) -> Identity:
        return pki.person(name, "rsa2048", email="jo@example.org", issuer=root,
                          not_before=now - dt.timedelta(days=days_old),
                          not_after=now + dt.timedelta(days=200))

    old, current, stolen = jo("jo-old", 300), jo("jo", 100), jo("jo-stolen", 10)
    with Store.open(backend.url, backend.data_dir) as store:
        held = StoreHeldKeys.open(store, b"pass", create=True)
        held.add(stolen.key, stolen.cert)
        held.add(current.key, current.cert)
        held.add(old.key, old.cert)  # imported last, certified first
        assert store.retire_gateway_key(held.add(stolen.key, stolen.cert).fingerprint, now)
        held.forget()
        data = smimekit.encrypt(_signed(people, body=b"for jo\r\n"), [old.cert])
        envelope = Envelope("carol@partner.example", ("jo@example.org",), data)
        outcome = process_inbound(envelope, ["jo@example.org"], held_keys=held,
                                  policy_for=_policy, context=_context(trust))
        (decision,) = outcome.decisions
        assert decision.action == "re-encrypted"
        assert decision.details["re-encrypted-to"] == f"serial {current.cert.serial_number:x}"
        sent = outcome.deliveries[0].data
        opened = smimekit.decrypt_verify(sent, current.key, current.cert, trust=trust,
                                         revocation=None)
        assert b"for jo" in opened.content
        for other in (stolen, old):
            with pytest.raises(NoRecipientError):
                smimekit.decrypt(sent, other.key, other.cert)
        # every key retired: the mail goes on as it came (still encrypted, as the sender
        # made it), never in the clear nor to a retired key
        for who in (current, old):
            assert store.retire_gateway_key(held.add(who.key, who.cert).fingerprint, now)
        held.forget()
        outcome = process_inbound(envelope, ["jo@example.org"], held_keys=held,
                                  policy_for=_policy, context=_context(trust))
        (decision,) = outcome.decisions
        assert decision.action == "passed"
        assert decision.details["re-encryption"].startswith(
            "failed: no current certificate of the recipient is held")
        (delivery,) = outcome.deliveries
        assert delivery.data.endswith(data) and b"for jo" not in delivery.data


@pytest.mark.parametrize("memo", [60.0, 0.0])
def test_a_signer_is_recorded_once_per_harvest_memo_time(
        people: dict[str, Identity], held: Held, trust: list, backend: Backend,
        memo: float) -> None:
    """harvest_memo_seconds (docs/gateway.md "Performance"): the same signer with the same
    certificates is written to the directory once per memo time, not per message; with 0,
    every message updates the row's "where last seen"."""
    with Store.open(backend.url, backend.data_dir) as store:
        context = dataclasses.replace(_context(trust, harvest_memo_seconds=memo), store=store)
        assert (context.harvest_memo is not None) == bool(memo)
        carol = people["carol"]

        def signed(name: str) -> bytes:
            return smimekit.sign(message("carol@partner.example").replace(
                b"<t1@example.org>", f"<{name}@partner.example>".encode()),
                carol.key, carol.cert)

        first = signed("first")
        time.sleep(1.1)  # a later signing time (seconds): "last seen" moves on
        second = signed("second")
        for data, expected in ((first, "new"), (second, "known")):
            outcome = _run(data, ["bob@example.org"], held, context)
            assert _facts(_results(outcome.deliveries[0].data)[0])["harvest"] == expected
        [row] = store.harvested_for("carol@partner.example")
        assert row.certificate == people["carol"].cert
        assert ("second@partner.example" in row.message_ref) == (not memo)
