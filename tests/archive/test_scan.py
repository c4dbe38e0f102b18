"""scan: what is encrypted, to whom, how, and who can still read it (no private key used)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from archive.corpus import People, Sample, build, sample_name
from smimekit import archive
from smimekit.archive import Kind, Readability
from smimekit.store import Store

KINDS = ["mbox", "maildir", "eml"]


def _by_name(report_path: Path, **kwargs: object) -> dict[str, archive.MessageInfo]:
    """Each sample's classification, matched by the Message-ID the corpus gave it."""
    classifier = archive.Classifier(**kwargs)  # type: ignore[arg-type]
    found = {}
    for location, data, problem in archive.iter_messages(report_path):
        info = classifier.classify(location, data, problem=problem)
        found[sample_name(data)] = info
    return found


@pytest.mark.parametrize("kind", KINDS)
def test_scan_counts_every_class_in_every_format(
    tmp_path: Path, kind: str, corpus: list[Sample], store: Store
) -> None:
    path = build(kind, tmp_path, [s.data for s in corpus])
    report = archive.scan(path, store=store)
    assert report.format == {"eml": "eml"}.get(kind, kind)
    assert report.messages == len(corpus)
    assert report.by_kind == Counter(s.kind for s in corpus)
    assert report.by_readability == Counter(s.readable for s in corpus if s.readable)
    expected_flags: Counter[str] = Counter()
    for sample in corpus:
        expected_flags.update(sample.flags)
    assert report.by_flag == expected_flags
    names = {loc: sample_name(data) for loc, data, _ in archive.iter_messages(path)}
    assert {names[loc] for loc, _ in report.malformed} == {"garbage-p7m", "truncated"}
    assert {names[loc] for loc, _, _ in report.unreadable} == {
        s.name for s in corpus if s.readable == "unreadable"}


def test_each_message_gets_its_class_and_flags(tmp_path: Path, corpus: list[Sample],
                                               store: Store) -> None:
    path = build("eml", tmp_path, [s.data for s in corpus])
    found = _by_name(path, store=store)
    for sample in corpus:
        info = found[sample.name]
        assert info.kind.value == sample.kind, sample.name
        assert (info.readability.value if info.readability else None) == sample.readable, \
            sample.name
        assert info.flags == sample.flags, sample.name


def test_algorithms_and_recipients_are_named(tmp_path: Path, corpus: list[Sample],
                                             people: People, store: Store) -> None:
    path = build("mbox", tmp_path, [s.data for s in corpus])
    report = archive.scan(path, store=store)
    assert report.by_cipher["aes256-gcm"] >= 4
    assert report.by_cipher["aes256-cbc"] == 1
    assert report.by_cipher["aes128-gcm"] == 1
    if any(s.name == "des3" for s in corpus):
        assert report.by_cipher["3des-cbc"] == 1
    if any(s.name == "rc2" for s in corpus):
        assert report.by_cipher["rc2-cbc/40"] == 1
    assert report.by_key_transport["ktri-rsaes_pkcs1v15"] >= 5
    assert report.by_key_transport["kari-dh_single_pass_std_dh_sha256kdf"] >= 2
    rows = {(r.label, r.readability) for r in report.recipients}
    assert ("ann@example.org", Readability.NOW) in rows
    assert ("ann@example.org", Readability.ESCROW) in rows  # the old certificate
    assert ("ben@example.org", Readability.NOW) in rows
    stranger = next(r for r in report.recipients if r.readability is Readability.UNREADABLE
                    and "who" not in r.label and r.subject is None and "Issuing" in r.label)
    assert stranger.identifier.startswith("issuer CN=Test Issuing CA,O=smimekit tests, serial")
    json_report = report.to_json()
    assert json_report["by_readability"]["escrow"] == 1
    assert {"recipient", "identifier", "readability", "messages"} <= set(
        json_report["recipients"][0])


def test_without_a_store_only_the_given_keys_make_mail_readable(
    tmp_path: Path, corpus: list[Sample], people: People
) -> None:
    path = build("maildir", tmp_path, [s.data for s in corpus])
    found = _by_name(path, keys=[(people.ann.key, people.ann.cert)])
    for name in ("gcm-rsa", "both", "sign-then-encrypt", "encrypt-then-sign", "partial"):
        assert found[name].readability is Readability.NOW, name
    for name in ("cbc-p256", "gcm-old", "stranger"):
        assert found[name].readability is Readability.UNREADABLE, name
    # An old key given without its certificate: matched through the store's certificates.
    found = _by_name(path, keys=[(people.ann_old.key, None)])
    assert found["gcm-old"].readability is Readability.UNREADABLE


def test_a_key_without_certificate_is_matched_through_the_store(
    tmp_path: Path, corpus: list[Sample], people: People, store: Store
) -> None:
    path = build("eml", tmp_path, [s.data for s in corpus])
    found = _by_name(path, store=store, keys=[(people.ann_old.key, None)])
    assert found["gcm-old"].readability is Readability.NOW


def test_rsa_key_size_is_read_from_the_encrypted_key_when_the_certificate_is_unknown(
    tmp_path: Path, corpus: list[Sample]
) -> None:
    weak = next((s for s in corpus if s.name == "weak-rsa"), None)
    if weak is None:
        pytest.skip("openssl is needed for the RSA-1024 message")
    info = archive.Classifier().classify("x", weak.data)
    assert info.recipients[0].certificate is None
    assert info.recipients[0].recipient.rsa_bits == 1024
    assert "rsa-under-2048" in info.flags


def test_scan_reports_progress_in_bytes(tmp_path: Path, corpus: list[Sample]) -> None:
    path = build("mbox", tmp_path, [s.data for s in corpus])
    seen: list[archive.Progress] = []
    archive.scan(path, progress=seen.append)
    assert len(seen) == len(corpus)
    assert seen[-1].done == seen[-1].total == path.stat().st_size
    assert all(p.phase == "scanning" for p in seen)


def test_mbox_from_lines_are_unquoted_and_separators_need_an_empty_line(tmp_path: Path
                                                                         ) -> None:
    box = tmp_path / "box"
    box.write_bytes(
        b"From a Thu Jan  1 00:00:00 2026\nSubject: one\n\nbody\n>From quoted\n"
        b"From not a separator (no empty line before)\n\n"
        b"From b Thu Jan  1 00:00:00 2026\nSubject: two\n\n>>From twice\n")
    messages = list(archive.iter_messages(box))
    second = box.read_bytes().index(b"From b")
    assert [m.location for m in messages] == ["mbox:0@0", f"mbox:1@{second}"]
    assert messages[0].data == (b"Subject: one\n\nbody\nFrom quoted\n"
                                b"From not a separator (no empty line before)\n")
    assert messages[1].data == b"Subject: two\n\n>From twice\n"


def test_maildir_locations_ignore_flags_and_subfolder(tmp_path: Path) -> None:
    root = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp", ".Sent/cur", ".Sent/new"):
        (root / sub).mkdir(parents=True)
    (root / "cur" / "1.M1.host,S=20:2,RS").write_bytes(b"Subject: a\r\n\r\nx\r\n")
    (root / "new" / "2.M2.host").write_bytes(b"Subject: b\r\n\r\nx\r\n")
    (root / ".Sent" / "cur" / "3.M3.host:2,S").write_bytes(b"Subject: c\r\n\r\nx\r\n")
    (root / "tmp" / "4.M4.host").write_bytes(b"Subject: half-delivered\r\n\r\n")
    locations = {m.location for m in archive.iter_messages(root)}
    assert locations == {"maildir:1.M1.host", "maildir:2.M2.host", "maildir:.Sent/3.M3.host"}


def test_oversized_messages_are_reported_not_read(tmp_path: Path) -> None:
    box = tmp_path / "box"
    box.write_bytes(b"From a x\nSubject: big\n\n" + b"y" * 5000 + b"\n\n"
                    b"From b x\nSubject: small\n\nz\n")
    messages = list(archive.iter_messages(box, max_size=1000))
    assert messages[0].problem is not None and "larger than 1000" in messages[0].problem
    assert messages[1].data == b"Subject: small\n\nz\n"
    report = archive.scan(box, max_size=1000)
    assert report.by_kind == Counter({"malformed": 1, "plain": 1})


def test_classify_names_the_kinds(corpus: list[Sample]) -> None:
    info = archive.Classifier().classify("x", next(s.data for s in corpus if s.name == "plain"))
    assert info.kind is Kind.PLAIN and info.message_id == "<plain@example.org>"
