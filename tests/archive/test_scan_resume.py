"""scan --state: an interrupted scan goes on where it stopped, and its report is the same."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from archive.corpus import People, Sample, build, fill_store
from smimekit import archive
from smimekit.cli.main import main
from smimekit.store import Store

COUNT = 40


class Stop(Exception):
    pass


def _messages(corpus: list[Sample]) -> list[bytes]:
    return [corpus[n % len(corpus)].data for n in range(COUNT)]


def _report(path: Path, **kwargs: Any) -> dict[str, Any]:
    found = archive.scan(path, **kwargs).to_json()
    del found["seconds"]
    return found


def _stop_after(count: int) -> archive.ProgressCallback:
    def progress(p: archive.Progress) -> None:
        if p.messages == count:
            raise Stop

    return progress


@pytest.mark.parametrize("kind", ["mbox", "maildir"])
def test_a_scan_stopped_twice_resumes_to_the_uninterrupted_report(
    tmp_path: Path, kind: str, corpus: list[Sample], store: Store
) -> None:
    path = build(kind, tmp_path, _messages(corpus))
    whole = _report(path, store=store)
    state = tmp_path / "scan.state"
    for stop in (13, 27):
        with pytest.raises(Stop):
            archive.scan(path, store=store, state=state, progress=_stop_after(stop))
    assert state.stat().st_mode & 0o777 == 0o600
    report = archive.scan(path, store=store, state=state)
    assert report.resumed == 27
    found = report.to_json()
    del found["seconds"]
    assert found == whole
    again = archive.scan(path, store=store, state=state)  # all of it from the state
    assert again.resumed == COUNT
    assert {**again.to_json(), "seconds": 0} == {**whole, "seconds": 0}


def test_a_changed_message_is_classified_again(tmp_path: Path, corpus: list[Sample],
                                               store: Store) -> None:
    path = build("maildir", tmp_path, _messages(corpus))
    state = tmp_path / "scan.state"
    archive.scan(path, store=store, state=state)
    changed = sorted((path / "cur").iterdir())[0]
    changed.write_bytes(corpus[0].data + b"\r\nMore text.\r\n")  # plain now, and longer
    os.utime(changed, ns=(1, 1))
    report = archive.scan(path, store=store, state=state)
    assert report.resumed == COUNT - 1
    assert {**report.to_json(), "seconds": 0} == {**_report(path, store=store), "seconds": 0}


def test_a_state_of_another_archive_or_other_keys_is_refused(
    tmp_path: Path, corpus: list[Sample], people: People, store: Store
) -> None:
    first = build("mbox", tmp_path / "a", _messages(corpus))
    other = build("mbox", tmp_path / "b", _messages(corpus)[:5])
    state = tmp_path / "scan.state"
    archive.scan(first, store=store, state=state)
    with pytest.raises(archive.ArchiveError, match=r"not of .*delete .*scan\.state"):
        archive.scan(other, store=store, state=state)
    with pytest.raises(archive.ArchiveError, match="other keys or another store"):
        archive.scan(first, store=store, state=state, keys=[(people.ann.key, people.ann.cert)])
    with pytest.raises(archive.ArchiveError, match="other keys or another store"):
        archive.scan(first, state=state)


def test_the_command_refuses_another_archives_state_in_one_line(
    tmp_path: Path, corpus: list[Sample], capsys: pytest.CaptureFixture[str]
) -> None:
    first = build("mbox", tmp_path / "a", _messages(corpus))
    other = build("maildir", tmp_path / "b", _messages(corpus)[:5])
    state = tmp_path / "scan.state"
    data = tmp_path / "data"
    assert main(["--data-dir", str(data), "archive", "scan", str(first), "--state",
                 str(state)]) == 0
    capsys.readouterr()
    assert main(["--data-dir", str(data), "archive", "scan", str(other), "--state",
                 str(state)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "delete" in err and str(state) in err


@pytest.mark.parametrize("damage", [b"torn", b"garbage"])
def test_a_damaged_last_line_is_dropped_and_redone(
    tmp_path: Path, corpus: list[Sample], store: Store, damage: bytes
) -> None:
    path = build("maildir", tmp_path, _messages(corpus))
    whole = _report(path, store=store)
    state = tmp_path / "scan.state"
    archive.scan(path, store=store, state=state)
    data = state.read_bytes()
    last = data.rstrip(b"\n").rsplit(b"\n", 1)[1]
    assert json.loads(last)["t"] == "m"
    cut = data[:len(data) - len(last) - 1] + last[:len(last) // 2]
    state.write_bytes(cut if damage == b"torn" else cut + b"\n")
    report = archive.scan(path, store=store, state=state)
    assert report.resumed == COUNT - 1
    assert {**report.to_json(), "seconds": 0} == {**whole, "seconds": 0}
    assert archive.scan(path, store=store, state=state).resumed == COUNT


def test_a_damaged_line_before_the_last_is_refused(tmp_path: Path, corpus: list[Sample],
                                                   store: Store) -> None:
    path = build("eml", tmp_path, _messages(corpus)[:6])
    state = tmp_path / "scan.state"
    archive.scan(path, store=store, state=state)
    lines = state.read_bytes().splitlines(keepends=True)
    lines[2] = b'{"t": "m", "loc\n'
    state.write_bytes(b"".join(lines))
    with pytest.raises(archive.ArchiveError, match="damaged"):
        archive.scan(path, store=store, state=state)


# -- the real command, killed at random ------------------------------------------------------

# ``python -m smimekit.cli.main``, with each message taking 5 ms more to classify (40 small
# messages take a few ms: a kill would always come after the end).
SLOW_RUNNER = (
    "import runpy, time\n"
    "from smimekit.archive.classify import Classifier\n"
    "classify = Classifier.classify\n"
    "def slow(*args, **kwargs):\n"
    "    time.sleep(0.005)\n"
    "    return classify(*args, **kwargs)\n"
    "Classifier.classify = slow\n"
    "runpy.run_module('smimekit.cli.main', run_name='__main__', alter_sys=True)\n"
)


def _recorded(state: Path) -> int:
    return state.read_bytes().count(b'"t":"m"') if state.exists() else 0


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["mbox", "maildir"])
def test_the_command_killed_at_random_resumes_to_the_same_report(
    tmp_path: Path, kind: str, corpus: list[Sample], people: People
) -> None:
    seed = int(os.environ.get("SMIMEKIT_KILL_SEED", time.time_ns() % 10_000))
    rng = random.Random(seed)
    data = tmp_path / "data"
    with Store.open(None, data) as opened:
        fill_store(opened, people)
    path = build(kind, tmp_path, _messages(corpus))
    state = tmp_path / "scan.state"

    def command(*extra: str) -> list[str]:
        return [sys.executable, "-c", SLOW_RUNNER, "--data-dir", str(data), "archive", "scan",
                str(path), "--json", *extra]

    whole = subprocess.run(command(), capture_output=True, check=True, timeout=120)
    interrupted = 0
    for _ in range(3):
        done = _recorded(state)
        proc = subprocess.Popen(command("--state", str(state)), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        # From the first new line on, it is scanning: kill it within what is left to do.
        while proc.poll() is None and _recorded(state) == done:
            time.sleep(0.001)
        time.sleep(rng.uniform(0, 0.005 * (COUNT - done)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        interrupted += _recorded(state) < COUNT
    assert interrupted, f"seed {seed}: no kill came before the end"
    result = subprocess.run(command("--state", str(state)), capture_output=True, timeout=120,
                            check=False)
    assert result.returncode == 0, (seed, result.stderr)
    found, expected = json.loads(result.stdout), json.loads(whole.stdout)
    found["seconds"] = expected["seconds"] = 0
    assert found == expected, f"seed {seed}"
