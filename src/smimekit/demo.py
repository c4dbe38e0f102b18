"""End-to-end demonstration on a throwaway PKI: ``python -m smimekit.demo`` (``make demo``).

Alice signs and encrypts one message to Bob (RSA) and Carol (EC P-256); Bob opens it and
checks the verdict; then ``openssl cms`` opens the same message, when it is installed.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    PrivateKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import smimekit

MESSAGE = (
    b"From: Alice Example <alice@example.org>\r\n"
    b"To: Bob <bob@example.org>, Carol <carol@example.org>\r\n"
    b"Subject: Quarterly figures\r\n"
    b"Date: %s\r\n"
    b"Message-ID: <demo-1@example.org>\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Hello Bob and Carol,\r\n\r\nthe figures are attached in spirit. Gr\xc3\xbc\xc3\x9fe!\r\n"
)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Org"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _ca() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(65537, 3072)
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("Example Org Demo Root"))
        .issuer_name(_name("Example Org Demo Root"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _person(
    ca_key: CertificateIssuerPrivateKeyTypes,
    ca: x509.Certificate,
    name: str,
    email: str,
    key: PrivateKeyTypes,
) -> x509.Certificate:
    public = key.public_key()
    is_rsa = isinstance(public, rsa.RSAPublicKey)
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca.subject)
        .public_key(public)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
        .add_extension(
            x509.KeyUsage(True, False, is_rsa, False, not is_rsa, False, False, False, False),
            critical=True,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )


def _pem(path: Path, obj: x509.Certificate | PrivateKeyTypes) -> None:
    if isinstance(obj, x509.Certificate):
        path.write_bytes(obj.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(
            obj.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        path.chmod(0o600)


def say(text: str) -> None:
    print(text, flush=True)


def run(workdir: Path) -> bool:
    say("smimekit demo: a throwaway PKI, one message signed and encrypted, opened twice.\n")
    ca_key, ca = _ca()
    alice_key = rsa.generate_private_key(65537, 2048)
    bob_key = rsa.generate_private_key(65537, 2048)
    carol_key = ec.generate_private_key(ec.SECP256R1())
    alice = _person(ca_key, ca, "Alice Example", "alice@example.org", alice_key)
    bob = _person(ca_key, ca, "Bob Example", "bob@example.org", bob_key)
    carol = _person(ca_key, ca, "Carol Example", "carol@example.org", carol_key)
    files: list[tuple[str, x509.Certificate | PrivateKeyTypes]] = [
        ("ca.pem", ca),
        ("alice.pem", alice),
        ("alice.key", alice_key),
        ("bob.pem", bob),
        ("bob.key", bob_key),
        ("carol.pem", carol),
        ("carol.key", carol_key),
    ]
    for name, obj in files:
        _pem(workdir / name, obj)
    say(f"1. Made a root CA and three people in {workdir}:")
    say("   Alice (RSA-2048, sender), Bob (RSA-2048), Carol (EC P-256).")

    message = MESSAGE % email.utils.formatdate(usegmt=True).encode()
    sealed = smimekit.sign_encrypt(message, alice_key, alice, [bob, carol])
    (workdir / "message.eml").write_bytes(message)
    (workdir / "sealed.eml").write_bytes(sealed)
    say("2. Alice signed the message (SHA-256, RSA) and encrypted it with AES-256-GCM to Bob,")
    say(f"   Carol and herself (so she can read her sent copy): sealed.eml, {len(sealed)} bytes.")

    opened = smimekit.decrypt_verify(sealed, bob_key, bob, trust=[ca])
    verdict = opened.verdict
    layers = " then ".join(layer.kind for layer in verdict.layers)
    say(f"3. Bob opened it: layers {layers}.")
    say(f"   Verdict: {verdict.summary()}")
    body_ok = "Gr=C3=BC=C3=9Fe" in opened.content.decode("ascii", "replace")
    say(
        "   The text arrived intact (8-bit text was sent as quoted-printable)."
        if body_ok
        else "   The text did NOT arrive intact!"
    )

    opened_carol = smimekit.decrypt_verify(sealed, carol_key, carol, trust=[ca])
    say(
        f"4. Carol opened the same message with her EC key: "
        f"{'valid' if opened_carol.verdict.valid else 'INVALID'} signature from Alice."
    )

    ok = verdict.valid and opened_carol.verdict.valid and body_ok
    openssl = shutil.which("openssl")
    if openssl:
        dec = subprocess.run(
            [
                openssl,
                "cms",
                "-decrypt",
                "-in",
                "sealed.eml",
                "-recip",
                "bob.pem",
                "-inkey",
                "bob.key",
                "-out",
                "decrypted-by-openssl.eml",
            ],
            cwd=workdir,
            capture_output=True,
            text=True,
            check=False,
        )
        ver = subprocess.run(
            [
                openssl,
                "cms",
                "-verify",
                "-in",
                "decrypted-by-openssl.eml",
                "-CAfile",
                "ca.pem",
                "-purpose",
                "smimesign",
                "-out",
                "content-by-openssl.eml",
            ],
            cwd=workdir,
            capture_output=True,
            text=True,
            check=False,
        )
        openssl_ok = dec.returncode == 0 and ver.returncode == 0
        say(
            f"5. openssl cms decrypted it as Bob and verified Alice's signature: "
            f"{'yes' if openssl_ok else 'NO: ' + (dec.stderr + ver.stderr).strip()}"
        )
        ok = ok and openssl_ok
    else:
        say("5. openssl is not installed: skipped the cross-check with openssl cms.")
    say("")
    say(
        "RESULT: "
        + (
            "OK - signed, encrypted, decrypted and verified end to end."
            if ok
            else "FAILED - see above."
        )
    )
    return ok


def main() -> int:
    keep = len(sys.argv) > 1 and sys.argv[1] == "--keep"
    if keep:
        workdir = Path("demo-out")
        workdir.mkdir(exist_ok=True)
        return 0 if run(workdir) else 1
    with tempfile.TemporaryDirectory(prefix="smimekit-demo-") as tmp:
        return 0 if run(Path(tmp)) else 1


if __name__ == "__main__":
    sys.exit(main())
