"""Network I/O for revocation, behind one small interface.

:class:`Fetcher` is what :mod:`smimekit.validation.revocation` calls to get a CRL or an OCSP
response. :class:`UrllibFetcher` is the real one (standard library HTTP, a timeout, a size
cap, http and https only, no redirect to any other scheme); :class:`MemoryFetcher` answers
from a dictionary and records every call, for tests and for callers that bring their own
transport.

Every failure surfaces as :class:`~smimekit.errors.FetchError`, which carries the URL.
"""

from __future__ import annotations

import abc
import base64
import functools
import logging
import urllib.parse
from collections.abc import Callable, Mapping
from typing import IO, TYPE_CHECKING, Any

from smimekit.errors import FetchError

if TYPE_CHECKING:
    import http.client
    import urllib.request

__all__ = ["Fetcher", "MemoryFetcher", "UrllibFetcher"]

log = logging.getLogger(__name__)

MAX_CRL_BYTES = 10 * 1024 * 1024
MAX_OCSP_BYTES = 1024 * 1024
DEFAULT_TIMEOUT = 10.0
# RFC 6960 appendix A.1: GET only for requests whose encoding fits in 255 bytes.
_MAX_GET_REQUEST = 255
_SCHEMES = ("http", "https")


class Fetcher(abc.ABC):
    """Where CRLs and OCSP responses come from. Implementations raise only ``FetchError``."""

    @abc.abstractmethod
    def fetch_crl(self, url: str) -> bytes:
        """The CRL at ``url``, as served (DER, sometimes PEM).

        Raises:
            FetchError: the URL cannot be fetched, or the answer is too large.
        """

    @abc.abstractmethod
    def post_ocsp(self, url: str, request_der: bytes) -> bytes:
        """POST a DER OCSPRequest to ``url`` (RFC 6960 appendix A.1); the DER response.

        Raises:
            FetchError: the responder cannot be reached, answers an HTTP error, or too much.
        """

    def get_ocsp(self, url: str, request_der: bytes) -> bytes:
        """The same question by HTTP GET (cacheable by proxies); POST unless overridden.

        Raises:
            FetchError: as :meth:`post_ocsp`.
        """
        return self.post_ocsp(url, request_der)


def check_url(url: str) -> str:
    """``url`` if it is an http(s) URL with a host.

    Raises:
        FetchError: any other scheme (ldap, file, ftp...) or no host.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in _SCHEMES:
        raise FetchError(f"refusing to fetch {parts.scheme or 'a schemeless'} URL {url!r}", url=url)
    if not parts.hostname:
        raise FetchError(f"URL without a host: {url!r}", url=url)
    return url


@functools.cache
def _http_only_redirects() -> type[Any]:
    # Defined on first use: urllib.request and http.client (with ssl, socket, email.parser)
    # cost start-up time that a run which never fetches should not pay.
    import urllib.request

    class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
        # urllib follows redirects to ftp: too; revocation URLs may only lead to http(s).
        def redirect_request(
            self,
            req: urllib.request.Request,
            fp: IO[bytes],
            code: int,
            msg: str,
            headers: http.client.HTTPMessage,
            newurl: str,
        ) -> urllib.request.Request | None:
            check_url(newurl)
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    return _HttpOnlyRedirects


class UrllibFetcher(Fetcher):
    """HTTP(S) through :mod:`urllib.request` (honours the usual ``*_proxy`` variables)."""

    def __init__(
        self,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_crl_bytes: int = MAX_CRL_BYTES,
        max_ocsp_bytes: int = MAX_OCSP_BYTES,
        user_agent: str = "smimekit",
    ) -> None:
        self.timeout = timeout
        self.max_crl_bytes = max_crl_bytes
        self.max_ocsp_bytes = max_ocsp_bytes
        self.user_agent = user_agent
        self._opener: urllib.request.OpenerDirector | None = None  # made on the first fetch

    @property
    def opener(self) -> urllib.request.OpenerDirector:
        if self._opener is None:
            import urllib.request

            # Only the handlers we need: no file:, ftp: or data: handlers to be tricked into.
            opener = urllib.request.OpenerDirector()
            for handler in (
                urllib.request.ProxyHandler(),
                urllib.request.HTTPHandler(),
                urllib.request.HTTPSHandler(),
                urllib.request.HTTPDefaultErrorHandler(),
                _http_only_redirects()(),
                urllib.request.HTTPErrorProcessor(),
            ):
                opener.add_handler(handler)
            self._opener = opener
        return self._opener

    def fetch_crl(self, url: str) -> bytes:
        return self._exchange(url, None, "application/pkix-crl, */*", self.max_crl_bytes)

    def post_ocsp(self, url: str, request_der: bytes) -> bytes:
        return self._exchange(url, request_der, "application/ocsp-response", self.max_ocsp_bytes)

    def get_ocsp(self, url: str, request_der: bytes) -> bytes:
        encoded = base64.b64encode(request_der).decode("ascii")
        if len(encoded) > _MAX_GET_REQUEST:
            return self.post_ocsp(url, request_der)
        full = url.rstrip("/") + "/" + urllib.parse.quote(encoded, safe="")
        return self._exchange(full, None, "application/ocsp-response", self.max_ocsp_bytes)

    def _exchange(self, url: str, post: bytes | None, accept: str, limit: int) -> bytes:
        import http.client
        import urllib.error
        import urllib.request

        headers = {"Accept": accept, "User-Agent": self.user_agent}
        if post is not None:
            headers["Content-Type"] = "application/ocsp-request"
        # The scheme is checked first, and the opener has no file:/ftp: handlers anyway.
        request = urllib.request.Request(  # noqa: S310
            check_url(url), data=post, headers=headers, method="GET" if post is None else "POST"
        )
        log.debug("revocation fetch", extra={"url": url, "method": request.get_method()})
        try:
            with self.opener.open(request, timeout=self.timeout) as response:
                declared = response.headers.get("Content-Length")
                if declared is not None and declared.isdigit() and int(declared) > limit:
                    raise FetchError(f"{url}: answer of {declared} bytes exceeds {limit}", url=url)
                body: bytes = response.read(limit + 1)
        except FetchError:
            raise
        except urllib.error.HTTPError as exc:
            raise FetchError(f"{url}: HTTP {exc.code} {exc.reason}", url=url) from exc
        except urllib.error.URLError as exc:
            raise FetchError(f"{url}: {exc.reason}", url=url) from exc
        except (OSError, http.client.HTTPException, ValueError) as exc:
            # timeouts, resets, malformed status lines, bad port numbers
            raise FetchError(f"{url}: {exc or type(exc).__name__}", url=url) from exc
        if len(body) > limit:
            raise FetchError(f"{url}: answer exceeds {limit} bytes", url=url)
        return body


OcspAnswer = bytes | Callable[[bytes], bytes]


class MemoryFetcher(Fetcher):
    """Answers from dictionaries; every call is appended to :attr:`calls` as (kind, url).

    ``ocsp`` values are either a fixed DER response or a function of the request DER (a
    responder in a test). A URL in neither dictionary fails like a closed port.
    """

    def __init__(
        self,
        crls: Mapping[str, bytes] | None = None,
        ocsp: Mapping[str, OcspAnswer] | None = None,
    ) -> None:
        self.crls: dict[str, bytes] = dict(crls or {})
        self.ocsp: dict[str, OcspAnswer] = dict(ocsp or {})
        self.calls: list[tuple[str, str]] = []

    def fetch_crl(self, url: str) -> bytes:
        self.calls.append(("crl", url))
        check_url(url)
        try:
            return self.crls[url]
        except KeyError:
            raise FetchError(f"{url}: connection refused", url=url) from None

    def post_ocsp(self, url: str, request_der: bytes) -> bytes:
        self.calls.append(("ocsp", url))
        check_url(url)
        try:
            answer = self.ocsp[url]
        except KeyError:
            raise FetchError(f"{url}: connection refused", url=url) from None
        return answer(request_der) if callable(answer) else answer

    def __repr__(self) -> str:
        return f"MemoryFetcher(crls={sorted(self.crls)}, ocsp={sorted(self.ocsp)})"
