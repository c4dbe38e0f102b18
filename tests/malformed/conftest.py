"""Fixtures for the malformed-input suite: the shared test PKI, in memory and as PEM files."""

from __future__ import annotations

import pytest
from properties.pki import Pki, PkiFiles, test_pki, write_pki


@pytest.fixture(scope="session")
def kit() -> Pki:
    return test_pki()


@pytest.fixture(scope="session")
def kit_files(kit: Pki, tmp_path_factory: pytest.TempPathFactory) -> PkiFiles:
    return write_pki(kit, tmp_path_factory.mktemp("malformed-pki"))
