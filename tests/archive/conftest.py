"""Fixtures for the archive tests: people, a corpus of every kind of message, a store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pki import PKI

from archive.corpus import People, Sample, fill_store, make_corpus, make_people
from smimekit.store import Store


@pytest.fixture(scope="session")
def people(pki: PKI, tmp_path_factory: pytest.TempPathFactory) -> People:
    return make_people(pki, tmp_path_factory.mktemp("archive-people"))


@pytest.fixture(scope="session")
def corpus(pki: PKI, people: People, tmp_path_factory: pytest.TempPathFactory) -> list[Sample]:
    return make_corpus(pki, people, tmp_path_factory.mktemp("archive-corpus"))


@pytest.fixture
def store(tmp_path: Path, people: People) -> Iterator[Store]:
    with Store.open(None, tmp_path / "data") as opened:
        fill_store(opened, people)
        yield opened
