#!/usr/bin/env python3
"""Benchmark our CA: issuance beside the bare signing rate of its key, CRLs, OCSP.

    .venv/bin/python benchmarks/bench_ca.py [--count N] [--quick]
                                            [--backend sqlite|postgresql|both]
                                            [--ca-key p384|p256|rsa3072|all]

For each store backend (SQLite in a temporary data directory; PostgreSQL at 127.0.0.1:5432,
database ``test``, in a schema of its own dropped afterwards, when a server answers) and CA
key type it measures, in the same run:

* the bare signing rate of the CA key: ``unlocked.authority.signer.sign(tbs)`` on the TBS of
  one of its subscriber certificates, the Signer the CA itself signs with;
* issuance from a CSR (``CertificateAuthority.issue_csr``, lint off), every certificate fully
  recorded (user, certificate, issuance record, audit row, one transaction each), in
  certificates/s and as a ratio to the bare signing rate measured just before each chunk;
* issuance with a server-generated P-256 key (``issue_generated``, purpose sign, lint off),
  likewise, and the key generation on its own;
* where the time of one CSR issuance goes (CSR check, building and signing, store);
* pkilint: the same CSR issuance with ``lint=True``, the difference being the linter's cost;
* a CRL of ``--crl-entries`` (100,000) revoked serials, inserted into the store in bulk:
  reading them back, ``build_crl``, its DER size, and the whole ``publish_crl``;
* OCSP: ``OCSPResponder.respond()`` in process with the store lookup, and requests/s over
  HTTP on loopback against ``CAServer`` (in its own process) from one keep-alive client and
  from two at a time.

It prints figures and asserts nothing about time: the issue's target (>= 80 % of the bare
signing rate) is marked met or missed, nothing more.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import http.client
import json
import multiprocessing as mp
import os
import platform
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchdb import PG_HOST, PG_PORT, fresh_schema, pg_user
from benchinfo import cpu_model, git_revision
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from smimekit.ca.authority import lint
from smimekit.ca.crl import REASONS, build_crl
from smimekit.ca.home import CAConfig, CAHome, UnlockedCA
from smimekit.ca.issuance import CertificateAuthority, SubscriberKeyType
from smimekit.ca.ocsp import OCSPResponder, store_lookup
from smimekit.ca.profiles import Purpose
from smimekit.store import Store, schema

HERE = Path(__file__).resolve()
PASSPHRASE = b"bench passphrase"
BASE_URL = "http://pki.example.com"
PG_DB = "test"
TARGET = 0.80
KEY_TYPES = ("p384", "p256", "rsa3072")
KEY_LABEL = {"p384": "P-384", "p256": "P-256", "rsa3072": "RSA-3072"}
CSR_POOL = 64  # distinct subscriber keys the CSRs cycle through (one address per certificate)


# -- small helpers ----------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f}/{five:.2f}"


def timed(func: Callable[[], Any], n: int) -> float:
    """Seconds per call of ``n`` calls in a row."""
    start = time.perf_counter()
    for _ in range(n):
        func()
    return (time.perf_counter() - start) / n


def rate_for(func: Callable[[], Any], seconds: float, batch: int = 20) -> float:
    """Calls per second, calling ``func`` in batches until ``seconds`` have passed."""
    calls, start = 0, time.perf_counter()
    while True:
        for _ in range(batch):
            func()
        calls += batch
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return calls / elapsed


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


def fmt_size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} KB"


def make_csrs(n: int) -> list[bytes]:
    csrs = []
    for i in range(n):
        key = ec.generate_private_key(ec.SECP256R1())
        csrs.append(
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"bench {i}")]))
            .sign(key, hashes.SHA256())
            .public_bytes(serialization.Encoding.PEM)
        )
    return csrs


# -- backends ---------------------------------------------------------------------------------


@contextmanager
def store_url(backend: str) -> Iterator[str | None]:
    """None for SQLite (the data directory's file); a PostgreSQL URL in a fresh schema."""
    if backend == "sqlite":
        yield None
        return
    with fresh_schema(PG_DB, "smimekit_bench") as url:
        yield url


# -- results ----------------------------------------------------------------------------------


@dataclass
class Run:
    backend: str
    ca_key: str
    chunks: int = 0
    chunk_size: int = 0
    bare: list[float] = field(default_factory=list)          # signatures/s, before each chunk
    csr: list[float] = field(default_factory=list)           # certificates/s per chunk
    csr_ratio: list[float] = field(default_factory=list)
    gen: list[float] = field(default_factory=list)
    gen_ratio: list[float] = field(default_factory=list)
    keygen: list[float] = field(default_factory=list)        # P-256 keys/s
    tbs_size: int = 0
    parts_us: dict[str, float] = field(default_factory=dict)
    lint_on_ms: float = 0.0
    lint_off_ms: float = 0.0
    lint_alone_ms: float = 0.0
    lint_first_s: float = 0.0
    lint_count: int = 0
    crl: dict[str, float] = field(default_factory=dict)
    ocsp: dict[str, float] = field(default_factory=dict)
    store_check: str = ""
    loads: list[str] = field(default_factory=list)


# -- issuance ---------------------------------------------------------------------------------


def new_ca(data_dir: Path, url: str | None, key_type: str) -> tuple[UnlockedCA, Store,
                                                                    CertificateAuthority]:
    unlocked = CAHome(data_dir).create(
        CAConfig(organization="Bench Org", base_url=BASE_URL, key_type=key_type), PASSPHRASE)
    store = Store.open(url, data_dir)
    return unlocked, store, CertificateAuthority(unlocked, store, actor="bench")


def measure_issuance(run: Run, unlocked: UnlockedCA, cax: CertificateAuthority, count: int,
                     chunks: int, csrs: list[bytes], bare_seconds: float) -> None:
    signer = unlocked.authority.signer
    # warm up: SQLAlchemy's statement cache, the first connection, the CA's cached extensions
    for i in range(10):
        cax.issue_csr(csrs[i % len(csrs)], email=f"warm{i}@example.com", purpose="sign",
                      lint=False)
        cax.issue_generated(f"warmg{i}@example.com", purpose="sign", lint=False)
    sample = cax.issue_csr(csrs[0], email="sample@example.com", purpose="sign", lint=False)
    tbs = sample.items[0].cert.tbs_certificate_bytes
    run.tbs_size = len(tbs)
    size = max(1, count // chunks)
    run.chunks, run.chunk_size = chunks, size
    serial = 0
    for _ in range(chunks):
        run.loads.append(load())
        bare = rate_for(lambda: signer.sign(tbs), bare_seconds)
        start = time.perf_counter()
        for _ in range(size):
            cax.issue_csr(csrs[serial % len(csrs)], email=f"csr{serial}@example.com",
                          purpose="sign", lint=False)
            serial += 1
        csr_rate = size / (time.perf_counter() - start)
        bare2 = rate_for(lambda: signer.sign(tbs), bare_seconds)
        start = time.perf_counter()
        for i in range(size):
            cax.issue_generated(f"gen{serial + i}@example.com", purpose="sign",
                                sign_key=SubscriberKeyType.P256, lint=False)
        gen_rate = size / (time.perf_counter() - start)
        run.bare += [bare, bare2]
        run.csr.append(csr_rate)
        run.csr_ratio.append(csr_rate / bare)
        run.gen.append(gen_rate)
        run.gen_ratio.append(gen_rate / bare2)
        run.keygen.append(rate_for(SubscriberKeyType.P256.generate, 0.1))


def measure_parts(run: Run, unlocked: UnlockedCA, cax: CertificateAuthority, csrs: list[bytes],
                  n: int) -> None:
    """Where one CSR issuance spends its time: the same calls issue_csr makes, one by one."""
    authority = unlocked.authority
    profile = cax.profile(None)
    loaded = [x509.load_pem_x509_csr(c) for c in csrs]
    start = time.perf_counter()
    for i in range(n):
        assert x509.load_pem_x509_csr(csrs[i % len(csrs)]).is_signature_valid
    csr_s = (time.perf_counter() - start) / n
    # issue_csr first refuses an address that holds a live certificate for the purpose
    refuse = getattr(cax, "_refuse_duplicates", None)
    start = time.perf_counter()
    if refuse is not None:
        for i in range(n):
            refuse(f"part{i}@example.com", (Purpose.SIGN,), None)
    duplicates_s = (time.perf_counter() - start) / n
    certs = []
    start = time.perf_counter()
    for i in range(n):
        info = cax.subject(f"part{i}@example.com", None, profile)
        certs.append(authority.issue(profile, info, loaded[i % len(loaded)].public_key(),
                                     Purpose.SIGN, check=False))
    build_s = (time.perf_counter() - start) / n
    tbs = certs[0].tbs_certificate_bytes
    sign_s = timed(lambda: authority.signer.sign(tbs), n)
    start = time.perf_counter()
    for i, cert in enumerate(certs):
        # CertificateAuthority._record is what issue_csr calls after signing: the user, the
        # certificate, its issuance record and the audit row in one transaction.
        cax._record(f"part{i}@example.com", None, None, [(cert, Purpose.SIGN, None)], profile,
                    "csr", "ca.issue", {"origin": "csr"})
    store_s = (time.perf_counter() - start) / n
    run.parts_us = {"duplicates": duplicates_s * 1e6, "csr": csr_s * 1e6,
                    "build_sign": build_s * 1e6, "sign": sign_s * 1e6, "store": store_s * 1e6}


_LINTED = [False]  # pkilint builds its validator on the first lint of a process only


def measure_lint(run: Run, cax: CertificateAuthority, csrs: list[bytes], n: int) -> None:
    start = time.perf_counter()
    first = cax.issue_csr(csrs[0], email="lint-first@example.com", purpose="sign", lint=True)
    run.lint_first_s = -1.0 if _LINTED[0] else time.perf_counter() - start
    _LINTED[0] = True
    on, off = [], []
    for i in range(n):  # alternate, so both see the same machine
        start = time.perf_counter()
        cax.issue_csr(csrs[i % len(csrs)], email=f"lint{i}@example.com", purpose="sign",
                      lint=True)
        on.append(time.perf_counter() - start)
        start = time.perf_counter()
        cax.issue_csr(csrs[i % len(csrs)], email=f"nolint{i}@example.com", purpose="sign",
                      lint=False)
        off.append(time.perf_counter() - start)
    cert = first.items[0].cert
    run.lint_alone_ms = median([timed(lambda: lint(cert), max(1, n // 5))
                                for _ in range(3)]) * 1000
    run.lint_on_ms, run.lint_off_ms = median(on) * 1000, median(off) * 1000
    run.lint_count = n


# -- CRL --------------------------------------------------------------------------------------


def measure_crl(run: Run, unlocked: UnlockedCA, store: Store, cax: CertificateAuthority,
                entries: int, repeats: int) -> None:
    fp = cax.issuer_fingerprint
    reasons: list[str | None] = [None, *REASONS]
    base = dt.datetime.now(dt.UTC).replace(microsecond=0)
    rows = [{
        "serial": format(secrets.randbits(152) | (1 << 151), "x"),
        "issuer_fingerprint": fp,
        "revoked_at": base - dt.timedelta(seconds=secrets.randbelow(90 * 86400)),
        "reason": reasons[i % len(reasons)],
    } for i in range(entries)]
    start = time.perf_counter()
    with store.transaction() as conn:  # setup, in bulk: not the CA's revoke path
        for i in range(0, len(rows), 10_000):
            conn.execute(schema.revocations.insert(), rows[i:i + 10_000])
    run.crl["insert_s"] = time.perf_counter() - start
    loads, builds, publishes, size = [], [], [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        revoked = store.revocations(fp)
        loads.append(time.perf_counter() - start)
        assert len(revoked) >= entries
        start = time.perf_counter()
        crl = build_crl(unlocked.authority.cert, unlocked.authority.signer, revoked, number=1,
                        this_update=base, next_update=base + dt.timedelta(days=7))
        builds.append(time.perf_counter() - start)
        size = len(crl.public_bytes(serialization.Encoding.DER))
        start = time.perf_counter()
        cax.publish_crl()
        publishes.append(time.perf_counter() - start)
    run.crl.update(entries=entries, load_s=median(loads), build_s=median(builds), size=size,
                   publish_s=median(publishes), repeats=repeats)


# -- OCSP -------------------------------------------------------------------------------------


def _ocsp_server(data_dir: str, url: str | None, conn: Any) -> None:
    """Child process: the CA's HTTP server (granian, one worker in process) with the store
    lookup, as one worker of `smimekit ca serve`."""
    from smimekit.service.ca_endpoints import CAServer

    unlocked = CAHome(data_dir).unlock(PASSPHRASE)
    store = Store.open(url, data_dir)
    cax = CertificateAuthority(unlocked, store)
    assert unlocked.ocsp_key is not None
    responder = OCSPResponder(unlocked.authority.cert, unlocked.ocsp_cert, unlocked.ocsp_key,
                              store_lookup(store, cax.issuer_fingerprint))
    der = serialization.Encoding.DER
    server = CAServer("127.0.0.1", 0, crl=cax.current_crl, ocsp=responder, certs={
        "issuing.der": unlocked.authority.cert.public_bytes(der)}).start()
    conn.send(server.port)
    conn.recv()  # until told to stop
    server.stop()
    store.close()


def _ocsp_client(port: int, requests: list[bytes], seconds: float, barrier: Any,
                 out: Any) -> None:
    """One keep-alive client: POST requests one after another for ``seconds``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/ocsp-request"}
    post(conn, requests[0], headers)  # connect outside the timed part
    if barrier is not None:
        barrier.wait()
    done, latencies = 0, []
    start = time.perf_counter()
    while True:
        t = time.perf_counter()
        post(conn, requests[done % len(requests)], headers)
        latencies.append(time.perf_counter() - t)
        done += 1
        if t - start >= seconds:
            break
    elapsed = time.perf_counter() - start
    conn.close()
    out.put((done / elapsed, median(latencies)))


def post(conn: http.client.HTTPConnection, body: bytes, headers: dict[str, str]) -> bytes:
    conn.request("POST", "/ocsp", body, headers)
    response = conn.getresponse()
    data = response.read()
    if response.status != 200:
        raise RuntimeError(f"OCSP over HTTP: status {response.status}")
    return data


def ocsp_requests(certs: list[x509.Certificate], issuer: x509.Certificate) -> list[bytes]:
    return [ocsp.OCSPRequestBuilder().add_certificate(c, issuer, hashes.SHA1()).build()
            .public_bytes(serialization.Encoding.DER) for c in certs]


def check_answers(answers: list[bytes], expected: list[ocsp.OCSPCertStatus]) -> None:
    for answer, status in zip(answers, expected, strict=True):
        response = ocsp.load_der_ocsp_response(answer)
        if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL \
                or response.certificate_status != status:
            raise RuntimeError(f"unexpected OCSP answer: {response.response_status}")


def measure_ocsp(run: Run, data_dir: Path, url: str | None, unlocked: UnlockedCA, store: Store,
                 cax: CertificateAuthority, csrs: list[bytes], seconds: float) -> None:
    issued = [cax.issue_csr(csrs[i % len(csrs)], email=f"ocsp{i}@example.com", purpose="sign",
                            lint=False).items[0] for i in range(8)]
    cax.revoke(serial=issued[-1].record.serial, reason="key-compromise")
    certs = [item.cert for item in issued]
    requests = ocsp_requests(certs, unlocked.authority.cert)
    expected = [ocsp.OCSPCertStatus.GOOD] * 7 + [ocsp.OCSPCertStatus.REVOKED]
    assert unlocked.ocsp_key is not None
    lookup = store_lookup(store, cax.issuer_fingerprint)
    responder = OCSPResponder(unlocked.authority.cert, unlocked.ocsp_cert, unlocked.ocsp_key,
                              lookup)
    check_answers([responder.respond(r) for r in requests], expected)
    i = [0]

    def one() -> None:
        responder.respond(requests[i[0] % len(requests)])
        i[0] += 1

    run.ocsp["respond_per_s"] = rate_for(one, seconds)
    serials = [c.serial_number for c in certs]
    run.ocsp["lookup_us"] = 1e6 / rate_for(lambda: lookup(serials[i[0] % 8]), seconds / 3)

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    server = ctx.Process(target=_ocsp_server, args=(str(data_dir), url, child), daemon=True)
    server.start()
    try:
        if not parent.poll(60):
            raise RuntimeError("the CA server did not start")
        port = parent.recv()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Content-Type": "application/ocsp-request"}
        check_answers([post(conn, r, headers) for r in requests], expected)
        conn.close()
        out: Any = ctx.Queue()
        _ocsp_client(port, requests, seconds, None, out)
        run.ocsp["http1_per_s"], run.ocsp["http1_ms"] = out.get()
        barrier = ctx.Barrier(2)
        clients = [ctx.Process(target=_ocsp_client, args=(port, requests, seconds, barrier, out))
                   for _ in range(2)]
        for c in clients:
            c.start()
        results = [out.get(timeout=seconds + 120) for _ in clients]
        for c in clients:
            c.join()
        run.ocsp["http2_per_s"] = sum(r[0] for r in results)
        run.ocsp["http2_ms"] = median([r[1] for r in results])
    finally:
        parent.send("stop")
        server.join(30)
        if server.is_alive():
            server.terminate()


# -- a whole run ------------------------------------------------------------------------------


def check_store(store: Store) -> str:
    with store.transaction() as conn:
        issued = conn.execute(schema.issued.select().with_only_columns(
            schema.issued.c.id)).all()
    problems = store.verify_audit_log()
    if problems:
        raise RuntimeError(f"audit log broken: {problems[0]}")
    return f"{len(issued):,} issuance records, audit chain intact ({store.audit_count():,} rows)"


def one_run(backend: str, key_type: str, args: argparse.Namespace,
            csrs: list[bytes]) -> Run:
    run = Run(backend, key_type)
    with tempfile.TemporaryDirectory(prefix="bench-ca-") as tmp, store_url(backend) as url:
        data_dir = Path(tmp) / "data"
        unlocked, store, cax = new_ca(data_dir, url, key_type)
        try:
            measure_issuance(run, unlocked, cax, args.count, args.repeats, csrs,
                             args.bare_seconds)
            measure_parts(run, unlocked, cax, csrs, args.parts)
            if args.profile:
                Path(args.profile).mkdir(parents=True, exist_ok=True)
                profiler = cProfile.Profile()
                profiler.enable()
                for i in range(args.parts):
                    cax.issue_csr(csrs[i % len(csrs)], email=f"prof{i}@example.com",
                                  purpose="sign", lint=False)
                profiler.disable()
                profiler.dump_stats(Path(args.profile) / f"issue-csr-{backend}-{key_type}.prof")
            if args.lint_count:
                measure_lint(run, cax, csrs, args.lint_count)
            run.store_check = check_store(store)
            if args.ocsp_seconds > 0:
                measure_ocsp(run, data_dir, url, unlocked, store, cax, csrs, args.ocsp_seconds)
            if args.crl_entries:
                measure_crl(run, unlocked, store, cax, args.crl_entries, args.crl_repeats)
            run.loads.append(load())
        finally:
            store.close()
    return run


# -- output -----------------------------------------------------------------------------------


def machine_info() -> str:
    cpu = cpu_model()
    import cryptography
    import sqlalchemy

    import smimekit

    rev = git_revision()
    return (f"smimekit {getattr(smimekit, '__version__', '?')} ({rev or '?'}); "
            f"{os.cpu_count()} cores, {cpu}; Python {platform.python_version()}; "
            f"cryptography {cryptography.__version__}; SQLAlchemy {sqlalchemy.__version__}; "
            f"SQLite {sqlite3.sqlite_version}")


def render(runs: list[Run], args: argparse.Namespace, others: dict[str, float]) -> str:
    out = []
    if runs:
        r0 = runs[0]
        out.append(f"{r0.chunks} chunks of {r0.chunk_size:,} certificates per path (total "
                   f"{r0.chunks * r0.chunk_size:,} each), the CA key's bare signing measured "
                   "before each chunk; figures are medians of the chunks; lint off unless "
                   "stated")
        out.append("")
    out.append("| backend | CA key | what | per second | bare sign/s | ratio | ms each |")
    out.append("|---|---|---|---|---|---|---|")
    for r in runs:
        label = KEY_LABEL[r.ca_key]
        bare = median(r.bare)
        rows = [
            (f"bare signing ({r.tbs_size}-byte TBS)", bare, bare, 1.0),
            ("CSR issuance, recorded", median(r.csr), bare, median(r.csr_ratio)),
            ("generated P-256 key issuance, recorded", median(r.gen), bare,
             median(r.gen_ratio)),
        ]
        for what, per_s, b, ratio in rows:
            out.append(f"| {r.backend} | {label} | {what} | {fmt_rate(per_s)} | {fmt_rate(b)}"
                       f" | {ratio:.2f} | {1000 / per_s:.3f} |")
        keygen = median(r.keygen)
        out.append(f"| {r.backend} | {label} | P-256 key generation alone | {fmt_rate(keygen)}"
                   f" | - | {median(r.gen) / keygen:.2f} of a generated issuance"
                   f" | {1000 / keygen:.3f} |")
    out.append("")
    out.append(f"target: issuance >= {TARGET:.0%} of the bare signing rate (ratio >= "
               f"{TARGET:.2f}):")
    for r in runs:
        for path, ratio in (("CSR", median(r.csr_ratio)), ("generated", median(r.gen_ratio))):
            verdict = "met" if ratio >= TARGET else "MISSED"
            out.append(f"  {r.backend:10s} {KEY_LABEL[r.ca_key]:8s} {path:9s} {ratio:.2f} "
                       f"{verdict}")
    if others:
        out.append("")
        out.append("bare signing of the other CA key types (same TBS size; issuance with them: "
                   "--ca-key all):")
        out.append("| CA key | bare sign/s | ms each |")
        out.append("|---|---|---|")
        for key, per_s in others.items():
            out.append(f"| {KEY_LABEL[key]} | {fmt_rate(per_s)} | {1000 / per_s:.3f} |")

    out.append("")
    out.append("where one CSR issuance spends its time (the calls issue_csr makes, timed one by "
               "one, us):")
    out.append("| backend | CA key | live-certificate check | CSR parse + signature check "
               "| build + sign | of which the signature | store transaction | sum "
               "| measured per certificate |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        p = r.parts_us
        total = p["duplicates"] + p["csr"] + p["build_sign"] + p["store"]
        out.append(f"| {r.backend} | {KEY_LABEL[r.ca_key]} | {p['duplicates']:.0f} "
                   f"| {p['csr']:.0f} "
                   f"| {p['build_sign']:.0f} | {p['sign']:.0f} | {p['store']:.0f} "
                   f"| {total:.0f} | {1e6 / median(r.csr):.0f} |")

    lint_runs = [r for r in runs if r.lint_count]
    if lint_runs:
        out.append("")
        out.append("pkilint (CSR issuance with lint=True and lint=False alternated, medians;"
                   " first lint: pkilint building its validator, once per process):")
        out.append("| backend | CA key | n | lint off ms | lint on ms | pkilint ms/cert | lint()"
                   " alone ms | first lint s |")
        out.append("|---|---|---|---|---|---|---|---|")
        for r in lint_runs:
            out.append(f"| {r.backend} | {KEY_LABEL[r.ca_key]} | {r.lint_count} "
                       f"| {r.lint_off_ms:.2f} | {r.lint_on_ms:.2f} "
                       f"| {r.lint_on_ms - r.lint_off_ms:.2f} | {r.lint_alone_ms:.2f} "
                       f"| {'-' if r.lint_first_s < 0 else f'{r.lint_first_s:.2f}'} |")

    crl_runs = [r for r in runs if r.crl]
    if crl_runs:
        out.append("")
        out.append(f"CRL (revocations inserted in bulk for setup; medians of "
                   f"{crl_runs[0].crl['repeats']:.0f}):")
        out.append("| backend | CA key | entries | read from store s | build_crl s | DER size "
                   "| publish_crl s (whole path) | bulk insert s |")
        out.append("|---|---|---|---|---|---|---|---|")
        for r in crl_runs:
            c = r.crl
            out.append(f"| {r.backend} | {KEY_LABEL[r.ca_key]} | {c['entries']:,.0f} "
                       f"| {c['load_s']:.3f} | {c['build_s']:.3f} | {fmt_size(int(c['size']))} "
                       f"| {c['publish_s']:.3f} | {c['insert_s']:.2f} |")

    ocsp_runs = [r for r in runs if r.ocsp]
    if ocsp_runs:
        out.append("")
        out.append(f"OCSP (store lookup; {args.ocsp_seconds:g} s per figure; CAServer in its own "
                   "process, keep-alive http.client POSTs):")
        out.append("| backend | CA key | respond() in process /s | store lookup us | HTTP 1 client"
                   " req/s | ms each | HTTP 2 clients req/s | ms each |")
        out.append("|---|---|---|---|---|---|---|---|")
        for r in ocsp_runs:
            o = r.ocsp
            out.append(f"| {r.backend} | {KEY_LABEL[r.ca_key]} | {fmt_rate(o['respond_per_s'])} "
                       f"| {o['lookup_us']:.0f} | {fmt_rate(o['http1_per_s'])} "
                       f"| {o['http1_ms'] * 1000:.2f} | {fmt_rate(o['http2_per_s'])} "
                       f"| {o['http2_ms'] * 1000:.2f} |")
    out.append("")
    for r in runs:
        out.append(f"store ({r.backend}, {KEY_LABEL[r.ca_key]}): {r.store_check}; load average "
                   f"(1/5 min) per chunk {', '.join(r.loads)}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=10_000,
                        help="certificates per issuance path (default 10,000)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny counts, a few seconds (the smoke test)")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both",
                        help="store backend(s); PostgreSQL only when a server answers")
    parser.add_argument("--ca-key", choices=(*KEY_TYPES, "all"), default="p384",
                        help="the CA's key type (default p384, the CA's default)")
    parser.add_argument("--repeats", type=int, help="chunks the count is split into (5)")
    parser.add_argument("--crl-entries", type=int, help="revoked serials in the CRL (100,000)")
    parser.add_argument("--crl-repeats", type=int, help="CRL builds and publishes (3)")
    parser.add_argument("--lint-count", type=int,
                        help="issuances with lint on (and as many off) (min(count, 500))")
    parser.add_argument("--ocsp-seconds", type=float, help="seconds per OCSP figure (3)")
    parser.add_argument("--profile", metavar="DIR",
                        help="write a cProfile of CSR issuances per backend to DIR")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    quick = args.quick
    if quick and args.count == 10_000:
        args.count = 40
    args.repeats = args.repeats or (2 if quick else 5)
    args.crl_entries = args.crl_entries if args.crl_entries is not None else (
        2_000 if quick else 100_000)
    args.crl_repeats = args.crl_repeats or (1 if quick else 3)
    args.lint_count = args.lint_count if args.lint_count is not None else (
        3 if quick else min(args.count, 500))
    args.ocsp_seconds = args.ocsp_seconds if args.ocsp_seconds is not None else (
        0.3 if quick else 3.0)
    args.bare_seconds = 0.05 if quick else 0.3
    args.parts = max(1, min(args.count // args.repeats, 20 if quick else 1000))

    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    if "postgresql" in backends and pg_user(PG_DB) is None:
        print(f"PostgreSQL: no server answers at {PG_HOST}:{PG_PORT} (database {PG_DB}); "
              "skipped", file=sys.stderr)
        backends.remove("postgresql")
        if not backends:
            return 1
    keys = list(KEY_TYPES) if args.ca_key == "all" else [args.ca_key]

    print(machine_info())
    print(f"load average (1/5 min) at start: {load()}")
    print()
    csrs = make_csrs(CSR_POOL)
    runs = []
    for key in keys:
        for backend in backends:
            print(f"running: {backend}, CA key {KEY_LABEL[key]} ...", file=sys.stderr,
                  flush=True)
            runs.append(one_run(backend, key, args, csrs))
    others: dict[str, float] = {}
    if args.ca_key != "all":
        tbs = b"\x30" + bytes(runs[0].tbs_size - 1)  # the size is what matters to the signer
        from smimekit.ca.authority import CAKeyType
        from smimekit.keys.signer import LocalSigner

        for key in KEY_TYPES:
            if key != args.ca_key:
                signer = LocalSigner(CAKeyType(key).generate())
                others[key] = median([rate_for(lambda s=signer: s.sign(tbs), args.bare_seconds)
                                      for _ in range(3)])
    print(render(runs, args, others))
    if args.json:
        Path(args.json).write_text(json.dumps([r.__dict__ for r in runs], indent=2,
                                              default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
