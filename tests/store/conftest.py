"""Every store test runs against SQLite and PostgreSQL: the ``backend`` fixture comes from
tests/backends.py through tests/conftest.py."""
