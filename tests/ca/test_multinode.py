"""The multi-node deployment of docs/store.md ("Multi-node deployment") run for real (issue 9).

One store (a PostgreSQL database of its own, or one SQLite file), a CA made with the CLI,
several ``smimekit ca serve`` nodes as subprocesses on loopback, and several workers running
``ca revoke``, ``ca crl`` and ``ca issue`` (four of them for the same address and purpose) as
CLI processes at once, while OCSP clients ask the nodes. Afterwards every node, the store and
``openssl ocsp`` must agree. On PostgreSQL each of three nodes has a data directory of its
own holding only :data:`SERVING_FILES`. On SQLite (one host) the CLI processes share the CA's
data directory, and of two nodes one runs on it and one on such a copy; the file is named by
an absolute ``--database-url sqlite:///...`` from ``ca init`` on, as a copy of ``ca.json``
must name the same file.

The nodes are reached over HTTP only (the server behind ``ca serve`` may change). Bounded:
every CLI process has a deadline, node start-up and shutdown have bounds, the OCSP clients
stop after a fixed number of rounds.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from backends import PG_DB, PG_HOST, PG_PORT, _pg_user
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from loopback import TcpRelay, free_port
from sqlalchemy import select

from smimekit.ca.home import CAHome
from smimekit.ca.issuance import CertificateAuthority, SubscriberKeyType, fingerprint
from smimekit.cli.main import main
from smimekit.store import Store, schema

pytestmark = pytest.mark.slow

PASS = "correct horse battery staple"
SERVING_FILES = frozenset({"ca.json", "root.pem", "issuing.pem", "ocsp.pem", "ocsp.p12",
                           "root.crl"})
"""What a serving node's ``<data-dir>/ca`` holds: without any of the first five ``ca serve``
refuses to start (test_serving_node_refuses_to_start_without_each_file); ``root.crl`` is
what it serves at /crl/root.crl."""
NOT_ON_SERVING_NODES = ("issuing.p12", "root.p12", "vault.p12", "audit.key")
CLI_DEADLINE = 120
"""Seconds each CLI process may take (the machine is small and shared)."""
NODE_START_DEADLINE = 60
NODE_STOP_DEADLINE = 10
TARGETS, BYSTANDERS = 6, 3
"""Certificates issued before the nodes start: TARGETS are revoked meanwhile, BYSTANDERS
stay good."""
REVOKE_WORKERS, CRL_WORKERS, CRLS_EACH, ISSUE_WORKERS = 2, 2, 3, 4
OCSP_ROUNDS, OCSP_PAUSE = 3000, 0.02
"""Upper bound on the OCSP client's requests while the workers run, and its pause between
two (so that it asks throughout, on a shared machine)."""


# -- the store ------------------------------------------------------------------------------


@dataclass
class Deployment:
    backend: str
    url: str
    """PostgreSQL: a database of its own; SQLite: a file outside the CA's data directory."""
    tmp: Path
    ca_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        self.ca_dir = self.tmp / "ca-host"

    def store_args(self) -> list[str]:
        return ["--database-url", self.url]

    def cli(self, data_dir: Path | None = None) -> list[str]:
        return [sys.executable, "-m", "smimekit.cli.main", "--data-dir",
                str(data_dir or self.ca_dir), *self.store_args()]


@pytest.fixture(params=["postgresql", "sqlite"])
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Deployment]:
    """A store for one test: a PostgreSQL database of its own (dropped afterwards) or a
    SQLite file."""
    if request.param == "sqlite":
        # named by an absolute URL, outside the CA's data directory, so that a node with a
        # data directory of its own on the same host can name the same file
        (tmp_path / "store").mkdir(mode=0o700)
        yield Deployment("sqlite", f"sqlite:///{tmp_path / 'store' / 'smimekit.db'}",
                         tmp_path)
        return
    user = _pg_user()
    if user is None:
        pytest.skip(f"no PostgreSQL server answers at {PG_HOST}:{PG_PORT}")
    name = f"smimekit_mn_{secrets.token_hex(6)}"
    admin = dict(host=PG_HOST, port=PG_PORT, dbname=PG_DB, user=user, autocommit=True)
    with psycopg.connect(**admin) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield Deployment("postgresql",
                         f"postgresql+psycopg://{user}@{PG_HOST}:{PG_PORT}/{name}", tmp_path)
    finally:
        with psycopg.connect(**admin) as conn:
            # FORCE: a node killed mid-request may leave a backend behind for a moment
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- the nodes ------------------------------------------------------------------------------


@dataclass
class Node:
    name: str
    data_dir: Path
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(NODE_STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def start_node(deployment: Deployment) -> Iterator[Callable[[str, Path], Node]]:
    """Starts ``ca serve`` on a free loopback port with ``--passphrase-file`` and waits until
    it says it answers (every worker loaded: the port accepts connections as soon as it is
    bound, before that); every node is stopped afterwards (SIGTERM, then SIGKILL)."""
    started: list[subprocess.Popen[bytes]] = []
    secret = deployment.tmp / "ca.pass"
    secret.write_text(PASS + "\n")
    secret.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if k != "SMIMEKIT_PASSPHRASE"}

    def start(name: str, data_dir: Path) -> Node:
        for _attempt in range(3):  # the free port may be taken before the node binds it
            port = free_port()
            log = deployment.tmp / f"{name}.stderr"
            with log.open("wb") as sink:
                proc = subprocess.Popen(
                    [*deployment.cli(data_dir), "ca", "serve", "--host", "127.0.0.1",
                     "--port", str(port), "--passphrase-file", str(secret)],
                    stdin=subprocess.DEVNULL, stdout=sink, stderr=sink, env=env)
            started.append(proc)
            node = Node(name, data_dir, port, proc, log)
            deadline = time.monotonic() + NODE_START_DEADLINE
            while time.monotonic() < deadline and proc.poll() is None:
                if f"on http://127.0.0.1:{port} (Ctrl-C to stop)" in node.stderr():
                    return node
                time.sleep(0.1)
            if proc.poll() is None:
                pytest.fail(f"{name} did not listen within {NODE_START_DEADLINE} s:"
                            f" {node.stderr()}")
            if "cannot listen" not in node.stderr():
                pytest.fail(f"{name} exited {proc.returncode}: {node.stderr()}")
        pytest.fail(f"{name}: no free port after 3 attempts")

    try:
        yield start
    finally:
        for proc in started:
            _stop(proc)


def serving_copy(ca_dir: Path, target: Path) -> Path:
    """A serving node's data directory: SERVING_FILES copied from the CA's, nothing else."""
    (target / "ca").mkdir(parents=True, mode=0o700)
    for name in SERVING_FILES:
        shutil.copy2(ca_dir / "ca" / name, target / "ca" / name)
    return target


# -- HTTP and OCSP --------------------------------------------------------------------------


def fetch(node: Node, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def ocsp_request(issuer: x509.Certificate, serial: int) -> bytes:
    # CertID (RFC 6960 4.1.1) with SHA-1 hashes: of the issuer's name, and of its public
    # key's bits, which is what an RFC 5280 method 1 key identifier is
    name_hash = hashlib.sha1(issuer.subject.public_bytes()).digest()
    key_hash = x509.SubjectKeyIdentifier.from_public_key(issuer.public_key()).digest
    builder = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        name_hash, key_hash, serial, hashes.SHA1())
    return builder.build().public_bytes(serialization.Encoding.DER)


@dataclass(frozen=True)
class Answer:
    status: ocsp.OCSPCertStatus
    revoked_at: dt.datetime | None
    reason: x509.ReasonFlags | None


def ask_ocsp(node: Node, issuer: x509.Certificate, signer: x509.Certificate,
             serial: int) -> Answer:
    """One OCSP POST to the node; the answer must be successful, about this serial, and
    signed by the delegated OCSP signer."""
    status, body = fetch(node, "POST", "/ocsp", ocsp_request(issuer, serial),
                        {"Content-Type": "application/ocsp-request"})
    assert status == 200, (node.name, status, body[:200])
    response = ocsp.load_der_ocsp_response(body)
    assert response.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL, (
        node.name, format(serial, "x"), response.response_status)
    assert response.serial_number == serial
    assert response.responder_key_hash == x509.SubjectKeyIdentifier.from_public_key(
        signer.public_key()).digest
    key = signer.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert response.signature_hash_algorithm is not None
    key.verify(response.signature, response.tbs_response_bytes,
               ec.ECDSA(response.signature_hash_algorithm))
    return Answer(response.certificate_status, response.revocation_time_utc,
                  response.revocation_reason)


# -- the CLI workers ------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    kind: str
    args: tuple[str, ...]
    rc: int
    out: str
    err: str


def run_cli(deployment: Deployment, kind: str, *args: str) -> Run:
    proc = subprocess.run([*deployment.cli(), *args], capture_output=True, text=True,
                          timeout=CLI_DEADLINE, cwd=deployment.tmp,
                          env={**os.environ, "SMIMEKIT_PASSPHRASE": PASS},
                          stdin=subprocess.DEVNULL, check=False)
    return Run(kind, args, proc.returncode, proc.stdout, proc.stderr)


REVOKED_LINE = re.compile(r"^revoked (\w+) certificate ([0-9a-f]+) of (\S+) \((\S+)\)$", re.M)
ISSUED_LINE = re.compile(r"^issued (\w+) certificate ([0-9a-f]+) for (\S+),", re.M)


def issue_args(tmp: Path, email: str, out: str) -> tuple[str, ...]:
    return ("ca", "issue", "--email", email, "--purpose", "sign", "--key-type", "p256",
            "--out", str(tmp / out), "--p12-passphrase-file", str(tmp / "p12.pass"))


# -- the scenario ---------------------------------------------------------------------------


def test_nodes_and_concurrent_cli_agree_on_every_serial(
        deployment: Deployment, start_node: Callable[[str, Path], Node],
        monkeypatch: pytest.MonkeyPatch) -> None:
    tmp = deployment.tmp
    (tmp / "p12.pass").write_text("p12 passphrase for the test\n")
    monkeypatch.setenv("SMIMEKIT_PASSPHRASE", PASS)
    cli_globals = ["--data-dir", str(deployment.ca_dir), *deployment.store_args()]
    assert main([*cli_globals, "ca", "init", "--org", "Example Ltd", "--base-url",
                 "http://pki.example.com", "--key-type", "p256", "--country", "GB"]) == 0
    home = CAHome(deployment.ca_dir)
    issuer, signer = home.certificate("issuing"), home.certificate("ocsp")
    targets = [f"t{n}@example.com" for n in range(TARGETS)]
    for email in targets + [f"b{n}@example.com" for n in range(BYSTANDERS)]:
        assert main([*cli_globals, *issue_args(tmp, email, f"setup-{email}")]) == 0
    with Store.open(deployment.url, deployment.ca_dir, create=False) as store:
        serial_of = {r.email: r.serial for r in store.issued_records()}

    # the nodes: on PostgreSQL three, each with a stripped copy of the CA directory; on
    # SQLite (one host, one file) one on the CA's own data directory, one on a copy
    if deployment.backend == "postgresql":
        nodes = [start_node(f"node{n}", serving_copy(deployment.ca_dir, tmp / f"node{n}"))
                 for n in range(3)]
    else:
        nodes = [start_node("node0", deployment.ca_dir),
                 start_node("node1", serving_copy(deployment.ca_dir, tmp / "node1"))]
    for node in nodes:
        if node.data_dir != deployment.ca_dir:
            held = {p.name for p in (node.data_dir / "ca").iterdir()}
            assert held == SERVING_FILES
            assert not held & set(NOT_ON_SERVING_NODES)
            assert not (node.data_dir / "smimekit.db").exists()

    # the workers: revokers, CRL publishers, and issuers racing for one address and purpose
    per_revoker = TARGETS // REVOKE_WORKERS
    reasons = ("key-compromise", "affiliation-changed", "superseded")

    def revoker(n: int) -> list[Run]:
        return [run_cli(deployment, "revoke", "ca", "revoke", serial_of[email], "--reason",
                        reasons[i % len(reasons)])
                for i, email in enumerate(targets[n * per_revoker:(n + 1) * per_revoker])]

    def publisher(_n: int) -> list[Run]:
        return [run_cli(deployment, "crl", "ca", "crl") for _ in range(CRLS_EACH)]

    def issuer_worker(n: int) -> list[Run]:
        return [run_cli(deployment, "issue-same",
                        *issue_args(tmp, "same@example.com", f"same{n}")),
                run_cli(deployment, "issue-own",
                        *issue_args(tmp, f"own{n}@example.com", f"own{n}"))]

    # an OCSP client asking the nodes in turn meanwhile: every answer successful, and a
    # serial once answered revoked (by any node) is never answered good again
    watched = [int(serial_of[e], 16) for e in targets]
    seen_revoked: set[int] = set()
    client_errors: list[str] = []
    workers_done = threading.Event()

    def ocsp_client() -> int:
        asked = 0
        while not workers_done.is_set() and asked < OCSP_ROUNDS:
            serial = watched[asked % len(watched)]
            node = nodes[asked % len(nodes)]
            try:
                answer = ask_ocsp(node, issuer, signer, serial)
            except Exception as exc:  # collected, asserted below
                client_errors.append(f"{node.name} {serial:x}: {exc!r}")
                return asked
            if answer.status == ocsp.OCSPCertStatus.REVOKED:
                seen_revoked.add(serial)
            elif serial in seen_revoked:
                client_errors.append(f"{node.name} {serial:x}: good after revoked")
            asked += 1
            workers_done.wait(OCSP_PAUSE)
        return asked

    with ThreadPoolExecutor(max_workers=REVOKE_WORKERS + CRL_WORKERS + ISSUE_WORKERS + 1) \
            as pool:
        client = pool.submit(ocsp_client)
        jobs = ([pool.submit(revoker, n) for n in range(REVOKE_WORKERS)]
                + [pool.submit(publisher, n) for n in range(CRL_WORKERS)]
                + [pool.submit(issuer_worker, n) for n in range(ISSUE_WORKERS)])
        try:
            runs = [run for job in jobs for run in job.result()]
        finally:
            workers_done.set()
        asked = client.result()
    assert not client_errors, client_errors
    assert asked > 0

    for run in runs:
        assert "Traceback" not in run.err, run
        if run.kind in ("revoke", "crl", "issue-own"):
            assert run.rc == 0, run
    reported = {m.group(2): m.group(4) for run in runs if run.kind == "revoke"
                for m in REVOKED_LINE.finditer(run.out)}
    assert set(reported) == {serial_of[e] for e in targets}

    # the losers of the race for same@: a clear one-line refusal, exit 1, no files
    same = [run for run in runs if run.kind == "issue-same"]
    assert sorted(run.rc for run in same) == [0] + [1] * (ISSUE_WORKERS - 1), same
    for run in same:
        if run.rc == 1:
            lines = run.err.strip().splitlines()
            assert len(lines) == 1 and "already holds a live" in lines[0], run
            assert run.out == ""
    assert len([p for p in tmp.iterdir() if re.fullmatch(r"same\d", p.name)]) == 1
    for run in runs:
        if run.kind.startswith("issue") and run.rc == 0:
            for m in ISSUED_LINE.finditer(run.out):
                serial_of[m.group(3)] = m.group(2)
    assert "same@example.com" in serial_of

    # the store: CRL numbers unique and strictly increasing in publication order (ca init's,
    # one per revocation, one per 'ca crl'); one live certificate per address and purpose
    issuer_fp = fingerprint(issuer)
    with Store.open(deployment.url, deployment.ca_dir, create=False) as store:
        c = schema.crl_publications
        with store.read() as conn:
            numbers = [int(n) for n in conn.execute(
                select(c.c.crl_number).where(c.c.issuer_fingerprint == issuer_fp)
                .order_by(c.c.id)).scalars()]
        assert numbers == list(range(1, 2 + TARGETS + CRL_WORKERS * CRLS_EACH))
        latest = store.latest_crl(issuer_fp)
        assert latest is not None and latest.der is not None and latest.number == numbers[-1]
        live = Counter((r.email, p) for r in store.issued_records()
                       if r.revoked_at is None and r.renewed_by is None
                       for p in (("sign", "encrypt") if r.purpose == "both" else (r.purpose,)))
        assert set(live.values()) == {1}
        assert live[("same@example.com", "sign")] == 1
        assert sum(1 for r in store.issued_records() if r.email == "same@example.com") == 1
        recorded = {r.serial: r for r in store.revocations(issuer_fp)}
    assert set(recorded) == set(reported)

    # the newest CRL lists every serial 'ca revoke' reported, with the recorded time
    crl = x509.load_der_x509_crl(latest.der)
    assert crl.is_signature_valid(issuer.public_key())
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number \
        == numbers[-1]
    listed = {format(entry.serial_number, "x"): entry.revocation_date_utc for entry in crl}
    assert set(listed) == set(reported)
    for serial, revocation in recorded.items():
        assert listed[serial] == revocation.revoked_at

    # every node: the newest CRL, and the same OCSP answer for every serial
    for node in nodes:
        status, body = fetch(node, "GET", "/crl/issuing.crl")
        assert status == 200 and body == latest.der, node.name
        status, body = fetch(node, "GET", "/crl/root.crl")
        assert status == 200 and body == home.root_crl(), node.name
        for email, serial in serial_of.items():
            answer = ask_ocsp(node, issuer, signer, int(serial, 16))
            if serial in reported:
                assert answer.status == ocsp.OCSPCertStatus.REVOKED, (node.name, email)
                assert answer.revoked_at == recorded[serial].revoked_at, (node.name, email)
                assert answer.reason is not None
                assert answer.reason.name == reported[serial].replace("-", "_"), node.name
            else:
                assert answer.status == ocsp.OCSPCertStatus.GOOD, (node.name, email)
        # a serial this CA never issued is unknown, never good
        never = ask_ocsp(node, issuer, signer, int(secrets.token_hex(19), 16) | 1)
        assert never.status == ocsp.OCSPCertStatus.UNKNOWN

    # and once per node with openssl, a revoked and a good serial, the answer verified
    chain = tmp / "root.pem"
    chain.write_bytes((deployment.ca_dir / "ca" / "root.pem").read_bytes())
    revoked_serial = sorted(reported)[0]
    good_serial = serial_of["b0@example.com"]
    for node in nodes:
        for serial, word in ((revoked_serial, "revoked"), (good_serial, "good")):
            done = subprocess.run(
                ["openssl", "ocsp", "-issuer", str(deployment.ca_dir / "ca" / "issuing.pem"),
                 "-serial", f"0x{serial}", "-url", f"{node.url}/ocsp", "-CAfile", str(chain),
                 "-no_nonce"], capture_output=True, text=True, timeout=60, check=False)
            assert done.returncode == 0, (node.name, done.stderr)
            assert "Response verify OK" in done.stderr + done.stdout, done
            assert re.search(rf"0x0*{serial}: {word}$", done.stdout, re.I | re.M), done.stdout

    for node in nodes:
        assert node.proc.poll() is None, (node.name, node.stderr())
        assert "Traceback" not in node.stderr(), node.name


@pytest.mark.parametrize("deployment", ["postgresql"], indirect=True)
def test_serving_node_refuses_to_start_without_each_file(
        deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    """SERVING_FILES is what a node needs: without any one of the five that ``ca serve``
    reads at start it exits 1 with one line naming the file."""
    monkeypatch.setenv("SMIMEKIT_PASSPHRASE", PASS)
    assert main(["--data-dir", str(deployment.ca_dir), *deployment.store_args(), "ca", "init",
                 "--org", "Example Ltd", "--base-url", "http://pki.example.com",
                 "--key-type", "p256", "--country", "GB"]) == 0
    for missing in sorted(SERVING_FILES - {"root.crl"}):
        node_dir = serving_copy(deployment.ca_dir, deployment.tmp / f"without-{missing}")
        (node_dir / "ca" / missing).unlink()
        done = subprocess.run(
            [*deployment.cli(node_dir), "ca", "serve", "--host", "127.0.0.1", "--port",
             str(free_port())], capture_output=True, text=True, timeout=CLI_DEADLINE,
            env={**os.environ, "SMIMEKIT_PASSPHRASE": PASS}, check=False)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and len(lines) == 1, (missing, done.stderr)
        assert missing in lines[0] or "no CA in" in lines[0], (missing, lines)


@pytest.mark.parametrize("deployment", ["postgresql"], indirect=True)
def test_node_answers_try_later_while_the_database_is_away_and_recovers(
        deployment: Deployment, start_node: Callable[[str, Path], Node],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The store's server goes away under a running node (a relay between them is cut):
    OCSP answers tryLater, the CRL it holds is served until its nextUpdate, the node stays
    up; a node started meanwhile exits 1 with one line; once the server is back the running
    node answers again, unrestarted."""
    relay = TcpRelay((PG_HOST, PG_PORT))
    try:
        deployment.url = deployment.url.replace(f":{PG_PORT}/", f":{relay.port}/")
        monkeypatch.setenv("SMIMEKIT_PASSPHRASE", PASS)
        cli_globals = ["--data-dir", str(deployment.ca_dir), *deployment.store_args()]
        assert main([*cli_globals, "ca", "init", "--org", "Example Ltd", "--base-url",
                     "http://pki.example.com", "--key-type", "p256", "--country", "GB"]) == 0
        (deployment.tmp / "p12.pass").write_text("p12 passphrase for the test\n")
        assert main([*cli_globals, *issue_args(deployment.tmp, "b0@example.com", "b0")]) == 0
        home = CAHome(deployment.ca_dir)
        issuer, signer = home.certificate("issuing"), home.certificate("ocsp")
        with Store.open(deployment.url, deployment.ca_dir, create=False) as store:
            (record,) = store.issued_records()
            latest = store.latest_crl(fingerprint(issuer))
            audit_rows = store.audit_count()
        assert latest is not None
        serial = int(record.serial, 16)
        node = start_node("node0", serving_copy(deployment.ca_dir, deployment.tmp / "node0"))
        assert ask_ocsp(node, issuer, signer, serial).status == ocsp.OCSPCertStatus.GOOD
        assert fetch(node, "GET", "/crl/issuing.crl") == (200, latest.der)

        relay.cut()
        for _ in range(3):
            status, body = fetch(node, "POST", "/ocsp", ocsp_request(issuer, serial),
                                 {"Content-Type": "application/ocsp-request"})
            assert status == 200
            assert ocsp.load_der_ocsp_response(body).response_status \
                == ocsp.OCSPResponseStatus.TRY_LATER
            # the CRL each worker held is still valid: served through the outage
            assert fetch(node, "GET", "/crl/issuing.crl") == (200, latest.der)
        assert node.proc.poll() is None, node.stderr()
        late = subprocess.run(
            [*deployment.cli(node.data_dir), "ca", "serve", "--host", "127.0.0.1", "--port",
             str(free_port())], capture_output=True, text=True, timeout=CLI_DEADLINE,
            env={**os.environ, "SMIMEKIT_PASSPHRASE": PASS}, check=False)
        lines = late.stderr.strip().splitlines()
        assert late.returncode == 1 and len(lines) == 1, late.stderr
        assert "cannot use the database" in lines[0], lines

        relay.restore()
        # every request is answered from the first on, whichever worker takes it: a worker
        # whose pooled connections died in the outage notices on its first read and reads
        # again on a new connection (a stale one answered tryLater here before)
        for _ in range(6):
            assert ask_ocsp(node, issuer, signer, serial).status == ocsp.OCSPCertStatus.GOOD
        assert fetch(node, "GET", "/crl/issuing.crl") == (200, latest.der)
        assert "Traceback" not in node.stderr()
        with Store.open(deployment.url, deployment.ca_dir, create=False) as store:
            assert store.audit_count() == audit_rows  # a serving node writes nothing
    finally:
        relay.stop()


def test_crl_publications_over_many_connections_never_share_a_number(
        deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the CLI processes above race on, tightly: threads with a store (an engine, so
    connections) each, as on separate nodes, publish CRLs and revoke at once. Numbers stay
    unique and gapless in publication order, and the newest CRL lists every revocation."""
    threads, rounds = 4, 6
    monkeypatch.setenv("SMIMEKIT_PASSPHRASE", PASS)
    assert main(["--data-dir", str(deployment.ca_dir), *deployment.store_args(), "ca", "init",
                 "--org", "Example Ltd", "--base-url", "http://pki.example.com",
                 "--key-type", "p256", "--country", "GB"]) == 0
    unlocked = CAHome(deployment.ca_dir).unlock(PASS.encode())
    with Store.open(deployment.url, deployment.ca_dir, create=False) as store:
        cax = CertificateAuthority(unlocked, store)
        serials = [[cax.issue_generated(f"r{t}.{n}@example.com", purpose="sign",
                                        sign_key=SubscriberKeyType.P256, lint=False)
                    .items[0].record.serial for n in range(2)] for t in range(threads)]
    start = threading.Barrier(threads)

    def node(t: int) -> None:
        with Store.open(deployment.url, deployment.ca_dir, create=False) as own:
            mine = CertificateAuthority(unlocked, own)
            start.wait(timeout=60)
            for n in range(rounds):
                mine.publish_crl()
                if n < len(serials[t]):
                    mine.revoke(serial=serials[t][n])

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for job in [pool.submit(node, t) for t in range(threads)]:
            job.result(timeout=CLI_DEADLINE)

    with Store.open(deployment.url, deployment.ca_dir, create=False) as store:
        issuer_fp = fingerprint(unlocked.authority.cert)
        c = schema.crl_publications
        with store.read() as conn:
            numbers = [int(n) for n in conn.execute(
                select(c.c.crl_number).where(c.c.issuer_fingerprint == issuer_fp)
                .order_by(c.c.id)).scalars()]
        # ca init's, then one per publish_crl and one per revoke
        assert numbers == list(range(1, 2 + threads * (rounds + 2)))
        latest = store.latest_crl(issuer_fp)
    assert latest is not None and latest.der is not None
    listed = {format(e.serial_number, "x") for e in x509.load_der_x509_crl(latest.der)}
    assert listed == {s for pair in serials for s in pair}
