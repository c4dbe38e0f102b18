"""The zero-copy splice/hollow of the encrypted content (cms/der.py)."""

from __future__ import annotations

import pytest
from asn1crypto import cms

from smimekit.cms import Cipher, decrypt_enveloped, encrypt_enveloped
from smimekit.cms.der import encode_length, encrypted_content_offset, hollow


@pytest.mark.parametrize("n", [0, 1, 127, 128, 255, 256, 65535, 65536, 2**24 + 3])
def test_length_encoding_round_trips_through_asn1crypto(n: int) -> None:
    from asn1crypto import core

    assert core.OctetString(b"\x00" * min(n, 70000)).dump()[1:].startswith(
        encode_length(min(n, 70000)))


@pytest.mark.parametrize("cipher", [Cipher.AES256_GCM, Cipher.AES128_CBC])
@pytest.mark.parametrize("size", [0, 1, 200, 70000])
def test_spliced_der_is_what_asn1crypto_would_encode(alice, cipher: Cipher, size: int) -> None:
    content = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    der = encrypt_enveloped(content, [alice.cert], cipher=cipher)
    # Re-encoding through asn1crypto gives the same bytes: lengths are minimal DER.
    assert cms.ContentInfo.load(der).dump(force=True) == der
    shell, view = hollow(der)  # type: ignore[misc]
    field = ("auth_encrypted_content_info" if cipher.authenticated
             else "encrypted_content_info")
    assert bytes(view) == cms.ContentInfo.load(der)["content"][field]["encrypted_content"].native
    assert cms.ContentInfo.load(shell)["content"][field]["encrypted_content"].native == b""
    assert decrypt_enveloped(der, [(alice.key, alice.cert)]).content == content


def test_ber_indefinite_length_is_not_hollowed() -> None:
    assert encrypted_content_offset(b"\x30\x80\x06\x00\x00\x00") is None
    assert encrypted_content_offset(b"") is None
    assert encrypted_content_offset(b"\x30\x05\x02\x01") is None


# -- BER constructed strings merged from their headers (join_segments) ---------------------------

_SEGMENTED = {
    "flat-definite": (b"\x24\x08" + b"\x04\x01A" + b"\x04\x03BCD", b"ABCD"),
    "flat-indefinite": (b"\x24\x80" + b"\x04\x02AB" + b"\x04\x00" + b"\x04\x01C"
                        + b"\x00\x00", b"ABC"),
    "nested-indefinite": (b"\x24\x80" + b"\x04\x01A" + b"\x24\x80\x04\x01B\x24\x80\x04\x01C"
                          b"\x00\x00\x00\x00" + b"\x04\x01D" + b"\x00\x00", b"ABCD"),
    "nested-definite-in-indefinite": (b"\x24\x80" + b"\x24\x06\x04\x01X\x04\x01Y"
                                      + b"\x04\x82\x01\x00" + b"z" * 256 + b"\x00\x00",
                                      b"XY" + b"z" * 256),
}


@pytest.mark.parametrize("name", list(_SEGMENTED))
def test_joined_segments_are_the_string_and_what_asn1crypto_merges(name: str) -> None:
    from asn1crypto import core

    from smimekit.cms.der import join_segments

    encoding, expected = _SEGMENTED[name]
    contents = encoding[2:-2] if encoding[1] == 0x80 else encoding[2:]
    assert join_segments(contents) == expected
    try:
        value = core.OctetString.load(encoding)
        merged = value.native
    except ValueError:
        return  # asn1crypto reads constructed strings of indefinite length only
    assert value.method == 1 and value.contents == contents and merged == expected


@pytest.mark.parametrize("contents", [
    b"\x04\x05AB",                 # a segment longer than its container
    b"\x02\x01\x00",               # not an OCTET STRING segment
    b"\x24\x80\x04\x01A",          # a nested indefinite string without end-of-contents
    b"\x04\x80AB\x00\x00",         # indefinite length on a primitive
    b"\x04",                       # a header cut short
    b"\x24\x03\x04\x05ABCDE",      # a nested segment running past its container
])
def test_segments_that_are_not_well_formed_are_left_to_asn1crypto(contents: bytes) -> None:
    from smimekit.cms.der import join_segments

    assert join_segments(contents) is None


def test_segments_nested_beyond_the_depth_are_left_to_asn1crypto() -> None:
    from smimekit.cms.der import join_segments

    deep = b"\x24\x80" * 40 + b"\x04\x01A" + b"\x00\x00" * 40
    assert join_segments(deep) is None
    assert join_segments(deep, max_depth=64) == b"A"
