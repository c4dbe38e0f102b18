#!/usr/bin/env python3
"""What an SMIMEA lookup costs: ``SmimeaSource.find`` against unbound on loopback (NSD
behind it, the signed test zones of tests/dnsinfra.py), beside ``dig``.

    .venv/bin/python benchmarks/bench_smimea.py [--addresses N] [--rounds N] [--quick]

Measured, over ``--addresses`` distinct addresses with records (P-256 certificates), each
looked up ``--rounds`` times after one warm-up round (unbound's cache warm, as for a busy
sender):

* AD bit only (a resolver on loopback, no ``trust_anchor_file``): one query per lookup;
* own check (``trust_anchor_file``): the same plus DNSKEY and DS of each zone up to the
  anchor and every signature verified here;
* a miss (NXDOMAIN under the signed zone), AD bit only;
* ``dig +dnssec`` for one record (process start included), the reference client.

Figures only; nothing is asserted about wall-clock time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent.parent / "tests"))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402
from dnsinfra import start_dns_lab  # noqa: E402

from smimekit.directory.dns import SmimeaSource, _read_anchors, owner_name  # noqa: E402


def _certificate(email: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.EMAIL_ADDRESS, email)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), False)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


def _rate(label: str, fn: Callable[[str], object], addresses: list[str], rounds: int) -> None:
    for address in addresses:  # warm-up: unbound's cache
        fn(address)
    times = []
    for _ in range(rounds):
        for address in addresses:
            started = time.perf_counter()
            fn(address)
            times.append(time.perf_counter() - started)
    median = statistics.median(times)
    print(f"{label:<34} {len(times):>6} {median * 1e3:>10.3f} {min(times) * 1e3:>9.3f}"
          f" {1 / median:>11.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addresses", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="10 addresses, 1 round")
    args = parser.parse_args()
    count, rounds = (10, 1) if args.quick else (args.addresses, args.rounds)
    addresses = [f"user{i}@good.test" for i in range(count)]
    fragment = "\n".join(f"{owner_name(a)} 3600 IN SMIMEA 3 0 0 {_certificate(a).hex()}"
                         for a in addresses)
    bogus = f"{owner_name('x@bogus.test')} 3600 IN SMIMEA 3 0 0 {_certificate('x@b').hex()}"
    with tempfile.TemporaryDirectory(prefix="bench-smimea-") as tmp:
        started = time.perf_counter()
        lab = start_dns_lab(Path(tmp), {"good.test.": fragment, "bogus.test.": bogus})
        setup = time.perf_counter() - started
        try:
            plain = SmimeaSource(("127.0.0.1",), lab.resolver_port, 5.0, None)
            checked = SmimeaSource(("127.0.0.1",), lab.resolver_port, 5.0,
                                   _read_anchors(lab.anchor_file))
            for source in (plain, checked):  # figures of lookups that work, or none
                if len(source.find(addresses[0]).candidates) != 1:
                    raise SystemExit(f"no certificate for {addresses[0]}: nothing to measure")
            if plain.find("nobody0@good.test").candidates:
                raise SystemExit("a certificate for an address without a record")
            print(f"zones signed, NSD and unbound started in {setup:.2f} s;"
                  f" {count} addresses x {rounds} rounds")
            print(f"{'lookup':<34} {'n':>6} {'median ms':>10} {'best ms':>9} {'lookups/s':>11}")
            _rate("find, AD bit only", plain.find, addresses, rounds)
            _rate("find, own DNSSEC check", checked.find, addresses, rounds)
            _rate("find, a miss (NXDOMAIN), AD only", plain.find,
                  [f"nobody{i}@good.test" for i in range(count)], rounds)
            _rate("dig +dnssec (process start)", lambda a: subprocess.run(
                ["dig", "+dnssec", "-p", str(lab.resolver_port), "@127.0.0.1",
                 owner_name(a).to_text(), "SMIMEA"], capture_output=True, check=True),
                addresses[:10], 1)
        finally:
            lab.stop()


if __name__ == "__main__":
    main()
