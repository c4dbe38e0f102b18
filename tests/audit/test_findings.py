"""Every finding of `smimekit assess` where it should be, and absent where it should not: the
broken, healthy and outsourced scenario organisations (scenario.py)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from audit.scenario import DOMAIN, Org, email
from smimekit.audit.assess import assess, default_domains, load_drill
from smimekit.audit.checks import CHECKS, ca_key_token
from smimekit.audit.model import SCHEMA, SEVERITIES, Assessment, Finding
from smimekit.ca.home import CAConfig, Pkcs11Ref
from smimekit.config import (
    Config,
    DirectoryConfig,
    GatewayConfig,
    LdapConfig,
    SyncConfig,
    SyncLdapConfig,
)
from smimekit.errors import AssessError

# id -> passed in (broken, healthy); None: not scored there (its subject is absent)
EXPECTED: dict[str, tuple[bool | None, bool | None]] = {
    "DPS-INTERNAL-CA": (True, True),
    "DPS-OUTSIDE-CA": (False, True),
    "DPS-REVOCATION-URLS": (False, True),
    "DPS-OUTSIDE-SERVICES": (None, None),  # no configuration: see its own test
    "DPS-DARK-CA-RUNWAY": (False, True),
    "DPS-ROOT-OFFLINE": (False, True),
    "DPS-CA-KEY-TOKEN": (False, False),  # both keep the key in software; see the unit test
    "DPS-ESCROW-THRESHOLD": (False, True),
    "DPS-ESCROW-DRILLED": (None, True),
    "DPS-KEY-HISTORY": (False, True),
    "DPS-ARCHIVE-READABLE": (False, True),
    "DPS-ARCHIVE-WEAK": (False, True),
    "DPS-PQ-READINESS": (False, True),
    "DPS-DRILL": (False, True),
    "IAT-COVERAGE": (False, True),
    "IAT-EXPIRING": (False, True),
    "IAT-IDENTITY-CHECKS": (False, True),
    "IAT-DUAL-KEY": (False, True),
    "IAT-SIGNATURE-POLICY": (False, True),
    "IAT-AUDIT-LOG": (False, True),
    "IAT-REVOCATION-PUBLISHED": (False, True),
}


@pytest.fixture(scope="module")
def broken_a(broken: Org) -> Assessment:
    return broken.assess()


@pytest.fixture(scope="module")
def healthy_a(healthy: Org) -> Assessment:
    return healthy.assess()


def _f(a: Assessment, id_: str) -> Finding:
    (found,) = [f for f in a.findings if f.id == id_]
    return found


def test_every_check_is_in_the_table() -> None:
    assert [c.id for c in CHECKS] == list(EXPECTED)


@pytest.mark.parametrize("id_", list(EXPECTED))
def test_finding_in_broken_and_healthy(id_: str, broken_a: Assessment,
                                       healthy_a: Assessment) -> None:
    for a, expected in zip((broken_a, healthy_a), EXPECTED[id_], strict=True):
        f = _f(a, id_)
        assert f.evidence and all(isinstance(line, str) and line for line in f.evidence)
        if expected is None:
            assert f.weight == 0 and f.points == 0
            continue
        assert f.passed is expected, (a.organisation, f.evidence)
        assert f.points == (f.weight if expected else 0)
        assert bool(f.remedy) is (not expected)


def test_outside_ca_names_the_mailboxes_and_the_anchor(broken: Org,
                                                       broken_a: Assessment) -> None:
    f = _f(broken_a, "DPS-OUTSIDE-CA")
    assert f.data["mailboxes"] == broken.facts["outside"]
    assert f.data["certificates"] == {"CN=Test Issuing CA,O=smimekit tests": 10}
    assert f.data["anchors"] == ["CN=Test Root,O=smimekit tests"]


def test_revocation_urls_outside_are_the_outside_cas(broken_a: Assessment) -> None:
    f = _f(broken_a, "DPS-REVOCATION-URLS")
    assert f.data["outside"] == ["http://crl.outside-ca.example/issuing.crl",
                                 "http://ocsp.outside-ca.example/"]
    assert all("pki.example.com" in u for u in f.data["urls"] if u not in f.data["outside"])


def test_dark_ca_runway_per_issuer(broken_a: Assessment, healthy_a: Assessment) -> None:
    b = _f(broken_a, "DPS-DARK-CA-RUNWAY").data["issuers"]
    issuing = next(v for k, v in b.items() if "Issuing" in k)
    root = next(v for k, v in b.items() if "Root" in k)
    assert 0.9 <= issuing["days"] <= 1.1  # published six days ago, seven days' validity
    assert root["days"] > 300
    outside = b["CN=Test Issuing CA,O=smimekit tests"]  # the cached OCSP answer
    assert outside["crl_next_update"] is None and 4.9 <= outside["days"] <= 5.1
    h = _f(healthy_a, "DPS-DARK-CA-RUNWAY")
    partner = h.data["issuers"]["CN=Test Issuing CA,O=smimekit tests"]
    assert partner["days"] < 0.1 and partner["ocsp_next_update"] is None
    assert any("(outside CA, cached)" in line for line in h.evidence)
    assert h.passed and h.data["short"] == []  # only our CA's runway decides
    assert all(v["days"] >= 6.9 for k, v in h.data["issuers"].items()
               if k.startswith("CN=Healthy Ltd"))


def test_key_history_gaps_are_the_csr_key_and_the_shared_keys(broken: Org,
                                                              broken_a: Assessment) -> None:
    missing = set(_f(broken_a, "DPS-KEY-HISTORY").data["missing"])
    assert missing == {broken.facts["csr_person"], *broken.facts["both"]}  # type: ignore[misc]


def test_archive_readability_and_weak_algorithms(broken_a: Assessment,
                                                 healthy_a: Assessment) -> None:
    r = _f(broken_a, "DPS-ARCHIVE-READABLE").data
    assert (r["now"], r["escrow"], r["lost"]) == (5, 1, 1)
    assert dict(_f(broken_a, "DPS-ARCHIVE-WEAK").data) == {
        "rc2": 1, "3des": 1, "cbc-no-integrity": 3}
    assert broken_a.charts["archive"] == {"now": 5, "escrow": 1, "lost": 1,
                                          "weak": {"rc2": 1, "3des": 1,
                                                   "cbc-no-integrity": 3}}
    h = _f(healthy_a, "DPS-ARCHIVE-READABLE").data
    assert (h["now"], h["escrow"], h["lost"]) == (3, 0, 0)


def test_no_archive_is_a_fact_not_a_score(broken: Org) -> None:
    store = broken.store()
    try:
        a = assess(broken.data_dir, store, Config(), at=broken.at)
    finally:
        store.close()
    for id_ in ("DPS-ARCHIVE-READABLE", "DPS-ARCHIVE-WEAK"):
        f = _f(a, id_)
        assert f.weight == 0 and f.evidence == ("no archive given (--archive)",)
    assert "archive" not in a.charts


def test_pq_readiness_counts_keys_and_messages(healthy_a: Assessment) -> None:
    d = _f(healthy_a, "DPS-PQ-READINESS").data
    assert (d["keys"], d["of_keys"]) == (4, 40)  # two people, ML-DSA + ML-KEM each
    assert (d["messages"], d["of_messages"]) == (1, 3)


def test_escrow_drilled_names_who_has_not(healthy_a: Assessment) -> None:
    f = _f(healthy_a, "DPS-ESCROW-DRILLED")
    assert f.data == {"drilled": ["Olga Officer", "Pete Officer"],
                      "missing": ["Quinn Officer"]}


def test_coverage_by_department(broken_a: Assessment) -> None:
    f = _f(broken_a, "IAT-COVERAGE")
    assert f.data["share"] == pytest.approx(179 / 200)
    depts = f.data["departments"]
    assert sum(d["mailboxes"] for d in depts.values()) == 200
    assert depts["Finance"]["both"] == 35  # the leaver (p001) is in Finance
    assert broken_a.charts["coverage"][1] == {"department": "Finance", "mailboxes": 40,
                                              "signing": 35, "encryption": 35}


def test_expiring_windows(broken: Org, broken_a: Assessment) -> None:
    f = _f(broken_a, "IAT-EXPIRING")
    assert f.data == {"30": 8, "60": 8, "90": 8}  # four people, two certificates each
    assert all(m in " ".join(f.evidence) for m in broken.facts["expiring"])  # type: ignore[attr-defined]
    weeks = broken_a.charts["expiry"]
    assert len(weeks) == 13 and sum(w["count"] for w in weeks) == 8


def test_identity_dual_key_signature_policy(broken: Org, broken_a: Assessment) -> None:
    unchecked = _f(broken_a, "IAT-IDENTITY-CHECKS").data["unchecked"]
    assert email(100) in unchecked and email(99) not in unchecked
    assert _f(broken_a, "IAT-DUAL-KEY").data["both"] == broken.facts["both"]
    assert _f(broken_a, "IAT-SIGNATURE-POLICY").data["lenient_defaults"] == []
    assert _f(broken_a, "IAT-SIGNATURE-POLICY").data["weak"] == [
        f"p179@{DOMAIN} (RSA 1024)"]


def test_audit_log_unanchored_rows_and_late_revocations(broken_a: Assessment) -> None:
    audit = _f(broken_a, "IAT-AUDIT-LOG")
    assert audit.data == {"problems": 0, "unanchored": 2}
    assert len(_f(broken_a, "IAT-REVOCATION-PUBLISHED").data["late"]) == 2  # the leaver's


def test_outsourced_has_no_internal_ca(outsourced: Org) -> None:
    a = outsourced.assess()
    assert not _f(a, "DPS-INTERNAL-CA").passed
    assert _f(a, "DPS-INTERNAL-CA").evidence[0].startswith("no CA in ")
    assert not _f(a, "DPS-OUTSIDE-CA").passed
    assert not _f(a, "DPS-ESCROW-THRESHOLD").passed
    for id_ in ("DPS-ROOT-OFFLINE", "DPS-CA-KEY-TOKEN", "DPS-ESCROW-DRILLED"):
        assert _f(a, id_).weight == 0
    assert a.critical


def test_ca_key_in_a_token_passes() -> None:
    config = CAConfig(organization="T", base_url="http://pki.example.com",
                      pkcs11=Pkcs11Ref("/usr/lib/softhsm/libsofthsm2.so", "ca-token", "k"))
    facts = SimpleNamespace(home=SimpleNamespace(config=lambda: config))
    passed, evidence, _remedy, data = ca_key_token(facts)  # type: ignore[arg-type]
    assert passed and data == {"token": "ca-token"}
    assert "ca-token" in evidence[0]


def test_scores_trace_to_findings(broken_a: Assessment, healthy_a: Assessment) -> None:
    for a in (broken_a, healthy_a):
        for domain, score in a.scores().items():
            mine = [f for f in a.findings if f.domain == domain and f.weight]
            assert score.points == sum(f.points for f in mine)
            assert score.maximum == sum(f.weight for f in mine)
    assert healthy_a.scores()["IAT"].percent == 100.0
    assert healthy_a.scores()["DPS"].points == healthy_a.scores()["DPS"].maximum - 4
    assert broken_a.scores()["IAT"].points == 0


def test_critical_decides(broken_a: Assessment, healthy_a: Assessment) -> None:
    assert broken_a.critical and not healthy_a.critical
    assert {f.id for f in broken_a.findings if not f.passed and f.severity == "critical"} == {
        "DPS-ESCROW-THRESHOLD", "IAT-AUDIT-LOG"}


def test_json_schema(broken_a: Assessment) -> None:
    doc = json.loads(json.dumps(broken_a.to_dict()))
    assert doc["schema"] == SCHEMA
    assert set(doc) == {"schema", "generated", "organisation", "critical", "scores",
                        "findings", "charts", "drill"}
    assert doc["organisation"] == "Scenario Ltd" and doc["critical"] is True
    assert dt.datetime.fromisoformat(doc["generated"]).tzinfo is not None
    assert set(doc["scores"]) == {"DPS", "IAT"}
    for domain, score in doc["scores"].items():
        assert set(score) == {"points", "maximum", "percent", "findings"}
        ids = {f["id"] for f in doc["findings"] if f["domain"] == domain and f["weight"]}
        assert set(score["findings"]) == ids
    for f in doc["findings"]:
        assert set(f) == {"id", "domain", "title", "passed", "severity", "evidence",
                          "remedy", "weight", "points", "data"}
        assert f["severity"] in SEVERITIES and 0 <= f["points"] <= f["weight"]
    assert set(doc["charts"]) == {"expiry", "coverage", "archive"}
    assert doc["drill"] is None


def test_drill_report_is_included(healthy: Org, healthy_a: Assessment) -> None:
    assert healthy_a.drill is not None and healthy_a.drill.ok
    assert healthy_a.drill == load_drill(healthy.data_dir)
    assert healthy_a.to_dict()["drill"]["steps"][0] == {
        "name": "sign", "ok": True, "seconds": 0.1, "detail": "worked"}


def test_a_failed_drill_step_fails_the_finding(healthy: Org, tmp_path: Path) -> None:
    drill = json.loads((healthy.data_dir / "drill" / "latest.json").read_text())
    drill["steps"][1].update(ok=False, detail="no cached CRL for the issuing CA")
    copy = tmp_path / "data"
    (copy / "drill").mkdir(parents=True)
    (copy / "drill" / "latest.json").write_text(json.dumps(drill))
    report = load_drill(copy)
    assert report is not None and not report.ok


@pytest.mark.parametrize("content", [b"{", b"[]", b'{"started": "yesterday"}',
                                     b'{"started": "2026-12-01T00:00:00", "isolation": "x",'
                                     b' "steps": []}'])
def test_damaged_drill_report_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "drill").mkdir()
    (tmp_path / "drill" / "latest.json").write_bytes(content)
    with pytest.raises(AssessError, match=r"drill report .* is damaged"):
        load_drill(tmp_path)


def test_domains_decide_what_is_outside(broken: Org) -> None:
    store = broken.store()
    try:
        a = assess(broken.data_dir, store, Config(), at=broken.at,
                   domains=["example.com", "outside-ca.example"])
        with pytest.raises(AssessError, match="not a domain name"):
            assess(broken.data_dir, store, Config(), at=broken.at, domains=["a b/c"])
    finally:
        store.close()
    assert _f(a, "DPS-REVOCATION-URLS").passed


def test_only_one_domain(healthy: Org) -> None:
    a = healthy.assess(only=("IAT",))
    assert {f.domain for f in a.findings} == {"IAT"}


def test_services_in_the_configuration(healthy: Org) -> None:
    inside = Config(
        directory=DirectoryConfig(ldap=LdapConfig(url="ldaps://ldap.example.com",
                                                  base_dn="dc=example,dc=com")),
        sync=SyncConfig(ldap=SyncLdapConfig(url="ldap://10.0.0.5", base_dn="dc=x")),
        gateway=GatewayConfig(next_hop="127.0.0.1:10026"))
    outside = Config(gateway=GatewayConfig(next_hop="smtp.mail-provider.example:25",
                                           internal_domains=("example.net",)))
    store = healthy.store()
    try:
        good = assess(healthy.data_dir, store, inside, at=healthy.at)
        bad = assess(healthy.data_dir, store, outside, at=healthy.at)
        domains = default_domains(healthy.data_dir, store, outside)
    finally:
        store.close()
    f = _f(good, "DPS-OUTSIDE-SERVICES")
    assert f.passed and f.weight == 3 and f.data["outside"] == []
    f = _f(bad, "DPS-OUTSIDE-SERVICES")
    assert not f.passed and f.points == 0
    assert f.data["outside"] == ["smtp.mail-provider.example:25"]
    assert "[gateway] next_hop = smtp.mail-provider.example:25" in f.evidence[1]
    assert domains == ("example.com", "example.net", "pki.example.com")


def test_tampered_escrow_state_is_a_critical_finding(healthy: Org, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(healthy.data_dir, copy)
    state = json.loads((copy / "ca" / "escrow.json").read_text())
    state["active"]["threshold"] = 1  # someone lowered M behind the audit log's back
    (copy / "ca" / "escrow.json").write_text(json.dumps(state))
    org = Org(copy, healthy.at)
    a = org.assess()
    f = _f(a, "DPS-ESCROW-THRESHOLD")
    assert not f.passed and a.critical
    assert f.evidence[0].startswith("the escrow state cannot be trusted: ")
    assert _f(a, "DPS-ESCROW-DRILLED").weight == 0


def test_tampered_audit_row_breaks_the_chain(healthy: Org, tmp_path: Path) -> None:
    import shutil
    import sqlite3

    copy = tmp_path / "data"
    shutil.copytree(healthy.data_dir, copy)
    with sqlite3.connect(copy / "smimekit.db") as db:
        db.execute("UPDATE audit_log SET subject = 'nobody@example.com' WHERE id = 3")
    f = _f(Org(copy, healthy.at).assess(), "IAT-AUDIT-LOG")
    assert not f.passed and f.data["problems"] >= 1
    assert "broken" in f.evidence[0]


def test_unreadable_audit_key_fails_without_aborting(healthy: Org, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(healthy.data_dir, copy)
    (copy / "ca" / "audit.key").write_bytes(b"damaged")
    f = _f(Org(copy, healthy.at).assess(), "IAT-AUDIT-LOG")
    assert not f.passed
    assert any(line.startswith("the audit key cannot be read: ") for line in f.evidence)
