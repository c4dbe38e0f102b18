"""reencrypt_archive: every readable message to its owners' current certificates, AES-256-GCM,
the same content afterwards; what cannot be migrated is left exactly as it was."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pki import PKI, message

import smimekit
from archive.corpus import People, Sample, build, digests, fill_store, sample_name
from smimekit import archive
from smimekit.archive import ArchiveError, Kind
from smimekit.cms.algorithms import Cipher
from smimekit.store import Store

MIGRATED = {"gcm-rsa", "cbc-p256", "gcm-old", "both", "sign-then-encrypt", "des3"}
TO_BEN = {"cbc-p256", "both", "sign-then-encrypt"}
TO_ANN = MIGRATED - {"cbc-p256"}


@pytest.fixture
def next_store(tmp_path: Path, people: People) -> Iterator[Store]:
    """Ann has moved on to ann_new (P-256); her two older keys are in the history."""
    with Store.open(None, tmp_path / "data") as opened:
        fill_store(opened, people, ann_current=people.ann_new)
        yield opened


def _messages(path: Path) -> dict[str, bytes]:
    return {sample_name(m.data): m.data for m in archive.iter_messages(path)}


@pytest.mark.parametrize("kind", ["mbox", "maildir", "eml"])
def test_every_readable_message_moves_to_the_current_certificates_with_aes256_gcm(
    tmp_path: Path, kind: str, corpus: list[Sample], people: People, next_store: Store
) -> None:
    path = build(kind, tmp_path, [s.data for s in corpus])
    keys = people.keys()
    before = digests(path, keys)
    old = _messages(path)
    report = archive.reencrypt_archive(path, keys, store=next_store, allow_legacy=True)
    present = {s.name for s in corpus}
    assert report.counts["reencrypted"] == len(MIGRATED & present)
    assert report.counts["no-key"] == 1  # the stranger
    assert digests(path, keys) == before  # nothing lost, nothing changed in content
    new = _messages(path)
    classifier = archive.Classifier(keys=keys)
    for name, data in new.items():
        info = classifier.classify(name, data)
        if name not in MIGRATED:
            assert data == old[name], name  # byte for byte
            continue
        assert info.envelope is not None and info.envelope.cipher == "aes256-gcm", name
        assert info.envelope.authenticated
        certs = {s.certificate for s in info.recipients}
        expected = ({people.ann_new.cert} if name in TO_ANN else set()) | (
            {people.ben.cert} if name in TO_BEN else set())
        assert certs == expected, name
        # The outer headers are kept as they were.
        assert data.split(b"Content-Type")[0] == old[name].split(b"Content-Type")[0] or \
            name == "des3"
    # Nothing of the job is left behind, though some messages could not be migrated.
    leftovers = [p.name for p in tmp_path.rglob("*") if "smimekit-new" in p.name
                 or p.name.endswith((".orig", archive.JOURNAL_SUFFIX))]
    assert leftovers == []


def test_the_inner_signature_still_verifies(tmp_path: Path, corpus: list[Sample],
                                            people: People, next_store: Store,
                                            pki: PKI) -> None:
    sample = next(s for s in corpus if s.name == "sign-then-encrypt")
    path = build("eml", tmp_path, [sample.data])
    archive.reencrypt_archive(path, people.keys(), store=next_store)
    new = next(iter(_messages(path).values()))
    verified = smimekit.decrypt_verify(new, None, keys=[(people.ann_new.key,
                                                         people.ann_new.cert)],
                                       trust=[pki.root], revocation=None,
                                       raise_for_failure=False)
    # Intact: the signed bytes came through unchanged (the From address is not Ben's, so
    # the verdict as a whole fails for a reason that has nothing to do with the archive).
    assert [s.intact for s in verified.verdict.signers] == [True]
    assert [layer.kind for layer in verified.verdict.layers] == ["encrypted", "signed"]


def test_to_overrides_the_store_and_a_rerun_has_nothing_to_do(
    tmp_path: Path, corpus: list[Sample], people: People
) -> None:
    keep = [s.data for s in corpus if s.name in ("gcm-rsa", "gcm-old", "plain", "cbc-p256")]
    path = build("mbox", tmp_path, keep)
    target = people.ann_new.cert
    report = archive.reencrypt_archive(path, people.keys(), lambda old: [target])
    assert report.counts["reencrypted"] == 3
    inode = path.stat().st_ino
    again = archive.reencrypt_archive(path, people.keys(), lambda old: [target])
    assert again.counts["current"] == 3 and again.counts["reencrypted"] == 0
    assert path.stat().st_ino == inode  # not rewritten


def test_dry_run_changes_nothing(tmp_path: Path, corpus: list[Sample], people: People,
                                 next_store: Store) -> None:
    for kind in ("mbox", "maildir"):
        path = build(kind, tmp_path / kind, [s.data for s in corpus])
        files = {p: p.read_bytes() for p in path.parent.rglob("*") if p.is_file()}
        report = archive.reencrypt_archive(path, people.keys(), store=next_store,
                                           allow_legacy=True, dry_run=True)
        assert report.counts["would-reencrypt"] == len(MIGRATED & {s.name for s in corpus})
        assert {p: p.read_bytes() for p in path.parent.rglob("*") if p.is_file()} == files


def test_a_new_certificate_whose_key_is_not_given_cannot_be_verified_so_nothing_changes(
    tmp_path: Path, corpus: list[Sample], people: People, next_store: Store
) -> None:
    path = build("maildir", tmp_path, [s.data for s in corpus if s.name == "gcm-rsa"])
    before = {p: p.read_bytes() for p in path.rglob("*") if p.is_file()}
    report = archive.reencrypt_archive(path, [(people.ann.key, people.ann.cert)],
                                       store=next_store)
    assert report.counts["failed"] == 1
    assert "could not be verified" in report.problems[0][2]
    assert {p: p.read_bytes() for p in path.rglob("*") if p.is_file()} == before


def test_line_ends_and_maildir_sizes_follow_the_new_content(
    tmp_path: Path, corpus: list[Sample], people: People, next_store: Store
) -> None:
    data = [s.data for s in corpus if s.name in ("gcm-rsa", "gcm-old", "plain")]
    box = build("mbox", tmp_path, data)
    archive.reencrypt_archive(box, people.keys(), store=next_store)
    assert b"\r\n" not in box.read_bytes()
    maildir = build("maildir", tmp_path, data)
    archive.reencrypt_archive(maildir, people.keys(), store=next_store)
    for file in (maildir / "cur").iterdir():
        if ",S=" in file.name:
            assert f",S={file.stat().st_size}:" in file.name


def test_a_message_to_an_unknown_recipient_needs_a_target(
    tmp_path: Path, corpus: list[Sample], people: People, next_store: Store
) -> None:
    weak = [s.data for s in corpus if s.name == "weak-rsa"]
    if not weak:
        pytest.skip("openssl is needed for the RSA-1024 message")
    path = build("eml", tmp_path, weak)
    report = archive.reencrypt_archive(path, people.keys(), store=next_store)
    assert report.counts["failed"] == 1
    assert "no current certificate" in report.problems[0][2]
    report = archive.reencrypt_archive(path, people.keys(),
                                       lambda old: [people.ann_new.cert])
    assert report.counts["reencrypted"] == 1
    info = archive.Classifier().classify("x", next(iter(archive.iter_messages(path))).data)
    assert info.kind is Kind.ENCRYPTED and "rsa-under-2048" not in info.flags


def test_an_mbox_locked_by_another_program_is_refused(tmp_path: Path, corpus: list[Sample],
                                                      people: People) -> None:
    import fcntl

    path = build("mbox", tmp_path, [corpus[2].data])
    with open(path, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        pid = os.fork()
        if pid == 0:  # another process: flock locks are per open file, tried from a child
            try:
                archive.reencrypt_archive(path, people.keys(), lambda old: [people.ann_new.cert])
            except ArchiveError as exc:
                os._exit(3 if "locked" in str(exc) else 4)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 3


def test_a_pre_existing_orig_file_is_never_overwritten(tmp_path: Path, corpus: list[Sample],
                                                       people: People) -> None:
    path = build("mbox", tmp_path, [corpus[2].data])
    orig = path.with_name(path.name + ".orig")
    orig.write_bytes(b"the user's own file")
    with pytest.raises(ArchiveError, match="move it away"):
        archive.reencrypt_archive(path, people.keys(), lambda old: [people.ann_new.cert])
    assert orig.read_bytes() == b"the user's own file"


def test_protected_headers_stay_inside_the_encryption(tmp_path: Path, people: People) -> None:
    """A whole message wrapped as message/rfc822 (header protection) is carried over as it
    is: its real Subject never reaches the outside."""
    inner = (b"From: alice@example.org\r\nSubject: the real subject\r\n"
             b"Content-Type: text/plain\r\n\r\nsecret body\r\n")
    wrapped = message(body=inner, headers=b"Content-Type: message/rfc822\r\n").replace(
        b"<t1@", b"<hp@")
    data = smimekit.encrypt(wrapped, [people.ann.cert], cipher=Cipher.AES256_CBC,
                            check_recipients=False)
    path = build("eml", tmp_path, [data])
    report = archive.reencrypt_archive(path, people.keys(), lambda old: [people.ann_new.cert])
    assert report.counts["reencrypted"] == 1
    new = next(iter(_messages(path).values()))
    assert b"the real subject" not in new
    # The outside is carried over as encrypt wrote it: with header protection (the default)
    # the outer Subject "test" is hidden too, as [...].
    assert b"Subject: test" not in new and b"\r\nSubject: [...]\r\n" in new
    opened = smimekit.decrypt(new, None, keys=people.keys())
    assert b"Subject: the real subject" in opened.content
    assert opened.content == smimekit.decrypt(data, None, keys=people.keys()).content
