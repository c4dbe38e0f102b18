"""What a gateway node remembers between messages (docs/gateway.md "Performance"): the held
keys' rows for ``key_memo_seconds`` and the directory's usable answers for
``lookup_memo_seconds`` (gateway/memo.py), and what it never remembers."""

from __future__ import annotations

import datetime as dt

import pytest
from backends import Backend
from pki import PKI

from smimekit.config import Config, GatewayConfig
from smimekit.directory.resolver import LookupResult, SourceAnswer, Usable
from smimekit.directory.sources import Candidate
from smimekit.errors import ConfigError
from smimekit.gateway.keys import StoreHeldKeys
from smimekit.gateway.memo import LookupMemo
from smimekit.gateway.pipeline import pipeline_from_data_dir
from smimekit.store import Store

PASS = b"gateway store passphrase"


def test_held_key_rows_are_reused_for_the_memo_time_then_asked_again(
        backend: Backend, pki: PKI) -> None:
    dave = pki.person("dave", "p256")
    seconds = [1000.0]  # the memo's clock, moved by hand: a slow machine cannot age it
    with Store.open(backend.url, backend.data_dir) as store:
        StoreHeldKeys.open(store, PASS, create=True).add(dave.key, dave.cert)
        held = StoreHeldKeys(store, StoreHeldKeys.open(store, PASS)._master,
                             memo_seconds=0.5, monotonic=lambda: seconds[0])
        first = held.signing_key("dave@example.org")
        assert first is not None
        assert held.signing_key("Dave@Example.org") is first  # opened and parsed once
        # retired by another process: seen once the memo has aged
        assert store.retire_gateway_key(_fp(dave.cert), dt.datetime.now(dt.UTC))
        seconds[0] += 0.49
        assert held.signing_key("dave@example.org") is first
        seconds[0] += 0.02
        assert held.signing_key("dave@example.org") is None
        assert [k.certificate for k in held.decryption_keys("dave@example.org")] == [dave.cert]


def test_forget_and_import_drop_the_memo_at_once(backend: Backend, pki: PKI) -> None:
    old = pki.person("gus-old", "p256", email="gus@example.org", fresh_key=True)
    new = pki.person("gus-new", "p256", email="gus@example.org", fresh_key=True)
    with Store.open(backend.url, backend.data_dir) as store:
        held = StoreHeldKeys.open(store, PASS, create=True, memo_seconds=3600)
        held.add(old.key, old.cert)
        before = held.signing_key("gus@example.org")
        assert before is not None and before.certificate == old.cert
        held.add(new.key, new.cert)  # an import through this node: used at once
        after = held.signing_key("gus@example.org")
        assert after is not None and after.certificate == new.cert
        assert store.retire_gateway_key(_fp(new.cert), dt.datetime.now(dt.UTC))
        held.forget()
        again = held.signing_key("gus@example.org")
        assert again is not None and again.certificate == old.cert


def test_validity_is_judged_at_every_call_memo_or_not(backend: Backend, pki: PKI) -> None:
    now = dt.datetime.now(dt.UTC)
    hal = pki.person("hal", not_after=now + dt.timedelta(days=2))
    clock = [now]
    with Store.open(backend.url, backend.data_dir) as store:
        StoreHeldKeys.open(store, PASS, create=True).add(hal.key, hal.cert)
        held = StoreHeldKeys(store, StoreHeldKeys.open(store, PASS)._master,
                             clock=lambda: clock[0], memo_seconds=3600)
        assert held.signing_key("hal@example.org") is not None
        clock[0] = now + dt.timedelta(days=3)  # past notAfter, inside the memo time
        assert held.signing_key("hal@example.org") is None


def _fp(cert: object) -> str:
    from cryptography.hazmat.primitives import hashes

    return cert.fingerprint(hashes.SHA256()).hex()  # type: ignore[attr-defined]


class _Counting:
    def __init__(self, result: LookupResult) -> None:
        self.result = result
        self.calls = 0

    def lookup(self, address: str) -> LookupResult:
        self.calls += 1
        return self.result


def _result(pki: PKI, *, not_after: dt.datetime | None = None, usable: bool = True,
            status: str = "found") -> LookupResult:
    partner = pki.person("partner", email="partner@partner.example", not_after=not_after)
    found = (Usable(Candidate(partner.cert, "store"), (partner.cert, pki.inter, pki.root),
                    ("store",), False),) if usable else ()
    answers = (SourceAnswer("store", "found", 1), SourceAnswer("ldap", status, error="x")
               if status == "error" else SourceAnswer("ldap", "none"))
    return LookupResult("partner@partner.example", "partner@partner.example", found, (),
                        answers)


def test_lookup_memo_keeps_a_usable_answer_for_its_time(pki: PKI) -> None:
    now = dt.datetime.now(dt.UTC)
    clock = [now]
    inner = _Counting(_result(pki))
    memo = LookupMemo(inner, 60, clock=lambda: clock[0])
    assert memo.lookup("partner@partner.example") is inner.result
    assert memo.lookup("Partner@Partner.example") is inner.result
    assert inner.calls == 1
    clock[0] = now + dt.timedelta(seconds=61)
    memo.lookup("partner@partner.example")
    assert inner.calls == 2
    memo.forget()
    memo.lookup("partner@partner.example")
    assert inner.calls == 3


def test_lookup_memo_never_hands_out_a_certificate_past_its_not_after(pki: PKI) -> None:
    now = dt.datetime.now(dt.UTC)
    clock = [now]
    inner = _Counting(_result(pki, not_after=now + dt.timedelta(seconds=10)))
    memo = LookupMemo(inner, 3600, clock=lambda: clock[0])
    memo.lookup("partner@partner.example")
    clock[0] = now + dt.timedelta(seconds=11)
    memo.lookup("partner@partner.example")
    assert inner.calls == 2


@pytest.mark.parametrize(("usable", "status"), [(False, "none"), (True, "error"),
                                                (False, "error")])
def test_lookup_memo_never_keeps_a_miss_or_a_failed_source(pki: PKI, usable: bool,
                                                            status: str) -> None:
    inner = _Counting(_result(pki, usable=usable, status=status))
    memo = LookupMemo(inner, 3600)
    memo.lookup("partner@partner.example")
    memo.lookup("partner@partner.example")
    assert inner.calls == 2


def test_lookup_memo_is_bounded_and_zero_turns_it_off(pki: PKI) -> None:
    inner = _Counting(_result(pki))
    memo = LookupMemo(inner, 3600, entries=2)
    for address in ("a@x.example", "b@x.example", "c@x.example", "a@x.example"):
        memo.lookup(address)
    assert inner.calls == 4  # a was pushed out by c
    off = LookupMemo(_Counting(_result(pki)), 0)
    off.lookup("a@x.example")
    off.lookup("a@x.example")
    assert off._lookup.calls == 2  # type: ignore[attr-defined]


def test_negative_memo_times_are_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = Config(gateway=GatewayConfig(lookup_memo_seconds=-1))
    with Store.open(None, tmp_path, create=True) as store, \
            pytest.raises(ConfigError, match="lookup_memo_seconds must be 0 or more"):
        pipeline_from_data_dir(config, store, tmp_path)
