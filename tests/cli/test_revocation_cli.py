"""verify/encrypt with --revocation hard|soft|offline, --crl (the wiring; the logic is in
tests/revocation)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from pki import NOW, PKI, Identity, message

import smimekit
from smimekit.cli.main import main


def _crl(pki: PKI, revoked: list[x509.Certificate]) -> bytes:
    builder = (x509.CertificateRevocationListBuilder()
               .issuer_name(pki.root.subject)
               .last_update(NOW - dt.timedelta(hours=1))
               .next_update(NOW + dt.timedelta(days=7))
               .add_extension(x509.CRLNumber(1), critical=False))  # RFC 5280 5.2.3
    for cert in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(cert.serial_number)
            .revocation_date(NOW - dt.timedelta(minutes=30)).build())
    return builder.sign(pki.root_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


@pytest.fixture()
def files(tmp_path: Path, pki: PKI, alice: Identity, bob: Identity) -> Path:
    (tmp_path / "root.pem").write_bytes(pki.root.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "bob.pem").write_bytes(bob.pem_cert())
    (tmp_path / "signed.eml").write_bytes(smimekit.sign(message(), alice.key, alice.cert))
    (tmp_path / "revoked.crl").write_bytes(_crl(pki, [alice.cert, bob.cert]))
    (tmp_path / "clean.crl").write_bytes(_crl(pki, []))
    (tmp_path / "m.eml").write_bytes(message())
    return tmp_path


def run(files: Path, *args: str) -> int:
    return main(["--data-dir", str(files / "data"), *args])


def test_revoked_signer_fails_under_every_policy(files: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    for policy in ("hard", "soft", "offline"):
        code = run(files, "verify", "--trust", str(files / "root.pem"), "--revocation", policy,
                   "--crl", str(files / "revoked.crl"), str(files / "signed.eml"))
        assert code == 1
        assert "revoked" in capsys.readouterr().err


def test_hard_policy_without_any_answer_fails_soft_warns(files: Path,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    args = ["verify", "--trust", str(files / "root.pem"), str(files / "signed.eml"),
            "-o", str(files / "out.eml")]
    assert run(files, *args, "--revocation", "hard") == 1
    assert "revocation" in capsys.readouterr().err
    assert run(files, *args, "--revocation", "soft") == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "warnings:" in err and "revocation: unknown" in err


def test_offline_with_a_clean_crl_passes_with_status_good(files: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    assert run(files, "verify", "--trust", str(files / "root.pem"), "--revocation", "hard",
               "--crl", str(files / "clean.crl"), str(files / "signed.eml"), "-o",
               str(files / "out.eml")) == 0
    assert "revocation: good" in capsys.readouterr().err


def test_encrypt_refuses_a_revoked_recipient(files: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = str(files / "e.eml")
    assert run(files, "encrypt", "--to", str(files / "bob.pem"), "--trust",
               str(files / "root.pem"), "--revocation", "offline", "--crl",
               str(files / "revoked.crl"), str(files / "m.eml"), "-o", out) == 1
    assert "revoked" in capsys.readouterr().err
    assert run(files, "encrypt", "--to", str(files / "bob.pem"), "--trust",
               str(files / "root.pem"), "--revocation", "offline", "--crl",
               str(files / "clean.crl"), str(files / "m.eml"), "-o", out) == 0


def test_a_broken_crl_file_is_a_clean_error(files: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    (files / "bad.crl").write_bytes(b"\x30\x03garbage")
    assert run(files, "verify", "--trust", str(files / "root.pem"), "--crl",
               str(files / "bad.crl"), str(files / "signed.eml")) == 1
    err = capsys.readouterr().err
    assert err.startswith("smimekit: error:") and "Traceback" not in err
