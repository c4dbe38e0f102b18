"""``smimekit log verify|show|head|init-key|anchor``: the audit log in the store, its hash
chain and the MACs that anchor it under the CA's audit key (docs/store.md)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import click

from smimekit.cli.common import CliError, ca_data_dir, cli_actor, cli_globals, open_store
from smimekit.store.audit import canonical_json

if TYPE_CHECKING:
    from smimekit.store import Store
    from smimekit.store.audit import AuditEntry, AuditKey

_HASH = re.compile(r"[0-9a-f]{64}")
_ANCHOR_HINT = ("review them ('smimekit log show') and anchor what you recognise with"
                " 'smimekit log anchor --through ID'")


@click.group()
def log() -> None:
    """Check and read the audit log."""


def _head_hash(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip().lower()
    if not _HASH.fullmatch(value):
        raise click.BadParameter("expected the 64 hex digits 'smimekit log head' printed",
                                 param_hint="--expect-head")
    return value


def _audit_key() -> AuditKey:
    from smimekit.ca.home import CAHome

    home = CAHome(cli_globals().data_dir)
    if not home.exists():
        raise CliError(f"no CA in {cli_globals().data_dir}: the audit rows are checked against"
                       " the CA's audit key (<data-dir>/ca/audit.key); give the CA's"
                       " --data-dir")
    return home.audit_key()


def _rows(ids: list[int]) -> str:
    return f"row {ids[0]}" if len(ids) == 1 else f"{len(ids)} rows ({ids[0]} to {ids[-1]})"


@log.command("verify")
@click.option("--expect-head", "expect_head", metavar="HASH", default=None,
              help="A head hash you kept ('smimekit log head'): fail unless it is still in"
                   " the chain (rows cut off the end, or the log rewritten).")
def verify(expect_head: str | None) -> None:
    """Check the audit log: the hash chain, a ca.init row, and every row's MAC under the
    CA's audit key. Exit 0 when intact and anchored, 1 at the first problem."""
    expected = _head_hash(expect_head)
    with open_store() as store:
        entries = store.audit_entries()
        problems = store.verify_audit_log()
        if not entries:
            raise CliError(f"the audit log in {store.description} is empty: a CA's log starts"
                           " with its ca.init row (a fresh, emptied or replaced database)")
        if not any(e.action == "ca.init" for e in entries):
            # Reported before the MACs: a store that is not a CA's has no audit key to check.
            if problems:
                raise CliError(f"audit log broken at {problems[0]}")
            raise CliError("the audit log has no ca.init row: not the log of a CA made by"
                           " 'smimekit ca init' (rows removed, or another database)")
        key = store.audit_key or _audit_key()
        report = store.check_audit_anchors(key)
    problems = sorted(problems + report.problems, key=lambda p: p.row_id)
    first_unanchored = report.unanchored[0] if report.unanchored else None
    if problems and (first_unanchored is None or problems[0].row_id <= first_unanchored):
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise CliError(f"audit log broken at {problems[0]}{more}")
    if first_unanchored is not None:
        raise CliError(f"audit log not anchored at row {first_unanchored}:"
                       f" {_rows(report.unanchored)} without a MAC under the audit key"
                       f" (written without it, or rewritten); {_ANCHOR_HINT}")
    head = entries[-1]
    since = ""
    if expected is not None:
        kept = next((e for e in entries if e.hash == expected), None)
        if kept is None:
            raise CliError(f"the head you kept, {expected[:16]}..., is not in the audit log:"
                           " rows were cut off the end, or the log was rewritten")
        since = f"; the head you kept is row {kept.id}, {head.id - kept.id} rows since"
    click.echo(f"audit log intact: {len(entries)} rows, all anchored under audit key"
               f" {key.key_id}; head {head.id} {head.hash}{since}")


def _status(entry: AuditEntry, macs: dict[int, tuple[str, str]], key: AuditKey | None) -> str:
    found = macs.get(entry.id)
    if found is None:
        return "UNANCHORED"
    if key is None:
        return "mac-unchecked"
    if found[0] != key.key_id:
        return "OTHER-KEY"
    return "anchored" if key.check(entry.hash, found[1]) else "BAD-MAC"


@log.command("show")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="Show only the last N rows.",
)
def show(limit: int | None) -> None:
    """Print the audit log, oldest first: id, time, actor, action, subject, details, the row's
    hash and its MAC status (anchored, UNANCHORED, BAD-MAC, OTHER-KEY; mac-unchecked
    without the audit key)."""
    with open_store() as store:
        entries = store.audit_entries(limit)
        macs = store.audit_macs()
        key = store.audit_key
    if not entries:
        click.echo("the audit log is empty")
        return
    for entry in entries:
        click.echo(
            f"{entry.id}\t{entry.at}\t{entry.actor}\t{entry.action}\t{entry.subject}"
            f"\t{canonical_json(entry.details)}\t{entry.hash}\t{_status(entry, macs, key)}"
        )


@log.command("head")
def head() -> None:
    """Print the last row's id and hash: keep it elsewhere and check it later with
    'log verify --expect-head HASH'."""
    with open_store() as store:
        found = store.audit_head()
    if found is None:
        raise CliError("the audit log is empty: there is no head to keep")
    click.echo(f"{found[0]} {found[1]}")


@log.command("init-key")
def init_key() -> None:
    """Create the audit key of a CA made before audit keys (<data-dir>/ca/audit.key).

    Rows written before stay unanchored until 'log anchor --through ID'.
    """
    from smimekit.ca.home import CAHome

    home = CAHome(ca_data_dir())
    if home.has_audit_key():
        raise CliError(f"an audit key exists already at {home.audit_key_path}")
    with open_store() as store:
        macs = store.audit_macs()
        if macs:
            key_ids = sorted({key_id for key_id, _ in macs.values()})
            raise CliError(f"the audit rows are anchored under audit key {', '.join(key_ids)}:"
                           f" restore {home.audit_key_path} from your backup rather than"
                           " making a new key")
        before = store.audit_head()
        key = home.create_audit_key()
        try:
            store.use_audit_key(key)
            entry = _write(store, "audit.key-init", home.config().organization,
                           {"key_id": key.key_id})
        except BaseException:
            home.audit_key_path.unlink(missing_ok=True)
            raise
    click.echo(f"created the audit key {home.audit_key_path} (key id {key.key_id}); back it"
               " up with the CA keys")
    click.echo(f"  row {entry.id} records it and is anchored")
    if before is not None:
        click.echo(f"  rows 1..{before[0]} were written before it and are unanchored:"
                   f" {_ANCHOR_HINT}")


def _write(store: Store, action: str, subject: str, details: dict[str, object]) -> AuditEntry:
    return store.audit(cli_actor(), action, subject, details)


@log.command("anchor")
@click.option("--through", "through", type=click.IntRange(min=1), required=True,
              metavar="ID", help="The last row to anchor (rows after it stay unanchored).")
def anchor(through: int) -> None:
    """MAC the unanchored rows up to ID with the audit key, once you have reviewed them.

    Refused unless the whole chain is intact, every MAC there is right, some row is anchored
    already and the log has its ca.init row: rows are never anchored onto a history the key
    does not vouch for.
    """
    from smimekit.ca.home import CAHome

    home = CAHome(ca_data_dir())
    with open_store() as store:
        key = store.audit_key or home.audit_key()
        if not any(e.action == "ca.init" for e in store.audit_entries()):
            raise CliError("the audit log has no ca.init row: not the log of a CA made by"
                           " 'smimekit ca init'; refusing to anchor it")
        store.use_audit_key(key)
        with store.transaction():
            ids = store.anchor_audit_rows(key, through)
            if ids:
                _write(store, "audit.anchor", home.config().organization,
                       {"through": through, "rows": len(ids), "first": ids[0]})
    if not ids:
        click.echo(f"every row up to {through} was anchored already")
        return
    click.echo(f"anchored {_rows(ids)} under audit key {key.key_id}")
