"""``smimekit ca enroll | renew | expiring`` through the CLI, on SQLite and PostgreSQL (the
``backend`` fixture): batches that resume after SIGKILL, renewal, expiry mail to a loopback
SMTP sink, and bad input as one line with exit status 1."""

from __future__ import annotations

import csv
import datetime as dt
import email
import email.policy
import json
import os
import re
import signal
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from backends import Backend
from cryptography.hazmat.primitives.serialization import pkcs12

from smimekit.ca.home import CAHome
from smimekit.ca.issuance import CertificateAuthority
from smimekit.cli.main import main
from smimekit.store import Store

PASS = "correct horse battery staple"



@dataclass
class CA:
    backend: Backend
    dir: Path
    passfile: Path

    def args(self, *args: str | Path) -> list[str]:
        return [*self.backend.cli_args(), "ca", *map(str, args)]

    def run(self, *args: str | Path) -> int:
        return main(self.args(*args))

    def subprocess_args(self, *args: str | Path) -> list[str]:
        return [sys.executable, "-m", "smimekit.cli.main", *self.args(*args)]

    def open(self) -> tuple[CertificateAuthority, Store]:
        store = Store.open(self.backend.url, self.backend.data_dir)
        unlocked = CAHome(self.backend.data_dir).unlock(PASS.encode())
        return CertificateAuthority(unlocked, store), store


@pytest.fixture()
def ca(backend: Backend, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> CA:
    passfile = tmp_path / "pass.txt"
    passfile.write_text(PASS + "\n")
    home = CA(backend, tmp_path, passfile)
    assert home.run("init", "--org", "Example Ltd", "--base-url", "http://pki.example.com",
                    "--key-type", "p256", "--passphrase-file", passfile) == 0
    capsys.readouterr()
    return home


def _users(path: Path, count: int, *, extra: str = "") -> Path:
    lines = ["email,name,department"] + [f"user{i:02d}@example.com,User {i:02d},Sales"
                                         for i in range(count)]
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def _results(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _live(store: Store, who: str) -> list[tuple[str, str]]:
    now = dt.datetime.now(dt.UTC)
    return sorted((r.purpose, r.serial) for r in store.issued_for(who)
                  if r.live and r.not_after > now)


# -- enroll --------------------------------------------------------------------------------


def test_enroll_internationalised_rows_bad_one_reported_batch_goes_on(
        ca: CA, capsys: pytest.CaptureFixture[str]) -> None:
    """RFC 9598: an IDN domain and a UTF-8 local part are enrolled; an address that is not
    valid IDNA is an error row, not a traceback; a row naming the same mailbox with A-labels
    is a duplicate; a second run skips the enrolled ones."""
    users = ca.dir / "users.csv"
    users.write_text("email,name\nalice@bücher.example.org,Alice\ny@☃.example.org,Snow\n"
                     "jürgen@example.org,Jürgen\nALICE@xn--bcher-kva.example.org,Again\n",
                     encoding="utf-8")
    out = ca.dir / "out"
    args = ("enroll", "--csv", users, "--out", out, "--key-type", "p256", "--purpose", "sign",
            "--passphrase-file", ca.passfile)
    assert ca.run(*args) == 1
    err = capsys.readouterr().err
    assert err.startswith("smimekit: error: enrolled 2, skipped 0, failed 2;"), err
    rows = _results(out / "results.csv")
    assert [r["status"] for r in rows] == ["ok", "error", "ok", "error"]
    assert "is not a mailbox address" in rows[1]["message"]
    assert "IDNA 2008" in rows[1]["message"]
    assert rows[3]["message"] == "duplicate of line 2"
    _cax, store = ca.open()
    try:
        assert len(_live(store, "alice@xn--bcher-kva.example.org")) == 1
        assert len(_live(store, "jürgen@example.org")) == 1
    finally:
        store.close()
    assert ca.run(*args) == 1
    assert "enrolled 0, skipped 2, failed 2" in capsys.readouterr().err


@pytest.mark.slow
def test_enroll_writes_bundles_and_results_and_reports_bad_rows(
        ca: CA, capsys: pytest.CaptureFixture[str]) -> None:
    users = _users(ca.dir / "users.csv", 2, extra="bad address,X,Y\nuser00@example.com,,\n")
    out = ca.dir / "out"
    code = ca.run("enroll", "--csv", users, "--out", out, "--key-type", "p256",
                  "--passphrase-file", ca.passfile)
    err = capsys.readouterr().err
    assert code == 1
    assert err == ("smimekit: error: enrolled 2, skipped 0, failed 2; results in"
                   f" {out / 'results.csv'}\n")
    rows = _results(out / "results.csv")
    assert [(r["email"], r["status"]) for r in rows] == [
        ("user00@example.com", "ok"), ("user01@example.com", "ok"),
        ("bad address", "error"), ("user00@example.com", "error")]
    assert rows[2]["message"] == "'bad address' is not a mailbox address"
    assert rows[3]["message"] == "duplicate of line 2"
    assert (out / "results.csv").stat().st_mode & 0o777 == 0o600
    first = rows[0]
    files = [Path(f) for f in first["files"].split()]
    assert sorted(f.name for f in files) == [
        "user00@example.com.encrypt.p12", "user00@example.com.encrypt.pem",
        "user00@example.com.sign.p12", "user00@example.com.sign.pem"]
    loaded = pkcs12.load_pkcs12((out / "user00@example.com.encrypt.p12").read_bytes(),
                                first["p12_passphrase"].encode())
    assert loaded.cert is not None
    assert format(loaded.cert.certificate.serial_number, "x") in first["serials"].split()

    # again: nothing new, the good rows skipped
    assert ca.run("enroll", "--csv", users, "--out", out, "--key-type", "p256",
                  "--passphrase-file", ca.passfile) == 1
    assert "enrolled 0, skipped 2, failed 2" in capsys.readouterr().err


def test_enroll_progress_bar_only_when_asked_or_on_a_terminal(
        ca: CA, capsys: pytest.CaptureFixture[str]) -> None:
    users = _users(ca.dir / "users.csv", 1)
    base = ["enroll", "--csv", users, "--out", ca.dir / "out", "--key-type", "p256",
            "--legacy-p12", "--passphrase-file", ca.passfile]
    assert ca.run(*base) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("enrolled 1, skipped 0")
    assert ca.run(*base, "--progress") == 0
    err = capsys.readouterr().err
    assert "enrolling" in err and "1/1" in err and "\x1b[" in err


def _children(pid: int, marker: bytes = b"spawn_main") -> set[int]:
    """The processes whose parent is ``pid`` and whose command line holds ``marker`` (the
    workers; multiprocessing's resource tracker has ``resource_tracker``), from /proc."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid and marker in cmdline:
                found.add(int(entry.name))
    return found


def _wait_gone(pids: set[int], seconds: float) -> set[int]:
    """Those of ``pids`` still running after at most ``seconds``."""
    deadline = time.monotonic() + seconds
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        alive = {p for p in alive if Path(f"/proc/{p}").exists()
                 and not (Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()[0]
                          == "Z")}
        time.sleep(0.05)
    return alive


def _kill_all(pids: set[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_enroll_killed_midway_resumes_without_loss_or_duplicates(ca: CA, workers: str) -> None:
    users = _users(ca.dir / "users.csv", 40)
    out = ca.dir / "out"
    results = out / "results.csv"
    # --legacy-p12: fast PKCS#12 (2048 KDF rounds), the batch logic is the same
    args = ca.subprocess_args("enroll", "--csv", users, "--out", out, "--key-type", "p256",
                              "--legacy-p12", "--workers", workers,
                              "--passphrase-file", ca.passfile)
    env = {k: v for k, v in os.environ.items() if k != "SMIMEKIT_PASSPHRASE"}
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env)
    deadline = time.monotonic() + 60
    workers_seen: set[int] = set()
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            workers_seen |= _children(proc.pid)
            if results.exists() and results.read_bytes().count(b"\n") >= 6:
                break
            time.sleep(0.005)
        workers_seen |= _children(proc.pid)
        trackers = _children(proc.pid, b"resource_tracker")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    assert len(workers_seen) == (0 if workers == "1" else 2)
    orphans = _wait_gone(workers_seen | trackers, 30)  # they notice and leave by themselves
    _kill_all(orphans)
    assert orphans == set()
    before = len(_results(results))
    assert 5 <= before < 40

    rerun = subprocess.run(args, capture_output=True, env=env, timeout=300, check=False)
    assert rerun.returncode == 0, rerun.stderr
    summary = re.fullmatch(r"enrolled (\d+), skipped (\d+), failed 0; results in (.*)\n",
                           rerun.stderr.decode())
    assert summary is not None and summary[3] == str(results)
    enrolled, skipped = int(summary[1]), int(summary[2])
    # a kill between the row's fsync and its commit leaves one void row: issued again
    assert enrolled + skipped == 40 and skipped in (before - 1, before)

    _, store = ca.open()
    try:
        final: dict[str, dict[str, str]] = {}
        for row in _results(results):
            if row["status"] == "ok":
                final[row["email"]] = row
        assert sorted(final) == [f"user{i:02d}@example.com" for i in range(40)]
        for who, row in final.items():
            live = _live(store, who)
            assert [p for p, _ in live] == ["encrypt", "sign"], who
            assert sorted(s for _, s in live) == sorted(row["serials"].split()), who
            loaded = pkcs12.load_pkcs12((out / f"{who}.encrypt.p12").read_bytes(),
                                        row["p12_passphrase"].encode())
            assert loaded.key is not None
        assert len(store.issued_records(live_only=False)) == 80  # no duplicates
        assert store.verify_audit_log() == []
    finally:
        store.close()
    # no stray files: no temporary ones, no PKCS#12 of a person not recorded
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["results.csv"] + [f"user{i:02d}@example.com.{purpose}.{kind}" for i in range(40)
                           for purpose in ("sign", "encrypt") for kind in ("pem", "p12")])


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_enroll_first_ctrl_c_finishes_the_current_person_and_stops(ca: CA,
                                                                   workers: str) -> None:
    users = _users(ca.dir / "users.csv", 30)
    out = ca.dir / "out"
    args = ca.subprocess_args("enroll", "--csv", users, "--out", out, "--key-type", "p256",
                              "--legacy-p12", "--workers", workers,
                              "--passphrase-file", ca.passfile)
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / "results.csv").exists() and (out / "results.csv").read_bytes().count(
                b"\n") >= 3:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    rows = _results(out / "results.csv")
    assert f"stopped by Ctrl-C: enrolled {len(rows)}, skipped 0, failed 0" in err.decode()
    _, store = ca.open()
    try:
        assert len(store.issued_records()) == 2 * len(rows)  # every row done is committed
    finally:
        store.close()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # nothing staged stays


def _start_and_wait_for_rows(args: list[str], results: Path, rows: int,
                             **popen: object) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            **popen)  # type: ignore[call-overload]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if results.exists() and results.read_bytes().count(b"\n") >= rows + 1:
            break
        time.sleep(0.005)
    return proc


@pytest.mark.slow
def test_enroll_ctrl_c_at_the_terminal_stops_workers_quietly_and_a_rerun_finishes(
        ca: CA) -> None:
    """A terminal sends SIGINT to the whole process group, workers included: they leave
    it to the writer, so there is one message and no traceback."""
    users = _users(ca.dir / "users.csv", 30)
    out = ca.dir / "out"
    args = ca.subprocess_args("enroll", "--csv", users, "--out", out, "--key-type", "p256",
                              "--legacy-p12", "--workers", "2",
                              "--passphrase-file", ca.passfile)
    proc = _start_and_wait_for_rows(args, out / "results.csv", 3, start_new_session=True)
    try:
        workers = _children(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    assert proc.returncode == 130, err
    text = err.decode()
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    assert text.startswith("smimekit: stopping after the current person"), text
    assert "run the same command again to continue" in text
    assert len(workers) == 2 and _wait_gone(workers, 30) == set()
    rerun = subprocess.run(args, capture_output=True, timeout=300, check=False)
    assert rerun.returncode == 0, rerun.stderr
    rows = _results(out / "results.csv")
    assert sorted(r["email"] for r in rows if r["status"] == "ok") == [
        f"user{i:02d}@example.com" for i in range(30)]


@pytest.mark.slow
def test_enroll_worker_killed_is_one_clear_error_and_a_rerun_finishes(ca: CA) -> None:
    users = _users(ca.dir / "users.csv", 30)
    out = ca.dir / "out"
    args = ca.subprocess_args("enroll", "--csv", users, "--out", out, "--key-type", "p256",
                              "--legacy-p12", "--workers", "2",
                              "--passphrase-file", ca.passfile)
    proc = _start_and_wait_for_rows(args, out / "results.csv", 3)
    try:
        workers = _children(proc.pid)
        assert len(workers) == 2
        os.kill(min(workers), signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    text = err.decode()
    if proc.returncode == 0:  # the batch was done before the kill landed: nothing to see
        pytest.skip("the batch finished first")
    assert proc.returncode == 1, text
    assert text.startswith("smimekit: error: a worker process died"), text
    assert text.count("\n") == 1 and "Traceback" not in text
    assert _wait_gone(workers, 30) == set()
    rerun = subprocess.run(args, capture_output=True, timeout=300, check=False)
    assert rerun.returncode == 0, rerun.stderr
    _, store = ca.open()
    try:
        assert len(store.issued_records(live_only=False)) == 60
    finally:
        store.close()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_enroll_with_two_workers_gives_what_one_worker_gives(
        ca: CA, capsys: pytest.CaptureFixture[str]) -> None:
    """Default key types (P-256 to sign, RSA-3072 to encrypt), bad rows among good ones:
    an address refused at once, one the linter refuses (in a worker), a duplicate."""
    outcome = {}
    for workers, domain in (("1", "one.example.com"), ("2", "two.example.com")):
        users = ca.dir / f"users-{workers}.csv"
        users.write_text("email,name\n" + "".join(
            f"user{i}@{domain},User {i}\n" for i in range(4)) + "bad address,X\n"
            f"user4@{domain},User 4\nsomeone@intranet.corp,Lint\nUSER0@{domain},Again\n")
        out = ca.dir / f"out-{workers}"
        assert ca.run("enroll", "--csv", users, "--out", out, "--workers", workers,
                      "--passphrase-file", ca.passfile) == 1
        assert capsys.readouterr().err == ("smimekit: error: enrolled 5, skipped 0, failed 3;"
                                           f" results in {out / 'results.csv'}\n")
        rows = _results(out / "results.csv")
        _, store = ca.open()
        try:
            for row in rows:
                if row["status"] != "ok":
                    continue
                live = _live(store, row["email"])
                assert [p for p, _ in live] == ["encrypt", "sign"]
                assert sorted(s for _, s in live) == sorted(row["serials"].split())
                for path in map(Path, row["files"].split()):
                    if path.suffix == ".p12":
                        loaded = pkcs12.load_pkcs12(path.read_bytes(),
                                                    row["p12_passphrase"].encode())
                        assert loaded.key is not None and loaded.cert is not None
                        assert loaded.key.public_key() == loaded.cert.certificate.public_key()
        finally:
            store.close()
        outcome[workers] = (
            [(r["email"].replace(domain, "D"), r["status"], r["message"]) for r in rows],
            [[Path(f).name.replace(domain, "D") for f in r["files"].split()] for r in rows],
            sorted(p.name.replace(domain, "D") for p in out.iterdir()))
    assert outcome["1"] == outcome["2"]
    assert [s for _, s, _ in outcome["2"][0]] == ["ok"] * 4 + ["error", "ok", "error", "error"]
    assert "ERROR cabf.internal_domain_name" in outcome["2"][0][6][2]


@pytest.mark.parametrize(("content", "message"), [
    (None, "cannot read {csv}: No such file or directory"),
    (b"name,department\nAda,Sales\n", "{csv}: the header row has no 'email' column"
                                      " (found 'name', 'department')"),
])
def test_enroll_unusable_csv_is_one_line_and_exit_1(
        ca: CA, capsys: pytest.CaptureFixture[str], content: bytes | None,
        message: str) -> None:
    path = ca.dir / "users.csv"
    if content is not None:
        path.write_bytes(content)
    assert ca.run("enroll", "--csv", path, "--out", ca.dir / "out",
                  "--passphrase-file", ca.passfile) == 1
    err = capsys.readouterr().err
    assert err == f"smimekit: error: {message.format(csv=path)}\n"
    assert not (ca.dir / "out").exists()


def test_enroll_with_the_wrong_ca_passphrase_is_one_line_and_exit_1(ca: CA) -> None:
    wrong = ca.dir / "wrong.txt"
    wrong.write_text("not the passphrase at all\n")
    done = subprocess.run(ca.subprocess_args(
        "enroll", "--csv", _users(ca.dir / "users.csv", 1), "--out", ca.dir / "out",
        "--passphrase-file", wrong), capture_output=True, timeout=60, check=False)
    assert done.returncode == 1
    err = done.stderr.decode()
    assert err.startswith("smimekit: error: ") and "passphrase" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (ca.dir / "out").exists()


# -- renew ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_renew_due_rekeys_writes_bundles_with_history_and_is_idempotent(
        ca: CA, capsys: pytest.CaptureFixture[str]) -> None:
    users = _users(ca.dir / "users.csv", 2)
    assert ca.run("enroll", "--csv", users, "--out", ca.dir / "first", "--key-type", "p256",
                  "--legacy-p12", "--validity", "20d", "--passphrase-file", ca.passfile) == 0
    capsys.readouterr()

    assert ca.run("renew", "--due", "10d", "--dry-run") == 0
    assert capsys.readouterr().err == "would renew 0 certificates of 0 people\n"
    assert ca.run("renew", "--due", "30d", "--dry-run") == 0
    dry = capsys.readouterr()
    assert dry.err == "would renew 4 certificates of 2 people\n"
    assert dry.out.count("user00@example.com") == 2 and "19" in dry.out

    out = ca.dir / "renewed"
    assert ca.run("renew", "--due", "30d", "--out", out, "--passphrase-file",
                  ca.passfile) == 0
    assert capsys.readouterr().err == (f"renewed 2, skipped 0, failed 0; results in"
                                       f" {out / 'renewals.csv'}\n")
    rows = _results(out / "renewals.csv")
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert "new keys: sign, encrypt" in rows[0]["message"]

    cax, store = ca.open()
    try:
        history = cax.key_history("user00@example.com")
        assert len(history) == 2 and all(k.public_key() == c.public_key() for k, c in history)
        old, new = (c for _, c in history)
        old_record = store.issued_record(serial=format(old.serial_number, "x"),
                                         issuer_fingerprint=cax.issuer_fingerprint)
        assert old_record is not None and old_record.renewed_by is not None
        assert len(_live(store, "user00@example.com")) == 2
        # the new PKCS#12 carries the old key too, for old mail
        loaded = pkcs12.load_pkcs12((out / "user00@example.com.encrypt.p12").read_bytes(),
                                    rows[0]["p12_passphrase"].encode())
        assert loaded.cert is not None and loaded.cert.certificate == new
        assert old in [c.certificate for c in loaded.additional_certs]
        assert store.verify_audit_log() == []
    finally:
        store.close()

    assert ca.run("renew", "--due", "30d", "--out", out, "--passphrase-file",
                  ca.passfile) == 0
    assert capsys.readouterr().err.startswith("renewed 0, skipped 0, failed 0")


# -- expiring and notices ------------------------------------------------------------------


@dataclass
class Received:
    sender: str
    recipients: list[str]
    message: email.message.EmailMessage


@dataclass
class SinkState:
    messages: list[Received] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    starttls: bool = False


class _SmtpHandler(socketserver.StreamRequestHandler):
    """Just enough SMTP (RFC 5321) for smtplib: EHLO/HELO, MAIL, RCPT, DATA, RSET, QUIT."""

    server: _SmtpSink

    def reply(self, text: str) -> None:
        self.wfile.write(text.encode() + b"\r\n")

    def handle(self) -> None:
        state = self.server.state
        self.reply("220 sink.test ESMTP")
        sender, recipients = "", []
        while line := self.rfile.readline():
            command = line.decode().strip()
            verb, _, arg = command.partition(" ")
            verb = verb.upper()
            if verb == "EHLO":
                self.reply("250-sink.test" + ("\r\n250-STARTTLS" if state.starttls else "")
                           + "\r\n250 8BITMIME")
            elif verb == "HELO":
                self.reply("250 sink.test")
            elif verb == "STARTTLS":
                self.reply("454 4.7.0 TLS not available")
            elif verb == "MAIL":
                sender, recipients = arg.partition(":")[2].strip().strip("<>"), []
                self.reply("250 2.1.0 OK")
            elif verb == "RCPT":
                rcpt = arg.partition(":")[2].strip().strip("<>")
                if rcpt in state.refuse:
                    self.reply("550 5.1.1 no such mailbox")
                else:
                    recipients.append(rcpt)
                    self.reply("250 2.1.5 OK")
            elif verb == "DATA":
                self.reply("354 end with <CRLF>.<CRLF>")
                data = bytearray()
                while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                    data += chunk[1:] if chunk.startswith(b"..") else chunk
                parsed = email.message_from_bytes(bytes(data), policy=email.policy.default)
                state.messages.append(Received(sender, recipients, parsed))  # type: ignore[arg-type]
                self.reply("250 2.0.0 queued")
            elif verb in ("RSET", "NOOP"):
                self.reply("250 OK")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("502 5.5.2 not implemented")


class _SmtpSink(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SmtpHandler)
        self.state = SinkState()


@pytest.fixture()
def sink() -> Iterator[tuple[int, SinkState]]:
    server = _SmtpSink()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], server.state
    finally:
        server.shutdown()
        server.server_close()


def _expiring_pair(ca: CA, capsys: pytest.CaptureFixture[str]) -> None:
    assert ca.run("enroll", "--csv", _users(ca.dir / "users.csv", 2), "--out",
                  ca.dir / "out", "--key-type", "p256", "--legacy-p12", "--validity", "20d",
                  "--passphrase-file", ca.passfile) == 0
    assert ca.run("enroll", "--csv", _users(ca.dir / "later.csv", 0,
                                             extra="later@example.com,,\n"),
                  "--out", ca.dir / "out", "--key-type", "p256", "--legacy-p12",
                  "--passphrase-file", ca.passfile) == 0
    capsys.readouterr()


def test_expiring_lists_live_certificates_as_table_and_json(
        ca: CA, capsys: pytest.CaptureFixture[str]) -> None:
    _expiring_pair(ca, capsys)
    assert ca.run("expiring", "--within", "30d") == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split() == ["email", "purpose", "serial", "not", "after",
                                             "(UTC)", "days", "left"]
    assert table.count("@example.com") == 4 and "later@" not in table
    assert ca.run("expiring", "--within", "30d", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted((i["email"], i["purpose"], i["days_left"]) for i in listed) == [
        ("user00@example.com", "encrypt", 19), ("user00@example.com", "sign", 19),
        ("user01@example.com", "encrypt", 19), ("user01@example.com", "sign", 19)]
    assert ca.run("expiring", "--within", "1w") == 0
    assert capsys.readouterr().err == "no live certificate expires within 7 days\n"


def test_expiring_notify_mails_holders_and_admins_once_a_week(
        ca: CA, capsys: pytest.CaptureFixture[str], sink: tuple[int, SinkState]) -> None:
    port, state = sink
    _expiring_pair(ca, capsys)
    notify = ["expiring", "--within", "30d", "--notify", "--smtp-host", "127.0.0.1",
              "--smtp-port", str(port), "--from", "pki@example.com", "--admin",
              "admin@example.com", "--admin", "security@example.com", "--json"]
    assert ca.run(*notify) == 0
    assert capsys.readouterr().err == ("notified 2 holders (0 told within the last 7 days"
                                       " already), summary to 2 admins\n")
    assert [(m.sender, m.recipients) for m in state.messages] == [
        ("pki@example.com", ["user00@example.com"]), ("pki@example.com", ["user01@example.com"]),
        ("pki@example.com", ["admin@example.com"]), ("pki@example.com", ["security@example.com"])]
    holder = state.messages[0].message
    assert holder["To"] == "user00@example.com" and holder["Auto-Submitted"] == "auto-generated"
    body = holder.get_content()
    assert "Hello User 00," in body and "(in 19 days)" in body
    assert "new PKCS#12 file from your administrator" in body and "old mail" in body
    admin = state.messages[2].message.get_content()
    assert "user01@example.com" in admin and "notified now" in admin

    _, store = ca.open()
    try:
        assert all(r.notified_at is not None for r in store.issued_for("user00@example.com"))
        assert [e.action for e in store.audit_entries()].count("ca.notify") == 1
        assert store.verify_audit_log() == []
    finally:
        store.close()

    # the second run within the week sends nothing at all
    assert ca.run(*notify) == 0
    assert capsys.readouterr().err.startswith("notified 0 holders (2 told within the last")
    assert len(state.messages) == 4


def test_expiring_notify_reports_each_refused_recipient_and_exits_1(
        ca: CA, capsys: pytest.CaptureFixture[str], sink: tuple[int, SinkState]) -> None:
    port, state = sink
    state.refuse = {"user00@example.com"}
    _expiring_pair(ca, capsys)
    assert ca.run("expiring", "--within", "30d", "--notify", "--smtp-host", "127.0.0.1",
                  "--smtp-port", str(port), "--from", "pki@example.com", "--admin",
                  "admin@example.com") == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "smimekit: error: mail to user00@example.com: user00@example.com refused: 550 5.1.1"
        " no such mailbox",
        "smimekit: error: notified 1 holders (0 told within the last 7 days already), summary"
        " to 1 admins; 1 messages could not be sent"]
    assert [m.recipients for m in state.messages] == [["user01@example.com"],
                                                      ["admin@example.com"]]


def test_expiring_notify_uses_starttls_when_offered_unless_plain(
        ca: CA, capsys: pytest.CaptureFixture[str], sink: tuple[int, SinkState]) -> None:
    port, state = sink
    state.starttls = True
    _expiring_pair(ca, capsys)
    base = ["expiring", "--within", "30d", "--notify", "--smtp-host", "127.0.0.1",
            "--smtp-port", str(port), "--from", "pki@example.com"]
    assert ca.run(*base) == 1
    err = capsys.readouterr().err
    assert f"mail to user00@example.com: cannot talk to 127.0.0.1:{port}: 454 4.7.0 TLS not" \
           " available" in err
    assert state.messages == []
    assert ca.run(*base, "--smtp-plain") == 0
    assert len(state.messages) == 2


def test_expiring_notify_without_a_server_fails_per_recipient(
        ca: CA, capsys: pytest.CaptureFixture[str]) -> None:
    _expiring_pair(ca, capsys)
    with socketserver.TCPServer(("127.0.0.1", 0), socketserver.BaseRequestHandler) as free:
        port = free.server_address[1]  # closed again below: nothing listens there
    assert ca.run("expiring", "--within", "30d", "--notify", "--smtp-host", "127.0.0.1",
                  "--smtp-port", str(port), "--from", "pki@example.com") == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and "Traceback" not in "".join(err)
    assert err[0] == (f"smimekit: error: mail to user00@example.com: cannot talk to"
                      f" 127.0.0.1:{port}: connection refused")


def test_expiring_notify_sends_from_the_first_admin_without_from(
        ca: CA, capsys: pytest.CaptureFixture[str], sink: tuple[int, SinkState]) -> None:
    port, state = sink
    _expiring_pair(ca, capsys)
    assert ca.run("expiring", "--within", "30d", "--notify", "--smtp-host", "127.0.0.1",
                  "--smtp-port", str(port), "--admin", "pki@example.com") == 0
    assert [(m.sender, m.recipients) for m in state.messages] == [
        ("pki@example.com", ["user00@example.com"]), ("pki@example.com", ["user01@example.com"]),
        ("pki@example.com", ["pki@example.com"])]
    assert state.messages[0].message["From"] == "pki@example.com"


def test_expiring_notify_needs_a_sender(ca: CA, capsys: pytest.CaptureFixture[str]) -> None:
    assert ca.run("expiring", "--notify") == 2
    assert "--notify needs --from ADDR" in capsys.readouterr().err


def test_enroll_results_to_a_device_or_fifo_is_written_through_unchanged(
        ca: CA, null_device: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mode = os.stat(null_device).st_mode
    assert ca.run("enroll", "--csv", _users(ca.dir / "users.csv", 1), "--out", ca.dir / "o1",
                  "--key-type", "p256", "--results", null_device,
                  "--passphrase-file", ca.passfile) == 0
    assert os.stat(null_device).st_mode == mode  # never chmod-ed (as root: /dev/null 0600)
    fifo = ca.dir / "results.fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    assert ca.run("enroll", "--csv", _users(ca.dir / "more.csv", 0,
                                             extra="fifo@example.com,,\n"),
                  "--out", ca.dir / "o2", "--key-type", "p256", "--results", fifo,
                  "--passphrase-file", ca.passfile) == 0
    reader.join(10)
    rows = list(csv.reader(got[0].decode().splitlines()))
    assert rows[0][:2] == ["email", "status"] and rows[1][:2] == ["fifo@example.com", "ok"]
    assert len(rows) == 2
