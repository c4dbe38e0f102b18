"""Users' private keys held inside a PKCS#11 token (SoftHSM2), not in the store.

A PKCS#12 with a key history goes into the token (``import --into-token``); the store keeps
only where each key is. The pipeline signs outbound mail in the token (OpenSSL and gpgsm
verify it) and decrypts inbound mail there, to the current and to a retired certificate,
RSA PKCS#1 v1.5, RSA-OAEP and EC (ECDH). A wrong PIN, a missing token, a failed session and
a key object deleted from the token are temporary GatewayErrors with clear messages.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from backends import Backend
from gwout_kit import harvest, mail
from pki import PKI, Identity
from softhsm import tokens_in_process
from sqlalchemy import select

from smimekit import api
from smimekit.cli.main import main
from smimekit.config import GatewayConfig, PolicyConfig
from smimekit.directory.harvest import HarvestedSource
from smimekit.directory.resolver import Resolver
from smimekit.errors import DecryptionError, GatewayError, KeyLoadError
from smimekit.gateway.keys import (
    StoreHeldKeys,
    import_pkcs12,
    master_key_source,
    open_held_keys,
    token_reference,
    where,
)
from smimekit.gateway.model import Envelope
from smimekit.gateway.pipeline import Pipeline, build_pipeline
from smimekit.keys.pkcs12 import write_pkcs12
from smimekit.keys.token_keys import TokenECKey, TokenKeyring, TokenRSAKey
from smimekit.store import Store, schema

sys.path.insert(0, str(Path(__file__).parents[1] / "interop"))
from peers import Gpgsm, missing_binaries, openssl_verify, smime_to_der

pkcs11 = pytest.importorskip("pkcs11")

PIN = "held-keys-pin-1618"
TOKEN = "smimekit-held"
P12_PASS = b"p12 passphrase"
SECRET = "Board minutes: the merger closes Friday.\r\n"


@pytest.fixture(scope="module")
def module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with tokens_in_process(tmp_path_factory.mktemp("softhsm-held"), [TOKEN], pin=PIN,
                           so_pin="so-pin-3141") as path:
        yield path


@pytest.fixture(scope="module")
def people(pki: PKI) -> dict[str, Identity]:
    # Issued by the (RSA) root: gpgsm refuses the test PKI's P-384 intermediate, which signs
    # with SHA-256.
    root = (pki.root_key, pki.root)
    return {
        "alice": pki.person("tk-alice", "rsa2048", email="alice@example.org", issuer=root),
        "alice-old": pki.person("tk-alice-old", "rsa2048", email="alice@example.org",
                                issuer=root),
        "bob": pki.person("tk-bob", "p256", email="bob@example.org", issuer=root),
        "bob-old": pki.person("tk-bob-old", "p256", email="bob@example.org", issuer=root),
        "partner": pki.person("tk-partner", "rsa2048", email="partner@partner.example",
                              issuer=root),
    }


def _config(tmp_path: Path, module: str, *, token: str = TOKEN, pin: str = PIN,
            ) -> GatewayConfig:
    pin_file = tmp_path / f"{token}-{len(pin)}.pin"
    pin_file.write_text(pin + "\n")
    return GatewayConfig(internal_domains=("example.org",), pkcs11_module=Path(module),
                         token_label=token, pin_file=pin_file,
                         domains={"partner.example": PolicyConfig(encrypt="never")})


def _p12(pki: PKI, current: Identity, old: Identity) -> bytes:
    # the current key first, as `ca issue` writes a renewed person's file
    return write_pkcs12([("current", current.key, current.cert), ("old", old.key, old.cert)],
                        [pki.root], P12_PASS, iterations=1000)


def _pipeline(store: Store, pki: PKI, held: StoreHeldKeys, gateway: GatewayConfig
              ) -> Pipeline:
    resolver = Resolver([HarvestedSource(store)], trust=[pki.root], cache=None)
    return build_pipeline(gateway, store, held, resolver, trust=[pki.root], hostname="gw.test")


def _held_in_token(store: Store, pki: PKI, config: GatewayConfig, current: Identity,
                   old: Identity) -> StoreHeldKeys:
    """The key history imported into the token, the older key retired."""
    held = StoreHeldKeys.open(store, master_key_source(config), create=True)
    done = import_pkcs12(held, _p12(pki, current, old), P12_PASS, into_token=True)
    assert [d.new for d in done] == [True, True]
    assert store.retire_gateway_key(done[1].fingerprint, dt.datetime.now(dt.UTC))
    held.forget()
    return held


def _secret_parts(who: Identity) -> list[bytes]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    key = who.key
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    if isinstance(key, rsa.RSAPrivateKey):
        n = key.private_numbers()
        return [der, *(v.to_bytes((v.bit_length() + 7) // 8, "big")
                       for v in (n.d, n.p, n.q))]
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return [der, key.private_numbers().private_value.to_bytes(32, "big")]


def test_import_into_the_token_leaves_no_key_material_in_the_store(
        tmp_path: Path, module: str, pki: PKI, people: dict[str, Identity]) -> None:
    config = _config(tmp_path, module)
    alice, old = people["alice"], people["alice-old"]
    data_dir = tmp_path / "data"
    with Store.open(None, data_dir) as store:
        held = _held_in_token(store, pki, config, alice, old)
        try:
            rows = store.gateway_keys("alice@example.org")
            assert len(rows) == 2 and rows[0].retired_at is not None
            for row in rows:
                ref = token_reference(row)
                assert ref is not None and ref[0] == TOKEN
                assert ref[1] == bytes.fromhex(row.fingerprint)
                assert where(row) == f"token {TOKEN!r}"
            with store.read() as conn:
                raw = [bytes(v) for r in conn.execute(select(schema.gateway_keys)).all()
                       for v in r if isinstance(v, bytes | memoryview)]
            for who in (alice, old):
                for part in _secret_parts(who):
                    assert not any(part in value for value in raw)
            # and nowhere in the database's files either
            files = b"".join(p.read_bytes() for p in data_dir.rglob("*") if p.is_file())
            for who in (alice, old):
                assert not any(part in files for part in _secret_parts(who))
            # importing the same file again changes nothing
            again = import_pkcs12(held, _p12(pki, alice, old), P12_PASS, into_token=True)
            assert [d.new for d in again] == [False, False]
            assert len(store.gateway_keys("alice@example.org")) == 2
            # both keys, the retired one too, open in the token and nowhere else
            keys = held.decryption_keys("alice@example.org")
            assert [k.certificate for k in keys] == [alice.cert, old.cert]
            assert all(isinstance(k.key, TokenRSAKey) for k in keys)
            with pytest.raises(KeyLoadError, match="never leaves"):
                keys[0].key.private_bytes(None, None, None)  # type: ignore[arg-type]
        finally:
            held.close()
    ring = TokenKeyring(module, TOKEN, PIN)
    try:
        for row_fp in (alice.cert, old.cert):
            from cryptography.hazmat.primitives import hashes
            [obj] = ring._find(row_fp.fingerprint(hashes.SHA256()))
            assert obj[pkcs11.Attribute.SENSITIVE] and not obj[pkcs11.Attribute.EXTRACTABLE]
            assert obj[pkcs11.Attribute.TOKEN] and obj[pkcs11.Attribute.PRIVATE]
            with pytest.raises(pkcs11.exceptions.AttributeSensitive):
                obj[pkcs11.Attribute.PRIVATE_EXPONENT]
    finally:
        ring.close()


@pytest.mark.skipif(bool(missing_binaries("openssl") or missing_binaries("gpgsm")),
                    reason="openssl and gpgsm are needed (make peers)")
def test_outbound_mail_is_signed_in_the_token_and_openssl_and_gpgsm_verify_it(
        tmp_path: Path, module: str, pki: PKI, people: dict[str, Identity]) -> None:
    from cryptography.hazmat.primitives import serialization

    config = _config(tmp_path, module)
    alice, partner = people["alice"], people["partner"]
    with Store.open(None, tmp_path / "data") as store:
        held = _held_in_token(store, pki, config, alice, people["alice-old"])
        try:
            harvest(store, pki, partner)
            signing = held.signing_key("alice@example.org")
            assert signing is not None and isinstance(signing.key, TokenRSAKey)
            assert signing.certificate == alice.cert  # the retired key does not sign
            out = _pipeline(store, pki, held, config).process(
                Envelope("alice@example.org", (partner.email,), mail(body=SECRET),
                         trusted=True))
        finally:
            held.close()
    assert [d.action for d in out.decisions] == ["signed"]
    [delivery] = out.deliveries
    root = tmp_path / "root.pem"
    root.write_bytes(pki.root.public_bytes(serialization.Encoding.PEM))
    assert SECRET.encode() in openssl_verify(delivery.data, root)
    gpgsm = Gpgsm(tmp_path / "gnupg")
    try:
        gpgsm.trust_root(root)
        extracted = smime_to_der(delivery.data)
        status = gpgsm.verify(extracted.der, extracted.signed_part)
        assert "VALIDSIG" in status
    finally:
        gpgsm.close()


@pytest.mark.parametrize("kind", ["rsa-v1.5", "rsa-oaep", "ec"])
@pytest.mark.parametrize("to", ["current", "retired"])
def test_inbound_mail_decrypts_in_the_token_to_the_current_and_the_retired_key(
        tmp_path: Path, module: str, pki: PKI, people: dict[str, Identity], kind: str,
        to: str) -> None:
    name = "bob" if kind == "ec" else "alice"
    current, old = people[name], people[f"{name}-old"]
    target = current if to == "current" else old
    config = _config(tmp_path, module)
    partner = people["partner"]
    with Store.open(None, tmp_path / "data") as store:
        held = _held_in_token(store, pki, config, current, old)
        try:
            sent = api.sign_encrypt(
                mail(body=SECRET, sender=partner.email, to=target.email), partner.key,
                partner.cert, [target.cert], include_self=False,
                oaep=kind == "rsa-oaep")
            out = _pipeline(store, pki, held, config).process(
                Envelope(partner.email, (target.email,), sent))
            keys = held.decryption_keys(target.email)
            assert all(isinstance(k.key, TokenECKey if kind == "ec" else TokenRSAKey)
                       for k in keys)
        finally:
            held.close()
    [decision] = out.decisions
    assert decision.action == "re-encrypted", decision.reason
    [delivery] = out.deliveries
    # re-encrypted to the current certificate: the user's own (software) key opens it
    opened = api.decrypt_verify(delivery.data, current.key, current.cert, trust=[pki.root])
    assert SECRET.encode() in opened.content


def test_a_bad_pkcs1_ciphertext_fails_as_in_software(
        tmp_path: Path, module: str, pki: PKI, people: dict[str, Identity]) -> None:
    """RFC 3218 / Bleichenbacher: a damaged RSA PKCS#1 v1.5 key transport gives the one
    generic DecryptionError, as the software key does (a random key, then the content
    fails), not a token error that would tell a bad padding apart."""
    from cryptography.hazmat.primitives.asymmetric import padding

    config = _config(tmp_path, module)
    alice = people["alice"]
    with Store.open(None, tmp_path / "data") as store:
        held = _held_in_token(store, pki, config, alice, people["alice-old"])
        try:
            token_key = held.decryption_keys("alice@example.org")[0].key
            assert isinstance(token_key, TokenRSAKey)
            for blob in (b"\x00" * 255 + b"\x05", os.urandom(255) + b"\x01"):
                with pytest.raises(ValueError):
                    token_key.decrypt(blob, padding.PKCS1v15())
            sent = api.encrypt(mail(body=SECRET, to=alice.email), [alice.cert])
            damaged = _damage_encrypted_key(sent)
            for key in (token_key, alice.key):
                with pytest.raises(DecryptionError) as caught:
                    api.decrypt(damaged, key, alice.cert)
                assert type(caught.value) is DecryptionError
        finally:
            held.close()


def _damage_encrypted_key(message: bytes) -> bytes:
    """The S/MIME message with one byte of its RSA encryptedKey changed."""
    import base64

    from asn1crypto import cms

    head, _, body = message.partition(b"\r\n\r\n")
    info = cms.ContentInfo.load(base64.b64decode(body))
    ktri = info["content"]["recipient_infos"][0].chosen
    ek = bytearray(ktri["encrypted_key"].native)
    ek[100] ^= 0x01
    ktri["encrypted_key"] = bytes(ek)
    der = info.dump(force=True)
    text = base64.encodebytes(der).replace(b"\n", b"\r\n")
    return head + b"\r\n\r\n" + text


def test_token_trouble_is_temporary_clear_and_tells_no_secret(
        tmp_path: Path, module: str, pki: PKI, people: dict[str, Identity],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    config = _config(tmp_path, module)
    alice, partner = people["alice"], people["partner"]
    with Store.open(None, tmp_path / "data") as store:
        held = _held_in_token(store, pki, config, alice, people["alice-old"])
        pipeline = _pipeline(store, pki, held, config)
        harvest(store, pki, partner)

        def inbound() -> Envelope:
            sent = api.encrypt(mail(body=SECRET, sender=partner.email, to=alice.email),
                               [alice.cert])
            return Envelope(partner.email, (alice.email,), sent)

        outbound = Envelope(alice.email, (partner.email,), mail(body=SECRET), trusted=True)
        try:
            assert pipeline.process(inbound()).decisions[0].action == "re-encrypted"
            # the session dies under the gateway (token reset): 4xx, then the next message
            # opens a new session and goes through
            assert held._ring is not None
            held._ring._session.close()
            with pytest.raises(GatewayError) as caught:
                pipeline.process(inbound())
            assert not caught.value.permanent and f"token {TOKEN!r}" in str(caught.value)
            assert pipeline.process(inbound()).decisions[0].action == "re-encrypted"
            assert pipeline.process(outbound).decisions[0].action == "signed"
            # the token forgets the login (C_Logout, as a reset does): 4xx, then a new login
            from smimekit.keys import pkcs11 as shared
            assert held._ring is not None
            shared._logins[held._ring._login].session.close()
            with pytest.raises(GatewayError) as caught:
                pipeline.process(inbound())
            assert not caught.value.permanent
            assert pipeline.process(inbound()).decisions[0].action == "re-encrypted"

            # the key object deleted from the token: 4xx for mail to and from that key
            ring = TokenKeyring(module, TOKEN, PIN)
            try:
                assert ring.delete(bytes.fromhex(store.gateway_keys(alice.email)[1]
                                                 .fingerprint)) == 1
            finally:
                ring.close()
            for envelope in (inbound(), outbound):
                with pytest.raises(GatewayError) as caught:
                    pipeline.process(envelope)
                assert not caught.value.permanent
                assert "holds no private key with ID" in str(caught.value) or \
                    "could not" in str(caught.value)
            with pytest.raises(GatewayError, match="holds no private key with ID"):
                pipeline.process(inbound())
        finally:
            held.close()

        # a wrong PIN, a token that is not there: the key store does not open (4xx at serve)
        for bad, says in ((_config(tmp_path, module, pin="wrong-pin-0000"), "user PIN"),
                          (_config(tmp_path, module, token="absent"),
                           "no token labelled 'absent'")):
            with pytest.raises(GatewayError, match=says) as caught:
                open_held_keys(bad, store)
            assert not caught.value.permanent
    logged = caplog.text + "".join(str(e.details) for e in store_entries(tmp_path))
    assert PIN not in logged and "wrong-pin-0000" not in logged
    assert "merger" not in logged


def store_entries(tmp_path: Path) -> list:  # type: ignore[type-arg]
    with Store.open(None, tmp_path / "data", create=False) as store:
        return store.audit_entries()


def test_cli_imports_into_the_token_and_lists_where_keys_live(
        backend: Backend, tmp_path: Path, module: str, pki: PKI,
        people: dict[str, Identity], capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, module)
    (tmp_path / "smimekit.toml").write_text(
        f'[gateway]\npkcs11_module = "{module}"\ntoken_label = "{TOKEN}"\n'
        f'pin_file = "{config.pin_file}"\n')
    bob, old = people["bob"], people["bob-old"]
    p12 = tmp_path / "bob.p12"
    p12.write_bytes(_p12(pki, bob, old))
    (tmp_path / "p12.pass").write_bytes(P12_PASS + b"\n")

    def run(*args: str) -> int:
        return main([*backend.cli_args(), "--config", str(tmp_path / "smimekit.toml"),
                     *args])

    assert run("gateway", "keys", "import", "--into-token", "--passphrase-file",
               str(tmp_path / "p12.pass"), str(p12)) == 0
    out = capsys.readouterr().out
    assert len(re.findall(rf"^held in token {TOKEN!r}: [0-9a-f]{{16}}  bob@example.org  both",
                          out, re.M)) == 2, out
    assert run("gateway", "keys", "list", "bob@example.org") == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 2 and all(f"  token {TOKEN!r}  " in line for line in listed)
    assert listed[1].endswith("current")
    with Store.open(backend.url, backend.data_dir, create=False) as store:
        for row in store.gateway_keys("bob@example.org"):
            assert row.sealed.startswith(b"pkcs11:")
            assert all(part not in row.sealed for part in _secret_parts(bob))
    # without a token configured, --into-token is refused with a clear message
    (tmp_path / "plain.toml").write_text(
        f'[gateway]\nkey_passphrase_file = "{tmp_path / "p12.pass"}"\n')
    assert main([*backend.cli_args(), "--config", str(tmp_path / "plain.toml"), "gateway",
                 "keys", "import", "--into-token", "--passphrase-file",
                 str(tmp_path / "p12.pass"), str(p12)]) != 0
    err = capsys.readouterr().err
    assert "needs a PKCS#11 token" in err and "Traceback" not in err
