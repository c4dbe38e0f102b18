"""gateway/keys.py with the master key sealed inside a PKCS#11 token (SoftHSM2): a
non-extractable AES-256 key seals and opens it; the PIN and the token are checked."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pki import PKI
from softhsm import tokens_in_process
from sqlalchemy import select

from smimekit.config import GatewayConfig
from smimekit.errors import ConfigError, GatewayError, KeyLoadError, PassphraseError
from smimekit.gateway.keys import (
    TOKEN_KEY_LABEL,
    StoreHeldKeys,
    TokenKek,
    master_key_source,
    open_held_keys,
)
from smimekit.store import Store, schema

pkcs11 = pytest.importorskip("pkcs11")

PIN = "gateway-pin-2718"
TOKEN = "smimekit-gateway"
OTHER = "smimekit-gateway-2"


@pytest.fixture(scope="module")
def module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with tokens_in_process(tmp_path_factory.mktemp("softhsm-gw"), [TOKEN, OTHER], pin=PIN,
                           so_pin="so-pin-1") as path:
        yield path


def _config(tmp_path: Path, module: str, token: str = TOKEN, pin: str = PIN) -> GatewayConfig:
    pin_file = tmp_path / f"{token}.pin"
    pin_file.write_text(pin + "\n")
    return GatewayConfig(pkcs11_module=Path(module), token_label=token, pin_file=pin_file)


def test_master_key_sealed_by_the_token_opens_the_held_keys(
        tmp_path: Path, module: str, pki: PKI) -> None:
    alice = pki.person("alice")
    config = _config(tmp_path, module)
    source = master_key_source(config)
    assert isinstance(source, TokenKek) and PIN not in repr(source)
    with Store.open(None, tmp_path / "data") as store:
        StoreHeldKeys.open(store, source, create=True).add(alice.key, alice.cert)
        stored = store.gateway_master_key()
        assert stored is not None and '"kdf": "pkcs11"' in stored
        reopened = open_held_keys(config, store)  # as gateway serve opens it
        held = reopened.signing_key("alice@example.org")
        assert held is not None and held.certificate == alice.cert
        with store.read() as conn:
            assert len(conn.execute(select(schema.gateway_keys.c.sealed)).all()) == 1
    lib = pkcs11.lib(os.path.realpath(module))
    with lib.get_token(token_label=TOKEN).open(user_pin=PIN) as session:
        key = session.get_key(pkcs11.ObjectClass.SECRET_KEY, pkcs11.KeyType.AES,
                              label=TOKEN_KEY_LABEL)
        assert key[pkcs11.Attribute.SENSITIVE] and not key[pkcs11.Attribute.EXTRACTABLE]


def test_wrong_pin_other_token_and_passphrase_store_are_refused(
        tmp_path: Path, module: str, pki: PKI) -> None:
    with Store.open(None, tmp_path / "data") as store:
        StoreHeldKeys.open(store, master_key_source(_config(tmp_path, module)), create=True)
        with pytest.raises(PassphraseError, match="user PIN"):
            StoreHeldKeys.open(store, master_key_source(_config(tmp_path, module,
                                                                pin="wrong-pin")))
        with pytest.raises(KeyLoadError, match="holds no key labelled"):
            StoreHeldKeys.open(store, master_key_source(_config(tmp_path, module, OTHER)))
        with pytest.raises(KeyLoadError, match="sealed by a PKCS#11 token"):
            StoreHeldKeys.open(store, b"a passphrase")
        with pytest.raises(GatewayError, match="no token labelled 'nope'"):
            open_held_keys(_config(tmp_path, module, "nope"), store)
    with Store.open(None, tmp_path / "data2") as store:
        StoreHeldKeys.open(store, b"a passphrase", create=True)
        with pytest.raises(KeyLoadError, match="sealed under a passphrase"):
            StoreHeldKeys.open(store, master_key_source(_config(tmp_path, module)))


def test_token_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="token_label is not"):
        master_key_source(GatewayConfig(pkcs11_module=tmp_path / "m.so"))
    with pytest.raises(ConfigError, match="pin_file is not"):
        master_key_source(GatewayConfig(pkcs11_module=tmp_path / "m.so", token_label="t"))
    with pytest.raises(KeyLoadError, match="not found"):
        TokenKek(tmp_path / "missing.so", "t", "pin").seal(b"k" * 32)
