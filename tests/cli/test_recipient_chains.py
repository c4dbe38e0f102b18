"""encrypt / sign-encrypt complete a recipient's chain as verify completes a signer's: from
the data directory's own CA, the intermediates cache and AIA caIssuers (over real loopback
HTTP), and report an unknown revocation status with verify's own warning."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID
from loopback import FileServer

from smimekit.cli.main import main

PASS = "correct horse battery staple"
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
MESSAGE = (b"From: bob@example.org\r\nTo: alice@example.org\r\nSubject: hi\r\n"
           b"Date: " + NOW.strftime("%a, %d %b %Y %H:%M:%S +0000").encode()
           + b"\r\n\r\nHello.\r\n")




def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Outside CA Inc"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: x509.Name, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
          issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool, email: str | None = None,
          ca_issuers: str | None = None, ocsp: str | None = None) -> x509.Certificate:
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(NOW - dt.timedelta(days=1))
         .not_valid_after(NOW + dt.timedelta(days=365))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                          False), critical=True)
    else:
        # digitalSignature + keyAgreement: an EC key that signs and receives mail
        b = (b.add_extension(x509.KeyUsage(True, False, False, False, True, False, False,
                                           False, False), critical=True)
             .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]),
                            False)
             .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email or "")]),
                            False))
    access = []
    if ca_issuers:
        access.append(x509.AccessDescription(AuthorityInformationAccessOID.CA_ISSUERS,
                                             x509.UniformResourceIdentifier(ca_issuers)))
    if ocsp:
        access.append(x509.AccessDescription(AuthorityInformationAccessOID.OCSP,
                                             x509.UniformResourceIdentifier(ocsp)))
    if access:
        b = b.add_extension(x509.AuthorityInformationAccess(access), False)
    return b.sign(issuer_key, hashes.SHA256())


def _pem(path: Path, *certs: x509.Certificate) -> Path:
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))
    return path


def _key_pem(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


class Outside:
    """An outside CA: root -> intermediate (served only at its AIA URL) -> alice."""

    def __init__(self, server: FileServer, tmp: Path, *, ocsp: bool = False) -> None:
        self.root_key, self.inter_key, self.alice_key = (
            ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
        self.root = _cert(_name("Outside Root"), self.root_key, _name("Outside Root"),
                          self.root_key, ca=True)
        self.inter = _cert(_name("Outside Issuing CA"), self.inter_key, self.root.subject,
                           self.root_key, ca=True)
        server.files["inter.der"] = self.inter.public_bytes(serialization.Encoding.DER)
        self.alice = _cert(_name("Alice"), self.alice_key, self.inter.subject, self.inter_key,
                           ca=False, email="alice@example.org",
                           ca_issuers=server.url("inter.der"),
                           ocsp=server.url("ocsp") if ocsp else None)
        self.root_pem = _pem(tmp / "outside-root.pem", self.root)
        self.alice_pem = _pem(tmp / "alice.pem", self.alice)
        self.alice_key_pem = _key_pem(tmp / "alice.key", self.alice_key)


@pytest.mark.slow  # ca init + ca issue (pkilint): about 2 s
def test_encrypt_to_a_certificate_our_ca_issued_with_only_the_root_trusted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SMIMEKIT_PASSPHRASE", PASS)
    data = ["--data-dir", str(tmp_path / "data")]
    assert main([*data, "ca", "init", "--org", "Example Ltd", "--base-url",
                 "http://pki.example.com", "--key-type", "p256", "--country", "GB"]) == 0
    out = tmp_path / "issued"
    assert main([*data, "ca", "issue", "--email", "alice@example.org", "--purpose",
                 "encrypt", "--key-type", "p256", "--out", str(out)]) == 0
    secret = re.search(r"PKCS#12 passphrase .*: (\S+)", capsys.readouterr().out)
    assert secret is not None
    assert main([*data, "ca", "chain", "--root-only", "-o", str(tmp_path / "root.pem")]) == 0
    assert main([*data, "trust", "add", str(tmp_path / "root.pem")]) == 0
    (tmp_path / "msg.eml").write_bytes(MESSAGE)
    capsys.readouterr()

    # no --certs: the issuing CA comes from the data directory's own CA
    assert main([*data, "encrypt", "--to", str(out / "alice@example.org.encrypt.pem"),
                 "--revocation", "offline", str(tmp_path / "msg.eml"),
                 "-o", str(tmp_path / "enc.eml")]) == 0, capsys.readouterr().err
    (tmp_path / "p12.pass").write_text(secret.group(1))
    assert main([*data, "decrypt", "--key", str(out / "alice@example.org.encrypt.p12"),
                 "--passphrase-file", str(tmp_path / "p12.pass"), str(tmp_path / "enc.eml"),
                 "-o", str(tmp_path / "dec.eml")]) == 0
    assert b"Hello." in (tmp_path / "dec.eml").read_bytes()


def test_encrypt_fetches_the_missing_intermediate_by_aia_and_caches_it(
        tmp_path: Path, server: FileServer, capsys: pytest.CaptureFixture[str]) -> None:
    pki = Outside(server, tmp_path)
    data = ["--data-dir", str(tmp_path / "data")]
    assert main([*data, "trust", "add", str(pki.root_pem)]) == 0
    (tmp_path / "msg.eml").write_bytes(MESSAGE)
    capsys.readouterr()
    assert main([*data, "encrypt", "--to", str(pki.alice_pem), str(tmp_path / "msg.eml"),
                 "-o", str(tmp_path / "enc.eml")]) == 0, capsys.readouterr().err
    assert server.hits["inter.der"] == 1
    assert (tmp_path / "enc.eml").exists()
    # the chain validated: its intermediate is kept, the next run needs no fetch
    assert main([*data, "encrypt", "--to", str(pki.alice_pem), "--revocation", "offline",
                 str(tmp_path / "msg.eml"), "-o", str(tmp_path / "enc2.eml")]) == 0
    assert server.hits["inter.der"] == 1
    assert len(list((tmp_path / "data" / "intermediates").glob("*.pem"))) == 1


def test_encrypt_offline_never_fetches_and_says_why_the_chain_is_missing(
        tmp_path: Path, server: FileServer, capsys: pytest.CaptureFixture[str]) -> None:
    pki = Outside(server, tmp_path)
    data = ["--data-dir", str(tmp_path / "data")]
    assert main([*data, "trust", "add", str(pki.root_pem)]) == 0
    (tmp_path / "msg.eml").write_bytes(MESSAGE)
    capsys.readouterr()
    for extra in (["--revocation", "offline"], ["--no-aia"]):
        assert main([*data, "encrypt", "--to", str(pki.alice_pem), *extra,
                     str(tmp_path / "msg.eml"), "-o", str(tmp_path / "enc.eml")]) == 1
        err = capsys.readouterr().err
        assert "refusing to encrypt" in err and "caIssuers" in err, err
        assert len(err.strip().splitlines()) == 1
    assert server.hits["inter.der"] == 0
    assert not (tmp_path / "enc.eml").exists()


def test_sign_encrypt_completes_the_recipient_chain_by_aia(
        tmp_path: Path, server: FileServer, capsys: pytest.CaptureFixture[str]) -> None:
    pki = Outside(server, tmp_path)
    data = ["--data-dir", str(tmp_path / "data")]
    assert main([*data, "trust", "add", str(pki.root_pem)]) == 0
    (tmp_path / "msg.eml").write_bytes(MESSAGE.replace(b"From: bob", b"From: alice"))
    capsys.readouterr()
    # alice writes to herself: the sender's certificate is the recipient too
    assert main([*data, "sign-encrypt", "--key", str(pki.alice_key_pem), "--cert",
                 str(pki.alice_pem), "--to", str(pki.alice_pem), str(tmp_path / "msg.eml"),
                 "-o", str(tmp_path / "sealed.eml")]) == 0, capsys.readouterr().err
    assert server.hits["inter.der"] == 1


def test_unknown_revocation_status_under_soft_warns_as_verify_does(
        tmp_path: Path, server: FileServer, capsys: pytest.CaptureFixture[str]) -> None:
    pki = Outside(server, tmp_path, ocsp=True)  # the OCSP URL answers 404
    data = ["--data-dir", str(tmp_path / "data")]
    assert main([*data, "trust", "add", str(pki.root_pem)]) == 0
    (tmp_path / "msg.eml").write_bytes(MESSAGE.replace(b"From: bob", b"From: alice"))
    capsys.readouterr()
    assert main([*data, "encrypt", "--to", str(pki.alice_pem), "--revocation", "soft",
                 str(tmp_path / "msg.eml"), "-o", str(tmp_path / "enc.eml")]) == 0
    err = capsys.readouterr().err
    warnings = re.findall(r"smimekit: warning: (.*)", err)
    assert warnings and all("revocation status unknown" in w for w in warnings), err

    # verify of a message alice signed prints the same warning text
    assert main([*data, "sign", "--key", str(pki.alice_key_pem), "--cert", str(pki.alice_pem),
                 str(tmp_path / "msg.eml"), "-o", str(tmp_path / "signed.eml")]) == 0
    assert main([*data, "verify", "--revocation", "soft", str(tmp_path / "signed.eml"),
                 "-o", str(tmp_path / "content")]) == 0
    verify_err = capsys.readouterr().err
    for warning in warnings:
        assert warning in verify_err, (warning, verify_err)

    # and under hard, no answer refuses the recipient
    assert main([*data, "encrypt", "--to", str(pki.alice_pem), "--revocation", "hard",
                 str(tmp_path / "msg.eml"), "-o", str(tmp_path / "enc2.eml")]) == 1
    assert "revocation status unknown" in capsys.readouterr().err
