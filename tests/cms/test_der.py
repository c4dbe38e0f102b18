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
