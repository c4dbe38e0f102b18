"""Store backends for tests: SQLite (a temporary file) and PostgreSQL (127.0.0.1:5432).

Each PostgreSQL test gets its own schema (``smimekit_test_<random>``), named in the URL's
search_path, and drops it afterwards. Without a server the PostgreSQL half is skipped. The
``backend`` fixture is registered for the whole suite in tests/conftest.py.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

PG_HOST, PG_PORT, PG_DB = "127.0.0.1", 5432, "test"


@dataclass
class Backend:
    name: str
    url: str | None
    """None: the default SQLite file in data_dir."""
    data_dir: Path

    def cli_args(self) -> list[str]:
        args = ["--data-dir", str(self.data_dir)]
        return args + (["--database-url", self.url] if self.url else [])


@functools.cache
def _pg_user() -> str | None:
    for user in ("postgres", "root"):
        try:
            with psycopg.connect(
                host=PG_HOST, port=PG_PORT, dbname=PG_DB, user=user, connect_timeout=2
            ):
                return user
        except psycopg.Error:
            continue
    return None


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    data_dir = tmp_path / "data"
    if request.param == "sqlite":
        yield Backend("sqlite", None, data_dir)
        return
    user = _pg_user()
    if user is None:
        pytest.skip(
            f"no PostgreSQL server answers at {PG_HOST}:{PG_PORT} (database {PG_DB!r},"
            " user postgres or root, trust auth)"
        )
    schema = f"smimekit_test_{secrets.token_hex(6)}"
    conninfo = dict(host=PG_HOST, port=PG_PORT, dbname=PG_DB, user=user, autocommit=True)
    with psycopg.connect(**conninfo) as conn:  # type: ignore[arg-type]
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = (
        f"postgresql+psycopg://{user}@{PG_HOST}:{PG_PORT}/{PG_DB}"
        f"?options=-csearch_path%3D{schema}"
    )
    try:
        yield Backend("postgresql", url, data_dir)
    finally:
        with psycopg.connect(**conninfo) as conn:  # type: ignore[arg-type]
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
