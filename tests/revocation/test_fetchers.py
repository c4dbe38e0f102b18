"""The fetchers: real HTTP on loopback (timeouts, size caps, schemes) and the in-memory one."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from loopback import FileServer, free_port

from smimekit.errors import FetchError, RevocationError
from smimekit.validation.fetchers import MemoryFetcher, UrllibFetcher


@pytest.mark.parametrize("url", [
    "file:///etc/passwd",
    "ftp://ftp.test/ca.crl",
    "ldap://ldap.test/cn=CA?certificateRevocationList",
    "data:,hello",
    "http:///no-host",
    "ca.crl",
])
def test_only_http_urls_are_fetched(url: str) -> None:
    with pytest.raises(FetchError) as caught:
        UrllibFetcher().fetch_crl(url)
    assert caught.value.url == url
    assert isinstance(caught.value, RevocationError)


def test_crl_is_fetched(crl_server: FileServer) -> None:
    crl_server.files["ca.crl"] = b"0" * 1000
    assert UrllibFetcher().fetch_crl(crl_server.base + "/ca.crl") == b"0" * 1000
    assert crl_server.hits["ca.crl"] == 1


def test_http_error_is_a_fetch_error(crl_server: FileServer) -> None:
    with pytest.raises(FetchError, match="HTTP 404"):
        UrllibFetcher().fetch_crl(crl_server.base + "/missing.crl")


def test_closed_port_is_a_fetch_error() -> None:
    with pytest.raises(FetchError, match=r"127\.0\.0\.1"):
        UrllibFetcher(timeout=2).post_ocsp(f"http://127.0.0.1:{free_port()}/", b"\x30\x00")


@pytest.mark.parametrize("unsized", [False, True])
def test_answers_over_the_size_cap_are_refused(crl_server: FileServer, unsized: bool) -> None:
    crl_server.files["big.crl"] = b"x" * 5000
    if unsized:
        crl_server.unsized.add("big.crl")
    with pytest.raises(FetchError, match="exceeds 4096"):
        UrllibFetcher(max_crl_bytes=4096).fetch_crl(crl_server.base + "/big.crl")
    assert UrllibFetcher(max_crl_bytes=5000).fetch_crl(crl_server.base + "/big.crl")


@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://ftp.test/ca.crl"])
def test_redirect_to_another_scheme_is_refused(crl_server: FileServer, target: str) -> None:
    crl_server.redirects["ca.crl"] = target
    with pytest.raises(FetchError, match=r"not allowed|refusing to fetch"):
        UrllibFetcher().fetch_crl(crl_server.base + "/ca.crl")


def test_redirect_within_http_is_followed(crl_server: FileServer) -> None:
    crl_server.redirects["old.crl"] = crl_server.base + "/ca.crl"
    crl_server.files["ca.crl"] = b"crl"
    assert UrllibFetcher().fetch_crl(crl_server.base + "/old.crl") == b"crl"


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (kernel backlog) but never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(4)
        yield int(s.getsockname()[1])


def test_timeout_is_a_fetch_error(silent_port: int) -> None:
    started = time.monotonic()
    with pytest.raises(FetchError):
        UrllibFetcher(timeout=0.3).fetch_crl(f"http://127.0.0.1:{silent_port}/ca.crl")
    assert time.monotonic() - started < 3


def test_memory_fetcher_records_calls_and_refuses_the_rest() -> None:
    fetcher = MemoryFetcher(crls={"http://a.test/x.crl": b"crl"},
                            ocsp={"http://o.test/": lambda der: der[::-1]})
    assert fetcher.fetch_crl("http://a.test/x.crl") == b"crl"
    assert fetcher.post_ocsp("http://o.test/", b"ab") == b"ba"
    assert fetcher.get_ocsp("http://o.test/", b"ab") == b"ba"  # GET falls back to POST
    with pytest.raises(FetchError, match="connection refused"):
        fetcher.fetch_crl("http://b.test/y.crl")
    with pytest.raises(FetchError):
        fetcher.fetch_crl("file:///etc/passwd")
    assert [kind for kind, _ in fetcher.calls] == ["crl", "ocsp", "ocsp", "crl", "crl"]
