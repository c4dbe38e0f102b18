"""Assessments built by hand for the HTML report's tests (until the scenario of
tests/audit/scenario.py feeds the real checks): one with every chart, failed findings of
each severity, a certificate subject that carries markup, and a drill."""

from __future__ import annotations

import datetime as dt

from smimekit.audit.model import Assessment, DrillReport, DrillStep, Finding

GENERATED = dt.datetime(2026, 12, 7, 2, 30, tzinfo=dt.UTC)
HOSTILE = '<script>document.title="owned"</script><img src=x onerror=alert(1)>'
"""A subject common name as an attacker would choose it."""


def finding(id: str, domain: str, passed: bool, severity: str, weight: int,
            points: int, evidence: tuple[str, ...] = (), remedy: str = "") -> Finding:
    return Finding(id=id, domain=domain, title=f"{id} holds", passed=passed,  # type: ignore[arg-type]
                   severity=severity, evidence=evidence or (f"looked at {id}",),  # type: ignore[arg-type]
                   remedy=remedy or ("" if passed else f"fix {id}"), weight=weight,
                   points=points)


def sample_assessment(*, drill: bool = True, charts: bool = True) -> Assessment:
    findings = (
        finding("DPS-CA-PRESENT", "DPS", True, "critical", 10, 10,
                ("internal CA 'Example Issuing CA' issued 180 of 200 certificates in use",)),
        finding("DPS-ESCROW-THRESHOLD", "DPS", False, "critical", 10, 0,
                ("escrow is 1-of-3: one officer alone can recover every key",),
                "Re-split the escrow key with `smimekit escrow rekey` so that M >= 2."),
        finding("DPS-OUTSIDE-CA", "DPS", False, "high", 5, 2,
                (f"20 certificates in use issued by 'CN={HOSTILE}, O=Outside CA'",),
                "Issue these people certificates from the internal CA."),
        finding("DPS-ARCHIVE-WEAK", "DPS", False, "medium", 5, 3,
                ("12 archived messages use RC2/40", "30 archived messages use 3DES"),
                "Re-encrypt the archive with `smimekit archive reencrypt`."),
        finding("DPS-PQ-READINESS", "DPS", True, "info", 0, 0,
                ("0% of keys and 0% of messages use ML-KEM or ML-DSA",)),
        finding("IAT-COVERAGE", "IAT", False, "high", 10, 8,
                ("184 of 200 mailboxes have a valid signing and encryption certificate",),
                "Enrol the 16 mailboxes listed."),
        finding("IAT-EXPIRING-30", "IAT", False, "low", 5, 4,
                ("7 certificates end within 30 days",), "Renew them: `smimekit ca renew`."),
        finding("IAT-AUDIT-LOG", "IAT", True, "critical", 10, 10,
                ("audit log intact: 1204 rows, anchored 2026-12-06",)),
    )
    chart_data: dict[str, object] = {}
    if charts:
        start = dt.date(2026, 12, 7)
        chart_data = {
            "expiry": [{"week": i, "start": (start + dt.timedelta(weeks=i)).isoformat(),
                        "count": [3, 4, 0, 6, 2, 9, 1, 0, 5, 12, 3, 2, 0][i]}
                       for i in range(13)],
            "coverage": [
                {"department": "Finance", "mailboxes": 40, "signing": 38, "encryption": 36},
                {"department": "Legal", "mailboxes": 25, "signing": 25, "encryption": 25},
                {"department": "Engineering", "mailboxes": 90, "signing": 84,
                 "encryption": 80},
                {"department": f"R&D {HOSTILE}", "mailboxes": 45, "signing": 30,
                 "encryption": 43},
            ],
            "archive": {"now": 812, "escrow": 140, "lost": 9,
                        "weak": {"3des": 30, "rc2": 12, "rsa-under-2048": 5}},
        }
    report = None
    if drill:
        report = DrillReport(
            started=GENERATED - dt.timedelta(hours=3),
            isolation="network namespace (loopback only)",
            steps=(DrillStep("sign", True, 0.21, "signed as drill@example.org"),
                   DrillStep("verify-hard-revocation", True, 0.05,
                             "verified against the cached CRL (next update in 6 days)"),
                   DrillStep("recover-leaver", False, 0.4,
                             "escrow recover needs 2 shares, 1 given")))
    return Assessment(generated=GENERATED, organisation="Example Org", findings=findings,
                      charts=chart_data, drill=report)
