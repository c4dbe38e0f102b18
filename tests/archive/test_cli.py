"""``smimekit archive scan | decrypt | reencrypt``: tables, JSON, exit codes, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from archive.corpus import People, Sample, build, fill_store
from smimekit import archive
from smimekit.cli.main import main
from smimekit.store import Store


@pytest.fixture
def files(tmp_path: Path, people: People) -> Path:
    for name, person in (("ann", people.ann), ("ann-old", people.ann_old), ("ben", people.ben),
                         ("ann-new", people.ann_new)):
        (tmp_path / f"{name}.key").write_bytes(person.pem_key())
        (tmp_path / f"{name}.pem").write_bytes(
            person.cert.public_bytes(serialization.Encoding.PEM))
    return tmp_path


def _run(data: Path, *args: object) -> int:
    return main(["--data-dir", str(data), "archive", *map(str, args)])


def test_scan_prints_the_tables(tmp_path: Path, corpus: list[Sample],
                                capsys: pytest.CaptureFixture[str]) -> None:
    path = build("mbox", tmp_path, [s.data for s in corpus])
    assert _run(tmp_path / "data", "scan", path) == 0
    out = capsys.readouterr().out
    for text in ("encrypted, readable now", "readable only through escrow", "unreadable",
                 "aes256-gcm", "cbc-no-integrity", "malformed", "no store in the data"):
        assert text in out, text
    assert not (tmp_path / "data" / "smimekit.db").exists()  # scanning creates no store


def test_scan_json_uses_the_store_and_the_keys(tmp_path: Path, corpus: list[Sample],
                                               people: People, files: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    with Store.open(None, data) as store:
        fill_store(store, people)
    path = build("maildir", tmp_path, [s.data for s in corpus])
    assert _run(data, "scan", path, "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["by_readability"]["escrow"] == 1
    assert report["format"] == "maildir"
    # With the old key given, the escrow-only message is readable now.
    assert _run(data, "scan", path, "--json", "--key", files / "ann-old.key") == 0
    report = json.loads(capsys.readouterr().out)
    assert "escrow" not in report["by_readability"]


def test_decrypt_writes_the_export_and_says_so(tmp_path: Path, corpus: list[Sample],
                                               files: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = build("eml", tmp_path, [s.data for s in corpus if s.name in ("gcm-rsa", "plain",
                                                                        "stranger")])
    out = tmp_path / "export"
    assert _run(tmp_path / "data", "decrypt", path, "--out", out, "--key",
                files / "ann.key") == 0
    err = capsys.readouterr().err
    assert "decrypted 1, not encrypted 1, no key 1" in err
    assert (out / archive.MANIFEST_CSV).exists()
    assert len(list(out.glob("msg-*.eml"))) == 1


def test_decrypt_fails_with_one_line_when_a_message_does_not_open(
    tmp_path: Path, corpus: list[Sample], files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    legacy = [s.data for s in corpus if s.name == "des3"]
    if not legacy:
        pytest.skip("openssl is needed for the 3DES message")
    path = build("eml", tmp_path, legacy)
    assert _run(tmp_path / "data", "decrypt", path, "--out", tmp_path / "o", "--key",
                files / "ann.key") == 1
    err = capsys.readouterr().err
    assert "smimekit: error: decrypted 0" in err and "failed 1" in err
    assert "Traceback" not in err
    assert _run(tmp_path / "data", "decrypt", path, "--out", tmp_path / "o", "--key",
                files / "ann.key", "--allow-legacy") == 0


def test_reencrypt_with_to_and_dry_run(tmp_path: Path, corpus: list[Sample], files: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = build("mbox", tmp_path, [s.data for s in corpus if s.name in ("gcm-rsa", "plain",
                                                                         "cbc-p256")])
    before = path.read_bytes()
    keys = ["--key", files / "ann.key", "--key", files / "ben.key", "--key",
            files / "ann-new.key"]
    assert _run(tmp_path / "data", "reencrypt", path, *keys, "--to", files / "ann-new.pem",
                "--dry-run") == 0
    assert "would re-encrypt 2" in capsys.readouterr().err
    assert path.read_bytes() == before
    assert _run(tmp_path / "data", "reencrypt", path, *keys, "--to",
                files / "ann-new.pem") == 0
    assert "re-encrypted 2, already current 0, left unchanged 1" in capsys.readouterr().err
    assert archive.scan(path).by_cipher == {"aes256-gcm": 2}


def test_reencrypt_uses_the_store_for_the_new_certificates(
    tmp_path: Path, corpus: list[Sample], people: People, files: Path,
    capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    with Store.open(None, data) as store:
        fill_store(store, people, ann_current=people.ann_new)
    path = build("eml", tmp_path, [s.data for s in corpus if s.name in ("gcm-old", "gcm-rsa")])
    assert _run(data, "reencrypt", path, "--key", files / "ann-old.key", "--key",
                files / "ann.key", "--key", files / "ann-new.key") == 0
    assert "re-encrypted 2" in capsys.readouterr().err


def test_usage_and_operation_errors_have_their_exit_codes(
    tmp_path: Path, corpus: list[Sample], files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = build("eml", tmp_path, [corpus[0].data])
    assert _run(tmp_path / "data", "reencrypt", path, "--key", files / "ann.key") == 2
    assert "--to CERT" in capsys.readouterr().err
    assert _run(tmp_path / "data", "scan", tmp_path / "missing") == 2
    capsys.readouterr()
    (tmp_path / "bad.key").write_bytes(b"not a key")
    assert _run(tmp_path / "data", "scan", path, "--key", tmp_path / "bad.key") == 1
    err = capsys.readouterr().err
    assert err.startswith("smimekit: error:") and err.count("\n") == 1


def test_a_pkcs12_key_history_opens_mail_to_every_old_certificate(
    tmp_path: Path, corpus: list[Sample], people: People, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    from smimekit.ca.export import pkcs12_bytes

    monkeypatch.delenv("SMIMEKIT_PASSPHRASE", raising=False)
    (tmp_path / "ann.p12").write_bytes(pkcs12_bytes(
        people.ann.key, people.ann.cert, [], b"pw", friendly_name="Ann",
        extra=[(people.ann_old.key, people.ann_old.cert)], iterations=2048))
    (tmp_path / "pw").write_bytes(b"pw\n")
    path = build("maildir", tmp_path, [s.data for s in corpus if s.name in ("gcm-old",
                                                                          "gcm-rsa")])
    assert _run(tmp_path / "data", "scan", path, "--json", "--key", tmp_path / "ann.p12",
                "--passphrase-file", tmp_path / "pw") == 0
    assert json.loads(capsys.readouterr().out)["by_readability"] == {"now": 2}
    assert _run(tmp_path / "data", "decrypt", path, "--out", tmp_path / "out", "--key",
                tmp_path / "ann.p12", "--passphrase-file", tmp_path / "pw") == 0
    assert "decrypted 2" in capsys.readouterr().err


def test_an_unwritable_export_folder_is_one_line(tmp_path: Path, corpus: list[Sample],
                                                 files: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = build("eml", tmp_path, [corpus[2].data])
    (tmp_path / "file").write_text("x")
    assert _run(tmp_path / "data", "decrypt", path, "--out", tmp_path / "file" / "out",
                "--key", files / "ann.key") == 1
    err = capsys.readouterr().err
    assert err.startswith("smimekit: error:") and err.count("\n") == 1
