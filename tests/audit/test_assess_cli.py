"""`smimekit assess` through the real CLI: summary, --json, --html wiring, exit status."""

from __future__ import annotations

import datetime as dt
import json
import sys
import types
from pathlib import Path

import pytest

from audit.scenario import Org
from smimekit.audit.model import SCHEMA, Assessment, Finding
from smimekit.cli.assess import _summary
from smimekit.cli.main import main


def run(org: Org, *args: str | Path) -> int:
    return main(["--data-dir", str(org.data_dir), "assess", "--at", org.at.isoformat(),
                 *map(str, args)])


def test_healthy_exits_zero_with_a_summary(healthy: Org,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert run(healthy, "--archive", healthy.archive or "") == 0
    out = capsys.readouterr().out
    assert "smimekit assess: Healthy Ltd" in out
    assert "DPS Data Protection and Sovereignty" in out and "IAT Identity" in out
    assert "75/79" in out and "48/48" in out
    assert "MEDIUM   DPS-CA-KEY-TOKEN: The issuing key is in a token" in out
    assert "remedy: Keep the issuing key in a PKCS#11 token" in out
    assert "8/8 steps worked" in out
    assert "CRITICAL" not in out


def test_broken_exits_one_and_lists_critical_first(broken: Org, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "report.json"
    assert run(broken, "--archive", broken.archive or "", "--json", report) == 1
    captured = capsys.readouterr()
    out = captured.out
    assert captured.err == ("smimekit: error: critical finding(s) failed:"
                            " DPS-ESCROW-THRESHOLD, IAT-AUDIT-LOG\n")
    lines = [line for line in out.splitlines() if line[:1].isupper() and "-" in line[:30]]
    assert lines[0].startswith("CRITICAL") and lines[1].startswith("CRITICAL")
    doc = json.loads(report.read_text())
    assert doc["schema"] == SCHEMA and doc["critical"] is True
    assert doc["charts"]["archive"]["weak"]["rc2"] == 1
    assert report.stat().st_mode & 0o777 == 0o644


def test_json_to_stdout_is_json_alone(healthy: Org, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(healthy, "--json", "-") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["organisation"] == "Healthy Ltd"
    assert doc["drill"]["ok"] is True


def test_html_is_written_by_the_report_module(healthy: Org, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Assessment] = []

    def render_html(assessment: Assessment) -> str:
        seen.append(assessment)
        return "<!doctype html><title>report</title>"

    monkeypatch.setitem(sys.modules, "smimekit.audit.report",
                        types.SimpleNamespace(render_html=render_html))
    out = tmp_path / "report.html"
    assert run(healthy, "--html", out) == 0
    assert out.read_text() == "<!doctype html><title>report</title>"
    assert seen[0].organisation == "Healthy Ltd"


@pytest.mark.parametrize(("args", "message"), [
    (["--at", "yesterday"], "expected an ISO 8601 time"),
    (["--domain", "a b"], "not a domain name"),
    (["--domain", "user@example.com"], "not a domain name"),
    (["--only", "XYZ"], "'XYZ' is not one of"),
    (["--archive", "/nonexistent/mbox"], "does not exist"),
])
def test_usage_errors_exit_two(healthy: Org, capsys: pytest.CaptureFixture[str],
                               args: list[str], message: str) -> None:
    assert main(["--data-dir", str(healthy.data_dir), "assess", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_missing_data_dir_is_one_line(tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--data-dir", str(tmp_path / "none"), "assess"]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "does not exist" in err


def test_damaged_drill_report_is_one_line(healthy: Org, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(healthy.data_dir, copy)
    (copy / "drill" / "latest.json").write_text("{")
    assert main(["--data-dir", str(copy), "assess"]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "drill report" in err and "damaged" in err


def test_summary_prints_evidence_as_text_not_markup(capsys: pytest.CaptureFixture[str]) -> None:
    hostile = "CN=[link=http://evil.example]click[/link] [bold red]<script>x</script>"
    a = Assessment(dt.datetime(2026, 12, 7, tzinfo=dt.UTC), "[blink]Org[/blink]", (
        Finding("DPS-OUTSIDE-CA", "DPS", "t", False, "high", (hostile,), "fix it", 8, 0),))
    _summary(a)
    out = capsys.readouterr().out
    assert hostile in out
    assert "[blink]Org[/blink]" in out
