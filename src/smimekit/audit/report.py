"""The self-contained HTML report of an assessment (``smimekit assess --html``).

One file, nothing fetched: CSS inline, charts as inline SVG whose geometry is computed here
and whose markup is in the template (``templates/report.html.j2``), so every piece of text,
including names taken from certificates that anyone can choose, passes through jinja2's
autoescaping. A Content-Security-Policy without ``script-src`` stops any script the page
might carry all the same. The page prints on A4 (print CSS: no dark backgrounds, tables
that do not split a row, charts that stay whole).

Chart data (``Assessment.charts``, as :func:`smimekit.audit.assess.assess` gathers it), each
optional; a missing chart is shown as "no data":

- ``expiry``: a list of ``{"week": n, "start": "YYYY-MM-DD", "count": n}`` (certificates
  ending in the n-th week from the assessment, which starts that day), or a mapping
  start date -> count;
- ``coverage``: a list of ``{"department": name, "mailboxes": n, "signing": n,
  "encryption": n}``, or a mapping department -> ``{"mailboxes", "signing", "encryption"}``;
- ``archive``: a mapping with ``now`` (readable now), ``escrow`` (only via escrow), ``lost``
  (message counts) and ``weak``: a mapping weakness (``rc2``, ``3des``,
  ``cbc-no-integrity``, ``rsa-under-2048``) -> count of messages (one message can have
  several).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jinja2

from smimekit.audit.model import SCHEMA, SEVERITIES, Assessment, Domain, Finding
from smimekit.errors import MalformedError

__all__ = ["render_html"]

DOMAIN_NAMES: dict[Domain, str] = {
    "DPS": "Data Protection and Sovereignty",
    "IAT": "Identity, Access and Trust",
}

# Chart geometry, in SVG user units (the SVGs scale to the page width).
_WIDTH = 640
_LEFT = 170  # room for category labels
_BAR = 16
_GAP = 8


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    css: str
    """The class that colours it (``sig``, ``enc``, ``ok``, ``escrow``, ``lost``, ``weak``)."""
    title: str
    """Shown on hover and read by screen readers."""


@dataclass(frozen=True)
class Label:
    x: float
    y: float
    text: str
    anchor: str = "start"


@dataclass(frozen=True)
class Chart:
    id: str
    title: str
    description: str
    """The chart's content in words (the SVG's ``<desc>``): what a screen reader says."""
    height: int
    bars: tuple[Bar, ...]
    labels: tuple[Label, ...]
    axis: tuple[tuple[float, float, float, float], ...]
    """Lines (x1, y1, x2, y2)."""
    legend: tuple[tuple[str, str], ...]
    """(css class, text) pairs."""
    table: tuple[tuple[str, ...], ...]
    """The same data as rows of text, header first (a click away under the chart on
    screen, printed under it on paper)."""

    @property
    def empty(self) -> bool:
        return len(self.table) <= 1


def _count(chart: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MalformedError(f"assessment chart {chart!r}: counts must be whole numbers >= 0,"
                             f" not {value!r}")
    return value


def _rows(chart: str, data: Any, key: str) -> list[dict[str, Any]]:
    """A list of dicts, from either a list of dicts or a mapping name -> dict/count."""
    if isinstance(data, Mapping):
        return [({key: name, **value} if isinstance(value, Mapping)
                 else {key: name, "count": value}) for name, value in data.items()]
    if isinstance(data, Sequence) and not isinstance(data, str | bytes):
        if not all(isinstance(row, Mapping) for row in data):
            raise MalformedError(f"assessment chart {chart!r}: rows must be mappings")
        return [dict(row) for row in data]
    raise MalformedError(f"assessment chart {chart!r}: a list or a mapping, not "
                         f"{type(data).__name__}")


def _field(chart: str, row: Mapping[str, Any], name: str) -> Any:
    if name not in row:
        raise MalformedError(f"assessment chart {chart!r}: a row without {name!r}")
    return row[name]


def _short(name: str, limit: int = 16) -> str:
    """A label that fits left of the bars; the full name is in the bar's title and the
    table under the chart."""
    return name if len(name) <= limit else name[:limit - 1] + "\u2026"


def _scale(maximum: int) -> float:
    return (_WIDTH - _LEFT - 60) / maximum if maximum else 0.0


def expiry_chart(data: Any) -> Chart:
    """Certificates ending per week: vertical bars along a time axis."""
    rows = sorted((str(r["start"] if "start" in r else _field("expiry", r, "week")),
                    _count("expiry", _field("expiry", r, "count")))
                   for r in _rows("expiry", data or [], "week"))
    for week, _n in rows:
        try:
            dt.date.fromisoformat(week)
        except ValueError:
            raise MalformedError(f"assessment chart 'expiry': {week!r} is not a date "
                                 f"(YYYY-MM-DD)") from None
    top, plot_h, left = 30, 160, 40
    height = top + plot_h + 50
    peak = max((n for _w, n in rows), default=0)
    step = (_WIDTH - left - 10) / max(len(rows), 1)
    bars, labels = [], []
    for i, (week, n) in enumerate(rows):
        h = plot_h * n / peak if peak else 0.0
        x = left + i * step + step * 0.15
        bars.append(Bar(x, top + plot_h - h, step * 0.7, h, "exp",
                        f"week of {week}: {n} certificate(s) ending"))
        if n:
            labels.append(Label(x + step * 0.35, top + plot_h - h - 4, str(n), "middle"))
        # Label every week when few, else about eight of them.
        if len(rows) <= 8 or i % -(-len(rows) // 8) == 0:
            labels.append(Label(x + step * 0.35, top + plot_h + 16, week[5:], "middle"))
    labels.append(Label(left - 6, top + 4, str(peak), "end"))
    labels.append(Label(left - 6, top + plot_h, "0", "end"))
    total = sum(n for _w, n in rows)
    first = f" from the week of {rows[0][0]} to the week of {rows[-1][0]}" if rows else ""
    return Chart(
        "chart-expiry", "Certificate expiry timeline",
        f"Bar chart: {total} certificate(s) ending{first}, counted per week; the highest "
        f"week has {peak}.", height, tuple(bars), tuple(labels),
        ((left, top + plot_h, _WIDTH - 10, top + plot_h), (left, top, left, top + plot_h)),
        (("exp", "certificates ending that week"),),
        (("Week starting", "Certificates ending"), *((w, str(n)) for w, n in rows)))


def coverage_chart(data: Any) -> Chart:
    """Per department: the share of mailboxes with a signing and with an encryption
    certificate, two horizontal bars each."""
    rows = []
    for r in _rows("coverage", data or [], "department"):
        mailboxes = _count("coverage", _field("coverage", r, "mailboxes"))
        signing = _count("coverage", _field("coverage", r, "signing"))
        encryption = _count("coverage", _field("coverage", r, "encryption"))
        if signing > mailboxes or encryption > mailboxes:
            raise MalformedError("assessment chart 'coverage': more certificates than "
                                 f"mailboxes in {r['department']!r}")
        rows.append((str(r["department"]), mailboxes, signing, encryption))
    rows.sort()
    top = 10
    group = 2 * _BAR + _GAP + 4
    height = top + len(rows) * group + 40
    full = _WIDTH - _LEFT - 60
    bars, labels = [], []
    for i, (dept, boxes, sig, enc) in enumerate(rows):
        y = top + i * group
        labels.append(Label(_LEFT - 8, y + _BAR + 4, f"{_short(dept)} ({boxes})", "end"))
        for j, (n, css, what) in enumerate(((sig, "sig", "signing"),
                                            (enc, "enc", "encryption"))):
            share = n / boxes if boxes else 0.0
            by = y + j * (_BAR + 2)
            bars.append(Bar(_LEFT, by, full * share, _BAR, css,
                            f"{dept}: {n} of {boxes} mailboxes with a valid {what} "
                            f"certificate ({share:.0%})"))
            labels.append(Label(_LEFT + full * share + 4, by + _BAR - 4, f"{share:.0%}"))
    bottom = top + len(rows) * group
    labels += [Label(_LEFT, bottom + 16, "0%", "middle"),
               Label(_LEFT + full / 2, bottom + 16, "50%", "middle"),
               Label(_LEFT + full, bottom + 16, "100%", "middle")]
    boxes_total = sum(r[1] for r in rows)
    sig_total = sum(r[2] for r in rows)
    enc_total = sum(r[3] for r in rows)
    return Chart(
        "chart-coverage", "Certificate coverage by department",
        f"Bar chart over {len(rows)} department(s), {boxes_total} mailboxes: {sig_total} "
        f"with a valid signing certificate, {enc_total} with a valid encryption "
        "certificate; per department the share of each.", height, tuple(bars), tuple(labels),
        ((_LEFT, top - 4, _LEFT, bottom), (_LEFT + full, top - 4, _LEFT + full, bottom)),
        (("sig", "valid signing certificate"), ("enc", "valid encryption certificate")),
        (("Department", "Mailboxes", "Signing", "Encryption"),
         *((d, str(b), str(s), str(e)) for d, b, s, e in rows)))


_READABILITY = (("now", "ok", "readable now"), ("escrow", "escrow", "only via escrow"),
                ("lost", "lost", "lost"))
_WEAKNESS = {"rc2": "RC2", "3des": "3DES", "cbc-no-integrity": "CBC, no integrity",
             "rsa-under-2048": "RSA < 2048"}


def archive_chart(data: Any) -> Chart:
    """Archived messages by readability, then how many use each weak algorithm."""
    if data and not isinstance(data, Mapping):
        raise MalformedError("assessment chart 'archive': a mapping of counts, not "
                             f"{type(data).__name__}")
    data = data or {}
    counts = [(css, text, _count("archive", data[key]))
              for key, css, text in _READABILITY if key in data]
    weak = data.get("weak") or {}
    if not isinstance(weak, Mapping):
        raise MalformedError("assessment chart 'archive': 'weak' maps a weakness to a count,"
                             f" not {type(weak).__name__}")
    counts += [("weak", f"weak: {_WEAKNESS.get(str(key), str(key))}",
                _count("archive", n)) for key, n in sorted(weak.items(), key=_weak_order)]
    peak = max((n for _c, _t, n in counts), default=0)
    scale = _scale(peak)
    top = 10
    bars, labels = [], []
    for i, (css, text, n) in enumerate(counts):
        y = top + i * (_BAR + _GAP)
        bars.append(Bar(_LEFT, y, n * scale, _BAR, css, f"{text}: {n} message(s)"))
        labels.append(Label(_LEFT - 8, y + _BAR - 4, _short(text, 24), "end"))
        labels.append(Label(_LEFT + n * scale + 4, y + _BAR - 4, str(n)))
    bottom = top + len(counts) * (_BAR + _GAP)
    said = ", ".join(f"{n} {text}" for _c, text, n in counts)
    return Chart(
        "chart-archive", "Archive readability",
        f"Bar chart of encrypted archived messages: {said or 'none counted'}. A message "
        "with a weak algorithm is also counted as readable now, via escrow or lost.",
        bottom + 20, tuple(bars), tuple(labels), ((_LEFT, top - 4, _LEFT, bottom),),
        (("ok", "readable now"), ("escrow", "only via escrow"), ("lost", "lost"),
         ("weak", "weak algorithm")),
        (("Archived messages", "Count"), *((t, str(n)) for _c, t, n in counts)))


def _weak_order(item: tuple[Any, Any]) -> tuple[int, str]:
    keys = list(_WEAKNESS)
    return (keys.index(item[0]) if item[0] in keys else len(keys), str(item[0]))


def _environment() -> jinja2.Environment:
    # autoescape=True for every template, whatever its name: evidence is untrusted text.
    return jinja2.Environment(loader=jinja2.PackageLoader("smimekit.audit", "templates"),
                              autoescape=True, undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True)


def render_html(assessment: Assessment) -> str:
    """The assessment as one self-contained HTML page (UTF-8 text).

    Raises :class:`~smimekit.errors.MalformedError` when ``assessment.charts`` holds data of
    the wrong shape (the module docstring gives the shapes).
    """
    scores = assessment.scores()
    domains = []
    for domain, name in DOMAIN_NAMES.items():
        findings = sorted((f for f in assessment.findings if f.domain == domain),
                          key=_order)
        domains.append({"id": domain, "name": name, "score": scores[domain],
                        "findings": findings})
    failed = [f for f in assessment.findings if not f.passed and f.severity != "info"]
    failed.sort(key=_order)
    counts = {s: sum(1 for f in failed if f.severity == s) for s in SEVERITIES}
    charts = (expiry_chart(assessment.charts.get("expiry")),
              coverage_chart(assessment.charts.get("coverage")),
              archive_chart(assessment.charts.get("archive")))
    return _environment().get_template("report.html.j2").render(
        a=assessment, domains=domains, failed=failed, counts=counts, charts=charts,
        width=_WIDTH, severities=SEVERITIES, schema=SCHEMA)


def _order(finding: Finding) -> tuple[int, int, str]:
    """Failed before passed, then by severity, then by id."""
    return (finding.passed, SEVERITIES.index(finding.severity), finding.id)
