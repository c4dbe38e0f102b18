"""``ca sync``: the CA reconciled with a real slapd (tests/slapd.py) and with an HR export.

The CA is made with an organisation identifier, so its default profile (sponsored) puts the
person's name in the certificate: a new ``cn`` needs a new certificate, as a new ``mail``
does. Keys are P-256 for both purposes (RSA-3072 for hundreds of people is too slow here).
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from slapd import Person, Slapd, people

from smimekit.ca.home import CAHome
from smimekit.ca.issuance import CertificateAuthority, SubscriberKeyType
from smimekit.ca.lifecycle import enroll_rows
from smimekit.ca.sync import (
    SourceRead,
    apply_sync,
    plan_sync,
    read_identity_csv,
    read_identity_ldap,
)
from smimekit.cli.main import main
from smimekit.config import SyncLdapConfig
from smimekit.store import IssuedRecord, Store

PASS = "correct horse battery staple"
FAST = ["--key-type", "p256", "--workers", "1"]


@pytest.fixture
def cli_ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data = tmp_path / "cli-data"
    monkeypatch.setenv("SMIMEKIT_DATA_DIR", str(data))
    monkeypatch.setenv("SMIMEKIT_PASSPHRASE", PASS)
    monkeypatch.delenv("SMIMEKIT_CONFIG", raising=False)
    assert main(["ca", "init", "--org", "Example Ltd", "--base-url", "http://pki.example.com",
                 "--key-type", "p256", "--country", "GB",
                 "--organization-identifier", "NTRGB-12345678"]) == 0
    return data


def write_config(path: Path, server: Slapd, *, max_removals: float = 0.05,
                 url: str | None = None, password_file: Path | None = None,
                 filter_: str = "(&(objectClass=inetOrgPerson)(mail=*))",
                 publish: bool = False) -> Path:
    text = f"""[sync]
max_removals = {max_removals}
[sync.ldap]
url = "{url or server.url}"
base_dn = "{server.people}"
bind_dn = "{server.root_dn}"
password_file = "{password_file or server.password_file}"
timeout = 2
filter = "{filter_}"
"""
    if publish:
        text += f"""[directory.ldap]
url = "{server.url}"
base_dn = "{server.people}"
bind_dn = "{server.root_dn}"
password_file = "{server.password_file}"
publish = true
"""
    path.write_text(text)
    return path


def sync(config: Path, out: Path, *args: str) -> int:
    return main(["--config", str(config), "ca", "sync", "--ldap", "--out", str(out), *FAST,
                 *args])


def records(data: Path) -> list[IssuedRecord]:
    with Store.open(None, data, create=False) as store:
        return store.issued_records(live_only=False)


def live(data: Path) -> dict[str, Counter[str]]:
    """Live certificates per address, counted by purpose."""
    found: dict[str, Counter[str]] = {}
    for record in records(data):
        if record.live:
            found.setdefault(record.email, Counter())[record.purpose] += 1
    return found


def subject_name(data: Path, record: IssuedRecord) -> str:
    with Store.open(None, data, create=False) as store:
        stored = store.get_certificate(record.fingerprint)
        assert stored is not None
        return str(stored.certificate.subject.get_attributes_for_oid(
            NameOID.COMMON_NAME)[0].value)


def remove(server: Slapd, gone: list[Person]) -> None:
    server.ldap_tool("ldapdelete", *(f"uid={p.uid},{server.people}" for p in gone))


def modify(server: Slapd, person: Person, attribute: str, value: str) -> None:
    server.ldap_tool("ldapmodify", input=(
        f"dn: uid={person.uid},{server.people}\nchangetype: modify\nreplace: {attribute}\n"
        f"{attribute}: {value}\n").encode())


# -- the whole story ---------------------------------------------------------------------


@pytest.mark.slow
def test_sync_of_500_then_joiners_leavers_and_renames_matches_the_directory(
        slapd: Slapd, cli_ca: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    staff = people(500)
    slapd.add_people(staff)
    config = write_config(tmp_path / "smimekit.toml", slapd, max_removals=0.05)
    assert sync(config, tmp_path / "out1") == 0
    assert "synced: 500 joined, 0 left" in capsys.readouterr().err
    assert set(live(cli_ca)) == {p.mail for p in staff}
    assert all(c == Counter({"sign": 1, "encrypt": 1}) for c in live(cli_ca).values())

    joiners = people(20, start=500)
    leavers = staff[10:20]
    new_mail = {p.uid: f"renamed.{p.uid}@example.org" for p in staff[30:33]}
    new_cn = {p.uid: f"Renamed {p.sn}" for p in staff[40:42]}
    slapd.add_people(joiners)
    remove(slapd, leavers)
    for person in staff:
        if person.uid in new_mail:
            modify(slapd, person, "mail", new_mail[person.uid])
        if person.uid in new_cn:
            modify(slapd, person, "cn", new_cn[person.uid])
    before = {r.fingerprint for r in records(cli_ca)}

    assert sync(config, tmp_path / "out2", "--dry-run") == 0
    planned = capsys.readouterr()
    assert planned.out.count("join ") == 20 and planned.out.count("leave ") == 10
    assert planned.out.count("move ") == 3 and planned.out.count("rename ") == 2
    assert {r.fingerprint for r in records(cli_ca)} == before  # the dry run changed nothing

    assert sync(config, tmp_path / "out2") == 0
    err = capsys.readouterr().err
    assert "synced: 20 joined, 10 left, 3 moved, 2 renamed" in err and "failed 0" in err

    # the CA matches the directory exactly
    directory = {new_mail.get(p.uid, p.mail) for p in staff if p not in leavers} \
        | {p.mail for p in joiners}
    now_live = live(cli_ca)
    assert set(now_live) == directory
    assert all(c == Counter({"sign": 1, "encrypt": 1}) for c in now_live.values())
    by_email: dict[str, list[IssuedRecord]] = {}
    for record in records(cli_ca):
        by_email.setdefault(record.email, []).append(record)
    for person in leavers:
        assert [r.reason for r in by_email[person.mail]] == ["cessation-of-operation"] * 2
    for person in staff[30:33]:
        assert [r.reason for r in by_email[person.mail]] == ["superseded"] * 2
        assert (tmp_path / "out2" / f"{new_mail[person.uid]}.encrypt.pem").exists()
    for person in staff[40:42]:
        old = [r for r in by_email[person.mail] if not r.live]
        new = [r for r in by_email[person.mail] if r.live]
        assert [r.reason for r in old] == ["superseded"] * 2
        assert {subject_name(cli_ca, r) for r in old} == {person.cn}
        assert {subject_name(cli_ca, r) for r in new} == {new_cn[person.uid]}
    # leavers' encryption keys stay in escrow
    with Store.open(None, cli_ca, create=False) as store:
        assert all(store.private_keys_for(p.mail, "encrypt") for p in leavers)
        actions = Counter(e.action for e in store.audit_entries())
    assert actions["ca.revoke"] == 10 * 2 + 3 * 2 + 2 * 2
    assert actions["ca.sync.left"] == 10

    # a second run does nothing, and says so
    count = len(records(cli_ca))
    assert sync(config, tmp_path / "out3") == 0
    assert "nothing to do: the CA matches the source (510 people)" in capsys.readouterr().err
    assert len(records(cli_ca)) == count


# -- refusals ------------------------------------------------------------------------------


def test_empty_search_result_is_refused_and_nothing_changes(
        slapd: Slapd, cli_ca: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    slapd.add_people(people(4))
    config = write_config(tmp_path / "ok.toml", slapd, max_removals=10)
    assert sync(config, tmp_path / "out") == 0
    capsys.readouterr()
    broken = write_config(tmp_path / "broken.toml", slapd, max_removals=10,
                          filter_="(&(objectClass=inetOrgPerson)(mail=*@nowhere.invalid))")
    for extra in ((), ("--allow-removals", "100"), ("--dry-run",)):
        assert sync(broken, tmp_path / "out", *extra) == 3
        err = capsys.readouterr().err
        assert "returned nobody" in err and "nothing was changed" in err
    assert len(live(cli_ca)) == 4 and all(r.live for r in records(cli_ca))


def test_mass_removal_is_refused_dry_run_changes_nothing_and_allow_overrides_once(
        slapd: Slapd, cli_ca: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    staff = people(20)
    slapd.add_people(staff)
    config = write_config(tmp_path / "smimekit.toml", slapd, max_removals=0.1)
    assert sync(config, tmp_path / "out") == 0
    remove(slapd, staff[:5])  # 25 % of the people, the limit is 10 % (2)
    capsys.readouterr()
    assert sync(config, tmp_path / "out") == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "5 leavers of 20 is more than the 2 allowed" in err
    assert "--allow-removals 5" in err
    with monkeypatch.context() as m:
        m.delenv("SMIMEKIT_PASSPHRASE")  # a dry run does not unlock the CA
        assert sync(config, tmp_path / "out", "--dry-run", "--allow-removals", "5") == 0
    out = capsys.readouterr().out
    assert sorted(line.split()[1] for line in out.splitlines()) == [p.uid for p in staff[:5]]
    assert len(live(cli_ca)) == 20
    assert sync(config, tmp_path / "out", "--allow-removals", "4") == 3
    assert sync(config, tmp_path / "out", "--allow-removals", "5") == 0
    assert set(live(cli_ca)) == {p.mail for p in staff[5:]}
    # the override was for that run: the next one is back under the threshold
    remove(slapd, staff[5:8])
    assert sync(config, tmp_path / "out") == 3


def test_wrong_bind_password_and_unreachable_directory_are_one_line_and_change_nothing(
        slapd: Slapd, cli_ca: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    slapd.add_people(people(2))
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not the password\n")
    bad = write_config(tmp_path / "bad.toml", slapd, password_file=wrong)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = f"ldap://127.0.0.1:{closed.getsockname()[1]}"
    down = write_config(tmp_path / "down.toml", slapd, url=dead)
    for config, words in ((bad, "refused the bind"), (down, dead)):
        assert sync(config, tmp_path / "out") == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("smimekit: error: ")
        assert words in err and "not the password" not in err and slapd.root_password not in err
    assert records(cli_ca) == []


def test_a_second_sync_waits_for_none_it_is_refused_while_one_runs(
        slapd: Slapd, cli_ca: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    slapd.add_people(people(1))
    config = write_config(tmp_path / "smimekit.toml", slapd)
    fd = os.open(cli_ca / "ca-sync.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a running sync holds it
        assert sync(config, tmp_path / "out") == 75
        assert "another 'ca sync' is running" in capsys.readouterr().err
        assert records(cli_ca) == []
    finally:
        os.close(fd)
    assert sync(config, tmp_path / "out") == 0
    assert len(live(cli_ca)) == 1


# -- the CSV source, and the directory kept current --------------------------------------


def test_csv_source_enrols_moves_and_removes_and_publishes(
        slapd: Slapd, cli_ca: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "smimekit.toml"
    config.write_text(f"""[sync]
max_removals = 1
[directory.ldap]
url = "{slapd.url}"
base_dn = "{slapd.people}"
bind_dn = "{slapd.root_dn}"
password_file = "{slapd.password_file}"
publish = true
""")
    hr = tmp_path / "hr.csv"
    hr.write_text("Employee_ID,Display_Name,Mail,Department\n"
                  "e1,Ann Archer,ann@example.org,Sales\n"
                  "e2,Bob Baker,bob@example.org,Ops\n"
                  "e3,Cat Cooper,cat@example.org,Ops\n")
    args = ["--config", str(config), "ca", "sync", "--csv", str(hr), "--out",
            str(tmp_path / "out"), "--key-type", "p256", "--workers", "2"]  # the pooled path
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "synced: 3 joined" in err and "directory: published 3 certificates" in err
    assert "ann@example.org" in slapd.search("(mail=ann@example.org)", "mail")
    hr.write_text("employee_id,display_name,mail\n"
                  "e1,Ann Archer,ann.archer@example.org\n"
                  "e2,Bob Baker,bob@example.org\n")
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "synced: 0 joined, 1 left, 1 moved, 0 renamed" in err
    assert set(live(cli_ca)) == {"ann.archer@example.org", "bob@example.org"}
    # the directory holds no certificate of the leaver or of the old address any more
    for gone in ("cat@example.org", "ann@example.org"):
        assert "userCertificate" not in slapd.search(f"(mail={gone})",
                                                     "usercertificate;binary")
    assert main(args) == 0
    assert "nothing to do" in capsys.readouterr().err


def test_csv_without_an_id_column_is_one_line(
        cli_ca: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hr = tmp_path / "hr.csv"
    hr.write_text("email,name\nann@example.org,Ann Archer\n")
    assert main(["ca", "sync", "--csv", str(hr), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs an 'id' and an 'email' column" in err


def test_source_options_and_configuration_are_checked_first(
        cli_ca: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hr = tmp_path / "hr.csv"
    hr.write_text("id,email\ne1,ann@example.org\n")
    assert main(["ca", "sync"]) == 2
    assert main(["ca", "sync", "--ldap", "--csv", str(hr)]) == 2
    capsys.readouterr()
    assert main(["ca", "sync", "--ldap"]) == 1
    assert "--ldap needs a [sync.ldap] table" in capsys.readouterr().err
    config = tmp_path / "smimekit.toml"
    config.write_text('[sync.ldap]\nurl = "http://ldap.example.org"\nbase_dn = "dc=x"\n')
    assert main(["--config", str(config), "ca", "sync", "--ldap"]) == 1
    assert "sync.ldap.url must be ldap:// or ldaps://" in capsys.readouterr().err
    assert records(cli_ca) == []


def test_entries_without_a_usable_address_are_kept_and_reported(tmp_path: Path) -> None:
    hr = tmp_path / "hr.csv"
    hr.write_text("id,email,name\ne1,ann@example.org,Ann\ne2,,Bob\ne3,not an address,Cat\n"
                  "e4,dup@example.org,D\ne5,DUP@example.org,E\n,nobody@example.org,X\n")
    read = read_identity_csv(hr)
    assert [i.id for i in read.identities] == ["e1"]
    assert read.held == {"e2", "e3", "e4", "e5"}
    assert read.held_emails == {"nobody@example.org"}
    assert len(read.problems) == 4


def test_a_broken_entry_revokes_nobody(
        cli_ca: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hr = tmp_path / "hr.csv"
    hr.write_text("id,email,name\ne1,ann@example.org,Ann Archer\ne2,bob@example.org,Bob Baker\n"
                  "e3,cat@example.org,Cat Cooper\n")
    args = ["ca", "sync", "--csv", str(hr), "--out", str(tmp_path / "out"), *FAST,
            "--allow-removals", "3"]
    assert main(args) == 0
    # e2 lost its address, e3 its id: both are reported, neither is a leaver
    hr.write_text("id,email,name\ne1,ann@example.org,Ann Archer\ne2,,Bob Baker\n"
                  ",cat@example.org,Cat Cooper\n")
    capsys.readouterr()
    assert main(args) == 0
    err = capsys.readouterr().err
    assert err.count("warning: ") == 2 and "nothing to do" in err
    assert set(live(cli_ca)) == {"ann@example.org", "bob@example.org", "cat@example.org"}


# -- resuming ------------------------------------------------------------------------------


def test_a_stopped_sync_is_finished_by_the_next_without_duplicates(
        slapd: Slapd, any_cax: CertificateAuthority) -> None:
    cax = any_cax  # on SQLite and PostgreSQL
    staff = people(12)
    slapd.add_people(staff)
    settings = SyncLdapConfig(url=slapd.url, base_dn=slapd.people, bind_dn=slapd.root_dn,
                              password_file=slapd.password_file)

    def enrol(rows: list) -> Iterator:  # type: ignore[type-arg]
        return enroll_rows(cax, rows, sign_key=SubscriberKeyType.P256,
                           encrypt_key=SubscriberKeyType.P256)

    def run(source: SourceRead, stop_after: int | None = None) -> int:
        events = apply_sync(cax, plan_sync(cax, source), enrol=enrol)
        done = 0
        for _ in events:
            done += 1
            if done == stop_after:
                events.close()  # stopped between two people, as Ctrl-C or a kill does
                break
        return done

    assert run(read_identity_ldap(settings), stop_after=5) == 5
    known = cax.store.identities()
    assert len(known) == 5
    # the rest, and one more change, on the next run
    mover = next(p for p in staff if p.uid in known)
    modify(slapd, mover, "mail", "moved@example.org")
    source = read_identity_ldap(settings)
    plan = plan_sync(cax, source)
    assert (len(plan.joiners), len(plan.moves)) == (7, 1)
    assert run(source) == 8
    held = Counter((r.email, r.purpose) for r in cax.store.issued_records(live_only=True))
    assert set(held.values()) == {1} and len(held) == 24
    assert plan_sync(cax, read_identity_ldap(settings)).empty


@pytest.mark.slow
def test_a_killed_sync_is_finished_by_the_next_without_duplicates(
        slapd: Slapd, cli_ca: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    staff = people(80)
    slapd.add_people(staff)
    config = write_config(tmp_path / "smimekit.toml", slapd)
    out = tmp_path / "out"
    child = subprocess.Popen(
        [sys.executable, "-m", "smimekit.cli.main", "--config", str(config), "ca", "sync",
         "--ldap", "--out", str(out), *FAST], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, env={**os.environ})
    try:
        deadline = time.monotonic() + 120  # a liveness bound, not a figure
        while child.poll() is None and time.monotonic() < deadline:
            if (cli_ca / "smimekit.db").exists() and len(records(cli_ca)) >= 20:
                break
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    killed_at = len(records(cli_ca))
    assert child.returncode == -signal.SIGKILL and 20 <= killed_at < 2 * len(staff)
    assert sync(config, out) == 0
    err = capsys.readouterr().err
    assert "failed 0" in err
    held = Counter((r.email, r.purpose) for r in records(cli_ca))
    assert set(held) == {(p.mail, purpose) for p in staff for purpose in ("sign", "encrypt")}
    assert set(held.values()) == {1}  # nobody issued twice
    assert sync(config, out) == 0
    assert "nothing to do" in capsys.readouterr().err


def test_a_crl_a_killed_run_left_unpublished_is_published_by_the_next(
        cli_ca: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hr = tmp_path / "hr.csv"
    hr.write_text("id,email,name\ne1,ann@example.org,Ann Archer\n")
    args = ["ca", "sync", "--csv", str(hr), "--out", str(tmp_path / "out"), *FAST]
    assert main(args) == 0
    with Store.open(None, cli_ca, create=False) as store:
        cax = CertificateAuthority(CAHome(cli_ca).unlock(PASS.encode()), store)
        role = cax.issue_generated("role@example.org", name="Role Box", purpose="encrypt",
                                   encrypt_key=SubscriberKeyType.P256)
        # revoked, and the run died before its CRL
        cax.revoke_records([role.items[0].record], reason="superseded", publish=False)
        before = store.latest_crl(cax.issuer_fingerprint, with_der=False)
        assert before is not None
    assert main(args) == 0
    assert "nothing to do" in capsys.readouterr().err
    with Store.open(None, cli_ca, create=False) as store:
        after = store.latest_crl(cax.issuer_fingerprint)
        assert after is not None and after.number == before.number + 1
        crl = x509.load_der_x509_crl(after.der or b"")
        assert crl.get_revoked_certificate_by_serial_number(
            role.items[0].cert.serial_number) is not None
