""""Johnny, You Are Fired" (Müller et al., USENIX Security 2019) through smimekit, one row per file.

Scenario: the attacker eve@bigcorporation.de tries to make Johnny believe that
manager@bigcorporation.de signed "Johnny, you are fired!". Both hold real GlobalSign
PersonalSign certificates (valid 2019-02-14 .. 2022-02-14); the messages carry the issuing CA,
the root "GlobalSign Root CA - R3" comes from Mozilla's store (``data/``, see the README).
Every message is verified at 2019-06-01 against that root alone.

What each row expects (``Expect``), derived from the corpus' README.corpus.md:

* ``VALID``: the three controls, and the display-name message whose address really is eve's
  (valid for eve only; the summary line shows her address, not "The Manager").
* every attack: never a valid signature of manager@, and the verdict names the attack class:
  content confusion, a failing signer, zero signers, partial signing, sender binding, or "not
  signed" (OpenPGP messages are not S/MIME and are never validly signed for smimekit).
* ``MALFORMED``: the crash message is refused with an ``ASN1Error`` naming the SignedData.

A row whose assertion fails documents a gap in smimekit: the assertion is what smimekit should
say, and is not weakened to match what it says today.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import functools
import re
from pathlib import Path

import pytest
from corpus.vectors import corpus_path, read_bytes
from cryptography import x509
from cryptography.hazmat.primitives import hashes

import smimekit
from smimekit.errors import (
    ASN1Error,
    NoSignatureError,
    SignatureInvalidError,
    UntrustedError,
    VerificationError,
)
from smimekit.validation.verdict import Verdict

FOLDER = "johnny-you-are-fired"
AT = dt.datetime(2019, 6, 1, tzinfo=dt.UTC)
MANAGER = "manager@bigcorporation.de"
EVE = "eve@bigcorporation.de"
ROOT_R3 = Path(__file__).parent / "data" / "globalsign-root-r3.pem"
ROOT_R3_SHA256 = "cbb522d7b7f127ad6a0113865bdf1cd4102e7d0759af635a7cf4720dc963c53b"
ISSUING_CA = "CN=GlobalSign PersonalSign 1 CA - SHA256 - G3,O=GlobalSign nv-sa,C=BE"

#: The reason that names a sender-binding failure (the From/Sender is not the signer's).
SENDER_REASON = r"(?i)\bsender\b|\bFrom\b"


class Expect(enum.Enum):
    VALID = "valid signature, sender bound to the signer's certificate"
    NOT_SMIME = "OpenPGP: not an S/MIME signature, so never validly signed"
    NOT_SIGNED = "no signature at all (whatever the HTML pretends)"
    PARTIAL = "a genuinely signed part inside an unsigned tree: partially signed, not valid"
    CONTENT_CONFUSION = "eContent in a multipart/signed differs from the displayed part"
    BAD_SIGNER = "one of several signers fails: the message fails"
    ZERO_SIGNERS = "SignedData without any SignerInfo: not signed"
    SENDER_MISMATCH = "signed by eve, but From/Sender is not (only) eve: sender binding fails"
    NO_SENDER = "signed by eve, no From address to bind the signer to: not valid"
    MALFORMED = "broken CMS: refused with a MalformedError, no crash"


@dataclasses.dataclass(frozen=True)
class Row:
    file: str
    expect: Expect
    why: str
    signer: str | None = None
    """The signer's address, where a signer verifies (VALID, SENDER_*, NO_SENDER)."""
    reason: str | None = None
    """A regex the verdict's reasons must match, when more precise than the class default."""


E = Expect
C1 = "01-cms/c1_eContent-confusion/"
C2 = "01-cms/c2_multiple-signerInfos/"
C3 = "01-cms/c3_no-signerInfos/"
M1 = "03-mime/m1-prepending-text/"
M2 = "03-mime/m2-hiding-with-html/"
M3 = "03-mime/m3-hiding-in-reference/"
M4 = "03-mime/m4-hiding-as-attachment/"
I1 = "04-id/i1-sender-signer-checks/"
I2 = "04-id/i2-display-name-confusion/"
I3 = "04-id/i3-from-sender-confusion/"
V = "assets/valid-signed/"

ROWS = [
    # --- controls --------------------------------------------------------------------------
    Row(V + "manager-smime.eml", E.VALID, "control: manager signs his own mail", MANAGER),
    Row(V + "eve-smime.eml", E.VALID, "control: eve signs her own mail", EVE),
    Row("01-cms/valid_email_from_manager.eml", E.VALID, "control for the CMS class", MANAGER),
    Row(V + "manager-pgp-inline.eml", E.NOT_SMIME, "OpenPGP control (inline), not S/MIME"),
    Row(V + "manager-pgp-mime.eml", E.NOT_SMIME, "OpenPGP control (PGP/MIME), not S/MIME"),
    Row(V + "eve-pgp-inline.eml", E.NOT_SMIME, "OpenPGP control (inline), not S/MIME"),
    Row(V + "eve-pgp-mime.eml", E.NOT_SMIME, "OpenPGP control (PGP/MIME), not S/MIME"),
    # --- 1. CMS ----------------------------------------------------------------------------
    Row(C1 + "eContent_confusion.eml", E.CONTENT_CONFUSION,
        "multipart/signed shows 'promoted' text; the CMS eContent signed by manager says"
        " otherwise (CVE-2018-18509)"),
    Row(C1 + "eContent_confusion_refinement.eml", E.CONTENT_CONFUSION,
        "the same, refined so that the displayed part looks like the signed one"),
    Row(C2 + "multiple_signerInfos_append_johnny.eml", E.BAD_SIGNER,
        "eve's valid SignerInfo, then a SignerInfo of manager over other content",
        reason=r"signer 2 \(.*manager@bigcorporation\.de.*\): message digest mismatch"),
    Row(C2 + "multiple_signerInfos_prepend_johnny.eml", E.BAD_SIGNER,
        "a SignerInfo of manager over other content, then eve's valid SignerInfo",
        reason=r"signer 1 \(.*manager@bigcorporation\.de.*\): message digest mismatch"),
    Row(C3 + "no_signerInfos_detached.eml", E.ZERO_SIGNERS,
        "SignedData with manager's certificate but zero SignerInfos"),
    Row(C3 + "no certificates/no_signerInfos_no_certificates_detached.eml", E.ZERO_SIGNERS,
        "SignedData with neither certificates nor SignerInfos"),
    Row("01-cms/crashes/crash_01.eml", E.MALFORMED,
        "ContentInfo of type signedData whose content is absent (crashed Thunderbird, iOS)"),
    # --- 3. MIME wrapping ------------------------------------------------------------------
    Row(M1 + "m1-smime.eml", E.PARTIAL,
        "unsigned 'you are fired' text, then manager's signed mail pushed out of view"),
    Row(M2 + "m2-smime-mix.eml", E.PARTIAL,
        "unsigned HTML part hides manager's signed part with CSS"),
    Row(M3 + "m3-smime.eml", E.PARTIAL,
        "multipart/related: unsigned HTML referencing manager's signed part by cid:"),
    Row(M4 + "m4-smime.eml", E.PARTIAL,
        "unsigned text, manager's signed mail as an attachment named smime.p7s"),
    Row(M1 + "m1-pgp-inline.eml", E.NOT_SMIME, "OpenPGP inline, prepended text"),
    Row(M1 + "m1-pgp-inline2.eml", E.NOT_SMIME, "OpenPGP inline, prepended text (variant)"),
    Row(M1 + "m1-pgp-mime.eml", E.NOT_SMIME, "PGP/MIME, prepended text"),
    Row(M2 + "m2-pgp-inline.eml", E.NOT_SMIME, "OpenPGP inline hidden with HTML"),
    Row(M2 + "m2-pgp-inline2.eml", E.NOT_SMIME, "OpenPGP inline hidden with HTML (variant)"),
    Row(M2 + "m2-pgp-mime.eml", E.NOT_SMIME, "PGP/MIME hidden with HTML"),
    Row(M3 + "m3-pgp-inline.eml", E.NOT_SMIME, "OpenPGP inline hidden in a cid: reference"),
    Row(M3 + "m3-pgp-mime.eml", E.NOT_SMIME, "PGP/MIME hidden in a cid: reference"),
    Row(M4 + "m4-pgp-inline.eml", E.NOT_SMIME, "OpenPGP inline hidden as an attachment"),
    Row(M4 + "m4-pgp-mime.eml", E.NOT_SMIME, "PGP/MIME hidden as an attachment"),
    # --- 4. identity -----------------------------------------------------------------------
    Row(I1 + "i1-from-unequals-signer-smime.eml", E.SENDER_MISMATCH,
        "From: manager, signed by eve", EVE),
    Row(I2 + "i2-from-contains-signer-smime.eml", E.VALID,
        "From: The Manager <eve@>: eve's own address under a misleading display name; valid"
        " for eve only, and the summary names eve's address", EVE),
    Row(I2 + "i2-from-is-empty-smime.eml", E.NO_SENDER,
        "empty From (Reply-To: manager), signed by eve", EVE),
    Row(I2 + "i2-from-is-nonexistent-smime.eml", E.NO_SENDER,
        "no From at all (Reply-To: manager), signed by eve", EVE),
    Row(I2 + "i2-from-is-only-a-name-smime.eml", E.SENDER_MISMATCH,
        "From: The Manager (a name, no address), signed by eve", EVE),
    Row(I2 + "i2-from-is-sender-signer-a-smime.eml", E.SENDER_MISMATCH,
        "From: manager@ <eve@>: an address as display name", EVE),
    Row(I2 + "i2-from-is-sender-signer-b-smime.eml", E.SENDER_MISMATCH,
        "From: manager@ . <eve@>: an address as display name, with padding", EVE),
    Row(I2 + "i2-from-is-signer-sender-a-smime.eml", E.SENDER_MISMATCH,
        "From: eve@ <manager@>", EVE),
    Row(I2 + "i2-from-is-signer-sender-b-smime.eml", E.SENDER_MISMATCH,
        "From: eve@ . <manager@>", EVE),
    Row(I3 + "i3-from-is-sender-sender-signer-smime.eml", E.SENDER_MISMATCH,
        "From: <eve@>, <manager@> (two mailboxes)", EVE),
    Row(I3 + "i3-from-is-sender-signer-sender-smime.eml", E.SENDER_MISMATCH,
        "From: <manager@>, <eve@> (two mailboxes)", EVE),
    Row(I3 + "i3-from-sender-others-signer-smime.eml", E.SENDER_MISMATCH,
        "From: manager; Sender, Reply-To, Return-Path...: eve", EVE),
    Row(I3 + "i3-from-signer-others-sender-smime.eml", E.SENDER_MISMATCH,
        "From: eve; Sender: manager (and Reply-To, Return-Path...)", EVE),
    Row(I3 + "i3-from1-sender-from2-signer-smime.eml", E.SENDER_MISMATCH,
        "two From headers: manager first, eve second", EVE),
    Row(I3 + "i3-from1-signer-from2-sender-smime.eml", E.SENDER_MISMATCH,
        "two From headers: eve first, manager second (a client showing the last one shows"
        " manager)", EVE),
    Row(I1 + "i1-from-unequals-signer-pgp-mime.eml", E.NOT_SMIME, "PGP/MIME, From != signer"),
    Row(I2 + "i2-from-contains-signer-pgp-mime.eml", E.NOT_SMIME, "PGP/MIME, display name"),
    Row(I2 + "i2-from-is-empty-pgp-mime.eml", E.NOT_SMIME, "PGP/MIME, empty From"),
    Row(I2 + "i2-from-is-nonexistent-pgp-mime.eml", E.NOT_SMIME, "PGP/MIME, no From"),
    Row(I2 + "i2-from-is-only-a-name-pgp-mime.eml", E.NOT_SMIME, "PGP/MIME, From is a name"),
    Row(I2 + "i2-from-is-sender-signer-a-pgp-mime.eml", E.NOT_SMIME, "PGP/MIME, display name"),
    Row(I2 + "i2-from-is-sender-signer-b-pgp-mime.eml", E.NOT_SMIME, "PGP/MIME, display name"),
    Row(I2 + "i2-from-is-signer-sender-a-pgp-mime.eml", E.NOT_SMIME, "PGP/MIME, display name"),
    Row(I2 + "i2-from-is-signer-sender-b-pgp-mime.eml", E.NOT_SMIME, "PGP/MIME, display name"),
    Row(I3 + "i3-from-is-sender-sender-signer-pgp-mime.eml", E.NOT_SMIME, "PGP/MIME, two From"),
    Row(I3 + "i3-from-is-sender-signer-sender-pgp-mime.eml", E.NOT_SMIME, "PGP/MIME, two From"),
    Row(I3 + "i3-from-sender-others-signer-pgp-mime.eml", E.NOT_SMIME, "PGP/MIME, Sender"),
    Row(I3 + "i3-from-signer-others-sender-pgp-mime.eml", E.NOT_SMIME, "PGP/MIME, Sender"),
    Row(I3 + "i3-from1-sender-from2-signer-pgp-mime.eml", E.NOT_SMIME, "PGP/MIME, two From"),
    Row(I3 + "i3-from1-signer-from2-sender-pgp-mime.eml", E.NOT_SMIME, "PGP/MIME, two From"),
    # --- 5. UI redressing ------------------------------------------------------------------
    Row("05-ui/u1-ui-redressing/u1-generic.eml", E.NOT_SIGNED,
        "unsigned text/html drawing a fake 'signed by manager' indicator"),
]


@functools.cache
def _anchor() -> x509.Certificate:
    cert = x509.load_pem_x509_certificate(ROOT_R3.read_bytes())
    assert cert.fingerprint(hashes.SHA256()).hex() == ROOT_R3_SHA256
    return cert


def _verify(file: str, **kw: object) -> Verdict:
    options: dict[str, object] = {"trust": [_anchor()], "at": AT, "raise_for_failure": False}
    options.update(kw)
    return smimekit.verify(read_bytes(FOLDER, file), **options).verdict  # type: ignore[arg-type]


def _claims_manager(verdict: Verdict) -> bool:
    """Would a client show this as a valid signature of manager@?"""
    return verdict.valid and (
        verdict.from_address == MANAGER or any(MANAGER in s.email for s in verdict.signers)
    )


def _reasons(verdict: Verdict) -> str:
    return " | ".join(verdict.all_reasons())


# The exception verify() raises for each class when raise_for_failure is left on.
RAISES: dict[Expect, type[Exception] | None] = {
    E.VALID: None,
    E.NOT_SMIME: NoSignatureError,
    E.NOT_SIGNED: NoSignatureError,
    E.PARTIAL: NoSignatureError,
    E.CONTENT_CONFUSION: SignatureInvalidError,
    E.BAD_SIGNER: SignatureInvalidError,
    E.ZERO_SIGNERS: NoSignatureError,
    E.SENDER_MISMATCH: UntrustedError,
    E.NO_SENDER: VerificationError,
    E.MALFORMED: ASN1Error,
}


def _check_valid(row: Row, v: Verdict) -> None:
    assert v.valid, _reasons(v)
    assert v.signed and not v.partially_signed and v.reasons == ()
    assert len(v.signers) == 1
    signer = v.signers[0]
    assert signer.email == (row.signer,)
    assert signer.intact and signer.trusted and signer.key_usage_ok
    assert signer.from_match is True and v.from_address == row.signer
    assert [c.subject for c in signer.chain][1] == ISSUING_CA
    assert signer.chain[-1].sha256 == ROOT_R3_SHA256
    summary = v.summary()
    assert summary.startswith("VALID: ") and f"<{row.signer}>" in summary
    if row.signer == EVE:
        # Display-name tricks: the line names eve's real address, never the manager.
        assert MANAGER not in summary and "The Manager" not in summary


def _check_unsigned(v: Verdict, reason: str) -> None:
    assert not v.valid
    assert not v.signed and v.layers == () and v.signers == ()
    assert re.search(reason, _reasons(v)), _reasons(v)
    assert v.summary().startswith("NOT SIGNED: ")


def _check_signed_layer_failed(v: Verdict, reason: str) -> None:
    """A signed layer whose CMS check failed: no signer is presented as verified."""
    assert not v.valid
    assert v.signed and [layer.kind for layer in v.layers] == ["signed"]
    assert v.signers == ()
    assert re.search(reason, _reasons(v)), _reasons(v)
    assert not v.summary().startswith("VALID")


def _check_eve_signed(row: Row, v: Verdict) -> None:
    """eve's genuine signature, but the message does not (only) come from eve."""
    assert not v.valid, f"{row.file} verified as valid: {v.summary()}"
    assert v.signed and len(v.signers) == 1
    signer = v.signers[0]
    assert signer.email == (row.signer,) == (EVE,)
    assert signer.intact and signer.trusted and signer.key_usage_ok
    assert signer.from_match is not True
    assert not signer.valid
    assert re.search(SENDER_REASON, _reasons(v)), _reasons(v)
    assert v.summary().startswith("INVALID: ")


def _check(row: Row, v: Verdict) -> None:
    expect = row.expect
    if expect is E.VALID:
        _check_valid(row, v)
        return
    assert not _claims_manager(v), f"{row.file}: {v.summary()}"
    if expect in (E.NOT_SMIME, E.NOT_SIGNED):
        assert not v.partially_signed
        _check_unsigned(v, row.reason or r"^the message is not signed$")
    elif expect is E.PARTIAL:
        assert v.partially_signed
        _check_unsigned(v, row.reason or r"only a part of the message is signed")
    elif expect is E.CONTENT_CONFUSION:
        _check_signed_layer_failed(v, row.reason or r"content confusion")
    elif expect is E.BAD_SIGNER:
        _check_signed_layer_failed(v, row.reason or r"signer \d")
    elif expect is E.ZERO_SIGNERS:
        _check_signed_layer_failed(v, row.reason or r"zero signers")
    elif expect is E.SENDER_MISMATCH:
        _check_eve_signed(row, v)
        assert v.signers[0].from_match is False
    elif expect is E.NO_SENDER:
        assert v.from_address is None
        _check_eve_signed(row, v)
    else:  # pragma: no cover
        raise AssertionError(expect)


def _params() -> list[object]:
    return [pytest.param(row, id=row.file) for row in ROWS]


@pytest.mark.parametrize("row", _params())
def test_johnny_verdict(row: Row) -> None:
    """The verdict at 2019-06-01: outcome and the class of reason, per the table."""
    if row.expect is E.MALFORMED:
        with pytest.raises(ASN1Error, match="SignedData"):
            _verify(row.file)
        return
    _check(row, _verify(row.file))


@pytest.mark.parametrize("row", _params())
def test_johnny_raises_the_precise_error(row: Row) -> None:
    """With raise_for_failure on, the exception class names the attack class."""
    error = RAISES[row.expect]
    if error is None:
        assert _verify(row.file, raise_for_failure=True).valid
        return
    with pytest.raises(error) as info:
        _verify(row.file, raise_for_failure=True)
    if isinstance(info.value, VerificationError):
        assert info.value.verdict is not None and not info.value.verdict.valid


def test_table_covers_every_message_of_the_corpus() -> None:
    root = corpus_path(FOLDER)
    on_disk = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.eml"))
    in_table = sorted(row.file for row in ROWS)
    assert len(in_table) == len(set(in_table))
    assert in_table == on_disk
    assert len(on_disk) == 59


CONTROLS = [row for row in ROWS if row.expect is E.VALID and "valid" in row.file]


@pytest.mark.parametrize("row", [pytest.param(r, id=r.file) for r in CONTROLS])
def test_controls_are_untrusted_without_the_globalsign_root(row: Row) -> None:
    v = _verify(row.file, trust=[])
    assert not v.valid
    assert v.signers and not v.signers[0].trusted and v.signers[0].intact


@pytest.mark.parametrize("row", [pytest.param(r, id=r.file) for r in CONTROLS])
def test_controls_fail_after_the_certificates_expire(row: Row) -> None:
    v = _verify(row.file, at=dt.datetime(2022, 6, 1, tzinfo=dt.UTC))
    assert not v.valid
    assert v.signers and not v.signers[0].trusted
    assert re.search(r"(?i)expired|validity|not valid", _reasons(v)), _reasons(v)
