"""CRLs of our CA: RFC 5280 shape, S/MIME BR bounds and reasons, size, independent readers.

The test PKI comes from ``tests/revocation/revpki.py`` (P-256, made in the run); RSA and
Ed25519 issuers are made here where the signature algorithm matters.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificateIssuerPublicKeyTypes,
)

sys.path.insert(0, str(Path(__file__).parents[1] / "revocation"))

from revpki import Party, issue, name

from smimekit.ca.crl import REASONS, build_crl, parse_reason, reason_flag
from smimekit.errors import CAError
from smimekit.keys.signer import LocalSigner, hash_for
from smimekit.store.db import Revocation

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
WEEK = dt.timedelta(days=7)


class TokenLike:
    """A Signer that is not a LocalSigner: the path a PKCS#11 key takes."""

    def __init__(self, key: CertificateIssuerPrivateKeyTypes) -> None:
        self._inner = LocalSigner(key)

    def public_key(self) -> CertificateIssuerPublicKeyTypes:
        return self._inner.public_key()

    def sign(self, data: bytes) -> bytes:
        return self._inner.sign(data)


def ca_of(key: CertificateIssuerPrivateKeyTypes, *, crl_sign: bool = True) -> x509.Certificate:
    public = key.public_key()
    return (
        x509.CertificateBuilder().subject_name(name("CRL Test CA")).issuer_name(name("CRL Test CA"))
        .public_key(public).serial_number(x509.random_serial_number())
        .not_valid_before(NOW - WEEK).not_valid_after(NOW + 52 * WEEK)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, crl_sign, False,
                                     False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hash_for(key))
    )


@pytest.fixture(scope="module")
def ca() -> Party:
    return issue("CRL Test CA", None, ca=True)


def der(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.DER)


def revocations(n: int, *, at: dt.datetime = NOW - dt.timedelta(hours=1)) -> list[Revocation]:
    reasons = [None, "key-compromise", "superseded", "unspecified", "cessation-of-operation"]
    return [Revocation(format(1000 + 7919 * i, "x"), at - dt.timedelta(minutes=i % 97),
                       reasons[i % len(reasons)]) for i in range(n)]


def test_crl_verifies_and_names_key_number_and_reasons(ca: Party) -> None:
    revoked = [Revocation("1f", NOW - dt.timedelta(hours=2), "key-compromise"),
               Revocation("0a", NOW - dt.timedelta(hours=1), None),
               Revocation("2B", NOW - dt.timedelta(minutes=5), "unspecified")]
    crl = build_crl(ca.cert, LocalSigner(ca.key), revoked, number=42, this_update=NOW,
                    next_update=NOW + WEEK)
    assert crl.is_signature_valid(ca.key.public_key())
    assert crl.issuer == ca.cert.subject
    assert (crl.last_update_utc, crl.next_update_utc) == (NOW, NOW + WEEK)
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.value.key_identifier == ski.digest and not aki.critical
    number = crl.extensions.get_extension_for_class(x509.CRLNumber)
    assert number.value.crl_number == 42 and not number.critical
    entries = {e.serial_number: e for e in crl}
    assert sorted(entries) == [0x0A, 0x1F, 0x2B]
    assert [e.serial_number for e in crl] == [0x0A, 0x1F, 0x2B]  # sorted by serial
    reason = entries[0x1F].extensions.get_extension_for_class(x509.CRLReason)
    assert reason.value.reason is x509.ReasonFlags.key_compromise and not reason.critical
    # BR 7.2.2: no reason, or unspecified, leaves the extension out.
    assert len(entries[0x0A].extensions) == 0 and len(entries[0x2B].extensions) == 0
    assert entries[0x1F].revocation_date_utc == NOW - dt.timedelta(hours=2)


def test_empty_crl_omits_the_entry_list(ca: Party) -> None:
    crl = build_crl(ca.cert, LocalSigner(ca.key), [], number=0, this_update=NOW,
                    next_update=NOW + WEEK)
    assert len(crl) == 0 and crl.is_signature_valid(ca.key.public_key())


@pytest.mark.parametrize("kind", ["p256", "p384", "rsa", "ed25519", "token"])
def test_der_is_what_cryptography_would_write(kind: str) -> None:
    """The hand-written TBSCertList equals cryptography's for the same content, so the
    signature algorithm, times, extensions and entries are encoded as a reference does."""
    key: CertificateIssuerPrivateKeyTypes = {
        "p256": lambda: ec.generate_private_key(ec.SECP256R1()),
        "token": lambda: ec.generate_private_key(ec.SECP256R1()),
        "p384": lambda: ec.generate_private_key(ec.SECP384R1()),
        "rsa": lambda: rsa.generate_private_key(65537, 2048),
        "ed25519": ed25519.Ed25519PrivateKey.generate,
    }[kind]()
    issuer = ca_of(key)
    revoked = revocations(12)
    this_update = dt.datetime(2049, 12, 31, 23, 59, 59, 999, tzinfo=dt.UTC)
    next_update = dt.datetime(2050, 1, 7, tzinfo=dt.UTC)  # UTCTime, then GeneralizedTime
    signer = TokenLike(key) if kind == "token" else LocalSigner(key)
    ours = build_crl(issuer, signer, revoked, number=7, this_update=this_update,
                     next_update=next_update)
    builder = (
        x509.CertificateRevocationListBuilder().issuer_name(issuer.subject)
        .last_update(this_update.replace(microsecond=0)).next_update(next_update)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
            issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value), False)
        .add_extension(x509.CRLNumber(7), False)
    )
    for r in sorted(revoked, key=lambda r: int(r.serial, 16)):
        entry = x509.RevokedCertificateBuilder().serial_number(int(r.serial, 16)) \
            .revocation_date(r.revoked_at)
        flag = reason_flag(r.reason)
        if flag is not None:
            entry = entry.add_extension(x509.CRLReason(flag), False)
        builder = builder.add_revoked_certificate(entry.build())
    reference = builder.sign(key, hash_for(key))
    assert ours.tbs_certlist_bytes == reference.tbs_certlist_bytes
    assert ours.signature_algorithm_oid == reference.signature_algorithm_oid
    assert ours.is_signature_valid(key.public_key())


def test_next_update_bounds_follow_the_br(ca: Party) -> None:
    signer = LocalSigner(ca.key)
    ten_days = dt.timedelta(days=10)
    assert build_crl(ca.cert, signer, [], number=1, this_update=NOW,
                     next_update=NOW + ten_days).next_update_utc == NOW + ten_days
    with pytest.raises(CAError, match="at most 10 days"):
        build_crl(ca.cert, signer, [], number=1, this_update=NOW,
                  next_update=NOW + ten_days + dt.timedelta(seconds=1))
    with pytest.raises(CAError, match="after thisUpdate"):
        build_crl(ca.cert, signer, [], number=1, this_update=NOW, next_update=NOW)
    with pytest.raises(CAError, match="timezone"):
        build_crl(ca.cert, signer, [], number=1, this_update=NOW.replace(tzinfo=None),
                  next_update=NOW + WEEK)
    # A CRL of CA certificates (the root's) may run twelve months (BR 4.9.7) ...
    year = dt.timedelta(days=365)
    crl = build_crl(ca.cert, signer, [Revocation("5", NOW, "key-compromise")], number=1,
                    this_update=NOW, next_update=NOW + year, for_ca_certificates=True)
    assert crl.next_update_utc == NOW + year
    # ... and each entry needs a reason other than unspecified (BR 7.2.2).
    for reason in (None, "unspecified"):
        with pytest.raises(CAError, match="needs a reason"):
            build_crl(ca.cert, signer, [Revocation("5", NOW, reason)], number=1,
                      this_update=NOW, next_update=NOW + WEEK, for_ca_certificates=True)


@pytest.mark.parametrize(("text", "expected"), [
    ("key-compromise", "key-compromise"),
    ("keyCompromise", "key-compromise"),
    ("KEY_COMPROMISE", "key-compromise"),
    (" superseded ", "superseded"),
    ("cessationOfOperation", "cessation-of-operation"),
    ("privilege-withdrawn", "privilege-withdrawn"),
    ("unspecified", "unspecified"),
])
def test_reason_names_are_read_leniently(text: str, expected: str) -> None:
    assert parse_reason(text) == expected


@pytest.mark.parametrize("text", ["certificate-hold", "certificateHold", "remove-from-crl",
                                  "ca-compromise", "compromised", ""])
def test_bad_reason_name_is_refused_with_the_valid_names(text: str) -> None:
    with pytest.raises(CAError) as info:
        parse_reason(text)
    assert all(valid in str(info.value) for valid in REASONS)
    if "hold" in text.lower():
        assert "BR 7.2.2" in str(info.value)


def test_reasons_offered() -> None:
    assert set(REASONS) == {"unspecified", "key-compromise", "affiliation-changed",
                            "superseded", "cessation-of-operation", "privilege-withdrawn"}
    assert x509.ReasonFlags.certificate_hold not in REASONS.values()
    assert reason_flag(None) is None and reason_flag("unspecified") is None
    assert reason_flag("superseded") is x509.ReasonFlags.superseded


def test_unknown_reason_in_a_record_is_refused(ca: Party) -> None:
    with pytest.raises(CAError, match="unknown revocation reason"):
        build_crl(ca.cert, LocalSigner(ca.key), [Revocation("5", NOW, "certificateHold")],
                  number=1, this_update=NOW, next_update=NOW + WEEK)


@pytest.mark.parametrize(("serial", "match"), [
    ("xyz", "not hexadecimal"), ("0", "positive"), ("-5", "positive"), ("f" * 41, "20 octets"),
])
def test_bad_serials_are_refused(ca: Party, serial: str, match: str) -> None:
    with pytest.raises(CAError, match=match):
        build_crl(ca.cert, LocalSigner(ca.key), [Revocation(serial, NOW, None)], number=1,
                  this_update=NOW, next_update=NOW + WEEK)


def test_a_serial_listed_twice_is_refused(ca: Party) -> None:
    with pytest.raises(CAError, match="listed twice"):
        build_crl(ca.cert, LocalSigner(ca.key),
                  [Revocation("1a", NOW, None), Revocation("1A", NOW, "superseded")],
                  number=1, this_update=NOW, next_update=NOW + WEEK)


def test_crl_number_out_of_range_is_refused(ca: Party) -> None:
    for number in (-1, 1 << 159):
        with pytest.raises(CAError, match="CRL number"):
            build_crl(ca.cert, LocalSigner(ca.key), [], number=number, this_update=NOW,
                      next_update=NOW + WEEK)


def test_signer_must_hold_the_issuers_key(ca: Party) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(CAError, match="not the key of the issuer"):
        build_crl(ca.cert, LocalSigner(other), [], number=1, this_update=NOW,
                  next_update=NOW + WEEK)


def test_issuer_without_crl_sign_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(CAError, match="cRLSign"):
        build_crl(ca_of(key, crl_sign=False), LocalSigner(key), [], number=1,
                  this_update=NOW, next_update=NOW + WEEK)


def test_a_signer_that_signs_wrongly_is_caught(ca: Party) -> None:
    class Broken(TokenLike):
        def sign(self, data: bytes) -> bytes:
            return super().sign(data + b"!")

    with pytest.raises(CAError, match="does not verify"):
        build_crl(ca.cert, Broken(ca.key), [], number=1, this_update=NOW,
                  next_update=NOW + WEEK)


def test_crl_passes_pkilint(ca: Party, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pkilint.bin import lint_crl

    path = tmp_path / "ca.crl"
    path.write_bytes(der(build_crl(ca.cert, LocalSigner(ca.key), revocations(20), number=3,
                                   this_update=NOW, next_update=NOW + WEEK)))
    assert lint_crl.main(["lint", "-t", "CRL", "-p", "BR", "-s", "NOTICE", str(path)]) == 0, (
        capsys.readouterr().out)


@pytest.mark.interop
@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_thousand_entry_crl_reads_in_openssl(ca: Party, tmp_path: Path) -> None:
    revoked = revocations(1000)
    path = tmp_path / "ca.crl"
    path.write_bytes(der(build_crl(ca.cert, LocalSigner(ca.key), revoked, number=9,
                                   this_update=NOW, next_update=NOW + WEEK)))
    (tmp_path / "ca.pem").write_bytes(ca.pem_cert())
    out = subprocess.run(["openssl", "crl", "-inform", "DER", "-in", str(path), "-noout",
                          "-text", "-CAfile", str(tmp_path / "ca.pem")],
                         capture_output=True, text=True, check=True)
    text = out.stdout + out.stderr
    assert "verify OK" in text
    assert text.count("Serial Number:") == 1000
    assert f"Serial Number: {int(revoked[999].serial, 16):X}" in text
    assert text.count("Key Compromise") == 200
    assert text.count("Superseded") == 200 and "Unspecified" not in text
    assert "X509v3 CRL Number: \n                9" in text


@pytest.mark.slow
def test_hundred_thousand_entries_build_quickly(ca: Party) -> None:
    revoked = revocations(100_000)
    started = time.perf_counter()
    crl = build_crl(ca.cert, LocalSigner(ca.key), revoked, number=1, this_update=NOW,
                    next_update=NOW + WEEK)
    elapsed = time.perf_counter() - started
    assert len(crl) == 100_000
    assert elapsed < 5, f"100,000 entries took {elapsed:.1f} s"
    assert crl.get_revoked_certificate_by_serial_number(int(revoked[-1].serial, 16))
