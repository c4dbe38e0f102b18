"""A crash at any moment of a re-encryption loses nothing, and a re-run finishes the job.

Two ways in: a process that dies exactly at each step of the scheme (the library's fault
hook calls ``os._exit``), and the real command killed with SIGKILL at random moments.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from pki import message

import smimekit
from archive.corpus import KeyPair, People, build, digests
from smimekit import archive
from smimekit.archive import migrate
from smimekit.cms.algorithms import Cipher

CRASHED = 99
POINTS = [("maildir", "file:written", 3), ("maildir", "file:replaced", 3),
          ("eml", "file:written", 2), ("eml", "file:replaced", 4),
          ("mbox", "mbox:checkpoint", 2), ("mbox", "mbox:written", 1),
          ("mbox", "mbox:verified", 1), ("mbox", "mbox:linked", 1),
          ("mbox", "mbox:replaced", 1), ("mbox", "mbox:swapped", 1)]


def _messages(people: People, count: int, seed: int) -> list[bytes]:
    """Mail to Ann (old and current keys) and Ben, of mixed sizes, with some plain mail."""
    rng = random.Random(seed)
    out = []
    recipients = [[people.ann.cert], [people.ann_old.cert], [people.ben.cert],
                  [people.ann.cert, people.ben.cert]]
    for n in range(count):
        body = (f"Message {n}.\r\n".encode()
                + b"".join(b"%06d lorem ipsum dolor sit amet\r\n" % i
                           for i in range(rng.randint(50, 1500))))
        text = message(body=body).replace(b"<t1@", f"<m{n}@".encode())
        if n % 6 == 5:
            out.append(text)
        else:
            cipher = rng.choice([Cipher.AES256_GCM, Cipher.AES128_CBC, Cipher.AES256_CBC])
            out.append(smimekit.encrypt(text, recipients[n % 4], cipher=cipher,
                                        check_recipients=False))
    return out


def _assert_finished(path: Path, keys: Sequence[KeyPair], people: People,
                     before: object) -> None:
    assert digests(path, keys) == before
    report = archive.scan(path, keys=[(people.ann_new.key, people.ann_new.cert)])
    encrypted = report.by_kind["encrypted"]
    assert report.by_cipher == {"aes256-gcm": encrypted}
    assert report.by_readability == {"now": encrypted}
    left = [p.name for p in path.parent.rglob("*")
            if p.name.endswith((archive.NEW_SUFFIX, archive.ORIG_SUFFIX, archive.JOURNAL_SUFFIX))]
    assert left == []


def _in_child(job: Callable[[], None]) -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            job()
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.parametrize(("kind", "point", "nth"), POINTS)
def test_a_crash_at_each_step_loses_nothing_and_a_rerun_finishes(
    tmp_path: Path, people: People, kind: str, point: str, nth: int
) -> None:
    keys = people.keys()
    path = build(kind, tmp_path, _messages(people, 8, seed=len(point)))
    before = digests(path, keys)
    target = people.ann_new.cert

    def crash_at_point() -> None:
        migrate._CHECKPOINT_SECONDS = 0.0  # a checkpoint after every message
        hits = []

        def fault(where: str) -> None:
            if where == point:
                hits.append(where)
                if len(hits) == nth:
                    os._exit(CRASHED)

        archive.reencrypt_archive(path, keys, lambda old: [target], _fault=fault)

    assert _in_child(crash_at_point) == CRASHED
    assert digests(path, keys) == before  # right after the crash: every message is there
    archive.reencrypt_archive(path, keys, lambda old: [target])
    _assert_finished(path, keys, people, before)


# -- the real command, killed at random -------------------------------------------------------

RUNNER = "import sys; from smimekit.cli.main import main; sys.exit(main(sys.argv[1:]))"


def _write_keys(people: People, where: Path) -> list[str]:
    args = []
    for name, person in (("ann", people.ann), ("ann-old", people.ann_old), ("ben", people.ben),
                         ("ann-new", people.ann_new)):
        (where / f"{name}.key").write_bytes(person.pem_key())
        args += ["--key", str(where / f"{name}.key")]
    (where / "ann-new.pem").write_bytes(
        people.ann_new.cert.public_bytes(serialization.Encoding.PEM))
    return [*args, "--to", str(where / "ann-new.pem")]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["maildir", "mbox", "eml"])
def test_killed_at_random_points_the_archive_loses_nothing(
    tmp_path: Path, people: People, kind: str
) -> None:
    seed = int(os.environ.get("SMIMEKIT_KILL_SEED", time.time_ns() % 10_000))
    rng = random.Random(seed)
    keys = people.keys()
    messages = _messages(people, 60, seed=7)
    key_args = _write_keys(people, tmp_path)
    data_dir = tmp_path / "data"

    def command(path: Path) -> list[str]:
        return [sys.executable, "-c", RUNNER, "--data-dir", str(data_dir), "archive",
                "reencrypt", str(path), *key_args]

    # How long a whole run takes here, on a copy, from the moment its journal appears.
    trial = build(kind, tmp_path / "trial", messages)
    journal = trial.with_name(trial.name + archive.JOURNAL_SUFFIX)
    proc = subprocess.Popen(command(trial), stderr=subprocess.PIPE)
    while proc.poll() is None and not journal.exists():
        time.sleep(0.002)
    started = time.monotonic()
    assert proc.wait(timeout=120) == 0, proc.stderr.read() if proc.stderr else ""
    work = max(0.05, time.monotonic() - started)
    shutil.rmtree(tmp_path / "trial")

    path = build(kind, tmp_path / "real", messages)
    journal = path.with_name(path.name + archive.JOURNAL_SUFFIX)
    before = digests(path, keys)
    to_do = sum(1 for n in range(len(messages)) if n % 6 != 5)
    for _ in range(5):
        # What is left of the work: an mbox starts over from its last checkpoint (none in
        # runs this short), a folder goes on after the messages its journal records.
        done = 0 if kind == "mbox" or not journal.exists() else \
            journal.read_text().count('"t":"done"')
        size = journal.stat().st_size if journal.exists() else 0
        proc = subprocess.Popen(command(path), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        # Every run starts by writing to the journal ("start", or "resume"): from then on
        # it is working.
        while proc.poll() is None and (not journal.exists() or journal.stat().st_size == size):
            time.sleep(0.002)
        time.sleep(rng.uniform(0, work * max(1, to_do - done) / to_do))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert digests(path, keys) == before, f"seed {seed}"
    result = subprocess.run(command(path), capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, (seed, result.stderr)
    _assert_finished(path, keys, people, before)
