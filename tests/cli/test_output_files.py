"""``-o PATH`` through the real command line: a file or new path is replaced atomically, a
symbolic link is followed, a FIFO or character device is written through, anything else is
refused with one clear line; nothing is left behind when the write fails (issue 8, 2)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from backends import Backend
from pki import Identity, message

from smimekit.cli.main import main

PASS = "correct horse battery staple"


@pytest.fixture
def files(tmp_path: Path, alice: Identity) -> Path:
    (tmp_path / "alice.pem").write_bytes(alice.pem_cert())
    (tmp_path / "alice.key").write_bytes(alice.pem_key())
    (tmp_path / "msg.eml").write_bytes(message())
    return tmp_path


def sign(files: Path, output: Path | str) -> list[str]:
    return ["sign", "--key", str(files / "alice.key"), "--cert", str(files / "alice.pem"),
            str(files / "msg.eml"), "-o", str(output)]


def test_o_to_fifo_writes_through(files: Path) -> None:
    fifo = files / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    assert main(sign(files, fifo)) == 0
    reader.join(10)
    _release(fifo, reader)
    assert len(got) == 1 and got[0].startswith(b"From: alice@example.org")
    assert b"multipart/signed" in got[0]
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert not [p for p in files.iterdir() if p.name.startswith(".")]


def test_o_through_symlink_replaces_the_target_and_keeps_the_link(files: Path) -> None:
    (files / "mail").mkdir()
    target = files / "mail" / "signed.eml"
    target.write_bytes(b"old")
    os.chmod(target, 0o644)
    link = files / "signed.eml"
    link.symlink_to(target)
    assert main(sign(files, link)) == 0
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert b"multipart/signed" in target.read_bytes()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600  # output is 0600, never wider
    assert sorted(p.name for p in (files / "mail").iterdir()) == ["signed.eml"]


def test_o_to_a_character_device_writes_through(files: Path, null_device: Path) -> None:
    # never "-o /dev/null" itself: run against the old code, that replaced the machine's
    # /dev/null with a regular file (it did, once, while this test was written)
    before = os.stat(null_device)
    assert main(sign(files, null_device)) == 0
    link = files / "null"
    link.symlink_to(null_device)
    assert main(sign(files, link)) == 0
    after = os.stat(null_device)
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev
    assert stat.S_IMODE(after.st_mode) == stat.S_IMODE(before.st_mode)
    assert after.st_ino == before.st_ino
    assert link.is_symlink()


def test_o_to_a_directory_is_refused(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (files / "out").mkdir()
    assert main(sign(files, files / "out")) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "it is a directory; only a regular file, a FIFO or a character device" in err
    assert list((files / "out").iterdir()) == []


def test_o_into_a_missing_directory_names_it(files: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(sign(files, files / "nowhere" / "signed.eml")) == 1
    assert f"no such directory: {files / 'nowhere'}" in capsys.readouterr().err
    assert not (files / "nowhere").exists()


def _unprivileged() -> list[str]:
    """A prefix that runs a command without the power to ignore file modes. Tests run as
    root, which writes into a 0555 folder regardless; dropping CAP_DAC_OVERRIDE (and
    CAP_DAC_READ_SEARCH) from the bounding set makes root meet the folder's mode as any
    user would, so the failure seen is the kernel's real EACCES."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: a read-only folder cannot stop root")
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--"]


def test_o_into_a_read_only_directory_fails_clearly_and_leaves_nothing(files: Path) -> None:
    locked = files / "locked"
    locked.mkdir()
    (locked / "signed.eml").write_bytes(b"the old copy")
    os.chmod(locked, 0o555)
    try:
        for output in (locked / "signed.eml", locked / "new.eml"):
            result = subprocess.run(
                [*_unprivileged(), sys.executable, "-m", "smimekit.cli.main",
                 *sign(files, output)], capture_output=True, timeout=60, check=False)
            assert result.returncode == 1, result.stderr
            assert result.stderr == f"smimekit: error: cannot write {output}: Permission" \
                                    " denied\n".encode()
            assert result.stdout == b""
            assert sorted(p.name for p in locked.iterdir()) == ["signed.eml"]
            assert (locked / "signed.eml").read_bytes() == b"the old copy"
    finally:
        os.chmod(locked, 0o755)


def test_export_root_into_a_missing_folder_says_so_and_keeps_the_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SMIMEKIT_PASSPHRASE", PASS)
    monkeypatch.chdir(tmp_path)
    backend = Backend("sqlite", None, tmp_path / "data")
    assert main([*backend.cli_args(), "ca", "init", "--org", "Example Ltd", "--base-url",
                 "http://pki.example.com", "--key-type", "p256"]) == 0
    capsys.readouterr()
    assert main([*backend.cli_args(), "ca", "export-root", "-o", "usb/root.p12",
                 "--remove"]) == 1
    err = capsys.readouterr().err
    assert err == ("smimekit: error: cannot export the root key to usb/root.p12: no such"
                   " directory: usb; the root key is kept here\n")
    assert (tmp_path / "data" / "ca" / "root.p12").is_file()
    assert not (tmp_path / "usb").exists()


def test_export_root_refuses_a_fifo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SMIMEKIT_PASSPHRASE", PASS)
    backend = Backend("sqlite", None, tmp_path / "data")
    assert main([*backend.cli_args(), "ca", "init", "--org", "Example Ltd", "--base-url",
                 "http://pki.example.com", "--key-type", "p256"]) == 0
    os.mkfifo(tmp_path / "pipe")
    assert main([*backend.cli_args(), "ca", "export-root", "-o", str(tmp_path / "pipe"),
                 "--remove"]) == 1
    assert "not a regular file; the root key is kept here" in capsys.readouterr().err
    assert (tmp_path / "data" / "ca" / "root.p12").is_file()


def test_ca_chain_o_into_a_missing_folder_is_one_clear_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SMIMEKIT_PASSPHRASE", PASS)
    backend = Backend("sqlite", None, tmp_path / "data")
    assert main([*backend.cli_args(), "ca", "init", "--org", "Example Ltd", "--base-url",
                 "http://pki.example.com", "--key-type", "p256"]) == 0
    capsys.readouterr()
    out = tmp_path / "no" / "ca.pem"
    assert main([*backend.cli_args(), "ca", "chain", "-o", str(out)]) == 1
    assert capsys.readouterr().err == (f"smimekit: error: cannot write {out}: no such"
                                       f" directory: {out.parent}\n")
    assert main([*backend.cli_args(), "ca", "chain", "-o", str(tmp_path / "ca.pem")]) == 0
    assert stat.S_IMODE((tmp_path / "ca.pem").stat().st_mode) == 0o644


def _release(fifo: Path, reader: threading.Thread) -> None:
    """Unblock a reader still waiting for a writer (the FIFO was never written)."""
    if reader.is_alive() and stat.S_ISFIFO(fifo.lstat().st_mode):
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(10)


def test_output_folders_are_created_0700(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SMIMEKIT_PASSPHRASE", PASS)
    backend = Backend("sqlite", None, tmp_path / "data")
    old = os.umask(0o022)
    try:
        assert main([*backend.cli_args(), "ca", "init", "--org", "Example Ltd", "--base-url",
                     "http://pki.example.com", "--key-type", "p256"]) == 0
        out = tmp_path / "people" / "alice"
        assert main([*backend.cli_args(), "ca", "issue", "--email", "alice@example.com",
                     "--key-type", "p256", "--out", str(out)]) == 0
        history = tmp_path / "restore" / "alice"
        assert main([*backend.cli_args(), "ca", "history", "--email", "alice@example.com",
                     "--out", str(history)]) == 0
    finally:
        os.umask(old)
    for folder in (out, out.parent, history, history.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    assert (out / "alice@example.com.encrypt.p12").is_file()


def test_ca_issue_into_an_unwritable_folder_issues_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMIMEKIT_PASSPHRASE", PASS)
    backend = Backend("sqlite", None, tmp_path / "data")
    assert main([*backend.cli_args(), "ca", "init", "--org", "Example Ltd", "--base-url",
                 "http://pki.example.com", "--key-type", "p256"]) == 0
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o555)
    issue = [sys.executable, "-m", "smimekit.cli.main", *backend.cli_args(), "ca", "issue",
             "--email", "alice@example.com", "--key-type", "p256"]
    try:
        for out, message in ((locked / "alice", f"cannot create the folder {locked}/alice:"
                                                " Permission denied"),
                             (locked, f"cannot write into {locked}: permission denied")):
            result = subprocess.run([*_unprivileged(), *issue, "--out", str(out)],
                                    capture_output=True, timeout=60, check=False)
            assert result.returncode == 1, result.stderr
            assert result.stderr.decode() == f"smimekit: error: {message}\n"
            assert list(locked.iterdir()) == []
    finally:
        os.chmod(locked, 0o755)
    # nothing was issued: the address takes a certificate without --replace
    assert main([*backend.cli_args(), "ca", "issue", "--email", "alice@example.com",
                 "--key-type", "p256", "--out", str(tmp_path / "alice")]) == 0
