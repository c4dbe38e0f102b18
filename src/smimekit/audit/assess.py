"""``assess()``: run every check over a deployment and gather the charts' data.

Nothing is written and no key is unlocked: the CA directory, escrow.json, the trust store
and the store are read, archives are scanned without keys (archive/classify.py), and the
latest drill report is read from ``<data-dir>/drill/latest.json``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from smimekit.audit.checks import run_checks
from smimekit.audit.facts import Facts
from smimekit.audit.model import Assessment, Domain, DrillReport, Finding
from smimekit.config import Config
from smimekit.errors import AssessError, SmimeError
from smimekit.store import Store

DRILL_REPORT = Path("drill") / "latest.json"
"""Where ``smimekit drill`` leaves its report, under the data directory."""
EXPIRY_WEEKS = 13


def load_drill(data_dir: Path | str) -> DrillReport | None:
    """The latest drill report, or None when no drill has run.

    Raises:
        AssessError: the file exists but cannot be read or is not a drill report.
    """
    path = Path(data_dir) / DRILL_REPORT
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AssessError(f"cannot read the drill report {path}: {exc.strerror or exc}"
                          ) from None
    from smimekit.audit.drill import report_from_dict  # the one reader (schema checked)

    try:
        return report_from_dict(json.loads(raw))
    except (ValueError, SmimeError) as exc:
        raise AssessError(f"the drill report {path} is damaged: {exc}") from None


def default_domains(data_dir: Path | str, store: Store, config: Config | None = None
                    ) -> tuple[str, ...]:
    """The organisation's domains when ``--domain`` is not given: those of the store's
    users' addresses, the host of the CA's base URL and the gateway's internal domains."""
    from sqlalchemy import select

    from smimekit.ca.home import CAHome
    from smimekit.store import schema

    found: set[str] = set()
    with store.read() as conn:
        for (email,) in conn.execute(select(schema.users.c.email)):
            found.add(email.rpartition("@")[2].lower())
    home = CAHome(data_dir)
    if home.exists():
        host = urlsplit(home.config().base_url).hostname
        if host:
            found.add(host.lower())
    if config is not None and config.gateway is not None:
        found.update(d.lower().lstrip("*.") for d in config.gateway.internal_domains)
    return tuple(sorted(d for d in found if d))


def _checked_domain(domain: str) -> str:
    value = domain.strip().lower().rstrip(".")
    if not value or "/" in value or "@" in value or " " in value:
        raise AssessError(f"not a domain name: {domain!r}")
    return value


def _expiry_chart(facts: Facts) -> list[dict[str, Any]]:
    weeks: Counter[int] = Counter()
    for record in facts.live_issued:
        end = record.not_after if record.not_after.tzinfo else record.not_after.replace(
            tzinfo=dt.UTC)
        week = int((end - facts.at).total_seconds() // (7 * 86400))
        if 0 <= week < EXPIRY_WEEKS:
            weeks[week] += 1
    return [{"week": w, "start": (facts.at + dt.timedelta(weeks=w)).date().isoformat(),
             "count": weeks[w]} for w in range(EXPIRY_WEEKS)]


def _charts(facts: Facts, findings: Sequence[Finding]) -> dict[str, Any]:
    by_id = {f.id: f for f in findings}
    charts: dict[str, Any] = {"expiry": _expiry_chart(facts)}
    cov = by_id.get("IAT-COVERAGE")
    if cov is not None:
        charts["coverage"] = [
            {"department": dept, "mailboxes": row["mailboxes"], "signing": row["sign"],
             "encryption": row["encrypt"]}
            for dept, row in sorted(cov.data["departments"].items())]
    readable, weak = by_id.get("DPS-ARCHIVE-READABLE"), by_id.get("DPS-ARCHIVE-WEAK")
    if readable is not None and readable.weight:
        charts["archive"] = {"now": readable.data["now"], "escrow": readable.data["escrow"],
                             "lost": readable.data["lost"],
                             "weak": dict(weak.data) if weak is not None else {}}
    return charts


def assess(data_dir: Path | str, store: Store, config: Config, *,
           archives: Sequence[Path | str] = (), domains: Sequence[str] = (),
           at: dt.datetime | None = None,
           only: Sequence[Domain] = ("DPS", "IAT")) -> Assessment:
    """Assess the deployment in ``data_dir`` (its CA, escrow, trust store), ``store`` and
    ``config``; ``archives`` are scanned for readability; ``domains`` are the organisation's
    own (default: :func:`default_domains`); ``at`` is the time judged (default now).

    Raises:
        AssessError: a domain is not a domain name, or the drill report is damaged.
        StoreError, CAError, EscrowError, ArchiveError: what they read cannot be read.
    """
    data_dir = Path(data_dir)
    when = (at or dt.datetime.now(dt.UTC))
    if when.tzinfo is None:
        raise AssessError("the time to assess at needs a time zone")
    own = tuple(_checked_domain(d) for d in domains) or default_domains(data_dir, store, config)
    facts = Facts(data_dir=data_dir, store=store, config=config, at=when, domains=own,
                  archives=tuple(Path(a) for a in archives), drill=load_drill(data_dir))
    findings = run_checks(facts, only)
    organisation = (facts.home.config().organization if facts.home is not None
                    else data_dir.name)
    return Assessment(generated=when, organisation=organisation, findings=tuple(findings),
                      charts=_charts(facts, findings), drill=facts.drill)
