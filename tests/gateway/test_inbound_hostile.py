"""Hostile inbound mail through gateway/inbound.py: the "Johnny, You Are Fired" messages
(tests/spoofing, read from the shared corpus) and broken S/MIME structures.

Whatever arrives, process_inbound returns an Outcome (or a permanent GatewayError for a
header it cannot read): no other exception, nothing lost, and the result header claims a
valid signature only where tests/spoofing/test_johnny.py expects one.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Sequence

import pytest
from corpus.vectors import read_bytes
from cryptography import x509
from spoofing.test_johnny import AT, FOLDER, ROOT_R3, ROWS, Expect, Row

from smimekit.config import GatewayConfig
from smimekit.errors import GatewayError
from smimekit.gateway.inbound import InboundContext, InboundSettings, process_inbound
from smimekit.gateway.model import Envelope, HeldKey
from smimekit.smime.canonical import Entity, to_crlf


class NoKeys:
    def signing_key(self, address: str) -> HeldKey | None:
        return None

    def decryption_keys(self, address: str) -> Sequence[HeldKey]:
        return ()

    def encryption_certificate(self, address: str) -> x509.Certificate | None:
        return None

    def organisation_key(self) -> HeldKey | None:
        return None


def _context() -> InboundContext:
    root = x509.load_pem_x509_certificate(ROOT_R3.read_bytes())
    context = InboundContext.from_config(GatewayConfig(), trust=[root], revocation=None,
                                         hostname="gw.example.org")
    return dataclasses.replace(context, now=lambda: AT)


def _result(data: bytes) -> dict[str, str]:
    # the Johnny files are LF-only and delivered as received (the result header CRLF)
    (value,) = [h.value() for h in Entity.parse(to_crlf(data)).headers
                if h.lname == "x-smimekit-result"]
    return dict(p.strip().split("=", 1) for p in value.split(";")[1:])


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.file)
def test_johnny_messages_never_pass_as_validly_signed_by_someone_else(row: Row) -> None:
    data = read_bytes(FOLDER, row.file)
    envelope = Envelope("eve@bigcorporation.de", ("johnny@example.org",), data)
    try:
        outcome = process_inbound(envelope, envelope.recipients, held_keys=NoKeys(),
                                  policy_for=lambda _: InboundSettings(),
                                  context=_context())
    except GatewayError as exc:
        assert exc.permanent and "header cannot be read" in str(exc)
        return
    (delivery,) = outcome.deliveries
    assert delivery.recipients == ("johnny@example.org",)
    facts = _result(delivery.data)
    if row.expect is Expect.VALID:
        assert facts["signature"] == "valid" and facts["signer"] == row.signer
    else:
        assert facts["signature"] != "valid", facts


def _b64(der: bytes) -> bytes:
    return base64.encodebytes(der).replace(b"\n", b"\r\n")  # SMTP brings CRLF


def _pkcs7(body: bytes, smime_type: str = "enveloped-data") -> bytes:
    return (b"From: x@partner.example\r\nTo: bob@example.org\r\nSubject: broken\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: application/pkcs7-mime; smime-type="
            + smime_type.encode() + b"\r\nContent-Transfer-Encoding: base64\r\n\r\n" + body)


@pytest.mark.parametrize("data", [
    _pkcs7(b"!!!! not base64 at all ####\r\n"),
    _pkcs7(_b64(b"\x30\x80" + b"\x00" * 50)),
    _pkcs7(_b64(b"\x30\x03\x02\x01\x01"), "signed-data"),
    _pkcs7(b""),
    b"From: x@partner.example\r\nMIME-Version: 1.0\r\nContent-Type: multipart/signed;"
    b' protocol="application/pkcs7-signature"; boundary=b\r\n\r\n--b\r\n\r\nhi\r\n--b--\r\n',
    b"From: x@partner.example\r\nContent-Type: multipart/mixed\r\n\r\nno boundary\r\n",
    b"Subject: no body",
], ids=["garbage-base64", "truncated-ber", "bogus-signed-data", "empty", "signed-no-sig",
        "multipart-no-boundary", "headers-only"])
def test_broken_structures_are_delivered_as_received_with_a_verdict(data: bytes) -> None:
    envelope = Envelope("x@partner.example", ("bob@example.org",), data)
    outcome = process_inbound(envelope, envelope.recipients, held_keys=NoKeys(),
                              policy_for=lambda _: InboundSettings(), context=_context())
    (delivery,) = outcome.deliveries
    assert delivery.data.endswith(data)
    assert _result(delivery.data)["signature"] != "valid"
