#!/usr/bin/env python3
"""Benchmark the LDAP directory: bulk publishing and lookups, against a real slapd.

    .venv/bin/python benchmarks/bench_directory.py [--count N] [--lookups M] [--quick]

A throwaway CA (P-256, SQLite store in a temporary folder) issues N encryption certificates
(lint off: the linter's cost is bench_ca's business), a slapd of its own on loopback
(tests/slapd.py: cn=config from slapadd, mdb database) holds N people (uid, mail, cn, sn),
and it measures, in the same run:

* ``publish()`` of the N certificates into the existing entries (``userCertificate;binary``
  and the ``userSMIMECertificate`` SignedData), one connection, as ``smimekit directory
  publish`` does it;
* the same ``publish()`` again, which finds nothing to change (the cost of the check);
* ``LdapSource.find()`` for M random addresses over one kept-open anonymous connection (what
  the resolver does per recipient), and a search run by ``ldapsearch`` for scale.

Defaults: N = 10,000, M = 2,000; ``--quick``: N = 200, M = 200. It prints a markdown table
and asserts nothing about time.
"""

from __future__ import annotations

import argparse
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the slapd fixture

from slapd import Slapd, available, people  # noqa: E402

from smimekit.ca.home import CAConfig, CAHome  # noqa: E402
from smimekit.ca.issuance import CertificateAuthority, SubscriberKeyType  # noqa: E402
from smimekit.config import LdapConfig  # noqa: E402
from smimekit.directory.ldap import LdapSource, publish  # noqa: E402
from smimekit.store import Store  # noqa: E402

PASS = b"benchmark passphrase"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10_000, help="certificates to publish")
    parser.add_argument("--lookups", type=int, default=2_000, help="LdapSource.find calls")
    parser.add_argument("--quick", action="store_true", help="N = 200, M = 200")
    args = parser.parse_args()
    count, lookups = (200, 200) if args.quick else (args.count, args.lookups)
    if not available():
        print("slapd is not installed (apt-get install slapd ldap-utils)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="bench-directory-") as tmp:
        folder = Path(tmp)
        home = CAHome(folder / "data")
        home.create(CAConfig(organization="Bench Ltd", base_url="http://pki.example.com",
                             key_type="p256", country="GB"), PASS)
        store = Store.open(None, folder / "data")
        cax = CertificateAuthority(home.unlock(PASS), store, actor="bench")
        staff = people(count)
        started = time.perf_counter()
        for person in staff:
            cax.issue_generated(person.mail, purpose="encrypt", name=person.cn, lint=False,
                                encrypt_key=SubscriberKeyType.P256)
        issued = time.perf_counter() - started
        print(f"issued {count} encryption certificates in {issued:.1f} s (setup, not measured"
              " below)", file=sys.stderr)
        rows: list[tuple[str, int, float]] = []
        with Slapd(folder / "slapd") as server:
            server.add_people(staff)
            config = LdapConfig(url=server.url, base_dn=server.people, bind_dn=server.root_dn,
                                password_file=server.password_file, timeout=30)
            chain = [cax.ca.authority.cert, cax.ca.authority.root]
            for label in ("publish: N certificates into existing entries",
                          "publish again: nothing to change"):
                started = time.perf_counter()
                report = publish(store, config, issuer_fingerprint=cax.issuer_fingerprint,
                                 chain=chain)
                rows.append((label, count, time.perf_counter() - started))
                print(f"  {report.summary()}", file=sys.stderr)
            picks = [random.choice(staff).mail for _ in range(lookups)]
            with LdapSource(LdapConfig(url=server.url, base_dn=server.suffix)) as source:
                source.find(picks[0])  # the connection and bind, outside the timing
                started = time.perf_counter()
                found = sum(len(source.find(mail).candidates) for mail in picks)
                rows.append(("lookup: LdapSource.find, kept-open connection", lookups,
                             time.perf_counter() - started))
            if found != lookups:
                print(f"error: {found} certificates found for {lookups} lookups",
                      file=sys.stderr)
                return 1
            sample = picks[: min(lookups, 50)]
            started = time.perf_counter()
            for mail in sample:
                server.search(f"(mail={mail})", "usercertificate;binary")
            rows.append(("lookup: one ldapsearch process each (for scale)", len(sample),
                         time.perf_counter() - started))
        store.close()
    print(f"LDAP directory, slapd on loopback, {platform.python_implementation()}"
          f" {platform.python_version()}, {count} people")
    print()
    print("| what | count | seconds | per second |")
    print("|---|---:|---:|---:|")
    for label, n, seconds in rows:
        print(f"| {label} | {n} | {seconds:.2f} | {n / seconds:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
