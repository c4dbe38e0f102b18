"""End-to-end demonstration on a throwaway PKI: ``python -m smimekit.demo`` (``make demo``).

smimekit's own CA (a root and an issuing CA, linted S/MIME BR certificates, a store with an
audit log) issues Alice, Bob and Carol their certificates; Alice signs and encrypts one message
to Bob (RSA) and Carol (EC P-256); Bob and Carol open it and check the verdict, with revocation
checked against the CA's own CRLs; then ``openssl cms`` opens the same message, when it is
installed.
"""

from __future__ import annotations

import email.utils
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

import smimekit
from smimekit.ca.home import CAConfig, CAHome
from smimekit.ca.issuance import CertificateAuthority, SubscriberKeyType
from smimekit.ca.profiles import Purpose
from smimekit.fsutil import private_dir
from smimekit.store import Store
from smimekit.validation.revocation import RevocationOptions, RevocationPolicy

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
    data = workdir / "smimekit-data"
    home = CAHome(data)
    unlocked = home.create(
        CAConfig(organization="Example Org", base_url="http://pki.example.org",
                 key_type="p256", country="GB"),
        secrets.token_urlsafe(24).encode(),
    )
    store = Store.open(None, data)
    key = home.audit_key()
    store.use_audit_key(key)  # as the CLI does: every row MACed under <data>/ca/audit.key
    try:
        cax = CertificateAuthority(unlocked, store, actor="demo")
        crl = cax.publish_crl()
        alice_ids = cax.issue_generated(
            "alice@example.org", name="Alice Example", purpose="dual",
            sign_key=SubscriberKeyType.RSA2048, encrypt_key=SubscriberKeyType.RSA2048)
        bob_ids = cax.issue_generated("bob@example.org", name="Bob Example",
                                      purpose="encrypt",
                                      encrypt_key=SubscriberKeyType.RSA2048)
        carol_ids = cax.issue_generated("carol@example.org", name="Carol Example",
                                        purpose="encrypt",
                                        encrypt_key=SubscriberKeyType.P256)
        anchors = store.check_audit_anchors(key)
        audit_ok = (store.verify_audit_log() == [] and not anchors.problems
                    and not anchors.unanchored)
        audit_rows = len(store.audit_entries())
    finally:
        store.close()
    root, issuing = unlocked.authority.root, unlocked.authority.cert
    picks = {
        "alice": alice_ids.item(Purpose.SIGN),
        "alice-enc": alice_ids.item(Purpose.ENCRYPT),
        "bob": bob_ids.item(Purpose.ENCRYPT),
        "carol": carol_ids.item(Purpose.ENCRYPT),
    }
    for name, item in picks.items():
        assert item is not None and item.key is not None
        _pem(workdir / f"{name}.pem", item.cert)
        _pem(workdir / f"{name}.key", item.key)
    _pem(workdir / "ca.pem", root)
    _pem(workdir / "issuing-ca.pem", issuing)
    alice, alice_key = picks["alice"].cert, picks["alice"].key  # type: ignore[union-attr]
    bob, bob_key = picks["bob"].cert, picks["bob"].key  # type: ignore[union-attr]
    carol, carol_key = picks["carol"].cert, picks["carol"].key  # type: ignore[union-attr]
    assert alice_key is not None and bob_key is not None and carol_key is not None
    say(f"1. smimekit's own CA (root and issuing CA, P-256) in {data}")
    say("   issued S/MIME BR certificates, each linted by pkilint before signing:")
    say("   Alice a signing and an encryption certificate (RSA-2048), Bob an encryption one")
    say("   (RSA-2048), Carol an encryption one (EC P-256). The store recorded it all:"
        f" {audit_rows} audit rows, hash chain and MACs {'intact' if audit_ok else 'BROKEN'}.")
    # the CA's own CRLs: revocation is checked without any network
    revocation = RevocationOptions(policy=RevocationPolicy.HARD,
                                   crls=[crl, home.root_crl()])
    ca = root

    message = MESSAGE % email.utils.formatdate(usegmt=True).encode()
    sealed = smimekit.sign_encrypt(
        message, alice_key, alice, [bob, carol, picks["alice-enc"].cert],  # type: ignore[union-attr]
        chain=[issuing], trust=[ca], intermediates=[issuing], revocation=revocation)
    (workdir / "message.eml").write_bytes(message)
    (workdir / "sealed.eml").write_bytes(sealed)
    say("2. Alice signed the message (SHA-256, RSA) and encrypted it with AES-256-GCM to Bob,")
    say(f"   Carol and herself (so she can read her sent copy): sealed.eml, {len(sealed)} bytes.")
    say("   Each recipient certificate was checked first, revocation against the CA's CRL.")

    opened = smimekit.decrypt_verify(sealed, bob_key, bob, trust=[ca], revocation=revocation,
                                     aia=False)
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

    opened_carol = smimekit.decrypt_verify(sealed, carol_key, carol, trust=[ca],
                                           revocation=revocation, aia=False)
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
        private_dir(workdir)  # it holds private keys
        return 0 if run(workdir) else 1
    with tempfile.TemporaryDirectory(prefix="smimekit-demo-") as tmp:
        return 0 if run(Path(tmp)) else 1


if __name__ == "__main__":
    sys.exit(main())
