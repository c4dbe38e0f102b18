"""A short in-process memo of the directory's answers for the gateway (docs/gateway.md,
"Performance").

The :class:`~smimekit.directory.resolver.Resolver` asks the store sources and validates every
candidate (chain, dates, usage) on each lookup, which costs more than signing and encrypting a
small message. :class:`LookupMemo` keeps a lookup's result in memory for ``seconds`` so that a
burst of mail to the same recipient validates once:

* only a result with a usable certificate and no failed source is kept: "no certificate" and
  "cannot tell" are asked again every time (a certificate imported a second ago is used, a
  source that was down is retried);
* an entry is dropped at ``seconds`` or when the first certificate of any usable chain passes
  its notAfter, whichever comes first, so an expired certificate is never handed out;
* at most ``entries`` addresses (the least recently used go first);
* a certificate revoked, removed or replaced in a source is seen at most ``seconds`` late:
  the trade-off ``[gateway] lookup_memo_seconds`` sets (0: no memo).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from smimekit.directory.resolver import LookupResult
    from smimekit.gateway.outbound import CertificateLookup

__all__ = ["LookupMemo"]


class LookupMemo:
    """A :class:`~smimekit.gateway.outbound.CertificateLookup` that remembers ``lookup``'s
    usable answers for a short time (see the module docstring). Safe across threads."""

    def __init__(self, lookup: CertificateLookup, seconds: float, *, entries: int = 10_000,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        self._lookup = lookup
        self._ttl = dt.timedelta(seconds=max(0.0, seconds))
        self._entries = entries
        self._clock = clock
        self._memo: OrderedDict[str, tuple[dt.datetime, LookupResult]] = OrderedDict()
        self._lock = threading.Lock()

    def lookup(self, address: str) -> LookupResult:
        """As the wrapped lookup's (DirectoryError for an address that is not a mailbox)."""
        key = address.strip().lower()
        now = self._clock()
        with self._lock:
            hit = self._memo.get(key)
            if hit is not None:
                if now < hit[0]:
                    self._memo.move_to_end(key)
                    return hit[1]
                del self._memo[key]
        result = self._lookup.lookup(address)
        if self._ttl and result.usable and all(a.status != "error" for a in result.answers):
            until = min([now + self._ttl, *(c.not_valid_after_utc for u in result.usable
                                             for c in (u.certificate, *u.chain))])
            with self._lock:
                self._memo[key] = (until, result)
                self._memo.move_to_end(key)
                while len(self._memo) > self._entries:
                    self._memo.popitem(last=False)
        return result

    def forget(self) -> None:
        """Drop every remembered answer."""
        with self._lock:
            self._memo.clear()
