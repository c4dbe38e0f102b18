"""Which store a CA keeps its records in, recorded in ``ca.json`` and checked on every use.

A CA found with another store (or none) must not issue into an empty one: the issuance records,
revocations and the audit log would be split, and the CRL would miss revoked certificates.
:meth:`StoreLocation.of` names a store without opening it: the SQLite file (relative to the
data directory when it is inside it, so a moved data directory keeps its store) or the database
URL without its password.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smimekit.errors import StoreError

__all__ = ["StoreLocation"]


@dataclass(frozen=True)
class StoreLocation:
    """A store's backend and where it is; never holds a password."""

    backend: str
    """``sqlite`` or ``postgresql``."""
    location: str
    """SQLite: the file, relative to the data directory when inside it (``smimekit.db`` is
    the default store); PostgreSQL: the URL without password."""

    @classmethod
    def of(cls, url: str | None, data_dir: Path | str) -> StoreLocation:
        """The store that ``Store.open(url, data_dir)`` opens.

        Raises:
            StoreError: a URL that is not SQLite or PostgreSQL, or not a URL.
        """
        from smimekit.store.db import DB_FILENAME

        if url is None:
            return cls("sqlite", DB_FILENAME)
        from sqlalchemy.engine import URL, make_url
        from sqlalchemy.exc import ArgumentError

        try:
            parsed = make_url(url)
        except ArgumentError:
            raise StoreError(
                "bad database URL: expected e.g. postgresql+psycopg://user@host/db") from None
        backend = parsed.get_backend_name()
        if backend == "sqlite":
            if not parsed.database or parsed.database == ":memory:":
                return cls("sqlite", ":memory:")
            path = Path(os.path.abspath(parsed.database))
            base = Path(os.path.abspath(data_dir))
            try:
                return cls("sqlite", str(path.relative_to(base)))
            except ValueError:
                return cls("sqlite", str(path))
        if backend == "postgresql":
            bare = URL.create("postgresql+psycopg", parsed.username, None, parsed.host,
                              parsed.port, parsed.database, parsed.query)
            return cls("postgresql", bare.render_as_string(hide_password=False))
        raise StoreError(f"unsupported database {backend!r}: use SQLite or"
                         " postgresql+psycopg://...")

    def describe(self, data_dir: Path | str) -> str:
        """For messages: ``SQLite <path>`` or ``PostgreSQL <url>``."""
        if self.backend == "sqlite":
            path = Path(self.location)
            if self.location != ":memory:" and not path.is_absolute():
                path = Path(data_dir) / path
            return f"SQLite {path}"
        return f"PostgreSQL {self.location}"

    def to_json(self) -> dict[str, str]:
        return {"backend": self.backend, "location": self.location}

    @classmethod
    def from_json(cls, data: Any) -> StoreLocation:
        """Raises StoreError when ``data`` is not what :meth:`to_json` wrote."""
        if (not isinstance(data, dict) or set(data) != {"backend", "location"}
                or not all(isinstance(v, str) for v in data.values())):
            raise StoreError("the recorded store is damaged")
        return cls(data["backend"], data["location"])
