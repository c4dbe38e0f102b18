"""The ``smimekit`` command. The only place where exceptions become exit codes and messages.

Exit status: 0 success, 1 the operation failed (one line on stderr), 2 usage error.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from smimekit import __version__
from smimekit.cli.archive import archive
from smimekit.cli.ca import ca
from smimekit.cli.ca_lifecycle import COMMANDS as CA_LIFECYCLE
from smimekit.cli.common import Globals, resolve_data_dir
from smimekit.cli.escrow import escrow
from smimekit.cli.log import log
from smimekit.cli.messages import COMMANDS
from smimekit.cli.trust import trust
from smimekit.errors import SmimeError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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


for _command in CA_LIFECYCLE:
    ca.add_command(_command)
for _command in [*COMMANDS, trust, log, ca, escrow, archive]:
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; never lets a traceback reach the user (set SMIMEKIT_DEBUG=1 to see one)."""
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
