"""Every S/MIME BR profile x generation x key type x purpose: lint-clean, usable, accepted.

Each issued certificate must draw no ERROR from pkilint's CA/B Forum S/MIME linter, and must
work with smimekit itself (sign + verify, encrypt + decrypt with the CA as trust anchor) and
with ``openssl verify -purpose smimesign|smimeencrypt``.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, x25519
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID
from pki import message

import smimekit
from smimekit.ca import (
    PROFILES,
    Authority,
    CAKeyType,
    Generation,
    Profile,
    Purpose,
    SubjectInfo,
    ValidationLevel,
    lint,
)
from smimekit.errors import CAError

BASE_URL = "http://pki.example.com"
EMAIL = "alice@example.org"
INFO = SubjectInfo(
    email=EMAIL,
    organization="Example Ltd",
    organization_identifier="NTRGB-01234567",
    given_name="Alice",
    surname="Liddell",
    country="GB",
)
EE_KEYS = ("rsa2048", "rsa3072", "p256", "p384", "ed25519")
OPENSSL = shutil.which("openssl")


@cache
def key(kind: str) -> PrivateKeyTypes:
    if kind.startswith("rsa"):
        return rsa.generate_private_key(65537, int(kind[3:]))
    if kind in ("p256", "p384"):
        return ec.generate_private_key(ec.SECP256R1() if kind == "p256" else ec.SECP384R1())
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    assert kind == "x25519"
    return x25519.X25519PrivateKey.generate()


@cache
def authority(key_type: CAKeyType = CAKeyType.P384) -> Authority:
    return Authority.create("Example Ltd", base_url=BASE_URL, key_type=key_type, country="GB")


def _combinations() -> list[tuple[str, str, Purpose]]:
    out = []
    for name in PROFILES:
        for kind in EE_KEYS:
            for purpose in Purpose:
                if kind == "ed25519" and purpose is not Purpose.SIGN:
                    continue
                out.append((name, kind, purpose))
    return out


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _check_usable(ca: Authority, cert: x509.Certificate, private: PrivateKeyTypes,
                  purpose: Purpose) -> None:
    if purpose in (Purpose.SIGN, Purpose.BOTH):
        signed = smimekit.sign(message(EMAIL), private, cert, chain=[ca.cert])
        verified = smimekit.verify(signed, trust=[ca.root], revocation=None)
        assert verified.verdict.valid
    if purpose in (Purpose.ENCRYPT, Purpose.BOTH):
        sealed = smimekit.encrypt(message(EMAIL), [cert], trust=[ca.root],
                                  intermediates=[ca.cert], revocation=None)
        opened = smimekit.decrypt(sealed, private, cert)
        assert b"Hello, world." in opened.content


def _openssl_verify(ca: Authority, cert: x509.Certificate, purpose: str,
                    tmp_path: Path) -> subprocess.CompletedProcess[str]:
    root, inter, ee = tmp_path / "root.pem", tmp_path / "inter.pem", tmp_path / "ee.pem"
    root.write_bytes(_pem(ca.root))
    inter.write_bytes(_pem(ca.cert))
    ee.write_bytes(_pem(cert))
    assert OPENSSL is not None
    return subprocess.run(
        [OPENSSL, "verify", "-purpose", purpose, "-CAfile", str(root), "-untrusted",
         str(inter), str(ee)], capture_output=True, text=True, check=False)


@pytest.mark.parametrize(("profile_name", "kind", "purpose"), _combinations(),
                         ids=lambda v: v.value if isinstance(v, Purpose) else str(v))
def test_issued_certificate_is_lint_clean_and_usable(
        profile_name: str, kind: str, purpose: Purpose, tmp_path: Path) -> None:
    ca = authority()
    private = key(kind)
    cert = ca.issue(PROFILES[profile_name], INFO, private.public_key(), purpose)
    findings = lint(cert)
    assert [f for f in findings if f.is_error] == []
    # Not required, but the profiles are built to draw no warnings either.
    assert [str(f) for f in findings if f.severity == "WARNING"] == []
    _check_usable(ca, cert, private, purpose)
    if OPENSSL is None:
        pytest.skip("openssl not installed")
    if purpose in (Purpose.SIGN, Purpose.BOTH):
        result = _openssl_verify(ca, cert, "smimesign", tmp_path)
        assert result.returncode == 0, result.stderr
    if purpose in (Purpose.ENCRYPT, Purpose.BOTH):
        _check_openssl_encrypt(ca, cert, private, kind, tmp_path)


def _check_openssl_encrypt(ca: Authority, cert: x509.Certificate, private: PrivateKeyTypes,
                           kind: str, tmp_path: Path) -> None:
    result = _openssl_verify(ca, cert, "smimeencrypt", tmp_path)
    if kind.startswith("rsa"):
        assert result.returncode == 0, result.stderr
        return
    # OpenSSL's smimeencrypt purpose demands keyEncipherment (crypto/x509/v3_purp.c,
    # check_purpose_smime_encrypt), which the BR forbid on EC keys (7.1.2.3 e: keyAgreement).
    # So the chain is checked without a purpose, and openssl must still encrypt to it.
    assert "unsuitable certificate purpose" in result.stderr
    result = _openssl_verify(ca, cert, "any", tmp_path)
    assert result.returncode == 0, result.stderr
    assert OPENSSL is not None
    sealed = subprocess.run(
        [OPENSSL, "cms", "-encrypt", "-aes256", str(tmp_path / "ee.pem")],
        input=message(EMAIL), capture_output=True, check=True).stdout
    assert b"Hello, world." in smimekit.decrypt(sealed, private, cert).content


@pytest.mark.parametrize("ca_key", list(CAKeyType), ids=lambda v: v.value)
@pytest.mark.parametrize("kind", ["rsa2048", "p256"])
def test_every_ca_key_type_issues_lint_clean_certificates(
        ca_key: CAKeyType, kind: str, tmp_path: Path) -> None:
    ca = authority(ca_key)
    private = key(kind)
    cert = ca.issue(PROFILES["mailbox-strict"], INFO, private.public_key(), Purpose.BOTH)
    assert [f for f in lint(cert) if f.is_error] == []
    _check_usable(ca, cert, private, Purpose.BOTH)
    if OPENSSL is None:
        pytest.skip("openssl not installed")
    if ca_key.post_quantum:
        pytest.skip("OpenSSL 3.0 cannot verify an ML-DSA chain (lint and smimekit checked)")
    result = _openssl_verify(ca, cert, "smimesign", tmp_path)
    assert result.returncode == 0, result.stderr
    _check_openssl_encrypt(ca, cert, private, kind, tmp_path)


def test_policy_oids_are_the_reserved_cabf_ones() -> None:
    oids = {name: p.policy_oid.dotted_string for name, p in PROFILES.items()}
    assert oids == {
        "mailbox-multipurpose": "2.23.140.1.5.1.2",
        "mailbox-strict": "2.23.140.1.5.1.3",
        "organization-multipurpose": "2.23.140.1.5.2.2",
        "organization-strict": "2.23.140.1.5.2.3",
        "sponsored-multipurpose": "2.23.140.1.5.3.2",
        "sponsored-strict": "2.23.140.1.5.3.3",
    }


def test_certificate_carries_the_profile_extensions() -> None:
    ca = authority()
    cert = ca.issue(PROFILES["sponsored-strict"], INFO, key("p256").public_key(),
                    Purpose.ENCRYPT)
    ext = cert.extensions
    assert ext.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.EMAIL_PROTECTION])
    ku = ext.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_agreement and not ku.value.digital_signature
    san = ext.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.RFC822Name) == [EMAIL]
    aia = ext.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert {d.access_location.value for d in aia} == {ca.ocsp_url, ca.ca_issuers_url}
    assert ext.get_extension_for_class(x509.CRLDistributionPoints)
    assert ext.get_extension_for_class(x509.AuthorityKeyIdentifier)
    assert ext.get_extension_for_class(x509.SubjectKeyIdentifier)


def test_mailbox_subject_names_only_the_address() -> None:
    name = PROFILES["mailbox-strict"].subject(INFO)
    assert {a.value for a in name} == {EMAIL}


def test_dual_key_pairs_get_separate_signing_and_encryption_usages() -> None:
    ca = authority()
    profile = PROFILES["mailbox-strict"]
    signing = ca.issue(profile, INFO, key("rsa2048").public_key(), Purpose.SIGN)
    encryption = ca.issue(profile, INFO, key("rsa3072").public_key(), Purpose.ENCRYPT)
    sku = signing.extensions.get_extension_for_class(x509.KeyUsage).value
    eku = encryption.extensions.get_extension_for_class(x509.KeyUsage).value
    assert sku.digital_signature and not sku.key_encipherment
    assert eku.key_encipherment and not eku.digital_signature


def test_x25519_is_refused_because_the_br_do_not_allow_it() -> None:
    with pytest.raises(CAError) as info:
        authority().issue(PROFILES["mailbox-strict"], INFO, key("x25519").public_key(),
                          Purpose.ENCRYPT)
    assert any(f.code == "cabf.smime.prohibited_spki_algorithm_encoding"
               for f in info.value.findings)


@pytest.mark.parametrize(("kind", "purpose"), [("ed25519", Purpose.ENCRYPT),
                                               ("ed25519", Purpose.BOTH),
                                               ("x25519", Purpose.SIGN)])
def test_key_that_cannot_serve_the_purpose_is_refused(kind: str, purpose: Purpose) -> None:
    with pytest.raises(CAError):
        authority().issue(PROFILES["mailbox-strict"], INFO, key(kind).public_key(), purpose)


@pytest.mark.parametrize("generation", list(Generation), ids=lambda g: g.name.lower())
def test_validity_beyond_825_days_is_refused(generation: Generation) -> None:
    profile = Profile(ValidationLevel.MAILBOX, generation)
    with pytest.raises(CAError, match="825"):
        authority().issue(profile, INFO, key("p256").public_key(), Purpose.SIGN,
                          validity=dt.timedelta(days=826))


def test_validity_of_exactly_825_days_is_lint_clean() -> None:
    cert = authority().issue(PROFILES["mailbox-strict"], INFO, key("p256").public_key(),
                             Purpose.SIGN, validity=dt.timedelta(days=825))
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(
        days=825, seconds=-1)


@pytest.mark.parametrize("profile_name", ["organization-strict", "sponsored-multipurpose"])
def test_organization_levels_need_the_organization(profile_name: str) -> None:
    with pytest.raises(CAError, match="organization"):
        PROFILES[profile_name].subject(SubjectInfo(email=EMAIL))


def test_sponsored_level_needs_a_personal_name_or_pseudonym() -> None:
    info = SubjectInfo(email=EMAIL, organization="Example Ltd",
                       organization_identifier="NTRGB-01234567")
    with pytest.raises(CAError, match="pseudonym"):
        PROFILES["sponsored-strict"].subject(info)


def test_lint_refuses_a_certificate_without_a_cabf_policy() -> None:
    ca = authority()
    with pytest.raises(CAError, match="policy OID"):
        lint(ca.cert)


def test_internal_urls_make_issuance_fail_lint() -> None:
    ca = Authority.create("Example Ltd", base_url="http://127.0.0.1:8080",
                          root_key=authority().root_signer, issuing_key=authority().signer)
    with pytest.raises(CAError, match="internal_domain_name"):
        ca.issue(PROFILES["mailbox-strict"], INFO, key("p256").public_key(), Purpose.SIGN)


def test_non_http_base_url_is_refused() -> None:
    with pytest.raises(CAError, match="http"):
        Authority.create("Example Ltd", base_url="https://pki.example.com")
