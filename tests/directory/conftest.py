"""Fixtures of the directory tests: a real CA per test, copied from one made per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kit import CA, make_ca, make_ca_template


@pytest.fixture(scope="session")
def ca_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_ca_template(tmp_path_factory.mktemp("directory-ca") / "data")


@pytest.fixture
def ca(tmp_path: Path, ca_template: Path) -> Iterator[CA]:
    yield from make_ca(tmp_path / "data", ca_template)
