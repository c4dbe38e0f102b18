"""Parser budgets (smimekit.cms.limits): a message with more RecipientInfos, SignerInfos,
certificates, CRLs or BER segments than any real one is refused with a LimitExceededError
that names the limit, before asn1crypto parses the elements.

"Before the parsing" is shown by counting work, not by the clock: the error says where the
count stopped (one over the limit, not the 4,097 or 262,145 elements there), and a spy on
asn1crypto's element decoder counts how many elements it was asked to decode.
Figures beside ``openssl cms`` are in benchmarks/bench_budgets.py (docs/benchmarks.md).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from properties.pki import Pki, PkiFiles, message

import smimekit
from malformed import hostile
from malformed.cases import der_of, encrypted, pkcs7_mime, signed
from smimekit.cli.main import main
from smimekit.cms import limits
from smimekit.cms.enveloped import decrypt_enveloped
from smimekit.cms.signed import verify_signed_data
from smimekit.errors import (
    ASN1Error,
    DecryptionError,
    LimitExceededError,
    MalformedError,
    NoSignatureError,
    SignatureInvalidError,
    SignedAttributesError,
)


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """How many elements asn1crypto decodes (calls of its one element parser)."""
    calls = [0]
    real = core._parse

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(core, "_parse", counting)
    yield calls


def _refused(call: Callable[[], object], limit: str) -> LimitExceededError:
    with pytest.raises(LimitExceededError) as caught:
        call()
    err = caught.value
    assert err.limit == limit
    assert err.count == err.maximum + 1 == getattr(limits, limit) + 1
    assert limit in str(err) and f"{err.maximum:,}" in str(err)
    return err


def _decrypt(kit: Pki, der: bytes, smime_type: str = "enveloped-data",
             user: str = "rsa") -> Callable[[], object]:
    return lambda: smimekit.decrypt(pkcs7_mime(der, smime_type), kit[user].key, kit[user].cert)


def _verify(kit: Pki, der: bytes) -> Callable[[], object]:
    return lambda: smimekit.verify(pkcs7_mime(der), trust=[kit.ca])


def _over_recipients(kit: Pki) -> bytes:
    real = der_of(encrypted(kit, "rsa", cipher=smimekit.Cipher.AES256_CBC))
    decoy = der_of(encrypted(kit, "rsa2", cipher=smimekit.Cipher.AES256_CBC))
    return hostile.many_recipient_infos(real, decoy, limits.MAX_RECIPIENT_INFOS)


def test_recipient_infos_over_the_limit_are_refused_before_they_are_parsed(
        kit: Pki, decoded: list[int]) -> None:
    der = _over_recipients(kit)  # 4,096 decoys and the real recipient: one too many
    err = _refused(_decrypt(kit, der), "MAX_RECIPIENT_INFOS")
    assert "recipients" in str(err)
    _refused(lambda: decrypt_enveloped(der, [(kit["rsa"].key, kit["rsa"].cert)]),
             "MAX_RECIPIENT_INFOS")
    # The MIME layer and the outer CMS layers only: not one RecipientInfo was decoded.
    assert decoded[0] < 50


def test_recipient_infos_at_the_limit_still_decrypt(
        kit: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MAX_RECIPIENT_INFOS", 8)
    real = der_of(encrypted(kit, "rsa", cipher=smimekit.Cipher.AES256_CBC))
    decoy = der_of(encrypted(kit, "rsa2", cipher=smimekit.Cipher.AES256_CBC))
    at_limit = hostile.many_recipient_infos(real, decoy, 7)
    assert smimekit.decrypt(pkcs7_mime(at_limit, "enveloped-data"), kit["rsa"].key,
                            kit["rsa"].cert).content.endswith(b"The secret is 42.\r\n")
    _refused(_decrypt(kit, hostile.many_recipient_infos(real, decoy, 8)), "MAX_RECIPIENT_INFOS")


def test_recipient_encrypted_keys_of_one_key_agreement_count_as_recipients(
        kit: Pki, decoded: list[int]) -> None:
    real = der_of(encrypted(kit, "p256"))
    der = hostile.many_recipient_encrypted_keys(real, limits.MAX_RECIPIENT_INFOS + 1)
    _refused(_decrypt(kit, der, "authEnveloped-data", "p256"), "MAX_RECIPIENT_INFOS")
    assert decoded[0] < 50


def test_signer_infos_over_the_limit_are_refused_before_they_are_parsed(
        kit: Pki, decoded: list[int]) -> None:
    der = hostile.many_signer_infos(der_of(signed(kit, opaque=True)),
                                    limits.MAX_SIGNER_INFOS + 1)
    _refused(_verify(kit, der), "MAX_SIGNER_INFOS")
    _refused(lambda: verify_signed_data(der), "MAX_SIGNER_INFOS")
    assert decoded[0] < 50


def test_signer_infos_at_the_limit_are_parsed(kit: Pki) -> None:
    der = hostile.many_signer_infos(der_of(signed(kit, opaque=True)), limits.MAX_SIGNER_INFOS)
    assert len(verify_signed_data(der).signers) == limits.MAX_SIGNER_INFOS


def test_certificates_over_the_limit_are_refused(kit: Pki, decoded: list[int]) -> None:
    der = hostile.many_certificates(der_of(signed(kit, opaque=True)),
                                    limits.MAX_CERTIFICATES + 1)
    _refused(_verify(kit, der), "MAX_CERTIFICATES")
    assert decoded[0] < 50


def test_digest_algorithms_over_the_limit_are_refused_before_they_are_parsed(
        kit: Pki, decoded: list[int]) -> None:
    der = hostile.many_digest_algorithms(der_of(signed(kit, opaque=True)),
                                         limits.MAX_DIGEST_ALGORITHMS + 1)
    err = _refused(_verify(kit, der), "MAX_DIGEST_ALGORITHMS")
    assert "digest algorithms" in str(err)
    _refused(lambda: verify_signed_data(der), "MAX_DIGEST_ALGORITHMS")
    assert decoded[0] < 50


def test_digest_algorithms_at_the_limit_still_verify(kit: Pki) -> None:
    der = hostile.many_digest_algorithms(der_of(signed(kit, opaque=True)),
                                         limits.MAX_DIGEST_ALGORITHMS)
    assert smimekit.verify(pkcs7_mime(der), trust=[kit.ca]).verdict.valid


@pytest.mark.parametrize("kind", ["signed", "unsigned"])
def test_attributes_of_a_signer_over_the_limit_are_refused_before_they_are_parsed(
        kit: Pki, decoded: list[int], kind: str) -> None:
    build = hostile.many_signed_attributes if kind == "signed" else hostile.many_unsigned_attributes
    der = build(der_of(signed(kit, opaque=True)), limits.MAX_ATTRIBUTES + 1)
    err = _refused(_verify(kit, der), "MAX_ATTRIBUTES")
    assert f"{kind} attributes in a SignerInfo" in str(err)
    _refused(lambda: verify_signed_data(der), "MAX_ATTRIBUTES")
    assert decoded[0] < 50


def test_unsigned_attributes_at_the_limit_leave_a_genuine_signature_valid(
        kit: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MAX_ATTRIBUTES", 8)
    real = der_of(signed(kit, opaque=True))
    at_limit = hostile.many_unsigned_attributes(real, 8)
    assert smimekit.verify(pkcs7_mime(at_limit), trust=[kit.ca]).verdict.valid
    _refused(_verify(kit, hostile.many_unsigned_attributes(real, 9)), "MAX_ATTRIBUTES")


def test_signed_attributes_at_the_limit_are_read(kit: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MAX_ATTRIBUTES", 8)
    real = der_of(signed(kit, opaque=True))  # content-type, signing-time, message-digest,
    # SMIMECapabilities, signing-certificate-v2: three more make eight
    with pytest.raises(SignatureInvalidError, match="does not verify"):
        verify_signed_data(hostile.many_signed_attributes(real, 3))
    _refused(lambda: verify_signed_data(hostile.many_signed_attributes(real, 4)),
             "MAX_ATTRIBUTES")


def test_values_of_one_attribute_over_the_limit_are_refused_before_they_are_parsed(
        kit: Pki, decoded: list[int]) -> None:
    real = der_of(signed(kit, opaque=True))
    der = hostile.many_attribute_values(real, limits.MAX_ATTRIBUTE_VALUES + 1)
    err = _refused(_verify(kit, der), "MAX_ATTRIBUTE_VALUES")
    assert "values in one attribute" in str(err)
    assert decoded[0] < 50
    with pytest.raises(SignedAttributesError, match="exactly one value"):
        verify_signed_data(hostile.many_attribute_values(real, 2))  # within: read and judged


def test_authenticated_attributes_over_the_limit_are_refused_before_they_are_parsed(
        kit: Pki, decoded: list[int]) -> None:
    real = der_of(encrypted(kit, "p256"))
    der = hostile.many_auth_attributes(real, limits.MAX_ATTRIBUTES + 1)
    err = _refused(_decrypt(kit, der, "authEnveloped-data", "p256"), "MAX_ATTRIBUTES")
    assert "authenticated attributes in an AuthEnvelopedData" in str(err)
    assert decoded[0] < 50
    with pytest.raises(DecryptionError):  # within: they are authenticated, and these are not
        _decrypt(kit, hostile.many_auth_attributes(real, 2), "authEnveloped-data", "p256")()


def _crl(kit: Pki) -> bytes:
    now = dt.datetime.now(dt.UTC)
    crl = (x509.CertificateRevocationListBuilder().issuer_name(kit.ca.subject)
           .last_update(now).next_update(now + dt.timedelta(days=1))
           .sign(kit.ca_key, hashes.SHA256()))
    return crl.public_bytes(serialization.Encoding.DER)


def test_crls_over_the_limit_are_refused(kit: Pki) -> None:
    der = hostile.many_crls(der_of(signed(kit, opaque=True)), _crl(kit), limits.MAX_CRLS + 1)
    _refused(_verify(kit, der), "MAX_CRLS")


def test_originator_certificates_over_the_limit_are_refused(kit: Pki) -> None:
    cert = kit["rsa2"].cert.public_bytes(serialization.Encoding.DER)
    real = der_of(encrypted(kit, "rsa", cipher=smimekit.Cipher.AES256_CBC))
    der = hostile.originator_certificates(real, cert, limits.MAX_CERTIFICATES + 1)
    _refused(_decrypt(kit, der), "MAX_CERTIFICATES")


def test_ber_segments_of_the_ciphertext_over_the_limit_are_refused(
        kit: Pki, decoded: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    real = der_of(encrypted(kit, "rsa", cipher=smimekit.Cipher.AES256_CBC))
    der = hostile.segmented_ciphertext(real, limits.MAX_BER_SEGMENTS * 4)
    # The check walks the indefinite-length layers around the ciphertext without first
    # walking the ciphertext's segments: with no more walking allowed than there are
    # segments, it still stops at the segment count.
    monkeypatch.setattr(limits, "MAX_BER_ELEMENTS", limits.MAX_BER_SEGMENTS)
    err = _refused(_decrypt(kit, der), "MAX_BER_SEGMENTS")
    assert "segments" in str(err)
    assert decoded[0] < 50


def test_walking_indefinite_lengths_has_a_budget_too(
        kit: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    """The one digest algorithm is counted, not entered: BER that makes the check walk far."""
    monkeypatch.setattr(limits, "MAX_BER_ELEMENTS", 1000)
    data_oid = bytes.fromhex("06092a864886f70d010701")
    der = (b"\x30\x80" + hostile.SIGNED_DATA_OID + b"\xa0\x80\x30\x80\x02\x01\x01"
           + b"\x31\x80\x30\x80" + b"\x05\x00" * 1001 + b"\x00\x00" * 2
           + b"\x30\x80" + data_oid + b"\x00\x00" + b"\x31\x00" + b"\x00\x00" * 3)
    _refused(lambda: verify_signed_data(der), "MAX_BER_ELEMENTS")
    # Read twice (counted as the one digest algorithm, then passed): 2 x 452 within 1,000.
    within = der.replace(b"\x05\x00" * 1001, b"\x05\x00" * 450)
    with pytest.raises(NoSignatureError):  # within the budget: parsed as before
        verify_signed_data(within)


def test_ber_segments_of_the_ciphertext_within_the_limit_decrypt(
        kit: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MAX_BER_SEGMENTS", 1000)
    real = der_of(encrypted(kit, "rsa", cipher=smimekit.Cipher.AES256_CBC))
    assert smimekit.decrypt(pkcs7_mime(hostile.segmented_ciphertext(real, 1000),
                                       "enveloped-data"),
                            kit["rsa"].key, kit["rsa"].cert).content.endswith(b"42.\r\n")
    _refused(_decrypt(kit, hostile.segmented_ciphertext(real, 1001)), "MAX_BER_SEGMENTS")


def test_ber_segments_of_signed_content_over_the_limit_are_refused(
        kit: Pki, decoded: list[int]) -> None:
    der = hostile.segmented_econtent(b"A", limits.MAX_BER_SEGMENTS + 1)
    _refused(_verify(kit, der), "MAX_BER_SEGMENTS")
    assert decoded[0] < 50


def test_constructed_strings_nested_too_deep_are_refused(kit: Pki) -> None:
    der = hostile.nested_segments(limits.MAX_BER_NESTING + 1)
    with pytest.raises(LimitExceededError) as caught:
        verify_signed_data(der)
    assert caught.value.limit == "MAX_BER_NESTING"


def test_a_limit_error_is_a_malformed_asn1_error() -> None:
    err = LimitExceededError("MAX_SIGNER_INFOS", 64, 65, "SignerInfos")
    assert isinstance(err, ASN1Error) and isinstance(err, MalformedError)
    assert str(err) == ("too many SignerInfos: more than 64 (limit MAX_SIGNER_INFOS; "
                        "counting stopped at 65)")


def test_the_cli_refuses_with_one_line_naming_the_limit(
        kit: Pki, kit_files: PkiFiles, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("in.eml").write_bytes(pkcs7_mime(_over_recipients(kit), "enveloped-data"))
    out = tmp_path / "out.eml"
    status = main(["decrypt", "--key", str(kit_files.keys["rsa"]), "--cert",
                   str(kit_files.certs["rsa"]), "in.eml", "-o", str(out)])
    captured = capsys.readouterr()
    assert status == 1
    lines = captured.err.splitlines()
    assert len(lines) == 1 and "MAX_RECIPIENT_INFOS" in lines[0], captured.err
    assert not out.exists()
    assert captured.out == ""


def test_messages_within_every_limit_are_unchanged(kit: Pki) -> None:
    # The counting must not get in the way of real messages, BER ones included.
    msg = message(b"Hello\r\n")
    sealed = smimekit.encrypt(msg, [kit["rsa"].cert, kit["p256"].cert])
    assert smimekit.decrypt(sealed, kit["p256"].key, kit["p256"].cert).content
    opaque = signed(kit, opaque=True)
    assert smimekit.verify(opaque, trust=[kit.ca]).verdict.valid
