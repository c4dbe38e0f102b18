"""Certificates in a message that load but cannot be read: a SmimeError, never another one.

cryptography decodes a certificate's subject, issuer and extensions on first use, and from
a hostile certificate they raised DuplicateExtension, UnsupportedGeneralNameType, ValueError
or TypeError out of verify (review finding 3). The certificates of a SignedData are not
signed: anyone relaying a message can add one, so one that cannot be read is left out and a
genuine message stays valid; when it is the signer's own, verification fails with an
ASN1Error naming it. The validation layer, which also meets certificates from elsewhere
(AIA, given extras), reads such a certificate without raising.
"""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from properties.pki import Pki, message

import smimekit
from malformed.cases import der_of, pkcs7_mime
from malformed.certs import (
    BROKEN,
    SIGNER_BROKEN,
    der,
    replace_certificate,
    unknown_key_without_ski,
    with_certificate_first,
    without_ski,
)
from smimekit.cms.keyinfo import matches_ski, subject_key_id
from smimekit.cms.signed import verify_signed_data
from smimekit.errors import ASN1Error, SignatureInvalidError
from smimekit.validation.certinfo import cert_info
from smimekit.validation.path import validate
from smimekit.validation.revinfo import cert_ext
from smimekit.validation.verdict import CertSummary, cert_emails

JUNK = [*BROKEN, "unknown-key-without-ski"]


def _junk(kit: Pki, kind: str) -> bytes:
    """A broken copy of rsa2's certificate (not the signer's), signed by the CA."""
    if kind == "unknown-key-without-ski":
        return unknown_key_without_ski(kit["rsa2"].cert, kit.ca_key)
    return BROKEN[kind](kit["rsa2"].cert, kit.ca_key)


def _signed(kit: Pki, use_ski: bool) -> bytes:
    user = kit["rsa"]
    return der_of(smimekit.sign(message(), user.key, user.cert, opaque=True, use_ski=use_ski))


@pytest.mark.parametrize("use_ski", [False, True], ids=["issuer-serial", "ski"])
@pytest.mark.parametrize("kind", JUNK)
def test_a_junk_certificate_added_to_a_genuine_message_is_left_out(
        kit: Pki, kind: str, use_ski: bool) -> None:
    """First in the set, so the signer's certificate is looked for past it."""
    junk = _junk(kit, kind)
    tampered = with_certificate_first(_signed(kit, use_ski), junk)
    kept = [der(c) for c in verify_signed_data(tampered).certificates]
    # An unknown key type is no defect: that certificate can be read, and is kept.
    assert kept == ([junk] if kind == "unknown-key-without-ski" else []) + [der(kit["rsa"].cert)]
    assert smimekit.verify(pkcs7_mime(tampered), trust=[kit.ca]).verdict.valid


@pytest.mark.parametrize("use_ski", [False, True], ids=["issuer-serial", "ski"])
@pytest.mark.parametrize("kind", SIGNER_BROKEN)
def test_a_signer_certificate_that_cannot_be_read_is_an_asn1_error_naming_it(
        kit: Pki, kind: str, use_ski: bool) -> None:
    """The same signer (issuer, serial and key identifier kept), one field made unreadable."""
    user = kit["rsa"]
    tampered = replace_certificate(_signed(kit, use_ski), der(user.cert),
                                   BROKEN[kind](user.cert, kit.ca_key))
    with pytest.raises(ASN1Error, match="malformed signer certificate in the SignedData"):
        verify_signed_data(tampered)
    with pytest.raises(ASN1Error, match="malformed signer certificate"):
        smimekit.verify(pkcs7_mime(tampered), trust=[kit.ca])


@pytest.mark.parametrize("kind", [k for k in SIGNER_BROKEN if k != "invalid-version"])
def test_a_message_signed_with_an_unreadable_certificate_is_an_asn1_error(
        kit: Pki, kind: str) -> None:
    """What a sender can do with a certificate of its own making (signed by nobody trusted,
    it could never be valid: but it must fail as a SmimeError)."""
    user = kit["rsa"]
    bad = x509.load_der_x509_certificate(BROKEN[kind](user.cert, kit.ca_key))
    sent = smimekit.sign(message(), user.key, bad)
    with pytest.raises(ASN1Error, match="malformed signer certificate"):
        smimekit.verify(sent, trust=[kit.ca])


def test_a_signer_certificate_missing_among_junk_says_what_was_left_out(kit: Pki) -> None:
    user = kit["rsa"]
    tampered = replace_certificate(_signed(kit, False), der(user.cert),
                                   _junk(kit, "duplicate-extension"))
    with pytest.raises(SignatureInvalidError, match=r"not in the message.*\(1 malformed"):
        verify_signed_data(tampered)
    # Given separately, it is found: the junk took nothing away.
    assert verify_signed_data(tampered, extra_certs=[user.cert]).signers


@pytest.mark.parametrize("name", ["rsa", "p256", "ed25519", "x25519"])
def test_a_key_identifier_without_the_extension_is_rfc5280_method_1(kit: Pki, name: str) -> None:
    cert = x509.load_der_x509_certificate(without_ski(kit[name].cert, kit.ca_key))
    expected = x509.SubjectKeyIdentifier.from_public_key(kit[name].key.public_key()).digest
    assert subject_key_id(cert) == expected


def test_a_key_that_cannot_be_loaded_still_has_an_identifier(kit: Pki) -> None:
    cert = x509.load_der_x509_certificate(unknown_key_without_ski(kit["rsa2"].cert, kit.ca_key))
    with pytest.raises(UnsupportedAlgorithm):
        cert.public_key()
    key = kit["rsa2"].key.public_key()  # the same key bits, under another algorithm OID
    assert subject_key_id(cert) == x509.SubjectKeyIdentifier.from_public_key(key).digest


def test_a_certificate_whose_extensions_cannot_be_read_has_no_key_identifier(kit: Pki) -> None:
    cert = x509.load_der_x509_certificate(_junk(kit, "duplicate-extension"))
    with pytest.raises(ASN1Error, match="extensions cannot be decoded"):
        subject_key_id(cert)
    assert not matches_ski(subject_key_id(kit["rsa2"].cert), cert)


@pytest.mark.parametrize("kind", [k for k in BROKEN if k != "invalid-version"])
def test_validation_reads_an_unreadable_certificate_without_raising(kit: Pki, kind: str) -> None:
    """As a leaf and as a would-be intermediate: a defect, a reason, never an exception."""
    cert = x509.load_der_x509_certificate(_junk(kit, kind))
    info = cert_info(cert)
    assert info.defect and info.name()
    as_leaf = validate(cert, intermediates=[cert], anchors=[kit.ca])
    assert not as_leaf.trusted and as_leaf.reasons
    as_issuer = validate(kit["rsa"].cert, intermediates=[cert], anchors=[kit.ca])
    assert as_issuer.trusted  # the real issuer is the anchor; the junk is passed over
    assert isinstance(cert_emails(cert), list)
    assert cert_ext(cert, x509.CRLDistributionPoints) is None
    assert CertSummary.of(cert).sha256
