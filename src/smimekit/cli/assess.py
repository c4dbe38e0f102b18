"""``smimekit assess``: the sovereignty and trust assessment of this deployment
(docs/assess.md): a terminal summary, ``--json`` and ``--html`` reports, exit 1 when a
critical finding failed (for CI and cron)."""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import TYPE_CHECKING

import click

from smimekit.cli.common import CliError, cli_config, existing_data_dir, open_store, write_output

if TYPE_CHECKING:
    from smimekit.audit.model import Assessment, Domain


def _at(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter("expected an ISO 8601 time, e.g. 2026-12-07T12:00:00Z",
                                 param_hint="--at") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _summary(assessment: Assessment) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from smimekit.audit.model import SEVERITIES

    console = Console(width=None if sys.stdout.isatty() else 120, highlight=False)
    # evidence can hold names from certificates: always Text, never markup
    console.print(Text(f"smimekit assess: {assessment.organisation}"
                       f" at {assessment.generated:%Y-%m-%d %H:%M} UTC", style="bold"))
    scores = Table("domain", "score", "points", "passed", box=None, header_style="bold")
    names = {"DPS": "Data Protection and Sovereignty", "IAT": "Identity, Access and Trust"}
    for domain, score in assessment.scores().items():
        mine = [f for f in assessment.findings if f.domain == domain]
        if not mine:
            continue
        scores.add_row(Text(f"{domain} {names[domain]}"), f"{score.percent:.0f}%",
                       f"{score.points}/{score.maximum}",
                       f"{sum(f.passed for f in mine)}/{len(mine)}")
    console.print(scores)
    failed = sorted((f for f in assessment.findings if not f.passed),
                    key=lambda f: SEVERITIES.index(f.severity))
    if not failed:
        console.print("every check passed")
    for finding in failed:
        console.print(Text.assemble((f"{finding.severity.upper():9}", "bold red"
                                     if finding.severity in ("critical", "high") else "bold"),
                                    f"{finding.id}: {finding.title}"))
        for line in finding.evidence:
            console.print(Text(f"          {line}"))
        console.print(Text(f"          remedy: {finding.remedy}", style="italic"))
    if assessment.drill is not None:
        d = assessment.drill
        console.print(Text(f"drill {d.started:%Y-%m-%d %H:%M}: "
                           f"{sum(s.ok for s in d.steps)}/{len(d.steps)} steps worked"
                           f" ({d.isolation})"))


def _render_html(assessment: Assessment) -> str:
    import importlib

    try:  # smimekit.audit.report (the HTML report) is built beside this command
        report = importlib.import_module("smimekit.audit.report")
    except ModuleNotFoundError:
        raise CliError("the HTML report is not part of this build: use --json") from None
    return str(report.render_html(assessment))


@click.command("assess")
@click.option("--html", "html_out", metavar="FILE", default=None,
              help="Write the self-contained HTML report here.")
@click.option("--json", "json_out", metavar="FILE", default=None,
              help="Write the JSON report here ('-': stdout, instead of the summary).")
@click.option("--archive", "archives", multiple=True, metavar="PATH",
              type=click.Path(exists=True),
              help="A mail archive (mbox, Maildir, .eml folder) to judge; repeatable.")
@click.option("--domain", "domains", multiple=True, metavar="D",
              help="An organisation's own domain (repeatable) [default: the store's"
                   " addresses' domains and the CA's host].")
@click.option("--only", "only", type=click.Choice(["DPS", "IAT"]), multiple=True,
              help="Only this domain's checks (DPS or IAT); repeatable.")
@click.option("--at", "at", metavar="ISO", default=None,
              help="Judge as of this time (ISO 8601; default now).")
def assess_cmd(html_out: str | None, json_out: str | None, archives: tuple[str, ...],
               domains: tuple[str, ...], only: tuple[Domain, ...], at: str | None) -> None:
    """Assess this deployment: sovereignty (DPS) and identity and trust (IAT) findings with
    evidence and remedies, a score per domain. Exit 1 when a critical finding failed."""
    from pathlib import Path

    from smimekit.audit.assess import assess

    when = _at(at)
    for domain in domains:
        value = domain.strip().rstrip(".")
        if not value or any(c in value for c in "/@ :") or "." not in value.strip("."):
            raise click.BadParameter(f"not a domain name: {domain!r}", param_hint="--domain")
    data_dir = existing_data_dir()
    config = cli_config()
    store = open_store()
    try:
        assessment = assess(data_dir, store, config, archives=[Path(a) for a in archives],
                            domains=domains, at=when, only=only or ("DPS", "IAT"))
    finally:
        store.close()
    if json_out is not None:
        write_output(json_out, json.dumps(assessment.to_dict(), indent=2).encode() + b"\n",
                     mode=0o644)
    if html_out is not None:
        write_output(html_out, _render_html(assessment).encode(), mode=0o644)
    if json_out != "-":
        _summary(assessment)
    if assessment.critical:
        failed = [f.id for f in assessment.findings if not f.passed and f.severity == "critical"]
        raise CliError(f"critical finding(s) failed: {', '.join(failed)}")
