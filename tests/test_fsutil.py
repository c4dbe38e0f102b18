"""fsutil: where a user's output goes (files, links, devices, FIFOs) and private folders."""

from __future__ import annotations

import os
import socket
import stat
import threading
from pathlib import Path

import pytest

from smimekit.fsutil import private_dir, write_output_file


def test_private_dir_creates_every_missing_folder_0700_whatever_the_umask(
        tmp_path: Path) -> None:
    (tmp_path / "kept").mkdir(mode=0o755)
    os.chmod(tmp_path / "kept", 0o755)
    old = os.umask(0)
    try:
        private_dir(tmp_path / "kept" / "a" / "b")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "kept" / "a").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "kept" / "a" / "b").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "kept").stat().st_mode) == 0o755


def test_private_dir_refuses_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(NotADirectoryError):
        private_dir(tmp_path / "f")


def test_new_file_is_created_with_the_mode(tmp_path: Path) -> None:
    write_output_file(tmp_path / "new", b"secret")
    assert (tmp_path / "new").read_bytes() == b"secret"
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["new"]


def test_replaced_file_is_a_new_inode_and_never_wider(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.write_bytes(b"old")
    os.chmod(target, 0o640)
    before = target.stat().st_ino
    write_output_file(target, b"new", mode=0o644)
    assert target.read_bytes() == b"new"
    assert target.stat().st_ino != before  # renamed over, not rewritten in place
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # 0644 & 0640
    write_output_file(target, b"plain", mode=0o600)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_symlink_is_followed_and_kept(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "out.eml"
    target.write_bytes(b"old")
    link = tmp_path / "link.eml"
    link.symlink_to(target)
    write_output_file(link, b"new")
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in (tmp_path / "real").iterdir()) == ["out.eml"]


def test_dangling_symlink_creates_its_target(tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "later")
    write_output_file(link, b"data")
    assert link.is_symlink() and (tmp_path / "later").read_bytes() == b"data"


def test_fifo_is_written_through(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    write_output_file(fifo, b"x" * 300_000)  # larger than a pipe buffer
    reader.join(10)
    _release(fifo, reader)
    assert got == [b"x" * 300_000]
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


def test_char_device_through_a_symlink_is_written_not_replaced(tmp_path: Path,
                                                               null_device: Path) -> None:
    link = tmp_path / "null"
    link.symlink_to(null_device)
    before = os.stat(null_device)
    write_output_file(link, b"plaintext")
    after = os.stat(null_device)
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev
    assert after.st_ino == before.st_ino
    assert stat.S_IMODE(after.st_mode) == stat.S_IMODE(before.st_mode)
    assert link.is_symlink()


def test_directory_socket_are_refused_with_what_they_are(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    with pytest.raises(OSError, match="it is a directory"):
        write_output_file(tmp_path / "dir", b"x")
    sock_path = tmp_path / "s"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))
        with pytest.raises(OSError, match="it is a socket"):
            write_output_file(sock_path, b"x")
        assert stat.S_ISSOCK(sock_path.lstat().st_mode)


def test_missing_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no such directory: .*usb"):
        write_output_file(tmp_path / "usb" / "root.p12", b"x")
    assert not (tmp_path / "usb").exists()


def _release(fifo: Path, reader: threading.Thread) -> None:
    """Unblock a reader still waiting for a writer (the FIFO was never written)."""
    if reader.is_alive() and stat.S_ISFIFO(fifo.lstat().st_mode):
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(10)
