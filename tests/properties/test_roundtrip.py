"""Round trips over any message and any algorithm combination smimekit writes.

sign -> verify, encrypt -> decrypt and sign_encrypt -> decrypt_verify must give back the
message's headers and every leaf body (after undoing the transfer encoding smimekit chose,
CRLF-normalised), whatever the bytes: 8-bit, NULs, over-long lines, LF-only input,
multipart bodies.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import smimekit
from properties.pki import RECIPIENTS, SIGNERS, test_pki
from properties.strategies import assert_same_message, messages, to_crlf
from smimekit import Cipher, Digest
from smimekit.errors import SigningError
from smimekit.smime.canonical import Entity, join_entity
from smimekit.smime.hp import protect
from smimekit.smime.message import prepare

SETTINGS = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

digests = st.sampled_from(list(Digest))
ciphers = st.sampled_from(list(Cipher))
recipient_sets = st.lists(st.sampled_from(RECIPIENTS), min_size=1, max_size=3, unique=True)


def _pss(draw: st.DataObject, signer: str) -> bool:
    return signer == "rsa" and draw.draw(st.booleans(), label="pss")


def _key_transport(name: str, oaep: bool) -> str:
    if name == "rsa":
        return "ktri-rsaes_oaep" if oaep else "ktri-rsaes_pkcs1v15"
    return "kari-dh_single_pass_std_dh_" + {
        "p256": "sha256kdf", "p384": "sha384kdf", "p521": "sha512kdf", "x25519": "hkdf_sha256",
    }[name]


@pytest.mark.slow
@SETTINGS
@given(data=st.data(), signer=st.sampled_from(SIGNERS), digest=digests, opaque=st.booleans())
def test_sign_then_verify_gives_back_every_header_and_leaf(
    data: st.DataObject, signer: str, digest: Digest, opaque: bool
) -> None:
    pki = test_pki()
    user = pki[signer]
    sample = data.draw(messages(user.email), label="message")
    pss = _pss(data, signer)

    signed = smimekit.sign(sample.raw, user.key, user.cert, opaque=opaque, digest=digest,
                           pss=pss)
    assert signed.isascii(), "a signed message must survive a 7-bit relay"
    result = smimekit.verify(signed, trust=[pki.ca], raise_for_failure=False)

    _assert_valid_unless_no_from(result.verdict, sample)
    assert [layer.kind for layer in result.verdict.layers] == ["signed"]
    (signer_verdict,) = result.verdict.signers
    expected_digest = "sha512" if signer == "ed25519" else digest.value
    assert signer_verdict.digest_algorithm == expected_digest
    assert signer_verdict.signature_algorithm == (
        "rsa-pss" if pss else {"rsa": "rsa-pkcs1v15", "ed25519": "ed25519"}.get(signer, "ecdsa"))
    assert_same_message(result.content, sample)


@pytest.mark.slow
@SETTINGS
@given(data=st.data(), recipients=recipient_sets, cipher=ciphers, oaep=st.booleans())
def test_encrypt_then_decrypt_gives_back_the_same_entity(
    data: st.DataObject, recipients: list[str], cipher: Cipher, oaep: bool
) -> None:
    pki = test_pki()
    sample = data.draw(messages(pki["rsa"].email), label="message")
    reader = data.draw(st.sampled_from(recipients), label="reader")
    with_cert = data.draw(st.booleans(), label="with_cert")

    sealed = smimekit.encrypt(sample.raw, [pki[r].cert for r in recipients], cipher=cipher,
                              oaep=oaep)
    body = sealed.split(b"\r\n\r\n", 1)[1]  # the outer headers stay in clear by design
    for leaf in sample.leaves:
        assert len(leaf) <= 16 or leaf not in body, "plaintext visible in the sealed message"
    user = pki[reader]
    opened = smimekit.decrypt(sealed, user.key, user.cert if with_cert else None)

    # Header protection (RFC 9788, the default): what decrypts is the payload protect() built
    # (every outer field of the sample is protected, so no outer copy precedes it), and the
    # outside shows the baseline policy's Subject. decrypt shows it as smime/hp_read.py
    # renders it: the protected fields (not the HP-Outer records) as the header block, then
    # the payload's content header fields and body.
    outer, entity = prepare(to_crlf(sample.raw))
    payload = Entity.parse(b"".join(
        bytes(chunk) for chunk in protect(outer, [entity], mode="cipher").entity))
    protected = [h for h in payload.headers if not h.is_content and h.lname != "hp-outer"]
    expected = (b"".join(h.raw + b"\r\n" for h in protected) + b"MIME-Version: 1.0\r\n"
                + join_entity(payload.content_headers, payload.body))
    assert opened.content == expected
    outside = sealed.split(b"\r\n\r\n", 1)[0]
    if any(h.startswith(b"Subject:") for h in sample.outer):
        assert b"\r\nSubject: [...]\r\n" in b"\r\n" + outside + b"\r\n"
    assert b'hp="cipher"' in opened.content.split(b"\r\n\r\n", 1)[0]
    assert opened.cipher == cipher.value
    assert not opened.partial
    assert_same_message(opened.content, sample)
    if with_cert:
        assert opened.recipient == _key_transport(reader, oaep)


@pytest.mark.slow
@SETTINGS
@given(
    data=st.data(),
    signer=st.sampled_from(SIGNERS),
    recipients=recipient_sets,
    digest=digests,
    opaque=st.booleans(),
    cipher=ciphers,
    oaep=st.booleans(),
)
def test_sign_encrypt_then_decrypt_verify_reports_encrypted_then_signed(
    data: st.DataObject, signer: str, recipients: list[str], digest: Digest, opaque: bool,
    cipher: Cipher, oaep: bool,
) -> None:
    pki = test_pki()
    user = pki[signer]
    sample = data.draw(messages(user.email), label="message")
    pss = _pss(data, signer)
    readers = list(recipients) + ([signer] if signer in RECIPIENTS else [])
    reader = pki[data.draw(st.sampled_from(readers), label="reader")]

    sealed = smimekit.sign_encrypt(sample.raw, user.key, user.cert,
                                   [pki[r].cert for r in recipients], opaque=opaque,
                                   digest=digest, pss=pss, cipher=cipher, oaep=oaep)
    result = smimekit.decrypt_verify(sealed, reader.key, reader.cert, trust=[pki.ca],
                                     raise_for_failure=False)

    _assert_valid_unless_no_from(result.verdict, sample)
    assert [layer.kind for layer in result.verdict.layers] == ["encrypted", "signed"]
    assert result.verdict.encrypted and result.verdict.signed
    assert_same_message(result.content, sample)


def _assert_valid_unless_no_from(verdict: smimekit.Verdict, sample: object) -> None:
    """Valid, except that a message without From binds the signer to nobody (RFC 8550 3):
    then the signature is intact and trusted, and that is the only reason it fails."""
    if any(h.lower().startswith(b"from:") for h in sample.outer):  # type: ignore[attr-defined]
        assert verdict.valid, verdict.summary()
        return
    assert not verdict.valid
    (signer,) = verdict.signers
    assert signer.intact and signer.trusted and signer.from_match is False
    assert verdict.all_reasons() == [
        "the message has no From address to bind the signer to (RFC 8550 section 3)"]


@settings(max_examples=10, deadline=None)
@given(signer=st.sampled_from([s for s in SIGNERS if s != "rsa"]))
def test_pss_with_a_key_that_is_not_rsa_is_a_signing_error(signer: str) -> None:
    user = test_pki()[signer]
    with pytest.raises(SigningError):
        smimekit.sign(b"Subject: x\r\n\r\nbody\r\n", user.key, user.cert, pss=True)
