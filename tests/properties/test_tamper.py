"""Any single-bit change to protected bytes is detected, and nothing is released.

Two forms of evidence: Hypothesis properties (a random position and bit, any message and
algorithm), and deterministic sweeps that flip one bit in *every* byte of one message each, so
a failure names every offset that slipped through, with its place in the ASN.1 tree.

"Detected" means a :class:`smimekit.errors.SmimeError` subclass: verify never returns a valid
verdict, decrypt never returns plaintext, and no other exception escapes.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from asn1crypto import cms
from cryptography import x509
from hypothesis import HealthCheck, Phase, assume, given, note, settings
from hypothesis import strategies as st

import smimekit
from properties.der import flip, path_to, pkcs7_message, pkcs7_parts, recipient_info_spans
from properties.pki import RECIPIENTS, SIGNERS, test_pki
from properties.strategies import messages
from smimekit import Cipher, Digest
from smimekit.errors import SmimeError

# No explain phase: it re-runs a failing example hundreds of times (half a minute here).
SETTINGS = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)
AEAD = [Cipher.AES128_GCM, Cipher.AES256_GCM, Cipher.CHACHA20_POLY1305]

# For the CMS blobs the message hardly matters and a small one shrinks fast.
small_bodies = st.binary(max_size=300)


def _small_message(sender: str, body: bytes) -> bytes:
    return f"From: {sender}\r\nSubject: tamper\r\n\r\n".encode() + body


def signed_region(signed: bytes) -> tuple[int, int]:
    """[start, end) of the first part of a multipart/signed: the bytes the signature covers."""
    match = re.search(rb'boundary="([^"]+)"', signed)
    assert match is not None
    delimiter = b"--" + match.group(1)
    start = signed.index(delimiter + b"\r\n") + len(delimiter) + 2
    end = signed.index(b"\r\n" + delimiter, start)
    return start, end


def _outcome(call: Callable[[], object]) -> str | None:
    """None when ``call`` raised a SmimeError; otherwise what went wrong."""
    try:
        call()
    except SmimeError:
        return None
    except Exception as exc:  # the finding: a non-SmimeError escaped
        return f"{type(exc).__name__}: {exc}"
    return "accepted"


# -- properties ---------------------------------------------------------------------------


@pytest.mark.slow
@settings(max_examples=150, **SETTINGS)
@given(data=st.data(), signer=st.sampled_from(SIGNERS), digest=st.sampled_from(list(Digest)))
def test_a_flipped_bit_in_the_signed_part_of_multipart_signed_is_detected(
    data: st.DataObject, signer: str, digest: Digest
) -> None:
    pki = test_pki()
    user = pki[signer]
    sample = data.draw(messages(user.email), label="message")
    signed = smimekit.sign(sample.raw, user.key, user.cert, digest=digest)
    start, end = signed_region(signed)
    position = data.draw(st.integers(start, end - 1), label="position")
    bit = data.draw(st.integers(0, 7), label="bit")
    note(f"flipped bit {bit} at offset {position - start} of the {end - start}-byte signed part")

    with pytest.raises(SmimeError):
        smimekit.verify(flip(signed, position, bit), trust=[pki.ca])


@pytest.mark.slow
@settings(max_examples=150, **SETTINGS)
@given(data=st.data(), signer=st.sampled_from(SIGNERS), digest=st.sampled_from(list(Digest)))
def test_a_flipped_bit_anywhere_in_an_opaque_signed_blob_is_detected(
    data: st.DataObject, signer: str, digest: Digest
) -> None:
    pki = test_pki()
    user = pki[signer]
    body = data.draw(small_bodies, label="body")
    pss = signer == "rsa" and data.draw(st.booleans(), label="pss")
    head, der = pkcs7_parts(smimekit.sign(_small_message(user.email, body), user.key, user.cert,
                                          opaque=True, digest=digest, pss=pss))
    # ECDSA signatures vary in length from run to run; a fixed-range draw scaled to the blob
    # keeps the example stable when Hypothesis replays it.
    position = data.draw(st.integers(0, 2**16 - 1), label="position/65536") * len(der) >> 16
    bit = data.draw(st.integers(0, 7), label="bit")
    note(f"flipped bit {bit} at offset {position} of {len(der)}: {path_to(der, position)}")

    tampered = pkcs7_message(head, flip(der, position, bit))
    with pytest.raises(SmimeError):
        smimekit.verify(tampered, trust=[pki.ca])


@pytest.mark.slow
@settings(max_examples=150, **SETTINGS)
@given(
    data=st.data(),
    recipients=st.lists(st.sampled_from(RECIPIENTS), min_size=1, max_size=3, unique=True),
    cipher=st.sampled_from(AEAD),
    oaep=st.booleans(),
)
def test_a_flipped_bit_anywhere_in_auth_enveloped_data_releases_no_plaintext(
    data: st.DataObject, recipients: list[str], cipher: Cipher, oaep: bool
) -> None:
    pki = test_pki()
    body = data.draw(small_bodies, label="body")
    reader = pki[data.draw(st.sampled_from(recipients), label="reader")]
    head, der = pkcs7_parts(smimekit.encrypt(_small_message(pki["rsa"].email, body),
                                             [pki[r].cert for r in recipients], cipher=cipher,
                                             oaep=oaep))
    position = data.draw(st.integers(0, len(der) - 1), label="position")
    bit = data.draw(st.integers(0, 7), label="bit")
    note(f"flipped bit {bit} at offset {position} of {len(der)}: {path_to(der, position)}")
    # Another recipient's RecipientInfo is outside what this reader can check: RFC 5083
    # authenticates the content, not the other key slots, and no reader can open them.
    others = [span for span in recipient_info_spans(der)
              if not _addressed_to(der[span.start:span.stop], reader.cert)]
    assume(not any(position in span for span in others))

    tampered = pkcs7_message(head, flip(der, position, bit))
    with pytest.raises(SmimeError):
        smimekit.decrypt(tampered, reader.key, reader.cert)


def _addressed_to(raw: bytes, cert: x509.Certificate) -> bool:
    """Whether a RecipientInfo names ``cert`` (DER SET OF sorts them, so not by position)."""
    info = cms.RecipientInfo.load(raw)
    if info.name == "ktri":
        rids = [info.chosen["rid"]]
    else:
        rids = [rek["rid"] for rek in info.chosen["recipient_encrypted_keys"]]
    return any(rid.name == "issuer_and_serial_number"
               and rid.chosen["serial_number"].native == cert.serial_number for rid in rids)


# -- sweeps: every byte of one message ----------------------------------------------------


def _sweep(data: bytes, check: Callable[[bytes], object], positions: range,
           where: Callable[[int], str]) -> list[str]:
    """Flip bit ``position % 8`` at every position; describe each change not refused."""
    problems = []
    for position in positions:
        tampered = flip(data, position, position % 8)
        outcome = _outcome(lambda t=tampered: check(t))
        if outcome is not None:
            problems.append(f"offset {position} bit {position % 8} [{where(position)}]: "
                            f"{outcome}")
    return problems


@pytest.mark.slow
def test_every_byte_of_the_signed_part_of_multipart_signed_is_protected() -> None:
    pki = test_pki()
    user = pki["ed25519"]
    message = (b"From: ed25519@example.org\r\nSubject: sweep\r\nContent-Type: text/plain;"
               b" charset=utf-8\r\n\r\nCaf\xc3\xa9 au lait.\r\nSecond line\r\n")
    signed = smimekit.sign(message, user.key, user.cert)
    start, end = signed_region(signed)

    problems = _sweep(signed, lambda m: smimekit.verify(m, trust=[pki.ca]), range(start, end),
                      lambda position: f"byte {position - start} of the signed part")
    assert problems == []


@pytest.mark.slow
@pytest.mark.parametrize("signer", ["ed25519", "rsa"])
def test_every_byte_of_an_opaque_signed_blob_is_protected(signer: str) -> None:
    pki = test_pki()
    user = pki[signer]
    head, der = pkcs7_parts(smimekit.sign(
        f"From: {user.email}\r\nSubject: sweep\r\n\r\nHello, world.\r\n".encode(),
        user.key, user.cert, opaque=True))

    problems = _sweep(der, lambda d: smimekit.verify(pkcs7_message(head, d), trust=[pki.ca]),
                      range(len(der)), lambda position: path_to(der, position))
    assert problems == [], f"{len(problems)} of {len(der)} changes not detected:\n" + \
        "\n".join(problems)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("recipient", "oaep", "cipher"),
    [
        ("rsa", False, Cipher.AES256_GCM),
        ("rsa", True, Cipher.CHACHA20_POLY1305),
        ("p256", False, Cipher.AES128_GCM),
        ("x25519", False, Cipher.AES256_GCM),
    ],
)
def test_every_byte_of_auth_enveloped_data_is_protected(recipient: str, oaep: bool,
                                                        cipher: Cipher) -> None:
    pki = test_pki()
    user = pki[recipient]
    head, der = pkcs7_parts(smimekit.encrypt(
        b"Subject: sweep\r\n\r\nThe secret is 42.\r\n", [user.cert], cipher=cipher, oaep=oaep))

    problems = _sweep(der, lambda d: smimekit.decrypt(pkcs7_message(head, d), user.key,
                                                      user.cert),
                      range(len(der)), lambda position: path_to(der, position))
    assert problems == [], f"{len(problems)} of {len(der)} changes released plaintext:\n" + \
        "\n".join(problems)


@pytest.mark.slow
@pytest.mark.parametrize("recipient", ["x25519", "p256"])
def test_every_bit_of_the_senders_ephemeral_key_is_protected(recipient: str) -> None:
    """The sender's ephemeral key is outside the tag, and the byte sweep above flips one bit
    per byte: here every bit of it. X25519 ignores the top bit of its last byte (RFC 7748),
    so that flip decrypted unchanged until non-canonical keys were refused."""
    pki = test_pki()
    user = pki[recipient]
    head, der = pkcs7_parts(smimekit.encrypt(
        b"Subject: sweep\r\n\r\nThe secret is 42.\r\n", [user.cert]))
    [kari] = [r.chosen for r in cms.ContentInfo.load(der)["content"]["recipient_infos"]]
    key = kari["originator"].chosen["public_key"]
    point = bytes(key.native) if recipient == "x25519" else key.contents[1:]
    assert der.count(point) == 1
    start = der.index(point)
    problems = []
    for position in range(start, start + len(point)):
        for bit in range(8):
            tampered = pkcs7_message(head, flip(der, position, bit))
            outcome = _outcome(lambda t=tampered: smimekit.decrypt(t, user.key, user.cert))
            if outcome is not None:
                problems.append(f"byte {position - start} bit {bit}: {outcome}")
    assert problems == []
