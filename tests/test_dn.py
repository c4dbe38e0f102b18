"""Readable names in every output: RFC 4519 attribute names instead of dotted OIDs, and
revocation results in chain order."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pki import NOW, PKI, message

import smimekit
from smimekit.cli.main import main
from smimekit.dn import display_name
from smimekit.validation.verdict import CertSummary, RevocationStatus, SignerVerdict, Verdict

DOTTED = re.compile(r"(?<![\w.])\d+(\.\d+){3,}=")

SUBJECT = x509.Name([
    x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example GmbH"),
    x509.NameAttribute(NameOID.ORGANIZATION_IDENTIFIER, "NTRDE-HRB12345"),
    x509.NameAttribute(NameOID.GIVEN_NAME, "Dana"),
    x509.NameAttribute(NameOID.SURNAME, "Schmidt"),
    x509.NameAttribute(NameOID.PSEUDONYM, "ds"),
    x509.NameAttribute(NameOID.SERIAL_NUMBER, "42"),
    x509.NameAttribute(NameOID.TITLE, "Engineer"),
    x509.NameAttribute(NameOID.COMMON_NAME, "Dana Schmidt"),
    x509.NameAttribute(NameOID.EMAIL_ADDRESS, "dana@example.org"),
])
READABLE = ("emailAddress=dana@example.org,CN=Dana Schmidt,title=Engineer,serialNumber=42,"
            "pseudonym=ds,SN=Schmidt,givenName=Dana,organizationIdentifier=NTRDE-HRB12345,"
            "O=Example GmbH,C=DE")


def test_display_name_uses_rfc4519_names_not_oids() -> None:
    assert display_name(SUBJECT) == READABLE
    assert DOTTED.search(SUBJECT.rfc4514_string())  # what cryptography writes by itself


def test_unknown_attribute_stays_a_dotted_oid() -> None:
    name = x509.Name([x509.NameAttribute(x509.ObjectIdentifier("1.2.3.4.5"), "x")])
    assert display_name(name) == "1.2.3.4.5=x"


def _dana(pki: PKI) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """An end entity named by every attribute an S/MIME BR subject may carry."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(SUBJECT).issuer_name(pki.root.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=9))
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name("dana@example.org")]), False)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False,
                                     False), True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
        .sign(pki.root_key, hashes.SHA256())
    )
    return key, cert


def _root_named_like_dana() -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    return (
        x509.CertificateBuilder().subject_name(SUBJECT).issuer_name(SUBJECT)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=9))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                     False), True)
        .sign(key, hashes.SHA256())
    )


def test_verdict_summary_and_json_show_readable_names(pki: PKI, trust: list) -> None:
    key, cert = _dana(pki)
    signed = smimekit.sign(message(sender="dana@example.org"), key, cert)
    v = smimekit.verify(signed, trust=trust).verdict
    assert v.signers[0].signer is not None and v.signers[0].signer.subject == READABLE
    assert READABLE in v.summary()
    assert not DOTTED.search(v.summary()) and not DOTTED.search(v.to_json())
    assert json.loads(v.to_json())["signers"][0]["revocation"][0]["subject"] == READABLE


def test_trust_list_and_show_print_readable_names(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    root = _root_named_like_dana()
    pem = tmp_path / "root.pem"
    pem.write_bytes(root.public_bytes(serialization.Encoding.PEM))
    data = str(tmp_path / "data")
    assert main(["--data-dir", data, "trust", "add", str(pem)]) == 0
    out = capsys.readouterr().out
    assert "organizationIdentifier=NTRDE-HRB12345" in out and not DOTTED.search(out)
    assert main(["--data-dir", data, "trust", "show", root.fingerprint(hashes.SHA256()).hex()
                 [:12]]) == 0
    out = capsys.readouterr().out
    assert f"subject:     {READABLE}" in out and not DOTTED.search(out)
    assert main(["--data-dir", data, "trust", "list"]) == 0
    out = capsys.readouterr().out
    assert "emailAddress=dana@example.org" in out and not DOTTED.search(out)


def _summary(name: str) -> CertSummary:
    return CertSummary(name, "CN=Root", "1", "00", NOW, NOW, ())


def test_summary_lists_revocation_in_chain_order_signer_first() -> None:
    chain = (_summary("CN=Dana"), _summary("CN=Issuing"), _summary("CN=Root"))
    signer = SignerVerdict(
        intact=True, trusted=True, signer=chain[0], email=("dana@example.org",), chain=chain,
        digest_algorithm="sha256", signature_algorithm="ecdsa", signing_time=None,
        key_usage_ok=True, from_match=True,
        revocation=(RevocationStatus("CN=Dana", "unknown", "none"),
                    RevocationStatus("CN=Issuing", "good", "crl")))
    v = Verdict(signers=(signer,), layers=(), validation_time=NOW, from_address=None)
    assert "revocation: unknown, good (crl)" in v.summary()
    reversed_order = SignerVerdict(**{**signer.__dict__, "revocation": (
        RevocationStatus("CN=Dana", "good", "ocsp"), RevocationStatus("CN=Issuing", "unknown"))})
    v2 = Verdict(signers=(reversed_order,), layers=(), validation_time=NOW, from_address=None)
    assert "revocation: good (ocsp), unknown" in v2.summary()


def test_archive_scan_names_an_unknown_recipient_issuer_readably(pki: PKI) -> None:
    """An encrypted message to a certificate the scanner does not know: the recipient is
    named by issuer and serial, and the issuer reads as names, not OIDs."""
    from smimekit import archive

    issuer_key = ec.generate_private_key(ec.SECP256R1())
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(pki.root.subject).issuer_name(SUBJECT)
        .public_key(key.public_key()).serial_number(0x1234)
        .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=9))
        .sign(issuer_key, hashes.SHA256())
    )
    data = smimekit.encrypt(message(), [cert], check_recipients=False)
    info = archive.Classifier(keys=[]).classify("x", data)
    assert info.envelope is not None
    (rid,) = info.envelope.recipients
    assert rid.describe() == f"issuer {READABLE}, serial 1234"
