"""The environment holds exactly the locked set, and the lock covers pyproject.toml.

``make install`` builds ``.venv`` from ``requirements/lock.txt`` (hash-checked); these tests
prove that what runs the suite is that set, no more and no less, and that nobody added a
dependency to ``pyproject.toml`` without re-locking. ``make test-latest`` installs the newest
releases instead and sets ``SMIMEKIT_TEST_LATEST=1``, which skips the equality check only.
"""

from __future__ import annotations

import os
import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "lock.txt"
_PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")
# pip comes with the venv itself (ensurepip), not from the lock
_NOT_LOCKED = {"pip", "smimekit"}


def _locked() -> dict[str, tuple[Version, str | None]]:
    pins: dict[str, tuple[Version, str | None]] = {}
    for line in LOCK.read_text().splitlines():
        match = _PIN.match(line)
        if match:
            name, version, marker = match.groups()
            pins[canonicalize_name(name)] = (Version(version), marker)
    return pins


def _applies(marker: str | None) -> bool:
    return marker is None or Marker(marker).evaluate()


def test_every_pin_carries_a_hash() -> None:
    blocks = re.split(r"\n(?=\S)", LOCK.read_text())
    pinned = [b for b in blocks if _PIN.match(b.splitlines()[0])]
    assert len(pinned) == len(_locked()) > 20
    for block in pinned:
        assert "--hash=sha256:" in block, block.splitlines()[0]


def test_lock_satisfies_every_range_in_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted.extend(extra)
    wanted.extend((ROOT / "requirements" / "build.in").read_text().split("\n"))
    pins = _locked()
    for text in wanted:
        text = text.split("#", 1)[0].strip()
        if not text:
            continue
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is in pyproject.toml but not locked: make lock"
        version, _ = pins[name]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"locked {name}=={version} does not satisfy {requirement}: make lock")


@pytest.mark.skipif(bool(os.environ.get("SMIMEKIT_TEST_LATEST")),
                    reason="make test-latest installs the newest releases on purpose")
def test_installed_set_is_exactly_the_lock() -> None:
    expected = {name: version for name, (version, marker) in _locked().items()
                if _applies(marker)}
    installed = {canonicalize_name(d.metadata["Name"]): Version(d.version)
                 for d in metadata.distributions()}
    for name in _NOT_LOCKED:
        installed.pop(name, None)
    missing = sorted(set(expected) - set(installed))
    extra = sorted(set(installed) - set(expected))
    wrong = sorted(f"{n} {installed[n]} (locked {expected[n]})"
                   for n in set(expected) & set(installed) if installed[n] != expected[n])
    assert not missing, f"locked but not installed: {missing}"
    assert not extra, f"installed but not locked: {extra}"
    assert not wrong, f"other versions than the lock: {wrong}"
