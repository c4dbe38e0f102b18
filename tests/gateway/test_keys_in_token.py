"""Users' private keys held inside a PKCS#11 token (SoftHSM2), not in the store.

A PKCS#12 with a key history goes into the token (``import --into-token``); the store keeps
only where each key is. The pipeline signs outbound mail in the token (OpenSSL and gpgsm
verify it) and decrypts inbound mail there, to the current and to a retired certificate,
RSA PKCS#1 v1.5, RSA-OAEP and EC (ECDH). A wrong PIN, a missing token, a failed session and
a key object deleted from the token are temporary GatewayErrors with clear messages.

Keys sealed in the store move into the token (``gateway keys move-to-token``): the gateway
then signs and decrypts with them there, a second run moves nothing, a wrong PIN changes
nothing, a run stopped between the token and the row completes, and a store sealed under the
key passphrase gets its master key sealed in the token too.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from backends import Backend
from cryptography.hazmat.primitives import hashes
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
    size = (key.curve.key_size + 7) // 8
    return [der, key.private_numbers().private_value.to_bytes(size, "big")]


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


# -- keys sealed in the store moved into the token (gateway keys move-to-token) -------------

def _toml(tmp_path: Path, config: GatewayConfig, *, passphrase_file: Path | None = None,
          name: str = "smimekit.toml") -> Path:
    path = tmp_path / name
    text = (f'[gateway]\npkcs11_module = "{config.pkcs11_module}"\n'
            f'token_label = "{config.token_label}"\npin_file = "{config.pin_file}"\n')
    if passphrase_file is not None:
        text += f'key_passphrase_file = "{passphrase_file}"\n'
    path.write_text(text)
    return path


def _sealed_history(store: Store, pki: PKI, source: bytes | object, people: list[Identity],
                    ) -> StoreHeldKeys:
    """Each pair (current, old) of ``people`` imported sealed in the store (no token), the
    older key retired."""
    held = StoreHeldKeys.open(store, source, create=True)  # type: ignore[arg-type]
    for current, old in zip(people[::2], people[1::2], strict=True):
        done = import_pkcs12(held, _p12(pki, current, old), P12_PASS)
        assert [d.new for d in done] == [True, True]
        assert store.retire_gateway_key(done[1].fingerprint, dt.datetime.now(dt.UTC))
    return held


def _raw_key_columns(store: Store) -> list[bytes]:
    with store.read() as conn:
        return [bytes(v) for r in conn.execute(select(schema.gateway_keys)).all()
                for v in r if isinstance(v, bytes | memoryview)]


@pytest.fixture
def movers(pki: PKI) -> dict[str, Identity]:
    # certificates of each test's own (so CKA_IDs no other test, or backend, wrote)
    root = (pki.root_key, pki.root)
    return {
        "carol": pki.person("mv-carol", "rsa2048", email="carol@example.org", issuer=root),
        "carol-old": pki.person("mv-carol-old", "rsa2048", email="carol@example.org",
                                issuer=root),
        "dan": pki.person("mv-dan", "p256", email="dan@example.org", issuer=root),
        "dan-old": pki.person("mv-dan-old", "p256", email="dan@example.org", issuer=root),
        "org": pki.person("mv-org", "rsa2048", email="gateway@example.org", issuer=root),
        "erin": pki.person("mv-erin", "ed25519", email="erin@example.org", issuer=root),
        # encryption only: proved in the token by a decryption, an ECDH agreement
        "hank": pki.person("mv-hank", "rsa2048", email="hank@example.org", issuer=root,
                           key_usage="encrypt"),
        "ivy": pki.person("mv-ivy", "p384", email="ivy@example.org", issuer=root,
                          key_usage="encrypt"),
    }


def test_keys_sealed_in_the_store_move_into_the_token_and_keep_working(
        backend: Backend, tmp_path: Path, module: str, pki: PKI,
        people: dict[str, Identity], movers: dict[str, Identity],
        capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, module)
    toml = _toml(tmp_path, config)
    carol, dan, org, erin = movers["carol"], movers["dan"], movers["org"], movers["erin"]
    history = [carol, movers["carol-old"], dan, movers["dan-old"]]
    partner = people["partner"]
    with Store.open(backend.url, backend.data_dir) as store:
        held = _sealed_history(store, pki, master_key_source(config), history)
        held.add(org.key, org.cert, organisation=True)
        held.add(erin.key, erin.cert)  # Ed25519: the token does not take it
        for name in ("hank", "ivy"):
            assert held.add(movers[name].key, movers[name].cert).purpose == "encrypt"
        held.close()
        assert all(where(r) == "store" for r in store.gateway_keys())
        audited = store.audit_count()

    def run(*args: str) -> int:
        return main([*backend.cli_args(), "--config", str(toml), "gateway", "keys", *args])

    assert run("move-to-token", "--all") == 0
    captured = capsys.readouterr()
    out = captured.out
    assert len(re.findall(rf"^moved to token {TOKEN!r}: [0-9a-f]{{16}}  ", out, re.M)) == 7, out
    assert re.search(r"^stays in the store: [0-9a-f]{16}  erin@example.org  sign \(a "
                     r"\S*Ed25519\S* cannot be kept in the token", out, re.M), out
    assert out.splitlines()[-1] == ("7 moved, 0 in the token already, 1 staying in the store,"
                                    " 0 failed")
    assert captured.err == ""
    with Store.open(backend.url, backend.data_dir, create=False) as store:
        rows = store.gateway_keys()
        assert len(rows) == 8
        for row in rows:
            if row.address == "erin@example.org":
                assert where(row) == "store"
                continue
            assert token_reference(row) == (TOKEN, bytes.fromhex(row.fingerprint))
        # the rows hold no key material any more
        raw = _raw_key_columns(store)
        for who in (*history, org, movers["hank"], movers["ivy"]):
            assert not any(part in value for part in _secret_parts(who) for value in raw)
        if backend.name == "sqlite":
            files = b"".join(p.read_bytes() for p in backend.data_dir.rglob("*")
                             if p.is_file())
            for who in (*history, org, movers["hank"], movers["ivy"]):
                assert not any(part in files for part in _secret_parts(who))
        entries = store.audit_entries()[audited:]
        assert [e.action for e in entries] == ["gateway.keys.move-to-token"] * 7
        assert {e.subject for e in entries} == {"carol@example.org", "dan@example.org",
                                                "hank@example.org", "ivy@example.org",
                                                "organisation"}
        assert all(e.details["where"] == f"token {TOKEN!r}" and not e.details["reused"]
                   and e.actor.startswith("cli:") for e in entries)
        logged = "".join(str(e.details) for e in entries).encode()
        for who in (*history, org, movers["hank"], movers["ivy"]):
            assert not any(part.hex().encode() in logged for part in _secret_parts(who)[1:])

        # the gateway signs and decrypts with them in the token: current and retired keys
        held = open_held_keys(config, store)
        try:
            harvest(store, pki, partner)
            pipeline = _pipeline(store, pki, held, config)
            signing = held.signing_key(carol.email)
            assert signing is not None and isinstance(signing.key, TokenRSAKey)
            assert signing.certificate == carol.cert
            organisation = held.organisation_key()
            assert organisation is not None and isinstance(organisation.key, TokenRSAKey)
            out_mail = pipeline.process(Envelope(carol.email, (partner.email,),
                                                 mail(body=SECRET, sender=carol.email),
                                                 trusted=True))
            assert [d.action for d in out_mail.decisions] == ["signed"]
            verified = api.verify(out_mail.deliveries[0].data, trust=[pki.root])
            assert SECRET.encode() in verified.content
            for target, current, kind in ((carol, carol, TokenRSAKey),
                                          (movers["carol-old"], carol, TokenRSAKey),
                                          (dan, dan, TokenECKey),
                                          (movers["dan-old"], dan, TokenECKey),
                                          (movers["hank"], movers["hank"], TokenRSAKey),
                                          (movers["ivy"], movers["ivy"], TokenECKey)):
                assert all(isinstance(k.key, kind) for k in held.decryption_keys(target.email))
                sent = api.sign_encrypt(
                    mail(body=SECRET, sender=partner.email, to=target.email), partner.key,
                    partner.cert, [target.cert], include_self=False)
                got = pipeline.process(Envelope(partner.email, (target.email,), sent))
                [decision] = got.decisions
                assert decision.action == "re-encrypted", decision.reason
                opened = api.decrypt_verify(got.deliveries[0].data, current.key, current.cert,
                                            trust=[pki.root])
                assert SECRET.encode() in opened.content
            # Ed25519 stayed sealed in the store and still opens from there
            erin_key = held.signing_key(erin.email)
            assert erin_key is not None and not getattr(erin_key.key, "token_held", False)
        finally:
            held.close()

    # a second run moves nothing and audits nothing
    assert run("move-to-token", "--all") == 0
    out = capsys.readouterr().out
    assert "moved to" not in out
    assert len(re.findall(rf"^already in token {TOKEN!r}: ", out, re.M)) == 7, out
    assert out.splitlines()[-1] == ("0 moved, 7 in the token already, 1 staying in the store,"
                                    " 0 failed")
    with Store.open(backend.url, backend.data_dir, create=False) as store:
        assert [e.action for e in store.audit_entries()].count(
            "gateway.keys.move-to-token") == 7
    # naming nothing is a usage error
    assert run("move-to-token") == 2
    assert "--all" in capsys.readouterr().err


@pytest.mark.parametrize("master", ["token", "passphrase"])
def test_a_wrong_pin_moves_nothing_and_says_so_in_one_line(
        tmp_path: Path, module: str, pki: PKI, movers: dict[str, Identity], master: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, module)
    passphrase = tmp_path / "key.pass"
    passphrase.write_text("gateway key passphrase\n")
    data_dir = tmp_path / "data"
    carol, old = movers["carol"], movers["carol-old"]
    with Store.open(None, data_dir) as store:
        source = master_key_source(config) if master == "token" else b"gateway key passphrase"
        _sealed_history(store, pki, source, [carol, old]).close()
        before = store.gateway_keys()
        sealing = store.gateway_master_key()
        audited = store.audit_count()
    bad = _config(tmp_path, module, pin="wrong-pin-0000")
    toml = _toml(tmp_path, bad, passphrase_file=passphrase)
    consent = ["--seal-master-in-token"] if master == "passphrase" else []
    code = main(["--data-dir", str(data_dir), "--config", str(toml), "gateway", "keys",
                 "move-to-token", "carol@example.org", *consent])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and "wrong user PIN" in err and "Traceback" not in err, err
    assert "wrong-pin-0000" not in err
    with Store.open(None, data_dir, create=False) as store:
        assert store.gateway_keys() == before  # every row still sealed, as it was
        assert store.gateway_master_key() == sealing
        assert store.audit_count() == audited
        held = StoreHeldKeys.open(store, source)  # type: ignore[arg-type]
        keys = held.decryption_keys(carol.email)
        assert [k.key.private_numbers() for k in keys] == \
            [carol.key.private_numbers(), old.key.private_numbers()]  # type: ignore[union-attr]


def test_an_interrupted_move_completes_and_another_key_under_the_id_fails_clearly(
        tmp_path: Path, module: str, pki: PKI, people: dict[str, Identity],
        movers: dict[str, Identity], capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, module)
    toml = _toml(tmp_path, config)
    data_dir = tmp_path / "data"
    # fresh certificates: CKA_IDs no other test wrote
    root = (pki.root_key, pki.root)
    frank = pki.person("mv-frank", "rsa2048", email="frank@example.org", issuer=root)
    frank_old = pki.person("mv-frank-old", "rsa2048", email="frank@example.org", issuer=root)
    with Store.open(None, data_dir) as store:
        _sealed_history(store, pki, master_key_source(config), [frank, frank_old]).close()
        rows = {r.fingerprint: r for r in store.gateway_keys("frank@example.org")}
    current_id = frank.cert.fingerprint(hashes.SHA256())
    old_id = frank_old.cert.fingerprint(hashes.SHA256())
    ring = TokenKeyring(module, TOKEN, PIN)
    try:
        # a run that stopped after the token took the current key, before its row changed
        assert ring.store(frank.key, current_id, f"smimekit-held frank@example.org"
                          f" {current_id.hex()[:16]}", sign=True, decrypt=True)
        # and someone else's key under the old key's ID
        assert ring.store(people["partner"].key, old_id, "not frank's", sign=True,
                          decrypt=True)
    finally:
        ring.close()

    def run() -> tuple[int, str, str]:
        code = main(["--data-dir", str(data_dir), "--config", str(toml), "gateway", "keys",
                     "move-to-token", "frank@example.org"])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    code, out, err = run()
    assert code == 1
    assert re.search(rf"^moved to token {TOKEN!r} \(its object was there already\):"
                     rf" {current_id.hex()[:16]}  frank@example.org", out, re.M), out
    assert out.splitlines()[-1] == "1 moved, 0 in the token already, 0 staying in the store," \
                                   " 1 failed"
    assert f"failed: {old_id.hex()[:16]}  frank@example.org" in err
    assert "not the private half" in err and "Traceback" not in err, err
    assert err.splitlines()[-1].startswith("smimekit: error: 1 key(s) could not be moved")
    with Store.open(None, data_dir, create=False) as store:
        after = {r.fingerprint: r for r in store.gateway_keys("frank@example.org")}
        assert token_reference(after[current_id.hex()]) == (TOKEN, current_id)
        assert after[old_id.hex()] == rows[old_id.hex()]  # unchanged, still sealed
        [entry] = [e for e in store.audit_entries()
                   if e.action == "gateway.keys.move-to-token"]
        assert entry.details["reused"] is True
        assert entry.details["fingerprint"] == current_id.hex()
        held = open_held_keys(config, store)
        try:
            keys = held.decryption_keys("frank@example.org")
            assert isinstance(keys[0].key, TokenRSAKey)
            assert keys[1].key.private_numbers() == frank_old.key.private_numbers()  # type: ignore[union-attr]
        finally:
            held.close()
    # the intruder removed, the next run completes
    ring = TokenKeyring(module, TOKEN, PIN)
    try:
        assert ring.delete(old_id) == 1
    finally:
        ring.close()
    code, out, err = run()
    assert code == 0, err
    assert out.splitlines()[-1] == "1 moved, 1 in the token already, 0 staying in the store," \
                                   " 0 failed"


def test_a_store_sealed_under_the_passphrase_moves_to_the_token_master_key_too(
        tmp_path: Path, module: str, pki: PKI, movers: dict[str, Identity],
        capsys: pytest.CaptureFixture[str]) -> None:
    """The organisation that started without an HSM: master key under the passphrase."""
    config = _config(tmp_path, module)
    passphrase = tmp_path / "key.pass"
    passphrase.write_text("gateway key passphrase\n")
    data_dir = tmp_path / "data"
    root = (pki.root_key, pki.root)
    gina = pki.person("mv-gina", "p384", email="gina@example.org", issuer=root)
    gina_old = pki.person("mv-gina-old", "rsa2048", email="gina@example.org", issuer=root)
    with Store.open(None, data_dir) as store:
        _sealed_history(store, pki, b"gateway key passphrase", [gina, gina_old]).close()
    # the token alone does not open it, and without the passphrase the move says why
    code = main(["--data-dir", str(data_dir), "--config", str(_toml(tmp_path, config)),
                 "gateway", "keys", "move-to-token", "--all"])
    err = capsys.readouterr().err
    assert code == 1 and "sealed under the key passphrase" in err and err.count("\n") == 1
    toml = _toml(tmp_path, config, passphrase_file=passphrase, name="both.toml")
    # with the passphrase but without consent to re-seal the master key: nothing changes
    with Store.open(None, data_dir, create=False) as store:
        before, sealing = store.gateway_keys(), store.gateway_master_key()
    code = main(["--data-dir", str(data_dir), "--config", str(toml), "gateway", "keys",
                 "move-to-token", "--all"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "--seal-master-in-token" in err, err
    with Store.open(None, data_dir, create=False) as store:
        assert store.gateway_keys() == before and store.gateway_master_key() == sealing
    code = main(["--data-dir", str(data_dir), "--config", str(toml), "gateway", "keys",
                 "move-to-token", "--all", "--seal-master-in-token"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith(f"master key: now sealed in token {TOKEN!r}")
    assert out.splitlines()[-1] == "2 moved, 0 in the token already, 0 staying in the store," \
                                   " 0 failed"
    with Store.open(None, data_dir, create=False) as store:
        assert json.loads(store.gateway_master_key() or "")["kdf"] == "pkcs11"
        assert [e.action for e in store.audit_entries()][-3:] == \
            ["gateway.keys.master-to-token"] + ["gateway.keys.move-to-token"] * 2
        # the token configuration alone now opens the store, and the keys are in the token
        held = open_held_keys(config, store)
        try:
            keys = held.decryption_keys("gina@example.org")
            assert [type(k.key) for k in keys] == [TokenECKey, TokenRSAKey]
            sent = api.encrypt(mail(body=SECRET, to=gina_old.email), [gina_old.cert])
            assert SECRET.encode() in api.decrypt(sent, keys[1].key, gina_old.cert).content
        finally:
            held.close()


def test_a_token_that_fails_mid_move_keeps_that_row_sealed_and_the_next_key_goes_on(
        tmp_path: Path, module: str, pki: PKI, movers: dict[str, Identity]) -> None:
    config = _config(tmp_path, module)
    carol, old = movers["carol"], movers["carol-old"]
    with Store.open(None, tmp_path / "data") as store:
        held = _sealed_history(store, pki, master_key_source(config), [carol, old])
        rows = store.gateway_keys(carol.email)  # oldest first: old, then carol
        try:
            moving = held.move_to_token(rows, actor="test")
            # the session dies under the command (token reset) before the first key
            held._keyring(TOKEN, "test")._session.close()
            first = next(moving)
            assert first.state == "failed" and first.fingerprint == rows[0].fingerprint
            assert f"token {TOKEN!r} could not" in first.reason
            second = next(moving)  # a new session: the next key moves
            assert (second.state, second.fingerprint) == ("moved", rows[1].fingerprint)
            assert next(moving, None) is None
        finally:
            held.close()
        after = store.gateway_keys(carol.email)
        assert after[0] == rows[0]  # still sealed, as it was
        assert token_reference(after[1]) is not None
        assert [e.subject for e in store.audit_entries()
                if e.action == "gateway.keys.move-to-token"] == [carol.email]
        # the next run moves the one that failed (its object may or may not be in the token)
        held = StoreHeldKeys.open(store, master_key_source(config))
        try:
            assert [m.state for m in held.move_to_token(store.gateway_keys(carol.email),
                                                        actor="test")] in (
                ["moved", "in token"], ["reused", "in token"])
        finally:
            held.close()
