"""Broken ASN.1 is an ASN1Error (a MalformedError), quickly, and never anything else.

Inputs go in through the public recipes (inside an application/pkcs7-mime message) and
through the low-level CMS functions, which promise ASN1Error for undecodable structures.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from properties.pki import Pki, test_pki

import smimekit
from malformed import hostile
from malformed.cases import (
    AUTH_ENVELOPED_OID,
    DATA_OID,
    SIGNED_DATA_OID,
    der_of,
    encrypted,
    pkcs7_mime,
    signed,
    tlv,
)
from smimekit.cms import decrypt_enveloped, verify_signed_data
from smimekit.cms import der as d
from smimekit.cms.limits import MAX_BER_SEGMENTS
from smimekit.errors import (
    ASN1Error,
    MalformedError,
    MIMEError,
    NoSignatureError,
    SmimeError,
    UnsupportedError,
)

# Each case must fail in well under this; a parser that loops or allocates by the declared
# length would blow it.
FAST = 2.0


@pytest.fixture(scope="module")
def blobs(kit: Pki) -> dict[str, bytes]:
    return {
        "signed-data": der_of(signed(kit, opaque=True)),
        "enveloped-data": der_of(encrypted(kit, cipher=smimekit.Cipher.AES128_CBC)),
        "authEnveloped-data": der_of(encrypted(kit, "p256")),
    }


def _open(kit: Pki, smime_type: str) -> Callable[[bytes], object]:
    """The public recipe that reads a pkcs7-mime message of this smime-type."""
    if smime_type == "signed-data":
        return lambda der: smimekit.verify(pkcs7_mime(der, smime_type), trust=[kit.ca])
    user = kit["rsa"] if smime_type == "enveloped-data" else kit["p256"]
    return lambda der: smimekit.decrypt(pkcs7_mime(der, smime_type), user.key, user.cert)


def _low_level(kit: Pki, smime_type: str) -> Callable[[bytes], object]:
    if smime_type == "signed-data":
        return verify_signed_data
    user = kit["rsa"] if smime_type == "enveloped-data" else kit["p256"]
    return lambda der: decrypt_enveloped(der, [(user.key, user.cert)])


def _raises_fast(expected: type[SmimeError] | tuple[type[SmimeError], ...],
                 call: Callable[[], object]) -> SmimeError:
    start = time.monotonic()
    with pytest.raises(expected) as info:
        call()
    assert time.monotonic() - start < FAST
    return info.value


SMIME_TYPES = ["signed-data", "enveloped-data", "authEnveloped-data"]


@pytest.mark.parametrize("smime_type", SMIME_TYPES)
def test_cms_truncated_at_every_cut_point_is_an_asn1_error(
    kit: Pki, blobs: dict[str, bytes], smime_type: str
) -> None:
    der = blobs[smime_type]
    recipe, low = _open(kit, smime_type), _low_level(kit, smime_type)
    wrong: list[str] = []
    for cut in range(1, len(der)):
        for label, call in (("recipe", recipe), ("cms", low)):
            try:
                call(der[:cut])
            except ASN1Error:
                continue
            except Exception as exc:
                wrong.append(f"{label} cut at {cut}: {type(exc).__name__}: {exc}")
            else:
                wrong.append(f"{label} cut at {cut}: accepted")
    assert wrong == []


@pytest.mark.parametrize("smime_type", SMIME_TYPES)
@pytest.mark.parametrize("tag", [0x31, 0x04, 0x02, 0xA0, 0x10, 0x00, 0x1F, 0xFF])
def test_wrong_outer_tag_is_an_asn1_error(
    kit: Pki, blobs: dict[str, bytes], smime_type: str, tag: int
) -> None:
    der = bytes([tag]) + blobs[smime_type][1:]
    _raises_fast(ASN1Error, lambda: _open(kit, smime_type)(der))
    _raises_fast(ASN1Error, lambda: _low_level(kit, smime_type)(der))


def test_signed_data_fed_to_decrypt_and_enveloped_data_fed_to_verify(
    kit: Pki, blobs: dict[str, bytes]
) -> None:
    with pytest.raises(NoSignatureError):
        verify_signed_data(blobs["authEnveloped-data"])
    with pytest.raises(MalformedError):
        decrypt_enveloped(blobs["signed-data"], [(kit["rsa"].key, kit["rsa"].cert)])


ABSURD_LENGTHS = [
    b"\x30\x84\xff\xff\xff\xff",
    b"\x30\x84\xff\xff\xff\xff" + SIGNED_DATA_OID,
    b"\x30\x88\xff\xff\xff\xff\xff\xff\xff\xff" + SIGNED_DATA_OID,
    b"\x30\x89" + b"\xff" * 9,
    b"\x30\xfe" + b"\xff" * 126,  # a 126-octet length
    b"\x30\xff",
    b"\x30\x84\x7f\xff\xff\xff" + b"\x00" * 64,
    # a sane ContentInfo around an inner element that claims 4 GiB
    b"\x30\x80" + SIGNED_DATA_OID + b"\xa0\x84\xff\xff\xff\xff\x30\x00\x00\x00",
    b"\x30\x80" + AUTH_ENVELOPED_OID + b"\xa0\x80\x30\x84\xff\xff\xff\xff\x00\x00\x00\x00",
    # a high tag number that never ends
    b"\x3f" + b"\xff" * 64,
]


@pytest.mark.parametrize("smime_type", SMIME_TYPES)
@pytest.mark.parametrize("der", ABSURD_LENGTHS, ids=lambda d: d[:10].hex())
def test_absurd_lengths_are_asn1_errors_without_allocating(
    kit: Pki, smime_type: str, der: bytes
) -> None:
    _raises_fast(ASN1Error, lambda: _open(kit, smime_type)(der))
    _raises_fast(ASN1Error, lambda: _low_level(kit, smime_type)(der))


@pytest.mark.parametrize("octets", [2000, 20_000])
def test_an_absurdly_long_content_type_oid_is_malformed(kit: Pki, octets: int) -> None:
    """A well-formed ContentInfo whose content type has one enormous subidentifier."""
    der = tlv(0x30, tlv(0x06, b"\x2a" + b"\xff" * octets + b"\x7f"))
    for smime_type in SMIME_TYPES:
        _raises_fast(MalformedError, lambda t=smime_type: _open(kit, t)(der))
        _raises_fast((MalformedError, NoSignatureError),
                     lambda t=smime_type: _low_level(kit, t)(der))


def _nest_indefinite(depth: int, *, terminated: bool) -> bytes:
    return b"\x30\x80" * depth + (b"\x00\x00" * depth if terminated else b"")


def _nest_definite(depth: int) -> bytes:
    inner = b"\x05\x00"
    for _ in range(depth):
        inner = tlv(0x30, inner)
    return inner


BARE_BOMBS = {
    "indefinite-100": _nest_indefinite(100, terminated=True),
    "indefinite-100000": _nest_indefinite(100_000, terminated=True),
    "indefinite-unterminated-100000": _nest_indefinite(100_000, terminated=False),
    "definite-5000": _nest_definite(5000),
}
# Inside a ContentInfo of the right type, so that the parser has to go in.
SIGNED_BOMBS = {
    "indefinite-20000": b"\x30\x80" + SIGNED_DATA_OID + b"\xa0\x80"
    + _nest_indefinite(20_000, terminated=True) + b"\x00\x00\x00\x00",
    "definite-5000": tlv(0x30, SIGNED_DATA_OID + tlv(0xA0, _nest_definite(5000))),
    "constructed-octet-strings-5000": b"\x30\x80" + SIGNED_DATA_OID + b"\xa0\x80\x30\x80"
    b"\x02\x01\x01\x31\x00\x30\x80" + DATA_OID + b"\xa0\x80" + b"\x24\x80" * 5000
    + b"\x04\x01A" + b"\x00\x00" * 5000 + b"\x00\x00" * 4,
}
ENVELOPED_BOMBS = {
    "indefinite-20000": b"\x30\x80" + AUTH_ENVELOPED_OID + b"\xa0\x80"
    + _nest_indefinite(20_000, terminated=True) + b"\x00\x00\x00\x00",
    "definite-5000": tlv(0x30, AUTH_ENVELOPED_OID + tlv(0xA0, _nest_definite(5000))),
}


@pytest.mark.parametrize("smime_type", SMIME_TYPES)
@pytest.mark.parametrize("name", list(BARE_BOMBS))
def test_nesting_bombs_are_asn1_errors(kit: Pki, smime_type: str, name: str) -> None:
    der = BARE_BOMBS[name]
    _raises_fast(ASN1Error, lambda: _open(kit, smime_type)(der))
    _raises_fast(ASN1Error, lambda: _low_level(kit, smime_type)(der))


@pytest.mark.parametrize("name", list(SIGNED_BOMBS))
def test_nesting_bombs_inside_signed_data_are_asn1_errors(kit: Pki, name: str) -> None:
    der = SIGNED_BOMBS[name]
    _raises_fast(ASN1Error, lambda: _open(kit, "signed-data")(der))
    _raises_fast(ASN1Error, lambda: _low_level(kit, "signed-data")(der))


@pytest.mark.parametrize("smime_type", ["enveloped-data", "authEnveloped-data"])
@pytest.mark.parametrize("name", list(ENVELOPED_BOMBS))
def test_nesting_bombs_inside_auth_enveloped_data_are_asn1_errors(
    kit: Pki, smime_type: str, name: str
) -> None:
    der = ENVELOPED_BOMBS[name]
    _raises_fast(ASN1Error, lambda: _open(kit, smime_type)(der))
    _raises_fast(ASN1Error, lambda: _low_level(kit, smime_type)(der))


def test_deep_nesting_inside_any_fields_is_an_error_not_a_recursion_crash(kit: Pki) -> None:
    """asn1crypto parses an ANY field recursively, one call per level: a SEQUENCE nested
    3,000 deep (15 KB) as a capability's parameters, an OAEP label source or a KEM
    recipient's parameters raised RecursionError out of verify and decrypt."""
    deep = hostile.nested(3000)
    sealed = der_of(signed(kit, opaque=True))
    with pytest.raises(SmimeError):
        smimekit.verify(pkcs7_mime(hostile.capability_parameters(sealed, deep)),
                        trust=[kit.ca])
    oaep = der_of(encrypted(kit, oaep=True))
    for source in (d.seq(d.oid("1.2.3.4"), deep),  # an unknown label source
                   d.seq(d.oid("1.2.840.113549.1.1.9"), deep)):  # pSpecified, not OCTETs
        with pytest.raises(SmimeError):
            smimekit.decrypt(pkcs7_mime(hostile.oaep_label_source(oaep, source),
                                        "authEnveloped-data"), kit["rsa"].key, kit["rsa"].cert)
    extra = hostile.kem_recipient(der_of(encrypted(kit)), deep)
    with pytest.raises(ASN1Error):
        smimekit.decrypt(pkcs7_mime(extra, "authEnveloped-data"), kit["rsa"].key,
                         kit["rsa"].cert)


def test_the_hostile_builders_change_only_what_they_say(kit: Pki) -> None:
    """Controls for the test above: the OAEP parameters as the builder writes them, without
    a label source (the default), decrypt; the extra KEM recipient with shallow parameters
    is passed over."""
    oaep = der_of(encrypted(kit, oaep=True))
    opened = smimekit.decrypt(pkcs7_mime(hostile.oaep_label_source(oaep, None),
                                         "authEnveloped-data"), kit["rsa"].key, kit["rsa"].cert)
    assert b"The secret is 42." in opened.content
    extra = hostile.kem_recipient(der_of(encrypted(kit)), d.tlv(0x05, b""))
    opened = smimekit.decrypt(pkcs7_mime(extra, "authEnveloped-data"), kit["rsa"].key,
                              kit["rsa"].cert)
    assert b"The secret is 42." in opened.content


@pytest.mark.slow
def test_ber_octet_string_of_the_most_chunks_allowed_is_handled_in_linear_time(
        kit: Pki) -> None:
    """A SignedData whose eContent is one-byte BER chunks, as many as the parser budget
    allows (262,144; a million are refused before parsing: tests/malformed/test_budgets.py),
    and no signer."""
    chunks = b"\x04\x01A" * MAX_BER_SEGMENTS
    der = (b"\x30\x80" + SIGNED_DATA_OID + b"\xa0\x80\x30\x80\x02\x01\x01\x31\x00\x30\x80"
           + DATA_OID + b"\xa0\x80\x24\x80" + chunks + b"\x00\x00" * 3 + b"\x31\x00"
           + b"\x00\x00" * 3)
    start = time.monotonic()
    with pytest.raises(NoSignatureError):
        smimekit.verify(pkcs7_mime(der), trust=[kit.ca])
    assert time.monotonic() - start < 10 * FAST


def test_empty_cms_is_an_asn1_error_and_an_empty_body_a_mime_error(kit: Pki) -> None:
    with pytest.raises(ASN1Error):
        verify_signed_data(b"")
    with pytest.raises(ASN1Error):
        decrypt_enveloped(b"", [(kit["rsa"].key, kit["rsa"].cert)])
    with pytest.raises(MIMEError):
        smimekit.verify(pkcs7_mime(b""), trust=[kit.ca])
    with pytest.raises(MIMEError):
        smimekit.decrypt(pkcs7_mime(b"", "enveloped-data"), kit["rsa"].key, kit["rsa"].cert)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(junk=st.binary(min_size=1, max_size=400),
       smime_type=st.sampled_from(SMIME_TYPES))
def test_random_bytes_as_cms_are_malformed(junk: bytes, smime_type: str) -> None:
    kit = test_pki()
    with pytest.raises(MalformedError):
        _open(kit, smime_type)(junk)
    with pytest.raises((MalformedError, NoSignatureError)):
        _low_level(kit, smime_type)(junk)


@st.composite
def _mutations(draw: st.DrawFn, der: bytes) -> bytes:
    """1-4 edits of a real blob: bit flips, byte overwrites, deletions, insertions."""
    data = bytearray(der)
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "set", "delete", "insert"]))
        if op == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[at] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0x81, 0x82, 0x84, 0xFF]))
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 8))]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
    return bytes(data)


_MUTATION_SOURCES: dict[str, bytes] = {}


def _source(kind: str) -> bytes:
    if kind not in _MUTATION_SOURCES:
        kit = test_pki()
        _MUTATION_SOURCES[kind] = {
            "signed-rsa": lambda: der_of(signed(kit, opaque=True)),
            "signed-p256": lambda: der_of(signed(kit, opaque=True, signer="p256")),
            "enveloped-rsa": lambda: der_of(encrypted(kit, cipher=smimekit.Cipher.AES128_CBC)),
            "auth-enveloped-x25519": lambda: der_of(encrypted(kit, "x25519")),
        }[kind]()
    return _MUTATION_SOURCES[kind]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), kind=st.sampled_from(["signed-rsa", "signed-p256", "enveloped-rsa",
                                             "auth-enveloped-x25519"]))
def test_mutated_cms_raises_nothing_but_smime_errors(data: st.DataObject, kind: str) -> None:
    kit = test_pki()
    mutated = data.draw(_mutations(_source(kind)), label="mutated")
    smime_type = {"signed": "signed-data", "enveloped": "enveloped-data",
                  "auth": "authEnveloped-data"}[kind.split("-")[0]]
    user = {"signed-rsa": None, "signed-p256": None, "enveloped-rsa": kit["rsa"],
            "auth-enveloped-x25519": kit["x25519"]}[kind]
    try:
        if user is None:
            smimekit.verify(pkcs7_mime(mutated, smime_type), trust=[kit.ca])
        else:
            smimekit.decrypt(pkcs7_mime(mutated, smime_type), user.key, user.cert)
    except SmimeError:
        pass


# -- crafted certificates inside a SignedData ----------------------------------------------


def _replace_once(data: bytes, old: bytes, new: bytes) -> bytes:
    assert data.count(old) >= 1, old.hex()
    return data.replace(old, new, 1)


def test_signed_data_carrying_a_certificate_with_an_invalid_version_is_an_asn1_error(
    kit: Pki,
) -> None:
    """X.509 version 6 (INTEGER 5): cryptography refuses to load it with InvalidVersion."""
    der = der_of(signed(kit, opaque=True))
    cert = kit["rsa"].cert.public_bytes(serialization.Encoding.DER)
    bad_cert = _replace_once(cert, b"\xa0\x03\x02\x01\x02", b"\xa0\x03\x02\x01\x05")
    tampered = _replace_once(der, cert, bad_cert)

    with pytest.raises(ASN1Error):
        verify_signed_data(tampered)
    with pytest.raises(ASN1Error):
        smimekit.verify(pkcs7_mime(tampered), trust=[kit.ca])


def _signed_without_attributes(kit: Pki, cert_der: bytes) -> bytes:
    """An opaque SignedData by p256 with no signed attributes (RFC 5652 5.4 allows it for
    id-data), carrying ``cert_der`` as the signer's certificate."""
    user = kit["p256"]
    content = b"Content-Type: text/plain\r\n\r\nHello, world.\r\n"
    signature = user.key.sign(content, ec.ECDSA(hashes.SHA256()))
    issuer = asn1_x509.Name.load(user.cert.issuer.public_bytes())
    signed_data = cms.SignedData({
        "version": "v1",
        "digest_algorithms": [{"algorithm": "sha256"}],
        "encap_content_info": {"content_type": "data", "content": content},
        "certificates": [asn1_x509.Certificate.load(cert_der)],
        "signer_infos": [{
            "version": "v1",
            "sid": cms.SignerIdentifier({"issuer_and_serial_number": {
                "issuer": issuer, "serial_number": user.cert.serial_number}}),
            "digest_algorithm": {"algorithm": "sha256"},
            "signature_algorithm": {"algorithm": "sha256_ecdsa"},
            "signature": signature,
        }],
    })
    return cms.ContentInfo({"content_type": "signed_data", "content": signed_data}).dump()


@pytest.mark.parametrize(
    ("old", "new"),
    [
        # id-ecPublicKey -> an unknown key algorithm
        (bytes.fromhex("06072a8648ce3d0201"), bytes.fromhex("06072a8648ce3d0242")),
        # prime256v1 -> an unknown named curve
        (bytes.fromhex("06082a8648ce3d030107"), bytes.fromhex("06082a8648ce3d030142")),
    ],
    ids=["unknown-key-algorithm", "unknown-curve"],
)
def test_signer_certificate_with_an_unusable_public_key_is_refused(
    kit: Pki, old: bytes, new: bytes
) -> None:
    cert = kit["p256"].cert.public_bytes(serialization.Encoding.DER)
    intact = _signed_without_attributes(kit, cert)
    assert smimekit.verify(pkcs7_mime(intact, sender="p256"), trust=[kit.ca]).verdict.valid

    tampered = _signed_without_attributes(kit, _replace_once(cert, old, new))
    with pytest.raises((UnsupportedError, MalformedError)):
        verify_signed_data(tampered)
    with pytest.raises((UnsupportedError, MalformedError)):
        smimekit.verify(pkcs7_mime(tampered, sender="p256"), trust=[kit.ca])


@pytest.mark.parametrize("recipient", ["rsa", "x25519"])
def test_auth_enveloped_data_whose_mac_overruns_the_structure_is_an_asn1_error(
    kit: Pki, recipient: str
) -> None:
    """The last field (the 16-octet MAC) claims 17 octets: past the end of every parent."""
    der = der_of(encrypted(kit, recipient))
    assert der[-18:-16] == b"\x04\x10"
    tampered = der[:-17] + b"\x11" + der[-16:]
    user = kit[recipient]
    with pytest.raises(ASN1Error):
        decrypt_enveloped(tampered, [(user.key, user.cert)])
    with pytest.raises(ASN1Error):
        smimekit.decrypt(pkcs7_mime(tampered, "authEnveloped-data"), user.key, user.cert)
