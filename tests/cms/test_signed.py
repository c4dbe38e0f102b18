"""SignedData: every key type and digest, the signed attributes, BER, several signers."""

from __future__ import annotations

import datetime as dt

import pytest
from asn1crypto import algos, cms
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from pki import PKI, Identity

from smimekit.cms import Digest, SignerSpec, sign_data, verify_signed_data
from smimekit.errors import (
    ASN1Error,
    LegacyAlgorithmError,
    NoSignatureError,
    SignatureInvalidError,
    SignedAttributesError,
    SigningError,
)

CONTENT = b"Content-Type: text/plain\r\n\r\nsigned words\r\n"


@pytest.mark.parametrize(
    ("kind", "digest", "pss", "scheme"),
    [
        ("rsa2048", Digest.SHA256, False, "rsa-pkcs1v15"),
        ("rsa2048", Digest.SHA512, True, "rsa-pss"),
        ("rsa3072", Digest.SHA384, True, "rsa-pss"),
        ("p256", Digest.SHA256, False, "ecdsa"),
        ("p384", Digest.SHA384, False, "ecdsa"),
        ("p521", Digest.SHA512, False, "ecdsa"),
        ("ed25519", Digest.SHA256, False, "ed25519"),
    ],
)
@pytest.mark.parametrize("detached", [True, False])
def test_sign_verify_every_scheme(pki: PKI, kind: str, digest: Digest, pss: bool, scheme: str,
                                  detached: bool) -> None:
    who = pki.person(f"s-{kind}", kind)
    der = sign_data(CONTENT, [SignerSpec(who.key, who.cert, digest, pss=pss)], detached=detached)
    result = verify_signed_data(der, detached_content=CONTENT if detached else None)
    assert result.content == CONTENT
    (signer,) = result.signers
    assert signer.signature_algorithm == scheme
    # RFC 8419: Ed25519 always pairs with SHA-512.
    assert signer.digest_algorithm == ("sha512" if kind == "ed25519" else digest.value)
    assert signer.certificate == who.cert
    assert signer.has_signing_certificate_v2
    assert signer.signing_time is not None


def test_signed_attributes_are_the_five_of_rfc8551_in_der_order(alice: Identity) -> None:
    der = sign_data(CONTENT, [SignerSpec(alice.key, alice.cert)])
    si = cms.ContentInfo.load(der)["content"]["signer_infos"][0]
    names = [a["type"].native for a in si["signed_attrs"]]
    assert set(names) == {"content_type", "signing_time", "message_digest", "smime_capabilities",
                          "signing_certificate_v2"}
    encoded = [a.dump() for a in si["signed_attrs"]]
    assert encoded == sorted(encoded)


def test_signer_by_subject_key_identifier(alice: Identity) -> None:
    der = sign_data(CONTENT, [SignerSpec(alice.key, alice.cert, use_ski=True)])
    sd = cms.ContentInfo.load(der)["content"]
    assert sd["signer_infos"][0]["sid"].name == "subject_key_identifier"
    assert verify_signed_data(der, detached_content=CONTENT).signers[0].certificate == alice.cert


def test_altered_content_fails_with_digest_mismatch(alice: Identity) -> None:
    der = sign_data(CONTENT, [SignerSpec(alice.key, alice.cert)])
    with pytest.raises(SignatureInvalidError, match="digest mismatch"):
        verify_signed_data(der, detached_content=CONTENT + b"!")


def test_detached_signature_without_content_fails(alice: Identity) -> None:
    der = sign_data(CONTENT, [SignerSpec(alice.key, alice.cert)])
    with pytest.raises(SignatureInvalidError, match="without its signed content"):
        verify_signed_data(der)


def test_embedded_content_differing_from_detached_is_content_confusion(alice: Identity) -> None:
    der = sign_data(CONTENT, [SignerSpec(alice.key, alice.cert)], detached=False)
    with pytest.raises(SignatureInvalidError, match="content confusion"):
        verify_signed_data(der, detached_content=b"something else")


def test_key_not_matching_certificate_is_refused(alice: Identity, bob: Identity) -> None:
    with pytest.raises(SigningError, match="does not match"):
        sign_data(CONTENT, [SignerSpec(bob.key, alice.cert)])


def _resign(der: bytes, key: Identity, mutate) -> bytes:
    """Rebuild the first SignerInfo's attributes with ``mutate`` and sign them again."""
    info = cms.ContentInfo.load(der)
    si = info["content"]["signer_infos"][0]
    attrs = [cms.CMSAttribute.load(a.dump()) for a in si["signed_attrs"]]
    attrs = mutate(attrs)
    new = cms.CMSAttributes(attrs)
    si["signed_attrs"] = new
    data = b"\x31" + si["signed_attrs"].dump()[1:]
    si["signature"] = key.key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    return info.dump(force=True)


def test_missing_message_digest_attribute_fails(alice: Identity) -> None:
    der = sign_data(CONTENT, [SignerSpec(alice.key, alice.cert)])
    bad = _resign(der, alice, lambda a: [x for x in a if x["type"].native != "message_digest"])
    with pytest.raises(SignedAttributesError, match="missing message-digest"):
        verify_signed_data(bad, detached_content=CONTENT)


def test_missing_content_type_attribute_fails(alice: Identity) -> None:
    der = sign_data(CONTENT, [SignerSpec(alice.key, alice.cert)])
    bad = _resign(der, alice, lambda a: [x for x in a if x["type"].native != "content_type"])
    with pytest.raises(SignedAttributesError, match="missing content-type"):
        verify_signed_data(bad, detached_content=CONTENT)


def test_wrong_content_type_attribute_fails(alice: Identity) -> None:
    der = sign_data(CONTENT, [SignerSpec(alice.key, alice.cert)])

    def swap(attrs):
        out = [x for x in attrs if x["type"].native != "content_type"]
        out.append(cms.CMSAttribute({"type": "content_type", "values": ["signed_data"]}))
        return out

    with pytest.raises(SignedAttributesError, match="does not match the content"):
        verify_signed_data(_resign(der, alice, swap), detached_content=CONTENT)


def test_duplicate_signing_time_attribute_fails(alice: Identity) -> None:
    der = sign_data(CONTENT, [SignerSpec(alice.key, alice.cert)])

    def dup(attrs):
        return [*attrs, cms.CMSAttribute({"type": "signing_time", "values": [
            cms.Time({"utc_time": dt.datetime(2020, 1, 1, tzinfo=dt.UTC)})]})]

    with pytest.raises(SignedAttributesError, match="duplicate signing-time"):
        verify_signed_data(_resign(der, alice, dup), detached_content=CONTENT)


def test_signing_certificate_v2_naming_another_certificate_fails(pki: PKI, alice: Identity
                                                                   ) -> None:
    other = pki.person("mallory", "rsa2048")
    forged = sign_data(CONTENT, [SignerSpec(other.key, other.cert)])
    ess = next(a for a in cms.ContentInfo.load(forged)["content"]["signer_infos"][0][
        "signed_attrs"] if a["type"].native == "signing_certificate_v2")
    der = sign_data(CONTENT, [SignerSpec(alice.key, alice.cert)])

    def swap(attrs):
        return [x for x in attrs if x["type"].native != "signing_certificate_v2"] + [
            cms.CMSAttribute.load(ess.dump())]

    with pytest.raises(SignedAttributesError, match="different certificate"):
        verify_signed_data(_resign(der, alice, swap), detached_content=CONTENT)


def test_every_signer_must_verify(pki: PKI, alice: Identity, bob: Identity) -> None:
    der = sign_data(CONTENT, [SignerSpec(alice.key, alice.cert), SignerSpec(bob.key, bob.cert,
                                                                            Digest.SHA384)])
    assert len(verify_signed_data(der, detached_content=CONTENT).signers) == 2
    info = cms.ContentInfo.load(der)
    sig = bytearray(info["content"]["signer_infos"][1]["signature"].native)
    sig[-1] ^= 1
    info["content"]["signer_infos"][1]["signature"] = bytes(sig)
    with pytest.raises(SignatureInvalidError, match="signer 2"):
        verify_signed_data(info.dump(force=True), detached_content=CONTENT)


def test_zero_signers_is_a_failure(alice: Identity) -> None:
    der = sign_data(CONTENT, [SignerSpec(alice.key, alice.cert)], detached=False)
    info = cms.ContentInfo.load(der)
    info["content"]["signer_infos"] = []
    with pytest.raises(NoSignatureError, match="zero signers"):
        verify_signed_data(info.dump(force=True))


def test_sha1_digest_needs_allow_legacy(alice: Identity) -> None:
    der = sign_data(CONTENT, [SignerSpec(alice.key, alice.cert)])
    info = cms.ContentInfo.load(der)
    info["content"]["signer_infos"][0]["digest_algorithm"] = {"algorithm": "sha1"}
    info["content"]["digest_algorithms"] = [{"algorithm": "sha1"}]
    with pytest.raises(LegacyAlgorithmError):
        verify_signed_data(info.dump(force=True), detached_content=CONTENT)


def _to_ber(der: bytes) -> bytes:
    """Re-encode the eContent OCTET STRING as an indefinite-length constructed string."""
    info = cms.ContentInfo.load(der)
    sd = info["content"]
    content = sd["encap_content_info"]["content"].native
    chunks = b"".join(b"\x04" + bytes([len(content[i:i + 16])]) + content[i:i + 16]
                      for i in range(0, len(content), 16))
    ber_octets = b"\x24\x80" + chunks + b"\x00\x00"
    explicit = b"\xa0\x80" + ber_octets + b"\x00\x00"
    eci = b"\x30\x80" + sd["encap_content_info"]["content_type"].dump() + explicit + b"\x00\x00"
    fields = [sd["version"].dump(), sd["digest_algorithms"].dump(), eci,
              sd["certificates"].dump(), sd["signer_infos"].dump()]
    body = b"\x30\x80" + b"".join(fields) + b"\x00\x00"
    return b"\x30\x80" + info["content_type"].dump() + b"\xa0\x80" + body + b"\x00\x00\x00\x00"


def test_ber_with_indefinite_lengths_is_read(alice: Identity) -> None:
    der = sign_data(CONTENT, [SignerSpec(alice.key, alice.cert)], detached=False)
    ber = _to_ber(der)
    assert ber != der and b"\x30\x80" in ber
    assert verify_signed_data(ber).content == CONTENT


@pytest.mark.parametrize("cut", [0, 1, 2, 10, 100, -1])
def test_truncated_signed_data_is_a_clean_asn1_error(alice: Identity, cut: int) -> None:
    der = sign_data(CONTENT, [SignerSpec(alice.key, alice.cert)])
    with pytest.raises((ASN1Error, NoSignatureError)):
        verify_signed_data(der[:cut], detached_content=CONTENT)


def _protection(digest: str, sig: algos.SignedDigestAlgorithm) -> cms.CMSAttribute:
    return cms.CMSAttribute({"type": "cms_algorithm_protection", "values": [
        cms.CMSAlgorithmProtection({"digest_algorithm": {"algorithm": digest},
                                    "signature_algorithm": sig})]})


def test_cms_algorithm_protection_is_checked(alice: Identity) -> None:
    der = sign_data(CONTENT, [SignerSpec(alice.key, alice.cert)])
    sig_alg = cms.ContentInfo.load(der)["content"]["signer_infos"][0]["signature_algorithm"]
    good = _resign(der, alice, lambda a: [*a, _protection("sha256", sig_alg)])
    assert verify_signed_data(good, detached_content=CONTENT).signers
    bad = _resign(der, alice, lambda a: [*a, _protection("sha512", sig_alg)])
    with pytest.raises(SignedAttributesError, match="CMSAlgorithmProtection"):
        verify_signed_data(bad, detached_content=CONTENT)


@pytest.mark.parametrize("use_ski", [False, True])
def test_hand_written_der_is_what_asn1crypto_reads_and_writes(pki: PKI, alice: Identity,
                                                              use_ski: bool) -> None:
    der = sign_data(CONTENT, [SignerSpec(alice.key, alice.cert, use_ski=use_ski)],
                    detached=False, certificates=[pki.inter, pki.root])
    info = cms.ContentInfo.load(der)
    assert info.dump(force=True) == der
    sd = info["content"]
    assert sd["version"].native == ("v3" if use_ski else "v1")
    assert len(sd["certificates"]) == 3
    assert verify_signed_data(der).content == CONTENT
