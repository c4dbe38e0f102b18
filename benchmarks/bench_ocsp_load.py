#!/usr/bin/env python3
"""Benchmark `smimekit ca serve` as an OCSP responder under load, beside `openssl ocsp`.

    .venv/bin/python benchmarks/bench_ocsp_load.py [--quick] [--backend sqlite|postgresql|both]
                                                   [--seconds S] [--clients 1,8,64]

For each store backend (SQLite in a temporary data directory; PostgreSQL at 127.0.0.1:5432 in
a database of its own, created and dropped by the script) it:

1. makes a CA with ``smimekit ca init``, issues ``--certs`` certificates through the library
   (revoking every ``--revoke-every``-th), and writes one DER OCSP request per certificate:
   SHA-1 CertID, no nonce, as Thunderbird/NSS send them (RFC 5019);
2. starts ``smimekit ca serve`` (only the OCSP signer's key; ``--workers`` when its ``--help``
   offers it) and talks HTTP to it only: Debian's ``wrk`` (keep-alive, ``--latency``) with a
   Lua script that POSTs the requests in turn and counts answers that are an OCSP
   ``tryLater`` (DER ``30 03 0a 01 03``), any other unsuccessful OCSP status, or an HTTP
   error, for 1, 8 and 64 connections, ``--seconds`` each;
3. the same while ``smimekit ca enroll`` enrols ``--enrol`` people (1,000) in another
   process, in rounds until the enrolment is over;
4. ``smimekit ca crl`` with ``--crl-entries`` (100,000) revocations in the store (inserted in
   bulk, one multi-row INSERT per 10,000 through the store's own table definition, for setup
   only) while wrk drives OCSP with 8 connections: the CRL's time and size and the OCSP
   figures during it;
5. ``openssl ocsp -index ... -multi 2`` (its index.txt written from the same certificates,
   the same P-384 responder key and certificate) under the same wrk load and requests, and
   the ratio of the two.

Figures only, nothing asserted: the issue's goal (2,000 answers/s on 2 cores with p99 under
50 ms, no tryLater during enrolment) is marked met or missed. wrk is needed (``make bench``
installs it); openssl is optional (``--no-openssl``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchdb import PG_HOST, PG_PORT, fresh_database, pg_user
from benchinfo import cpu_model, git_revision
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

HERE = Path(__file__).resolve()
PASSPHRASE = "bench passphrase, long enough"
PASS_ENV = "SMIMEKIT_BENCH_PASSPHRASE"
GOAL_RATE, GOAL_P99_MS = 2000.0, 50.0
SERVER_START_TIMEOUT = 60.0

# The Lua side of wrk: POST each request in turn (each thread from its own offset), count
# what came back. An unsuccessful OCSPResponse is exactly 30 03 0a 01 <status>.
WRK_LUA = r"""
local bodies = {}
local threads = {}
local index = 0
ok, try_later, unsuccessful, http_errors = 0, 0, 0, 0  -- globals: done() reads them

local function unhex(s)
  return (s:gsub('..', function(cc) return string.char(tonumber(cc, 16)) end))
end

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then table.insert(bodies, unhex(line)) end
  end
  index = (id * 7919) % #bodies
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/ocsp-request"
end

function request()
  index = index % #bodies + 1
  return wrk.format(nil, "/ocsp", nil, bodies[index])
end

function response(status, headers, body)
  if status ~= 200 then
    http_errors = http_errors + 1
  elseif #body == 5 and body:byte(1) == 0x30 and body:byte(5) ~= 0 then
    if body:byte(5) == 3 then try_later = try_later + 1 else unsuccessful = unsuccessful + 1 end
  elseif body:byte(1) == 0x30 then
    ok = ok + 1
  else
    unsuccessful = unsuccessful + 1
  end
end

function done(summary, latency, requests)
  local t = {ok = 0, try_later = 0, unsuccessful = 0, http_errors = 0}
  for _, thread in ipairs(threads) do
    for k, _ in pairs(t) do t[k] = t[k] + (thread:get(k) or 0) end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "max_us": %d, "ok": %d, "try_later": %d, "unsuccessful": %d, ' ..
    '"http_errors": %d, "connect": %d, "read": %d, "write": %d, "status": %d, ' ..
    '"timeout": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, t.ok, t.try_later, t.unsuccessful, t.http_errors,
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


# -- small helpers ----------------------------------------------------------------------------


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f}/{five:.2f}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}"


def fmt_size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} KB"


def smimekit_cmd(data_dir: Path, url: str | None) -> list[str]:
    # the interpreter running this script, so a --server-pythonpath checkout is used as well
    cmd = [sys.executable, "-c", "import sys; from smimekit.cli.main import main; "
           "sys.exit(main())", "--data-dir", str(data_dir)]
    return cmd + (["--database-url", url] if url else [])


def env_for(pythonpath: str | None = None) -> dict[str, str]:
    env = dict(os.environ, **{PASS_ENV: PASSPHRASE, "SMIMEKIT_ACTOR": "bench"})
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return env


# -- PostgreSQL -------------------------------------------------------------------------------


@contextlib.contextmanager
def database(backend: str) -> Iterator[str | None]:
    """None for SQLite (the data directory's file); a PostgreSQL URL of a fresh database."""
    if backend == "sqlite":
        yield None
        return
    with fresh_database("smimekit_bench") as url:
        yield url


# -- the CA -----------------------------------------------------------------------------------


@dataclass
class Setup:
    data_dir: Path
    url: str | None
    work: Path
    issuing: x509.Certificate
    certs: list[x509.Certificate]
    revoked: dict[int, dt.datetime]
    requests_file: Path
    fingerprint: str


def make_ca(work: Path, url: str | None, count: int, revoke_every: int) -> Setup:
    from smimekit.ca.home import CAHome
    from smimekit.ca.issuance import CertificateAuthority, SubscriberKeyType
    from smimekit.store import Store

    data_dir = work / "data"
    subprocess.run([*smimekit_cmd(data_dir, url), "ca", "init", "--organization", "Bench Org",
                    "--base-url", "http://pki.example.com", "--passphrase-env", PASS_ENV],
                   env=env_for(), check=True, capture_output=True, timeout=300)
    home = CAHome(data_dir)
    store = Store.open(url, data_dir)
    if home.has_audit_key():
        store.use_audit_key(home.audit_key())
    try:
        cax = CertificateAuthority(home.unlock(PASSPHRASE.encode()), store, actor="bench")
        certs, revoked = [], {}
        for i in range(count):
            cert = cax.issue_generated(f"ocsp{i}@example.com", purpose="sign",
                                       sign_key=SubscriberKeyType.P256, lint=False).items[0].cert
            certs.append(cert)
        for i, cert in enumerate(certs):
            if i % revoke_every == revoke_every - 1:
                cax.revoke(serial=format(cert.serial_number, "x"), reason="keyCompromise")
        issuing, fp = cax.ca.authority.cert, cax.issuer_fingerprint
        for cert in certs:
            status = store.issued_status(serial=format(cert.serial_number, "x"),
                                         issuer_fingerprint=fp)
            if status is not None and status.revoked_at is not None:
                revoked[cert.serial_number] = status.revoked_at
    finally:
        store.close()
    lines = []
    for cert in certs:
        der = ocsp.OCSPRequestBuilder().add_certificate(
            cert, issuing, hashes.SHA1()).build().public_bytes(serialization.Encoding.DER)
        lines.append(der.hex())
    requests_file = work / "requests.hex"
    requests_file.write_text("\n".join(lines) + "\n")
    return Setup(data_dir, url, work, issuing, certs, revoked, requests_file, fp)


def in_process(setup: Setup, seconds: float) -> dict[str, float]:
    """``OCSPResponder.respond()`` answers/s in this process over the same store and
    requests, with the answer cache on (the default) and off (every answer signed)."""
    from smimekit.ca.home import CAHome
    from smimekit.ca.ocsp import OCSPResponder, store_lookup
    from smimekit.store import Store

    signer = CAHome(setup.data_dir).open_ocsp_signer(PASSPHRASE.encode())
    bodies = [bytes.fromhex(line) for line in setup.requests_file.read_text().split()]
    store = Store.open(setup.url, setup.data_dir)
    figures = {}
    try:
        for label, kw in (("cached", {}), ("signed", {"cache_size": 0})):
            responder = OCSPResponder(signer.issuing, signer.cert, signer.key,
                                      store_lookup(store, setup.fingerprint), **kw)
            for body in bodies:  # warm: one answer per certificate signed and kept
                responder.respond(body)
            done, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                for body in bodies:
                    responder.respond(body)
                done += len(bodies)
            figures[label] = done / (time.perf_counter() - start)
    finally:
        store.close()
    return figures


def check_answers(setup: Setup, url: str) -> str:
    """One answer per kind, read back: the responder says what the store says."""
    import urllib.request

    seen = []
    revoked = [c for c in setup.certs if c.serial_number in setup.revoked][:1]
    for cert in setup.certs[:1] + revoked:
        body = ocsp.OCSPRequestBuilder().add_certificate(
            cert, setup.issuing, hashes.SHA1()).build().public_bytes(
            serialization.Encoding.DER)
        req = urllib.request.Request(f"{url}/ocsp", data=body, method="POST",
                                     headers={"Content-Type": "application/ocsp-request"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            answer = ocsp.load_der_ocsp_response(resp.read())
        want = (ocsp.OCSPCertStatus.REVOKED if cert.serial_number in setup.revoked
                else ocsp.OCSPCertStatus.GOOD)
        if answer.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL \
                or answer.certificate_status != want:
            raise RuntimeError(f"{url}: wrong answer for serial {cert.serial_number:x}")
        seen.append(want.name.lower())
    return "+".join(seen)


# -- servers ----------------------------------------------------------------------------------


class Server:
    """A responder process on loopback, stopped with SIGINT (then SIGKILL)."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str],
                 url_pattern: str | None, cwd: Path, *, new_session: bool = True) -> None:
        """``url_pattern`` finds the URL in what the server prints (None: do not wait).
        ``new_session`` False for a server that makes its own process group (openssl's
        ``-multi`` refuses to start as a session leader)."""
        self.name = name
        self.log = cwd / f"{name.replace(' ', '_')}.log"
        self._log_file = self.log.open("wb")
        self.proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=self._log_file,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=new_session)
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        self.url = ""
        if url_pattern is None:
            return
        while time.monotonic() < deadline:
            match = re.search(url_pattern, self.log.read_text(errors="replace"))
            if match:
                self.url = match.group(1).rstrip("/")
                break
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        if not self.url:
            self.stop()
            raise RuntimeError(f"{name} did not start: {self.log.read_text()[-2000:]}")

    def _signal_group(self, sig: int) -> None:
        # the server's own process group: its workers (or openssl's children) too
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self._signal_group(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._signal_group(signal.SIGKILL)  # children left behind, if any
        self._log_file.close()


def start_smimekit(setup: Setup, workers: int | None, pythonpath: str | None) -> Server:
    base = smimekit_cmd(setup.data_dir, setup.url)
    help_text = subprocess.run([*base, "ca", "serve", "--help"], env=env_for(pythonpath),
                               capture_output=True, text=True, check=False).stdout
    cmd = [*base, "ca", "serve", "--host", "127.0.0.1", "--port", str(free_port()),
           "--passphrase-env", PASS_ENV]
    if workers and "--workers" in help_text:
        cmd += ["--workers", str(workers)]
    server = Server("smimekit ca serve", cmd, env_for(pythonpath),
                    r"on (http://\S+) \(Ctrl-C to stop\)", setup.work)
    server.name += f" (--workers {workers})" if "--workers" in cmd else ""
    return server


def write_openssl_files(setup: Setup) -> tuple[Path, Path, Path, Path]:
    """index.txt from the same certificates, and the same OCSP signer (key in PEM)."""
    from smimekit.ca.home import CAHome

    signer = CAHome(setup.data_dir).open_ocsp_signer(PASSPHRASE.encode())
    folder = setup.work / "openssl"
    folder.mkdir(exist_ok=True)
    pem = serialization.Encoding.PEM
    (folder / "issuing.pem").write_bytes(setup.issuing.public_bytes(pem))
    (folder / "ocsp.pem").write_bytes(signer.cert.public_bytes(pem))
    key = folder / "ocsp.key"
    key.touch(mode=0o600)
    key.write_bytes(signer.key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))

    def when(t: dt.datetime) -> str:
        return t.astimezone(dt.UTC).strftime("%y%m%d%H%M%SZ")  # UTCTime, as openssl ca

    rows = []
    for cert in setup.certs:
        serial = format(cert.serial_number, "X")
        serial = serial if len(serial) % 2 == 0 else "0" + serial
        subject = "/" + "/".join(a.rfc4514_string() for a in cert.subject)
        revoked_at = setup.revoked.get(cert.serial_number)
        status, rev = ("R", f"{when(revoked_at)},keyCompromise") if revoked_at else ("V", "")
        rows.append("\t".join([status, when(cert.not_valid_after_utc), rev, serial, "unknown",
                               subject]))
    (folder / "index.txt").write_text("\n".join(rows) + "\n")
    (folder / "index.txt.attr").write_text("unique_subject = no\n")
    return folder / "index.txt", folder / "issuing.pem", folder / "ocsp.pem", key


def start_openssl(setup: Setup) -> Server:
    index, ca, rsigner, rkey = write_openssl_files(setup)
    port = free_port()
    # openssl prints "ACCEPT [::]:PORT PID=..." once it listens. Do not probe the port: a
    # connection closed without a request stalled `openssl ocsp -multi` (3.0.22) here.
    server = Server("openssl ocsp", [
        "openssl", "ocsp", "-index", str(index), "-CA", str(ca), "-rsigner", str(rsigner),
        "-rkey", str(rkey), "-port", str(port), "-multi", "2", "-nmin", "720",
        "-ignore_err"], dict(os.environ), rf"ACCEPT (\S+:{port})", setup.work,
        new_session=False)
    time.sleep(0.5)  # its children start after the parent listens
    server.url = f"http://127.0.0.1:{port}"
    server.name += " -multi 2"
    return server


# -- wrk --------------------------------------------------------------------------------------


@dataclass
class Figure:
    phase: str
    server: str
    connections: int
    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    ok: int
    try_later: int
    unsuccessful: int
    http_errors: int
    socket_errors: int
    load: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


def wrk_command(url: str, connections: int, seconds: float, script: Path,
                requests_file: Path) -> list[str]:
    threads = max(1, min(connections, 2))
    return ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s",
            "--timeout", "10s", "--latency", "-s", str(script), f"{url}/ocsp", "--",
            str(requests_file)]


def parse_wrk(out: str, phase: str, server: str, connections: int, loadavg: str) -> Figure:
    match = re.search(r"^BENCH_JSON (\{.*\})$", out, re.MULTILINE)
    if not match:
        raise RuntimeError(f"wrk printed no figures:\n{out[-2000:]}")
    d = json.loads(match.group(1))
    return Figure(phase, server, connections, d["requests"], d["duration_us"] / 1e6,
                  d["p50_us"] / 1e3, d["p90_us"] / 1e3, d["p99_us"] / 1e3, d["max_us"] / 1e3,
                  d["ok"], d["try_later"], d["unsuccessful"], d["http_errors"],
                  d["connect"] + d["read"] + d["write"] + d["timeout"], loadavg)


def run_wrk(url: str, connections: int, seconds: float, script: Path, requests_file: Path,
            phase: str, server: str) -> Figure:
    loadavg = load()
    cmd = wrk_command(url, connections, seconds, script, requests_file)
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60,
                            check=False)
    if result.returncode != 0:
        raise RuntimeError(f"wrk failed ({result.returncode}): {result.stderr[-2000:]}")
    return parse_wrk(result.stdout, phase, server, connections, loadavg)


class WrkUntilStopped:
    """wrk with a long duration, stopped by SIGINT (it prints its figures then)."""

    def __init__(self, url: str, connections: int, script: Path, requests_file: Path,
                 limit: float) -> None:
        self.connections = connections
        self.loadavg = load()
        self.proc = subprocess.Popen(wrk_command(url, connections, limit, script,
                                                 requests_file),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def stop(self, phase: str, server: str) -> Figure:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        out, err = self.proc.communicate(timeout=60)
        return parse_wrk(out + err, phase, server, self.connections, self.loadavg)


# -- the phases -------------------------------------------------------------------------------


def baseline(url: str, server: str, args: argparse.Namespace, script: Path,
             requests_file: Path, phase: str) -> list[Figure]:
    return [run_wrk(url, c, args.seconds, script, requests_file, phase, server)
            for c in args.clients]


def during_enrolment(setup: Setup, url: str, server: str, args: argparse.Namespace,
                     script: Path) -> tuple[list[Figure], dict[str, Any]]:
    people = setup.work / "people.csv"
    people.write_text("email,name\n" + "".join(
        f"person{i}@example.com,Person {i}\n" for i in range(args.enrol)))
    out = setup.work / "enrolled"
    cmd = [*smimekit_cmd(setup.data_dir, setup.url), "ca", "enroll", "--csv", str(people),
           "--out", str(out), "--no-progress", "--passphrase-env", PASS_ENV]
    if args.enrol_key_type:
        cmd += ["--key-type", args.enrol_key_type]
    log = (setup.work / "enrol.log").open("wb")
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env_for(), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    figures: list[Figure] = []
    rounds = 0
    try:
        while rounds == 0 or proc.poll() is None:
            if time.perf_counter() - start > args.enrol_timeout:
                break
            rounds += 1
            for c in args.clients:
                if rounds > 1 and proc.poll() is not None:
                    break
                figures.append(run_wrk(url, c, args.seconds, script, setup.requests_file,
                                       f"enrolment round {rounds}", server))
        stopped = proc.poll() is None
        if stopped:  # the timeout: Ctrl-C twice stops it cleanly (docs: resumable)
            proc.send_signal(signal.SIGINT)
            time.sleep(1)
            proc.send_signal(signal.SIGINT)
        proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
    elapsed = time.perf_counter() - start
    results = out / "results.csv"
    done = max(0, len(results.read_text().splitlines()) - 1) if results.exists() else 0
    info = {"people": args.enrol, "enrolled": done, "seconds": elapsed, "rounds": rounds,
            "exit": proc.returncode, "stopped_at_timeout": stopped,
            "log": (setup.work / "enrol.log").read_text(errors="replace")[-300:].strip()}
    return figures, info


def insert_revocations(setup: Setup, entries: int) -> float:
    """Setup only, not the CA's revoke path: random 152-bit serials, every reason, dates in
    the last 90 days, one multi-row INSERT per 10,000 in one transaction."""
    from smimekit.ca.crl import REASONS
    from smimekit.store import Store, schema

    reasons: list[str | None] = [None, *REASONS]
    base = dt.datetime.now(dt.UTC).replace(microsecond=0)
    rows = [{
        "serial": format(secrets.randbits(152) | (1 << 151), "x"),
        "issuer_fingerprint": setup.fingerprint,
        "revoked_at": base - dt.timedelta(seconds=secrets.randbelow(90 * 86400)),
        "reason": reasons[i % len(reasons)],
    } for i in range(entries)]
    store = Store.open(setup.url, setup.data_dir)
    try:
        start = time.perf_counter()
        with store.transaction() as conn:
            for i in range(0, len(rows), 10_000):
                conn.execute(schema.revocations.insert(), rows[i:i + 10_000])
        return time.perf_counter() - start
    finally:
        store.close()


def crl_under_load(setup: Setup, url: str, server: str, args: argparse.Namespace,
                   script: Path) -> tuple[Figure, dict[str, Any]]:
    insert_s = insert_revocations(setup, args.crl_entries)
    crl_path = setup.work / "issuing.crl"
    wrk = WrkUntilStopped(url, args.crl_clients, script, setup.requests_file,
                          limit=args.crl_timeout + 30)
    time.sleep(1.0)  # wrk connected and running
    start = time.perf_counter()
    result = subprocess.run([*smimekit_cmd(setup.data_dir, setup.url), "ca", "crl", "-o",
                             str(crl_path), "--passphrase-env", PASS_ENV], env=env_for(),
                            capture_output=True, text=True, timeout=args.crl_timeout,
                            check=False)
    crl_s = time.perf_counter() - start
    figure = wrk.stop("during ca crl", server)
    if result.returncode != 0:
        raise RuntimeError(f"ca crl failed: {result.stderr[-2000:]}")
    der = crl_path.read_bytes()
    entries = len(x509.load_der_x509_crl(der))
    return figure, {"insert_s": insert_s, "crl_s": crl_s, "size": len(der),
                    "entries": entries}


# -- the run ----------------------------------------------------------------------------------


@dataclass
class Run:
    backend: str
    figures: list[Figure] = field(default_factory=list)
    enrolment: dict[str, Any] = field(default_factory=dict)
    crl: dict[str, Any] = field(default_factory=dict)
    checked: str = ""
    in_process: dict[str, float] = field(default_factory=dict)
    server: str = ""
    openssl: str = ""


def one_run(backend: str, args: argparse.Namespace, script: Path) -> Run:
    run = Run(backend)
    with tempfile.TemporaryDirectory(prefix="smimekit-ocsp-bench-") as tmp, \
            database(backend) as url:
        work = Path(tmp)
        print(f"{backend}: CA and {args.certs} certificates ...", file=sys.stderr, flush=True)
        setup = make_ca(work, url, args.certs, args.revoke_every)
        run.in_process = in_process(setup, min(args.seconds, 3.0))
        server = start_smimekit(setup, args.workers, args.server_pythonpath)
        run.server = server.name
        try:
            run.checked = check_answers(setup, server.url)
            print(f"{backend}: {server.name} at {server.url}: quiet ...", file=sys.stderr,
                  flush=True)
            run.figures += baseline(server.url, "smimekit", args, script, setup.requests_file,
                                    "quiet")
            if args.enrol:
                print(f"{backend}: during an enrolment of {args.enrol} ...", file=sys.stderr,
                      flush=True)
                figures, run.enrolment = during_enrolment(setup, server.url, "smimekit", args,
                                                          script)
                run.figures += figures
            if args.crl_entries:
                print(f"{backend}: ca crl with {args.crl_entries:,} entries under load ...",
                      file=sys.stderr, flush=True)
                figure, run.crl = crl_under_load(setup, server.url, "smimekit", args, script)
                run.figures.append(figure)
        finally:
            server.stop()
        if args.openssl and shutil.which("openssl"):
            print(f"{backend}: openssl ocsp ...", file=sys.stderr, flush=True)
            # A fresh openssl per figure: a connection that wrk leaves without a request at
            # the end of a run stalls its -multi children (3.0.22), as a bare probe does.
            for c in args.clients:
                peer = start_openssl(setup)
                run.openssl = peer.name
                try:
                    if c == args.clients[0]:
                        check_answers(setup, peer.url)
                    run.figures.append(run_wrk(peer.url, c, args.seconds, script,
                                               setup.requests_file, "quiet", "openssl"))
                finally:
                    peer.stop()
    return run


# -- output -----------------------------------------------------------------------------------


def machine_info() -> str:
    cpu = cpu_model()
    import cryptography

    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    wrk_version = (wrk.stdout + wrk.stderr).split("[")[0].strip() or "wrk ?"
    openssl = subprocess.run(["openssl", "version"], capture_output=True, text=True,
                             check=False).stdout.strip() if shutil.which("openssl") else "-"
    rev = git_revision()
    return (f"smimekit ({rev or '?'}); {os.cpu_count()} cores, {cpu}; Python "
            f"{platform.python_version()}; cryptography {cryptography.__version__}; SQLite "
            f"{sqlite3.sqlite_version}; {wrk_version}; {openssl}")


def row(backend: str, f: Figure, ratio: str = "") -> str:
    bad = f.try_later + f.unsuccessful + f.http_errors
    return (f"| {backend} | {f.server} | {f.phase} | {f.connections} | {fmt_rate(f.rate)} "
            f"| {f.p50_ms:.2f} | {f.p99_ms:.2f} | {f.try_later} | {bad - f.try_later} "
            f"| {f.socket_errors} | {ratio} | {f.load} |")


def render(runs: list[Run], args: argparse.Namespace) -> str:
    out = [f"OCSP under load: wrk, keep-alive POSTs of {args.certs} nonce-less requests "
           f"(SHA-1 CertID, 1 in {args.revoke_every} revoked), {args.seconds:g} s per figure:",
           "| backend | server | phase | connections | answers/s | p50 ms | p99 ms | tryLater "
           "| other errors | socket errors | x openssl (quiet) | load 1/5 min |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        peer = {f.connections: f for f in r.figures if f.server == "openssl"}
        for f in r.figures:
            ratio = ""
            if f.server == "smimekit" and f.phase == "quiet" and f.connections in peer \
                    and peer[f.connections].rate:
                ratio = f"{f.rate / peer[f.connections].rate:.2f}"
            out.append(row(r.backend, f, ratio))
    out.append("")
    for r in runs:
        ours = [f for f in r.figures if f.server == "smimekit"]
        quiet = [f for f in ours if f.phase == "quiet"]
        enrol = [f for f in ours if f.phase.startswith("enrolment")]
        meeting = [f for f in quiet if f.rate >= GOAL_RATE and f.p99_ms < GOAL_P99_MS]
        best = max(meeting or quiet, key=lambda f: f.rate, default=None)
        met_at = ", ".join(str(f.connections) for f in meeting)
        missed_at = ", ".join(str(f.connections) for f in quiet if f not in meeting)
        try_later = sum(f.try_later for f in enrol)
        errors = sum(f.try_later + f.unsuccessful + f.http_errors for f in ours)
        out.append(f"goal ({r.backend}): >= {GOAL_RATE:,.0f} answers/s with p99 < "
                   f"{GOAL_P99_MS:g} ms: "
                   + (f"met at {met_at} connections" if meeting else "missed")
                   + (f", missed at {missed_at}" if meeting and missed_at else "")
                   + (f" (best {fmt_rate(best.rate)}/s at {best.connections} connections, "
                      f"p99 {best.p99_ms:.1f} ms)" if best else "")
                   + f"; tryLater during enrolment: {try_later}; unsuccessful or HTTP errors "
                   f"in all smimekit runs: {errors}")
        if r.enrolment:
            e = r.enrolment
            keys = args.enrol_key_type or "default keys"
            out.append(f"enrolment ({r.backend}, {keys}): {e['enrolled']} of {e['people']} "
                       f"people in "
                       f"{e['seconds']:.1f} s ({e['enrolled'] / e['seconds']:.1f}/s), "
                       f"{e['rounds']} wrk round(s), exit {e['exit']}"
                       + (" (stopped at --enrol-timeout)" if e["stopped_at_timeout"] else ""))
        if r.crl:
            c = r.crl
            out.append(f"ca crl ({r.backend}, OCSP under load with {args.crl_clients} "
                       f"connections meanwhile): {c['entries']:,} entries, {c['crl_s']:.2f} s "
                       f"(process start included), {fmt_size(c['size'])}; bulk insert of the "
                       f"revocations (setup) {c['insert_s']:.2f} s")
        if r.in_process:
            out.append(f"respond() in process ({r.backend}, store lookup included): "
                       f"{fmt_rate(r.in_process['cached'])}/s with the answer cache, "
                       f"{fmt_rate(r.in_process['signed'])}/s signing every answer")
        out.append(f"server ({r.backend}): {r.server}; answers checked: {r.checked}"
                   + (f"; peer: {r.openssl}" if r.openssl else ""))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="2 s per figure, 60 certificates, 30 people, 2,000 CRL entries")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--seconds", type=float, help="seconds per wrk figure (10)")
    parser.add_argument("--clients", default="1,8,64", help="connection counts (1,8,64)")
    parser.add_argument("--certs", type=int, help="certificates asked about (300)")
    parser.add_argument("--revoke-every", type=int, default=10,
                        help="revoke every Nth certificate (10)")
    parser.add_argument("--enrol", type=int, help="people enrolled meanwhile (1,000; 0: none)")
    parser.add_argument("--enrol-key-type", metavar="TYPE",
                        help="ca enroll --key-type (default: its own, P-256 to sign and "
                             "RSA-3072 to encrypt)")
    parser.add_argument("--enrol-timeout", type=float, default=1800.0,
                        help="stop the enrolment after this many seconds (1,800)")
    parser.add_argument("--crl-entries", type=int, help="revocations in the CRL (100,000)")
    parser.add_argument("--crl-clients", type=int, default=8,
                        help="wrk connections during ca crl (8)")
    parser.add_argument("--crl-timeout", type=float, default=600.0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2,
                        help="passed to ca serve when it offers --workers (the core count)")
    parser.add_argument("--no-openssl", dest="openssl", action="store_false",
                        help="skip the openssl ocsp comparison")
    parser.add_argument("--server-pythonpath", metavar="DIR",
                        help="run ca serve with PYTHONPATH=DIR (another checkout's src, for a "
                             "before/after)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    quick = args.quick
    args.seconds = args.seconds or (2.0 if quick else 10.0)
    args.certs = args.certs or (60 if quick else 300)
    args.enrol = args.enrol if args.enrol is not None else (30 if quick else 1000)
    args.crl_entries = args.crl_entries if args.crl_entries is not None else (
        2_000 if quick else 100_000)
    try:
        args.clients = [int(c) for c in args.clients.split(",") if c.strip()]
    except ValueError:
        parser.error("--clients: comma-separated numbers")
    if not args.clients or min(args.clients) < 1:
        parser.error("--clients: at least one, each >= 1")
    if shutil.which("wrk") is None:
        print("wrk is not installed: 'make bench' installs it (apt-get install wrk)",
              file=sys.stderr)
        return 1

    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    if "postgresql" in backends and pg_user() is None:
        print(f"PostgreSQL: no server answers at {PG_HOST}:{PG_PORT}; skipped",
              file=sys.stderr)
        backends.remove("postgresql")
        if not backends:
            return 1
    print(machine_info())
    if args.server_pythonpath:
        print(f"ca serve runs the code in {args.server_pythonpath} (--server-pythonpath)")
    print(f"load average (1/5 min) at start: {load()}")
    print()
    runs = []
    with tempfile.TemporaryDirectory(prefix="smimekit-wrk-") as tmp:
        script = Path(tmp) / "ocsp.lua"
        script.write_text(WRK_LUA)
        for backend in backends:
            runs.append(one_run(backend, args, script))
    print(render(runs, args))
    if args.json:
        Path(args.json).write_text(json.dumps(
            [{**r.__dict__, "figures": [{**f.__dict__, "rate": f.rate} for f in r.figures]}
             for r in runs], indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
