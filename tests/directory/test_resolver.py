"""The resolver over a real CA: validation of every candidate, ranking, explanations, a
source that fails, and the lookup cache."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from kit import CA, Clock, ListSource
from pki import PKI

from smimekit.directory.cache import LookupCache
from smimekit.directory.resolver import Resolver, normalise_address
from smimekit.directory.sources import Candidate
from smimekit.directory.store_source import StoreSource, our_ca_chain, our_ca_revocation
from smimekit.errors import DirectoryError
from smimekit.validation.revocation import RevocationOptions, RevocationPolicy

BOB = "bob@example.org"


def resolver(ca: CA, *extra: ListSource, clock: Clock | None = None,
             cache: LookupCache | None = None, trust: tuple[x509.Certificate, ...] = (),
             store: bool = True) -> Resolver:
    """What the CLI builds for a run: our CA trusted and first, its CRLs known, offline."""
    ours = our_ca_chain(ca.data_dir)
    sources = ([StoreSource(ca.store, ours)] if store else []) + list(extra)
    return Resolver(
        sources, trust=[ca.root, *trust], intermediates=list(ours),
        revocation=RevocationOptions(policy=RevocationPolicy.OFFLINE,
                                     crls=our_ca_revocation(ca.store, ca.data_dir)),
        our_ca=ours, cache=cache, clock=clock or Clock())


def test_a_certificate_our_ca_issued_is_found_validated_and_ours(ca: CA) -> None:
    cert, _ = ca.issue(BOB)
    result = resolver(ca).lookup("Bob@EXAMPLE.org")
    assert result.ok, result.explain()
    assert result.normalised == "Bob@example.org"
    best = result.best
    assert best.certificate == cert
    assert best.ours and best.sources == ("store",)
    assert best.chain[-1] == ca.root and best.chain[1] == ca.issuing
    assert [(a.source, a.status, a.candidates) for a in result.answers] == [
        ("store", "found", 1)]


def test_a_revoked_certificate_is_refused_with_the_reason(ca: CA) -> None:
    ca.issue(BOB)
    ca.authority.revoke(email=BOB, reason="keyCompromise")
    result = resolver(ca).lookup(BOB)
    assert not result.ok
    (refused,) = result.refused
    assert any("revoked" in r for r in refused.reasons), refused.reasons
    line = result.explain()
    assert "\n" not in line and line.startswith(f"no usable certificate for {BOB}: store: ")
    assert "revoked" in line
    with pytest.raises(DirectoryError, match="no usable certificate"):
        result.raise_for_failure()


def test_an_expired_certificate_is_refused(ca: CA) -> None:
    import datetime as dt

    ca.issue(BOB, validity=dt.timedelta(days=2))
    clock = Clock()
    clock.advance(days=3)
    result = resolver(ca, clock=clock).lookup(BOB)
    assert not result.ok
    assert any("expired" in r or "not valid" in r for r in result.refused[0].reasons), \
        result.refused[0].reasons


def test_the_renewed_certificate_ranks_before_the_one_it_replaced(ca: CA) -> None:
    old, _ = ca.issue(BOB)
    record = ca.store.issued_for(BOB)[0]
    new = ca.authority.renew(record, lint=False).cert
    # mail we received still carries the old one (valid, not revoked): both are usable
    mail = ListSource("harvested", [Candidate(old, "harvested", where="inbox/1.eml")])
    result = resolver(ca, mail).lookup(BOB)
    assert [u.certificate for u in result.usable] == [new, old]
    assert result.usable[1].sources == ("harvested",)  # the store gives only the live one


def test_our_ca_ranks_before_others_and_the_announced_one_before_all(ca: CA, pki: PKI) -> None:
    ours, _ = ca.issue(BOB)
    import datetime as dt

    theirs = pki.person("bob-elsewhere", "p256", email=BOB, key_usage="encrypt",
                        fresh_key=True,  # issued after ours: newer, still second
                        not_before=ours.not_valid_before_utc + dt.timedelta(seconds=10)).cert
    clock = Clock()
    clock.advance(minutes=1)
    other = ListSource("ldap", [Candidate(theirs, "ldap", chain=(pki.inter,))])
    result = resolver(ca, other, trust=(pki.root,), clock=clock).lookup(BOB)
    assert [u.certificate for u in result.usable] == [ours, theirs]
    assert not result.usable[1].ours

    announced = ListSource("harvested", [Candidate(theirs, "harvested", preferred=True)])
    result = resolver(ca, other, announced, trust=(pki.root,), clock=clock).lookup(BOB)
    assert [u.certificate for u in result.usable] == [theirs, ours]
    assert result.usable[0].sources == ("ldap", "harvested")  # one certificate, two sources
    assert result.usable[0].candidate.preferred


def test_a_certificate_that_does_not_name_the_address_is_refused(ca: CA) -> None:
    cert, _ = ca.issue("carol@example.org")
    wrong = ListSource("ldap", [Candidate(cert, "ldap")], any_address=True)
    result = resolver(ca, wrong).lookup(BOB)
    assert not result.ok
    assert any(f"does not name {BOB}" in r for r in result.refused[0].reasons)


def test_an_untrusted_chain_is_refused(ca: CA, pki: PKI) -> None:
    stranger = pki.person("bob-stranger", "p256", email=BOB, key_usage="encrypt").cert
    result = resolver(ca, ListSource("ldap", [Candidate(stranger, "ldap")]),
                      store=False).lookup(BOB)
    assert not result.ok and result.refused[0].reasons


def test_a_source_that_fails_does_not_stop_the_others(ca: CA) -> None:
    cert, _ = ca.issue(BOB)
    down = ListSource("ldap", fail="cannot reach ldap://127.0.0.1:1: connection refused")
    empty = ListSource("smimea")
    result = resolver(ca, down, empty).lookup(BOB)
    assert result.ok and result.best.certificate == cert
    assert [(a.source, a.status) for a in result.answers] == [
        ("store", "found"), ("ldap", "error"), ("smimea", "none")]
    assert "connection refused" in result.answers[1].error


def test_nothing_anywhere_names_every_source_and_its_answer(ca: CA) -> None:
    down = ListSource("ldap", fail="bind refused")
    line = resolver(ca, down, ListSource("smimea")).lookup("nobody@example.org").explain()
    assert line == ("no usable certificate for nobody@example.org: store: none;"
                    " ldap: error: bind refused; smimea: none")


def test_not_an_address_is_a_directory_error() -> None:
    with pytest.raises(DirectoryError, match="not a mailbox address"):
        normalise_address("bob@@")
    assert normalise_address("Jörg@Bücher.example") == "Jörg@xn--bcher-kva.example"


# -- the cache -----------------------------------------------------------------------------


def test_cached_answers_are_used_then_refetched_when_stale(ca: CA, tmp_path: Path) -> None:
    cert, _ = ca.issue(BOB)
    remote = ListSource("ldap", [Candidate(cert, "ldap", chain=(ca.issuing,))])
    cache = LookupCache(tmp_path / "cache", cache_seconds=600)
    clock = Clock()
    first = resolver(ca, remote, cache=cache, clock=clock, store=False).lookup(BOB)
    assert first.ok and not first.answers[0].cached
    folder = tmp_path / "cache"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    (file,) = folder.iterdir()
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert file == cache.path("BOB@example.org")  # one entry per address, case folded

    clock.advance(seconds=300)
    again = resolver(ca, remote, cache=cache, clock=clock, store=False).lookup(BOB)
    assert again.ok and again.answers[0].cached and len(remote.asked) == 1
    refreshed = resolver(ca, remote, cache=cache, clock=clock, store=False).lookup(
        BOB, refresh=True)
    assert not refreshed.answers[0].cached and len(remote.asked) == 2

    clock.advance(seconds=601)
    stale = resolver(ca, remote, cache=cache, clock=clock, store=False).lookup(BOB)
    assert not stale.answers[0].cached and len(remote.asked) == 3


def test_a_cached_certificate_is_checked_for_revocation_on_every_use(
        ca: CA, tmp_path: Path) -> None:
    cert, _ = ca.issue(BOB)
    remote = ListSource("ldap", [Candidate(cert, "ldap")])
    cache = LookupCache(tmp_path / "cache", cache_seconds=3600)
    assert resolver(ca, remote, cache=cache, store=False).lookup(BOB).ok
    ca.authority.revoke(email=BOB, reason="keyCompromise")
    result = resolver(ca, remote, cache=cache, store=False).lookup(BOB)  # the next run
    assert result.answers[0].cached and len(remote.asked) == 1
    assert not result.ok and "revoked" in result.explain()


def test_the_cache_is_never_used_past_a_certificates_not_after(ca: CA, tmp_path: Path) -> None:
    import datetime as dt

    cert, _ = ca.issue(BOB, validity=dt.timedelta(days=1))
    remote = ListSource("ldap", [Candidate(cert, "ldap")])
    cache = LookupCache(tmp_path / "cache", cache_seconds=30 * 86400)
    clock = Clock()
    resolver(ca, remote, cache=cache, clock=clock, store=False).lookup(BOB)
    clock.advance(hours=12)
    assert resolver(ca, remote, cache=cache, clock=clock, store=False).lookup(
        BOB).answers[0].cached
    clock.advance(hours=13)
    later = resolver(ca, remote, cache=cache, clock=clock, store=False).lookup(BOB)
    assert not later.answers[0].cached and len(remote.asked) == 2


def test_errors_are_not_cached_and_local_sources_never(ca: CA, tmp_path: Path) -> None:
    ca.issue(BOB)
    down = ListSource("ldap", fail="timed out")
    cache = LookupCache(tmp_path / "cache", cache_seconds=3600)
    for _ in range(2):
        resolver(ca, down, cache=cache).lookup(BOB)
    assert len(down.asked) == 2
    assert not (tmp_path / "cache").exists()  # the store's answer is not cached either


@pytest.mark.parametrize("garbage", [b"", b"{not json", b'{"version": 1}',
                                     b'{"version": 1, "address": "bob@example.org",'
                                     b' "sources": {"ldap": {"fetched": 3}}}',
                                     b"\xff\xfe" * 40])
def test_a_corrupt_cache_file_is_ignored_and_replaced(
        ca: CA, tmp_path: Path, garbage: bytes) -> None:
    cert, _ = ca.issue(BOB)
    remote = ListSource("ldap", [Candidate(cert, "ldap")])
    cache = LookupCache(tmp_path / "cache", cache_seconds=3600)
    (tmp_path / "cache").mkdir(mode=0o700)
    cache.path(BOB).write_bytes(garbage)
    result = resolver(ca, remote, cache=cache, store=False).lookup(BOB)
    assert result.ok and not result.answers[0].cached and len(remote.asked) == 1
    document = json.loads(cache.path(BOB).read_bytes())
    assert list(document["sources"]) == ["ldap"]
    assert resolver(ca, remote, cache=cache, store=False).lookup(BOB).answers[0].cached


def test_an_unwritable_cache_is_not_an_error(ca: CA, tmp_path: Path) -> None:
    cert, _ = ca.issue(BOB)
    (tmp_path / "file").write_text("not a folder")
    cache = LookupCache(tmp_path / "file" / "cache", cache_seconds=3600)
    result = resolver(ca, ListSource("ldap", [Candidate(cert, "ldap")]), cache=cache,
                      store=False).lookup(BOB)
    assert result.ok
    assert os.path.isfile(tmp_path / "file")


# -- built from the configuration, and the library function ------------------------------


def test_sources_are_built_by_name_from_the_configuration(
        ca: CA, monkeypatch: pytest.MonkeyPatch) -> None:
    from smimekit.config import Config, DirectoryConfig
    from smimekit.directory import resolver as module
    from smimekit.errors import ConfigError

    monkeypatch.setitem(module.SOURCES, "missing", "smimekit.directory.not_there:Nothing")
    config = Config(directory=DirectoryConfig(order=("missing", "store"), cache_seconds=60))
    built = Resolver.from_config(config, store=ca.store, data_dir=ca.data_dir)
    assert [s.name for s in built.sources] == ["store"]
    assert "not installed: No module named" in built.unavailable["missing"]
    assert built.cache is not None and built.cache.cache_seconds == 60
    answers = built.lookup(BOB).answers  # reported in the configured order
    assert [(a.source, a.status) for a in answers] == [("missing", "unavailable"),
                                                       ("store", "none")]
    # no store: the store source is simply not set up; --source restricts
    assert Resolver.from_config(config, store=None, data_dir=ca.data_dir).sources == []
    assert Resolver.from_config(config, store=ca.store, data_dir=ca.data_dir,
                                only=["missing"]).sources == []
    asked = Resolver.from_config(config, store=None, data_dir=ca.data_dir, only=["store"])
    assert asked.lookup(BOB).explain() == (
        f"no usable certificate for {BOB}: store: unavailable: not set up in the configuration")
    with pytest.raises(ConfigError, match="unknown source 'x500'"):
        Resolver.from_config(Config(directory=DirectoryConfig(order=("x500",))),
                             store=None, data_dir=ca.data_dir)


def test_the_library_lookup_trusts_and_ranks_our_ca(ca: CA) -> None:
    import smimekit
    from smimekit.config import Config, DirectoryConfig

    cert, _ = ca.issue(BOB)
    result = smimekit.lookup(
        BOB, config=Config(directory=DirectoryConfig(order=("store",))), data_dir=ca.data_dir,
        store=ca.store, revocation=RevocationOptions(policy=RevocationPolicy.OFFLINE))
    assert isinstance(result, smimekit.LookupResult)
    assert result.best.certificate == cert and result.best.ours
    ca.authority.revoke(email=BOB, reason="superseded")
    again = smimekit.lookup(
        BOB, config=Config(directory=DirectoryConfig(order=("store",))), data_dir=ca.data_dir,
        store=ca.store, revocation=RevocationOptions(policy=RevocationPolicy.OFFLINE))
    assert not again.ok and "revoked" in again.explain()
