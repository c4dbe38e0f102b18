"""gateway/keys.py: keys held at rest in the store (sealed under the master key the passphrase
opens), the whole key history, retirement, the organisation key; SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
from backends import Backend
from cryptography.hazmat.primitives import serialization
from pki import PKI, Identity
from sqlalchemy import select

from smimekit.ca.export import pkcs12_bytes
from smimekit.config import GatewayConfig
from smimekit.errors import ConfigError, GatewayError, KeyLoadError, PassphraseError
from smimekit.gateway.keys import StoreHeldKeys, import_pkcs12, open_held_keys, purpose_of
from smimekit.store import Store, schema

PASS = b"gateway store passphrase"


def _der(key: object) -> bytes:
    return key.private_bytes(serialization.Encoding.DER,  # type: ignore[attr-defined]
                             serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def test_import_holds_the_key_history_sealed_and_opens_on_another_node(
        backend: Backend, pki: PKI) -> None:
    old = pki.person("carol-old", "rsa2048", email="carol@example.org", fresh_key=True)
    new = pki.person("carol-new", "rsa2048", email="carol@example.org", fresh_key=True)
    p12 = pkcs12_bytes(new.key, new.cert, [pki.inter, pki.root], b"p12 pass",
                       friendly_name="carol", extra=[(old.key, old.cert)], iterations=2048)
    with Store.open(backend.url, backend.data_dir) as store:
        held = StoreHeldKeys.open(store, PASS, create=True)
        done = import_pkcs12(held, p12, b"p12 pass")
        assert [(d.address, d.purpose, d.new) for d in done] == \
            [("carol@example.org", "both", True)] * 2
        assert import_pkcs12(held, p12, b"p12 pass")[0].new is False  # idempotent
        with store.read() as conn:
            sealed = conn.execute(select(schema.gateway_keys.c.sealed)).scalars().all()
        assert len(sealed) == 2
        assert all(_der(new.key) not in s and _der(old.key) not in s for s in sealed)
    with Store.open(backend.url, backend.data_dir) as store:  # another process, same store
        node2 = StoreHeldKeys.open(store, PASS)
        signing = node2.signing_key("Carol@Example.org")
        assert signing is not None and signing.certificate == new.cert
        assert _der(signing.key) == _der(new.key)
        assert signing.chain == (pki.inter, pki.root)
        history = node2.decryption_keys("carol@example.org")
        assert [k.certificate for k in history] == [new.cert, old.cert]


def test_wrong_passphrase_opens_nothing(backend: Backend, pki: PKI) -> None:
    alice = pki.person("alice")
    with Store.open(backend.url, backend.data_dir) as store:
        StoreHeldKeys.open(store, PASS, create=True).add(alice.key, alice.cert)
        with pytest.raises(PassphraseError, match="wrong passphrase for the gateway"):
            StoreHeldKeys.open(store, b"not it")


def test_retired_key_still_decrypts_but_no_longer_signs(backend: Backend, pki: PKI) -> None:
    dave = pki.person("dave", "p256")
    with Store.open(backend.url, backend.data_dir) as store:
        held = StoreHeldKeys.open(store, PASS, create=True)
        imported = held.add(dave.key, dave.cert)
        assert held.signing_key("dave@example.org") is not None
        assert store.retire_gateway_key(imported.fingerprint, dt.datetime.now(dt.UTC))
        assert not store.retire_gateway_key(imported.fingerprint, dt.datetime.now(dt.UTC))
        assert held.signing_key("dave@example.org") is None
        assert held.encryption_certificate("dave@example.org") is None
        assert [k.certificate for k in held.decryption_keys("dave@example.org")] == [dave.cert]


def test_expired_certificate_does_not_sign(backend: Backend, pki: PKI) -> None:
    now = dt.datetime.now(dt.UTC)
    gone = pki.person("erin", not_before=now - dt.timedelta(days=30),
                      not_after=now - dt.timedelta(days=1))
    with Store.open(backend.url, backend.data_dir) as store:
        held = StoreHeldKeys.open(store, PASS, create=True)
        held.add(gone.key, gone.cert)
        assert held.signing_key("erin@example.org") is None
        assert len(held.decryption_keys("erin@example.org")) == 1


def test_dual_keys_and_the_organisation_key(backend: Backend, pki: PKI) -> None:
    signer = pki.person("fay-sign", "p256", email="fay@example.org", key_usage="sign")
    decrypter = pki.person("fay-enc", "x25519", email="fay@example.org")
    org = pki.person("org", "p384", email="gateway@example.org", key_usage="sign")
    with Store.open(backend.url, backend.data_dir) as store:
        held = StoreHeldKeys.open(store, PASS, create=True)
        assert held.organisation_key() is None
        assert held.add(signer.key, signer.cert).purpose == "sign"
        assert held.add(decrypter.key, decrypter.cert).purpose == "encrypt"
        assert held.add(org.key, org.cert, organisation=True).purpose == "organisation"
        s = held.signing_key("fay@example.org")
        assert s is not None and s.certificate == signer.cert
        assert held.encryption_certificate("fay@example.org") == decrypter.cert
        assert [k.certificate for k in held.decryption_keys("fay@example.org")] == \
            [decrypter.cert]
        o = held.organisation_key()
        assert o is not None and o.certificate == org.cert
        assert held.signing_key("gateway@example.org") is None


def test_mismatched_key_and_encryption_only_organisation_key_are_refused(
        backend: Backend, pki: PKI) -> None:
    a, b = pki.person("alice"), pki.person("bob", "p256")
    enc = pki.person("enc", "x25519")
    with Store.open(backend.url, backend.data_dir) as store:
        held = StoreHeldKeys.open(store, PASS, create=True)
        with pytest.raises(KeyLoadError, match="does not match"):
            held.add(a.key, b.cert)
        with pytest.raises(KeyLoadError, match="does not allow signing"):
            held.add(enc.key, enc.cert, organisation=True)
        assert store.gateway_keys() == []


def test_a_sealed_key_moved_to_another_row_does_not_open(backend: Backend, pki: PKI) -> None:
    a, b = pki.person("alice"), pki.person("bob", "p256")
    with Store.open(backend.url, backend.data_dir) as store:
        held = StoreHeldKeys.open(store, PASS, create=True)
        held.add(a.key, a.cert)
        fb = held.add(b.key, b.cert).fingerprint
        k = schema.gateway_keys
        with store.transaction() as conn:
            stolen = conn.execute(select(k.c.sealed).where(k.c.address == "alice@example.org")
                                  ).scalar_one()
            conn.execute(k.update().where(k.c.fingerprint == fb).values(sealed=stolen))
        with pytest.raises(KeyLoadError, match="does not open"):
            held.signing_key("bob@example.org")


def test_purpose_follows_key_usage(pki: PKI) -> None:
    assert purpose_of(pki.person("s", "rsa2048", key_usage="sign").cert) == "sign"
    assert purpose_of(pki.person("e", "rsa2048", key_usage="encrypt").cert) == "encrypt"
    assert purpose_of(pki.person("x", "x25519").cert) == "encrypt"


def test_open_for_serving_names_the_missing_or_empty_passphrase_file(
        backend: Backend, tmp_path: object) -> None:
    from pathlib import Path
    assert isinstance(tmp_path, Path)
    with Store.open(backend.url, backend.data_dir) as store:
        with pytest.raises(GatewayError, match="key_passphrase_file is not set"):
            open_held_keys(GatewayConfig(), store)
        empty = tmp_path / "empty.pass"
        empty.write_text("\n")
        with pytest.raises(GatewayError, match="is empty"):
            open_held_keys(GatewayConfig(key_passphrase_file=empty), store)
        good = tmp_path / "good.pass"
        good.write_bytes(PASS + b"\n")
        assert open_held_keys(GatewayConfig(key_passphrase_file=good),
                              store).organisation_key() is None
        assert StoreHeldKeys.open(store, PASS).organisation_key() is None
    with pytest.raises(ConfigError):
        from smimekit.gateway.keys import read_key_passphrase
        read_key_passphrase(tmp_path / "missing")


def test_the_current_key_is_the_newest_certificate_not_retired_whatever_the_import_order(
        backend: Backend, pki: PKI) -> None:
    # review 12 item 2: what mail is re-encrypted to (and signed with) is ranked by the
    # certificate's dates, never by import order, and never a retired key
    now = dt.datetime.now(dt.UTC)

    def ivy(name: str, days_old: int, days_left: int = 300) -> Identity:
        return pki.person(name, "p256", email="ivy@example.org",
                          not_before=now - dt.timedelta(days=days_old),
                          not_after=now + dt.timedelta(days=days_left))

    old, mid, new = ivy("ivy-old", 300, 30), ivy("ivy-mid", 100), ivy("ivy-new", 10)
    same_start = ivy("ivy-same-start-longer", 100, 400)
    future = pki.person("ivy-future", "p256", email="ivy@example.org",
                        not_before=now + dt.timedelta(days=5),
                        not_after=now + dt.timedelta(days=500))
    with Store.open(backend.url, backend.data_dir) as store:
        held = StoreHeldKeys.open(store, PASS, create=True)
        for who in (new, future, old, mid):  # not the certificates' order
            held.add(who.key, who.cert)
        assert held.encryption_certificate("ivy@example.org") == new.cert
        signer = held.signing_key("ivy@example.org")
        assert signer is not None and signer.certificate == new.cert
        # the newest is retired (compromised, say): the next newest, not the last imported
        assert store.retire_gateway_key(
            held.add(new.key, new.cert).fingerprint, now)
        held.forget()
        assert held.encryption_certificate("ivy@example.org") == mid.cert
        # the same notBefore: the later notAfter wins, imported first or not
        held.add(same_start.key, same_start.cert)
        assert held.encryption_certificate("ivy@example.org") == same_start.cert
        for who in (same_start, mid, old):
            assert store.retire_gateway_key(
                held.add(who.key, who.cert).fingerprint, now)
        held.forget()
        # all retired (the future one is not valid yet): none is current, the history stays
        assert held.encryption_certificate("ivy@example.org") is None
        assert held.signing_key("ivy@example.org") is None
        assert len(held.decryption_keys("ivy@example.org")) == 5
