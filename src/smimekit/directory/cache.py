"""The lookup cache: what each source answered for an address, in files under
``<data-dir>/directory-cache/`` (folder 0700, files 0600, written atomically).

One file per address, named by the SHA-256 of the address in its compared form
(:func:`smimekit.mailbox.comparable`), holding per source the DER of its candidates (with
their chains and what the source said of them) and when it was fetched. The cache keeps
*candidates*, never verdicts: every use validates them again, revocation included. An entry
is used for ``cache_seconds`` after it was fetched, and never past the notAfter of a
certificate in it that was valid when fetched. Errors are never cached (the source is asked
again next time). A file that cannot be read or parsed is ignored, and replaced by the next
answer: the cache is never a reason for a lookup to fail.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from smimekit.directory.sources import Candidate, Found
from smimekit.fsutil import atomic_write, private_dir
from smimekit.mailbox import comparable

__all__ = ["CACHE_DIR", "CachedAnswer", "LookupCache"]

log = logging.getLogger(__name__)

CACHE_DIR = "directory-cache"
_VERSION = 1


@dataclass(frozen=True)
class CachedAnswer:
    """One source's cached answer for an address."""

    found: Found
    fetched: dt.datetime
    expires: dt.datetime


class LookupCache:
    """The cache files in ``folder`` (see the module docstring)."""

    def __init__(self, folder: Path, cache_seconds: int) -> None:
        self.folder = Path(folder)
        self.cache_seconds = cache_seconds

    @classmethod
    def in_data_dir(cls, data_dir: Path, cache_seconds: int) -> LookupCache:
        return cls(Path(data_dir) / CACHE_DIR, cache_seconds)

    def path(self, address: str) -> Path:
        key = hashlib.sha256(comparable(address).encode("utf-8")).hexdigest()
        return self.folder / f"{key}.json"

    def get(self, address: str, source: str, now: dt.datetime) -> CachedAnswer | None:
        """The answer ``source`` gave for ``address``, if cached and still fresh at ``now``."""
        entry = self._read(address).get(source)
        if entry is None:
            return None
        try:
            answer = _decode(entry, source)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("damaged lookup cache entry ignored",
                        extra={"file": str(self.path(address)), "error": str(exc)})
            return None
        return answer if answer.fetched <= now < answer.expires else None

    def put(self, address: str, source: str, found: Found, now: dt.datetime) -> None:
        """Keep ``found`` as ``source``'s answer for ``address``, fetched ``now``. A cache
        that cannot be written is logged and otherwise ignored."""
        if self.cache_seconds <= 0:
            return
        entries = self._read(address)
        entries[source] = _encode(found, now, self._expiry(found, now))
        document = {"version": _VERSION, "address": comparable(address), "sources": entries}
        try:
            private_dir(self.folder)
            atomic_write(self.path(address), json.dumps(document, sort_keys=True).encode(),
                         mode=0o600, sync_dir=False)
        except OSError as exc:
            log.warning("lookup cache not written",
                        extra={"folder": str(self.folder), "error": exc.strerror or str(exc)})

    def _expiry(self, found: Found, now: dt.datetime) -> dt.datetime:
        expires = now + dt.timedelta(seconds=self.cache_seconds)
        for candidate in found.candidates:
            not_after = candidate.certificate.not_valid_after_utc
            if not_after > now:  # one expired already does not make the answer stale
                expires = min(expires, not_after)
        return expires

    def _read(self, address: str) -> dict[str, Any]:
        path = self.path(address)
        try:
            document = json.loads(path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("unreadable lookup cache file ignored",
                        extra={"file": str(path), "error": str(exc)})
            return {}
        if (not isinstance(document, dict) or document.get("version") != _VERSION
                or document.get("address") != comparable(address)
                or not isinstance(document.get("sources"), dict)):
            log.warning("lookup cache file of another form ignored", extra={"file": str(path)})
            return {}
        return dict(document["sources"])


def _der(cert: x509.Certificate) -> str:
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii")


def _cert(text: str) -> x509.Certificate:
    return x509.load_der_x509_certificate(base64.b64decode(text, validate=True))


def _time(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse_time(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    when = dt.datetime.fromisoformat(str(value))
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _encode(found: Found, now: dt.datetime, expires: dt.datetime) -> dict[str, Any]:
    return {
        "fetched": now.isoformat(),
        "expires": expires.isoformat(),
        "notes": list(found.notes),
        "candidates": [{
            "der": _der(c.certificate),
            "chain": [_der(x) for x in c.chain],
            "where": c.where,
            "preferred": c.preferred,
            "first_seen": _time(c.first_seen),
            "last_seen": _time(c.last_seen),
        } for c in found.candidates],
    }


def _decode(entry: dict[str, Any], source: str) -> CachedAnswer:
    fetched, expires = _parse_time(entry["fetched"]), _parse_time(entry["expires"])
    if fetched is None or expires is None:
        raise ValueError("no fetch time")
    candidates = [Candidate(
        certificate=_cert(c["der"]),
        source=source,
        chain=tuple(_cert(x) for x in c["chain"]),
        where=str(c["where"]),
        preferred=bool(c["preferred"]),
        first_seen=_parse_time(c["first_seen"]),
        last_seen=_parse_time(c["last_seen"]),
    ) for c in entry["candidates"]]
    return CachedAnswer(Found(tuple(candidates), tuple(str(n) for n in entry["notes"])),
                        fetched, expires)
