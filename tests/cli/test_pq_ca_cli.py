"""A post-quantum CA through the CLI: ``ca init --key-type ml-dsa-65``, ``ca issue`` and
``ca enroll`` with ``--key-type ml-dsa-65 --key-type ml-kem-768`` (dual: ML-DSA signing,
ML-KEM encryption), the refusals that come before any key is made, and the end-to-end path:
sign-encrypt to a person the CA issued, decrypt-verify with their .p12."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from backends import Backend
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import mldsa, mlkem

from smimekit.cli.main import main
from smimekit.keys.pkcs12 import load_pkcs12_identities
from smimekit.store import Store

pytestmark = pytest.mark.slow

PASS = "correct horse battery staple"
P12_PASS = "p12 passphrase for tests"
MESSAGE = (b"From: alice@example.com\r\nTo: bob@example.com\r\nSubject: plans\r\n\r\n"
           b"Meet at noon, after the quantum computer is switched off.\r\n")
PQ = ["--key-type", "ml-dsa-65", "--key-type", "ml-kem-768"]


@pytest.fixture
def pq_ca(backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.setenv("SMIMEKIT_PASSPHRASE", PASS)
    cli = backend.cli_args()
    assert main([*cli, "ca", "init", "--org", "Example Ltd", "--base-url",
                 "http://pki.example.com", "--key-type", "ml-dsa-65", "--country", "GB"]) == 0
    (tmp_path / "p12.pass").write_text(P12_PASS)
    return cli


def _issue(cli: list[str], email: str, out: Path, tmp_path: Path, *extra: str) -> int:
    return main([*cli, "ca", "issue", "--email", email, "--out", str(out),
                 "--p12-passphrase-file", str(tmp_path / "p12.pass"), *extra])


def test_ca_issue_makes_a_dual_pq_person(pq_ca: list[str], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "issued"
    assert _issue(pq_ca, "alice@example.com", out, tmp_path, *PQ) == 0, \
        capsys.readouterr().err
    sign = load_pkcs12_identities(out / "alice@example.com.sign.p12", P12_PASS.encode())
    encrypt = load_pkcs12_identities(out / "alice@example.com.encrypt.p12", P12_PASS.encode())
    assert isinstance(sign.identities[0][0], mldsa.MLDSA65PrivateKey)
    assert isinstance(encrypt.identities[0][0], mlkem.MLKEM768PrivateKey)
    # the chain: issuing CA and root, both ML-DSA-65
    assert [isinstance(c.public_key(), mldsa.MLDSA65PublicKey) for c in sign.certificates] \
        == [True, True]
    pem = x509.load_pem_x509_certificate((out / "alice@example.com.encrypt.pem").read_bytes())
    assert not pem.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature


@pytest.mark.parametrize(("extra", "words"), [
    (["--key-type", "ml-dsa-65"], "cannot receive encrypted mail"),
    (["--key-type", "ml-kem-768"], "cannot sign"),
    ([*PQ, "--key-type", "p256"], "at most twice"),
    ([*PQ, "--purpose", "sign"], "are for --purpose dual"),
    ([*PQ, "--legacy-p12"], "--legacy-p12 cannot carry ML-DSA"),
    (["--key-type", "ml-kem-1024", "--purpose", "both"], "no post-quantum key both"),
])
def test_refusals_come_before_anything_is_issued(
        backend: Backend, pq_ca: list[str], tmp_path: Path, extra: list[str], words: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "refused"
    assert _issue(pq_ca, "carol@example.com", out, tmp_path, *extra) == 2
    assert words in capsys.readouterr().err
    assert not out.exists()
    store = Store.open(backend.url, backend.data_dir)
    try:
        assert store.issued_for("carol@example.com") == []
    finally:
        store.close()


def test_enroll_with_two_key_types(pq_ca: list[str], tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    people = tmp_path / "people.csv"
    with people.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "name"])
        writer.writerow(["dave@example.com", "Dave Example"])
        writer.writerow(["erin@example.com", "Erin Example"])
    out = tmp_path / "enrolled"
    assert main([*pq_ca, "ca", "enroll", "--csv", str(people), *PQ, "--workers", "1",
                 "--out", str(out), "--no-progress"]) == 0, capsys.readouterr().err
    for email in ("dave@example.com", "erin@example.com"):
        sign = x509.load_pem_x509_certificate((out / f"{email}.sign.pem").read_bytes())
        encrypt = x509.load_pem_x509_certificate((out / f"{email}.encrypt.pem").read_bytes())
        assert isinstance(sign.public_key(), mldsa.MLDSA65PublicKey)
        assert isinstance(encrypt.public_key(), mlkem.MLKEM768PublicKey)
    # a bad pair is refused before the CSV is even read
    assert main([*pq_ca, "ca", "enroll", "--csv", str(tmp_path / "missing.csv"),
                 "--key-type", "ml-kem-768", "--out", str(out)]) == 2


def test_sign_encrypt_to_a_pq_person_and_decrypt_verify(
        backend: Backend, pq_ca: list[str], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's end-to-end check: the CA issues ML-DSA + ML-KEM people; alice signs with
    her ML-DSA .p12 and encrypts to bob's ML-KEM certificate; bob decrypts with his .p12
    and the signature verifies up to the ML-DSA root."""
    cli = pq_ca
    out = tmp_path / "issued"
    for email in ("alice@example.com", "bob@example.com"):
        assert _issue(cli, email, out, tmp_path, *PQ) == 0, capsys.readouterr().err
    assert main([*cli, "ca", "chain", "--root-only", "-o", str(tmp_path / "root.pem")]) == 0
    assert main([*cli, "trust", "add", str(tmp_path / "root.pem")]) == 0
    (tmp_path / "msg.eml").write_bytes(MESSAGE)
    key = ["--passphrase-file", str(tmp_path / "p12.pass")]
    capsys.readouterr()
    assert main([*cli, "sign-encrypt", "--key", str(out / "alice@example.com.sign.p12"), *key,
                 "--to", str(out / "bob@example.com.encrypt.pem"), "--revocation", "offline",
                 str(tmp_path / "msg.eml"), "-o", str(tmp_path / "sealed.eml")]) == 0, \
        capsys.readouterr().err
    sealed = (tmp_path / "sealed.eml").read_bytes()
    assert b"Meet at noon" not in sealed
    assert main([*cli, "decrypt-verify", "--key", str(out / "bob@example.com.encrypt.p12"),
                 *key, "--revocation", "offline", "--report", str(tmp_path / "v.json"),
                 str(tmp_path / "sealed.eml"), "-o", str(tmp_path / "bob.eml")]) == 0, \
        capsys.readouterr().err
    assert b"Meet at noon, after the quantum computer" in (tmp_path / "bob.eml").read_bytes()
    report = json.loads((tmp_path / "v.json").read_text())
    assert report["valid"] is True
    assert report["signers"][0]["valid"] is True
    assert report["signers"][0]["email"] == ["alice@example.com"]


def test_renew_keeps_pq_people_post_quantum_and_refuses_the_legacy_form(
        backend: Backend, pq_ca: list[str], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "issued"
    assert _issue(pq_ca, "frank@example.com", out, tmp_path, *PQ) == 0
    # the legacy form cannot carry the new keys: every row fails and nothing is renewed
    assert main([*pq_ca, "ca", "renew", "--due", "1000d", "--legacy-p12",
                 "--out", str(tmp_path / "legacy")]) == 1
    assert "legacy PKCS#12 form cannot carry" in (
        tmp_path / "legacy" / "renewals.csv").read_text()
    store = Store.open(backend.url, backend.data_dir)
    try:
        assert all(r.renewed_by is None for r in store.issued_for("frank@example.com"))
    finally:
        store.close()
    assert main([*pq_ca, "ca", "renew", "--due", "1000d", "--legacy-p12", "--key-type",
                 "ml-kem-1024", "--out", str(tmp_path / "legacy")]) == 2
    capsys.readouterr()
    assert main([*pq_ca, "ca", "renew", "--due", "1000d",
                 "--out", str(tmp_path / "renewed")]) == 0, capsys.readouterr().err
    renewed = tmp_path / "renewed"
    sign = x509.load_pem_x509_certificate(
        (renewed / "frank@example.com.sign.pem").read_bytes())
    encrypt = load_pkcs12_identities(
        next(renewed.glob("frank@example.com.encrypt.p12")),
        _passphrase(renewed / "renewals.csv", "frank@example.com"))
    assert isinstance(sign.public_key(), mldsa.MLDSA65PublicKey)
    # the renewed encryption file carries the new ML-KEM key and the old one
    assert [type(k).__name__ for k, _ in encrypt.identities] == ["MLKEM768PrivateKey"] * 2


def _passphrase(results: Path, email: str) -> bytes:
    with results.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["email"] == email and row.get("p12_passphrase"):
                return row["p12_passphrase"].encode()
    raise AssertionError(f"no passphrase for {email} in {results}")
