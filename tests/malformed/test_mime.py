"""Broken MIME around S/MIME: the most specific SmimeError, never a crash or a false verdict."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pytest
from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from properties.pki import Pki, message, test_pki

import smimekit
from malformed.cases import (
    CRLF,
    count_splits,
    der_of,
    encrypted,
    multipart_signed,
    pkcs7_mime,
    signature_part,
    signed,
    signed_parts,
)
from smimekit.errors import (
    ASN1Error,
    MalformedError,
    MIMEError,
    NoRecipientError,
    NoSignatureError,
    SignatureInvalidError,
    SmimeError,
    UnsupportedError,
    VerificationError,
)
from smimekit.smime import canonical, hp_read, wrap
from smimekit.smime import message as smime_message


def _verify(kit: Pki, msg: bytes) -> smimekit.Verified:
    return smimekit.verify(msg, trust=[kit.ca])


def _decrypt(kit: Pki, msg: bytes, who: str = "rsa") -> smimekit.Decrypted:
    return smimekit.decrypt(msg, kit[who].key, kit[who].cert)


@pytest.fixture(scope="module")
def ms(kit: Pki) -> bytes:
    """A good multipart/signed message from rsa@example.org."""
    good = signed(kit)
    assert _verify(kit, good).verdict.valid
    return good


# -- header sections -------------------------------------------------------------------------


@pytest.mark.parametrize("lone", [b"\r", b"\n"])
def test_a_lone_cr_or_lf_in_a_header_field_never_shows_as_the_signed_message(
        kit: Pki, ms: bytes, lone: bytes) -> None:
    """A field whose lone CR is a line break to Python's email package but not to a CRLF
    parser: in front of a genuine signed message it carried a From, a Subject and a body of
    the sender's choosing into Verified.as_message() of a VALID verdict. A lone CR in a field
    is now refused; lone LFs become CRLF before anything is parsed (the input's line ending),
    so the message is then read as the reader reads it: Mallory's, and not signed."""
    import email
    import email.policy

    field = (b"Received: by mx.partner.example" + lone + b"From: Mallory <m@evil.example>"
             + lone + b"Subject: Payment" + lone + lone + b"Wire 50,000 EUR today." + lone)
    hostile = field + CRLF + ms
    shown = email.message_from_bytes(hostile, policy=email.policy.default)
    assert shown["From"] == "Mallory <m@evil.example>"  # what a reader would have shown
    refused = (MIMEError, "carriage return or line feed alone inside a field") \
        if lone == b"\r" else (NoSignatureError, "not signed")
    with pytest.raises(refused[0], match=refused[1]):
        _verify(kit, hostile)
    with pytest.raises(MIMEError, match=refused[1] if lone == b"\r" else "not encrypted"):
        _decrypt(kit, field + CRLF + encrypted(kit))


# -- multipart/signed structure ------------------------------------------------------------


def test_multipart_signed_with_one_part_is_a_mime_error(kit: Pki, ms: bytes) -> None:
    head, part1, _part2, boundary = signed_parts(ms)
    with pytest.raises(MIMEError):
        _verify(kit, multipart_signed(head, [part1], boundary))


def test_multipart_signed_with_three_parts_is_a_mime_error(kit: Pki, ms: bytes) -> None:
    head, part1, part2, boundary = signed_parts(ms)
    with pytest.raises(MIMEError):
        _verify(kit, multipart_signed(head, [part1, part2, part2], boundary))
    with pytest.raises(MIMEError):
        _verify(kit, multipart_signed(head, [part1, part1, part2], boundary))


def test_multipart_signed_with_no_parts_is_a_mime_error(kit: Pki, ms: bytes) -> None:
    head, _part1, _part2, boundary = signed_parts(ms)
    with pytest.raises(MIMEError):
        _verify(kit, head + b"--" + boundary + b"--" + CRLF)


def test_multipart_signed_without_a_boundary_parameter_is_a_mime_error(
    kit: Pki, ms: bytes
) -> None:
    _head, _part1, _part2, boundary = signed_parts(ms)
    with pytest.raises(MIMEError):
        _verify(kit, ms.replace(b'; boundary="' + boundary + b'"', b""))
    with pytest.raises(MIMEError):
        _verify(kit, ms.replace(b'boundary="' + boundary + b'"', b'boundary=""'))


def test_multipart_signed_whose_boundary_never_occurs_is_a_mime_error(
    kit: Pki, ms: bytes
) -> None:
    _head, _part1, _part2, boundary = signed_parts(ms)
    with pytest.raises(MIMEError):
        _verify(kit, ms.replace(b'boundary="' + boundary, b'boundary="x' + boundary))


def test_multipart_signed_without_its_closing_delimiter_is_a_mime_error(
    kit: Pki, ms: bytes
) -> None:
    head, part1, part2, boundary = signed_parts(ms)
    with pytest.raises(MIMEError):
        _verify(kit, multipart_signed(head, [part1, part2], boundary, close=False))
    with pytest.raises(MIMEError):  # cut off in the middle of the signature
        _verify(kit, ms[: ms.index(b"--" + boundary + b"--") - 200])


@pytest.mark.parametrize(
    "protocol", [b"application/pgp-signature", b"application/x-unknown", b"text/plain"]
)
def test_multipart_signed_with_another_protocol_is_not_an_smime_signature(
    kit: Pki, ms: bytes, protocol: bytes
) -> None:
    with pytest.raises((NoSignatureError, UnsupportedError)):
        _verify(kit, ms.replace(b'protocol="application/pkcs7-signature"',
                                b'protocol="' + protocol + b'"'))


def test_second_part_that_is_not_a_signature_is_a_mime_error(kit: Pki, ms: bytes) -> None:
    head, part1, _part2, boundary = signed_parts(ms)
    with pytest.raises(MIMEError):
        _verify(kit, multipart_signed(head, [part1, b"Content-Type: text/plain\r\n\r\nhi"],
                                      boundary))


@pytest.mark.parametrize(
    "damage",
    [
        b"QUJDR",  # a length that is not a multiple of four
        b"QUJDRA=",  # padding that does not complete the last quantum
        b"====",
    ],
)
def test_bad_base64_in_the_signature_is_a_mime_error(kit: Pki, ms: bytes, damage: bytes) -> None:
    head, part1, part2, boundary = signed_parts(ms)
    sig_head, _, _ = part2.partition(b"\r\n\r\n")
    broken = sig_head + b"\r\n\r\n" + damage + CRLF
    with pytest.raises(MIMEError):
        _verify(kit, multipart_signed(head, [part1, broken], boundary))


def test_an_empty_signature_part_is_malformed(kit: Pki, ms: bytes) -> None:
    head, part1, part2, boundary = signed_parts(ms)
    sig_head, _, _ = part2.partition(b"\r\n\r\n")
    with pytest.raises(MalformedError):
        _verify(kit, multipart_signed(head, [part1, sig_head + b"\r\n\r\n"], boundary))


@pytest.mark.parametrize("cte", [b"x-uuencode", b"base65", b"7bit; junk", b"\xff\xfe"])
def test_unknown_content_transfer_encoding_is_a_mime_error(
    kit: Pki, ms: bytes, cte: bytes
) -> None:
    with pytest.raises(MIMEError):
        _verify(kit, ms.replace(b"Content-Transfer-Encoding: base64",
                                b"Content-Transfer-Encoding: " + cte))
    opaque = signed(kit, opaque=True)
    with pytest.raises(MIMEError):
        _verify(kit, opaque.replace(b"Content-Transfer-Encoding: base64",
                                    b"Content-Transfer-Encoding: " + cte))
    sealed = encrypted(kit)
    with pytest.raises(MIMEError):
        _decrypt(kit, sealed.replace(b"Content-Transfer-Encoding: base64",
                                     b"Content-Transfer-Encoding: " + cte))


def test_signature_part_replaced_by_an_enveloped_blob_is_not_a_signature(
    kit: Pki, ms: bytes
) -> None:
    head, part1, _part2, boundary = signed_parts(ms)
    sealed = der_of(encrypted(kit))
    with pytest.raises(NoSignatureError):
        _verify(kit, multipart_signed(head, [part1, signature_part(sealed)], boundary))


def test_signature_of_another_message_is_a_digest_mismatch(kit: Pki, ms: bytes) -> None:
    head, part1, _part2, boundary = signed_parts(ms)
    _h, _p1, other_signature, _b = signed_parts(signed(kit, body=b"Another body.\r\n"))
    with pytest.raises(SignatureInvalidError):
        _verify(kit, multipart_signed(head, [part1, other_signature], boundary))


def test_opaque_signed_data_with_other_content_as_a_detached_signature_is_refused(
    kit: Pki, ms: bytes
) -> None:
    """Content confusion: the signature part embeds content different from part one."""
    head, part1, _part2, boundary = signed_parts(ms)
    other = der_of(signed(kit, opaque=True, body=b"What the signer really signed.\r\n"))
    with pytest.raises(SignatureInvalidError):
        _verify(kit, multipart_signed(head, [part1, signature_part(other)], boundary))


# -- application/pkcs7-mime ----------------------------------------------------------------


def _certs_only(kit: Pki) -> bytes:
    """A degenerate SignedData: certificates, no content, no signers (RFC 8551 3.6)."""
    cert = asn1_x509.Certificate.load(kit["rsa"].cert.public_bytes(serialization.Encoding.DER))
    signed_data = cms.SignedData({
        "version": "v1", "digest_algorithms": [], "encap_content_info": {"content_type": "data"},
        "certificates": [cert], "signer_infos": [],
    })
    return cms.ContentInfo({"content_type": "signed_data", "content": signed_data}).dump()


def test_certs_only_message_is_not_signed(kit: Pki) -> None:
    certs_only = pkcs7_mime(_certs_only(kit), "certs-only")
    with pytest.raises(NoSignatureError):
        _verify(kit, certs_only)
    with pytest.raises(MalformedError):
        _decrypt(kit, certs_only)


@pytest.mark.parametrize("smime_type", ["signed-data", "enveloped-data", "authEnveloped-data"])
def test_pkcs7_mime_carrying_garbage_is_an_asn1_error(kit: Pki, smime_type: str) -> None:
    garbage = pkcs7_mime(b"This is not DER at all, just text. " * 4, smime_type)
    with pytest.raises(ASN1Error):
        _verify(kit, garbage)
    with pytest.raises(ASN1Error):
        _decrypt(kit, garbage)


def test_pkcs7_mime_carrying_plain_data_is_malformed(kit: Pki) -> None:
    data = cms.ContentInfo({"content_type": "data", "content": b"hello"}).dump()
    with pytest.raises(MalformedError):
        _verify(kit, pkcs7_mime(data))
    with pytest.raises(MalformedError):
        _decrypt(kit, pkcs7_mime(data, "enveloped-data"))


def _one_over_a_quantum(msg: bytes) -> bytes:
    """The message with its base64 body cut to 4n+1 characters: never decodable."""
    head, _, body = msg.partition(b"\r\n\r\n")
    chars = re.sub(rb"[^A-Za-z0-9+/]", b"", body)
    cut = chars[: (len(chars) // 4) * 4 - 3]
    return head + b"\r\n\r\n" + b64_lines_of(cut)


def b64_lines_of(chars: bytes) -> bytes:
    return b"".join(chars[i:i + 76] + CRLF for i in range(0, len(chars), 76))


def test_bad_base64_in_pkcs7_mime_is_a_mime_error(kit: Pki) -> None:
    with pytest.raises(MIMEError):
        _decrypt(kit, _one_over_a_quantum(encrypted(kit)))
    with pytest.raises(MIMEError):
        _verify(kit, _one_over_a_quantum(signed(kit, opaque=True)))


def test_pkcs7_mime_with_an_empty_body_is_a_mime_error(kit: Pki) -> None:
    with pytest.raises(MIMEError):
        _verify(kit, pkcs7_mime(b"", body=b""))
    with pytest.raises(MIMEError):
        _decrypt(kit, pkcs7_mime(b"", "enveloped-data", body=b"\r\n\r\n"))


# -- whole messages ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b"", b"\r\n", b"\n\n\n", b"From: rsa@example.org", b"Subject: no body\r\n\r\n",
     b"\x00\xff\xfe" * 50, b"not a header line\r\n\r\nbody"],
    ids=["empty", "crlf", "lfs", "header-only", "no-body", "binary", "bad-header"],
)
def test_unsigned_or_unreadable_message_is_not_signed(kit: Pki, raw: bytes) -> None:
    with pytest.raises((NoSignatureError, MIMEError)):
        _verify(kit, raw)
    with pytest.raises(MalformedError):
        _decrypt(kit, raw)


def test_plain_message_is_not_signed(kit: Pki) -> None:
    with pytest.raises(NoSignatureError):
        _verify(kit, message())


def test_encrypted_message_given_to_verify_needs_a_key(kit: Pki) -> None:
    with pytest.raises(NoRecipientError):
        _verify(kit, encrypted(kit))


def test_signed_message_given_to_decrypt_is_not_encrypted(kit: Pki, ms: bytes) -> None:
    with pytest.raises(MalformedError):
        _decrypt(kit, ms)
    with pytest.raises(MalformedError):
        _decrypt(kit, signed(kit, opaque=True))


def test_more_nested_layers_than_the_limit_is_a_mime_error(kit: Pki) -> None:
    user = kit["rsa"]
    layered = message()
    for _ in range(12):
        layered = smimekit.sign(layered, user.key, user.cert)
    with pytest.raises(MIMEError):
        _verify(kit, layered)


def _nested_multiparts(depth: int) -> bytes:
    entity = b"Content-Type: text/plain\r\n\r\nleaf"
    for level in range(depth):
        b = f"b{level}".encode()
        entity = (b'Content-Type: multipart/mixed; boundary="' + b + b'"\r\n\r\n--' + b + CRLF
                  + entity + CRLF + b"--" + b + b"--" + CRLF)
    return b"From: rsa@example.org\r\n" + entity


def test_deeply_nested_multiparts_are_not_signed_and_finish(kit: Pki) -> None:
    bomb = _nested_multiparts(3000)
    with pytest.raises(NoSignatureError):
        _verify(kit, bomb)
    with pytest.raises(MalformedError):
        _decrypt(kit, bomb)


def test_a_hundred_thousand_parts_are_not_signed_and_finish(kit: Pki) -> None:
    body = b"--x\r\n\r\npart\r\n" * 100_000 + b"--x--\r\n"
    with pytest.raises(NoSignatureError):
        _verify(kit, b"Content-Type: multipart/mixed; boundary=x\r\n\r\n" + body)


@dataclass
class _Work:
    split: list[int] = field(default_factory=list)
    """How many parts each call of split_multipart handed out."""
    parsed: int = 0
    """How many entities were parsed."""


@pytest.fixture
def work(monkeypatch: pytest.MonkeyPatch) -> _Work:
    """Counts what reading a message costs in parts, not in seconds (the budgets must hold
    on a loaded machine too)."""
    seen = _Work(split=count_splits(monkeypatch, wrap, smime_message, hp_read))
    real_parse = canonical.Entity.parse.__func__  # type: ignore[attr-defined]

    def parse(cls: type[canonical.Entity], raw: bytes) -> canonical.Entity:
        seen.parsed += 1
        return real_parse(cls, raw)  # type: ignore[no-any-return]

    monkeypatch.setattr(canonical.Entity, "parse", classmethod(parse))
    return seen


def test_parts_past_the_walk_budget_are_neither_split_nor_parsed(kit: Pki, work: _Work) -> None:
    """Looking for S/MIME parts buried in an unsigned multipart reads MAX_WALK_PARTS parts:
    the split stops there too (a million empty parts, 7 MB, took 2.4 s and 90 MB)."""
    many = wrap.MAX_WALK_PARTS * 3
    msg = (b"From: rsa@example.org\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n"
           + b"--x\r\n\r\n" * many + b"--x--\r\n")  # empty parts, 7 bytes each
    assert canonical.split_multipart(msg, "x") == [b""] * many  # what there is to read
    work.split.clear()
    with pytest.raises(NoSignatureError):
        _verify(kit, msg)
    assert max(work.split) <= wrap.MAX_WALK_PARTS
    assert work.parsed <= wrap.MAX_WALK_PARTS + 2


def test_a_signed_part_within_the_walk_budget_is_still_found(kit: Pki, ms: bytes) -> None:
    parts = [b"Content-Type: text/plain\r\n\r\nx"] * 10 + [ms.partition(b"\r\n")[2]]
    body = b"".join(b"--x\r\n" + part + CRLF for part in parts) + b"--x--\r\n"
    msg = b"From: rsa@example.org\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n" + body
    with pytest.raises(VerificationError) as caught:
        _verify(kit, msg)
    assert caught.value.verdict is not None and caught.value.verdict.partially_signed


def test_multipart_signed_with_many_parts_is_refused_at_the_third(
        kit: Pki, ms: bytes, work: _Work) -> None:
    head, part1, part2, boundary = signed_parts(ms)
    msg = multipart_signed(head, [part1, part2, *[b""] * 1000], boundary)
    with pytest.raises(MIMEError, match="exactly 2 parts, this one has more"):
        _verify(kit, msg)
    assert work.split and max(work.split) == 3


def test_legacy_display_search_splits_no_more_parts_than_its_budget(
        kit: Pki, work: _Work) -> None:
    """A header-protected message (RFC 9788) whose body is a multipart/alternative of many
    parts: the search for legacy display elements, which parses every alternative, leaves
    one with more than MAX_LEGACY_PARTS parts as it is, without splitting the rest."""
    many = hp_read.MAX_LEGACY_PARTS * 3
    alternatives = b"".join(b"--a\r\nContent-Type: text/plain\r\n\r\nx\r\n"
                            for _ in range(many)) + b"--a--\r\n"
    user = kit["rsa"]
    sent = smimekit.sign(message(alternatives, headers=b"Content-Type: multipart/alternative;"
                                                       b" boundary=a\r\n"),
                         user.key, user.cert)
    work.split.clear()
    work.parsed = 0
    verified = _verify(kit, sent)
    assert verified.verdict.valid
    assert verified.verdict.header_protection is not None
    assert verified.content.count(b"--a\r\n") == many  # shown as sent
    assert max(work.split) <= hp_read.MAX_LEGACY_PARTS + 1
    assert work.parsed < 20


# -- mutated messages ----------------------------------------------------------------------


def _entity(content: bytes) -> bytes:
    """What follows the outer headers in a result's ``content``."""
    # Outer headers never include MIME-Version (a content header), so its own line starts
    # the part smimekit added.
    match = re.search(rb"(?:\A|\r\n)MIME-Version: 1\.0\r\n", content)
    assert match is not None
    return content[match.end():]


_SOURCES: dict[str, tuple[bytes, bytes]] = {}


def _source(kind: str) -> tuple[bytes, bytes]:
    """(message, the entity that verify/decrypt gives back for it unaltered)."""
    if kind not in _SOURCES:
        kit = test_pki()
        msg = {
            "multipart-signed": lambda: signed(kit, body=b"caf\xc3\xa9\r\n" * 3),
            "opaque-signed": lambda: signed(kit, opaque=True, signer="p256"),
            "auth-enveloped": lambda: encrypted(kit, "x25519"),
            "signed-then-encrypted": lambda: smimekit.sign_encrypt(
                message(sender="p256"), kit["p256"].key, kit["p256"].cert, [kit["rsa"].cert]),
        }[kind]()
        if kind == "auth-enveloped":
            out = _decrypt(kit, msg, "x25519").content
        elif kind == "signed-then-encrypted":
            out = smimekit.decrypt_verify(msg, kit["rsa"].key, kit["rsa"].cert,
                                          trust=[kit.ca]).content
        else:
            out = _verify(kit, msg).content
        _SOURCES[kind] = (msg, _entity(out))
    return _SOURCES[kind]


@st.composite
def _mutated(draw: st.DrawFn, msg: bytes) -> bytes:
    data = bytearray(msg)
    for _ in range(draw(st.integers(1, 3))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "set", "delete", "duplicate", "truncate"]))
        if op == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[at] = draw(st.sampled_from(list(b'\r\n-=:;" \t\x00\xff')))
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 40))]
        elif op == "duplicate":
            start = draw(st.integers(0, len(data) - 1))
            data[at:at] = data[start:start + draw(st.integers(1, 60))]
        else:
            del data[at:]
    return bytes(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), kind=st.sampled_from(["multipart-signed", "opaque-signed",
                                             "auth-enveloped", "signed-then-encrypted"]))
def test_a_mutated_message_fails_with_a_smime_error_or_gives_back_the_original(
    data: st.DataObject, kind: str
) -> None:
    """Never a crash; and whatever is released is exactly what was protected."""
    kit = test_pki()
    original, entity = _source(kind)
    mutated = data.draw(_mutated(original), label="mutated")
    try:
        if kind == "auth-enveloped":
            result: smimekit.Decrypted | smimekit.Verified = _decrypt(kit, mutated, "x25519")
        elif kind == "signed-then-encrypted":
            result = smimekit.decrypt_verify(mutated, kit["rsa"].key, kit["rsa"].cert,
                                             trust=[kit.ca])
        else:
            result = _verify(kit, mutated)
    except SmimeError:
        return
    if isinstance(result, smimekit.Verified):
        assert result.verdict.valid
    assert _entity(result.content) == entity
