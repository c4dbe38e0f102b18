"""Which data directory a run uses: explicit, else ./smimekit-data if present, else per user."""

from __future__ import annotations

from pathlib import Path

import pytest

from smimekit.cli.common import resolve_data_dir
from smimekit.cli.main import main


@pytest.fixture
def place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A current directory and a home of our own, no data-dir variables set."""
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.delenv("SMIMEKIT_DATA_DIR", raising=False)
    monkeypatch.delenv("SMIMEKIT_DATABASE_URL", raising=False)
    return tmp_path


def test_per_user_default_without_a_local_data_dir(place: Path) -> None:
    assert resolve_data_dir(None) == place / "home" / ".local" / "share" / "smimekit"


def test_xdg_data_home_when_absolute(place: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(place / "xdg"))
    assert resolve_data_dir(None) == place / "xdg" / "smimekit"
    # a relative XDG_DATA_HOME is invalid (XDG Base Directory specification): ignored
    monkeypatch.setenv("XDG_DATA_HOME", "relative/xdg")
    assert resolve_data_dir(None) == place / "home" / ".local" / "share" / "smimekit"


def test_local_smimekit_data_wins_over_the_per_user_default(place: Path) -> None:
    (place / "work" / "smimekit-data").mkdir()
    assert resolve_data_dir(None) == Path("smimekit-data")


def test_explicit_wins_over_everything(place: Path) -> None:
    (place / "work" / "smimekit-data").mkdir()
    assert resolve_data_dir(str(place / "mine")) == place / "mine"


def _anchor_files(data_dir: Path) -> list[str]:
    return sorted(p.name for p in (data_dir / "trust").glob("*.pem"))


def test_cli_uses_the_rule(place: Path, monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str], pki: object) -> None:
    from cryptography.hazmat.primitives import serialization

    root = place / "root.pem"
    root.write_bytes(pki.root.public_bytes(serialization.Encoding.PEM))  # type: ignore[attr-defined]
    user_dir = place / "home" / ".local" / "share" / "smimekit"

    # nothing here: the per-user directory (created by a write, 0700)
    assert main(["trust", "add", str(root)]) == 0
    assert len(_anchor_files(user_dir)) == 1
    assert not (place / "work" / "smimekit-data").exists()

    # a ./smimekit-data in the current directory is used instead
    (place / "work" / "smimekit-data").mkdir()
    capsys.readouterr()
    assert main(["trust", "list"]) == 0
    assert "no trust anchors" in capsys.readouterr().out

    # SMIMEKIT_DATA_DIR (and --data-dir) win over both
    monkeypatch.setenv("SMIMEKIT_DATA_DIR", str(user_dir))
    assert main(["trust", "list"]) == 0
    assert _anchor_files(user_dir)[0][:16] in capsys.readouterr().out
    monkeypatch.delenv("SMIMEKIT_DATA_DIR")
    assert main(["--data-dir", str(user_dir), "log", "verify"]) == 1  # no store: not created
    assert not (user_dir / "smimekit.db").exists()


def test_read_command_in_a_fresh_account_creates_nothing(
        place: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trust", "list"]) == 1
    err = capsys.readouterr().err
    assert ".local/share/smimekit does not exist" in err and err.count("\n") == 1
    assert not (place / "home" / ".local").exists()
