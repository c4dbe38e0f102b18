"""Certificates that load but cannot be read, made from real ones, and messages carrying them.

cryptography loads a certificate without decoding its subject, issuer or extensions; they
raise on first use (DuplicateExtension, UnsupportedGeneralNameType, ValueError, TypeError).
Each builder edits the TBSCertificate of a real certificate and signs it again with the
issuer's key, so that only the edited field is wrong. Shared by tests/malformed and
tests/gateway.
"""

from __future__ import annotations

from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from smimekit.cms import der as d

Fields = list[tuple[int, bytes]]

SAN = d.oid("2.5.29.17")
SKI = d.oid("2.5.29.14")
CN = d.oid("2.5.4.3")


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def resign(cert: x509.Certificate, issuer_key: object,
           edit: Callable[[Fields], Fields]) -> bytes:
    """DER of ``cert`` with its TBSCertificate fields edited, signed again by ``issuer_key``
    (EC or RSA, SHA-256; the signature algorithm is kept when it fits the key)."""
    top = d.children(der(cert))
    assert top is not None
    tbs = d.children(top[0][1])
    assert tbs is not None
    tbs = edit(tbs)
    body = d.seq(*(field for _, field in tbs))
    if isinstance(issuer_key, ec.EllipticCurvePrivateKey):
        signature = issuer_key.sign(body, ec.ECDSA(hashes.SHA256()))
    else:
        assert isinstance(issuer_key, rsa.RSAPrivateKey)
        signature = issuer_key.sign(body, padding.PKCS1v15(), hashes.SHA256())
    return d.seq(body, top[1][1], d.tlv(0x03, b"\x00" + signature))


def _version_offset(tbs: Fields) -> int:
    return 1 if tbs[0][0] == 0xA0 else 0


def _extensions(edit: Callable[[list[bytes]], list[bytes]]) -> Callable[[Fields], Fields]:
    def run(tbs: Fields) -> Fields:
        out = []
        for tag, field in tbs:
            if tag == 0xA3:
                outer = d.children(field)
                assert outer is not None
                listed = d.children(outer[0][1])
                assert listed is not None
                field = d.tlv(0xA3, d.seq(*edit([e for _, e in listed])))
            out.append((tag, field))
        return out
    return run


def _is(extension: bytes, oid: bytes) -> bool:
    parts = d.children(extension)
    return parts is not None and parts[0][1] == oid


def _name_at(index: int, name: bytes) -> Callable[[Fields], Fields]:
    """Replace the issuer (index 2 after the version) or the subject (index 4)."""
    def run(tbs: Fields) -> Fields:
        at = _version_offset(tbs) + index
        return [(tag, name if i == at else field) for i, (tag, field) in enumerate(tbs)]
    return run


def _cn(value: bytes) -> bytes:
    """A Name of one CN attribute whose value TLV is ``value``, as written."""
    return d.seq(d.set_of(d.seq(CN, value)))


def _san(value: bytes) -> Callable[[Fields], Fields]:
    return _extensions(lambda exts: [d.seq(SAN, d.octets(value)) if _is(e, SAN) else e
                                     for e in exts])


# Each takes (certificate, its issuer's key) and gives the DER of a broken copy.
BROKEN: dict[str, Callable[[x509.Certificate, object], bytes]] = {
    # cryptography: DuplicateExtension from .extensions
    "duplicate-extension": lambda cert, key: resign(cert, key, _extensions(
        lambda exts: [*exts, *(e for e in exts if _is(e, SAN))])),
    # UnsupportedGeneralNameType from .extensions
    "x400-address-in-san": lambda cert, key: resign(cert, key, _san(
        d.seq(d.tlv(0xA3, b""), d.tlv(0x81, b"x@example.org")))),
    "edi-party-name-in-san": lambda cert, key: resign(cert, key, _san(
        d.seq(d.tlv(0xA5, d.tlv(0xA1, d.tlv(0x0C, b"x"))), d.tlv(0x81, b"x@example.org")))),
    # ValueError from .subject / .issuer
    "bad-utf8-subject": lambda cert, key: resign(cert, key, _name_at(4, _cn(d.tlv(0x0C,
                                                                                  b"\xff\xfe")))),
    "bad-utf8-issuer": lambda cert, key: resign(cert, key, _name_at(2, _cn(d.tlv(0x0C,
                                                                                 b"\xff\xfe")))),
    # TypeError from .subject: a BIT STRING value is only allowed for x500UniqueIdentifier
    "bit-string-cn": lambda cert, key: resign(cert, key, _name_at(4, _cn(d.tlv(0x03,
                                                                               b"\x00\x01")))),
    # InvalidVersion from loading at all (X.509 "version 6")
    "invalid-version": lambda cert, key: der(cert).replace(b"\xa0\x03\x02\x01\x02",
                                                           b"\xa0\x03\x02\x01\x05", 1),
}

def with_one_letter_country(cert: x509.Certificate, issuer_key: object) -> bytes:
    """A copy of ``cert`` whose subject is C=G: decodable, but out of spec (a countryName is
    two letters), which cryptography warns about when it reads the name."""
    return resign(cert, issuer_key, _name_at(4, d.seq(d.set_of(d.seq(
        d.oid("2.5.4.6"), d.tlv(0x13, b"G"))))))


SIGNER_BROKEN = ("duplicate-extension", "x400-address-in-san", "edi-party-name-in-san",
                 "bad-utf8-subject", "bit-string-cn", "invalid-version")
"""Those a signer's certificate can be (issuer and serial still name it)."""


def without_ski(cert: x509.Certificate, issuer_key: object) -> bytes:
    """``cert`` without its subjectKeyIdentifier extension (well-formed)."""
    return resign(cert, issuer_key, _extensions(lambda exts: [e for e in exts
                                                              if not _is(e, SKI)]))


def unknown_key_without_ski(cert: x509.Certificate, issuer_key: object) -> bytes:
    """A well-formed certificate whose RSA key is of an unknown algorithm (the OID's last arc
    changed) and which has no subjectKeyIdentifier extension: its identifier must be worked
    out from the key's bytes (RFC 5280 4.2.1.2 method 1), as no key can be loaded."""
    rsa_oid = d.oid("1.2.840.113549.1.1.1")

    def run(tbs: Fields) -> Fields:
        at = _version_offset(tbs) + 5  # subjectPublicKeyInfo
        tbs = [(tag, field.replace(rsa_oid, d.oid("1.2.840.113549.1.1.127"), 1)
                if i == at else field) for i, (tag, field) in enumerate(tbs)]
        return _extensions(lambda exts: [e for e in exts if not _is(e, SKI)])(tbs)

    return resign(cert, issuer_key, run)


def _edit_certificates(ci: bytes, edit: Callable[[list[bytes]], list[bytes]]) -> bytes:
    kids = d.children(ci)
    assert kids is not None
    inner = d.children(kids[1][1])
    assert inner is not None
    fields = d.children(inner[0][1])
    assert fields is not None
    out = []
    for tag, field in fields:
        if tag == 0xA0:
            certs = d.children(field)
            assert certs is not None
            field = d.tlv(0xA0, *edit([c for _, c in certs]))
        out.append(field)
    return d.seq(kids[0][1], d.tlv(0xA0, d.seq(*out)))


def replace_certificate(ci: bytes, old: bytes, new: bytes) -> bytes:
    """A SignedData ContentInfo carrying ``new`` where it carried ``old``."""
    def edit(certs: list[bytes]) -> list[bytes]:
        assert old in certs and old != new
        return [new if c == old else c for c in certs]

    return _edit_certificates(ci, edit)


def with_certificate_first(ci: bytes, cert_der: bytes) -> bytes:
    """A SignedData ContentInfo with ``cert_der`` put first in its (unsigned) certificates
    field: what anyone relaying the message can do."""
    return _edit_certificates(ci, lambda certs: [cert_der, *certs])
