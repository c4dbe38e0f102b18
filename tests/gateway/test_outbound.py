"""gateway/outbound.py: per recipient sign / encrypt / fall back, with real keys, a real
Resolver over the store, and the encrypted PDF read back with its password."""

from __future__ import annotations

import email
import email.policy
import io
from pathlib import Path

import pypdf
import pytest
from gwout_kit import PDF_PASSWORD, FailingSource, config, context, harvest, mail
from pki import PKI

from smimekit import api
from smimekit.config import DlpRule, GatewayConfig, PolicyConfig
from smimekit.errors import GatewayError
from smimekit.gateway import pdf
from smimekit.gateway.model import Envelope
from smimekit.gateway.outbound import process_outbound, remove_trigger
from smimekit.gateway.pdf import ATTACHMENT_NAME, NOTICE
from smimekit.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store.open(None, tmp_path / "data")
    yield s  # type: ignore[misc]
    s.close()


def _envelope(data: bytes, *recipients: str, sender: str = "alice@example.org") -> Envelope:
    return Envelope(sender, tuple(recipients), data)


def _text(message: bytes) -> str:
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    body = parsed.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


def test_signs_with_the_held_key_and_encrypts_to_the_resolved_certificate(
        store: Store, pki: PKI) -> None:
    alice, partner = pki.person("alice"), pki.person("partner", "p256",
                                                     email="partner@partner.example")
    ctx = context(store, pki, config())
    ctx.held_keys.add(alice.key, alice.cert, (pki.inter,))  # type: ignore[attr-defined]
    harvest(store, pki, partner)
    out = process_outbound(_envelope(mail(), partner.email, "nocert@other.example"),
                           [partner.email, "nocert@other.example"], ctx)
    assert [d.recipients for d in out.deliveries] == [(partner.email,),
                                                      ("nocert@other.example",)]
    assert [(d.recipient, d.action) for d in out.decisions] == [
        (partner.email, "signed+encrypted"), ("nocert@other.example", "signed")]
    enc, clear = out.deliveries
    assert b"The numbers are in." not in enc.data
    opened = api.decrypt_verify(enc.data, partner.key, partner.cert, trust=[pki.root])
    assert b"The numbers are in." in opened.content
    assert opened.verdict.valid  # type: ignore[attr-defined]
    assert b"multipart/signed" in clear.data
    assert api.verify(clear.data, trust=[pki.root]).verdict.valid  # type: ignore[attr-defined]
    first = out.decisions[0]
    assert "encrypt=if-possible (default)" in first.reason
    assert "signed with the sender's key" in first.reason
    assert first.details["certificate"] == partner.cert.fingerprint(
        __import__("cryptography.hazmat.primitives.hashes", fromlist=["SHA256"]).SHA256()).hex()
    assert "no usable certificate" in out.decisions[1].reason


def test_subject_trigger_requires_encryption_and_is_removed(store: Store, pki: PKI) -> None:
    partner = pki.person("partner", "p256", email="partner@partner.example")
    ctx = context(store, pki, config(no_certificate="bounce"))
    harvest(store, pki, partner)
    data = mail(subject="[ENCRYPT] Merger plans")
    out = process_outbound(_envelope(data, partner.email, "nocert@other.example"),
                           [partner.email, "nocert@other.example"], ctx)
    [delivery] = out.deliveries
    opened = api.decrypt(delivery.data, partner.key, partner.cert)
    assert b"Subject: Merger plans" in opened.content and b"ENCRYPT" not in opened.content
    assert [r.recipient for r in out.refused] == ["nocert@other.example"]
    refusal = out.refused[0].reason
    assert "subject trigger '[encrypt]'" in refusal and "no usable certificate" in refusal
    assert "no_certificate=bounce (global)" in refusal
    assert out.decisions[1].action == "bounced"
    assert out.decisions[0].details["trigger"] == "[encrypt]"


def test_always_without_certificate_sends_an_aes256_pdf_and_the_password_to_the_sender(
        store: Store, pki: PKI) -> None:
    alice = pki.person("alice")
    gateway = GatewayConfig(internal_domains=("example.org",), domains={
        "*.partner.example": PolicyConfig(encrypt="always", no_certificate="pdf")})
    ctx = context(store, pki, gateway)
    ctx.held_keys.add(alice.key, alice.cert, (pki.inter,))  # type: ignore[attr-defined]
    secret = "The acquisition price is 42 million.\r\n"
    out = process_outbound(_envelope(mail(body=secret), "cfo@x.partner.example"),
                           ["cfo@x.partner.example"], ctx)
    pdf_mail, notice = out.deliveries
    assert pdf_mail.recipients == ("cfo@x.partner.example",) and pdf_mail.mail_from == \
        "alice@example.org"
    assert b"acquisition" not in pdf_mail.data
    assert api.verify(pdf_mail.data, trust=[pki.root]).verdict.valid  # type: ignore[attr-defined]
    parsed = email.message_from_bytes(pdf_mail.data, policy=email.policy.default)
    [attachment] = [p for p in parsed.walk() if p.get_content_type() == "application/pdf"]
    document = attachment.get_payload(decode=True)
    assert isinstance(document, bytes) and document.startswith(b"%PDF-2.0")
    reader = pypdf.PdfReader(io.BytesIO(document))
    assert reader.is_encrypted
    encrypt = reader.trailer["/Encrypt"]
    assert (encrypt["/V"], encrypt["/R"], encrypt["/CF"]["/StdCF"]["/CFM"]) == (5, 6, "/AESV3")
    assert not reader.decrypt("wrong password")
    assert reader.decrypt(PDF_PASSWORD)
    text = reader.pages[0].extract_text()
    assert "The acquisition price is 42 million." in text and "Quarterly figures" in text
    assert "cannot be shown" not in text  # all of it is on the page
    # the original message, whole, is attached inside the encrypted PDF; nothing of it (not
    # even the attachment's name) is readable without the password
    assert reader.attachments[ATTACHMENT_NAME] == [mail(body=secret)]
    assert ATTACHMENT_NAME.encode() not in document and b"acquisition" not in document
    assert notice.mail_from == "" and notice.recipients == ("alice@example.org",)
    assert PDF_PASSWORD in _text(notice.data) and "cfo@x.partner.example" in _text(notice.data)
    [decision] = out.decisions
    assert decision.action == "pdf"
    assert "encrypt=always (domain *.partner.example)" in decision.reason
    assert PDF_PASSWORD not in repr(out.decisions)


def _open_pdf(document: bytes) -> pypdf.PdfReader:
    reader = pypdf.PdfReader(io.BytesIO(document))
    assert reader.decrypt("pw")
    return reader


def _unicode_mail() -> bytes:
    body = ("Japanese: \u65e5\u672c\u8a9e\u306e\u624b\u7d19\r\n"
            "Arabic: \u0645\u0631\u062d\u0628\u0627\r\n"
            "German: Gr\u00fc\u00dfe\r\n")
    return ("From: alice@example.org\r\nTo: partner@partner.example\r\n"
            "Subject: =?utf-8?b?5pel5pys?=\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\n" + body).encode()


@pytest.mark.skipif(not any(p.is_file() for p in pdf.FONT_PATHS),
                    reason="DejaVu Sans (fonts-dejavu-core, make peers) is not installed")
def test_text_the_page_cannot_show_gets_a_visible_notice_and_the_original_is_attached() -> None:
    data = _unicode_mail()
    reader = _open_pdf(pdf.message_pdf(data, "pw"))
    text = " ".join(reader.pages[0].extract_text().split())
    assert " ".join(NOTICE.split()) in text
    assert "German: Gr\u00fc\u00dfe" in text  # DejaVu has these
    [attached] = reader.attachments[ATTACHMENT_NAME]
    assert attached == data
    original = email.message_from_bytes(attached, policy=email.policy.default)
    body = original.get_body(("plain",))
    assert body is not None
    content = body.get_content()
    assert "\u65e5\u672c\u8a9e\u306e\u624b\u7d19" in content  # nothing lost: in order
    assert "\u0645\u0631\u062d\u0628\u0627" in content


@pytest.mark.parametrize("body", ["Arabic only: \u0645\u0631\u062d\u0628\u0627\r\n",
                                  "Greek: \u03b1\u03b2\u03b3\r\n"])
def test_without_dejavu_text_outside_latin1_gets_the_notice(
        monkeypatch: pytest.MonkeyPatch, body: str) -> None:
    monkeypatch.setattr(pdf, "FONT_PATHS", ())  # a system without fonts-dejavu-core
    data = ("From: a@example.org\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\n" + body).encode()
    reader = _open_pdf(pdf.message_pdf(data, "pw"))
    assert " ".join(NOTICE.split()) in " ".join(reader.pages[0].extract_text().split())
    assert reader.attachments[ATTACHMENT_NAME] == [data]


def test_latin1_text_without_dejavu_has_no_notice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pdf, "FONT_PATHS", ())
    data = ("From: a@example.org\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\nGr\u00fc\u00dfe, caf\u00e9\r\n").encode()
    reader = _open_pdf(pdf.message_pdf(data, "pw"))
    text = reader.pages[0].extract_text()
    assert "cannot be shown" not in text and "caf\u00e9" in text


def test_a_permanent_pdf_failure_refuses_only_the_pdf_recipients(
        store: Store, pki: PKI) -> None:
    from dataclasses import replace

    alice = pki.person("alice")
    partner = pki.person("partner", "p256", email="partner@partner.example")
    harvest(store, pki, partner)
    ctx = context(store, pki, config(encrypt="always", no_certificate="pdf"))
    ctx.held_keys.add(alice.key, alice.cert, (pki.inter,))  # type: ignore[attr-defined]

    def no_pdf(message: bytes, password: str) -> bytes:
        raise GatewayError("the message cannot be made into a PDF: test", permanent=True)

    ctx = replace(ctx, pdf=no_pdf)
    out = process_outbound(_envelope(mail(), partner.email, "cfo@nowhere.example"),
                           [partner.email, "cfo@nowhere.example"], ctx)
    [delivery] = out.deliveries  # no PDF message, no password notice
    assert delivery.recipients == (partner.email,)
    opened = api.decrypt_verify(delivery.data, partner.key, partner.cert, trust=[pki.root])
    assert b"The numbers are in." in opened.content
    assert [r.recipient for r in out.refused] == ["cfo@nowhere.example"]
    refusal = out.refused[0].reason
    assert "no usable certificate" in refusal and "cannot be made into a PDF" in refusal
    assert "sent as a password-protected PDF" not in refusal
    assert [d.action for d in out.decisions] == ["signed+encrypted", "bounced"]

    def broken(message: bytes, password: str) -> bytes:
        raise GatewayError("the PDF cannot be encrypted: test")  # temporary: all retried

    with pytest.raises(GatewayError) as raised:
        process_outbound(_envelope(mail(), partner.email, "cfo@nowhere.example"),
                         [partner.email, "cfo@nowhere.example"], replace(ctx, pdf=broken))
    assert not raised.value.permanent


def test_the_attached_original_is_compressed() -> None:
    # the PDF goes out base64-encoded to a re-injection smtpd with a size limit
    data = mail(body="A line of an ordinary long letter, said again and again.\r\n" * 20_000)
    document = pdf.message_pdf(data, "pw")
    assert len(document) < len(data) // 4
    reader = _open_pdf(document)
    [attachment] = reader.attachment_list
    assert attachment.name == ATTACHMENT_NAME and attachment.content == data
    assert attachment.subtype == "/message/rfc822"


def test_never_sends_clear_even_with_a_certificate_and_clear_fallback(
        store: Store, pki: PKI) -> None:
    partner = pki.person("partner", "p256", email="partner@partner.example")
    harvest(store, pki, partner)
    ctx = context(store, pki, config(encrypt="never", sign=False))
    data = mail()
    out = process_outbound(_envelope(data, partner.email), [partner.email], ctx)
    assert out.deliveries[0].data == data
    assert out.decisions[0].action == "clear"
    assert "encrypt=never (global)" in out.decisions[0].reason
    ctx2 = context(store, pki, config(encrypt="always", no_certificate="clear"))
    out2 = process_outbound(_envelope(data, "x@nowhere.example"), ["x@nowhere.example"], ctx2)
    assert out2.deliveries[0].data == data  # no key held for alice: unsigned
    assert "sent readable (no_certificate=clear (global))" in out2.decisions[0].reason
    assert "holds no signing key" in out2.decisions[0].reason


def test_organisation_key_signs_when_the_sender_has_none(store: Store, pki: PKI) -> None:
    org = pki.person("org", "p256", email="gateway@example.org", key_usage="sign")
    ctx = context(store, pki, config(organisation_signature=True))
    ctx.held_keys.add(org.key, org.cert, (pki.inter,), organisation=True)  # type: ignore[attr-defined]
    out = process_outbound(_envelope(mail(), "x@nowhere.example"), ["x@nowhere.example"], ctx)
    verified = api.verify(out.deliveries[0].data, trust=[pki.root], raise_for_failure=False)
    [signer] = verified.verdict.signers
    # intact and trusted; the From binding fails, as for every organisation signature
    # (docs/gateway.md says what recipients see)
    assert signer.intact and signer.trusted
    assert signer.signer is not None and signer.signer.emails == ("gateway@example.org",)
    assert "organisation's key" in out.decisions[0].reason


def test_recipients_with_certificates_share_one_encrypted_delivery(
        store: Store, pki: PKI) -> None:
    p1 = pki.person("p1", "p256", email="p1@partner.example")
    p2 = pki.person("p2", "rsa2048", email="p2@partner.example")
    for p in (p1, p2):
        harvest(store, pki, p)
    ctx = context(store, pki, config())
    out = process_outbound(_envelope(mail(), p1.email, p2.email), [p1.email, p2.email], ctx)
    [delivery] = out.deliveries
    assert delivery.recipients == (p1.email, p2.email)
    for p in (p1, p2):
        assert b"The numbers are in." in api.decrypt(delivery.data, p.key, p.cert).content
    assert {d.action for d in out.decisions} == {"encrypted"}


def test_a_failed_directory_source_defers_instead_of_sending_clear(
        store: Store, pki: PKI) -> None:
    ctx = context(store, pki, config(), extra_sources=[FailingSource()])
    with pytest.raises(GatewayError, match="ldap: connection refused") as caught:
        process_outbound(_envelope(mail(), "x@nowhere.example"), ["x@nowhere.example"], ctx)
    assert not caught.value.permanent


def test_dlp_actions(store: Store, pki: PKI, tmp_path: Path) -> None:
    partner = pki.person("partner", "p256", email="partner@partner.example")
    harvest(store, pki, partner)
    rules = (DlpRule(name="cards", patterns=(r"\b4\d{15}\b",), action="require-encryption"),
             DlpRule(name="secret", keywords=("top secret",), action="reject"),
             DlpRule(name="payroll", keywords=("payroll",), action="quarantine"),
             DlpRule(name="internal", keywords=("internal only",), action="warn"))
    gateway = GatewayConfig(internal_domains=("example.org",), dlp=rules,
                            policy=PolicyConfig(encrypt="never", no_certificate="bounce"),
                            quarantine_dir=tmp_path / "quarantine")
    ctx = context(store, pki, gateway)
    card = mail(body="Card 4111111111111111 please.\r\n")
    out = process_outbound(_envelope(card, partner.email, "x@nowhere.example"),
                           [partner.email, "x@nowhere.example"], ctx)
    assert [d.action for d in out.decisions] == ["encrypted", "bounced"]
    assert "data-loss rules (cards(1):require-encryption)" in out.decisions[0].reason
    rejected = process_outbound(_envelope(mail(body="This is top secret.\r\n"),
                                          partner.email), [partner.email], ctx)
    assert rejected.deliveries == () and rejected.refused[0].reason.startswith(
        "refused by the data-loss rules: secret(1):reject")
    held = process_outbound(_envelope(mail(body="payroll attached\r\n"), partner.email),
                            [partner.email], ctx)
    assert held.deliveries == () and held.decisions[0].action == "quarantined"
    where = Path(held.decisions[0].details["quarantine"])
    assert where.parent == tmp_path / "quarantine" and b"payroll" in where.read_bytes()
    warned = process_outbound(_envelope(mail(body="internal only\r\n"), partner.email),
                              [partner.email], ctx)
    assert warned.decisions[0].action == "clear"
    assert "data-loss warning: internal(1):warn" in warned.decisions[0].reason


def test_remove_trigger_keeps_the_body_and_handles_encoded_subjects() -> None:
    data = mail(subject="=?utf-8?q?Gr=C3=BC=C3=9Fe_[encrypt]_aus_Bonn?=")
    out, found = remove_trigger(data, "[encrypt]")
    assert found
    parsed = email.message_from_bytes(out, policy=email.policy.default)
    assert parsed["Subject"] == "Grüße aus Bonn"
    assert out.endswith(b"\r\n\r\nThe numbers are in.\r\n")
    assert remove_trigger(mail(), "[encrypt]") == (mail(), False)


@pytest.mark.parametrize("data", [
    b"\x00\x01\x02 not a message at all \xff\xfe",
    b"From alice Tue Jan  1 00:00:00 2030\r\nSubject: mbox line first\r\n\r\nx\r\n",
    b"Subject: " + b"[encrypt] " * 5000 + b"\r\n\r\nlong subject\r\n",
    b"From: alice@example.org\r\nSubject: [encrypt] headers only",
    b"From: alice@example.org\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
    b"Content-Type: text/plain\r\n\r\nunclosed\r\n",
    b"From: alice@example.org\r\nSubject: =?x-unknown?q?[encrypt]?=\r\n\r\n\xe9\xe8 8-bit\r\n",
    b"\r\n\r\nno header block\r\n",
])
def test_hostile_messages_give_an_outcome_or_a_clear_gateway_error(
        store: Store, pki: PKI, data: bytes) -> None:
    alice = pki.person("alice")
    partner = pki.person("partner", "p256", email="partner@partner.example")
    ctx = context(store, pki, config(no_certificate="pdf"))
    ctx.held_keys.add(alice.key, alice.cert, (pki.inter,))  # type: ignore[attr-defined]
    harvest(store, pki, partner)
    try:
        out = process_outbound(_envelope(data, partner.email, "x@nowhere.example"),
                               [partner.email, "x@nowhere.example"], ctx)
    except GatewayError as exc:
        assert exc.permanent and str(exc)
        return
    assert {d.recipient for d in out.decisions} == {partner.email, "x@nowhere.example"}
    for delivery in out.deliveries:
        if partner.email in delivery.recipients:
            assert delivery.data != data
            api.decrypt(delivery.data, partner.key, partner.cert)  # opens: not garbage


def test_the_senders_key_signs_only_a_from_that_is_the_envelope_sender(
        store: Store, pki: PKI) -> None:
    alice = pki.person("alice")
    ctx = context(store, pki, config())
    ctx.held_keys.add(alice.key, alice.cert, (pki.inter,))  # type: ignore[attr-defined]
    forged = mail(sender="ceo@example.org")  # From: ceo, envelope: alice
    out = process_outbound(_envelope(forged, "x@nowhere.example"), ["x@nowhere.example"], ctx)
    assert out.deliveries[0].data == forged and out.decisions[0].action == "clear"
    assert "From header (ceo@example.org) is not the envelope sender alice@example.org" \
        in out.decisions[0].reason
    display = mail(sender='"Alice A" <Alice@Example.org>')
    out = process_outbound(_envelope(display, "x@nowhere.example"), ["x@nowhere.example"],
                           ctx)
    assert out.decisions[0].action == "signed"


def test_a_long_subject_is_folded_again_after_the_trigger_is_removed() -> None:
    words = " ".join(f"word{i}" for i in range(300))
    out, found = remove_trigger(mail(subject=f"[encrypt] {words}"), "[encrypt]")
    assert found
    head = out.split(b"\r\n\r\n")[0]
    assert max(len(line) for line in head.split(b"\r\n")) <= 78
    parsed = email.message_from_bytes(out, policy=email.policy.default)
    assert parsed["Subject"] == words


def test_mail_the_senders_client_encrypted_passes_unchanged(store: Store, pki: PKI) -> None:
    partner = pki.person("partner", "p256", email="partner@partner.example")
    ctx = context(store, pki, config(encrypt="always", no_certificate="pdf"))
    data = api.encrypt(mail(subject="[encrypt] x"), [partner.cert])
    out = process_outbound(_envelope(data, partner.email, "x@nowhere.example"),
                           [partner.email, "x@nowhere.example"], ctx)
    assert [(d.recipients, d.data) for d in out.deliveries] == [
        ((partner.email, "x@nowhere.example"), data)]
    assert {d.action for d in out.decisions} == {"passed"}
    assert "already encrypted by the sender's client" in out.decisions[0].reason


def test_mail_the_senders_client_signed_keeps_its_signature_inside_the_encryption(
        store: Store, pki: PKI) -> None:
    alice = pki.person("alice")
    partner = pki.person("partner", "p256", email="partner@partner.example")
    harvest(store, pki, partner)
    ctx = context(store, pki, config())
    # the gateway holds alice's key too, and still does not sign a second time
    ctx.held_keys.add(alice.key, alice.cert, (pki.inter,))  # type: ignore[attr-defined]
    signed = api.sign(mail(), alice.key, alice.cert, chain=[pki.inter])
    out = process_outbound(_envelope(signed, partner.email, "x@nowhere.example"),
                           [partner.email, "x@nowhere.example"], ctx)
    assert [d.action for d in out.decisions] == ["signed+encrypted", "signed"]
    assert out.deliveries[1].data == signed  # not signed again
    opened = api.decrypt_verify(out.deliveries[0].data, partner.key, partner.cert,
                                trust=[pki.root])
    [signer] = opened.verdict.signers  # type: ignore[attr-defined]
    assert signer.signer.emails == ("alice@example.org",)
    assert "signed by the sender's client (kept)" in out.decisions[0].reason


@pytest.mark.parametrize(("hcp", "subject_outside"), [("baseline", False), ("none", True)])
def test_header_confidentiality_follows_the_recipients_policy(
        store: Store, pki: PKI, hcp: str, subject_outside: bool) -> None:
    partner = pki.person("partner", "p256", email="partner@partner.example")
    harvest(store, pki, partner)
    ctx = context(store, pki, config(hcp=hcp))
    out = process_outbound(_envelope(mail(subject="Secret merger"), partner.email),
                           [partner.email], ctx)
    [delivery] = out.deliveries
    outer = delivery.data.split(b"\r\n\r\n")[0]
    assert (b"Secret merger" in outer) is subject_outside
    opened = api.decrypt(delivery.data, partner.key, partner.cert)
    assert b"Subject: Secret merger" in opened.content
    assert f"hcp={hcp} (global)" in out.decisions[0].details["hcp"]


@pytest.mark.slow
def test_the_pdf_of_a_long_message_is_cut_with_a_line_saying_so() -> None:
    from smimekit.gateway.pdf import MAX_TEXT, message_pdf

    body = ("x" * 79 + "\r\n") * (MAX_TEXT // 80 + 50) + "THE-END-MARKER\r\n"
    document = message_pdf(mail(body=body), "pw")
    reader = pypdf.PdfReader(io.BytesIO(document))
    assert reader.decrypt("pw")
    text = "".join(page.extract_text() for page in reader.pages[-2:])
    assert "too long: the rest is not included" in text and "THE-END-MARKER" not in text


@pytest.mark.parametrize("markup", ["<script>" * 200_000, "<a " * 200_000, "<a>" * 200_000,
                                    "<!--" * 100_000])
def test_hostile_html_costs_linear_time(markup: str) -> None:
    import time

    from smimekit.gateway.pdf import _html_text

    started = time.perf_counter()
    assert _html_text(markup) == ""
    assert time.perf_counter() - started < 2.0


def test_html_text_drops_scripts_and_styles_and_decodes_entities() -> None:
    from smimekit.gateway.pdf import _html_text

    assert _html_text("<p>Hello <b>world</b><script>x()</script><STYLE>p{}</style> &amp;"
                      " more</p>x<br/>y") == "\nHello world & more\nx\ny"


def test_signing_set_in_the_configuration_and_no_key_defers_unless_send_unsigned(
        store: Store, pki: PKI) -> None:
    # review 12 item 13: an administrator who wrote sign = true gets no unsigned mail
    partner = "x@nowhere.example"
    data = mail()
    for policy in ({"sign": True}, {"organisation_signature": True},
                   {"missing_key": "defer"}):
        ctx = context(store, pki, config(**policy))
        with pytest.raises(GatewayError) as deferred:
            process_outbound(_envelope(data, partner), [partner], ctx)
        assert not deferred.value.permanent  # 4xx: Postfix keeps it until a key is held
        reason = str(deferred.value)
        assert "holds no current signing key" in reason and "alice@example.org" in reason
        assert 'missing_key = "send-unsigned"' in reason
    # the user level may let one sender's mail go unsigned while the global one defers
    ctx = context(store, pki, GatewayConfig(
        internal_domains=("example.org",), policy=PolicyConfig(sign=True),
        users={"alice@example.org": PolicyConfig(missing_key="send-unsigned")}))
    out = process_outbound(_envelope(data, partner), [partner], ctx)
    assert out.deliveries[0].data == data
    assert "missing_key=send-unsigned (user alice@example.org)" in out.decisions[0].reason
    # the built-in sign alone (nothing set): signs when it can, never defers
    out = process_outbound(_envelope(data, partner), [partner], context(store, pki, config()))
    assert out.deliveries[0].data == data and "holds no signing key" in out.decisions[0].reason
    # once a key is held the deferred mail goes out signed
    alice = pki.person("alice")
    ctx = context(store, pki, config(sign=True))
    ctx.held_keys.add(alice.key, alice.cert, (pki.inter,))  # type: ignore[attr-defined]
    out = process_outbound(_envelope(data, partner), [partner], ctx)
    assert out.decisions[0].action == "signed"

