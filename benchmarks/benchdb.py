"""PostgreSQL for the benchmarks: who may connect to the local server, and a fresh database
(or schema) per run, dropped afterwards. Imported by the bench_*.py scripts, which run with
this folder first on sys.path."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

PG_HOST, PG_PORT = "127.0.0.1", 5432


def pg_user(dbname: str = "postgres") -> str | None:
    """The first of postgres/root that may connect to ``dbname``; None without a server (or
    without psycopg)."""
    try:
        import psycopg
    except ImportError:
        return None
    for user in ("postgres", "root"):
        try:
            with psycopg.connect(host=PG_HOST, port=PG_PORT, dbname=dbname, user=user,
                                 connect_timeout=2):
                return user
        except psycopg.Error:
            continue
    return None


def _admin(dbname: str) -> dict[str, Any]:
    user = pg_user(dbname)
    assert user is not None, f"no PostgreSQL server answers at {PG_HOST}:{PG_PORT}"
    return dict(host=PG_HOST, port=PG_PORT, dbname=dbname, user=user, autocommit=True)


@contextmanager
def fresh_database(prefix: str) -> Iterator[str]:
    """The SQLAlchemy URL of a new database named ``<prefix>_<random>``, dropped afterwards."""
    import psycopg

    admin = _admin("postgres")
    name = f"{prefix}_{secrets.token_hex(6)}"
    with psycopg.connect(**admin) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://{admin['user']}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with psycopg.connect(**admin) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def fresh_schema(dbname: str, prefix: str) -> Iterator[str]:
    """The SQLAlchemy URL of a new schema ``<prefix>_<random>`` in ``dbname`` (the search
    path set on every connection), dropped with its tables afterwards."""
    import psycopg

    admin = _admin(dbname)
    name = f"{prefix}_{secrets.token_hex(6)}"
    with psycopg.connect(**admin) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    try:
        yield (f"postgresql+psycopg://{admin['user']}@{PG_HOST}:{PG_PORT}/{dbname}"
               f"?options=-csearch_path%3D{name}")
    finally:
        with psycopg.connect(**admin) as conn:
            conn.execute(f'DROP SCHEMA "{name}" CASCADE')
