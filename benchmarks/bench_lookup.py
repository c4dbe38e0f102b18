#!/usr/bin/env python3
"""Lookups per second: from our CA's store, from the lookup cache, and the validation floor.

    .venv/bin/python benchmarks/bench_lookup.py [--people N] [--quick] [--json FILE]

A CA (P-256) in a temporary data directory issues N people an encryption certificate each
(SQLite store). Rows, each over every address once:

* ``store``: Resolver with the store source, revocation offline with our CA's CRLs (what
  ``smimekit lookup --revocation offline`` does per address once the process is up);
* ``cache hit``: a directory source (an in-process list standing in for LDAP) answered once,
  every lookup then served from ``<data-dir>/directory-cache`` and validated again;
* ``cache read alone``: LookupCache.get without validation;
* ``validation floor``: check_recipient() alone on the same certificates (the work every
  lookup must do whatever the source).

LDAP figures (network round trips against slapd) belong to the LDAP source's benchmark.
Prints figures, never fails on a slow machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cryptography import x509

from smimekit.ca.home import CAConfig, CAHome
from smimekit.ca.issuance import CertificateAuthority, SubscriberKeyType
from smimekit.ca.profiles import Purpose
from smimekit.directory.cache import LookupCache
from smimekit.directory.resolver import Resolver
from smimekit.directory.sources import Candidate, Found
from smimekit.directory.store_source import StoreSource, our_ca_chain, our_ca_revocation
from smimekit.store import Store
from smimekit.validation.recipients import check_recipient
from smimekit.validation.revocation import RevocationOptions, RevocationPolicy

PASS = b"benchmark passphrase"


@dataclass
class Figure:
    what: str
    count: int
    seconds: float
    per_second: float = field(init=False)

    def __post_init__(self) -> None:
        self.per_second = self.count / self.seconds if self.seconds else 0.0


@dataclass
class Directory:
    """An in-process directory (what LDAP would answer), for the cache rows."""

    held: dict[str, Candidate]
    name: str = "ldap"

    def find(self, address: str) -> Found:
        found = self.held.get(address)
        return Found((found,) if found else ())


def timed(what: str, addresses: list[str], work: Callable[[str], object]) -> Figure:
    start = time.perf_counter()
    for address in addresses:
        work(address)
    return Figure(what, len(addresses), time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="30 people")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    people = 30 if args.quick else args.people

    with tempfile.TemporaryDirectory(prefix="bench-lookup-") as tmp:
        data_dir = Path(tmp) / "data"
        home = CAHome(data_dir)
        home.create(CAConfig(organization="Bench Ltd", base_url="http://pki.example.com",
                             key_type="p256", country="GB"), PASS)
        store = Store.open(None, data_dir)
        authority = CertificateAuthority(home.unlock(PASS), store, actor="bench")
        addresses = [f"person{i:05d}@example.org" for i in range(people)]
        certs: dict[str, x509.Certificate] = {}
        started = time.perf_counter()
        for address in addresses:
            item = authority.issue_generated(
                address, purpose="encrypt", encrypt_key=SubscriberKeyType.P256,
                lint=False).item(Purpose.ENCRYPT)
            assert item is not None
            certs[address] = item.cert
        issued = time.perf_counter() - started

        ours = our_ca_chain(data_dir)
        root = [c for c in ours if c.issuer == c.subject]
        revocation = RevocationOptions(policy=RevocationPolicy.OFFLINE,
                                       crls=our_ca_revocation(store, data_dir))
        common = {"trust": root, "intermediates": list(ours), "revocation": revocation,
                  "our_ca": ours}

        def ok(resolver: Resolver) -> Callable[[str], object]:
            def run(address: str) -> object:
                result = resolver.lookup(address)
                assert result.ok, result.explain()
                return result
            return run

        figures = [timed("store", addresses,
                         ok(Resolver([StoreSource(store, ours)], **common)))]  # type: ignore[arg-type]
        directory = Directory({a: Candidate(c, "ldap", chain=ours) for a, c in certs.items()})
        cache = LookupCache(Path(tmp) / "cache", cache_seconds=3600)
        cached = Resolver([directory], cache=cache, **common)  # type: ignore[arg-type]
        figures.append(timed("cache fill (directory answer written)", addresses, ok(cached)))
        figures.append(timed("cache hit", addresses, ok(cached)))
        now = dt.datetime.now(dt.UTC)
        figures.append(timed("cache read alone", addresses,
                             lambda a: cache.get(a, "ldap", now)))
        figures.append(timed("validation floor (check_recipient)", addresses,
                             lambda a: check_recipient(certs[a], trust=root,
                                                       intermediates=list(ours), at=now,
                                                       revocation=revocation)))
        store.close()

    print(f"bench_lookup: {people} people issued in {issued:.1f} s (P-256, SQLite)\n")
    print("| lookup | count | seconds | per second |")
    print("|---|---:|---:|---:|")
    for f in figures:
        print(f"| {f.what} | {f.count} | {f.seconds:.3f} | {f.per_second:,.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(f) for f in figures], indent=2))


if __name__ == "__main__":
    sys.exit(main())
