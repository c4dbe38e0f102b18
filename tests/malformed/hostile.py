"""Messages over the parser budgets (smimekit.cms.limits), built from real ones.

Each builder takes the DER of a real message and repeats one of its elements ``n`` times,
so that everything but the count is what a parser would otherwise accept. They are shared
by the tests (tests/malformed/test_budgets.py, tests/archive) and by
benchmarks/bench_budgets.py, which also runs ``openssl cms`` on the same files.
"""

from __future__ import annotations

from collections.abc import Callable

from smimekit.cms import der as d

SIGNED_DATA_OID = bytes.fromhex("06092a864886f70d010702")


def _open(ci: bytes) -> tuple[bytes, list[tuple[int, bytes]]]:
    """(the contentType TLV, the fields of the content) of a DER ContentInfo."""
    kids = d.children(ci)
    assert kids is not None and len(kids) == 2
    inner = d.children(kids[1][1])
    assert inner is not None
    fields = d.children(inner[0][1])
    assert fields is not None
    return kids[0][1], fields


def _close(oid: bytes, fields: list[bytes]) -> bytes:
    return d.seq(oid, d.tlv(0xA0, d.seq(*fields)))


def _repeat(tag: int, element: bytes, n: int, extra: list[bytes] | None = None) -> bytes:
    # A DER SET OF is sorted; equal copies are trivially in order.
    return d.tlv(tag, *sorted([element] * n + (extra or [])))


def many_recipient_infos(ci: bytes, decoy: bytes, n: int) -> bytes:
    """``ci`` (an EnvelopedData or AuthEnvelopedData) with ``n`` copies of the first
    RecipientInfo of ``decoy`` (another message) beside its own recipients."""
    oid, fields = _open(ci)
    _, decoy_fields = _open(decoy)
    infos = d.children(fields[1][1])
    decoys = d.children(decoy_fields[1][1])
    assert infos is not None and decoys is not None
    new = _repeat(0x31, decoys[0][1], n, [i for _, i in infos])
    return _close(oid, [fields[0][1], new, *(f for _, f in fields[2:])])


def many_recipient_encrypted_keys(ci: bytes, n: int) -> bytes:
    """``ci`` (encrypted to one EC key) with ``n`` copies of the RecipientEncryptedKey of
    its one key agreement RecipientInfo (KARI)."""
    oid, fields = _open(ci)
    infos = d.children(fields[1][1])
    assert infos is not None and infos[0][0] == 0xA1
    kari = d.children(infos[0][1])
    assert kari is not None
    reks = d.children(kari[-1][1])
    assert reks is not None
    new_kari = d.tlv(0xA1, *(f for _, f in kari[:-1]), d.seq(*[reks[0][1]] * n))
    return _close(oid, [fields[0][1], d.tlv(0x31, new_kari), *(f for _, f in fields[2:])])


def many_signer_infos(ci: bytes, n: int) -> bytes:
    """A SignedData with its SignerInfo ``n`` times."""
    oid, fields = _open(ci)
    infos = d.children(fields[-1][1])
    assert infos is not None
    return _close(oid, [*(f for _, f in fields[:-1]), _repeat(0x31, infos[0][1], n)])


def many_certificates(ci: bytes, n: int) -> bytes:
    """A SignedData with its first certificate ``n`` times."""
    oid, fields = _open(ci)
    at = next(i for i, (tag, _) in enumerate(fields) if tag == 0xA0)
    certs = d.children(fields[at][1])
    assert certs is not None
    new = d.tlv(0xA0, *[certs[0][1]] * n)
    return _close(oid, [*(f for _, f in fields[:at]), new, *(f for _, f in fields[at + 1:])])


def many_digest_algorithms(ci: bytes, n: int) -> bytes:
    """A SignedData whose digestAlgorithms lists its one digest ``n`` times."""
    oid, fields = _open(ci)
    digests = d.children(fields[1][1])
    assert digests is not None and len(digests) == 1
    return _close(oid, [fields[0][1], _repeat(0x31, digests[0][1], n),
                        *(f for _, f in fields[2:])])


JUNK_ATTRIBUTE = d.seq(d.oid("1.2.3.4"), d.set_of(d.tlv(0x05, b"")))
"""An attribute of a type nobody reads, with one NULL value."""


def _with_signer_info(ci: bytes, edit: Callable[[list[tuple[int, bytes]]], list[bytes]]) -> bytes:
    """A SignedData whose one SignerInfo's fields are replaced by ``edit(fields)``."""
    oid, fields = _open(ci)
    infos = d.children(fields[-1][1])
    assert infos is not None and len(infos) == 1
    parts = d.children(infos[0][1])
    assert parts is not None
    return _close(oid, [*(f for _, f in fields[:-1]), d.set_of(d.seq(*edit(parts)))])


def _signed_attributes(ci: bytes, edit: Callable[[list[bytes]], list[bytes]]) -> bytes:
    """A SignedData whose one signer's signed attributes are ``edit(attributes)``, as a
    sorted SET (its signature then fails: attributes are read before it is checked)."""
    def edit_info(parts: list[tuple[int, bytes]]) -> list[bytes]:
        out = []
        for tag, part in parts:
            if tag == 0xA0:
                attrs = d.children(part)
                assert attrs is not None
                part = d.tlv(0xA0, *sorted(edit([a for _, a in attrs])))
            out.append(part)
        return out
    return _with_signer_info(ci, edit_info)


def many_signed_attributes(ci: bytes, n: int) -> bytes:
    """A SignedData whose signer carries ``n`` junk signed attributes besides its own (its
    signature then fails: it is counted before anything is checked)."""
    return _signed_attributes(ci, lambda attrs: [*attrs, *[JUNK_ATTRIBUTE] * n])


def many_unsigned_attributes(ci: bytes, n: int) -> bytes:
    """A SignedData whose signer carries ``n`` junk unsigned attributes (no signature
    covers them: anyone on the way can add them)."""
    return _with_signer_info(ci, lambda parts: [*(p for _, p in parts),
                                                _repeat(0xA1, JUNK_ATTRIBUTE, n)])


def many_attribute_values(ci: bytes, n: int) -> bytes:
    """A SignedData whose content-type signed attribute has its value ``n`` times."""
    content_type = d.oid("1.2.840.113549.1.9.3")

    def repeated(attr: bytes) -> bytes:
        fields = d.children(attr)
        assert fields is not None
        if fields[0][1] != content_type:
            return attr
        values = d.children(fields[1][1])
        assert values is not None
        return d.seq(content_type, _repeat(0x31, values[0][1], n))
    return _signed_attributes(ci, lambda attrs: [repeated(a) for a in attrs])


def many_auth_attributes(ci: bytes, n: int) -> bytes:
    """An AuthEnvelopedData (written without authAttrs) with ``n`` junk authAttrs."""
    oid, fields = _open(ci)
    assert fields[-1][0] == 0x04 and fields[-2][0] == 0x30  # ... content, mac
    return _close(oid, [*(f for _, f in fields[:-1]), _repeat(0xA1, JUNK_ATTRIBUTE, n),
                        fields[-1][1]])


def many_crls(ci: bytes, crl: bytes, n: int) -> bytes:
    """A SignedData carrying ``crl`` ``n`` times in its [1] crls."""
    oid, fields = _open(ci)
    at = len(fields) - 1  # crls sit just before signerInfos
    new = d.tlv(0xA1, *[crl] * n)
    return _close(oid, [*(f for _, f in fields[:at]), new, fields[at][1]])


def originator_certificates(ci: bytes, cert: bytes, n: int) -> bytes:
    """An EnvelopedData with an originatorInfo carrying ``cert`` ``n`` times."""
    oid, fields = _open(ci)
    originator = d.tlv(0xA0, d.tlv(0xA0, *[cert] * n))
    version = d.integer(2)  # RFC 5652 6.1: originatorInfo with certificates -> v2 at least
    return _close(oid, [version, originator, *(f for _, f in fields[1:])])


def _segments(content: bytes, n: int) -> bytes:
    """``content`` as BER segments: one octet each, then empty ones up to ``n`` in all."""
    assert n >= len(content)
    return (b"".join(b"\x04\x01" + bytes([b]) for b in content)
            + b"\x04\x00" * (n - len(content)))


def segmented_ciphertext(ci: bytes, n: int) -> bytes:
    """An EnvelopedData whose encryptedContent is a constructed, indefinite-length
    string of ``n`` segments (the ciphertext one octet per segment, then empty ones)."""
    oid, fields = _open(ci)
    at = next(i for i, (tag, _) in enumerate(fields) if i > 0 and tag == 0x30)
    eci = d.children(fields[at][1])
    assert eci is not None and eci[2][0] == 0x80
    _tag, start, length = d._header(eci[2][1], 0)
    ciphertext = eci[2][1][start:start + length]
    new_eci = d.seq(eci[0][1], eci[1][1], b"\xa0\x80" + _segments(ciphertext, n) + b"\x00\x00")
    return _close(oid, [*(f for _, f in fields[:at]), new_eci,
                        *(f for _, f in fields[at + 1:])])


def segmented_econtent(content: bytes, n: int) -> bytes:
    """A SignedData with no signer whose eContent is ``content`` in ``n`` BER segments."""
    data_oid = bytes.fromhex("06092a864886f70d010701")
    return (b"\x30\x80" + SIGNED_DATA_OID + b"\xa0\x80\x30\x80\x02\x01\x01\x31\x00\x30\x80"
            + data_oid + b"\xa0\x80\x24\x80" + _segments(content, n) + b"\x00\x00" * 3
            + b"\x31\x00" + b"\x00\x00" * 3)


def nested_segments(depth: int) -> bytes:
    """A SignedData whose eContent nests constructed strings ``depth`` deep (definite)."""
    data_oid = bytes.fromhex("06092a864886f70d010701")
    inner = d.octets(b"A")
    for _ in range(depth):
        inner = d.tlv(0x24, inner)
    encap = d.seq(data_oid, d.tlv(0xA0, inner))
    return d.seq(SIGNED_DATA_OID, d.tlv(0xA0, d.seq(d.integer(1), d.tlv(0x31), encap,
                                                     d.tlv(0x31))))


# -- deep nesting inside ANY fields: what asn1crypto's recursive parser meets ---------------

SMIME_CAPABILITIES_OID = d.oid("1.2.840.113549.1.9.15")


def nested(depth: int) -> bytes:
    """A NULL inside ``depth`` SEQUENCEs: small, and deeper than Python's recursion limit
    allows a recursive parser to go."""
    inner = d.tlv(0x05, b"")
    for _ in range(depth):
        inner = d.seq(inner)
    return inner


def capability_parameters(ci: bytes, parameters: bytes) -> bytes:
    """A SignedData whose signer's SMIMECapabilities attribute is replaced by one capability
    with ``parameters``."""
    caps = d.seq(SMIME_CAPABILITIES_OID, d.set_of(d.seq(d.seq(
        d.oid("2.16.840.1.101.3.4.1.46"), parameters))))
    return _signed_attributes(ci, lambda attrs: [
        *(a for a in attrs if SMIME_CAPABILITIES_OID not in a[:16]), caps])


def oaep_label_source(ci: bytes, source: bytes | None) -> bytes:
    """``ci`` (AuthEnvelopedData to one RSA recipient, OAEP) with RSAES-OAEP parameters
    naming SHA-256 and ``source`` as the pSourceAlgorithm (None: left out, the default)."""
    oid, fields = _open(ci)
    infos = d.children(fields[1][1])
    assert infos is not None and len(infos) == 1
    ktri = d.children(infos[0][1])
    assert ktri is not None
    sha256 = d.seq(d.oid("2.16.840.1.101.3.4.2.1"))
    oaep = d.seq(d.oid("1.2.840.113549.1.1.7"), d.seq(
        d.tlv(0xA0, sha256), d.tlv(0xA1, d.seq(d.oid("1.2.840.113549.1.1.8"), sha256)),
        *([] if source is None else [d.tlv(0xA2, source)])))
    new_ktri = d.seq(*(oaep if i == 2 else f for i, (_, f) in enumerate(ktri)))
    return _close(oid, [fields[0][1], d.set_of(new_ktri), *(f for _, f in fields[2:])])


def kem_recipient(ci: bytes, kem_parameters: bytes) -> bytes:
    """``ci`` with one more RecipientInfo: an id-ori-kem one (ML-KEM-768) whose KEM
    algorithm carries ``kem_parameters``, for nobody the reader holds a key of."""
    oid, fields = _open(ci)
    infos = d.children(fields[1][1])
    assert infos is not None
    kemri = d.seq(d.integer(0), d.tlv(0x80, b"\x01" * 20),
                  d.seq(d.oid("2.16.840.1.101.3.4.4.2"), kem_parameters),
                  d.octets(b"\x00" * 1088), d.seq(d.oid("1.2.840.113549.1.9.16.3.28")),
                  d.integer(32), d.seq(d.oid("2.16.840.1.101.3.4.1.45")),
                  d.octets(b"\x00" * 40))
    ori = d.tlv(0xA4, d.oid("1.2.840.113549.1.9.16.13.3"), kemri)
    new = d.tlv(0x31, *sorted([*(i for _, i in infos), ori]))
    return _close(oid, [fields[0][1], new, *(f for _, f in fields[2:])])
