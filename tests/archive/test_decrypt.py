"""decrypt_archive: plaintext of exactly the readable messages, a manifest, resumable."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest

import smimekit
from archive.corpus import People, Sample, build, sample_name
from smimekit import archive
from smimekit.archive import ArchiveError, RecipientId

OPENED = {"gcm-rsa", "cbc-p256", "gcm-old", "both", "sign-then-encrypt", "encrypt-then-sign",
          "partial", "weak-rsa"}
LEGACY = {"des3"}
UNSUPPORTED = {"rc2"}  # RC2-40: smimekit reads 128-bit RC2 only


def _manifest(out: Path) -> list[dict[str, object]]:
    lines = (out / archive.MANIFEST).read_text().splitlines()
    return [json.loads(line) for line in lines[1:]]


@pytest.mark.parametrize("kind", ["mbox", "maildir", "eml"])
def test_exports_exactly_the_readable_messages_with_their_plaintext(
    tmp_path: Path, kind: str, corpus: list[Sample], people: People
) -> None:
    path = build(kind, tmp_path, [s.data for s in corpus])
    out = tmp_path / "export"
    report = archive.decrypt_archive(path, out, people.keys(), allow_legacy=True)
    names = {loc: sample_name(data) for loc, data, _ in archive.iter_messages(path)}
    present = {s.name for s in corpus}
    entries = _manifest(out)
    decrypted = {names[str(e["location"])]: e for e in entries if e["status"] == "decrypted"}
    assert set(decrypted) == (OPENED | LEGACY) & present
    assert report.counts["decrypted"] == len(decrypted)
    assert report.counts["no-key"] == 1  # the stranger
    assert report.counts["failed"] == len(UNSUPPORTED & present)
    assert report.counts["malformed"] == 2
    assert report.counts["not-encrypted"] == 2
    by_name = {s.name: s for s in corpus}
    for name, entry in decrypted.items():
        written = (out / str(entry["output"])).read_bytes()
        assert hashlib.sha256(written).hexdigest() == entry["sha256"]
        expected = smimekit.decrypt(by_name[name].data, None, keys=people.keys(),
                                    allow_legacy=True).content
        assert written == expected, name
    assert (out / str(decrypted["partial"]["output"])).stat().st_mode & 0o777 == 0o600
    rows = list(csv.DictReader((out / archive.MANIFEST_CSV).open()))
    assert len(rows) == len(corpus)
    assert {r["status"] for r in rows} - {"failed"} == {
        "decrypted", "no-key", "malformed", "not-encrypted"}


def test_legacy_ciphers_need_permission(tmp_path: Path, corpus: list[Sample],
                                        people: People) -> None:
    legacy = [s.data for s in corpus if s.name in LEGACY | UNSUPPORTED]
    if not legacy:
        pytest.skip("openssl is needed for the 3DES message")
    path = build("eml", tmp_path, legacy)
    report = archive.decrypt_archive(path, tmp_path / "out", people.keys())
    assert report.counts["failed"] == len(legacy)
    assert all("legacy" in why for _, _, why in report.problems)


def test_a_rerun_skips_what_is_done_and_retries_with_more_keys(
    tmp_path: Path, corpus: list[Sample], people: People
) -> None:
    path = build("mbox", tmp_path, [s.data for s in corpus])
    out = tmp_path / "export"
    first = archive.decrypt_archive(path, out, [(people.ann.key, people.ann.cert)])
    assert first.counts["no-key"] >= 3
    # A crash tore the last manifest line: it is cut off and that message done again.
    manifest = out / archive.MANIFEST
    manifest.write_bytes(manifest.read_bytes() + b'{"location": "mbox:1@')
    second = archive.decrypt_archive(path, out, people.keys(), allow_legacy=True)
    assert second.resumed == first.counts["decrypted"] + first.counts["not-encrypted"] \
        + first.counts["malformed"]
    assert second.counts["decrypted"] == first.counts["no-key"] + first.counts["failed"] - 1 \
        - len(UNSUPPORTED & {s.name for s in corpus})
    rows = list(csv.DictReader((out / archive.MANIFEST_CSV).open()))
    assert sum(r["status"] == "decrypted" for r in rows) == len(
        (OPENED | LEGACY) & {s.name for s in corpus})
    # An exported file that is gone (a rename lost in a power cut) is written again.
    gone = next(r for r in rows if r["status"] == "decrypted")
    (out / gone["output"]).unlink()
    third = archive.decrypt_archive(path, out, people.keys(), allow_legacy=True)
    assert third.counts["decrypted"] == 1
    assert hashlib.sha256((out / gone["output"]).read_bytes()).hexdigest() == gone["sha256"]


def test_refuses_a_folder_that_holds_something_else(tmp_path: Path, corpus: list[Sample],
                                                    people: People) -> None:
    path = build("eml", tmp_path, [corpus[0].data])
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(ArchiveError, match="not empty"):
        archive.decrypt_archive(path, busy, people.keys())
    other = build("mbox", tmp_path, [corpus[0].data])
    archive.decrypt_archive(path, tmp_path / "out", people.keys())
    with pytest.raises(ArchiveError, match="holds an export of"):
        archive.decrypt_archive(other, tmp_path / "out", people.keys())


def test_a_key_source_supplies_keys_per_message(tmp_path: Path, corpus: list[Sample],
                                                people: People) -> None:
    """Escrow plugs in as a KeySource: asked with the recipients of each message."""
    path = build("eml", tmp_path, [s.data for s in corpus if s.name == "gcm-old"])
    asked: list[list[RecipientId]] = []

    def escrow(recipients: list[RecipientId]) -> list[archive.KeyPair]:
        asked.append(list(recipients))
        hit = any(r.names(people.ann_old.cert) for r in recipients)
        return [(people.ann_old.key, people.ann_old.cert)] if hit else []

    report = archive.decrypt_archive(path, tmp_path / "out", [], key_source=escrow)
    assert report.counts["decrypted"] == 1
    assert asked and asked[0][0].names(people.ann_old.cert)
