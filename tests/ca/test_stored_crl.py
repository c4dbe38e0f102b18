"""StoredCrl: the newest CRL from the store; the one held is served through a store outage
until its nextUpdate, and never after."""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from smimekit.errors import CAError, StoreError
from smimekit.service.ca_endpoints import StoredCrl
from smimekit.store.revocation import PublishedCrl

NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)


class _Crls:
    """The store's latest_crl() over a list of publications; ``away`` makes it fail as a
    store whose database is unreachable does."""

    def __init__(self) -> None:
        self.published: list[PublishedCrl] = []
        self.away = False

    def publish(self, der: bytes, next_update: dt.datetime) -> None:
        self.published.append(PublishedCrl(len(self.published) + 1, next_update, der))

    def latest_crl(self, issuer_fingerprint: str, *,
                   with_der: bool = True) -> PublishedCrl | None:
        if self.away:
            raise StoreError("cannot use the database: connection refused")
        if not self.published:
            return None
        last = self.published[-1]
        return last if with_der else PublishedCrl(last.number, last.next_update, None)


def test_held_crl_is_served_through_an_outage_until_next_update(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = [NOW]
    crls = _Crls()
    crls.publish(b"crl one", NOW + dt.timedelta(days=7))
    stored = StoredCrl(crls, "issuer", clock=lambda: clock[0])
    stored.warm()
    crls.publish(b"crl two", NOW + dt.timedelta(days=7))
    crls.away = True
    with caplog.at_level(logging.WARNING, logger="smimekit.service.ca"):
        assert stored() == b"crl one"  # the one this process held, not a newer it never saw
        assert stored() == b"crl one"
    assert sum("serving the CRL held" in r.getMessage() for r in caplog.records) == 1
    clock[0] = NOW + dt.timedelta(days=7)  # its nextUpdate: no longer valid
    with pytest.raises(StoreError):
        stored()
    crls.away = False
    assert stored() == b"crl two"


def test_nothing_held_or_nothing_published() -> None:
    crls = _Crls()
    stored = StoredCrl(crls, "issuer", clock=lambda: NOW)
    stored.warm()  # nothing published: no error at start
    with pytest.raises(CAError, match="no CRL published yet"):
        stored()
    crls.away = True
    with pytest.raises(StoreError):
        stored()
