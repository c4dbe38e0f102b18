"""gateway/scan.py: the scanning hook as a command and as a clamd INSTREAM socket."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from fakeclamd import EICAR, FakeClamd

from smimekit.config import ScanConfig
from smimekit.errors import ConfigError, GatewayError
from smimekit.gateway.scan import Scanner, ScanResult

# A scanner command: exit 1 and name the find when stdin holds the EICAR string.
SCRIPT = ("import sys; data = sys.stdin.buffer.read(); "
          "found = b'EICAR-STANDARD-ANTIVIRUS-TEST-FILE' in data; "
          "print('stdin: Eicar-Test-Signature FOUND' if found else 'stdin: OK'); "
          "sys.exit(1 if found else 0)")
CLEAN = b"From: a@example.org\r\nSubject: hi\r\n\r\nHello.\r\n"
INFECTED = b"From: a@example.org\r\nSubject: hi\r\n\r\n" + EICAR + b"\r\n"


def _command(*args: str, on_failure: str = "defer", timeout: float = 10) -> Scanner:
    return Scanner(ScanConfig(command=(sys.executable, "-c", *args), timeout=timeout,
                              on_failure=on_failure))  # type: ignore[arg-type]


def test_command_scanner_finds_eicar_and_passes_clean_mail() -> None:
    scanner = _command(SCRIPT)
    assert scanner.check(CLEAN) == ScanResult("clean")
    assert scanner.check(INFECTED) == ScanResult("infected", "stdin: Eicar-Test-Signature FOUND")


def test_command_failure_defers_or_passes_by_policy() -> None:
    broken = "import sys; sys.stderr.write('database missing\\n'); sys.exit(2)"
    with pytest.raises(GatewayError, match=r"scanner failed .*status 2: database missing") as info:
        _command(broken).check(CLEAN)
    assert not info.value.permanent
    result = _command(broken, on_failure="pass").check(CLEAN)
    assert result.status == "failed" and "status 2" in result.detail


def test_command_timeout_and_missing_program_are_failures(tmp_path: Path) -> None:
    started = time.monotonic()
    slow = _command("import time; time.sleep(30)", timeout=0.5).scan(CLEAN)
    assert slow.status == "failed" and "no answer within 0.5 s" in slow.detail
    assert time.monotonic() - started < 10
    missing = Scanner(ScanConfig(command=(str(tmp_path / "nope"),))).scan(CLEAN)
    assert missing.status == "failed" and "cannot run" in missing.detail


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_clamd_socket_instream(tmp_path: Path, transport: str) -> None:
    with FakeClamd(tmp_path / "clamd.sock" if transport == "unix" else None) as clamd:
        scanner = Scanner(ScanConfig(socket=clamd.address, timeout=5))
        assert scanner.check(CLEAN).status == "clean"
        assert scanner.check(INFECTED) == ScanResult("infected", "Eicar-Test-Signature")
        big = CLEAN + b"x" * (300 * 1024)  # several chunks
        assert scanner.check(big).status == "clean"
        assert clamd.received == [CLEAN, INFECTED, big]
        assert clamd.server.commands == [b"zINSTREAM\0"] * 3


def test_clamd_down_silent_or_erroring_is_a_failure(tmp_path: Path) -> None:
    down = Scanner(ScanConfig(socket=f"unix:{tmp_path}/none.sock", timeout=2))
    with pytest.raises(GatewayError, match="cannot reach clamd"):
        down.check(CLEAN)
    with FakeClamd(tmp_path / "s.sock", mode="silent") as clamd:
        result = Scanner(ScanConfig(socket=clamd.address, timeout=0.5)).scan(CLEAN)
        assert result.status == "failed" and "no answer" in result.detail
    with FakeClamd(tmp_path / "e.sock", mode="error") as clamd:
        result = Scanner(ScanConfig(socket=clamd.address, on_failure="pass")).check(CLEAN)
        assert result == ScanResult("failed", "clamd answered: INSTREAM size limit exceeded."
                                              " ERROR")


@pytest.mark.parametrize(("config", "named"), [
    (ScanConfig(), "exactly one of command and socket"),
    (ScanConfig(command=("x",), socket="unix:/s"), "exactly one of command and socket"),
    (ScanConfig(socket="clamd.sock"), "must be unix:/path or tcp:host:port"),
    (ScanConfig(socket="tcp:host:99999"), "must be unix:/path or tcp:host:port"),
    (ScanConfig(command=("x",), timeout=0), "timeout must be more than 0"),
])
def test_bad_scan_settings_are_config_errors(config: ScanConfig, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        Scanner(config)
