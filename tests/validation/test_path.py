"""Chain building and the S/MIME checks on the end entity."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from pki import NOW, PKI, _name, ca_cert, new_key

from smimekit.validation.path import Purpose, usage_problems, validate


def test_chain_through_the_intermediate(pki: PKI) -> None:
    who = pki.person("v-chain", "p256")
    result = validate(who.cert, intermediates=[pki.inter], anchors=[pki.root])
    assert result.ok
    assert result.chain == (who.cert, pki.inter, pki.root)


def test_missing_intermediate_means_no_path(pki: PKI) -> None:
    who = pki.person("v-chain", "p256")
    result = validate(who.cert, anchors=[pki.root])
    assert not result.trusted
    assert "no chain to a trust anchor" in result.reasons[0]


def test_no_anchors_is_never_trusted(pki: PKI) -> None:
    who = pki.person("v-chain", "p256")
    assert validate(who.cert, intermediates=[pki.inter], anchors=[]).reasons == (
        "no trust anchors were given",)


def test_expired_and_not_yet_valid(pki: PKI) -> None:
    who = pki.person("v-dates", "p256")
    later = validate(who.cert, intermediates=[pki.inter], anchors=[pki.root],
                     at=NOW + dt.timedelta(days=400))
    assert any("expired" in r for r in later.reasons)
    earlier = validate(who.cert, intermediates=[pki.inter], anchors=[pki.root],
                       at=NOW - dt.timedelta(days=10))
    assert any("not valid before" in r for r in earlier.reasons)


def test_wrong_eku_fails(pki: PKI) -> None:
    who = pki.person("v-eku", "p256", eku=[ExtendedKeyUsageOID.SERVER_AUTH])
    result = validate(who.cert, intermediates=[pki.inter], anchors=[pki.root])
    assert result.trusted and not result.key_usage_ok
    assert "emailProtection" in result.usage_reasons[0]


def test_no_eku_and_any_eku_are_accepted(pki: PKI) -> None:
    assert not usage_problems(pki.person("v-noeku", "p256", eku=None).cert, Purpose.SIGN)
    anyeku = pki.person("v-anyeku", "p256", eku=[ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE])
    assert not usage_problems(anyeku.cert, Purpose.SIGN)


def test_key_usage_must_fit_the_operation(pki: PKI) -> None:
    enc_only = pki.person("v-enc", "rsa2048", key_usage="encrypt")
    assert usage_problems(enc_only.cert, Purpose.SIGN)
    assert not usage_problems(enc_only.cert, Purpose.ENCRYPT)
    sign_only = pki.person("v-sign", "p256", key_usage="sign")
    assert "keyAgreement" in usage_problems(sign_only.cert, Purpose.ENCRYPT)[0]


def test_short_rsa_keys_are_refused_unless_legacy(pki: PKI) -> None:
    weak = pki.person("v-weak", "rsa1024", fresh_key=True)
    strict = validate(weak.cert, intermediates=[pki.inter], anchors=[pki.root])
    assert any("1024-bit" in r for r in strict.reasons)
    assert validate(weak.cert, intermediates=[pki.inter], anchors=[pki.root],
                    allow_legacy=True).trusted


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the SHA-1 cert")
def test_sha1_signed_certificates_are_refused_unless_legacy(tmp_path) -> None:
    # cryptography refuses to create SHA-1 signatures, so OpenSSL makes the certificate.
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha1",
                    "-keyout", tmp_path / "k.pem", "-out", tmp_path / "c.pem", "-days", "30",
                    "-subj", "/CN=sha1 root", "-addext", "basicConstraints=critical,CA:TRUE"],
                   check=True, capture_output=True)
    cert = x509.load_pem_x509_certificate((tmp_path / "c.pem").read_bytes())
    strict = validate(cert, anchors=[cert], purpose=Purpose.SIGN)
    assert strict.trusted  # an anchor's own signature is not relied upon
    subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    tmp_path / "ek.pem", "-out", tmp_path / "e.csr", "-subj", "/CN=sha1 ee"],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-sha1", "-in", tmp_path / "e.csr", "-CA",
                    tmp_path / "c.pem", "-CAkey", tmp_path / "k.pem", "-CAcreateserial",
                    "-out", tmp_path / "e.pem", "-days", "30"], check=True, capture_output=True)
    ee = x509.load_pem_x509_certificate((tmp_path / "e.pem").read_bytes())
    refused = validate(ee, anchors=[cert])
    assert not refused.trusted
    assert validate(ee, anchors=[cert], allow_legacy=True).trusted


def test_end_entity_cannot_act_as_a_ca(pki: PKI) -> None:
    fake_ca = pki.person("v-fakeca", "p256")
    victim = pki.person("v-victim", "p256", issuer=(fake_ca.key, fake_ca.cert))  # type: ignore[arg-type]
    result = validate(victim.cert, intermediates=[fake_ca.cert, pki.inter], anchors=[pki.root])
    assert not result.trusted
    assert any("not one" in r or "keyCertSign" in r for r in result.reasons)


def test_cross_certified_paths_pick_the_valid_candidate(pki: PKI) -> None:
    """Two CAs with the same name and key: one expired cross-certificate, one good."""
    other_root_key = new_key("rsa2048#other-root")
    other_root = ca_cert(other_root_key, _name("Other Root"), other_root_key, _name("Other Root"))
    expired_cross = ca_cert(pki.inter_key, pki.inter.subject, other_root_key, other_root.subject,
                            not_after=NOW - dt.timedelta(days=1))
    who = pki.person("v-cross", "p256")
    result = validate(who.cert, intermediates=[expired_cross, pki.inter],
                      anchors=[other_root, pki.root])
    assert result.ok
    assert result.chain[-1] == pki.root
    only_expired = validate(who.cert, intermediates=[expired_cross], anchors=[other_root])
    assert any("expired" in r for r in only_expired.reasons)


def test_ca_with_eku_excluding_email_breaks_the_chain(pki: PKI) -> None:
    key = new_key("p256#tls-ca")
    tls_ca = ca_cert(key, _name("TLS only CA"), pki.root_key, pki.root.subject,
                     eku=[ExtendedKeyUsageOID.SERVER_AUTH])
    who = pki.person("v-tlsca", "p256", issuer=(key, tls_ca))  # type: ignore[arg-type]
    result = validate(who.cert, intermediates=[tls_ca], anchors=[pki.root])
    assert any("excludes emailProtection" in r for r in result.reasons)


@pytest.mark.parametrize("purpose", list(Purpose))
def test_ed25519_and_x25519_chains(pki: PKI, purpose: Purpose) -> None:
    kind = "ed25519" if purpose is Purpose.SIGN else "x25519"
    who = pki.person(f"v-{kind}", kind)
    assert validate(who.cert, intermediates=[pki.inter], anchors=[pki.root],
                    purpose=purpose).ok


def test_anchor_given_as_the_end_entity_itself(pki: PKI) -> None:
    who = pki.person("v-self", "p256")
    assert validate(who.cert, anchors=[who.cert]).ok
    _ = x509
