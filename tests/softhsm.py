"""SoftHSM2 tokens for the tests: a token directory of the test's own, tokens initialised with
``softhsm2-util``, and the module's path (Debian's ``softhsm2`` package; ``make peers``)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

_CANDIDATES = ("/usr/lib/softhsm/libsofthsm2.so",
               "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so")


def module_path() -> str | None:
    """Where the SoftHSM2 PKCS#11 module is, or None."""
    candidates = list(_CANDIDATES)
    if shutil.which("dpkg"):
        listing = subprocess.run(["dpkg", "-L", "softhsm2"], capture_output=True, text=True,
                                 check=False)
        candidates += [line for line in listing.stdout.splitlines()
                       if line.endswith("/libsofthsm2.so")]
    return next((c for c in candidates if os.path.isfile(c)), None)


def require_module() -> str:
    """The module's path; skips the test when SoftHSM2 is not installed."""
    path = module_path()
    if path is None or shutil.which("softhsm2-util") is None:
        pytest.skip("softhsm2 is not installed (apt-get install softhsm2, or `make peers`)")
    return path


def init_tokens(home: Path, labels: Iterable[str], *, pin: str, so_pin: str) -> dict[str, str]:
    """A token directory under ``home`` holding one fresh token per label; returns the
    environment (``SOFTHSM2_CONF``) that points SoftHSM2 at it."""
    (home / "tokens").mkdir(parents=True, exist_ok=True)
    conf = home / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {home / 'tokens'}\n"
                    "objectstore.backend = file\nlog.level = ERROR\n")
    env = {"SOFTHSM2_CONF": str(conf)}
    for label in labels:
        subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", label, "--pin",
                        pin, "--so-pin", so_pin], check=True, capture_output=True,
                       env={**os.environ, **env})
    return env


@contextmanager
def tokens_in_process(home: Path, labels: list[str], *, pin: str,
                      so_pin: str) -> Iterator[str]:
    """:func:`init_tokens`, with this process's ``SOFTHSM2_CONF`` set to it while the
    context lasts; yields the module's path. SoftHSM2 reads its configuration once per
    process, so a module loaded earlier with another token directory is reinitialised."""
    from smimekit.keys.pkcs11 import load_module, reinitialise

    path = require_module()
    env = init_tokens(home, labels, pin=pin, so_pin=so_pin)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOFTHSM2_CONF", env["SOFTHSM2_CONF"])
        lib = load_module(path)  # as smimekit loads it: with OS locking
        if labels[0] not in {t.label for t in lib.get_tokens()}:
            reinitialise(path)
        yield path
