"""``smimekit log verify|show``: the hash-chained audit log in the store."""

from __future__ import annotations

import click

from smimekit.cli.common import CliError, open_store
from smimekit.store.audit import canonical_json


@click.group()
def log() -> None:
    """Check and read the audit log."""


@log.command("verify")
def verify() -> None:
    """Check the audit log's hash chain: exit 0 when intact, 1 at the first broken row."""
    with open_store() as store:
        problems = store.verify_audit_log()
        count = store.audit_count()
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise CliError(f"audit log broken at {problems[0]}{more}")
    click.echo(f"audit log intact: {count} rows")


@log.command("show")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="Show only the last N rows.",
)
def show(limit: int | None) -> None:
    """Print the audit log, oldest first: id, time, actor, action, subject, details."""
    with open_store() as store:
        entries = store.audit_entries(limit)
    if not entries:
        click.echo("the audit log is empty")
        return
    for entry in entries:
        click.echo(
            f"{entry.id}\t{entry.at}\t{entry.actor}\t{entry.action}\t{entry.subject}"
            f"\t{canonical_json(entry.details)}"
        )
