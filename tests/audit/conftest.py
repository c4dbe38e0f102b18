"""Fixtures of the assessment tests: the scenario organisations (audit/scenario.py), one of
each per session."""

from __future__ import annotations

import pytest
from pki import PKI

from audit.scenario import Org, build_broken, build_healthy, build_outsourced


@pytest.fixture(scope="session")
def broken(pki: PKI, tmp_path_factory: pytest.TempPathFactory) -> Org:
    return build_broken(tmp_path_factory.mktemp("scenario"), pki)


@pytest.fixture(scope="session")
def healthy(pki: PKI, tmp_path_factory: pytest.TempPathFactory) -> Org:
    return build_healthy(tmp_path_factory.mktemp("scenario"), pki)


@pytest.fixture(scope="session")
def outsourced(pki: PKI, tmp_path_factory: pytest.TempPathFactory) -> Org:
    return build_outsourced(tmp_path_factory.mktemp("scenario"), pki)
