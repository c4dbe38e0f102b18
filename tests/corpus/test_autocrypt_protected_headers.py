"""autocrypt/protected-headers (draft-autocrypt-lamps-protected-headers): protected-headers="v1".

Source: autocrypt-protected-headers/README.corpus.md. The S/MIME messages are verified against
sample-ca.pem and decrypted with bob.p12 (passphrase "bob"; 3DES, so ``allow_legacy``); the
protected header fields must replace the outer ones (Subject "..." restored), and the legacy
display part must be gone. The PGP/MIME messages are out of S/MIME's reach: their decrypted
``*.inner`` layers go through the header logic alone (smime/hp_read.restore()).
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

import smimekit
from smimekit.smime.canonical import Entity, split_multipart, to_crlf
from smimekit.smime.hp_read import restore

from .vectors import crypto_cert, list_files, params, read_bytes

FOLDER = "autocrypt-protected-headers"
AT = dt.datetime(2019, 12, 1, tzinfo=dt.UTC)  # the sample PKI is from 2019-11-20
PROTECTED = ("From", "To", "Date", "Subject", "Message-ID")


@dataclasses.dataclass(frozen=True)
class Row:
    file: str
    subject: str
    signed: bool
    encrypted: bool
    legacy: bool
    expected_body: str
    """The corpus file whose original body the output must end with."""
    why: str
    skip: str | None = None


FOO = "The FooCorp contract"
BAR = "BarCorp contract signed, let's go!"

SMIME = [
    Row("smime-multipart-signed.eml", FOO, True, False, False, "smime-multipart-signed.eml",
        "multipart/signed, protected headers on the signed text/plain"),
    Row("smime-onepart-signed.eml", FOO, True, False, False, "smime-onepart-signed.inner",
        "opaque signed-data, protected headers on the content"),
    Row("smime-sign+enc.eml", BAR, True, True, False, "smime-sign+enc.inner.inner",
        "signed then encrypted; outer Subject '...'"),
    Row("smime-sign+enc+legacy-disp.eml", BAR, True, True, True,
        "smime-sign+enc+legacy-disp.inner.inner", "as above, with a legacy display part"),
    Row("smime-enc+legacy-disp.eml", BAR, False, True, True, "smime-enc+legacy-disp.inner",
        "encrypted only, with a legacy display part"),
]


@dataclasses.dataclass(frozen=True)
class InnerRow:
    file: str
    """The decrypted (or signed) layer whose header section is read."""
    outer: str
    """The message it came from (its outer header block)."""
    subject: str
    legacy: bool
    why: str
    skip: str | None = None


PGP = [
    InnerRow("pgpmime-enc+legacy-disp.inner", "pgpmime-enc+legacy-disp.eml", BAR, True,
             "PGP/MIME encrypted only, legacy display part"),
    InnerRow("pgpmime-layered.inner", "pgpmime-layered.eml", BAR, False,
             "PGP/MIME signed inside encrypted; the payload is the signed part"),
    InnerRow("pgpmime-layered+legacy-disp.inner", "pgpmime-layered+legacy-disp.eml", BAR, True,
             "as above, legacy display part inside the signed part"),
    InnerRow("pgpmime-sign+enc.inner", "pgpmime-sign+enc.eml", BAR, False,
             "PGP/MIME one-pass signed and encrypted"),
    InnerRow("pgpmime-sign+enc+legacy-disp.inner", "pgpmime-sign+enc+legacy-disp.eml", BAR,
             True, "as above, with a legacy display part"),
    InnerRow("unfortunately-complex.inner", "unfortunately-complex.eml", BAR, True,
             "signed inside encrypted, legacy display, nested multipart/mixed"),
]

# Files that are expectations or inputs of the rows above, or not messages at all.
NOT_VECTORS = {
    "README.corpus.md": "corpus README",
    "README.md": "upstream README",
    "draft-protected-headers.in.md": "the draft's text",
    "alice@openpgp.example.pub.asc": "OpenPGP key (PGP/MIME is out of scope)",
    "bob@openpgp.example.sec.asc": "OpenPGP key (PGP/MIME is out of scope)",
    "bob.p12": "Bob's key (PEM armour of bob.p12.der)",
    "bob.p12.der": "Bob's key, used by the SMIME rows",
    "sample-ca.pem": "trust anchor of the SMIME rows",
    "smime-sign+enc.inner": "decrypted layer, checked through smime-sign+enc.eml",
    "smime-sign+enc+legacy-disp.inner": "decrypted layer, checked through its .eml",
    "smime-onepart-signed.inner": "expected content of smime-onepart-signed.eml",
    "smime-sign+enc.inner.inner": "expected payload of smime-sign+enc.eml",
    "smime-sign+enc+legacy-disp.inner.inner": "expected payload of its .eml",
    "smime-enc+legacy-disp.inner": "expected payload of smime-enc+legacy-disp.eml",
    "pgpmime-signed.eml": "PGP/MIME signature: header logic in test_pgpmime_signed_header_logic",
    "pgpmime-enc+legacy-disp.eml": "OpenPGP ciphertext; its .inner is a PGP row",
    "pgpmime-layered.eml": "OpenPGP ciphertext; its .inner is a PGP row",
    "pgpmime-layered+legacy-disp.eml": "OpenPGP ciphertext; its .inner is a PGP row",
    "pgpmime-sign+enc.eml": "OpenPGP ciphertext; its .inner is a PGP row",
    "pgpmime-sign+enc+legacy-disp.eml": "OpenPGP ciphertext; its .inner is a PGP row",
    "unfortunately-complex.eml": "OpenPGP ciphertext; its .inner is a PGP row",
}


def _bob() -> list:
    from smimekit.keys.pkcs12 import load_pkcs12_identities

    from .vectors import corpus_path

    return list(load_pkcs12_identities(corpus_path(FOLDER, "bob.p12.der"), b"bob").identities)


def _original_body(file: str) -> bytes:
    """The body a reader should see: after the header block, or, with a legacy display part,
    the second part of the multipart/mixed (found here by plain string search)."""
    raw = to_crlf(read_bytes(FOLDER, file))
    if file.endswith(".eml"):  # multipart/signed: the signed part's body
        raw = raw.split(b"\r\n--179\r\n", 1)[1].split(b"\r\n--179\r\n", 1)[0]
    body = raw.split(b"\r\n\r\n", 1)[1]
    if b'protected-headers="v1"\r\nContent-Disposition: inline' in body:
        second = body.split(b"--6ae\r\n")[2]
        body = second.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n--6ae--", 1)[0]
    return body


@pytest.mark.parametrize("row", params(SMIME))
def test_smime_message(row: Row) -> None:
    data = read_bytes(FOLDER, row.file)
    ca = crypto_cert(FOLDER, "sample-ca.pem")
    keys = _bob() if row.encrypted else []
    result = smimekit.decrypt_verify(data, None, keys=keys, trust=[ca], at=AT, revocation=None,
                                     allow_legacy=True, raise_for_failure=False)
    verdict = result.verdict
    assert verdict.valid is row.signed, verdict.summary()
    hp = verdict.header_protection
    assert hp is not None and hp.scheme == "protected-headers-v1"
    assert hp.protected == PROTECTED
    assert hp.mode == ("cipher" if row.encrypted else "clear")
    assert hp.obscured == (("Subject",) if row.encrypted else ())
    assert hp.disagreed == () and hp.problems == ()
    assert hp.legacy_display_removed is row.legacy
    shown = result.as_message()
    assert shown.get_all("Subject") == [row.subject]
    assert shown.get_all("From") == ["Alice Lovelace <alice@smime.example>"]
    assert len(shown.get_all("Received") or []) == 1
    assert result.content.rstrip(b"\r\n").endswith(_original_body(row.expected_body).rstrip())
    assert b"Subject: " + row.subject.encode() + b"\r\n\r\n" not in result.content.split(
        b"\r\n\r\n", 1)[1]  # the legacy display text is not shown a second time


@pytest.mark.parametrize("row", [r for r in SMIME if r.encrypted], ids=lambda r: r.file)
def test_smime_decrypt_only_restores_the_subject(row: Row) -> None:
    result = smimekit.decrypt(read_bytes(FOLDER, row.file), None, keys=_bob(),
                              allow_legacy=True)
    assert result.header_protection is not None
    assert result.header_protection.obscured == ("Subject",)
    assert result.as_message().get_all("Subject") == [row.subject]


def _first_part(entity: Entity) -> bytes:
    return split_multipart(entity.raw, entity.params["boundary"], entity.body_offset)[0]


@pytest.mark.parametrize("row", params(PGP))
def test_pgpmime_inner_header_logic(row: InnerRow) -> None:
    root = Entity.parse(to_crlf(read_bytes(FOLDER, row.outer)))
    layer = Entity.parse(to_crlf(read_bytes(FOLDER, row.file)))
    if layer.content_type == "multipart/signed":  # an OpenPGP signature: its signed part
        layer = Entity.parse(_first_part(layer))
    restored = restore(root, layer, encrypted=True, signed=False)
    assert restored is not None
    hp = restored.protection
    assert (hp.scheme, hp.mode) == ("protected-headers-v1", "cipher")
    assert hp.protected == ("From", "To", "Date", "Subject", "Message-ID")
    assert hp.obscured == ("Subject",) and hp.disagreed == ()
    assert hp.legacy_display_removed is row.legacy
    shown = Entity.parse(restored.message())
    assert shown.get("subject") == row.subject
    assert shown.get("from") == "Alice Lovelace <alice@openpgp.example>"
    if row.legacy:
        assert not shown.params.get("protected-headers")
        assert b"Subject: " + row.subject.encode() not in shown.body


def test_pgpmime_signed_header_logic() -> None:
    """pgpmime-signed.eml: the header logic on its signed part (the OpenPGP signature itself
    is not ours to check)."""
    root = Entity.parse(to_crlf(read_bytes(FOLDER, "pgpmime-signed.eml")))
    restored = restore(root, Entity.parse(_first_part(root)), encrypted=False, signed=True)
    assert restored is not None
    hp = restored.protection
    assert (hp.mode, hp.obscured, hp.disagreed) == ("clear", (), ())
    assert Entity.parse(restored.message()).get("subject") == FOO


def test_every_file_in_folder_has_a_row() -> None:
    covered = {r.file for r in SMIME} | {r.file for r in PGP}
    files = {f for f in list_files(FOLDER) if not f.startswith("screenshots/")}
    assert files == covered | set(NOT_VECTORS)
