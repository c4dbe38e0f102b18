"""Fixtures shared by the whole suite."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

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
