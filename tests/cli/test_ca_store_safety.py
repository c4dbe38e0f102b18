"""`ca init` checks everything before creating anything; the CA's store is recorded and checked;
read commands never create a data directory, a database or a schema (issue 8, section 4)."""

from __future__ import annotations

import json
import os
import pty
import secrets
import select
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from backends import PG_DB, PG_HOST, PG_PORT, Backend, _pg_user

from smimekit.cli.main import main

PASS = "correct horse battery staple"
BASE = "http://pki.example.com"
INIT = ["ca", "init", "--org", "Example Ltd", "--base-url", BASE, "--key-type", "p256",
        "--country", "GB"]


@pytest.fixture(autouse=True)
def passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMIMEKIT_PASSPHRASE", PASS)
    monkeypatch.delenv("SMIMEKIT_DATABASE_URL", raising=False)


def snapshot(root: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every path under ``root`` with its mode and (for files) content."""
    out: dict[str, tuple[int, bytes | None]] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        out[str(path.relative_to(root))] = (st.st_mode,
                                            path.read_bytes() if path.is_file() else None)
    return out


def one_error(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    captured = capsys.readouterr()
    err = captured.err
    assert err.startswith("smimekit: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and captured.out == ""
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def pg_user() -> str:
    user = _pg_user()
    if user is None:
        pytest.skip(f"no PostgreSQL server at {PG_HOST}:{PG_PORT}")
    return user


def pg_tables(schema: str) -> list[str]:
    with psycopg.connect(host=PG_HOST, port=PG_PORT, dbname=PG_DB, user=pg_user()) as conn:
        rows = conn.execute("SELECT table_name FROM information_schema.tables"
                            " WHERE table_schema = %s", (schema,)).fetchall()
    return sorted(r[0] for r in rows)


@pytest.fixture
def pg_schema() -> Iterator[tuple[str, str]]:
    """An empty PostgreSQL schema and a URL for it (with a password the server ignores)."""
    user = pg_user()
    schema = f"smimekit_test_{secrets.token_hex(6)}"
    conninfo = dict(host=PG_HOST, port=PG_PORT, dbname=PG_DB, user=user, autocommit=True)
    with psycopg.connect(**conninfo) as conn:  # type: ignore[arg-type]
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = (f"postgresql+psycopg://{user}:s3cret-pw@{PG_HOST}:{PG_PORT}/{PG_DB}"
           f"?options=-csearch_path%3D{schema}")
    try:
        yield schema, url
    finally:
        with psycopg.connect(**conninfo) as conn:  # type: ignore[arg-type]
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


# -- ca init: every refusal before anything is created ---------------------------------------

REFUSALS = [
    (["--base-url", "https://pki.example.com"], "must be http://"),
    (["--base-url", "http://127.0.0.1:8080"], "not an IP address"),
    (["--base-url", "http://[::1]/pki"], "not an IP address"),
    (["--base-url", "http://localhost"], "not a public DNS name"),
    (["--base-url", "http://pki.local"], "not a public DNS name"),
    (["--base-url", "http://ca.internal"], "not a public DNS name"),
    (["--base-url", "http://pki.example.notatld"], "not a public DNS name"),
    (["--base-url", "http://"], "no host name"),
    (["--base-url", "pki.example.com"], "must be http://"),
    (["--base-url", "http://user@pki.example.com"], "no user, query or fragment"),
    (["--base-url", "http://pki.example.com/?x=1"], "no user, query or fragment"),
    (["--base-url", "http://pki.example.com:99999"], "bad port"),
    (["--base-url", "http://pki_ca.example.com"], "not a valid DNS name"),
    (["--base-url", "http://bücher.example.com"], "xn--"),
    (["--org", "An Organisation Whose Name Is Much Too Long For Any CA"], "too long"),
    (["--org", " "], "organization name"),
    (["--country", "gb"], "two-letter"),
    (["--country", "GBR"], "two-letter"),
    (["--organization-identifier", "12345678"], "BR 7.1.4.2.2"),
    (["--profile", "sponsored-strict"], "needs --organization-identifier"),
    (["--database-url", "mysql://root@localhost/x"], "unsupported database"),
    (["--database-url", "::not a url::"], "bad database URL"),
]


@pytest.mark.parametrize("existing", [False, True], ids=["new-dir", "existing-dir"])
@pytest.mark.parametrize("extra,message", REFUSALS, ids=[m for _, m in REFUSALS])
def test_init_refusal_leaves_the_data_dir_as_it_was(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], existing: bool,
        extra: list[str], message: str) -> None:
    data = tmp_path / "data"
    if existing:
        (data / "trust").mkdir(parents=True)
        (data / "trust" / "x.pem").write_bytes(b"anchor")
    before = snapshot(tmp_path)
    # --database-url is a global option: it goes before the command
    globals_, args = (extra, []) if extra[0] == "--database-url" else ([], extra)
    assert main(["--data-dir", str(data), *globals_, *INIT, *args]) == 1
    one_error(capsys, message)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("case", ["short", "not-utf8", "missing-file", "unset-env",
                                  "no-terminal", "under-a-file", "pkcs11-no-pin"])
def test_init_refuses_bad_secrets_and_places_before_creating(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        case: str) -> None:
    data = tmp_path / "data"
    (tmp_path / "short.pass").write_text("too short\n")
    (tmp_path / "latin1.pass").write_bytes(b"caf\xe9 au lait, tr\xe8s bien\n")
    (tmp_path / "file").write_text("a regular file")
    (tmp_path / "module.so").write_bytes(b"")
    args, message = {
        "short": (["--passphrase-file", str(tmp_path / "short.pass")], "at least 12"),
        "not-utf8": (["--passphrase-file", str(tmp_path / "latin1.pass")], "UTF-8"),
        "missing-file": (["--passphrase-file", str(tmp_path / "nope")], "cannot read"),
        "unset-env": (["--passphrase-env", "SMIMEKIT_TEST_UNSET"], "is not set"),
        "no-terminal": ([], "no terminal"),
        "under-a-file": ([], "is not a directory"),
        "pkcs11-no-pin": (["--pkcs11-module", str(tmp_path / "module.so")], "PIN"),
    }[case]
    if case == "no-terminal":
        monkeypatch.delenv("SMIMEKIT_PASSPHRASE")
    if case == "under-a-file":
        data = tmp_path / "file" / "data"
    monkeypatch.delenv("SMIMEKIT_TEST_UNSET", raising=False)
    monkeypatch.delenv("SMIMEKIT_PKCS11_PIN", raising=False)
    before = snapshot(tmp_path)
    assert main(["--data-dir", str(data), *INIT, *args]) == 1
    one_error(capsys, message)
    assert snapshot(tmp_path) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a 0500 directory")
def test_init_refuses_an_unwritable_place(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        assert main(["--data-dir", str(locked / "data"), *INIT]) == 1
        one_error(capsys, "not writable")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


def test_init_over_an_existing_ca_changes_nothing(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    assert main(["--data-dir", str(data), *INIT]) == 0
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert main(["--data-dir", str(data), *INIT]) == 1
    one_error(capsys, "exists already")
    assert snapshot(tmp_path) == before


def test_init_refusal_creates_no_postgresql_tables(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], pg_schema: tuple[str, str]) -> None:
    schema, url = pg_schema
    data = tmp_path / "data"
    assert main(["--data-dir", str(data), "--database-url", url, *INIT, "--base-url",
                 "http://localhost:8080"]) == 1
    one_error(capsys, "not a public DNS name")
    assert pg_tables(schema) == [] and not data.exists()


# -- ca init on a terminal: the passphrase twice --------------------------------------------


def _init_on_a_terminal(data: Path, answers: list[str]) -> tuple[int, str]:
    """Run ``ca init`` on a pseudo-terminal, answering each passphrase prompt in turn."""
    env = {k: v for k, v in os.environ.items() if k != "SMIMEKIT_PASSPHRASE"}
    pid, fd = pty.fork()
    if pid == 0:  # the child: stdin, stdout, stderr and /dev/tty are the terminal
        try:
            os.execve(sys.executable, [sys.executable, "-m", "smimekit.cli.main",
                                       "--data-dir", str(data), *INIT], env)
        finally:
            os._exit(127)
    transcript = b""
    pending = list(answers)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        transcript += chunk
        prompts = (transcript.count(b"New CA passphrase")
                   + transcript.count(b"Repeat the CA passphrase"))
        if pending and prompts > len(answers) - len(pending) \
                and transcript.endswith(b": "):  # answer each prompt once it is shown
            os.write(fd, pending.pop(0).encode() + b"\n")
    if time.monotonic() >= deadline:  # waiting for input it will not get: fail, not hang
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), transcript.decode(errors="replace")


def test_init_on_a_terminal_asks_twice_and_again_on_a_mismatch(tmp_path: Path) -> None:
    data = tmp_path / "data"
    code, transcript = _init_on_a_terminal(data, [PASS, PASS + "x", PASS, PASS])
    assert code == 0, transcript
    assert transcript.count("New CA passphrase") == 2
    assert transcript.count("Repeat the CA passphrase") == 2
    assert "the two passphrases differ; try again" in transcript
    assert PASS not in transcript  # never echoed
    assert (data / "ca" / "ca.json").is_file()
    # the keys are under the passphrase typed (twice), not under the mismatched one
    assert main(["--data-dir", str(data), "ca", "crl"]) == 0


def test_init_on_a_terminal_gives_up_after_three_mismatches(tmp_path: Path) -> None:
    data = tmp_path / "data"
    code, transcript = _init_on_a_terminal(
        data, [PASS, "a", "short", PASS + "1", PASS + "2", PASS + "3"])
    assert code == 1, transcript
    assert "too short" in transcript and "differ" in transcript
    assert "no CA passphrase after 3 attempts" in transcript and "Traceback" not in transcript
    assert not data.exists()


# -- the CA's store, recorded in ca.json and checked -----------------------------------------


def test_ca_json_records_the_default_sqlite_store(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert main(["--data-dir", str(data), *INIT]) == 0
    config = json.loads((data / "ca" / "ca.json").read_text())
    assert config["store"] == {"backend": "sqlite", "location": "smimekit.db"}
    # the same file named by URL is the same store
    url = f"sqlite:///{data / 'smimekit.db'}"
    assert main(["--data-dir", str(data), "--database-url", url, "ca", "crl"]) == 0


def test_ca_json_records_the_postgresql_url_without_password(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], pg_schema: tuple[str, str]) -> None:
    schema, url = pg_schema
    data = tmp_path / "data"
    assert main(["--data-dir", str(data), "--database-url", url, *INIT]) == 0
    raw = (data / "ca" / "ca.json").read_text()
    assert "s3cret-pw" not in raw
    store = json.loads(raw)["store"]
    assert store["backend"] == "postgresql"
    assert store["location"] == url.replace(":s3cret-pw", "")
    assert "audit_log" in pg_tables(schema)
    capsys.readouterr()

    # later, without --database-url: refused, and no SQLite store appears
    before = snapshot(tmp_path)
    for args in (["ca", "issue", "--email", "a@example.com", "--out", str(tmp_path / "a")],
                 ["ca", "revoke", "--email", "a@example.com"],
                 ["ca", "crl"], ["ca", "expiring"], ["ca", "export-root", "-o",
                                                     str(tmp_path / "root.p12")],
                 ["escrow", "status"], ["log", "verify"], ["log", "show"]):
        assert main(["--data-dir", str(data), *args]) == 1, args
        one_error(capsys, "keeps its records in PostgreSQL", "--database-url")
        assert snapshot(tmp_path) == before, args
    assert not (data / "smimekit.db").exists()

    # another schema of the same server is another store
    other = url.replace(schema, schema + "x")
    assert main(["--data-dir", str(data), "--database-url", other, "ca", "crl"]) == 1
    one_error(capsys, "keeps its records in PostgreSQL")
    # with its own URL (any password) it works
    assert main(["--data-dir", str(data), "--database-url",
                 url.replace("s3cret-pw", "other-pw"), "ca", "crl"]) == 0


def test_ca_on_sqlite_refuses_a_postgresql_url_and_creates_no_tables(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], pg_schema: tuple[str, str]) -> None:
    schema, url = pg_schema
    data = tmp_path / "data"
    assert main(["--data-dir", str(data), *INIT]) == 0
    capsys.readouterr()
    assert main(["--data-dir", str(data), "--database-url", url, "ca", "issue", "--email",
                 "a@example.com", "--out", str(tmp_path / "a")]) == 1
    one_error(capsys, "keeps its records in SQLite", "without --database-url")
    assert pg_tables(schema) == [] and not (tmp_path / "a").exists()


def test_ca_whose_store_is_gone_is_refused_not_recreated(
        backend: Backend, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = backend.data_dir
    assert main([*backend.cli_args(), *INIT]) == 0
    capsys.readouterr()
    if backend.url is None:
        for suffix in ("", "-wal", "-shm"):
            (data / f"smimekit.db{suffix}").unlink(missing_ok=True)
    else:
        with psycopg.connect(host=PG_HOST, port=PG_PORT, dbname=PG_DB, user=pg_user(),
                             autocommit=True) as conn:
            schema = backend.url.rsplit("%3D", 1)[1]
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
            conn.execute(f'CREATE SCHEMA "{schema}"')
    before = snapshot(tmp_path)
    assert main([*backend.cli_args(), "ca", "issue", "--email", "a@example.com",
                 "--out", str(tmp_path / "a")]) == 1
    one_error(capsys, "no " if backend.url is None else "no smimekit store")
    assert snapshot(tmp_path) == before
    if backend.url is not None:
        assert pg_tables(backend.url.rsplit("%3D", 1)[1]) == []


def test_ca_json_without_a_store_record_still_works(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """A CA made before the store was recorded keeps working with the store it has."""
    data = tmp_path / "data"
    assert main(["--data-dir", str(data), *INIT]) == 0
    path = data / "ca" / "ca.json"
    config = json.loads(path.read_text())
    del config["store"]
    path.write_text(json.dumps(config))
    assert main(["--data-dir", str(data), "ca", "crl"]) == 0
    # but a missing store is still not created
    (data / "smimekit.db").rename(tmp_path / "moved.db")
    capsys.readouterr()
    assert main(["--data-dir", str(data), "ca", "crl"]) == 1
    one_error(capsys, "no store at")
    assert not (data / "smimekit.db").exists()


# -- read commands never create --------------------------------------------------------------

READS = [["log", "verify"], ["log", "show"], ["trust", "list"], ["trust", "show", "abcdef12"],
         ["ca", "chain"], ["ca", "expiring"], ["escrow", "status"]]


@pytest.mark.parametrize("args", READS, ids=[" ".join(a[:2]) for a in READS])
def test_read_commands_refuse_a_missing_data_dir(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str],
                                                 args: list[str]) -> None:
    data = tmp_path / "nowhere"
    assert main(["--data-dir", str(data), *args]) == 1
    one_error(capsys, str(data))
    assert not data.exists() and list(tmp_path.iterdir()) == []


def test_log_on_a_sqlite_url_that_names_no_file_creates_none(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    assert main(["--data-dir", str(tmp_path / "none"), "--database-url", url,
                 "log", "verify"]) == 1
    one_error(capsys, "no store at")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [["log", "verify"], ["log", "show"]])
def test_log_in_a_data_dir_without_a_store_creates_none(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    data = tmp_path / "data"
    (data / "trust").mkdir(parents=True)
    before = snapshot(tmp_path)
    assert main(["--data-dir", str(data), *args]) == 1
    one_error(capsys, "no store at")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("args", [["log", "verify"], ["log", "show"]])
def test_log_against_an_empty_schema_creates_no_tables(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], pg_schema: tuple[str, str],
        args: list[str]) -> None:
    schema, url = pg_schema
    assert main(["--data-dir", str(tmp_path / "none"), "--database-url", url, *args]) == 1
    one_error(capsys, "no smimekit store")
    assert pg_tables(schema) == [] and list(tmp_path.iterdir()) == []


def test_log_against_a_database_that_does_not_exist_creates_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    user = pg_user()
    name = f"smimekit_missing_{secrets.token_hex(4)}"
    url = f"postgresql+psycopg://{user}@{PG_HOST}:{PG_PORT}/{name}"
    assert main(["--data-dir", str(tmp_path / "none"), "--database-url", url,
                 "log", "verify"]) == 1
    one_error(capsys, "cannot use the database")
    with psycopg.connect(host=PG_HOST, port=PG_PORT, dbname=PG_DB, user=user) as conn:
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                            (name,)).fetchone() is None


@pytest.mark.parametrize("existing", [False, True], ids=["new-dir", "existing-dir"])
def test_init_failing_half_way_leaves_nothing_behind(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        existing: bool) -> None:
    """A failure after the store and the CA directory were made (the first CRL's write)
    removes both again, so the next 'ca init' starts clean."""
    from smimekit.ca.issuance import CertificateAuthority
    from smimekit.errors import StoreError

    data = tmp_path / "data"
    if existing:
        (data / "trust").mkdir(parents=True)
        (data / "trust" / "x.pem").write_bytes(b"anchor")
    before = snapshot(tmp_path)

    def fail(self: object, *args: object, **kwargs: object) -> None:
        assert (data / "ca" / "ca.json").is_file() and (data / "smimekit.db").is_file()
        raise StoreError("the disk is full (simulated)")

    monkeypatch.setattr(CertificateAuthority, "publish_crl", fail)
    assert main(["--data-dir", str(data), *INIT]) == 1
    one_error(capsys, "simulated")
    assert snapshot(tmp_path) == before
    monkeypatch.undo()
    monkeypatch.setenv("SMIMEKIT_PASSPHRASE", PASS)
    assert main(["--data-dir", str(data), *INIT]) == 0
