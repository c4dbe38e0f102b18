"""What every benchmark prints about the run: the CPU model and the checkout's revision.
Imported by the bench_*.py scripts, which run with this folder first on sys.path."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("unknown" where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def git_revision() -> str:
    """``git describe --always --dirty`` of this checkout ("" outside a git checkout)."""
    try:
        return subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                              capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return ""
