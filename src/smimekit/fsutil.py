"""Files written so that a crash never leaves half of one: temp file, fsync, rename."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write", "fsync_dir", "private_dir"]


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) if missing, mode 0700; return it."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def atomic_write(path: Path | str, data: bytes, *, mode: int = 0o600,
                 sync_dir: bool = True) -> None:
    """Write ``data`` to ``path`` atomically with ``mode``; the old file stays until the rename.

    The temporary file lives in the same directory (so the rename is atomic), is fsynced before
    the rename, and is removed if anything fails. With ``sync_dir`` the directory is fsynced
    afterwards so the rename itself survives a power cut (callers that check for the file on
    resume may skip that).

    Raises:
        OSError: the file cannot be written.
    """
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if sync_dir:
        fsync_dir(directory)


def fsync_dir(directory: Path) -> None:
    """Make the entries of ``directory`` durable (best effort: not every filesystem can)."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
