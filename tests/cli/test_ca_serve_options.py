"""``smimekit ca serve``'s server options on the real command: --workers forks that many
workers (and --sign-crls one crl-signer more), --head-timeout closes a silent connection,
--max-head-size refuses a larger head, SIGTERM exits 0, bad values are usage errors."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from backends import Backend
from loopback import free_port, url_line

from smimekit.cli.main import main

PASS = "correct horse battery staple"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("serve-options")
    os.environ["SMIMEKIT_PASSPHRASE"] = PASS
    try:
        backend = Backend("sqlite", None, base / "data")
        assert main([*backend.cli_args(), "ca", "init", "--org", "Example Ltd", "--base-url",
                     "http://pki.example.com", "--key-type", "p256", "--country", "GB"]) == 0
    finally:
        del os.environ["SMIMEKIT_PASSPHRASE"]
    return base / "data"


@contextmanager
def serving(data: Path, *options: str) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "smimekit.cli.main", "--data-dir", str(data), "ca", "serve",
         "--host", "127.0.0.1", "--port", str(port), *options],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "SMIMEKIT_PASSPHRASE": PASS})
    try:
        assert process.stderr is not None
        url_line(process, port)
        yield port, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def wait_for_children(pid: int, count: int) -> list[int]:
    deadline = time.monotonic() + 20
    while len(found := children(pid)) != count and time.monotonic() < deadline:
        time.sleep(0.1)
    return found


def test_workers_head_timeout_and_head_size_are_applied(data: Path) -> None:
    with serving(data, "--workers", "3", "--head-timeout", "1", "--max-head-size",
                 "8192") as (port, process):
        assert len(wait_for_children(process.pid, 3)) == 3
        with socket.create_connection(("127.0.0.1", port), timeout=15) as silent:
            silent.sendall(b"GET /certs/root.der HTTP/1.1\r\n")  # and then nothing
            assert silent.recv(1) == b""  # closed by the 1 s head deadline
        big = b"GET /certs/root.der HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n"
        with socket.create_connection(("127.0.0.1", port), timeout=15) as client:
            client.sendall(big)
            assert client.recv(64).startswith(b"HTTP/1.1 431 ")
        with socket.create_connection(("127.0.0.1", port), timeout=15) as client:
            client.sendall(b"GET /certs/root.der HTTP/1.1\r\nHost: x\r\n\r\n")
            assert client.recv(64).startswith(b"HTTP/1.1 200 ")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    err = process.stderr.read() if process.stderr else b""
    assert b"Traceback" not in err, err


def test_sign_crls_adds_one_crl_signer_process(data: Path) -> None:
    with serving(data, "--workers", "2", "--sign-crls") as (_, process):
        found = wait_for_children(process.pid, 3)
        assert len(found) == 3  # two workers and the crl-signer
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in found) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(Path(f"/proc/{pid}").exists() for pid in found)  # none left behind


@pytest.mark.parametrize("option", [["--workers", "0"], ["--head-timeout", "0"],
                                    ["--max-head-size", "100"], ["--max-connections", "0"]])
def test_bad_limits_are_usage_errors(data: Path, option: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "smimekit.cli.main", "--data-dir", str(data), "ca", "serve",
         "--port", str(free_port()), *option], capture_output=True, text=True, timeout=60,
        env={**os.environ, "SMIMEKIT_PASSPHRASE": PASS})
    assert result.returncode == 2, result.stderr
    assert "Invalid value" in result.stderr and "Traceback" not in result.stderr
