"""Files written so that a crash never leaves half of one: temp file, fsync, rename."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

__all__ = ["atomic_write", "fsync_dir", "private_dir", "write_output_file"]


def private_dir(path: Path) -> Path:
    """Create ``path`` and each missing parent with mode 0700 (whatever the umask); an
    existing directory is left as it is. Returns ``path``.

    Raises:
        OSError: a directory cannot be created, or ``path`` is not a directory.
    """
    missing: list[Path] = []
    current = path
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            continue  # made meanwhile by someone else: theirs, left as it is
        os.chmod(directory, 0o700)  # mkdir's mode is masked by the umask
    if not path.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(path))
    return path


_REFUSED = {
    stat.S_IFDIR: "a directory",
    stat.S_IFSOCK: "a socket",
    stat.S_IFBLK: "a block device",
}


def write_output_file(path: Path | str, data: bytes, *, mode: int = 0o600) -> None:
    """Write ``data`` where a user asked for it (``-o PATH``), the way they expect.

    - a new path, or a regular file: replaced atomically (:func:`atomic_write`) with
      ``mode``; an existing file keeps its owner, and its mode where that is narrower;
    - a symbolic link is followed: its target is replaced atomically and the link stays;
    - a character device (``/dev/null``, a terminal) or a FIFO is opened and written
      through, never replaced (a FIFO waits for its reader, like a shell redirection);
    - anything else (a directory, a socket, a block device) is refused.

    Raises:
        OSError: refused, the directory does not exist, or the file cannot be written
            (``strerror`` says which, in words fit for one line on stderr).
    """
    try:
        st: os.stat_result | None = os.stat(path)  # follows symbolic links
    except FileNotFoundError:
        st = None  # a new file, or a link to one that does not exist yet
    if st is not None and (stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode)):
        _write_through(path, data)
        return
    if st is not None and not stat.S_ISREG(st.st_mode):
        kind = _REFUSED.get(stat.S_IFMT(st.st_mode), "not a regular file")
        raise OSError(errno.EINVAL, f"it is {kind}; only a regular file, a FIFO or a"
                                    " character device can be written", str(path))
    target = Path(os.path.realpath(path))
    if not target.parent.is_dir():
        raise FileNotFoundError(errno.ENOENT, f"no such directory: {Path(path).parent}",
                                str(path))
    if st is None:
        atomic_write(target, data, mode=mode)
        return
    atomic_write(target, data, mode=mode & stat.S_IMODE(st.st_mode),
                 owner=(st.st_uid, st.st_gid))


def _write_through(path: Path | str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_NOCTTY)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def atomic_write(path: Path | str, data: bytes, *, mode: int = 0o600,
                 sync_dir: bool = True, owner: tuple[int, int] | None = None) -> None:
    """Write ``data`` to ``path`` atomically with ``mode``; the old file stays until the rename.

    The temporary file lives in the same directory (so the rename is atomic), is fsynced before
    the rename, and is removed if anything fails. With ``sync_dir`` the directory is fsynced
    afterwards so the rename itself survives a power cut (callers that check for the file on
    resume may skip that). ``owner`` (uid, gid) is given to the file when we may (root
    replacing someone's file leaves it theirs).

    Raises:
        OSError: the file cannot be written.
    """
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            if owner is not None and os.geteuid() == 0:
                os.fchown(fh.fileno(), *owner)
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
