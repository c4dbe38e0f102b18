#!/usr/bin/env python3
"""Post-quantum S/MIME beside the classical algorithms: time and size.

    .venv/bin/python benchmarks/bench_pq.py [--sizes 10k,1m] [--repeats N] [--quick]
                                            [--json FILE]

For 10 KB and 1 MB messages it measures, in one process and on the same bytes:

* sign and verify through the library API (``smimekit.sign`` / ``smimekit.verify``, signed
  attributes, chain validation against the bench root, no revocation fetch) with ML-DSA-65,
  RSA-3072 and P-256 signers;
* encrypt and decrypt (AES-256-GCM, one recipient) with ML-KEM-768, RSA-3072 (OAEP) and
  P-256 (ECDH) recipients;
* for each, the primitive floor in the same run: the bare ``cryptography`` operations the
  message needs (the digest of the content and one signature over the signed attributes; the
  AES-GCM pass, the key establishment and the key wrap; base64 of the result), so the ratio
  API / floor says what smimekit's own work costs;
* the size each algorithm adds to a message: the SignerInfo and the signer's certificate, and
  one RecipientInfo (per recipient), with ML-KEM-1024 beside them.

``openssl cms`` is not a baseline here: the Debian openssl (3.0) has no ML-KEM or ML-DSA. It
prints figures and asserts nothing about time.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchinfo import cpu_model, git_revision
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, mldsa, mlkem, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF
from cryptography.hazmat.primitives.keywrap import aes_key_wrap
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import smimekit
from smimekit.cms.algorithms import Digest

KB = 1024
MB = 1024 * KB
SIGNERS = ("ml-dsa-65", "rsa-3072", "p-256")
RECIPIENTS = ("ml-kem-768", "rsa-3072", "p-256")
SIZE_ONLY = ("ml-kem-1024", "ml-dsa-87", "ml-dsa-44")


def parse_size(text: str) -> int:
    text = text.strip().lower().removesuffix("b")
    units = {"k": KB, "m": MB}
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def size_label(n: int) -> str:
    return f"{n // MB} MB" if n >= MB else f"{n // KB} KB"


# -- a throwaway PKI: a P-256 root, leaves of every kind -------------------------------------


def new_key(kind: str) -> Any:
    makers: dict[str, Callable[[], Any]] = {
        "ml-dsa-44": mldsa.MLDSA44PrivateKey.generate,
        "ml-dsa-65": mldsa.MLDSA65PrivateKey.generate,
        "ml-dsa-87": mldsa.MLDSA87PrivateKey.generate,
        "ml-kem-768": mlkem.MLKEM768PrivateKey.generate,
        "ml-kem-1024": mlkem.MLKEM1024PrivateKey.generate,
        "rsa-3072": lambda: rsa.generate_private_key(65537, 3072),
        "p-256": lambda: ec.generate_private_key(ec.SECP256R1()),
    }
    return makers[kind]()


class Pki:
    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench PQ root")])
        self.root = (
            self._builder(self.root_name, self.root_key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .sign(self.root_key, hashes.SHA256())
        )

    def _builder(self, subject: x509.Name, public: Any) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(self.root_name)
            .public_key(public).serial_number(x509.random_serial_number())
            .not_valid_before(self.now).not_valid_after(self.now + dt.timedelta(days=30))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        )

    def leaf(self, kind: str, signing: bool) -> tuple[Any, x509.Certificate]:
        key = new_key(kind)
        email = f"{kind}@bench.example"
        is_rsa = kind.startswith("rsa")
        is_kem = kind.startswith("ml-kem")
        usage = x509.KeyUsage(
            digital_signature=signing, content_commitment=False,
            key_encipherment=not signing and (is_rsa or is_kem), data_encipherment=False,
            key_agreement=not signing and not is_rsa and not is_kem, key_cert_sign=False,
            crl_sign=False, encipher_only=False, decipher_only=False,
        )
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, kind),
                             x509.NameAttribute(NameOID.EMAIL_ADDRESS, email)])
        cert = (
            self._builder(subject, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]),
                           critical=False)
            .sign(self.root_key, hashes.SHA256())
        )
        return key, cert


def message(size: int, sender: str) -> bytes:
    head = (f"From: {sender}\r\nTo: someone@bench.example\r\nSubject: bench\r\n"
            "Date: Mon, 07 Dec 2026 01:00:00 +0000\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=us-ascii\r\n\r\n").encode()
    line = b"The quick brown fox jumps over the lazy dog, post-quantum edition.\r\n"
    body = (line * (size // len(line) + 1))[: max(0, size - len(head))]
    return head + body


# -- timing ---------------------------------------------------------------------------------


def best(func: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


def digest_for(kind: str) -> Digest:
    # RFC 9882 section 3.3: SHA-512 with ML-DSA; the classical ones keep our default.
    return Digest.SHA512 if kind.startswith("ml-dsa") else Digest.SHA256


def sign_floor(kind: str, key: Any, content: bytes) -> Callable[[], object]:
    attrs = os.urandom(200)  # the size of our signed attributes, DER

    def run() -> object:
        if kind.startswith("ml-dsa"):
            hashlib.sha512(content).digest()
            sig = key.sign(attrs)
        elif kind.startswith("rsa"):
            hashlib.sha256(content).digest()
            sig = key.sign(attrs, padding.PKCS1v15(), hashes.SHA256())
        else:
            hashlib.sha256(content).digest()
            sig = key.sign(attrs, ec.ECDSA(hashes.SHA256()))
        return base64.encodebytes(sig)

    return run


def verify_floor(kind: str, key: Any, content: bytes) -> Callable[[], object]:
    attrs = os.urandom(200)
    public = key.public_key()
    if kind.startswith("ml-dsa"):
        sig = key.sign(attrs)
    elif kind.startswith("rsa"):
        sig = key.sign(attrs, padding.PKCS1v15(), hashes.SHA256())
    else:
        sig = key.sign(attrs, ec.ECDSA(hashes.SHA256()))
    encoded = base64.encodebytes(content)

    def run() -> object:
        base64.decodebytes(encoded)
        if kind.startswith("ml-dsa"):
            hashlib.sha512(content).digest()
            public.verify(sig, attrs)
        elif kind.startswith("rsa"):
            hashlib.sha256(content).digest()
            public.verify(sig, attrs, padding.PKCS1v15(), hashes.SHA256())
        else:
            hashlib.sha256(content).digest()
            public.verify(sig, attrs, ec.ECDSA(hashes.SHA256()))
        return None

    return run


def _establish(kind: str, public: Any, cek: bytes) -> bytes:
    if kind.startswith("ml-kem"):
        secret, ct = public.encapsulate()
        kek = HKDF(hashes.SHA256(), 32, None, b"bench").derive(secret)
        return ct + aes_key_wrap(kek, cek)
    if kind.startswith("rsa"):
        return bytes(public.encrypt(cek, padding.OAEP(padding.MGF1(hashes.SHA256()),
                                                      hashes.SHA256(), None)))
    eph = ec.generate_private_key(ec.SECP256R1())
    shared = eph.exchange(ec.ECDH(), public)
    kek = X963KDF(hashes.SHA256(), 32, b"bench").derive(shared)
    return aes_key_wrap(kek, cek)


def encrypt_floor(kind: str, key: Any, content: bytes) -> Callable[[], object]:
    public = key.public_key()

    def run() -> object:
        cek = AESGCM.generate_key(256)
        wrapped = _establish(kind, public, cek)
        sealed = AESGCM(cek).encrypt(os.urandom(12), content, None)
        return base64.encodebytes(wrapped + sealed)

    return run


def decrypt_floor(kind: str, key: Any, content: bytes) -> Callable[[], object]:
    cek = AESGCM.generate_key(256)
    nonce = os.urandom(12)
    encoded = base64.encodebytes(AESGCM(cek).encrypt(nonce, content, None))
    public = key.public_key()
    if kind.startswith("ml-kem"):
        _, ct = public.encapsulate()
    elif kind.startswith("rsa"):
        oaep = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)
        ct = public.encrypt(cek, oaep)
    else:
        eph = ec.generate_private_key(ec.SECP256R1())
        ct = b""

    def run() -> object:
        sealed = base64.decodebytes(encoded)
        if kind.startswith("ml-kem"):
            key.decapsulate(ct)
        elif kind.startswith("rsa"):
            key.decrypt(ct, oaep)
        else:
            key.exchange(ec.ECDH(), eph.public_key())
        return AESGCM(cek).decrypt(nonce, sealed, None)

    return run


# -- sizes ----------------------------------------------------------------------------------


def recipient_info_size(der: bytes) -> int:
    """The DER length of the first RecipientInfo of an enveloped message's CMS."""
    from asn1crypto import cms

    info = cms.ContentInfo.load(der)
    recipients = info["content"]["recipient_infos"]
    return len(recipients[0].dump())


def signer_info_size(der: bytes) -> int:
    from asn1crypto import cms

    info = cms.ContentInfo.load(der)
    return len(info["content"]["signer_infos"][0].dump())


def cms_of(mime: bytes) -> bytes:
    """The CMS DER inside an application/pkcs7-mime message of ours."""
    _, _, body = mime.partition(b"\r\n\r\n")
    return base64.b64decode(b"".join(body.split()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10k,1m")
    parser.add_argument("--repeats", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="10 KB only, 2 repeats")
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args(argv)
    sizes = [10 * KB] if args.quick else [parse_size(s) for s in args.sizes.split(",")]

    pki = Pki()
    signers = {kind: pki.leaf(kind, signing=True) for kind in SIGNERS + SIZE_ONLY[1:]}
    recipients = {kind: pki.leaf(kind, signing=False) for kind in RECIPIENTS + SIZE_ONLY[:1]}
    rows: list[dict[str, Any]] = []
    print(f"# bench_pq  {cpu_model()}  python {platform.python_version()}  "
          f"rev {git_revision()}")
    print(f"{'operation':<10} {'algorithm':<11} {'size':>6} {'api ms':>9} {'floor ms':>9} "
          f"{'ratio':>6}")
    for size in sizes:
        repeats = args.repeats or (2 if args.quick else (20 if size < MB else 5))
        for kind in SIGNERS:
            rows += run_ops(signing_ops(kind, *signers[kind], size, pki.root), kind, size,
                            repeats)
        for kind in RECIPIENTS:
            rows += run_ops(encryption_ops(kind, *recipients[kind], size), kind, size, repeats)

    print("\n# bytes added per signer (SignerInfo + its certificate) and per recipient "
          "(RecipientInfo)")
    sizes_out: dict[str, dict[str, int]] = {}
    small = message(1 * KB, "sender@bench.example")
    for kind in SIGNERS + SIZE_ONLY[1:]:
        key, cert = signers[kind]
        der = cms_of(smimekit.sign(small, key, cert, digest=digest_for(kind), opaque=True))
        from cryptography.hazmat.primitives.serialization import Encoding

        sizes_out[kind] = {"signer_info": signer_info_size(der),
                           "certificate": len(cert.public_bytes(Encoding.DER))}
        print(f"signer    {kind:<11} SignerInfo {sizes_out[kind]['signer_info']:>6} B   "
              f"certificate {sizes_out[kind]['certificate']:>6} B")
    for kind in RECIPIENTS + SIZE_ONLY[:1]:
        key, cert = recipients[kind]
        der = cms_of(smimekit.encrypt(small, [cert], check_recipients=False, oaep=True))
        sizes_out[kind] = {"recipient_info": recipient_info_size(der)}
        print(f"recipient {kind:<11} RecipientInfo {sizes_out[kind]['recipient_info']:>6} B")

    if args.json_path:
        Path(args.json_path).write_text(json.dumps(
            {"cpu": cpu_model(), "revision": git_revision(), "rows": rows,
             "sizes": sizes_out}, indent=2))
    return 0


Ops = list[tuple[str, Callable[[], object], Callable[[], object]]]


def signing_ops(kind: str, key: Any, cert: x509.Certificate, size: int,
                root: x509.Certificate) -> Ops:
    sender = cert.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)[0].value
    msg = message(size, str(sender))
    content = msg.split(b"\r\n\r\n", 1)[1]
    signed = smimekit.sign(msg, key, cert, digest=digest_for(kind))
    return [
        ("sign", lambda: smimekit.sign(msg, key, cert, digest=digest_for(kind)),
         sign_floor(kind, key, content)),
        ("verify", lambda: smimekit.verify(signed, trust=[root], revocation=None),
         verify_floor(kind, key, content)),
    ]


def encryption_ops(kind: str, key: Any, cert: x509.Certificate, size: int) -> Ops:
    msg = message(size, "sender@bench.example")
    content = msg.split(b"\r\n\r\n", 1)[1]
    sealed = smimekit.encrypt(msg, [cert], check_recipients=False, oaep=True)
    return [
        ("encrypt", lambda: smimekit.encrypt(msg, [cert], check_recipients=False, oaep=True),
         encrypt_floor(kind, key, content)),
        ("decrypt", lambda: smimekit.decrypt(sealed, key, cert),
         decrypt_floor(kind, key, content)),
    ]


def run_ops(ops: Ops, kind: str, size: int, repeats: int) -> list[dict[str, Any]]:
    out = []
    for name, api_call, floor_call in ops:
        api_s = best(api_call, repeats)
        floor_s = best(floor_call, repeats)
        ratio = api_s / floor_s if floor_s else float("inf")
        print(f"{name:<10} {kind:<11} {size_label(size):>6} {api_s * 1e3:>9.2f} "
              f"{floor_s * 1e3:>9.2f} {ratio:>6.2f}")
        out.append({"operation": name, "algorithm": kind, "size": size,
                    "api_seconds": api_s, "floor_seconds": floor_s, "ratio": ratio})
    return out


if __name__ == "__main__":
    raise SystemExit(main())
