"""Building blocks for broken messages: real messages from the test PKI, then damaged."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from properties.pki import Pki, message

import smimekit
from malformed.certs import BROKEN
from smimekit.smime import canonical

CRLF = b"\r\n"
SIGNED_DATA_OID = bytes.fromhex("06092a864886f70d010702")
DATA_OID = bytes.fromhex("06092a864886f70d010701")
AUTH_ENVELOPED_OID = bytes.fromhex("060b2a864886f70d0109100117")


def b64_lines(der: bytes) -> bytes:
    encoded = base64.b64encode(der)
    return b"".join(encoded[i:i + 76] + CRLF for i in range(0, len(encoded), 76))


def pkcs7_mime(der: bytes, smime_type: str = "signed-data", *, cte: bytes = b"base64",
               body: bytes | None = None, sender: str = "rsa") -> bytes:
    """A complete application/pkcs7-mime message from <sender>@example.org carrying ``der``."""
    return (f"From: {sender}@example.org\r\n".encode() +
            b"To: rsa2@example.org\r\nSubject: broken\r\n"
            b"MIME-Version: 1.0\r\n"
            b"Content-Type: application/pkcs7-mime; smime-type=" + smime_type.encode() +
            b'; name="smime.p7m"\r\n'
            b"Content-Transfer-Encoding: " + cte + b"\r\n\r\n" +
            (b64_lines(der) if body is None else body))


def count_splits(monkeypatch: pytest.MonkeyPatch, *modules: ModuleType) -> list[int]:
    """How many parts each call of ``split_multipart`` hands out, in each of ``modules`` (the
    name they imported it under): what a budget costs counted in parts, not in seconds."""
    sizes: list[int] = []
    real = canonical.split_multipart

    def split(*args: Any, **kwargs: Any) -> list[bytes]:
        parts = real(*args, **kwargs)
        sizes.append(len(parts))
        return parts

    for module in modules:
        monkeypatch.setattr(module, "split_multipart", split)
    return sizes


def der_of(pkcs7_message: bytes) -> bytes:
    """The CMS DER inside an application/pkcs7-mime message smimekit wrote."""
    return base64.b64decode(pkcs7_message.partition(b"\r\n\r\n")[2])


def signed(kit: Pki, *, opaque: bool = False, signer: str = "rsa",
           body: bytes = b"Hello, world.\r\n") -> bytes:
    user = kit[signer]
    return smimekit.sign(message(body, sender=signer), user.key, user.cert, opaque=opaque)


def encrypted(kit: Pki, recipient: str = "rsa", *,
              cipher: smimekit.Cipher = smimekit.Cipher.AES256_GCM, oaep: bool = False) -> bytes:
    return smimekit.encrypt(message(b"The secret is 42.\r\n"), [kit[recipient].cert],
                            cipher=cipher, oaep=oaep)


def tail_flip(der: bytes, back: int) -> bytes:
    """``der`` with one bit flipped in the byte ``back`` bytes from its end: always a change,
    unlike overwriting a byte with a constant it may already hold."""
    at = len(der) - back
    return der[:at] + bytes([der[at] ^ 1]) + der[at + 1:]


def boundary_of(multipart: bytes) -> bytes:
    match = re.search(rb'boundary="([^"]+)"', multipart)
    assert match is not None
    return match.group(1)


def signed_parts(multipart_signed: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """(headers and preamble up to the first delimiter, first part, second part, boundary)."""
    boundary = boundary_of(multipart_signed)
    delimiter = CRLF + b"--" + boundary
    first = multipart_signed.index(b"--" + boundary + CRLF)
    head = multipart_signed[:first]
    rest = CRLF + multipart_signed[first:]
    chunks = rest.split(delimiter)
    assert chunks[-1].startswith(b"--"), "closing delimiter"
    part1, part2 = (c[len(CRLF):] for c in chunks[1:3])
    return head, part1, part2, boundary


def multipart_signed(head: bytes, parts: list[bytes], boundary: bytes, *,
                     close: bool = True) -> bytes:
    body = b"".join(b"--" + boundary + CRLF + part + CRLF for part in parts)
    return head + body + (b"--" + boundary + b"--" + CRLF if close else b"")


def signature_part(der: bytes) -> bytes:
    return (b'Content-Type: application/pkcs7-signature; name="smime.p7s"\r\n'
            b"Content-Transfer-Encoding: base64\r\n\r\n" + b64_lines(der))


def length(n: int) -> bytes:
    """A DER length."""
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + length(len(content)) + content


def openssl() -> str | None:
    return shutil.which("openssl")


def openssl_run(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)


# -- a catalogue of broken inputs, for the CLI tests -----------------------------------------


def _bare_cr(message: bytes) -> bytes:
    """A genuine message behind a trace field whose lone CRs (RFC 5322 allows CR only in
    CRLF) make, to Python's email package and other readers, a From, a Subject, the end of
    the header section and a body of the sender's choosing."""
    return (b"Received: by mx.partner.example\rFrom: Mallory <mallory@evil.example>\r"
            b"Subject: Payment\r\rPlease wire 50,000 EUR today.\r\r\r\n" + message)


def _three_parts(kit: Pki) -> bytes:
    head, part1, part2, boundary = signed_parts(signed(kit))
    return multipart_signed(head, [part1, part2, part2], boundary)


def _one_part(kit: Pki) -> bytes:
    head, part1, _part2, boundary = signed_parts(signed(kit))
    return multipart_signed(head, [part1], boundary)


def _unclosed(kit: Pki) -> bytes:
    head, part1, part2, boundary = signed_parts(signed(kit))
    return multipart_signed(head, [part1, part2], boundary, close=False)


def _no_boundary(kit: Pki) -> bytes:
    good = signed(kit)
    return good.replace(b'; boundary="' + boundary_of(good) + b'"', b"")


def _tampered_content(kit: Pki) -> bytes:
    good = signed(kit)
    at = good.index(b"Hello")
    return good[:at] + b"J" + good[at + 1:]


def _signature_is_enveloped(kit: Pki) -> bytes:
    head, part1, _part2, boundary = signed_parts(signed(kit))
    return multipart_signed(head, [part1, signature_part(der_of(encrypted(kit)))], boundary)


def _bad_base64_signature(kit: Pki) -> bytes:
    head, part1, part2, boundary = signed_parts(signed(kit))
    sig_head = part2.partition(b"\r\n\r\n")[0]
    return multipart_signed(head, [part1, sig_head + b"\r\n\r\nQUJDR\r\n"], boundary)


def _certificate_with_invalid_version(kit: Pki) -> bytes:
    der = der_of(signed(kit, opaque=True))
    cert = kit["rsa"].cert.public_bytes(serialization.Encoding.DER)
    bad = cert.replace(b"\xa0\x03\x02\x01\x02", b"\xa0\x03\x02\x01\x05", 1)
    return pkcs7_mime(der.replace(cert, bad, 1))


def _signer_certificate_with_a_duplicate_extension(kit: Pki) -> bytes:
    """Signed with a certificate whose subjectAltName is there twice."""
    user = kit["rsa"]
    bad = x509.load_der_x509_certificate(BROKEN["duplicate-extension"](user.cert, kit.ca_key))
    return smimekit.sign(message(sender="rsa"), user.key, bad)


def _certs_only(kit: Pki) -> bytes:
    cert = asn1_x509.Certificate.load(kit["rsa"].cert.public_bytes(serialization.Encoding.DER))
    signed_data = cms.SignedData({
        "version": "v1", "digest_algorithms": [], "encap_content_info": {"content_type": "data"},
        "certificates": [cert], "signer_infos": [],
    })
    der = cms.ContentInfo({"content_type": "signed_data", "content": signed_data}).dump()
    return pkcs7_mime(der, "certs-only")


def _layers(kit: Pki) -> bytes:
    out = message()
    for _ in range(12):
        out = smimekit.sign(out, kit["rsa"].key, kit["rsa"].cert)
    return out


def _mac_overrun(kit: Pki) -> bytes:
    """The 16-octet MAC, last in the AuthEnvelopedData, claims 17 octets."""
    der = der_of(encrypted(kit))
    return pkcs7_mime(der[:-17] + b"\x11" + der[-16:], "authEnveloped-data")


BOMB = b"\x30\x80" * 50_000 + b"\x00\x00" * 50_000
GARBAGE = b"This is not DER at all, just text. " * 4

VERIFY_INPUTS = {
    "random-bytes": lambda kit: bytes(range(256)) * 4,
    "plain-message": lambda kit: message(),
    "one-part": _one_part,
    "three-parts": _three_parts,
    "no-boundary": _no_boundary,
    "no-closing-delimiter": _unclosed,
    "wrong-protocol": lambda kit: signed(kit).replace(b"application/pkcs7-signature\"",
                                                      b"application/pgp-signature\""),
    "bad-base64": _bad_base64_signature,
    "unknown-transfer-encoding": lambda kit: signed(kit).replace(
        b"Content-Transfer-Encoding: base64", b"Content-Transfer-Encoding: x-uuencode"),
    "signature-is-enveloped-data": _signature_is_enveloped,
    "tampered-content": _tampered_content,
    "certs-only": _certs_only,
    "garbage-cms": lambda kit: pkcs7_mime(GARBAGE),
    "truncated-cms": lambda kit: pkcs7_mime(der_of(signed(kit, opaque=True))[:300]),
    "absurd-length": lambda kit: pkcs7_mime(b"\x30\x84\xff\xff\xff\xff" + SIGNED_DATA_OID),
    "indefinite-length-bomb": lambda kit: pkcs7_mime(BOMB),
    "wrong-outer-tag": lambda kit: pkcs7_mime(b"\x31" + der_of(signed(kit, opaque=True))[1:]),
    "encrypted-without-key": lambda kit: encrypted(kit),
    "too-many-layers": _layers,
    "certificate-with-invalid-version": _certificate_with_invalid_version,
    "signer-certificate-with-a-duplicate-extension":
        _signer_certificate_with_a_duplicate_extension,
    "bare-cr-in-header": lambda kit: _bare_cr(signed(kit)),
}

DECRYPT_INPUTS = {
    "random-bytes": lambda kit: bytes(range(256)) * 4,
    "plain-message": lambda kit: message(),
    "signed-only": lambda kit: signed(kit),
    "certs-only": _certs_only,
    "wrong-key": lambda kit: encrypted(kit, "rsa2"),
    "tampered-tag": lambda kit: pkcs7_mime(tail_flip(der_of(encrypted(kit)), 1),
                                           "authEnveloped-data"),
    "garbage-cms": lambda kit: pkcs7_mime(GARBAGE, "enveloped-data"),
    "truncated-cms": lambda kit: pkcs7_mime(der_of(encrypted(kit))[:200], "enveloped-data"),
    "absurd-length": lambda kit: pkcs7_mime(b"\x30\x84\xff\xff\xff\xff", "enveloped-data"),
    "indefinite-length-bomb": lambda kit: pkcs7_mime(BOMB, "enveloped-data"),
    "unknown-transfer-encoding": lambda kit: encrypted(kit).replace(
        b"Content-Transfer-Encoding: base64", b"Content-Transfer-Encoding: x-uuencode"),
    "mac-overruns-structure": lambda kit: _mac_overrun(kit),
    "bare-cr-in-header": lambda kit: _bare_cr(encrypted(kit)),
}
