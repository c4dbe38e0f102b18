#!/usr/bin/env python3
"""Benchmark the archive tools: scan and decrypt a large mixed archive.

    .venv/bin/python benchmarks/bench_archive.py [--count 10000] [--quick]
                                                 [--format mbox|maildir] [--keep DIR]
                                                 [--profile-count N] [--json FILE]

Builds an archive of ``--count`` messages (default 10,000; sizes log-uniform between 10 KB and
1 MB; 70% to an RSA-2048 recipient, 30% to a P-256 one; AES-256-GCM, AES-256-CBC and
AES-128-GCM mixed; every tenth message plain) in a temporary folder, then times, in this
process:

* ``scan`` (no key used: what is encrypted, to whom, with what);
* ``decrypt`` (every message exported to a new folder: one fsynced file and one fsynced
  manifest line per message).

For each it prints messages/s and MB/s (of the archive as stored) and where the time goes:
cryptography (RSA/ECDH key unwrap, AES content decryption) is timed exactly around the
calls, in the timed run itself; the rest (base64, file I/O, hashing for the manifest, MIME
and ASN.1 parsing) is split by a cProfile run over the first ``--profile-count`` messages
(cProfile inflates Python time, so those shares are indicative). ``--quick`` is a smoke
test: 40 small messages.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import json
import math
import os
import platform
import pstats
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[1] / "src"))

import smimekit  # noqa: E402
from smimekit import archive  # noqa: E402
from smimekit.cms import enveloped, recipients  # noqa: E402
from smimekit.cms.algorithms import Cipher  # noqa: E402

MB = 1024 * 1024
KB = 1024
CATEGORIES = ("unwrap", "aes", "reading", "base64", "io", "hashing", "scans", "parsing")
LABELS = {"unwrap": "RSA/ECDH unwrap", "aes": "AES content",
          "reading": "reading & splitting", "base64": "base64",
          "io": "file I/O", "hashing": "SHA-256 (manifest)",
          "scans": "byte scans & copies", "parsing": "parsing (Python)"}
_READING = ("_mbox_segments", "_cut", "_separator", "_mbox_items", "_items", "_file_item",
            "_plain_files", "_message_files", "iter_messages")
_SCANS = ("count", "replace", "find", "rfind", "translate", "join", "startswith", "endswith",
          "split", "rstrip")


# -- the archive -------------------------------------------------------------------------------


def _person(ca_key: Any, ca_name: x509.Name, name: str, key: Any) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    agreement = isinstance(key, ec.EllipticCurvePrivateKey)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(f"{name}@example.org")]),
                       critical=False)
        .add_extension(x509.KeyUsage(False, False, not agreement, False, agreement, False,
                                     False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def make_people() -> list[tuple[Any, x509.Certificate]]:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench CA")])
    rsa_key = rsa.generate_private_key(65537, 2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    return [(rsa_key, _person(ca_key, ca_name, "rsa", rsa_key)),
            (ec_key, _person(ca_key, ca_name, "ecdh", ec_key))]


_LINE = b"%08d Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\n"


def _text(size: int, n: int) -> bytes:
    lines = size // 88 + 1
    return b"".join(_LINE % (n * 100_000 + i) for i in range(lines))[:size]


def message_sizes(count: int, low: int, high: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [int(math.exp(rng.uniform(math.log(low), math.log(high)))) for _ in range(count)]


def build_archive(path: Path, fmt: str, count: int, low: int, high: int,
                  people: list[tuple[Any, x509.Certificate]], seed: int) -> dict[str, int]:
    rng = random.Random(seed + 1)
    ciphers = [Cipher.AES256_GCM] * 6 + [Cipher.AES256_CBC] * 3 + [Cipher.AES128_GCM]
    stats = {"messages": 0, "encrypted": 0, "plaintext_bytes": 0}
    if fmt == "maildir":
        for sub in ("cur", "new", "tmp"):
            (path / sub).mkdir(parents=True, exist_ok=True)
    out = open(path, "wb") if fmt == "mbox" else None
    try:
        for n, size in enumerate(message_sizes(count, low, high, seed)):
            head = (f"From: sender{n % 50}@example.org\nTo: rsa@example.org\n"
                    f"Subject: message {n}\nMessage-ID: <{n}@bench.example.org>\n"
                    "Content-Type: text/plain; charset=us-ascii\n\n").encode()
            msg = head + _text(size, n)
            stats["plaintext_bytes"] += len(msg)
            if n % 10 != 9:
                cert = people[0][1] if rng.random() < 0.7 else people[1][1]
                msg = smimekit.encrypt(msg, [cert], cipher=rng.choice(ciphers),
                                       check_recipients=False).replace(b"\r\n", b"\n")
                stats["encrypted"] += 1
            stats["messages"] += 1
            if out is not None:
                out.write(b"From sender@example.org Thu Jan  1 00:00:00 2026\n" + msg + b"\n")
            else:
                (path / "cur" / f"17000{n:06d}.M{n}P1.bench:2,S").write_bytes(msg)
    finally:
        if out is not None:
            out.close()
    stats["archive_bytes"] = archive.archive_size(path)
    return stats


def prefix_archive(src: Path, dst: Path, fmt: str, count: int) -> None:
    """The first ``count`` messages of ``src`` (for the profiled run)."""
    if fmt == "maildir":
        for sub in ("cur", "new", "tmp"):
            (dst / sub).mkdir(parents=True, exist_ok=True)
        for file in sorted((src / "cur").iterdir())[:count]:
            os.link(file, dst / "cur" / file.name)
        return
    with open(src, "rb") as fh, open(dst, "wb") as out:
        seen = 0
        for line in fh:
            if line.startswith(b"From ") and seen == count:
                break
            seen += line.startswith(b"From ")
            out.write(line)


# -- timing -------------------------------------------------------------------------------------


@dataclass
class CryptoClock:
    """Seconds spent inside the key unwrap and the content decryption calls."""

    unwrap: float = 0.0
    aes: float = 0.0
    calls: int = 0

    @contextmanager
    def installed(self) -> Iterator[None]:
        originals = {(recipients, "unwrap"): recipients.unwrap,
                     (enveloped, "aead_decrypt"): enveloped.aead_decrypt,
                     (enveloped, "cbc_decrypt"): enveloped.cbc_decrypt}

        def timed(func: Callable[..., Any], slot: str) -> Callable[..., Any]:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    return func(*args, **kwargs)
                finally:
                    setattr(self, slot, getattr(self, slot) + time.perf_counter() - start)
                    self.calls += 1
            return wrapper

        recipients.unwrap = timed(recipients.unwrap, "unwrap")  # type: ignore[assignment]
        enveloped.aead_decrypt = timed(enveloped.aead_decrypt, "aes")  # type: ignore[assignment]
        enveloped.cbc_decrypt = timed(enveloped.cbc_decrypt, "aes")  # type: ignore[assignment]
        try:
            yield
        finally:
            for (module, name), func in originals.items():
                setattr(module, name, func)


def _category(key: tuple[str, int, str]) -> str:
    filename, _, name = key
    if (filename.endswith(("archive.py", "mailstore.py")) and name in _READING) \
            or "of 'bytearray' objects" in name or "<method 'read' of '_io.Buffered" in name:
        return "reading"
    if "_rust.openssl.rsa" in name or "_rust.openssl.ec" in name or "x25519" in name \
            or "x448" in name or "keywrap" in filename or "/kdf/" in filename:
        return "unwrap"
    if "_rust.openssl.ciphers" in name or "_rust.openssl.aead" in name \
            or "primitives/ciphers" in filename:
        return "aes"
    if "binascii" in name:
        return "base64"
    if "_hashlib" in name or "hashlib" in filename:
        return "hashing"
    if name.startswith(("<built-in method posix.", "<method 'read", "<method 'write",
                        "<method 'flush", "<built-in method io.open", "<built-in method _io",
                        "<method 'close' of '_io", "<method 'readline")) \
            or "fdopen" in name or "mkstemp" in name:
        return "io"
    if filename == "~" and any(f"<method '{m}' of 'byte" in name for m in _SCANS):
        return "scans"  # line ends, separators, header ends: passes over the bytes
    return "parsing"


def profile_shares(run: Callable[[], Any]) -> dict[str, float]:
    profiler = cProfile.Profile()
    profiler.enable()
    run()
    profiler.disable()
    totals = dict.fromkeys(CATEGORIES, 0.0)
    for key, value in pstats.Stats(profiler).stats.items():  # type: ignore[attr-defined]
        totals[_category(key)] += value[2]  # tottime
    whole = sum(totals.values()) or 1.0
    return {k: v / whole for k, v in totals.items()}


@dataclass
class Row:
    operation: str
    messages: int
    archive_bytes: int
    seconds: float
    crypto_unwrap: float = 0.0
    crypto_aes: float = 0.0
    shares: dict[str, float] = field(default_factory=dict)
    """Of the whole time, by category (crypto timed, the rest from the profile)."""
    outcome: dict[str, int] = field(default_factory=dict)

    @property
    def per_second(self) -> float:
        return self.messages / self.seconds

    @property
    def mb_per_second(self) -> float:
        return self.archive_bytes / MB / self.seconds


def combine(seconds: float, unwrap: float, aes: float, reading: float,
            profile: dict[str, float]) -> dict[str, float]:
    """Crypto and reading as timed; the rest of the time split as the profile split it."""
    rest = max(0.0, seconds - unwrap - aes - reading)
    others = {k: v for k, v in profile.items() if k not in ("unwrap", "aes", "reading")}
    total_others = sum(others.values()) or 1.0
    shares = {"unwrap": unwrap / seconds, "aes": aes / seconds, "reading": reading / seconds}
    shares.update({k: rest * v / total_others / seconds for k, v in others.items()})
    return shares


def machine_info() -> str:
    import cryptography

    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip()
                   for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"smimekit {getattr(smimekit, '__version__', '?')}; {os.cpu_count()} cores, {cpu};"
            f" Python {platform.python_version()}; cryptography {cryptography.__version__}")


def render(rows: list[Row], info: str, stats: dict[str, int], fmt: str, build_s: float,
           profiled: int) -> str:
    out = [info,
           f"archive: {fmt}, {stats['messages']} messages ({stats['encrypted']} encrypted), "
           f"{stats['archive_bytes'] / MB:.1f} MB stored, {stats['plaintext_bytes'] / MB:.1f} MB"
           f" of plaintext; built in {build_s:.1f}s", ""]
    out.append("| operation | messages | MB | seconds | messages/s | MB/s | crypto | "
               + " | ".join(LABELS[c] for c in CATEGORIES) + " |")
    out.append("|" + "---|" * (7 + len(CATEGORIES)))
    for r in rows:
        crypto = r.shares.get("unwrap", 0) + r.shares.get("aes", 0)
        out.append(f"| {r.operation} | {r.messages} | {r.archive_bytes / MB:.1f} | "
                   f"{r.seconds:.2f} | {r.per_second:.0f} | {r.mb_per_second:.1f} | "
                   f"{crypto:.0%} | "
                   + " | ".join(f"{r.shares.get(c, 0):.0%}" for c in CATEGORIES) + " |")
    out.append("")
    for r in rows:
        out.append(f"{r.operation}: " + ", ".join(f"{k} {v}" for k, v in sorted(r.outcome.items())))
    out.append("")
    out.append("crypto = RSA/ECDH unwrap + AES content decryption, timed around the calls in the"
               " timed run; reading & splitting = iter_messages() over the archive alone, timed;"
               " the other columns split the remaining time as a cProfile run over the first"
               f" {profiled} messages split it (indicative: profiling slows Python code more"
               " than C code).")
    out.append("byte scans & copies = C-level passes over the message bytes (line-end"
               " conversion, header search, slicing); parsing = the Python code of MIME,"
               " ASN.1 and the archive logic; file I/O = writing the export (decrypt: one"
               " fsynced file and one fsynced manifest line per message).")
    out.append("MB = the archive as stored (base64, so about 1.37 x the plaintext).")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, help="messages in the archive (default 10000)")
    parser.add_argument("--quick", action="store_true", help="40 small messages (smoke test)")
    parser.add_argument("--format", choices=("mbox", "maildir"), default="mbox")
    parser.add_argument("--profile-count", type=int, default=1000,
                        help="messages in the profiled run (default 1000)")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and keep the files")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    count = args.count or (40 if args.quick else 10_000)
    low, high = (10 * KB, 64 * KB) if args.quick else (10 * KB, MB)
    if count < 1:
        parser.error("--count must be at least 1")

    tmp = None
    if args.keep:
        work = Path(args.keep).resolve()
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="smimekit-bench-archive-")
        work = Path(tmp.name)
    try:
        people = make_people()
        keys = [(key, cert) for key, cert in people]
        path = work / ("inbox.mbox" if args.format == "mbox" else "Maildir")
        for leftover in (path, work / "export", work / "sample", work / "sample-export"):
            if leftover.is_dir():
                shutil.rmtree(leftover)
            elif leftover.exists():
                leftover.unlink()
        started = time.perf_counter()
        stats = build_archive(path, args.format, count, low, high, people, args.seed)
        build_s = time.perf_counter() - started
        print(f"# archive ready in {build_s:.1f}s: {stats['archive_bytes'] / MB:.0f} MB"
              f" ({work})", file=sys.stderr)

        started = time.perf_counter()
        read = sum(1 for _ in archive.iter_messages(path))
        read_s = time.perf_counter() - started
        print(f"# reading alone: {read_s:.2f}s", file=sys.stderr)
        rows = []
        clock = CryptoClock()
        started = time.perf_counter()
        report = archive.scan(path, keys=keys)
        seconds = time.perf_counter() - started
        rows.append(Row("scan", report.messages, stats["archive_bytes"], seconds,
                        outcome={**report.by_kind, **report.by_readability}))
        print(f"# scan: {seconds:.2f}s", file=sys.stderr)

        with clock.installed():
            started = time.perf_counter()
            result = archive.decrypt_archive(path, work / "export", keys)
            seconds = time.perf_counter() - started
        rows.append(Row("decrypt", sum(result.counts.values()), stats["archive_bytes"],
                        seconds, clock.unwrap, clock.aes, outcome=dict(result.counts)))
        print(f"# decrypt: {seconds:.2f}s", file=sys.stderr)
        if result.counts["decrypted"] != stats["encrypted"]:
            print(f"decrypted {result.counts['decrypted']} of {stats['encrypted']}",
                  file=sys.stderr)
            return 1

        profiled = min(count, args.profile_count)
        sample = work / "sample"
        prefix_archive(path, sample, args.format, profiled)
        scan_profile = profile_shares(lambda: archive.scan(sample, keys=keys))
        decrypt_profile = profile_shares(
            lambda: archive.decrypt_archive(sample, work / "sample-export", keys))
        rows[0].shares = combine(rows[0].seconds, 0.0, 0.0, read_s, scan_profile)
        rows[1].shares = combine(rows[1].seconds, rows[1].crypto_unwrap, rows[1].crypto_aes,
                                 read_s, decrypt_profile)
        print(render(rows, machine_info(), stats, args.format, build_s, profiled))
        print(f"reading and splitting the archive alone (iter_messages, {read} messages):"
              f" {read_s:.2f}s, {stats['archive_bytes'] / MB / read_s:.0f} MB/s")
        if args.json:
            Path(args.json).write_text(json.dumps(
                {"machine": machine_info(), "archive": stats, "format": args.format,
                 "read_seconds": read_s,
                 "rows": [asdict(r) | {"messages_per_second": r.per_second,
                                       "mb_per_second": r.mb_per_second} for r in rows]},
                indent=2))
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
