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

:class:`HarvestMemo` spares the store a write per inbound signed message: a sender's valid
signature with the same certificates (signer, named encryption certificate, chain) is
recorded in the directory once per ``[gateway] harvest_memo_seconds``, not per message. The
harvested row's "last seen" and the message it names are at most that old; a certificate not
yet recorded, or with anything different, is recorded at once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from smimekit.directory.resolver import LookupResult
    from smimekit.gateway.outbound import CertificateLookup
    from smimekit.smime.wrap import Unwrapped
    from smimekit.validation.verdict import Verdict

__all__ = ["HarvestMemo", "LookupMemo"]


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


class HarvestMemo:
    """Which signers' certificates were recorded in the directory in the last ``seconds``
    (see the module docstring). Safe across threads."""

    def __init__(self, seconds: float, *, entries: int = 10_000) -> None:
        self._seconds = max(0.0, seconds)
        self._entries = entries
        self._memo: OrderedDict[bytes, float] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(unwrapped: Unwrapped, verdict: Verdict) -> bytes:
        """What recording ``unwrapped``'s signers would write, but the time and the message:
        the From address, each signer's certificate, the encryption certificate it names and
        the certificates that came with it, the validated chain."""
        digest = hashlib.sha256((verdict.from_address or "").strip().lower().encode())
        for layer in unwrapped.layers:
            if layer.kind != "signed" or layer.signed is None:
                continue
            for cert in layer.signed.certificates:
                digest.update(b"c" + cert.tbs_certificate_bytes)
            for signer in layer.signed.signers:
                digest.update(b"s" + signer.certificate.tbs_certificate_bytes)
                preference = signer.encryption_preference
                if preference is not None:
                    named = preference.certificate
                    digest.update(b"p" + (named.tbs_certificate_bytes if named is not None
                                          else repr(preference.identifier).encode()))
        for judged in verdict.signers:
            digest.update(b"v" + "/".join(c.sha256 for c in judged.chain).encode())
        return digest.digest()

    def recent(self, key: bytes) -> bool:
        """Whether ``key`` was recorded less than ``seconds`` ago."""
        now = time.monotonic()
        with self._lock:
            at = self._memo.get(key)
            if at is None:
                return False
            if now - at < self._seconds:
                return True
            del self._memo[key]
            return False

    def remember(self, key: bytes) -> None:
        """``key`` was recorded now."""
        if not self._seconds:
            return
        with self._lock:
            self._memo[key] = time.monotonic()
            self._memo.move_to_end(key)
            while len(self._memo) > self._entries:
                self._memo.popitem(last=False)

    def forget(self) -> None:
        with self._lock:
            self._memo.clear()
