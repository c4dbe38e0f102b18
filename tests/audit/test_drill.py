"""``smimekit drill``: the daily operations run in a network namespace with loopback only.

The drill runs as a real process (``smimekit drill`` re-executes itself into a child that
cuts the network), on a CA with escrow prepared here: three passphrase officers, any two
recover, one colleague with certificates, a published CRL.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import smimekit.escrow.shares
from smimekit.audit.drill import (
    NAMESPACE,
    STEPS,
    latest_report,
    read_report,
    report_from_dict,
    report_to_dict,
)
from smimekit.ca.home import CAConfig, CAHome
from smimekit.ca.issuance import CertificateAuthority, SubscriberKeyType
from smimekit.errors import SmimeError
from smimekit.escrow.ceremony import init_escrow
from smimekit.escrow.shares import OfficerSpec
from smimekit.store import Store

CA_PASS = b"correct horse battery staple"
COLLEAGUE = "colleague@example.com"
FAST = {"sign_key": SubscriberKeyType.P256, "encrypt_key": SubscriberKeyType.P256}


def _can_unshare() -> str | None:
    """Why a network namespace cannot be made here; None when it can."""
    # root: a network namespace; anyone else: one inside a user namespace (as the drill)
    argv = ["unshare", "--net", "true"] if os.geteuid() == 0 else [
        "unshare", "--user", "--net", "true"]
    probe = subprocess.run(argv, capture_output=True, check=False)
    if probe.returncode != 0:
        return f"unshare -n refused: {probe.stderr.decode(errors='replace').strip()}"
    return None


NO_NAMESPACE = _can_unshare()
needs_namespace = pytest.mark.skipif(NO_NAMESPACE is not None, reason=str(NO_NAMESPACE))


@dataclass
class Org:
    data_dir: Path
    passfile: Path
    shares: list[str]
    """--share specs of the officers (two of three)."""
    database_url: str | None = None


def _prepare(tmp_path: Path, *, crl: bool = True, escrow: bool = True,
             database_url: str | None = None) -> Org:
    data_dir = tmp_path / "data"
    home = CAHome(data_dir)
    home.create(CAConfig(organization="Example Ltd", base_url="http://pki.example.com",
                         key_type="p256", country="GB"), CA_PASS)
    store = Store.open(database_url, data_dir)
    try:
        store.use_audit_key(home.audit_key())
        store.audit("test", "ca.init", "Example Ltd", {})
        cax = CertificateAuthority(home.unlock(CA_PASS), store, actor="test")
        cax.issue_generated(COLLEAGUE, name="Colleague", **FAST)
        if crl:
            cax.publish_crl()
        specs: list[str] = []
        if escrow:
            officers, secrets = [], []
            for n in (1, 2, 3):
                secret = f"officer {n} share passphrase".encode()
                officers.append(OfficerSpec(f"Officer {n}", passphrase=secret))
                secrets.append(secret)
            init_escrow(data_dir, store, CA_PASS, officers, 2, tmp_path / "shares",
                        actor="test")
            for n, secret in enumerate(secrets[:2], start=1):
                (share,) = (tmp_path / "shares").glob(f"escrow-*-Officer_{n}.share")
                pw = tmp_path / f"officer{n}.txt"
                pw.write_bytes(secret + b"\n")
                specs.append(f"{share},passphrase-file={pw}")
    finally:
        store.close()
    passfile = tmp_path / "ca-pass.txt"
    passfile.write_bytes(CA_PASS + b"\n")
    return Org(data_dir, passfile, specs, database_url)


@pytest.fixture
def quick_scrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    # the share files record their cost, so the drill's process reads them at this cost
    monkeypatch.setattr(smimekit.escrow.shares, "SCRYPT_N", 2**10)


def _drill(org: Org, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "smimekit.cli.main", "--data-dir", str(org.data_dir)]
    if org.database_url:
        argv += ["--database-url", org.database_url]
    argv += ["drill", "--to", COLLEAGUE, "--passphrase-file", str(org.passfile), *extra]
    for spec in org.shares:
        argv += ["--share", spec]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)


@needs_namespace
@pytest.mark.usefixtures("quick_scrypt")
def test_every_step_passes_in_a_namespace(tmp_path: Path) -> None:
    org = _prepare(tmp_path)
    out = tmp_path / "drill.json"
    run = _drill(org, "--json", str(out))
    assert run.returncode == 0, run.stdout + run.stderr
    report = read_report(out)
    assert report.isolation == NAMESPACE
    assert [s.name for s in report.steps] == list(STEPS)
    assert report.ok
    assert all(s.seconds >= 0 for s in report.steps)
    by_name = {s.name: s for s in report.steps}
    # the proof: the outside cannot be reached, only lo exists
    assert "failed" in by_name["isolation"].detail
    assert "interfaces: lo" in by_name["isolation"].detail
    assert "ca serve on 127.0.0.1:" in by_name["serve-ocsp"].detail
    assert "decrypted the drill message" in by_name["recover-leaver"].detail
    # assess reads the same report from the data directory
    latest = latest_report(org.data_dir)
    assert latest is not None and latest.steps == report.steps
    assert "isolation: network namespace (loopback only)" in run.stdout
    # no live certificate is left behind: the drill identity is revoked
    store = Store.open(None, org.data_dir)
    try:
        drill_address = by_name["issue"].detail.split(":")[0]
        records = store.issued_for(drill_address)
        assert records and all(r.revoked_at is not None for r in records)
        assert store.issued_for(COLLEAGUE)[0].revoked_at is None
    finally:
        store.close()
    # what the drill did is in the audit log, and the log is intact
    log = subprocess.run([sys.executable, "-m", "smimekit.cli.main", "--data-dir",
                          str(org.data_dir), "log", "verify"], capture_output=True, text=True,
                         timeout=120, check=False)
    assert log.returncode == 0, log.stdout + log.stderr
    shown = subprocess.run([sys.executable, "-m", "smimekit.cli.main", "--data-dir",
                            str(org.data_dir), "log", "show"], capture_output=True, text=True,
                           timeout=120, check=False).stdout
    (row,) = [line for line in shown.splitlines() if "\tdrill.run\t" in line]
    assert '"ok":true' in row and '"failed":[]' in row
    assert "drill.issue" in shown and "escrow.recover" in shown


@needs_namespace
@pytest.mark.usefixtures("quick_scrypt")
def test_hard_revocation_fails_without_a_cached_crl(tmp_path: Path) -> None:
    org = _prepare(tmp_path, crl=False)
    run = _drill(org)
    assert run.returncode == 1
    report = latest_report(org.data_dir)
    assert report is not None and not report.ok
    step = {s.name: s for s in report.steps}["verify-hard-revocation"]
    assert not step.ok
    assert "revocation" in step.detail.lower(), step.detail
    assert "verify-hard-revocation" in run.stderr
    assert "Traceback" not in run.stderr


@needs_namespace
@pytest.mark.usefixtures("quick_scrypt")
def test_recovery_fails_clearly_with_a_wrong_share_passphrase(tmp_path: Path) -> None:
    org = _prepare(tmp_path)
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("not the share passphrase\n")
    org.shares[1] = org.shares[1].split(",")[0] + f",passphrase-file={wrong}"
    run = _drill(org)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    report = latest_report(org.data_dir)
    assert report is not None
    steps = {s.name: s for s in report.steps}
    assert not steps["recover-leaver"].ok
    assert "passphrase" in steps["recover-leaver"].detail.lower(), steps["recover-leaver"]
    assert all(s.ok for n, s in steps.items() if n != "recover-leaver"), steps


@needs_namespace
def test_recovery_fails_clearly_without_shares(tmp_path: Path) -> None:
    org = _prepare(tmp_path, escrow=False)
    run = _drill(org)
    assert run.returncode == 1
    report = latest_report(org.data_dir)
    assert report is not None
    steps = {s.name: s for s in report.steps}
    assert not steps["recover-leaver"].ok
    assert "no officer shares given" in steps["recover-leaver"].detail
    # the rest of the day's work did not need the officers
    assert all(s.ok for n, s in steps.items() if n != "recover-leaver"), steps


PG_SOCKET_DIR = "/var/run/postgresql"


@pytest.fixture
def pg_schema() -> Iterator[tuple[str, str]]:
    """A fresh schema in the PostgreSQL of the machine: (unix-socket URL, TCP URL)."""
    psycopg = pytest.importorskip("psycopg")
    if not Path(PG_SOCKET_DIR, ".s.PGSQL.5432").exists():
        pytest.skip(f"no PostgreSQL socket in {PG_SOCKET_DIR}")
    schema = f"smimekit_drill_{secrets.token_hex(6)}"
    conninfo = {"host": PG_SOCKET_DIR, "dbname": "postgres", "user": "postgres",
                "autocommit": True}
    try:
        with psycopg.connect(**conninfo) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
    except psycopg.Error as exc:
        pytest.skip(f"PostgreSQL over {PG_SOCKET_DIR} refused: {exc}")
    options = f"options=-csearch_path%3D{schema}"
    try:
        yield (f"postgresql+psycopg://postgres@/postgres?host={PG_SOCKET_DIR}&{options}",
               f"postgresql+psycopg://postgres@127.0.0.1:5432/postgres?{options}")
    finally:
        with psycopg.connect(**conninfo) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@needs_namespace
@pytest.mark.usefixtures("quick_scrypt")
def test_postgresql_over_a_unix_socket(tmp_path: Path, pg_schema: tuple[str, str]) -> None:
    org = _prepare(tmp_path, database_url=pg_schema[0])
    run = _drill(org, "--leaver", COLLEAGUE, "--reason", "drill HR-1")
    assert run.returncode == 0, run.stdout + run.stderr
    report = latest_report(org.data_dir)
    assert report is not None and report.ok and report.isolation == NAMESPACE
    recovered = report.steps[-1]
    assert recovered.name == "recover-leaver"
    assert f"opened {COLLEAGUE}'s key history: 1 key(s), kept in memory only" in \
        recovered.detail


@needs_namespace
@pytest.mark.usefixtures("quick_scrypt")
def test_postgresql_over_tcp_is_outside(tmp_path: Path, pg_schema: tuple[str, str]) -> None:
    org = _prepare(tmp_path, database_url=pg_schema[0])
    org.database_url = pg_schema[1]
    run = _drill(org)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    report = latest_report(org.data_dir)
    assert report is not None and [s.name for s in report.steps] == ["open-ca"]
    assert "unix socket" in report.steps[0].detail


def _python(code: str, *, cwd: str | None = None) -> list[str]:
    """The lines ``python -c code`` printed; it must exit 0."""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=False, cwd=cwd)
    assert run.returncode == 0, run.stderr
    return run.stdout.splitlines()


@needs_namespace
def test_outside_unreachable_inside_the_namespace() -> None:
    code = ("import ctypes, socket\n"
            "from smimekit.audit.drill import cut_network, outside_unreachable\n"
            "print(cut_network())\n"
            "print(outside_unreachable())\n"
            "s = socket.socket(); s.settimeout(3)\n"
            "print(s.connect_ex(('192.0.2.1', 80)) != 0)\n")
    lines = _python(code)
    assert lines[0] == NAMESPACE
    assert lines[1].startswith("connect to 192.0.2.1:80 failed")
    assert lines[2] == "True"


def test_unprivileged_user_gets_a_namespace_too() -> None:
    """Not root: a user namespace that keeps the uid, with a network namespace inside."""
    code = ("import ctypes, encodings.idna, os, socket\n"
            "from smimekit.audit.drill import cut_network, outside_unreachable\n"
            "import smimekit.errors\n"
            "if os.geteuid() == 0:\n"
            "    os.setgid(65534); os.setgroups([]); os.setuid(65534)\n"
            "    ctypes.CDLL(None).prctl(4, 1)  # dumpable, as a process never root\n"
            "print(cut_network()); print(outside_unreachable()); print(os.geteuid())\n"
            "srv = socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen()\n"
            "socket.create_connection(srv.getsockname(), timeout=3); print('lo ok')\n")
    lines = _python(code, cwd="/")
    if lines[0] != NAMESPACE:
        assert "socket guard" in lines[0]
        pytest.skip(f"unprivileged user namespaces are not allowed here: {lines[0]}")
    assert lines[1].startswith("connect to 192.0.2.1:80 failed")
    assert lines[2] != "0" and lines[3] == "lo ok"


@pytest.mark.usefixtures("quick_scrypt")
def test_whole_drill_with_the_socket_guard(tmp_path: Path) -> None:
    """Where no namespace may be made: every step still runs, and the report says how the
    outside was cut instead."""
    org = _prepare(tmp_path)
    run = _drill(org, "--no-namespace")
    assert run.returncode == 0, run.stdout + run.stderr
    report = latest_report(org.data_dir)
    assert report is not None and report.ok
    assert report.isolation.startswith("no network namespace (not requested)")
    assert "socket guard" in report.isolation and "not covered" in report.isolation
    assert "refused (outside network cut)" in report.steps[0].detail


def test_socket_guard_when_no_namespace() -> None:
    code = ("from smimekit.audit.drill import cut_network, outside_unreachable\n"
            "import socket\n"
            "print(cut_network(allow_namespace=False))\n"
            "print(outside_unreachable())\n"
            "srv = socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen()\n"
            "c = socket.create_connection(srv.getsockname(), timeout=3); print('lo ok')\n")
    lines = _python(code)
    assert lines[0].startswith("no network namespace (not requested)")
    assert "socket guard" in lines[0]
    assert "refused (outside network cut)" in lines[1]
    assert lines[2] == "lo ok"


def test_no_address_is_a_usage_error(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "smimekit.cli.main", "--data-dir",
                          str(tmp_path), "drill"], capture_output=True, text=True, timeout=60,
                         check=False)
    assert run.returncode == 2
    assert "name the drill identity with --address, or give --to ADDR" in run.stderr
    assert not (tmp_path / "drill").exists()


def test_report_json_round_trip_and_bad_input(tmp_path: Path) -> None:
    import datetime as dt

    from smimekit.audit.model import DrillReport, DrillStep

    report = DrillReport(dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC), NAMESPACE,
                         (DrillStep("sign", True, 0.25, "signed"),
                          DrillStep("decrypt", False, 1.5, "no key")))
    data = report_to_dict(report)
    assert data["schema"] == "smimekit-drill/1" and data["ok"] is False
    assert report_from_dict(json.loads(json.dumps(data))) == report
    with pytest.raises(SmimeError, match="not a drill report"):
        report_from_dict({"schema": "other"})
    with pytest.raises(SmimeError, match="malformed"):
        report_from_dict({"schema": "smimekit-drill/1", "started": "2026-01-01T00:00:00+00:00"})
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(SmimeError, match="cannot read the drill report"):
        read_report(bad)
    assert latest_report(tmp_path) is None
