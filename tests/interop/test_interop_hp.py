"""RFC 9788 header protection against OpenSSL, gpgsm and NSS, which know nothing of it.

They must still verify and decrypt what we write, and what they hand their user is the
cryptographic payload: ``hp="cipher"`` or ``hp="clear"``, every protected field with its
real value, the HP-Outer records, and (with --legacy-display) the hidden fields at the top
of the text, which is all a client of theirs can show. The ordinary matrix checks the default
(baseline) payload on every case; this module checks the other policies and legacy display.
"""

from __future__ import annotations

import email
import email.policy

import pytest
from checks import Loaded
from peers import (
    EMAIL_DOMAIN,
    Pki,
    crlf,
    openssl_decrypt,
    openssl_verify,
    skip_unless_peer,
    smime_to_der,
)

import smimekit

pytestmark = [pytest.mark.interop, skip_unless_peer("openssl")]

SUBJECT = "Q3 numbers: do not forward"
HP_MESSAGE = (
    f"From: Alice Example <alice@{EMAIL_DOMAIN}>\r\n"
    f"To: Carol Example <carol@{EMAIL_DOMAIN}>\r\n"
    f"Subject: {SUBJECT}\r\n"
    "Date: Sat, 20 Feb 2021 10:09:02 -0500\r\n"
    f"Message-ID: <hp-interop@{EMAIL_DOMAIN}>\r\n"
    "Keywords: finance\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=us-ascii\r\n"
    "\r\n"
    "The numbers are in.\r\n"
).encode()

SHY_OUTER = [
    f"From: alice@{EMAIL_DOMAIN}",  # bare addr-spec, as RFC 9788 test vector C.3.7
    f"To: carol@{EMAIL_DOMAIN}",
    "Subject: [...]",
    "Date: Sat, 20 Feb 2021 15:09:02 +0000",
    f"Message-ID: <hp-interop@{EMAIL_DOMAIN}>",
]


def _fields(entity: bytes) -> list[str]:
    head = crlf(entity).partition(b"\r\n\r\n")[0]
    return [" ".join(f.split()) for f in head.decode().replace("\r\n ", " ").split("\r\n")]


def _check_shy_payload(entity: bytes) -> None:
    """The payload a peer decrypted: hp="cipher", the real fields, the shy outer values
    recorded, Keywords not recorded (removed outside), the legacy display on top."""
    fields = _fields(entity)
    assert f"Subject: {SUBJECT}" in fields and "Keywords: finance" in fields
    assert f"From: Alice Example <alice@{EMAIL_DOMAIN}>" in fields
    assert [f for f in fields if f.startswith("HP-Outer:")] == [
        f"HP-Outer: {f}" for f in SHY_OUTER]
    part = email.message_from_bytes(crlf(entity), policy=email.policy.compat32)
    assert part.get_param("hp") == "cipher"
    assert part.get_param("hp-legacy-display") == "1"
    text = part.get_payload(decode=True)
    assert isinstance(text, bytes)
    assert crlf(text) == (
        f"From: Alice Example <alice@{EMAIL_DOMAIN}>\r\n"
        f"To: Carol Example <carol@{EMAIL_DOMAIN}>\r\n"
        f"Subject: {SUBJECT}\r\n"
        "Date: Sat, 20 Feb 2021 10:09:02 -0500\r\n"
        "\r\n"
        "The numbers are in.\r\n"
    ).encode()


def _sealed(ids: Loaded, cipher: smimekit.Cipher) -> bytes:
    sealed = smimekit.encrypt(HP_MESSAGE, [ids.certs["carol"], ids.certs["alice"]],
                              cipher=cipher, hcp="shy", legacy_display=True,
                              check_recipients=False)
    outside = _fields(sealed)
    assert [f for f in outside if not f.lower().startswith(("content-", "mime-"))] == SHY_OUTER
    assert SUBJECT.encode() not in sealed
    return sealed


@pytest.mark.parametrize("cipher", [smimekit.Cipher.AES256_GCM, smimekit.Cipher.AES256_CBC])
def test_openssl_decrypts_shy_legacy_display(pki: Pki, ids: Loaded,
                                             cipher: smimekit.Cipher) -> None:
    sealed = _sealed(ids, cipher)
    _check_shy_payload(openssl_decrypt(sealed, pki["carol"].key, pki["carol"].cert))


def test_cmsutil_decrypts_shy_legacy_display(nss, ids: Loaded) -> None:
    sealed = _sealed(ids, smimekit.Cipher.AES256_CBC)
    _check_shy_payload(nss.decode(smime_to_der(sealed).der))


def test_gpgsm_decrypts_shy_legacy_display(gpgsm, ids: Loaded) -> None:
    sealed = _sealed(ids, smimekit.Cipher.AES256_CBC)
    _check_shy_payload(gpgsm.decrypt(smime_to_der(sealed).der))


@pytest.mark.parametrize("opaque", [False, True], ids=["detached", "opaque"])
def test_openssl_opens_sign_encrypt_and_verifies_the_cipher_payload(
        pki: Pki, ids: Loaded, opaque: bool) -> None:
    key, cert = ids["alice"]
    sealed = smimekit.sign_encrypt(HP_MESSAGE, key, cert, [ids.certs["carol"]],
                                   chain=[ids.inter], opaque=opaque, check_recipients=False)
    assert b"\r\nSubject: [...]\r\n" in sealed.split(b"\r\n\r\n", 1)[0]
    inner = openssl_decrypt(sealed, pki["carol"].key, pki["carol"].cert)
    payload = openssl_verify(inner, pki.root_cert)
    fields = _fields(payload)
    assert f"Subject: {SUBJECT}" in fields and "HP-Outer: Subject: [...]" in fields
    part = email.message_from_bytes(crlf(payload), policy=email.policy.compat32)
    assert part.get_param("hp") == "cipher"
    assert crlf(part.get_payload(decode=True)) == b"The numbers are in.\r\n"


def test_no_header_protection_gives_peers_the_plain_entity(pki: Pki, ids: Loaded) -> None:
    sealed = smimekit.encrypt(HP_MESSAGE, [ids.certs["carol"]], header_protection=False,
                              check_recipients=False)
    assert f"Subject: {SUBJECT}".encode() in sealed
    entity = openssl_decrypt(sealed, pki["carol"].key, pki["carol"].cert)
    assert crlf(entity) == b"Content-Type: text/plain; charset=us-ascii\r\n\r\n" \
        b"The numbers are in.\r\n"
