#!/usr/bin/env python3
"""Benchmark smimekit's message operations beside ``openssl cms`` and the primitive floor.

    .venv/bin/python benchmarks/bench_messages.py [--sizes 10k,1m,50m] [--quick]
                                                  [--repeats N] [--profile DIR] [--json FILE]

For every message size and operation (sign, verify, encrypt to 3 recipients with AES-256-GCM
and AES-256-CBC, decrypt) it measures, in the same run and on the same files:

* smimekit through the library API, each operation in a fresh subprocess (so the peak memory
  belongs to that operation alone), best wall time of N repeats;
* ``openssl cms`` doing the same work (startup included; ``openssl version`` is timed
  separately so small-message ratios can be read honestly);
* the primitive floor: the bare ``cryptography`` operations on the same bytes (hash + one
  RSA signature, AES + the 3 key transports / ECDH + key wraps, ...), with and without the
  base64 step the S/MIME format needs;
* the ``smimekit`` CLI end to end, once per size, for context.

It prints figures and never asserts anything about wall-clock time: the targets (at the
largest size: within 1.2x openssl, within 1.5x the floor, peak memory under 3x the message)
are marked as met or not, nothing more.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchinfo import cpu_model, git_revision
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF
from cryptography.hazmat.primitives.keywrap import aes_key_wrap
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HERE = Path(__file__).resolve()
MB = 1024 * 1024

OPERATIONS = ("sign", "verify", "encrypt-gcm", "encrypt-cbc", "decrypt-gcm", "decrypt-cbc")
# Recipients: (file stem, key kind, X9.63 KDF hash smimekit uses for that curve)
RECIPIENTS = (("r1", "rsa2048", None), ("r2", "p256", "sha256"), ("r3", "p384", "sha384"))
FROM = "Alice Sender <sender@example.org>"
TO = "Bob <r1@example.org>, Carol <r2@example.org>, Dan <r3@example.org>"
SUBJECT = "smimekit benchmark"

TARGET_OPENSSL = 1.2
TARGET_FLOOR = 1.5
TARGET_MEMORY = 3.0


# -- sizes and repeats ----------------------------------------------------------------------


def parse_size(text: str) -> int:
    text = text.strip().lower().removesuffix("b")
    units = {"k": 1024, "m": MB, "g": 1024 * MB}
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def size_label(n: int) -> str:
    if n >= MB and n % MB == 0:
        return f"{n // MB} MB"
    if n >= 1024 and n % 1024 == 0:
        return f"{n // 1024} KB"
    return f"{n} B"


def default_repeats(size: int, quick: bool) -> int:
    if quick:
        return 3 if size < MB else 2
    if size <= 100 * 1024:
        return 15
    return 5


# -- throwaway PKI --------------------------------------------------------------------------


def _key(kind: str) -> Any:
    if kind == "rsa2048":
        return rsa.generate_private_key(65537, 2048)
    if kind == "rsa3072":
        return rsa.generate_private_key(65537, 3072)
    if kind == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "p384":
        return ec.generate_private_key(ec.SECP384R1())
    raise ValueError(kind)


def _write_key(path: Path, key: Any) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def make_pki(d: Path) -> None:
    """CA (RSA-2048) -> signer (RSA-2048) and recipients r1 (RSA-2048), r2 (P-256), r3 (P-384)."""
    now = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    later = now + dt.timedelta(days=30)
    ca_key = _key("rsa2048")
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "smimekit bench CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(later)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                       critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (d / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    _write_key(d / "ca.key", ca_key)

    def leaf(stem: str, kind: str, email: str, signing: bool) -> None:
        key = _key(kind)
        is_rsa = isinstance(key, rsa.RSAPrivateKey)
        usage = x509.KeyUsage(
            digital_signature=signing, content_commitment=False,
            key_encipherment=not signing and is_rsa, data_encipherment=False,
            key_agreement=not signing and not is_rsa, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False,
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, stem),
                                     x509.NameAttribute(NameOID.EMAIL_ADDRESS, email)]))
            .issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(later)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        (d / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(d / f"{stem}.key", key)

    leaf("signer", "rsa2048", "sender@example.org", signing=True)
    for stem, kind, _kdf in RECIPIENTS:
        leaf(stem, kind, f"{stem}@example.org", signing=False)


# -- messages -------------------------------------------------------------------------------

_WORDS = (b"lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
          b"incididunt ut labore et dolore magna aliqua Ut enim ad minim veniam quis nostrud "
          b"exercitation ullamco laboris nisi aliquip ex ea commodo consequat").split()


def body_text(size: int) -> bytes:
    """7-bit ASCII text of exactly ``size`` bytes in CRLF lines of at most 78 characters."""
    lines: list[bytes] = []
    total = 0
    i = 0
    while total < size:
        line = b""
        while len(line) < 64:
            line += _WORDS[(i * 7 + len(line)) % len(_WORDS)] + b" "
            i += 1
        line = line.rstrip() + b"\r\n"
        lines.append(line)
        total += len(line)
    out = b"".join(lines)[:size]
    if size >= 2:
        out = out[:-2] + b"\r\n"
    return out


def entity_bytes(size: int) -> bytes:
    """The MIME entity the signature/encryption protects (content headers + body)."""
    head = b"Content-Type: text/plain; charset=us-ascii\r\n\r\n"
    return head + body_text(max(size - len(head) - 120, 16))


def message_bytes(entity: bytes) -> bytes:
    """A complete RFC 5322 message (CRLF) around ``entity``."""
    headers = (
        f"From: {FROM}\r\nTo: {TO}\r\nSubject: {SUBJECT}\r\n"
        f"Date: Mon, 01 Jan 2024 12:00:00 +0000\r\nMessage-ID: <bench@example.org>\r\n"
        "MIME-Version: 1.0\r\n"
    ).encode()
    return headers + entity


# -- worker: one operation in a fresh process -----------------------------------------------


def _status(name: str) -> int | None:
    """A /proc/self/status memory field (VmRSS, VmHWM) in bytes (Linux), or None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _maxrss() -> int:
    """Peak RSS of this process in bytes.

    VmHWM belongs to this process image; ru_maxrss would also count the parent's RSS, which
    Linux carries over into a child across fork + exec.
    """
    hwm = _status("VmHWM")
    if hwm is not None:
        return hwm
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _load_material(d: Path) -> dict[str, Any]:
    import smimekit

    def key(stem: str) -> Any:
        return smimekit.load_private_key((d / f"{stem}.key").read_bytes())

    def cert(stem: str) -> x509.Certificate:
        return smimekit.load_certificates((d / f"{stem}.pem").read_bytes())[0]

    return {
        "signer_key": key("signer"), "signer": cert("signer"), "ca": cert("ca"),
        "recips": [cert(stem) for stem, _k, _h in RECIPIENTS],
        "r1_key": key("r1"), "r1": cert("r1"),
    }


def smimekit_op(op: str, m: dict[str, Any]) -> Callable[[bytes], Any]:
    import smimekit

    if op == "sign":
        return lambda data: smimekit.sign(data, m["signer_key"], m["signer"])
    if op == "verify":
        return lambda data: smimekit.verify(data, trust=[m["ca"]])
    if op == "encrypt-gcm":
        return lambda data: smimekit.encrypt(data, m["recips"])
    if op == "encrypt-cbc":
        return lambda data: smimekit.encrypt(data, m["recips"], cipher=smimekit.Cipher.AES256_CBC)
    if op in ("decrypt-gcm", "decrypt-cbc"):
        return lambda data: smimekit.decrypt(data, m["r1_key"], m["r1"])
    raise ValueError(op)


def floor_op(op: str, m: dict[str, Any], content: bytes, wire_b64: int
             ) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """(bare primitives, base64 step) on ``content``; ``wire_b64`` bytes get base64'd.

    sign:    SHA-256 of the content + one RSA-2048 PKCS#1 v1.5 signature
    verify:  SHA-256 of the content + one RSA verification (+ the CA's over the signer cert)
    encrypt: AES-256 (GCM or CBC) over the content + RSA key transport + 2x (ephemeral ECDH,
             X9.63 KDF, AES key wrap)
    decrypt: AES-256 (GCM or CBC) decryption + one RSA-2048 private-key decryption
    base64:  encoding (sign/encrypt) or decoding (verify/decrypt) of the base64 body the
             S/MIME message carries (the signature, or the whole CMS blob), without line
             breaks.
    """
    signer_key: rsa.RSAPrivateKey = m["signer_key"]
    signer: x509.Certificate = m["signer"]
    ca: x509.Certificate = m["ca"]
    key = os.urandom(32)
    nonce = os.urandom(12)
    iv = os.urandom(16)
    cek = os.urandom(32)
    blob = os.urandom(wire_b64)
    b64 = base64.b64encode(blob)

    def sha256(data: bytes) -> bytes:
        h = hashes.Hash(hashes.SHA256())
        h.update(data)
        return h.finalize()

    def key_transports() -> None:
        rsa_pub = m["recips"][0].public_key()
        rsa_pub.encrypt(cek, padding.PKCS1v15())
        for cert, (_stem, _kind, kdf) in zip(m["recips"][1:], RECIPIENTS[1:], strict=True):
            pub = cert.public_key()
            eph = ec.generate_private_key(pub.curve)
            secret = eph.exchange(ec.ECDH(), pub)
            h = hashes.SHA256() if kdf == "sha256" else hashes.SHA384()
            kek = X963KDF(algorithm=h, length=32, sharedinfo=b"\x00" * 24).derive(secret)
            aes_key_wrap(kek, cek)

    prehashed = utils.Prehashed(hashes.SHA256())
    pad_len = 16 - len(content) % 16
    pad = bytes([pad_len]) * pad_len

    if op == "sign":
        def bare() -> Any:
            return signer_key.sign(sha256(content), padding.PKCS1v15(), prehashed)
        return bare, lambda: base64.b64encode(blob)
    if op == "verify":
        sig = signer_key.sign(content, padding.PKCS1v15(), hashes.SHA256())

        def bare_v() -> Any:
            signer.verify_directly_issued_by(ca)
            signer.public_key().verify(sig, sha256(content), padding.PKCS1v15(), prehashed)
        return bare_v, lambda: base64.b64decode(b64)
    if op == "encrypt-gcm":
        def bare_eg() -> Any:
            key_transports()
            return AESGCM(key).encrypt(nonce, content, None)
        return bare_eg, lambda: base64.b64encode(blob)
    if op == "encrypt-cbc":
        def bare_ec() -> Any:
            key_transports()
            enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
            return enc.update(content), enc.update(pad), enc.finalize()
        return bare_ec, lambda: base64.b64encode(blob)
    rsa_key: rsa.RSAPrivateKey = m["r1_key"]
    wrapped = m["r1"].public_key().encrypt(cek, padding.PKCS1v15())
    if op == "decrypt-gcm":
        sealed = AESGCM(key).encrypt(nonce, content, None)

        def bare_dg() -> Any:
            rsa_key.decrypt(wrapped, padding.PKCS1v15())
            return AESGCM(key).decrypt(nonce, sealed, None)
        return bare_dg, lambda: base64.b64decode(b64)
    if op == "decrypt-cbc":
        enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
        ct = enc.update(content) + enc.update(pad) + enc.finalize()

        def bare_dc() -> Any:
            rsa_key.decrypt(wrapped, padding.PKCS1v15())
            dec = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
            return dec.update(ct), dec.finalize()
        return bare_dc, lambda: base64.b64decode(b64)
    raise ValueError(op)


def _best_of(func: Callable[[], Any], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = func()
        times.append(time.perf_counter() - t0)
        del out
    return times


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one smimekit operation ``repeats`` times on one input file; report JSON."""
    d = Path(spec["dir"])
    op = spec["op"]
    repeats = int(spec["repeats"])
    m = _load_material(d)
    run = smimekit_op(op, m)
    # Warm up on a tiny input of the same kind so lazy imports and caches are paid for.
    warm = (d / spec["warm_input"]).read_bytes()
    run(warm)
    del warm
    # Baseline: the interpreter, smimekit and the keys, before the message is read.
    if _reset_peak():
        baseline = _status("VmRSS") or _maxrss()
    else:
        baseline = _maxrss()
    data = (d / spec["input"]).read_bytes()
    input_len = len(data)
    after_read = _maxrss()

    # The peak is taken over the first call alone: later repeats only add allocator
    # fragmentation to the high-water mark (reported apart as rss_peak_all_repeats).
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        out = run(data)
        times.append(time.perf_counter() - t0)
        del out
        if i == 0:
            peak = _maxrss()
    peak_all = _maxrss()

    profile_out = spec.get("profile")
    if profile_out:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
        out = run(data)
        prof.disable()
        del out
        prof.dump_stats(profile_out)

    tracemalloc.start()
    out = run(data)
    _cur, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    out_len = len(out.content) if hasattr(out, "content") else len(out)
    del out

    content = (d / spec["content"]).read_bytes()
    bare, b64 = floor_op(op, m, content, int(spec["wire_b64"]))
    floor_repeats = max(repeats, 5)
    bare_t = _best_of(bare, floor_repeats)
    b64_t = _best_of(b64, floor_repeats)
    return {
        "times": times,
        "rss_baseline": baseline,
        "rss_input": after_read - baseline,
        "rss_peak_delta": peak - baseline,
        "rss_peak_all_repeats": peak_all - baseline,
        "tracemalloc_peak": traced_peak,
        "input_len": input_len,
        "output_len": out_len,
        "floor": min(bare_t),
        "floor_b64": min(bare_t) + min(b64_t),
        "b64": min(b64_t),
    }


# -- external commands ----------------------------------------------------------------------


@dataclass
class Proc:
    seconds: float
    returncode: int
    stderr: bytes


def run_cmd(cmd: list[str], cwd: Path) -> Proc:
    """Run ``cmd`` and time it (wall clock, process start included)."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          check=False)
    return Proc(time.perf_counter() - t0, proc.returncode, proc.stderr)


TIME = "/usr/bin/time"


def peak_rss(cmd: list[str], cwd: Path) -> int | None:
    """Max RSS of ``cmd`` (bytes) measured by GNU time, whose own child starts small.

    A direct child of this (large) Python process would inherit its peak RSS across
    fork + exec, so ``os.wait4`` cannot be used for this.
    """
    if not os.access(TIME, os.X_OK):
        return None
    with tempfile.NamedTemporaryFile(mode="r", suffix=".time") as f:
        res = run_cmd([TIME, "-f", "%M", "-o", f.name, *cmd], cwd)
        if res.returncode != 0:
            return None
        text = Path(f.name).read_text().strip().splitlines()
    try:
        return int(text[-1]) * 1024
    except (IndexError, ValueError):
        return None


def checked(cmd: list[str], cwd: Path) -> Proc:
    res = run_cmd(cmd, cwd)
    if res.returncode != 0:
        raise SystemExit(f"command failed ({res.returncode}): {' '.join(cmd)}\n"
                         f"{res.stderr.decode(errors='replace')}")
    return res


def openssl_cmd(op: str, tag: str) -> list[str]:
    """``openssl cms`` doing what smimekit does for ``op`` on the files of size ``tag``.

    Sign/encrypt read the MIME entity and add From/To/Subject, producing a complete S/MIME
    message like smimekit. Text (canonicalising) mode, as a user would run it.
    """
    head = ["-from", FROM, "-to", TO, "-subject", SUBJECT]
    if op == "sign":
        return ["openssl", "cms", "-sign", "-in", f"entity-{tag}.txt", "-signer", "signer.pem",
                "-inkey", "signer.key", "-md", "sha256", "-out", f"ossl-signed-{tag}.eml",
                *head]
    if op == "verify":
        return ["openssl", "cms", "-verify", "-in", f"signed-{tag}.eml", "-CAfile", "ca.pem",
                "-out", f"ossl-verified-{tag}.txt"]
    if op.startswith("encrypt-"):
        cipher = "-aes-256-gcm" if op.endswith("gcm") else "-aes-256-cbc"
        cmd = ["openssl", "cms", "-encrypt", "-in", f"entity-{tag}.txt", cipher,
               "-out", f"ossl-{op}-{tag}.eml", *head]
        for stem, _kind, kdf in RECIPIENTS:
            cmd += ["-recip", f"{stem}.pem"]
            if kdf:
                cmd += ["-keyopt", f"ecdh_kdf_md:{kdf}"]
        return cmd
    if op.startswith("decrypt-"):
        cipher = op.split("-")[1]
        return ["openssl", "cms", "-decrypt", "-in", f"enc-{cipher}-{tag}.eml",
                "-inkey", "r1.key", "-recip", "r1.pem", "-out", f"ossl-dec-{cipher}-{tag}.txt"]
    raise ValueError(op)


def cli_cmd(op: str, tag: str) -> list[str]:
    exe = Path(sys.executable).with_name("smimekit")
    base = [str(exe)] if exe.exists() else [sys.executable, "-m", "smimekit.cli.main"]
    if op == "sign":
        return [*base, "sign", "--key", "signer.key", "--cert", "signer.pem",
                f"msg-{tag}.eml", "-o", f"cli-signed-{tag}.eml"]
    if op == "verify":
        return [*base, "verify", "--trust", "ca.pem", f"signed-{tag}.eml",
                "-o", f"cli-verified-{tag}.eml"]
    if op.startswith("encrypt-"):
        cipher = "aes256-gcm" if op.endswith("gcm") else "aes256-cbc"
        return [*base, "encrypt", "--to", "r1.pem", "--to", "r2.pem", "--to", "r3.pem",
                "--cipher", cipher, f"msg-{tag}.eml", "-o", f"cli-{op}-{tag}.eml"]
    if op.startswith("decrypt-"):
        cipher = op.split("-")[1]
        return [*base, "decrypt", "--key", "r1.key", "--cert", "r1.pem",
                f"enc-{cipher}-{tag}.eml", "-o", f"cli-dec-{cipher}-{tag}.eml"]
    raise ValueError(op)


# -- orchestration --------------------------------------------------------------------------


@dataclass
class Row:
    size: int
    op: str
    repeats: int
    smimekit_s: float
    smimekit_median_s: float
    openssl_s: float
    openssl_median_s: float
    floor_s: float
    floor_b64_s: float
    peak_bytes: int
    tracemalloc_bytes: int
    input_bytes: int
    openssl_rss: int | None
    cli_s: float | None = None
    cli_rss: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def vs_openssl(self) -> float:
        return self.smimekit_s / self.openssl_s

    @property
    def vs_floor(self) -> float:
        return self.smimekit_s / self.floor_b64_s

    @property
    def mem_ratio(self) -> float:
        return self.peak_bytes / self.size


def input_for(op: str, tag: str) -> str:
    if op == "verify":
        return f"signed-{tag}.eml"
    if op.startswith("decrypt-"):
        return f"enc-{op.split('-')[1]}-{tag}.eml"
    return f"msg-{tag}.eml"


def prepare_inputs(d: Path, sizes: list[int]) -> dict[int, dict[str, int]]:
    """Messages, and smimekit-made signed/encrypted inputs for verify and decrypt."""
    import smimekit

    m = _load_material(d)
    wire: dict[int, dict[str, int]] = {}
    for size in [1024, *sizes]:
        tag = str(size)
        entity = entity_bytes(size)
        msg = message_bytes(entity)
        (d / f"entity-{tag}.txt").write_bytes(entity)
        (d / f"msg-{tag}.eml").write_bytes(msg)
        for mode in ("clear", "cipher"):  # what openssl gives back: the RFC 9788 payload
            (d / f"payload-{mode}-{tag}.txt").write_bytes(_payload(msg, mode))
        signed = smimekit.sign(msg, m["signer_key"], m["signer"])
        (d / f"signed-{tag}.eml").write_bytes(signed)
        del signed
        lens = {}
        for cipher, c in (("gcm", smimekit.Cipher.AES256_GCM),
                          ("cbc", smimekit.Cipher.AES256_CBC)):
            enc = smimekit.encrypt(msg, m["recips"], cipher=c)
            (d / f"enc-{cipher}-{tag}.eml").write_bytes(enc)
            # Length of the base64 payload's DER: what the floor must base64-(de|en)code.
            body = len(enc) - enc.find(b"\r\n\r\n") - 4
            lens[cipher] = body * 57 // 78
            del enc
        lens["sig"] = 2048
        wire[size] = lens
        del msg, entity
    return wire


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, str(HERE), "--worker", json.dumps(spec)],
                          capture_output=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"worker {spec['op']} failed:\n{proc.stderr.decode(errors='replace')}")
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def time_openssl(op: str, tag: str, d: Path, repeats: int) -> tuple[list[float], int | None]:
    times = [checked(openssl_cmd(op, tag), d).seconds for _ in range(repeats)]
    return times, peak_rss(openssl_cmd(op, tag), d)


def _payload(msg: bytes, mode: str) -> bytes:
    """The entity smimekit's recipes sign (``clear``) or encrypt (``cipher``): with header
    protection (RFC 9788, the default) the message's header fields are copied into it."""
    from smimekit.smime.hp import protect
    from smimekit.smime.message import prepare_chunks

    outer, chunks = prepare_chunks(msg)
    return b"".join(bytes(c) for c in protect(outer, chunks, mode=mode).entity)


def check_outputs(d: Path, tag: str) -> None:
    """Sanity: openssl's outputs are what the work asked for (not a timing assertion)."""
    sealed = (d / f"payload-cipher-{tag}.txt").read_bytes()
    for cipher in ("gcm", "cbc"):
        if (d / f"ossl-dec-{cipher}-{tag}.txt").read_bytes() != sealed:
            raise SystemExit(f"openssl decrypt-{cipher} output differs from the payload")
    signed = (d / f"payload-clear-{tag}.txt").read_bytes()
    if (d / f"ossl-verified-{tag}.txt").read_bytes().replace(b"\r\n", b"\n") != \
            signed.replace(b"\r\n", b"\n"):
        raise SystemExit("openssl verify output differs from the signed payload")


def machine_info() -> dict[str, str]:
    cpu = cpu_model()
    ossl = subprocess.run(["openssl", "version"], capture_output=True, text=True, check=False)
    import cryptography

    import smimekit

    rev = git_revision()
    return {
        "revision": rev or "?",
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "openssl": ossl.stdout.strip(),
        "python": platform.python_version(),
        "cryptography": cryptography.__version__,
        "smimekit": getattr(smimekit, "__version__", "?"),
        "platform": platform.platform(),
    }


def fmt_s(x: float | None) -> str:
    if x is None:
        return "-"
    if x < 0.01:
        return f"{x * 1000:.2f}ms"
    return f"{x:.3f}s"


def fmt_mb(x: int | None) -> str:
    return "-" if x is None else f"{x / MB:.1f}"


def render(rows: list[Row], startup: dict[str, float], info: dict[str, str], largest: int
           ) -> str:
    out = []
    out.append(f"smimekit {info['smimekit']} ({info['revision']}); {info['nproc']} cores, "
               f"{info['cpu']}; {info['openssl']}; Python {info['python']}; "
               f"cryptography {info['cryptography']}")
    out.append(f"process start (in the openssl and CLI times, not in the API times): "
               f"openssl version {fmt_s(startup['openssl'])}, "
               f"smimekit --version {fmt_s(startup['cli'])}")
    out.append("")
    out.append("| size | operation | smimekit | openssl | x openssl | floor | floor+b64 | x floor"
               " | peak MB | peak/size | traced MB | openssl MB | CLI |")
    out.append("|" + "---|" * 13)
    for r in rows:
        ratio = f"{r.mem_ratio:.2f}" if r.size >= MB else "-"
        out.append(
            f"| {size_label(r.size)} | {r.op} | {fmt_s(r.smimekit_s)} | {fmt_s(r.openssl_s)}"
            f" | {r.vs_openssl:.2f} | {fmt_s(r.floor_s)} | {fmt_s(r.floor_b64_s)}"
            f" | {r.vs_floor:.2f} | {r.peak_bytes / MB:.1f} | {ratio}"
            f" | {r.tracemalloc_bytes / MB:.1f} | {fmt_mb(r.openssl_rss)} | {fmt_s(r.cli_s)} |"
        )
    big = [r for r in rows if r.size == largest]
    if big:
        out.append("")
        out.append(f"targets at {size_label(largest)}: time <= {TARGET_OPENSSL}x openssl, "
                   f"<= {TARGET_FLOOR}x floor+b64; peak < {TARGET_MEMORY}x the message")
        for r in big:
            marks = [
                ("openssl", r.vs_openssl <= TARGET_OPENSSL, f"{r.vs_openssl:.2f}x"),
                ("floor", r.vs_floor <= TARGET_FLOOR, f"{r.vs_floor:.2f}x"),
                ("memory", r.mem_ratio < TARGET_MEMORY, f"{r.mem_ratio:.2f}x"),
            ]
            text = ", ".join(f"{name} {val} {'met' if ok else 'MISSED'}"
                             for name, ok, val in marks)
            out.append(f"  {r.op:12s} {text}")
    out.append("")
    out.append("Times: best of N runs (N in --json). smimekit = library call in a warmed-up"
               " process; openssl = whole command, process start included.")
    out.append("floor = bare cryptography primitives on the same bytes; floor+b64 adds base64 of"
               " the S/MIME body (the whole CMS blob for encrypt/decrypt).")
    out.append("peak MB = peak RSS of the first call above the process baseline, the input"
               " message included; traced MB = tracemalloc peak of one call (Python allocations,"
               " input excluded).")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10k,1m,50m",
                        help="comma-separated message sizes (k/m suffixes, 1024-based)")
    parser.add_argument("--quick", action="store_true",
                        help="10k and 1m only, few repeats, no CLI runs (smoke test)")
    parser.add_argument("--repeats", type=int, help="override the repeat count")
    parser.add_argument("--ops", default=",".join(OPERATIONS), help="operations to run")
    parser.add_argument("--no-cli", action="store_true", help="skip the CLI end-to-end runs")
    parser.add_argument("--profile", metavar="DIR",
                        help="write a cProfile .prof per operation at the largest size")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and keep the files")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.worker:
        json.dump(worker(json.loads(args.worker)), sys.stdout)
        return 0
    if shutil.which("openssl") is None:
        print("openssl is required", file=sys.stderr)
        return 2

    sizes = [parse_size(s) for s in ("10k,1m" if args.quick else args.sizes).split(",")]
    ops = [o for o in args.ops.split(",") if o]
    for op in ops:
        if op not in OPERATIONS:
            parser.error(f"unknown operation {op}")
    with_cli = not (args.no_cli or args.quick)

    tmp = None
    if args.keep:
        d = Path(args.keep).resolve()
        d.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="smimekit-bench-")
        d = Path(tmp.name)
    try:
        info = machine_info()
        t0 = time.perf_counter()
        make_pki(d)
        wire = prepare_inputs(d, sizes)
        print(f"# PKI and inputs ready in {time.perf_counter() - t0:.1f}s ({d})",
              file=sys.stderr)
        startup = {
            "openssl": min(checked(["openssl", "version"], d).seconds for _ in range(5)),
            "cli": min(checked([*cli_cmd("sign", "1024")[:1], "--version"], d).seconds
                       for _ in range(3)),
        }
        rows: list[Row] = []
        for size in sizes:
            tag = str(size)
            repeats = args.repeats or default_repeats(size, args.quick)
            for op in ops:
                wire_len = wire[size]["sig"] if op in ("sign", "verify") else \
                    wire[size][op.split("-")[1]]
                spec = {"dir": str(d), "op": op, "repeats": repeats, "input": input_for(op, tag),
                        "warm_input": input_for(op, "1024"), "content": f"entity-{tag}.txt",
                        "wire_b64": wire_len}
                if args.profile and size == max(sizes):
                    Path(args.profile).mkdir(parents=True, exist_ok=True)
                    spec["profile"] = str(Path(args.profile).resolve() / f"{op}-{tag}.prof")
                res = run_worker(spec)
                o_times, o_rss = time_openssl(op, tag, d, repeats)
                row = Row(
                    size=size, op=op, repeats=repeats,
                    smimekit_s=min(res["times"]),
                    smimekit_median_s=statistics.median(res["times"]),
                    openssl_s=min(o_times), openssl_median_s=statistics.median(o_times),
                    floor_s=res["floor"], floor_b64_s=res["floor_b64"],
                    peak_bytes=res["rss_peak_delta"], tracemalloc_bytes=res["tracemalloc_peak"],
                    input_bytes=res["input_len"], openssl_rss=o_rss,
                    extra={"rss_input": res["rss_input"], "output_len": res["output_len"],
                           "rss_peak_all_repeats": res["rss_peak_all_repeats"],
                           "b64_s": res["b64"], "rss_baseline": res["rss_baseline"]},
                )
                if with_cli:
                    row.cli_s = checked(cli_cmd(op, tag), d).seconds
                    row.cli_rss = peak_rss(cli_cmd(op, tag), d)
                rows.append(row)
                print(f"# {size_label(size)} {op}: smimekit {fmt_s(row.smimekit_s)}, openssl "
                      f"{fmt_s(row.openssl_s)}, floor {fmt_s(row.floor_b64_s)}", file=sys.stderr)
            if {"verify", "decrypt-gcm", "decrypt-cbc"} <= set(ops):
                check_outputs(d, tag)
        print(render(rows, startup, info, max(sizes)))
        if args.json:
            payload = {"machine": info, "startup": startup,
                       "rows": [asdict(r) | {"vs_openssl": r.vs_openssl, "vs_floor": r.vs_floor,
                                             "mem_ratio": r.mem_ratio} for r in rows]}
            Path(args.json).write_text(json.dumps(payload, indent=2))
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
