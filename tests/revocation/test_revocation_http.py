"""Revocation over real HTTP on loopback: CRLs served by ``http.server``, the real fetcher."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from loopback import FileServer, free_port
from revpki import DAY, HOUR, NOW, RevPKI, der, issue

from smimekit.validation.fetchers import Fetcher, UrllibFetcher
from smimekit.validation.revocation import RevocationOptions, RevocationPolicy, check_chain


class Recording(Fetcher):
    """The real fetcher, counting what it is asked."""

    def __init__(self) -> None:
        self.inner = UrllibFetcher(timeout=3)
        self.calls: list[str] = []

    def fetch_crl(self, url: str) -> bytes:
        self.calls.append(url)
        return self.inner.fetch_crl(url)

    def post_ocsp(self, url: str, request_der: bytes) -> bytes:
        self.calls.append(url)
        return self.inner.post_ocsp(url, request_der)


def test_good_over_http_for_the_whole_chain(served_pki: RevPKI, crl_server: FileServer) -> None:
    bob = served_pki.person("bob", ocsp_url=False)
    report = check_chain(served_pki.chain(bob), options=RevocationOptions(timeout=3))
    assert [(s.status, s.source) for s in report.statuses] == [("good", "crl"), ("good", "crl")]
    assert report.ok and not report.warnings
    assert crl_server.hits == {"ca.crl": 1, "root.crl": 1}


def test_revoked_over_http(served_pki: RevPKI, crl_server: FileServer) -> None:
    mallory = served_pki.person("mallory", ocsp_url=False)
    crl_server.files["ca.crl"] = der(served_pki.crl(
        [(mallory.cert, NOW - DAY, x509.ReasonFlags.key_compromise)]))
    report = check_chain(served_pki.chain(mallory), options=RevocationOptions(timeout=3))
    assert report.statuses[0].status == "revoked"
    assert report.statuses[0].url == served_pki.ca_crl_url
    assert not report.ok


def test_cache_spares_the_second_fetch(served_pki: RevPKI, crl_server: FileServer,
                                      tmp_path: Path) -> None:
    bob = served_pki.person("bob", ocsp_url=False)
    options = RevocationOptions(cache_dir=tmp_path / "revocation", timeout=3)
    for _ in range(3):
        assert check_chain(served_pki.chain(bob), options=options).ok
    assert crl_server.hits == {"ca.crl": 1, "root.crl": 1}


def test_delta_crl_over_http(served_pki: RevPKI, crl_server: FileServer) -> None:
    mallory = served_pki.person("mallory", ocsp_url=False)
    crl_server.files["ca.crl"] = der(served_pki.crl(number=7,
                                                    freshest_url=served_pki.url("ca-delta.crl")))
    crl_server.files["ca-delta.crl"] = der(served_pki.crl([(mallory.cert, NOW - HOUR, None)],
                                                          number=8, delta_of=7))
    report = check_chain(served_pki.chain(mallory)[:2], options=RevocationOptions(timeout=3))
    assert report.statuses[0].status == "revoked"
    assert "delta CRL 8 applied" in report.statuses[0].detail


@pytest.mark.parametrize(("policy", "ok", "asked"), [
    (RevocationPolicy.HARD, False, True),
    (RevocationPolicy.SOFT, True, True),
    (RevocationPolicy.OFFLINE, True, False),
])
def test_responder_down_under_each_policy(served_pki: RevPKI, policy: RevocationPolicy,
                                          ok: bool, asked: bool) -> None:
    down = f"http://127.0.0.1:{free_port()}/"
    lonely = issue("lonely", served_pki.ca, ocsp_url=down)
    fetcher = Recording()
    report = check_chain([lonely.cert, served_pki.ca.cert],
                         options=RevocationOptions(policy=policy, fetcher=fetcher))
    assert report.statuses[0].status == "unknown"
    assert report.ok is ok
    assert bool(report.warnings) is ok
    assert fetcher.calls == ([down] if asked else [])


def test_responder_down_falls_back_to_the_crl(served_pki: RevPKI, crl_server: FileServer) -> None:
    bob = served_pki.person("bob")  # names the OCSP responder at port 1: refused
    report = check_chain(served_pki.chain(bob)[:2],
                         options=RevocationOptions(policy=RevocationPolicy.HARD, timeout=3))
    assert report.ok and report.statuses[0].protocol == "crl"


def test_stale_crl_served_fails_hard(served_pki: RevPKI, crl_server: FileServer) -> None:
    bob = served_pki.person("bob", ocsp_url=False)
    crl_server.files["ca.crl"] = der(served_pki.crl(this_update=NOW - 3 * DAY,
                                                    next_update=NOW - DAY))
    report = check_chain(served_pki.chain(bob)[:2],
                         options=RevocationOptions(policy=RevocationPolicy.HARD, timeout=3))
    assert not report.ok and "stale" in report.reasons[0]


def test_garbage_served_as_a_crl_is_no_answer(served_pki: RevPKI, crl_server: FileServer) -> None:
    bob = served_pki.person("bob", ocsp_url=False)
    crl_server.files["ca.crl"] = b"<html>maintenance</html>"
    report = check_chain(served_pki.chain(bob)[:2], options=RevocationOptions(timeout=3))
    assert report.statuses[0].status == "unknown" and "not a CRL" in report.statuses[0].detail
