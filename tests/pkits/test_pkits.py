"""NIST PKITS signed messages: RFC 5280 path validation (and CRL revocation) table-driven.

Each message is opened the way a mail client opens it (:func:`smimekit.smime.wrap.unwrap`:
MIME, CMS, the signature), then the signer's certificate is validated with
:func:`smimekit.validation.path.validate` against the PKITS trust anchor, using the
certificates the message carries, at a frozen time inside the PKITS validity periods; a
path that validates is then checked for revocation with
:func:`smimekit.validation.revocation.check_chain` (policy HARD, every PKITS CRL supplied
locally, the message's certificates as candidate CRL signers, no network), because PKITS
expects revocation to be checked for every test.

Why not ``smimekit.verify``: the PKITS messages are From ``sender@testcertificates.gov``
(no certificate holds that address) and some carry signing times after the frozen time, so
the verdict always fails for reasons PKITS does not test; and ``verify`` has no way to pass
the policy inputs of PKITS 4.8-4.12. :func:`test_verify_agrees_on_trust` checks that
``verify`` reaches the same trust decision for every default-settings run.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import warnings

import pytest
from corpus.vectors import corpus_path, list_files, read_bytes
from cryptography import x509

import smimekit
from smimekit.smime.wrap import unwrap
from smimekit.validation.fetchers import MemoryFetcher
from smimekit.validation.path import PathResult, validate
from smimekit.validation.revocation import RevocationOptions, RevocationPolicy, check_chain

from .table import (
    LEGACY,
    NON_POLICY_SECTIONS,
    P1,
    REVOCATION_FAILURES,
    SUBPARTS,
    TESTS,
    Settings,
)

FOLDER = "pyca-cryptography-vectors"
DATA = "PKITS_data"
#: Inside every PKITS 2011 validity period (2010-01-01 .. 2030-12-31) and CRL period.
AT = dt.datetime(2011, 4, 15, tzinfo=dt.UTC)

# PKITS 4.4.14-15 carry negative serial numbers on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:Parsed a serial number")

SKIPS = {
    "4.1.5": "pyca/cryptography cannot parse a DSA key whose parameters are inherited from"
    " the issuer (RFC 3279 2.3.2, SPKI parameters absent), so the SignedData cannot be read",
}

#: Known failures outside path.py, strict: they turn red once fixed, so the mark goes.
XFAILS: dict[str, str] = {}

#: What the revocation module does not do yet: known wrong verdicts, non-strict so a fix
#: shows up as XPASS. Empty: every default-settings run gets PKITS's verdict.
REVOCATION_GAPS: dict[str, str] = {}


@dataclasses.dataclass(frozen=True)
class Run:
    number: str
    file: str
    settings: Settings
    subpart: int | None = None

    @property
    def id(self) -> str:
        part = f"/{self.subpart}" if self.subpart is not None else ""
        return f"{self.number}{part}-{self.file}"


def _runs() -> list[Run]:
    runs = []
    for number, name in TESTS:
        file = f"Signed{name}.eml"
        subparts = SUBPARTS.get(number, [])
        if name.startswith(("Valid", "Invalid")) and not any(s.default for s in subparts):
            valid = name.startswith("Valid")
            user = (P1,) if valid and number.startswith(NON_POLICY_SECTIONS) else None
            runs.append(Run(number, file, Settings(valid, user_policies=user)))
        for k, settings in enumerate(subparts, start=1):
            runs.append(Run(number, file, settings, k if len(subparts) > 1 else None))
    return runs


RUNS = _runs()


def _params(
    runs: list[Run], gaps: dict[str, str] | None = None, *, xfails: bool = True
) -> list[object]:
    out = []
    for run in runs:
        marks: list[pytest.MarkDecorator] = []
        if run.number in SKIPS:
            marks.append(pytest.mark.skip(reason=SKIPS[run.number]))
        elif xfails and run.number in XFAILS:
            marks.append(pytest.mark.xfail(reason=XFAILS[run.number], strict=True))
        elif gaps and run.number in gaps:
            marks.append(pytest.mark.xfail(reason=gaps[run.number], strict=False))
        out.append(pytest.param(run, id=run.id, marks=marks))
    return out


@functools.cache
def _anchor() -> x509.Certificate:
    return x509.load_der_x509_certificate(
        read_bytes(FOLDER, DATA, "certs", "TrustAnchorRootCertificate.crt")
    )


@functools.cache
def _crls() -> tuple[x509.CertificateRevocationList, ...]:
    folder = corpus_path(FOLDER, DATA, "crls")
    return tuple(x509.load_der_x509_crl(p.read_bytes()) for p in sorted(folder.glob("*.crl")))


@functools.cache
def _message(file: str, legacy: bool) -> tuple[x509.Certificate, tuple[x509.Certificate, ...]]:
    """The verified signer certificate and the certificates the message carries."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opened = unwrap(read_bytes(FOLDER, DATA, "smime", file), allow_legacy=legacy)
    (layer,) = opened.layers
    assert layer.signed is not None, layer.error
    (signer,) = layer.signed.signers
    return signer.certificate, layer.signed.certificates


def _validate(run: Run) -> PathResult:
    leaf, carried = _message(run.file, run.number in LEGACY)
    s = run.settings
    return validate(
        leaf,
        intermediates=carried,
        anchors=[_anchor()],
        at=AT,
        allow_legacy=run.number in LEGACY,
        initial_policies=s.initial_policies,
        require_explicit_policy=s.explicit,
        inhibit_mapping=s.inhibit_mapping,
        inhibit_any_policy=s.inhibit_any,
    )


def _revocation_reasons(run: Run, path: PathResult) -> tuple[str, ...]:
    """The message's certificates go along: some are the CA's CRL signing certificates."""
    options = RevocationOptions(
        policy=RevocationPolicy.HARD, crls=_crls(), fetcher=MemoryFetcher(), allow_legacy=True
    )
    _leaf, carried = _message(run.file, run.number in LEGACY)
    return check_chain(path.chain, at=AT, options=options, extra_certs=carried).reasons


@pytest.mark.parametrize("run", _params(RUNS))
def test_pkits_path(run: Run) -> None:
    """RFC 5280 6.1 without revocation: valid runs validate, invalid ones fail; a run that
    PKITS fails only through a CRL must have a valid path."""
    path = _validate(run)
    if run.number in REVOCATION_FAILURES:
        assert path.trusted, path.reasons
        return
    assert path.trusted is run.settings.valid, path.reasons or "validated, but PKITS says invalid"
    if run.settings.valid and run.settings.user_policies is not None:
        assert set(path.policies) == set(run.settings.user_policies)


DEFAULT_RUNS = [r for r in RUNS if r.settings.default]


@pytest.mark.parametrize("run", _params(DEFAULT_RUNS, REVOCATION_GAPS))
def test_pkits_with_revocation(run: Run) -> None:
    """The whole PKITS verdict: the path, then its CRLs (every PKITS test expects them
    checked; a missing or unusable CRL fails under the HARD policy)."""
    path = _validate(run)
    reasons = list(path.reasons) or list(_revocation_reasons(run, path))
    assert (not reasons) is run.settings.valid, reasons or "valid, but PKITS says invalid"


@pytest.mark.parametrize(
    "run", _params([r for r in DEFAULT_RUNS if r.number not in REVOCATION_FAILURES], xfails=False)
)
def test_verify_agrees_on_trust(run: Run) -> None:
    """``smimekit.verify`` builds the same path: its signer is trusted exactly when the path
    is (runs that only a CRL fails are left out: revocation is the caller's option there)."""
    legacy = run.number in LEGACY
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        verified = smimekit.verify(
            read_bytes(FOLDER, DATA, "smime", run.file),
            trust=[_anchor()],
            at=AT,
            allow_legacy=legacy,
            raise_for_failure=False,
        )
    (signer,) = verified.verdict.signers
    assert signer.trusted is _validate(run).trusted


def test_uid_path_validates_from_the_certificate_files() -> None:
    """PKITS 4.3.6 with the certificates as published (issuer/subjectUniqueID present)."""

    def cert(name: str) -> x509.Certificate:
        return x509.load_der_x509_certificate(read_bytes(FOLDER, DATA, "certs", name))

    path = validate(
        cert("ValidNameUIDsTest6EE.crt"),
        intermediates=[cert("UIDCACert.crt")],
        anchors=[_anchor()],
        at=AT,
    )
    assert path.trusted, path.reasons


def test_dsa_sha1_paths_are_refused_by_default() -> None:
    """The S/MIME policy on top of PKITS 4.1.4: DSA-1024 with SHA-1 is legacy."""
    leaf, carried = _message("SignedValidDSASignaturesTest4.eml", True)
    path = validate(leaf, intermediates=carried, anchors=[_anchor()], at=AT)
    assert not path.trusted
    assert any("DSA" in r or "SHA1" in r for r in path.reasons)


def test_every_message_has_a_row() -> None:
    messages = {f for f in list_files(f"{FOLDER}/{DATA}/smime") if f.endswith(".eml")}
    assert messages == {f"Signed{name}.eml" for _number, name in TESTS}


def test_table_matches_the_file_names() -> None:
    """A message named Valid/Invalid keeps that verdict under the default settings."""
    for run in DEFAULT_RUNS:
        name = run.file.removeprefix("Signed")
        if name.startswith("Valid"):
            assert run.settings.valid, run.id
        elif name.startswith("Invalid"):
            assert not run.settings.valid, run.id
