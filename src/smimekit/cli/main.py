"""The ``smimekit`` command. The only place where exceptions become exit codes and messages.

Exit status: 0 success, 1 the operation failed (one line on stderr), 2 usage error.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from smimekit import __version__
from smimekit.cli.common import Globals, resolve_data_dir
from smimekit.cli.lazy import LazyCommand, LazyGroup
from smimekit.errors import SmimeError
from smimekit.keys.kinds import accept_input_everywhere

# Every command, imported only when it runs (start-up time: a message command must not load
# the CA, escrow and archive stacks). The help is each command's first docstring paragraph;
# tests/cli/test_startup_imports.py checks it still matches.
_M = "smimekit.cli.messages"
COMMANDS = [
    LazyCommand("sign", f"{_M}:sign",
                "Sign a message (multipart/signed, or opaque with --opaque)."),
    LazyCommand("verify", f"{_M}:verify",
                "Verify a signed message; write its content to OUT when every check passes."),
    LazyCommand("encrypt", f"{_M}:encrypt",
                "Encrypt a message to one or more recipients (each certificate is checked"
                " first)."),
    LazyCommand("decrypt", f"{_M}:decrypt",
                "Decrypt a message (signed layers inside are kept for verify)."),
    LazyCommand("sign-encrypt", f"{_M}:sign_encrypt",
                "Sign, then encrypt (the sender can read the sent copy unless --no-self)."),
    LazyCommand("decrypt-verify", f"{_M}:decrypt_verify",
                "Decrypt, then verify; the verdict covers every layer."),
    LazyCommand("lookup", "smimekit.cli.lookup:lookup",
                "The usable encryption certificates of addresses, validated and ranked."),
    LazyCommand("trust", "smimekit.cli.trust:trust",
                "Manage the trust anchors kept in the data directory."),
    LazyCommand("log", "smimekit.cli.log:log", "Check and read the audit log."),
    LazyCommand("ca", "smimekit.cli.ca:ca",
                "Our own certificate authority: issue, renew, revoke, publish.",
                extend=("smimekit.cli.ca_lifecycle:COMMANDS", "smimekit.cli.ca_serve:COMMANDS")),
    LazyCommand("escrow", "smimekit.cli.escrow:escrow",
                "Key escrow: the vault key as M-of-N shares of key recovery officers."),
    LazyCommand("archive", "smimekit.cli.archive:archive",
                "Scan, export and re-encrypt mail archives (mbox, Maildir, folders of .eml)."),
    LazyCommand("directory", "smimekit.cli.directory:directory",
                "Certificate distribution: LDAP, harvested mail, SMIMEA in DNS, client"
                " settings."),
    LazyCommand("gateway", "smimekit.cli.gateway:gateway",
                "The S/MIME gateway: Postfix's after-queue content filter (serve, keys,"
                " policy).",
                extend=("smimekit.cli.gateway_admin:COMMANDS",)),
    LazyCommand("assess", "smimekit.cli.assess:assess_cmd",
                "Assess this deployment: sovereignty (DPS) and identity and trust (IAT)"
                " findings with evidence and remedies, a score per domain. Exit 1 when a"
                " critical finding failed."),
    LazyCommand("drill", "smimekit.cli.drill:drill",
                "Run sign, verify, encrypt, decrypt, issue, revoke, OCSP and recovery"
                " offline."),
]


@click.group(
    cls=LazyGroup,
    lazy_commands=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, prog_name="smimekit")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    envvar="SMIMEKIT_DATA_DIR",
    help="Where smimekit keeps its database and key material [default: ./smimekit-data if it"
    " exists, else $XDG_DATA_HOME/smimekit or ~/.local/share/smimekit].",
)
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    envvar="SMIMEKIT_CONFIG",
    help="TOML configuration file.",
)
@click.option(
    "--database-url",
    envvar="SMIMEKIT_DATABASE_URL",
    help="Use this database (e.g. PostgreSQL) instead of SQLite in the data dir.",
)
@click.pass_context
def cli(ctx: click.Context, data_dir: str | None, config: str | None,
        database_url: str | None) -> None:
    """Sovereign S/MIME: sign, verify, encrypt and decrypt mail."""
    ctx.obj = Globals(resolve_data_dir(data_dir), Path(config) if config else None, database_url)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; never lets a traceback reach the user (set SMIMEKIT_DEBUG=1 to see one)."""
    # cryptography's warnings about input we accept on purpose (keys/kinds.py lists them)
    # are not the user's to act on; every other warning is left as it is.
    accept_input_everywhere()
    try:
        cli.main(args=argv, prog_name="smimekit", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("smimekit: aborted", err=True)
        return 1
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except SmimeError as exc:
        click.echo(f"smimekit: error: {exc}", err=True)
        return 1
    except KeyboardInterrupt:
        click.echo("smimekit: interrupted", err=True)
        return 130
    except BrokenPipeError:
        return 1
    except Exception as exc:  # a bug: say so plainly, without a traceback
        if os.environ.get("SMIMEKIT_DEBUG"):
            raise
        click.echo(
            f"smimekit: internal error ({type(exc).__name__}): {exc}; set"
            " SMIMEKIT_DEBUG=1 for details",
            err=True,
        )
        return 1
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
