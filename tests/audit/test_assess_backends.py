"""assess() reads the store the same way on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

from backends import Backend

from audit.scenario import DEPARTMENTS, P256, email, new_ca
from smimekit.audit.assess import assess
from smimekit.config import Config


def test_assess_on_both_databases(backend: Backend) -> None:
    at = dt.datetime.now(dt.UTC).replace(microsecond=0)
    _home, store, cax = new_ca(backend.data_dir, "Both Ltd", backend.url)
    try:
        for i in range(4):
            cax.issue_generated(email(i), purpose="both" if i == 3 else "dual",
                                department=DEPARTMENTS[i % 2], sign_key=P256,
                                encrypt_key=P256, lint=False, now=at - dt.timedelta(days=1))
            store.record_identity(f"hr-{i}", email(i), None, at - dt.timedelta(days=1))
        store.upsert_user(email(9), None, DEPARTMENTS[0])  # no certificate
        cax.revoke(email=email(2), reason="key-compromise", now=at - dt.timedelta(hours=1))
        a = assess(backend.data_dir, store, Config(), at=at)
    finally:
        store.close()
    by_id = {f.id: f for f in a.findings}
    assert by_id["IAT-DUAL-KEY"].data["both"] == [email(3)]
    assert by_id["IAT-REVOCATION-PUBLISHED"].passed
    assert by_id["IAT-AUDIT-LOG"].passed
    assert by_id["IAT-IDENTITY-CHECKS"].passed
    assert by_id["IAT-COVERAGE"].data["departments"] == {
        DEPARTMENTS[0]: {"mailboxes": 3, "sign": 1, "encrypt": 1, "both": 1},
        DEPARTMENTS[1]: {"mailboxes": 2, "sign": 2, "encrypt": 2, "both": 2}}
    assert by_id["DPS-KEY-HISTORY"].data["missing"] == [email(3)]
    assert not by_id["DPS-ESCROW-THRESHOLD"].passed and a.critical
    issuing = next(v for k, v in by_id["DPS-DARK-CA-RUNWAY"].data["issuers"].items()
                   if "Issuing" in k)
    assert 6.9 < issuing["days"] <= 7.0  # the CRL published with the revocation
