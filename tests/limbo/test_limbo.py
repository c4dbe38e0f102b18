"""x509-limbo through smimekit's path validator, one test per testcase id (see cases.py).

Both limbo files are used: the suite regenerated from upstream HEAD (208 cases, fresh keys,
the CLIENT rfc822Name cases) and the last upstream-published limbo.json (135 cases, upstream's
own bytes). A case id present in both runs against both.

Translation: limbo's SERVER/CLIENT validation is the chain verdict ``PathResult.trusted``
(the leaves carry TLS EKUs, so S/MIME usage is not asked, except in the two rows that test
the EKU extension itself); ``max_chain_depth`` is ``max_intermediates``; ``crls`` go to the
revocation module under the HARD policy without network. A null ``validation_time`` means
"now" to limbo; its certificates then run 1970-2969, so a fixed 2026-01-01 stands for now.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import warnings
from typing import Any

import pytest
from corpus.vectors import read_bytes
from cryptography import x509

from smimekit.validation.fetchers import MemoryFetcher
from smimekit.validation.path import validate
from smimekit.validation.revocation import RevocationOptions, RevocationPolicy, check_chain

from .cases import CASES, Decision

FOLDER = "x509-limbo"
FILES = (
    "limbo-regenerated-from-8a2e6f4-no-bettertls.json",
    "limbo-upstream-ddc40b4-2023-12-02.json",
)
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

pytestmark = pytest.mark.filterwarnings("ignore:Parsed a serial number")


@functools.cache
def _testcases(file: str) -> dict[str, dict[str, Any]]:
    return {case["id"]: case for case in json.loads(read_bytes(FOLDER, file))["testcases"]}


def _load(pem: str) -> x509.Certificate | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return x509.load_pem_x509_certificate(pem.encode())
    except ValueError:
        return None


def _verdict(case: dict[str, Any], decision: Decision) -> tuple[bool, list[str]]:
    """(limbo's SUCCESS?, why not) for one testcase."""
    leaf = _load(case["peer_certificate"])
    if leaf is None:
        return False, ["the peer certificate does not parse"]
    when = case["validation_time"]
    at = dt.datetime.fromisoformat(when) if when else NOW
    result = validate(
        leaf,
        intermediates=[c for c in map(_load, case["untrusted_intermediates"]) if c is not None],
        anchors=[c for c in map(_load, case["trusted_certs"]) if c is not None],
        at=at,
        max_intermediates=case["max_chain_depth"],
    )
    reasons = list(result.reasons)
    if decision.check == "ok":
        reasons += result.usage_reasons
    if not reasons and decision.revocation:
        options = RevocationOptions(
            policy=RevocationPolicy.HARD,
            crls=[crl.encode() for crl in case["crls"]],
            fetcher=MemoryFetcher(),
        )
        reasons += check_chain(result.chain, at=at, options=options).reasons
    return not reasons, reasons


def _params() -> list[Any]:
    out = []
    for case_id, decision in CASES.items():
        marks: list[pytest.MarkDecorator] = []
        if decision.skip:
            marks.append(pytest.mark.skip(reason=decision.skip))
        elif decision.xfail:
            marks.append(pytest.mark.xfail(reason=decision.xfail, strict=False))
        out.append(pytest.param(case_id, id=case_id, marks=marks))
    return out


@pytest.mark.parametrize("case_id", _params())
def test_limbo(case_id: str) -> None:
    decision = CASES[case_id]
    ran = 0
    for file in FILES:
        case = _testcases(file).get(case_id)
        if case is None:
            continue
        ran += 1
        success, reasons = _verdict(case, decision)
        expected = case["expected_result"] == "SUCCESS"
        assert success is expected, f"{file}: {reasons or 'validated'}"
    assert ran


def test_every_case_has_a_row() -> None:
    ids = {case_id for file in FILES for case_id in _testcases(file)}
    assert ids == set(CASES)
