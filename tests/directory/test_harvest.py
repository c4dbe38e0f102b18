"""Harvesting certificates from signed mail (issue 10): a folder of messages signed by
OpenSSL (``openssl cms -sign``, ``openssl smime -sign``) and by smimekit, in a Maildir, an
mbox and .eml files, with hostile ones among them; only validly signed messages bound to
their From address give certificates. Every store test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from backends import Backend
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from malformed.certs import BROKEN
from pki import NOW, PKI, Identity, ca_cert, new_key

import smimekit
from smimekit.config import EMPTY
from smimekit.directory.harvest import (
    ENCRYPTED,
    FROM_MISMATCH,
    INVALID,
    MALFORMED,
    TOO_LARGE,
    HarvestedSource,
    HarvestReport,
    harvest,
)
from smimekit.directory.sources import Source
from smimekit.store import Store

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")


def _msg(sender: str, *, when: dt.datetime = NOW, msgid: str = "m1", body: str = "Hello.",
         to: str = "me@example.net") -> bytes:
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: test {msgid}\r\n"
            f"Date: {email.utils.format_datetime(when)}\r\nMessage-ID: <{msgid}@example.org>\r\n"
            "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
            f"{body}\r\n").encode()


def _sign(who: Identity, chain: list[x509.Certificate], *, sender: str | None = None,
          when: dt.datetime = NOW, msgid: str = "m1", opaque: bool = False,
          encryption_cert: x509.Certificate | None = None) -> bytes:
    return smimekit.sign(_msg(sender or who.email, when=when, msgid=msgid), who.key, who.cert,
                         chain=chain, opaque=opaque, signing_time=when,
                         encryption_cert=encryption_cert)


def _pem(path: Path, *items: x509.Certificate) -> Path:
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in items))
    return path


def _openssl(*args: str, data: bytes) -> bytes:
    assert OPENSSL is not None
    done = subprocess.run([OPENSSL, *args], input=data, capture_output=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


def _fp(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


@dataclass
class Corpus:
    root: Path
    """Holds maildir/, archive.mbox and eml/."""
    good: dict[str, list[x509.Certificate]]
    """Address -> the certificates that must be kept for it."""
    bad_addresses: tuple[str, ...]
    """Addresses whose messages must give nothing."""

    @property
    def paths(self) -> list[Path]:
        return [self.root / "maildir", self.root / "archive.mbox", self.root / "eml"]


@pytest.fixture(scope="module")
def people(pki: PKI) -> dict[str, Identity]:
    other_key = new_key("p256#other-root")
    other_root = ca_cert(other_key, x509.Name.from_rfc4514_string("CN=Other Root,O=elsewhere"),
                         other_key, x509.Name.from_rfc4514_string("CN=Other Root,O=elsewhere"))
    return {
        "carol": pki.person("carol", "rsa2048"),
        "dave": pki.person("dave", "p256"),
        "frank": pki.person("frank", "rsa2048"),
        "erin": pki.person("erin", "p256", key_usage="sign"),
        "erin-enc": pki.person("erin-enc", "rsa2048", email="erin@example.org",
                               key_usage="encrypt"),
        "old": pki.person("old", "p256", not_before=NOW - dt.timedelta(days=400),
                          not_after=NOW - dt.timedelta(days=2)),
        "stranger": pki.person("stranger", "p256", issuer=(other_key, other_root)),  # type: ignore[arg-type]
    }


@pytest.fixture(scope="module")
def corpus(pki: PKI, people: dict[str, Identity],
           tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    root = tmp_path_factory.mktemp("mail")
    chain = [pki.inter]
    carol, dave, frank, erin = people["carol"], people["dave"], people["frank"], people["erin"]
    eml = root / "eml"
    eml.mkdir()
    # smimekit: detached and opaque; the dual-key sender names her encryption certificate
    (eml / "carol.eml").write_bytes(_sign(carol, chain, msgid="c1"))
    (eml / "sub").mkdir()
    (eml / "sub" / "carol-opaque.eml").write_bytes(_sign(carol, chain, msgid="c2", opaque=True))
    (eml / "erin.eml").write_bytes(_sign(erin, chain, msgid="e1",
                                         encryption_cert=people["erin-enc"].cert))
    # hostile: body altered after signing, From of someone else, expired signer, a signer
    # from a CA nobody trusts, a truncated message, garbage, an encrypted message
    forged = _sign(carol, chain, msgid="c3").replace(b"Hello.", b"Pay Mallory.")
    (eml / "forged.eml").write_bytes(forged)
    (eml / "mismatch.eml").write_bytes(_sign(carol, chain, sender="mallory@example.org",
                                             msgid="x1"))
    (eml / "expired.eml").write_bytes(_sign(people["old"], chain, msgid="o1"))
    (eml / "stranger.eml").write_bytes(_sign(people["stranger"], [], msgid="s1"))
    whole = _sign(frank, chain, msgid="f9")
    (eml / "truncated.eml").write_bytes(whole[: len(whole) * 2 // 3])
    (eml / "garbage.eml").write_bytes(bytes(range(256)) * 40)
    (eml / "encrypted.eml").write_bytes(smimekit.encrypt(_msg(carol.email, msgid="c4"),
                                                         [carol.cert]))
    # OpenSSL: cms -sign over a whole message into an mbox; smime -sign into a Maildir
    if OPENSSL is not None:
        keys = root / "keys"
        keys.mkdir()
        (keys / "dave.key").write_bytes(dave.pem_key())
        _pem(keys / "dave.pem", dave.cert)
        (keys / "frank.key").write_bytes(frank.pem_key())
        _pem(keys / "frank.pem", frank.cert)
        _pem(keys / "inter.pem", pki.inter)
        cms = _openssl("cms", "-sign", "-signer", str(keys / "dave.pem"), "-inkey",
                       str(keys / "dave.key"), "-certfile", str(keys / "inter.pem"),
                       data=_msg(dave.email, msgid="d1"))
        body = b"Content-Type: text/plain\r\n\r\nSigned by openssl smime.\r\n"
        smime = _openssl("smime", "-sign", "-signer", str(keys / "frank.pem"), "-inkey",
                         str(keys / "frank.key"), "-certfile", str(keys / "inter.pem"),
                         "-from", frank.email, "-to", "me@example.net", "-subject", "hi",
                         data=body)
        date = email.utils.format_datetime(NOW)
        smime = f"Date: {date}\r\nMessage-ID: <f1@example.org>\r\n".encode() + smime
    else:
        cms = smime = b""
    with open(root / "archive.mbox", "wb") as mbox:
        for data in (cms, _sign(dave, chain, msgid="d2", sender="eve@example.org")):
            if data:
                mbox.write(b"From MAILER-DAEMON Thu Jan  1 00:00:00 2026\n"
                           + data.replace(b"\r\n", b"\n").rstrip(b"\n") + b"\n\n")
    for sub in ("cur", "new", "tmp"):
        (root / "maildir" / sub).mkdir(parents=True)
    if smime:
        (root / "maildir" / "new" / "1700000000.1.host").write_bytes(smime)
    (root / "maildir" / "cur" / "1700000001.2.host:2,S").write_bytes(
        _sign(people["old"], chain, msgid="o2"))
    good: dict[str, list[x509.Certificate]] = {
        "carol@example.org": [carol.cert],
        "erin@example.org": [erin.cert, people["erin-enc"].cert],
    }
    if OPENSSL is not None:
        good["dave@example.org"] = [dave.cert]
        good["frank@example.org"] = [frank.cert]
    return Corpus(root, good, ("mallory@example.org", "old@example.org",
                               "stranger@example.org", "eve@example.org"))


@pytest.fixture
def store(backend: Backend) -> Iterator[Store]:
    with Store.open(backend.url, backend.data_dir) as opened:
        yield opened


def _run(corpus: Corpus, store: Store, trust: list[x509.Certificate],
         **kwargs: object) -> HarvestReport:
    return harvest(corpus.paths, store=store, trust=trust, revocation=None, **kwargs)  # type: ignore[arg-type]


def test_only_validly_signed_mail_bound_to_its_from_gives_certificates(
        corpus: Corpus, store: Store, trust: list[x509.Certificate],
        people: dict[str, Identity]) -> None:
    report = _run(corpus, store, trust)
    kept = {a: sorted(_fp(c) for c in certs) for a, certs in corpus.good.items()}
    for address, fingerprints in kept.items():
        assert sorted(r.fingerprint for r in store.harvested_for(address)) == fingerprints
    for address in corpus.bad_addresses:
        assert store.harvested_for(address) == []
    assert store.harvested_count() == sum(len(v) for v in kept.values())
    # carol signed twice (detached and opaque): one row, nothing from her forged,
    # mis-addressed or encrypted messages
    assert report.new == store.harvested_count()
    assert report.valid == len(corpus.good) + 1  # carol twice
    assert report.skipped[INVALID] >= 4  # forged, expired twice, stranger
    assert report.skipped[FROM_MISMATCH] == 2  # mallory (carol's key), eve (dave's key)
    assert report.skipped[ENCRYPTED] == 1
    assert report.skipped[MALFORMED] == 1  # truncated: the closing delimiter is missing
    # garbage and encrypted read as not signed, truncated not at all
    assert report.messages == report.signed + 3
    assert all("Pay Mallory" not in note for note in report.notes)
    why = {note.split(" ")[1].rstrip(":"): note for note in report.notes}
    assert "content was altered" in why["eml:forged.eml"]
    assert "expired on" in why["eml:expired.eml"]
    assert "expired on" in why["maildir:1700000001.2.host"]
    assert "no chain to a trust anchor" in why["eml:stranger.eml"]
    assert "mallory@example.org is not an address" in why["eml:mismatch.eml"]
    assert "truncated" in why["eml:truncated.eml"]


def test_dual_key_senders_encryption_certificate_is_kept_as_preferred(
        corpus: Corpus, store: Store, trust: list[x509.Certificate], pki: PKI,
        people: dict[str, Identity]) -> None:
    _run(corpus, store, trust)
    rows = {r.role: r for r in store.harvested_for("erin@example.org")}
    assert set(rows) == {"signer", "encryption"}
    assert rows["encryption"].certificate == people["erin-enc"].cert
    assert rows["encryption"].preferred and not rows["signer"].preferred
    assert rows["signer"].chain == (pki.inter,)
    # the archive, the location in it and the Message-ID: never the content
    assert rows["signer"].message_ref.endswith("eml eml:erin.eml <e1@example.org>")


def test_harvest_again_is_idempotent_and_last_seen_never_goes_back(
        corpus: Corpus, store: Store, trust: list[x509.Certificate], pki: PKI,
        people: dict[str, Identity], tmp_path: Path) -> None:
    first = _run(corpus, store, trust)
    count = store.harvested_count()
    again = _run(corpus, store, trust)
    assert (again.new, again.updated, again.unchanged) == (0, 0, first.new + first.updated
                                                           + first.unchanged)
    assert store.harvested_count() == count
    carol = people["carol"]
    (row,) = store.harvested_for("carol@example.org")
    later, earlier = NOW + dt.timedelta(minutes=1), NOW - dt.timedelta(hours=5)
    (tmp_path / "later.eml").write_bytes(_sign(carol, [pki.inter], when=later, msgid="late"))
    (tmp_path / "earlier.eml").write_bytes(_sign(carol, [pki.inter], when=earlier,
                                                 msgid="early"))
    out = harvest([tmp_path / "later.eml"], store=store, trust=trust, revocation=None,
                  now=later + dt.timedelta(minutes=1))
    assert (out.new, out.updated) == (0, 1)
    harvest([tmp_path / "earlier.eml"], store=store, trust=trust, revocation=None,
            now=later + dt.timedelta(minutes=1))
    (moved,) = store.harvested_for("carol@example.org")
    assert moved.last_seen == later and moved.first_seen == earlier
    assert "<late@example.org>" in moved.message_ref  # the older message did not take it
    assert row.first_seen == NOW


def test_a_newer_certificate_for_the_address_is_kept_beside_the_older(
        store: Store, trust: list[x509.Certificate], pki: PKI, people: dict[str, Identity],
        tmp_path: Path) -> None:
    renewed = pki.person("carol", "rsa2048", fresh_key=True)
    (tmp_path / "old.eml").write_bytes(_sign(people["carol"], [pki.inter], msgid="a"))
    (tmp_path / "new.eml").write_bytes(_sign(renewed, [pki.inter], msgid="b"))
    report = harvest([tmp_path], store=store, trust=trust, revocation=None)
    assert report.new == 2
    assert {r.certificate for r in store.harvested_for("carol@example.org")} \
        == {people["carol"].cert, renewed.cert}


def test_oversized_messages_are_skipped_and_the_run_goes_on(
        corpus: Corpus, store: Store, trust: list[x509.Certificate]) -> None:
    report = _run(corpus, store, trust, max_size=2000)
    assert report.skipped[TOO_LARGE] >= 5
    assert report.messages > report.skipped[TOO_LARGE]


def test_harvested_source_answers_with_preference_seen_times_and_where(
        corpus: Corpus, store: Store, trust: list[x509.Certificate], tmp_path: Path,
        people: dict[str, Identity]) -> None:
    _run(corpus, store, trust)
    source = HarvestedSource.from_config(EMPTY, store=store, data_dir=tmp_path)
    assert source is not None and isinstance(source, Source) and source.name == "harvested"
    assert HarvestedSource.from_config(EMPTY, store=None, data_dir=tmp_path) is None
    found = source.find("Erin@Example.ORG")
    by_cert = {c.certificate: c for c in found.candidates}
    enc = by_cert[people["erin-enc"].cert]
    assert enc.preferred and enc.source == "harvested" and "erin.eml" in enc.where
    assert enc.first_seen == NOW and enc.last_seen == NOW
    assert source.find("nobody@example.org").candidates == []


# -- the command -------------------------------------------------------------------------------


def test_directory_harvest_command_prints_the_summary_and_json(
        corpus: Corpus, backend: Backend, pki: PKI, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from smimekit.cli.main import main

    root = _pem(tmp_path / "root.pem", pki.root)
    args = [*backend.cli_args(), "directory", "harvest", *map(str, corpus.paths),
            "--trust", str(root), "--revocation", "offline"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "messages read:" in out and "certificates:" in out and "encrypted" in out
    assert main([*args, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["certificates"]["new"] == 0
    # every kept certificate once, carol's twice (two messages)
    assert summary["certificates"]["unchanged"] == sum(len(v) for v in corpus.good.values()) + 1
    assert summary["skipped"][FROM_MISMATCH] == 2


def test_directory_harvest_without_trust_or_path_fails_with_one_line(
        corpus: Corpus, backend: Backend, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from smimekit.cli.main import main

    assert main([*backend.cli_args(), "directory", "harvest", str(corpus.root / "eml")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no trust anchors" in err[0]
    assert main([*backend.cli_args(), "directory", "harvest", str(tmp_path / "nope")]) == 1
    assert "does not exist" in capsys.readouterr().err


def _many_certificates(opaque: bytes, count: int) -> bytes:
    """The opaque signed message with ``count`` copies of its first certificate."""
    import base64

    from asn1crypto import cms

    head, _, body = opaque.partition(b"\r\n\r\n")
    info = cms.ContentInfo.load(base64.b64decode(body))
    signed = info["content"]
    signed["certificates"] = [signed["certificates"][0]] * count
    return head + b"\r\n\r\n" + base64.encodebytes(info.dump(force=True)).replace(
        b"\n", b"\r\n")


def test_hostile_structures_are_counted_and_the_run_goes_on(
        store: Store, trust: list[x509.Certificate], pki: PKI, people: dict[str, Identity],
        tmp_path: Path) -> None:
    carol = people["carol"]
    nested = _msg(carol.email, msgid="n")
    for _ in range(10):  # more S/MIME layers than unwrap peels (MAX_LAYERS)
        nested = smimekit.sign(nested, carol.key, carol.cert, chain=[pki.inter], opaque=True)
    (tmp_path / "nested.eml").write_bytes(nested)
    # more certificates than the parser budget (MAX_CERTIFICATES), counted before parsing
    (tmp_path / "certs.eml").write_bytes(_many_certificates(
        _sign(carol, [pki.inter], msgid="k", opaque=True), 1100))
    deep = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
                    for i in range(3000))
    (tmp_path / "deep.eml").write_bytes(b"From: carol@example.org\r\n" + deep + b"x\r\n")
    (tmp_path / "header.eml").write_bytes(b"X-Long: " + b"a" * 3_000_000 + b"\r\n\r\nbody")
    (tmp_path / "good.eml").write_bytes(_sign(carol, [pki.inter], msgid="g"))
    report = harvest([tmp_path], store=store, trust=trust, revocation=None)
    assert report.messages == 5
    assert report.skipped[MALFORMED] == 2  # nested, certs
    assert any("too many certificates" in n for n in report.notes)
    assert any("nested S/MIME layers" in n for n in report.notes)
    assert report.valid == 1 and report.new == 1  # the good one after them all
    assert [r.certificate for r in store.harvested_for("carol@example.org")] == [carol.cert]


def test_harvest_in_a_cas_data_directory_uses_the_cas_store_and_chain(
        backend: Backend, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A dual-key person of our own CA (the CLI's dual default): the issuing CA comes from
    the data directory, the rows go to the store the CA records, and the encryption
    certificate the signature names is kept as preferred."""
    from smimekit.ca.home import CAConfig, CAHome
    from smimekit.ca.issuance import CertificateAuthority, Purpose, SubscriberKeyType
    from smimekit.cli.main import main

    passphrase = b"correct horse battery staple"
    home = CAHome(backend.data_dir)
    home.create(CAConfig(organization="Example Ltd", base_url="http://pki.example.com",
                         key_type="p256", country="GB"), passphrase)
    with Store.open(backend.url, backend.data_dir) as ca_store:
        cax = CertificateAuthority(home.unlock(passphrase), ca_store, actor="test")
        issued = cax.issue_generated("hana@example.com", sign_key=SubscriberKeyType.P256,
                                     encrypt_key=SubscriberKeyType.P256, lint=False)
    sign, enc = issued.item(Purpose.SIGN), issued.item(Purpose.ENCRYPT)
    assert sign is not None and enc is not None and sign.key is not None
    mail = tmp_path / "mail"
    mail.mkdir()
    # the message carries neither the issuing CA nor the root: the data directory has them
    (mail / "hana.eml").write_bytes(smimekit.sign(
        _msg("hana@example.com", msgid="h1"), sign.key, sign.cert, encryption_cert=enc.cert))
    root = _pem(tmp_path / "root.pem", home.certificate("root"))
    args = [*backend.cli_args(), "directory", "harvest", str(mail), "--trust", str(root),
            "--revocation", "offline", "--json"]
    assert main(args) == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    assert summary["valid"] == 1 and summary["certificates"]["new"] == 2
    with Store.open(backend.url, backend.data_dir, create=False) as store:
        rows = {r.role: r for r in store.harvested_for("hana@example.com")}
        assert rows["encryption"].certificate == enc.cert and rows["encryption"].preferred
        assert rows["signer"].certificate == sign.cert
        assert len(store.issued_for("hana@example.com")) == 2  # the CA's own records


def test_certificates_that_cannot_be_read_neither_stop_the_run_nor_spoil_a_genuine_message(
        store: Store, trust: list[x509.Certificate], pki: PKI, people: dict[str, Identity],
        tmp_path: Path) -> None:
    """A message signed with a certificate whose subjectAltName is there twice is malformed
    (before, cryptography's DuplicateExtension stopped the whole run); the same junk added to
    a genuine message is left out, and the signer's certificate is kept."""
    carol = people["carol"]
    junk = x509.load_der_x509_certificate(BROKEN["duplicate-extension"](carol.cert,
                                                                        pki.inter_key))
    (tmp_path / "junk-signer.eml").write_bytes(smimekit.sign(
        _msg(carol.email, msgid="j"), carol.key, junk, chain=[pki.inter]))
    (tmp_path / "junk-carried.eml").write_bytes(smimekit.sign(
        _msg(carol.email, msgid="g"), carol.key, carol.cert, chain=[pki.inter, junk]))
    report = harvest([tmp_path], store=store, trust=trust, revocation=None)
    assert report.messages == 2
    assert report.skipped[MALFORMED] == 1
    assert any("malformed signer certificate" in n for n in report.notes), report.notes
    assert report.valid == 1 and report.new == 1
    assert [r.certificate for r in store.harvested_for(carol.email)] == [carol.cert]


def test_a_certificate_error_escaping_the_verdict_is_counted_and_the_run_goes_on(
        store: Store, trust: list[x509.Certificate], pki: PKI, people: dict[str, Identity],
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def unreadable(*args: object, **kwargs: object) -> None:
        raise x509.UnsupportedGeneralNameType("x400Address/EDIPartyName are not supported types")

    monkeypatch.setattr("smimekit.validation.assess.assess", unreadable)
    (tmp_path / "one.eml").write_bytes(_sign(people["carol"], [pki.inter]))
    report = harvest([tmp_path], store=store, trust=trust, revocation=None)
    assert report.skipped[MALFORMED] == 1 and "x400Address" in report.notes[0]
