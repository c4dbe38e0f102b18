"""Fixtures of the escrow tests; the kit itself lives in escrow_kit.py (a plain module, so that
test modules import it by a name no other conftest.py shadows)."""

from escrow_kit import env, officers, quick_scrypt  # noqa: F401  (fixtures)
