"""Our own S/MIME CA: CA/Browser Forum S/MIME BR profiles, issuance, linting.

:mod:`smimekit.ca.profiles` holds the profiles (pure data and functions);
:mod:`smimekit.ca.authority` creates a root and an issuing CA and issues certificates,
refusing any that pkilint's S/MIME linter finds errors in.
"""

from __future__ import annotations

from smimekit.ca.authority import Authority, CAKeyType, Finding, lint
from smimekit.ca.profiles import (
    PROFILES,
    Generation,
    KeyType,
    Profile,
    Purpose,
    SubjectInfo,
    ValidationLevel,
)

__all__ = [
    "PROFILES",
    "Authority",
    "CAKeyType",
    "Finding",
    "Generation",
    "KeyType",
    "Profile",
    "Purpose",
    "SubjectInfo",
    "ValidationLevel",
    "lint",
]
