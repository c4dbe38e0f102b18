"""What an assessment is made of: findings with evidence, scores that trace to them, charts.

Every point of a domain's score comes from one finding (``Finding.points`` of
``Finding.weight``); nothing else moves a score, so a reader can follow each one back.
The JSON form (:meth:`Assessment.to_dict`) is the documented schema of ``--json``
(docs/assess.md); ``schema`` names its version.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Domain = Literal["DPS", "IAT"]
"""DPS: Data Protection and Sovereignty. IAT: Identity, Access and Trust."""
Severity = Literal["critical", "high", "medium", "low", "info"]
SEVERITIES: tuple[Severity, ...] = ("critical", "high", "medium", "low", "info")
SCHEMA = "smimekit-assessment/1"


@dataclass(frozen=True)
class Finding:
    """One check's result."""

    id: str
    """Stable identifier, e.g. ``DPS-ESCROW-THRESHOLD`` (docs/assess.md lists them all)."""
    domain: Domain
    title: str
    """What was checked, as a statement that is true when the check passes."""
    passed: bool
    severity: Severity
    """How bad it is when it fails (``info`` for facts that score nothing)."""
    evidence: tuple[str, ...]
    """What was looked at and what was found: counts, names, dates; never a secret."""
    remedy: str
    """What to do about it (empty when passed)."""
    weight: int
    """Points this check is worth in its domain's score (0: a fact, not scored)."""
    points: int
    """Points earned (0..weight)."""
    data: Mapping[str, Any] = field(default_factory=dict)
    """Machine-readable figures behind the evidence (shares, counts, per-issuer dates)."""

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "domain": self.domain, "title": self.title,
                "passed": self.passed, "severity": self.severity,
                "evidence": list(self.evidence), "remedy": self.remedy,
                "weight": self.weight, "points": self.points, "data": dict(self.data)}


@dataclass(frozen=True)
class Score:
    domain: Domain
    points: int
    maximum: int
    """The sum of the weights of the domain's scored findings."""

    @property
    def percent(self) -> float:
        return 100.0 * self.points / self.maximum if self.maximum else 100.0


@dataclass(frozen=True)
class DrillStep:
    name: str
    """e.g. ``sign``, ``verify-hard-revocation``, ``recover-leaver``."""
    ok: bool
    seconds: float
    detail: str
    """What happened, or why it failed."""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "seconds": self.seconds,
                "detail": self.detail}


@dataclass(frozen=True)
class DrillReport:
    started: dt.datetime
    isolation: str
    """How the outside was cut: ``network namespace (loopback only)`` or what was done
    instead, said plainly."""
    steps: tuple[DrillStep, ...]

    @property
    def ok(self) -> bool:
        return all(step.ok for step in self.steps)

    def to_dict(self) -> dict[str, Any]:
        return {"started": self.started.isoformat(), "isolation": self.isolation,
                "ok": self.ok, "steps": [step.to_dict() for step in self.steps]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DrillReport:
        """The inverse of :meth:`to_dict`. Raises KeyError, TypeError or ValueError when
        ``data`` is not one (the caller names the file)."""
        started = dt.datetime.fromisoformat(str(data["started"]))
        if started.tzinfo is None:
            raise ValueError("started has no time zone")
        steps = data["steps"]
        if not isinstance(steps, list):
            raise TypeError("steps is not a list")
        return cls(started, str(data["isolation"]), tuple(
            DrillStep(str(s["name"]), bool(s["ok"]), float(s["seconds"]), str(s["detail"]))
            for s in steps))


@dataclass(frozen=True)
class Assessment:
    generated: dt.datetime
    organisation: str
    findings: tuple[Finding, ...]
    charts: Mapping[str, Any] = field(default_factory=dict)
    """Data for the report's charts: ``expiry`` (per week: count of certificates ending),
    ``coverage`` (per department: mailboxes, with signing, with encryption), ``archive``
    (readable now / only via escrow / lost / weak)."""
    drill: DrillReport | None = None

    def scores(self) -> dict[Domain, Score]:
        out: dict[Domain, Score] = {}
        for domain in ("DPS", "IAT"):
            scored = [f for f in self.findings if f.domain == domain and f.weight]
            out[domain] = Score(domain, sum(f.points for f in scored),
                                sum(f.weight for f in scored))
        return out

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` document (schema in docs/assess.md)."""
        scores = self.scores()
        return {
            "schema": SCHEMA,
            "generated": self.generated.isoformat(),
            "organisation": self.organisation,
            "critical": self.critical,
            "scores": {d: {"points": s.points, "maximum": s.maximum,
                           "percent": round(s.percent, 1),
                           "findings": [f.id for f in self.findings
                                        if f.domain == d and f.weight]}
                       for d, s in scores.items()},
            "findings": [f.to_dict() for f in self.findings],
            "charts": dict(self.charts),
            "drill": self.drill.to_dict() if self.drill else None,
        }

    @property
    def critical(self) -> bool:
        """A failed critical finding: ``smimekit assess`` exits non-zero."""
        return any(not f.passed and f.severity == "critical" for f in self.findings)
