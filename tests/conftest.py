"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

# CLI runs (in-process and subprocesses) keep their trust store, revocation cache and
# intermediates in a throwaway data directory, never in the checkout.
os.environ.setdefault("SMIMEKIT_DATA_DIR", tempfile.mkdtemp(prefix="smimekit-test-data-"))

from backends import Backend, backend  # noqa: F401  (the fixture, for every test)
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
