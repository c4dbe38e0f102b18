"""OCSP against an independent responder: ``openssl ocsp -port`` on loopback.

Three responders over one index: the delegated responder (id-kp-OCSPSigning), the CA itself,
and a "rogue" delegated certificate without the OCSPSigning EKU, which must be refused.
CRLs come from a loopback ``http.server``.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509 import ocsp
from loopback import FileServer, free_port
from revpki import HOUR, NOW, OpensslResponder, Party, RevPKI, der, issue

from smimekit.validation.fetchers import Fetcher, UrllibFetcher
from smimekit.validation.ocsp import evaluate_ocsp, ocsp_question
from smimekit.validation.revinfo import Context
from smimekit.validation.revocation import RevocationOptions, RevocationPolicy, check_chain

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed"),
]


class Counting(Fetcher):
    def __init__(self) -> None:
        self.inner = UrllibFetcher(timeout=5)
        self.calls: list[tuple[str, str]] = []

    def fetch_crl(self, url: str) -> bytes:
        self.calls.append(("crl", url))
        return self.inner.fetch_crl(url)

    def post_ocsp(self, url: str, request_der: bytes) -> bytes:
        self.calls.append(("ocsp", url))
        return self.inner.post_ocsp(url, request_der)


@dataclass
class World:
    pki: RevPKI
    alice: Party  # good
    mallory: Party  # revoked an hour ago, keyCompromise
    stranger: Party  # not in the index: 'unknown'
    by_ca: Party  # good, asks the responder that signs with the CA key
    by_rogue: Party  # good, asks the responder without id-kp-OCSPSigning
    delegated: OpensslResponder
    ca_signed: OpensslResponder
    rogue: OpensslResponder


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    crls = FileServer()
    ports = [free_port() for _ in range(3)]
    pki = RevPKI(http_base=crls.base, ocsp_url=f"http://127.0.0.1:{ports[0]}/")
    crls.files["root.crl"] = der(pki.crl(issuer=pki.root))
    crls.files["ca.crl"] = der(pki.crl())
    alice = pki.person("alice", crl=False)
    mallory = pki.person("mallory", crl=False)
    stranger = pki.person("stranger", crl=False)
    by_ca = issue("by-ca", pki.ca, ocsp_url=f"http://127.0.0.1:{ports[1]}/")
    by_rogue = issue("by-rogue", pki.ca, ocsp_url=f"http://127.0.0.1:{ports[2]}/")
    entries = [(alice.cert, "V", None, None), (by_ca.cert, "V", None, None),
               (by_rogue.cert, "V", None, None),
               (mallory.cert, "R", NOW - HOUR, "keyCompromise")]
    base = tmp_path_factory.mktemp("ocsp")
    started: list[OpensslResponder] = []
    try:
        for name, port, signer in (("delegated", ports[0], pki.responder),
                                   ("ca", ports[1], pki.ca),
                                   ("rogue", ports[2], pki.rogue_responder)):
            started.append(OpensslResponder(base / name, port, pki.ca, signer, entries))
        yield World(pki, alice, mallory, stranger, by_ca, by_rogue, *started)
    finally:
        for responder in started:
            responder.stop()
        crls.stop()


def test_good_from_openssl_with_nonce_and_next_update(world: World) -> None:
    fetcher = Counting()
    report = check_chain(world.pki.chain(world.alice),
                         options=RevocationOptions(fetcher=fetcher, policy=RevocationPolicy.HARD))
    assert report.ok, report.reasons
    ee = report.statuses[0]
    assert (ee.status, ee.source, ee.protocol) == ("good", "ocsp", "ocsp")
    assert "delegated responder" in ee.detail
    assert ee.next_update is not None  # -nmin 5
    # one SHA-256 CertID request was enough: openssl answers any CertID hash
    assert fetcher.calls[0] == ("ocsp", world.pki.ocsp_url)
    assert [c for c in fetcher.calls if c[0] == "ocsp"] == [("ocsp", world.pki.ocsp_url)]


def test_openssl_echoes_the_nonce(world: World) -> None:
    question = ocsp_question(world.alice.cert, world.pki.ca.cert)
    answer = UrllibFetcher(timeout=5).post_ocsp(world.pki.ocsp_url, question.der)
    echoed = ocsp.load_der_ocsp_response(answer).extensions.get_extension_for_class(
        x509.OCSPNonce).value.nonce
    assert echoed == question.nonce
    now = dt.datetime.now(dt.UTC)
    ctx = Context(at=now, now=now)
    assert evaluate_ocsp(answer, world.alice.cert, world.pki.ca.cert, ctx,
                         nonce=question.nonce).status == "good"


def test_get_request_is_answered_too(world: World) -> None:
    question = ocsp_question(world.alice.cert, world.pki.ca.cert, nonce=False)
    answer = UrllibFetcher(timeout=5).get_ocsp(world.pki.ocsp_url, question.der)
    assert ocsp.load_der_ocsp_response(answer).certificate_status == ocsp.OCSPCertStatus.GOOD


def test_revoked_from_openssl(world: World) -> None:
    report = check_chain(world.pki.chain(world.mallory), options=RevocationOptions(timeout=5))
    ee = report.statuses[0]
    assert (ee.status, ee.reason) == ("revoked", "keyCompromise")
    assert ee.revoked_at == NOW - HOUR
    assert not report.ok and "keyCompromise" in report.reasons[0]


def test_revoked_after_the_signing_time_passes_for_an_archive(world: World) -> None:
    report = check_chain(world.pki.chain(world.mallory), at=NOW - 2 * HOUR,
                         options=RevocationOptions(timeout=5, policy=RevocationPolicy.HARD))
    assert report.ok, report.reasons
    assert report.statuses[0].status == "good"
    assert report.statuses[0].revoked_at == NOW - HOUR
    assert any("after the validation time" in w for w in report.warnings)


def test_unknown_from_openssl_under_soft_and_hard(world: World) -> None:
    chain = world.pki.chain(world.stranger)
    soft = check_chain(chain, options=RevocationOptions(timeout=5))
    assert soft.statuses[0].status == "unknown" and soft.ok
    assert "does not know the certificate" in soft.warnings[0]
    hard = check_chain(chain, options=RevocationOptions(timeout=5,
                                                        policy=RevocationPolicy.HARD))
    assert not hard.ok


def test_responder_signing_with_the_ca_key(world: World) -> None:
    report = check_chain(world.pki.chain(world.by_ca),
                         options=RevocationOptions(timeout=5, policy=RevocationPolicy.HARD))
    assert report.ok, report.reasons
    assert "delegated" not in report.statuses[0].detail


def test_delegated_responder_without_ocsp_signing_eku_is_refused(world: World) -> None:
    report = check_chain(world.pki.chain(world.by_rogue),
                         options=RevocationOptions(timeout=5, policy=RevocationPolicy.HARD))
    assert report.statuses[0].status == "unknown"
    assert "lacks the id-kp-OCSPSigning" in report.statuses[0].detail
    assert not report.ok


def test_cached_response_spares_the_responder(world: World, tmp_path: Path) -> None:
    fetcher = Counting()
    options = RevocationOptions(fetcher=fetcher, cache_dir=tmp_path / "cache")
    first = check_chain(world.pki.chain(world.alice), options=options)
    asked = len(fetcher.calls)
    second = check_chain(world.pki.chain(world.alice), options=options)
    assert [s.source for s in first.statuses] == ["ocsp", "crl"]
    assert [s.source for s in second.statuses] == ["cache", "cache"]
    assert len(fetcher.calls) == asked
    offline = check_chain(world.pki.chain(world.alice),
                          options=RevocationOptions(cache_dir=tmp_path / "cache",
                                                    policy=RevocationPolicy.OFFLINE))
    assert offline.ok and not offline.warnings


def test_saved_openssl_response_used_offline(world: World) -> None:
    question = ocsp_question(world.mallory.cert, world.pki.ca.cert, nonce=False)
    saved = UrllibFetcher(timeout=5).post_ocsp(world.pki.ocsp_url, question.der)
    fetcher = Counting()
    report = check_chain(world.pki.chain(world.mallory)[:2],
                         options=RevocationOptions(ocsp_responses=[saved], fetcher=fetcher,
                                                   policy=RevocationPolicy.OFFLINE))
    assert report.statuses[0].status == "revoked"
    assert fetcher.calls == []
