"""The benchmark scripts keep running (their figures are read by people, not asserted)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def bench(script: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    """Run ``benchmarks/<script>`` with ``args``; it must exit 0 (else its stderr's end)."""
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args],
                            capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("openssl") is None, reason="the benchmark compares with openssl")
def test_message_benchmark_quick_mode_prints_its_table() -> None:
    result = bench("bench_messages.py", "--quick", "--no-cli")
    rows = [line for line in result.stdout.splitlines() if line.startswith("| 1")]
    assert len(rows) == 12, result.stdout  # 10 KB and 1 MB x six operations
    assert "x openssl" in result.stdout


@pytest.mark.slow
def test_ca_benchmark_quick_mode_prints_its_tables() -> None:
    result = bench("bench_ca.py", "--quick", "--backend", "sqlite")
    rows = [line for line in result.stdout.splitlines() if line.startswith("| sqlite | P-384 |")]
    for what in ("bare signing", "CSR issuance, recorded",
                 "generated P-256 key issuance, recorded", "P-256 key generation alone"):
        assert any(f"| {what}" in row for row in rows), result.stdout
    assert len(rows) == 4 + 4, result.stdout  # + time split, pkilint, CRL, OCSP
    assert "target: issuance >= 80% of the bare signing rate" in result.stdout
    assert "audit chain intact" in result.stdout


@pytest.mark.slow
def test_archive_benchmark_quick_mode_prints_its_table() -> None:
    result = bench("bench_archive.py", "--quick")
    rows = [line for line in result.stdout.splitlines() if line.startswith(("| scan |",
                                                                            "| decrypt |"))]
    assert len(rows) == 2, result.stdout
    assert "| crypto |" in result.stdout and "decrypt: decrypted 36" in result.stdout


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("openssl") is None, reason="the benchmark compares with openssl")
def test_startup_benchmark_prints_each_command_beside_openssl(tmp_path: Path) -> None:
    result = bench("bench_startup.py", "--repeats", "1", "--json", str(tmp_path / "startup.json"))
    for op in ("verify", "sign", "encrypt", "decrypt"):
        assert f"smimekit {op} " in result.stdout and f"openssl cms {op} " in result.stdout
    assert "python -c pass" in result.stdout and "goal 0.12s CPU" in result.stdout
    figures = json.loads((tmp_path / "startup.json").read_text())["figures"]
    assert all(f["cpu_best"] >= 0 and f["wall_best"] > 0 for f in figures)
    assert len(figures) == 5 + 2 * 4  # floors, --help twice, then smimekit and openssl


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("openssl") is None, reason="the benchmark compares with openssl")
def test_budget_benchmark_quick_mode_prints_its_table() -> None:
    result = bench("bench_budgets.py", "--quick")
    rows = result.stdout.splitlines()[1:]
    assert len(rows) == 6, result.stdout  # three inputs x (smimekit, openssl)
    refused = [r for r in rows if "smimekit decrypt" in r and "exit 1" in r]
    assert len(refused) == 2, result.stdout
    assert any("MAX_RECIPIENT_INFOS" in r for r in refused)
    assert any("MAX_BER_SEGMENTS" in r for r in refused)
    assert all("decrypted" in r for r in rows if "openssl" in r), result.stdout


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("wrk") is None, reason="the benchmark drives load with wrk")
def test_ocsp_load_benchmark_quick_mode_prints_its_table(tmp_path: Path) -> None:
    result = bench("bench_ocsp_load.py", "--quick", "--backend", "sqlite", "--json",
                   str(tmp_path / "ocsp.json"), timeout=600)
    rows = [line for line in result.stdout.splitlines() if line.startswith("| sqlite |")]
    phases = {row.split("|")[3].strip() for row in rows}
    assert {"quiet", "enrolment round 1", "during ca crl"} <= phases, result.stdout
    assert {row.split("|")[4].strip() for row in rows} >= {"1", "8", "64"}, result.stdout
    assert "goal (sqlite): >= 2,000 answers/s" in result.stdout
    assert "enrolment (sqlite, default keys): 30 of 30 people" in result.stdout
    assert "ca crl (sqlite" in result.stdout and "respond() in process" in result.stdout
    if shutil.which("openssl"):
        assert any("| openssl |" in row for row in rows), result.stdout
    figures = json.loads((tmp_path / "ocsp.json").read_text())[0]["figures"]
    assert all(f["ok"] > 0 for f in figures), figures  # every run was answered


@pytest.mark.interop
@pytest.mark.skipif(any(shutil.which(c) is None and not Path("/usr/sbin", c).exists()
                        for c in ("nsd", "unbound", "ldns-signzone", "dig")),
                    reason="NSD, unbound, ldnsutils and dig are needed (make peers)")
def test_smimea_benchmark_quick_mode_prints_its_table() -> None:
    result = bench("bench_smimea.py", "--quick")
    for what in ("find, AD bit only", "find, own DNSSEC check", "find, a miss",
                 "dig +dnssec"):
        assert any(line.startswith(what) for line in result.stdout.splitlines()), result.stdout
@pytest.mark.slow
def test_lookup_benchmark_quick_mode_prints_its_table() -> None:
    result = bench("bench_lookup.py", "--quick")
    for what in ("store", "cache hit", "cache read alone", "validation floor"):
        assert f"| {what}" in result.stdout, result.stdout
@pytest.mark.slow
def test_harvest_benchmark_quick_mode_prints_its_table() -> None:
    result = bench("bench_harvest.py", "--quick")
    rows = [line for line in result.stdout.splitlines() if line.startswith("| verify only |")
            or line.startswith("| harvest, ")]
    assert len(rows) == 3, result.stdout
    assert "21 certificates kept" in result.stdout and "0 new, 0 updated" in rows[2]
def test_enroll_benchmark_quick_mode_prints_its_table() -> None:
    result = bench("bench_enroll.py", "--quick")
    rows = [line for line in result.stdout.splitlines() if line.startswith("| sqlite |")]
    assert [row.split("|")[2].strip() for row in rows] == ["1", "2"], result.stdout
    for what in ("RSA-3072 key generation", "P-256 key generation", "PKCS#12",
                 "floor of one person"):
        assert f"| {what}" in result.stdout, result.stdout
    assert "goal: 10,000 people in <= 20 min on 2 cores:" in result.stdout


@pytest.mark.slow
def test_pq_benchmark_quick_mode_prints_its_tables() -> None:
    result = bench("bench_pq.py", "--quick")
    for operation in ("sign", "verify", "encrypt", "decrypt"):
        for algorithm in ("rsa-3072", "p-256"):
            assert any(line.split()[:3] == [operation, algorithm, "10"]
                       for line in result.stdout.splitlines()), result.stdout
    pq = {"sign": "ml-dsa-65", "verify": "ml-dsa-65", "encrypt": "ml-kem-768",
          "decrypt": "ml-kem-768"}
    for operation, algorithm in pq.items():
        assert any(line.split()[:3] == [operation, algorithm, "10"]
                   for line in result.stdout.splitlines()), result.stdout
    assert "RecipientInfo" in result.stdout and "SignerInfo" in result.stdout


@pytest.mark.slow
@pytest.mark.interop
def test_gateway_benchmark_quick_mode_prints_its_table_and_goals() -> None:
    import os

    if os.geteuid() != 0 or shutil.which("smtp-source") is None:
        pytest.skip("bench_gateway starts a private Postfix: root and Postfix needed")
    result = bench("bench_gateway.py", "--quick", "--attach", "both", timeout=600)
    throughput, budget = result.stdout.split("# CPU per message")
    rows = [line for line in throughput.splitlines()
            if line.startswith(("| after-queue |", "| before-queue |"))]
    # 10 KB and 1 MB, outbound, inbound and relay, each attachment
    assert len(rows) == 12, result.stdout
    assert all(float(row.split("|")[6]) > 0 for row in rows), result.stdout  # gateway msg/s
    assert all(float(row.split("|")[10]) > 0 for row in rows), result.stdout  # node CPU ms
    goals = [line for line in throughput.splitlines() if line.startswith("goal ")]
    assert len(goals) == 12 and all(" met" in g or "NOT met" in g for g in goals), goals
    # what the goals leave the node, for each row with a goal (not relay)
    left = [line.split("|")[4:11] for line in budget.splitlines()
            if line.startswith(("| after-queue |", "| before-queue |"))]
    assert len(left) == 8, budget
    numbers = [float(cell) for row in left for cell in row]  # relay runs: no "-" floor
    assert len(numbers) == 8 * 7, budget
