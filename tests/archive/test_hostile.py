"""Hostile and broken archives: every message is reported, nothing crashes the run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from malformed import hostile
from malformed.cases import count_splits, der_of, pkcs7_mime

from archive.corpus import People, Sample, build, sample_name
from smimekit import archive
from smimekit.archive import Kind
from smimekit.cli.main import main
from smimekit.cms import limits


def test_a_truncated_mbox_reports_the_cut_message_as_malformed(
    tmp_path: Path, corpus: list[Sample]
) -> None:
    good = [s.data for s in corpus if s.kind != "malformed"]
    path = build("mbox", tmp_path, good)
    data = path.read_bytes()
    last = data.rindex(b"\nFrom ") + 1
    path.write_bytes(data[:last + (len(data) - last) // 2])  # cut inside the last message
    report = archive.scan(path)
    assert report.messages == len(good)
    assert len(report.malformed) == 1
    assert report.malformed[0][0].startswith(f"mbox:{len(good) - 1}@")


def test_garbage_files_are_reported_and_the_scan_goes_on(tmp_path: Path,
                                                         corpus: list[Sample]) -> None:
    root = tmp_path / "mail"
    root.mkdir()
    (root / "a-random.eml").write_bytes(os.urandom(5000))
    (root / "b-empty.eml").write_bytes(b"")
    (root / "c-nul.eml").write_bytes(b"\x00" * 1000 + b"\n\n" + b"\x00" * 10)
    (root / "d-no-colon.eml").write_bytes(b"this is not a header\r\n\r\nbody\r\n")
    (root / "e-absurd-length.eml").write_bytes(
        b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n"
        b"Content-Transfer-Encoding: binary\r\n\r\n"
        b"\x30\x84\x7f\xff\xff\xff\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x03\xa0\x80")
    (root / "f-length-of-8-octets.eml").write_bytes(
        b"Content-Type: application/pkcs7-mime\r\nContent-Transfer-Encoding: binary\r\n\r\n"
        b"\x30\x88\x00\x00\x00\x00\x00\x00\x00\x10")
    deep = b"".join(b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
                    for i in range(60))
    (root / "g-deep.eml").write_bytes(b"Subject: deep\r\n" + deep + b"x\r\n")  # unclosed
    closed = deep + b"x\r\n" + b"".join(b"--b%d--\r\n" % i for i in reversed(range(60)))
    (root / "i-deep-closed.eml").write_bytes(b"Subject: deep\r\n" + closed)
    (root / "h-good.eml").write_bytes(next(s.data for s in corpus if s.name == "gcm-rsa"))
    report = archive.scan(root)
    assert report.messages == 9
    assert report.by_kind["plain"] == 1  # nesting beyond 16 levels is not followed
    malformed = {loc.removeprefix("eml:") for loc, _ in report.malformed}
    assert malformed == {"a-random.eml", "b-empty.eml", "c-nul.eml", "d-no-colon.eml",
                         "e-absurd-length.eml", "f-length-of-8-octets.eml", "g-deep.eml"}
    assert report.by_kind["encrypted"] == 1
    # decrypt goes through the same archive without stopping either
    result = archive.decrypt_archive(root, tmp_path / "out", [])
    assert sum(result.counts.values()) == 9


def test_a_huge_header_line_is_malformed_and_quick(tmp_path: Path) -> None:
    root = tmp_path / "mail"
    root.mkdir()
    (root / "huge.eml").write_bytes(b"Subject: " + b"a" * (20 * 1024 * 1024) + b"\r\n\r\nx\r\n")
    (root / "no-break.eml").write_bytes(b"X" * (8 * 1024 * 1024))
    started = time.perf_counter()
    report = archive.scan(root)
    assert time.perf_counter() - started < 5
    assert report.by_kind == {"malformed": 2}
    assert all("header section" in why for _, why in report.malformed)


def test_an_mbox_of_noise_does_not_stop_the_scan(tmp_path: Path) -> None:
    box = tmp_path / "noise"
    box.write_bytes(b"From x\n\n" + os.urandom(200_000).replace(b"\n\nFrom ", b"") +
                    b"\n\nFrom y\nSubject: ok\n\nfine\n")
    report = archive.scan(box)
    assert report.by_kind["plain"] >= 1
    assert report.messages >= 2


def test_a_stream_encoded_ber_message_is_read(tmp_path: Path, people: People) -> None:
    if not shutil.which("openssl"):
        pytest.skip("openssl makes the indefinite-length message")
    from cryptography.hazmat.primitives import serialization

    (tmp_path / "ann.pem").write_bytes(people.ann.cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "in.txt").write_bytes(b"Content-Type: text/plain\r\n\r\nstreamed\r\n")
    made = subprocess.run(
        ["openssl", "cms", "-encrypt", "-stream", "-aes256", "-in", str(tmp_path / "in.txt"),
         "-subject", "ber", str(tmp_path / "ann.pem")],
        capture_output=True, check=True)
    data = b"Message-ID: <ber@example.org>\r\n" + made.stdout
    info = archive.Classifier(keys=[(people.ann.key, people.ann.cert)]).classify("x", data)
    assert info.kind is Kind.ENCRYPTED and info.envelope is not None
    assert info.envelope.cipher == "aes256-cbc"
    assert info.readability is archive.Readability.NOW
    assert sample_name(data) == "ber"


def test_a_maildir_message_over_the_size_cap_is_not_read(tmp_path: Path) -> None:
    root = tmp_path / "Maildir"
    build("maildir", tmp_path, [b"Subject: a\r\n\r\n" + b"x" * 4000, b"Subject: b\r\n\r\ny\r\n"])
    report = archive.scan(root, max_size=1000)
    assert report.by_kind == {"malformed": 1, "plain": 1}
    assert "larger than 1000" in report.malformed[0][1]


def _over_budget(corpus: list[Sample]) -> list[bytes]:
    """Messages of the corpus made hostile: over two budgets of smimekit.cms.limits."""
    real = der_of(next(s.data for s in corpus if s.name == "gcm-rsa"))
    decoy = der_of(next(s.data for s in corpus if s.name == "stranger"))
    cbc = der_of(next(s.data for s in corpus if s.name == "cbc-p256"))
    return [
        pkcs7_mime(hostile.many_recipient_infos(real, decoy, limits.MAX_RECIPIENT_INFOS),
                   "authEnveloped-data"),
        pkcs7_mime(hostile.segmented_ciphertext(cbc, limits.MAX_BER_SEGMENTS + 1),
                   "enveloped-data"),
    ]


@pytest.mark.parametrize("fmt", ["mbox", "eml"])
def test_a_message_over_a_parser_budget_is_counted_once_as_malformed(
        tmp_path: Path, corpus: list[Sample], people: People, fmt: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    good = next(s.data for s in corpus if s.name == "gcm-rsa")
    over = _over_budget(corpus)
    path = build(fmt, tmp_path, [good, *over])
    report = archive.scan(path)
    assert report.messages == 3
    # The scan reads only the recipients at the start of the DER, so the one over
    # MAX_BER_SEGMENTS is an encrypted message to it; decrypting it is refused below.
    assert report.by_kind == {"encrypted": 2, "malformed": 1}
    [(_, reason)] = report.malformed
    assert "MAX_RECIPIENT_INFOS" in reason
    # Nothing of the hostile message's 4,097 recipients reaches the recipient table.
    assert sum(r.messages for r in report.recipients) == 2
    # The CLI prints the same counts and exits 0: an archive with such mail is still scanned.
    assert main(["--data-dir", str(tmp_path / "data"), "archive", "scan", str(path),
                 "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["messages"] == 3 and len(printed["malformed"]) == 1
    # decrypt counts each message once too, and names the limit of each hostile one.
    result = archive.decrypt_archive(path, tmp_path / "out", people.keys())
    assert sum(result.counts.values()) == 3
    assert result.counts["decrypted"] == 1
    reasons = sorted(why for _, _, why in result.problems)
    assert any("MAX_BER_SEGMENTS" in why for why in reasons), reasons
    assert any("MAX_RECIPIENT_INFOS" in why for why in reasons), reasons


def test_a_multipart_of_many_parts_is_split_only_as_far_as_it_is_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from smimekit.archive import envelope

    sizes = count_splits(monkeypatch, envelope)
    many = (b"From: a@example.org\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n"
            + b"--x\r\n\r\n" * 3000 + b"--x--\r\n")
    report = archive.scan(build("eml", tmp_path, [many]))
    assert report.messages == 1 and report.by_kind == {"plain": 1}
    assert sizes == [1000]
