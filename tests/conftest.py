"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

# CLI runs (in-process and subprocesses) keep their trust store, revocation cache and
# intermediates in a throwaway data directory, never in the checkout.
os.environ.setdefault("SMIMEKIT_DATA_DIR", tempfile.mkdtemp(prefix="smimekit-test-data-"))

from backends import Backend, backend  # noqa: F401  (the fixture, for every test)
from loopback import FileServer
from pki import PKI, Identity


@pytest.fixture(scope="session")
def pki() -> PKI:
    return PKI()


@pytest.fixture(scope="session")
def alice(pki: PKI) -> Identity:
    return pki.person("alice", "rsa2048", issuer=(pki.root_key, pki.root))


@pytest.fixture(scope="session")
def bob(pki: PKI) -> Identity:
    return pki.person("bob", "p256", issuer=(pki.root_key, pki.root))


@pytest.fixture(scope="session")
def trust(pki: PKI) -> list:
    return [pki.root]


@pytest.fixture
def null_device(tmp_path: Path) -> Path:
    """A character device to write to that is never the system's /dev/null itself: as root
    a twin node (1, 3) in tmp_path, so code that wrongly replaces device nodes destroys only
    the twin; otherwise a link to /dev/null, which no user can replace."""
    path = tmp_path / "null-device"
    if os.geteuid() == 0:
        import stat
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        os.chmod(path, 0o666)
    else:
        path.symlink_to("/dev/null")
    return path


@pytest.fixture(autouse=True)
def _no_proxy_for_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    # The real fetcher honours *_proxy variables; loopback servers must be reached directly
    # (a test that goes through a proxy on purpose sets its own, as test_ca_scenario does).
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def server() -> Iterator[FileServer]:
    """Certificates (caIssuers answers) over real HTTP on loopback (tests/loopback.py)."""
    s = FileServer(content_type="application/pkix-cert")
    try:
        yield s
    finally:
        s.stop()
