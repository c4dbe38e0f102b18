#!/usr/bin/env python3
"""Start-up cost of the ``smimekit`` command beside ``openssl cms``, process start included.

    .venv/bin/python benchmarks/bench_startup.py [--repeats N] [--size 10k] [--json FILE]
                                                 [--keep DIR]

Each row runs a whole command N times in a fresh process on a small message (10 KB) and
reports the CPU time the child used (user + sys, from ``getrusage(RUSAGE_CHILDREN)``), best
and median, and the best wall time. For a small message almost all of it is start-up: the
interpreter and the imports. Rows:

* ``python -c pass``: the interpreter floor;
* ``import click, cryptography.x509, asn1crypto.cms``: the dependency floor, what any
  message command must import before smimekit's own modules;
* ``smimekit --help`` and ``smimekit verify --help``: start-up with no work;
* ``smimekit verify | sign | encrypt | decrypt`` and the ``openssl cms`` commands doing the
  same work on the same files (``bench_messages.py`` builds both command lines);
* ``openssl version``: openssl's own floor.

The goal (issue 8): a message command within 0.12 s of CPU. Like the other benchmarks it
prints figures and never fails on a slow machine; the goal is marked as met or not.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_messages as bm  # the PKI, messages and command lines are shared

GOAL_CPU = 0.12
DEPS = "import click, cryptography.x509, asn1crypto.cms"
# (label, bench_messages operation) for the message commands
MESSAGE_OPS = (("verify", "verify"), ("sign", "sign"), ("encrypt", "encrypt-gcm"),
               ("decrypt", "decrypt-gcm"))


@dataclass
class Figure:
    label: str
    cpu_best: float
    cpu_median: float
    wall_best: float


def child_env() -> dict[str, str]:
    """The environment of the measured commands: Python may cache bytecode, as for a user.

    With PYTHONDONTWRITEBYTECODE set (as in some CI and sandboxes), every run would compile
    smimekit's sources again, which is no part of a user's start-up.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def measure(label: str, cmd: list[str], cwd: Path, repeats: int) -> Figure:
    """Run ``cmd`` ``repeats`` times (after one unmeasured run that warms the bytecode and
    page caches); the child's user+sys CPU and wall time of each run."""
    cpu: list[float] = []
    wall: list[float] = []
    env = child_env()
    subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
        wall.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n"
                             f"{proc.stderr.decode(errors='replace')}")
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return Figure(label, min(cpu), statistics.median(cpu), min(wall))


def smimekit_base() -> list[str]:
    exe = Path(sys.executable).with_name("smimekit")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "smimekit.cli.main"]


def run(d: Path, size: int, repeats: int) -> dict[str, Figure]:
    bm.make_pki(d)
    bm.prepare_inputs(d, [size])
    tag = str(size)
    (d / "smimekit-data").mkdir(exist_ok=True)  # the default --data-dir, empty: no trust store
    figures: dict[str, Figure] = {}

    def add(label: str, cmd: list[str]) -> None:
        figures[label] = measure(label, cmd, d, repeats)

    add("python -c pass", [sys.executable, "-c", "pass"])
    add("dependency floor", [sys.executable, "-c", DEPS])
    add("openssl version", ["openssl", "version"])
    add("smimekit --help", [*smimekit_base(), "--help"])
    add("smimekit verify --help", [*smimekit_base(), "verify", "--help"])
    for label, op in MESSAGE_OPS:
        add(f"smimekit {label}", bm.cli_cmd(op, tag))
        add(f"openssl cms {label}", bm.openssl_cmd(op, tag))
    return figures


def render(figures: dict[str, Figure], size: int, repeats: int) -> str:
    floor = figures["python -c pass"].cpu_best
    lines = [
        f"Start-up: whole commands on a {bm.size_label(size)} message, best of {repeats}"
        " (CPU = user+sys of the child process)",
        "",
        f"{'command':<26} {'CPU best':>9} {'CPU med':>9} {'wall best':>10}",
    ]
    for fig in figures.values():
        lines.append(f"{fig.label:<26} {fig.cpu_best:>8.3f}s {fig.cpu_median:>8.3f}s"
                     f" {fig.wall_best:>9.3f}s")
    lines += ["", f"{'operation':<10} {'smimekit':>9} {'openssl':>9} {'ratio':>7}"
              f" {'- python':>9}  goal {GOAL_CPU:.2f}s CPU"]
    for label, _op in MESSAGE_OPS:
        ours = figures[f"smimekit {label}"].cpu_best
        theirs = figures[f"openssl cms {label}"].cpu_best
        ratio = ours / theirs if theirs > 0 else float("inf")
        met = "met" if ours <= GOAL_CPU else "NOT met"
        lines.append(f"{label:<10} {ours:>8.3f}s {theirs:>8.3f}s {ratio:>6.0f}x"
                     f" {ours - floor:>8.3f}s  {met}")
    lines += ["", f"'- python': CPU above `python -c pass`. Dependency floor: `python -c"
              f" \"{DEPS}\"`.", "CPU time grows when other processes share the cores: compare"
              " rows of one run, not runs on a busy machine with runs on an idle one."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15, help="runs per command (default 15)")
    parser.add_argument("--size", default="10k", help="message size (default 10k)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and keep it")
    args = parser.parse_args(argv)
    if shutil.which("openssl") is None:
        raise SystemExit("openssl is not on the PATH")
    size = bm.parse_size(args.size)
    if args.keep:
        work = Path(args.keep)
        work.mkdir(parents=True, exist_ok=True)
        figures = run(work, size, args.repeats)
    else:
        with tempfile.TemporaryDirectory(prefix="smimekit-startup-") as tmp:
            figures = run(Path(tmp), size, args.repeats)
    print(render(figures, size, args.repeats))
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"size": size, "repeats": args.repeats, "goal_cpu_s": GOAL_CPU,
             "figures": [asdict(f) for f in figures.values()]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
