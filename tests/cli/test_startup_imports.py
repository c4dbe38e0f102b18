"""Start-up time: a message command imports neither the store, the CA, escrow nor the linter.

Each check runs ``smimekit ARGS`` in a fresh interpreter and reads its ``sys.modules`` as it
ends. The command groups are loaded lazily (``cli/lazy.py``), so the help texts the top-level
group shows without importing them are checked against the commands. That every ``--help``
prints no warning is tests/cli/test_no_warnings.py's job.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from cryptography.hazmat.primitives import serialization
from pki import PKI, Identity, message

from smimekit.cli.lazy import LazyGroup
from smimekit.cli.main import COMMANDS, cli, main

# Modules that only the store, CA, escrow and archive commands need.
FORBIDDEN = (
    "sqlalchemy",
    "pkilint",
    "psycopg",
    "rich.progress",
    "smimekit.store",
    "smimekit.ca",
    "smimekit.escrow",
    "smimekit.archive",
    "smimekit.cli.ca",
    "smimekit.cli.ca_lifecycle",
    "smimekit.cli.escrow",
    "smimekit.cli.archive",
    "smimekit.cli.log",
)
MESSAGE_MODULES = ("smimekit.cli.messages", "smimekit.api")
# Imported where they are used, so these runs (PEM keys, a 7-bit message, multipart/signed, no
# revocation URL in any certificate) do without them.
NOT_NEEDED = {
    "sign": {"smimekit.cms.enveloped", "smimekit.keys.pkcs12", "email.policy",
             "urllib.request", "http.client"},
    "verify": {"smimekit.cms.enveloped", "smimekit.keys.pkcs12", "email.policy",
               "urllib.request", "http.client"},
    "encrypt": {"smimekit.keys.pkcs12", "email.policy", "urllib.request", "http.client"},
    "decrypt": {"smimekit.keys.pkcs12", "email.policy", "urllib.request", "http.client"},
}


# ``python -m smimekit.cli.main ARGS`` that writes sys.modules, as the run ends, to a file. (Not
# ``-X importtime``: it does not list modules loaded through importlib.import_module.)
_RUN = """
import atexit, json, os, runpy, sys
out = os.environ["STARTUP_MODULES_FILE"]
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
runpy.run_module("smimekit.cli.main", run_name="__main__", alter_sys=True)
"""


def imported(tmp_path: Path, *args: str | Path) -> tuple[set[str], str]:
    """The modules a fresh ``smimekit ARGS`` imported, and what it wrote on stderr."""
    out = tmp_path / "modules.json"
    env = {k: v for k, v in os.environ.items() if k != "SMIMEKIT_PASSPHRASE"}
    proc = subprocess.run(
        [sys.executable, "-c", _RUN, *map(str, args)],
        capture_output=True, env={**env, "STARTUP_MODULES_FILE": str(out)}, timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    return set(json.loads(out.read_text())), proc.stderr.decode()


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN))


def test_verify_help_imports_no_store_ca_escrow_or_linter(tmp_path: Path) -> None:
    modules, _ = imported(tmp_path, "verify", "--help")
    assert {"smimekit.cli.messages", "smimekit.api"} <= modules  # it sees the real imports
    assert heavy(modules) == []


def test_top_level_help_lists_every_command_and_imports_none(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    modules, _ = imported(tmp_path, "--help")
    assert heavy(modules) == []
    assert not modules & {*MESSAGE_MODULES, "smimekit.cli.trust"}
    assert main(["--help"]) == 0
    listing = capsys.readouterr().out.split("Commands:")[1]
    listed = [line.split()[0] for line in listing.splitlines() if line.strip()]
    assert listed == sorted(spec.name for spec in COMMANDS)
    assert "Verify a signed message; write its content to OUT" in listing


@pytest.fixture()
def files(tmp_path: Path, pki: PKI, alice: Identity) -> Path:
    (tmp_path / "root.pem").write_bytes(pki.root.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "alice.pem").write_bytes(alice.pem_cert())
    (tmp_path / "alice.key").write_bytes(alice.pem_key())
    (tmp_path / "msg.eml").write_bytes(message())
    return tmp_path


def test_message_commands_on_a_message_import_no_store_ca_escrow_or_linter(
        files: Path) -> None:
    key = ["--key", files / "alice.key", "--cert", files / "alice.pem"]
    runs = {
        "sign": ["sign", *key, files / "msg.eml", "-o", files / "signed.eml"],
        "verify": ["verify", "--trust", files / "root.pem", files / "signed.eml",
                   "-o", files / "verified.eml"],
        "encrypt": ["encrypt", "--to", files / "alice.pem", "--trust", files / "root.pem",
                    files / "msg.eml", "-o", files / "enc.eml"],
        "decrypt": ["decrypt", *key, files / "enc.eml", "-o", files / "dec.eml"],
    }
    for name, args in runs.items():  # in order: each command reads the one before's output
        modules, _ = imported(files, "--data-dir", files / "data", *args)
        assert heavy(modules) == [], name
        assert "smimekit.api" in modules, name
        assert modules & NOT_NEEDED[name] == set(), name
    assert (files / "verified.eml").read_bytes().endswith(b"Hello, world.\r\n")
    assert (files / "dec.eml").read_bytes().endswith(b"Hello, world.\r\n")


def test_verify_through_the_trust_store_and_intermediates_cache_imports_no_store(
        tmp_path: Path, pki: PKI) -> None:
    # The data directory's trust store and intermediates cache are PEM files: verify reads
    # both without SQLAlchemy.
    carol = pki.person("carol")  # issued by the intermediate CA
    (tmp_path / "root.pem").write_bytes(pki.root.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "inter.pem").write_bytes(pki.inter.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "carol.pem").write_bytes(carol.pem_cert())
    (tmp_path / "carol.key").write_bytes(carol.pem_key())
    (tmp_path / "msg.eml").write_bytes(message("carol@example.org"))
    data = ["--data-dir", tmp_path / "data"]
    key = ["--key", tmp_path / "carol.key", "--cert", tmp_path / "carol.pem"]
    for args in (
        ["trust", "add", tmp_path / "root.pem"],
        ["sign", *key, "--chain", tmp_path / "inter.pem", tmp_path / "msg.eml",
         "-o", tmp_path / "with-chain.eml"],
        ["sign", *key, tmp_path / "msg.eml", "-o", tmp_path / "without.eml"],
        ["verify", tmp_path / "with-chain.eml", "-o", tmp_path / "out1.eml"],  # learns inter
    ):
        imported(tmp_path, *data, *args)
    assert list((tmp_path / "data" / "intermediates").glob("*.pem"))
    modules, err = imported(tmp_path, *data, "verify", tmp_path / "without.eml",
                            "-o", tmp_path / "out2.eml")
    assert err.startswith("smimekit: VALID"), err
    assert heavy(modules) == []


def test_each_lazy_command_help_matches_the_command() -> None:
    from smimekit.cli import messages

    assert isinstance(cli, LazyGroup)
    # a message command added to messages.COMMANDS must be in main's table too
    assert {c.name for c in messages.COMMANDS} <= {spec.name for spec in COMMANDS}
    for spec in COMMANDS:
        command = spec.load()
        assert command.name == spec.name
        stand_in = click.Command(spec.name, help=spec.help)
        for limit in (30, 45, 60, 80, 200):
            assert stand_in.get_short_help_str(limit) == command.get_short_help_str(limit), (
                f"update the help of {spec.name!r} in cli/main.py COMMANDS"
            )


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verfiy"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Usage: smimekit [OPTIONS] COMMAND")
    assert "No such command 'verfiy'" in err


def test_ca_group_still_has_its_lifecycle_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ca", "--help"]) == 0
    listing = capsys.readouterr().out.split("Commands:")[1]
    for name in ("enroll", "renew", "expiring", "issue", "revoke", "serve"):
        assert f"\n  {name} " in listing


def test_rich_is_imported_only_where_a_table_or_progress_bar_is_shown(files: Path) -> None:
    data = ["--data-dir", files / "data"]
    for args in (["trust", "add", files / "root.pem"], ["ca", "--help"]):
        modules, _ = imported(files, *data, *args)
        assert not any(m == "rich" or m.startswith("rich.") for m in modules), args
    modules, _ = imported(files, *data, "trust", "list")  # a table
    assert "rich.table" in modules
