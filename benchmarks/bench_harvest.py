#!/usr/bin/env python3
"""Benchmark ``directory harvest``: certificates kept from an mbox of signed mail.

    .venv/bin/python benchmarks/bench_harvest.py [--count 2000] [--senders 200] [--quick]
                                                 [--database-url URL] [--json FILE]

Builds an mbox of ``--count`` signed messages (multipart/signed, RSA-2048 and P-256 signers
in turn, each from one of ``--senders`` people under one issuing CA; every tenth sender is
a dual-key person whose messages name an RSA encryption certificate; every twentieth
message is plain) in a temporary folder, then times, in this process:

* ``verify only``: ``smimekit.verify`` on every message, no store (after one untimed pass
  that warms the caches): the floor, since a harvest runs the same verification;
* ``harvest, first run``: every certificate new (an INSERT per certificate);
* ``harvest, again``: the same archive again, every certificate unchanged (a SELECT each).

Revocation is not checked (the test PKI has no CRL or OCSP URLs); with it, each signer's
chain costs what ``verify`` pays (docs/benchmarks.md, revocation). SQLite in the temporary
folder unless ``--database-url``. ``--quick`` is a smoke test: 60 messages.
"""

from __future__ import annotations

import argparse
import datetime as dt
import email.utils
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[1] / "src"))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, rsa  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

import smimekit  # noqa: E402
from smimekit.directory.harvest import harvest  # noqa: E402
from smimekit.store import Store  # noqa: E402

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, key: Any, issuer_key: Any, issuer: x509.Name, *, ca: bool,
          email: str | None = None, sign: bool = True, enc: bool = False) -> x509.Certificate:
    agreement = isinstance(key, ec.EllipticCurvePrivateKey)
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(NOW - dt.timedelta(days=1))
         .not_valid_after(NOW + dt.timedelta(days=365))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                          False, False), critical=True)
    else:
        b = (b.add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email or "")]),
                             False)
             .add_extension(x509.KeyUsage(sign, False, enc and not agreement, False,
                                          enc and agreement, False, False, False, False),
                            critical=True)
             .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]),
                            False))
    return b.sign(issuer_key, hashes.SHA256())


def build(folder: Path, count: int, senders: int) -> tuple[Path, list[x509.Certificate],
                                                          x509.Certificate]:
    root_key = ec.generate_private_key(ec.SECP384R1())
    root = _cert("Bench Root", root_key, root_key, _name("Bench Root"), ca=True)
    inter_key = ec.generate_private_key(ec.SECP256R1())
    inter = _cert("Bench Issuing CA", inter_key, root_key, root.subject, ca=True)
    rsa_key = rsa.generate_private_key(65537, 2048)  # one key per kind: generation is not timed
    ec_key = ec.generate_private_key(ec.SECP256R1())
    enc_key = rsa.generate_private_key(65537, 2048)
    people = []
    for n in range(senders):
        addr = f"person{n}@example.org"
        key = rsa_key if n % 2 else ec_key
        cert = _cert(addr, key, inter_key, inter.subject, ca=False, email=addr,
                     sign=True, enc=not (n % 10 == 0) and n % 2 == 1)
        enc = (_cert(addr + " enc", enc_key, inter_key, inter.subject, ca=False,
                     email=addr, sign=False, enc=True) if n % 10 == 0 else None)
        people.append((addr, key, cert, enc))
    mbox = folder / "signed.mbox"
    date = email.utils.format_datetime(NOW)
    with open(mbox, "wb") as out:
        for i in range(count):
            who, key, cert, enc = people[i % senders]
            msg = (f"From: {who}\r\nTo: me@example.net\r\nSubject: {i}\r\nDate: {date}\r\n"
                   f"Message-ID: <{i}@example.org>\r\nContent-Type: text/plain\r\n\r\n"
                   + "Some text of a signed message.\r\n" * 40).encode()
            data = msg if i % 20 == 19 else smimekit.sign(
                msg, key, cert, chain=[inter], signing_time=NOW, encryption_cert=enc)
            out.write(b"From bench Thu Jan  1 00:00:00 2026\n"
                      + data.replace(b"\r\n", b"\n") + b"\n")
    return mbox, [root], inter


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--senders", type=int, default=200)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--database-url")
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.quick:
        args.count, args.senders = 60, 20
    results: dict[str, Any] = {"count": args.count, "senders": args.senders,
                               "python": platform.python_version(), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        mbox, trust, _inter = build(folder, args.count, args.senders)
        print(f"built {args.count} messages ({mbox.stat().st_size / 1e6:.1f} MB) in"
              f" {time.perf_counter() - started:.1f} s")
        from smimekit.archive import iter_messages

        for _ in range(2):  # the first pass warms the caches (certificate facts, imports)
            started = time.perf_counter()
            valid = 0
            for raw in iter_messages(mbox):
                result = smimekit.verify(raw.data, trust=trust, revocation=None,
                                         raise_for_failure=False)
                valid += result.verdict.valid
            floor = time.perf_counter() - started
        rows = [("verify only", floor, f"{valid} valid")]
        with Store.open(args.database_url, folder / "data") as store:
            for label in ("harvest, first run", "harvest, again"):
                started = time.perf_counter()
                report = harvest([mbox], store=store, trust=trust, revocation=None)
                took = time.perf_counter() - started
                rows.append((label, took, f"{report.valid} valid; {report.new} new,"
                             f" {report.updated} updated, {report.unchanged} unchanged"))
            kept = store.harvested_count()
    print(f"\n{args.count} messages, {args.senders} senders; {kept} certificates kept\n")
    print("| run | seconds | messages/s | vs verify only | result |")
    print("|---|---|---|---|---|")
    for label, took, note in rows:
        print(f"| {label} | {took:.2f} | {args.count / took:,.0f} | {took / floor:.2f}x |"
              f" {note} |")
        results[label] = {"seconds": took, "per_second": args.count / took, "result": note}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
