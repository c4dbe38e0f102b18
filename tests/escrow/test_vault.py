"""The escrow of the vault key: init, share files, reconstruction checks, officer rotation,
re-key (interrupted and resumed), deposits. Store tests run on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from escrow_kit import CA_PASS, FAST, Env, Officer, make_leaver
from pki import PKI

import smimekit.escrow.ceremony as ceremony
import smimekit.escrow.shares
from smimekit.ca.home import CAConfig, CAHome
from smimekit.ca.profiles import Purpose
from smimekit.errors import CAError, EscrowError, PassphraseError
from smimekit.escrow.ceremony import deposit_key, init_escrow, rekey_escrow, rotate_escrow
from smimekit.escrow.shamir import Share
from smimekit.escrow.shares import (
    OfficerSpec,
    ShareHeader,
    protect_share,
    read_share_header,
    unlock_share,
)
from smimekit.escrow.vault import key_records, load_state, open_record, reconstruct, sealed_to
from smimekit.keys.vault import KeyVault
from smimekit.store import schema

# -- init -----------------------------------------------------------------------------------------


def test_init_splits_the_vault_key_and_removes_it(env: Env) -> None:
    vault_before = env.home.unlock(CA_PASS).vault
    assert vault_before.key is not None
    result = env.escrow()
    assert not (env.home.path / "vault.p12").exists()
    assert len(result.share_files) == 5
    for path in result.share_files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.read_text().startswith("-----BEGIN SMIMEKIT ESCROW SHARE-----\nOfficer: ")
    state = load_state(env.home)
    assert state is not None and state.rekey is None
    assert state.active.generation == 1 and state.active.threshold == 3
    assert [o.name for o in state.active.officers] == [o.name for o in env.officers]
    assert "PRIVATE" not in (env.home.path / "escrow.json").read_text()
    # the CA keeps issuing (sealing to the certificate) but can no longer open anything
    issued = env.cax.issue_generated("new@example.com", **FAST)
    assert issued.item(Purpose.ENCRYPT) is not None
    assert env.cax.ca.vault.key is None
    with pytest.raises(CAError, match="locked"):
        env.cax.key_history("new@example.com")
    key = reconstruct(state.active, env.shares("Alice", "Dave", "Bob"))
    assert key.private_numbers() == vault_before.key.private_numbers()  # type: ignore[union-attr]
    (entry,) = [e for e in env.store.audit_entries() if e.action == "escrow.init"]
    assert entry.details["threshold"] == 3 and len(entry.details["officers"]) == 5
    assert env.store.verify_audit_log() == []


def test_production_scrypt_cost_round_trips(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # the real n = 2^17
    assert smimekit.escrow.shares.SCRYPT_N == 2**17
    header = ShareHeader("00" * 8, 1, 1, 2, 2, "Dave", "ab" * 32, "cd" * 32, "", None)
    data = protect_share(header, Share(1, 2, b"\x01" * 48),
                         OfficerSpec("Dave", passphrase=b"a long share passphrase"))
    assert _body(data.decode())["protection"]["n"] == 2**17
    share = unlock_share(data, passphrase=b"a long share passphrase")
    assert share.share.value == b"\x01" * 48


@pytest.mark.parametrize("threshold,count,match", [
    (1, 3, "threshold"), (4, 3, "threshold"), (2, 1, "threshold")])
def test_bad_threshold_refused(env: Env, threshold: int, count: int, match: str) -> None:
    with pytest.raises(EscrowError, match=match):
        init_escrow(env.data_dir, env.store, CA_PASS, [o.spec for o in env.officers[:count]],
                    threshold, env.shares_dir, actor="test")
    assert (env.home.path / "vault.p12").exists() and not env.shares_dir.exists()


def test_bad_officers_refused(env: Env, pki: PKI) -> None:
    specs = [o.spec for o in env.officers]
    signer = pki.person("signer-officer", "rsa2048", key_usage="sign")
    cases = [
        ([specs[0], specs[0], specs[1]], "same name"),
        ([*specs[:2], OfficerSpec("Short", passphrase=b"too short")], "at least 12"),
        ([*specs[:2], OfficerSpec("Signer", certificate=signer.cert)], "keyEncipherment"),
        ([*specs[:2], OfficerSpec("Both")], "certificate or a passphrase"),
        ([*specs[:2], OfficerSpec("a=b", passphrase=b"x" * 20)], "officer name"),
    ]
    for officers, match in cases:
        with pytest.raises(EscrowError, match=match):
            init_escrow(env.data_dir, env.store, CA_PASS, officers, 2, env.shares_dir,
                        actor="test")
    with pytest.raises(PassphraseError, match="CA passphrase"):
        init_escrow(env.data_dir, env.store, b"wrong passphrase", specs, 3, env.shares_dir,
                    actor="test")
    assert (env.home.path / "vault.p12").exists()


def test_second_init_refused_and_interrupted_init_finished(env: Env) -> None:
    p12 = (env.home.path / "vault.p12").read_bytes()
    env.escrow()
    with pytest.raises(EscrowError, match="under escrow already"):
        env.escrow()
    # a crash after escrow.json but before vault.p12 went: running init again finishes it
    (env.home.path / "vault.p12").write_bytes(p12)
    result = init_escrow(env.data_dir, env.store, b"", [], 0, env.shares_dir, actor="test")
    assert result.share_files == () and not (env.home.path / "vault.p12").exists()


# -- share files ----------------------------------------------------------------------------------


def _body(text: str) -> dict[str, Any]:
    encoded = text.partition("\n\n")[2].partition("-----END")[0]
    return json.loads(base64.b64decode("".join(encoded.split())))  # type: ignore[no-any-return]


def _edit_body(path: Path, change: dict[str, object]) -> None:
    text = path.read_text()
    head, _, rest = text.partition("\n\n")
    tail = rest.partition("-----END")[2]
    body = _body(text)
    body.update(change)
    new = base64.b64encode(json.dumps(body).encode()).decode()
    path.write_text(f"{head}\n\n{new}\n-----END{tail}")


def test_share_files_open_only_for_their_officer(env: Env) -> None:
    env.escrow()
    alice, bob, dave = env.officer("Alice"), env.officer("Bob"), env.officer("Dave")
    data = env.share_file("Alice").read_bytes()
    header = read_share_header(data)
    assert header.protection == "certificate" and header.officer == "Alice Officer"
    assert alice.unlock(env.share_file("Alice")).share.index == 1
    with pytest.raises(EscrowError, match="not the key of the officer's certificate"):
        unlock_share(data, key=bob.key)
    with pytest.raises(EscrowError, match="give the officer's private key"):
        unlock_share(data, passphrase=b"whatever it is")
    dave_data = env.share_file("Dave").read_bytes()
    with pytest.raises(EscrowError, match="wrong passphrase"):
        unlock_share(dave_data, passphrase=b"not Dave's passphrase")
    assert unlock_share(dave_data, passphrase=dave.passphrase).header.index == 4
    with pytest.raises(EscrowError, match="not a smimekit escrow share"):
        unlock_share(b"hello", passphrase=b"x")


@pytest.mark.parametrize("officer", ["Alice", "Dave"])
def test_edited_share_files_refused(env: Env, officer: str) -> None:
    env.escrow()
    who = env.officer(officer)
    path = env.share_file(officer)
    original = path.read_text()
    # a readable line that no longer says what the contents say
    path.write_text(original.replace("Share: ", "Share: 9", 1))
    with pytest.raises(EscrowError, match="altered"):
        who.unlock(path)
    # the authenticated header edited (the index, with the readable line to match)
    path.write_text(original)
    n = 1 if officer == "Alice" else 4
    _edit_body(path, {"index": 2})
    path.write_text(path.read_text().replace(f"Share: {n} of", "Share: 2 of"))
    with pytest.raises(EscrowError, match="altered"):
        who.unlock(path)
    # the protected share itself damaged
    path.write_text(original)
    body = _body(original)
    payload = bytearray(base64.b64decode(body["payload"]))
    payload[-5] ^= 1
    _edit_body(path, {"payload": base64.b64encode(bytes(payload)).decode()})
    with pytest.raises(EscrowError, match="altered"):
        who.unlock(path)


# -- reconstruction -------------------------------------------------------------------------------


def test_any_three_rebuild_two_do_not(env: Env) -> None:
    env.escrow()
    state = load_state(env.home)
    assert state is not None
    vault_cert = env.home.certificate("vault")
    for names in (("Alice", "Bob", "Carol"), ("Dave", "Erin", "Bob"), ("Erin", "Alice", "Dave")):
        assert reconstruct(state.active, env.shares(*names)).public_key() \
            == vault_cert.public_key()
    assert reconstruct(state.active, env.shares("Alice", "Bob", "Carol", "Dave", "Erin"))
    with pytest.raises(EscrowError, match="2 valid shares given, 3 needed"):
        reconstruct(state.active, env.shares("Alice", "Erin"))
    with pytest.raises(EscrowError, match="given twice"):
        reconstruct(state.active, env.shares("Alice", "Alice", "Bob"))


def test_edited_escrow_json_refused(env: Env) -> None:
    env.escrow()
    path = env.home.path / "escrow.json"
    original = path.read_text()
    for edit in (lambda d: d["active"].update(threshold=2),
                 lambda d: d["active"]["officers"][0].update(name="Mallory")):
        data = json.loads(original)
        edit(data)
        path.write_text(json.dumps(data))
        state = load_state(env.home)
        assert state is not None
        with pytest.raises(EscrowError, match=r"escrow\.json was altered"):
            reconstruct(state.active, env.shares("Alice", "Bob"))
    data = json.loads(original)
    data["active"]["vault_fingerprint"] = "00" * 32
    path.write_text(json.dumps(data))
    with pytest.raises(EscrowError, match="damaged or was edited"):
        load_state(env.home)
    path.write_text("{not json")
    with pytest.raises(EscrowError, match="damaged"):
        load_state(env.home)


def test_a_share_of_another_escrow_is_named(env: Env, tmp_path: Path,
                                            officers: list[Officer]) -> None:
    env.escrow()
    other = Env(env.backend, env.home, env.store, env.cax, tmp_path / "other", officers)
    home2 = CAHome(tmp_path / "ca2")
    home2.create(CAConfig(organization="Other Ltd", base_url="http://pki.other.com",
                          key_type="p256"), CA_PASS)
    init_escrow(home2.path.parent, env.store, CA_PASS, [o.spec for o in officers], 3,
                other.shares_dir, actor="test")
    state = load_state(env.home)
    assert state is not None
    foreign = other.shares("Alice")
    with pytest.raises(EscrowError, match="belongs to another escrow"):
        reconstruct(state.active, [*env.shares("Bob", "Carol"), *foreign])


# -- rotation -------------------------------------------------------------------------------------


def test_rotate_changes_officers_and_old_shares_stop_counting(env: Env, tmp_path: Path) -> None:
    make_leaver(env.cax)
    env.escrow()
    before = [r.sealed for r in key_records(env.store)]
    new_dir = tmp_path / "rotated"
    officers = [o.spec for o in env.officers[:3]]
    result = rotate_escrow(env.data_dir, env.store, env.shares("Alice", "Dave", "Erin"),
                           officers, 2, new_dir, actor="test")
    assert result.state.active.generation == 2 and len(result.share_files) == 3
    assert [r.sealed for r in key_records(env.store)] == before  # records untouched
    state = load_state(env.home)
    assert state is not None and state.active.threshold == 2
    with pytest.raises(EscrowError, match="generation 1, but the escrow is at generation 2"):
        reconstruct(state.active, [*env.shares("Bob", generation=2, directory=new_dir),
                                   *env.shares("Carol")])
    key = reconstruct(state.active, env.shares("Bob", "Carol", generation=2,
                                               directory=new_dir))
    assert key.public_key() == env.home.certificate("vault").public_key()


# -- re-key ---------------------------------------------------------------------------------------


def _all_open(env: Env, vault: KeyVault) -> int:
    records = key_records(env.store)
    for record in records:
        open_record(vault, env.store, record)
    return len(records)


def _rekey_officers(env: Env) -> list[OfficerSpec]:
    return [OfficerSpec(o.name, passphrase=o.passphrase) for o in env.officers
            if o.passphrase is not None]


def test_rekey_reseals_every_record_to_a_new_vault_key(env: Env, tmp_path: Path) -> None:
    make_leaver(env.cax)
    env.escrow()
    make_leaver(env.cax, "second@example.com")
    old_cert = env.home.certificate("vault")
    new_dir = tmp_path / "rekeyed"
    result = rekey_escrow(env.data_dir, env.store, env.shares("Alice", "Bob", "Dave"),
                          new_dir, actor="test", officers=_rekey_officers(env), batch_size=2)
    assert result.resealed == 6 and len(result.share_files) == 5
    state = load_state(env.home)
    assert state is not None and state.rekey is None and state.active.generation == 2
    new_cert = env.home.certificate("vault")
    assert new_cert != old_cert and state.active.vault_cert == new_cert
    new_key = reconstruct(state.active, env.shares("Carol", "Erin", "Bob", generation=2,
                                                   directory=new_dir))
    assert _all_open(env, KeyVault(new_cert, new_key)) == 6
    assert not any(sealed_to(r.sealed, old_cert) for r in key_records(env.store))
    with pytest.raises(EscrowError, match="generation 1"):
        reconstruct(state.active, env.shares("Alice", "Bob", "Dave"))
    phases = [e.details["phase"] for e in env.store.audit_entries()
              if e.action == "escrow.rekey"]
    assert phases == ["started", "finished"]
    assert env.store.verify_audit_log() == []


def test_rekey_needs_the_passphrase_officers_new_passphrases(env: Env, tmp_path: Path) -> None:
    env.escrow()
    with pytest.raises(EscrowError, match="Dave Officer holds a passphrase-protected share"):
        rekey_escrow(env.data_dir, env.store, env.shares("Alice", "Bob", "Dave"),
                     tmp_path / "x", actor="test")
    with pytest.raises(EscrowError, match="not an officer"):
        rekey_escrow(env.data_dir, env.store, env.shares("Alice", "Bob", "Dave"),
                     tmp_path / "x", actor="test",
                     officers=[OfficerSpec("Zed", passphrase=b"z" * 20)])


def test_interrupted_rekey_resumes_and_ends_consistent(env: Env, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    make_leaver(env.cax)
    make_leaver(env.cax, "second@example.com")
    env.escrow()
    old_cert = env.home.certificate("vault")
    new_dir = tmp_path / "rekeyed"
    shares = env.shares("Alice", "Bob", "Dave")

    # 1: stop after the first committed batch of two
    def stop(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rekey_escrow(env.data_dir, env.store, shares, new_dir, actor="test",
                     officers=_rekey_officers(env), batch_size=2, progress=stop)
    state = load_state(env.home)
    assert state is not None and state.rekey is not None
    new_cert = state.rekey.vault_cert
    assert sum(sealed_to(r.sealed, new_cert) for r in key_records(env.store)) == 2
    assert env.home.certificate("vault") == old_cert  # not switched yet

    # 2: a failure inside a batch rolls that batch back
    real = ceremony._reseal
    calls = {"n": 0}

    def flaky(*args: object) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk on fire")
        real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(ceremony, "_reseal", flaky)
    with pytest.raises(RuntimeError):
        rekey_escrow(env.data_dir, env.store, shares, new_dir, actor="test", batch_size=3)
    # the first batch (two done before, one more) committed, the second rolled back
    assert sum(sealed_to(r.sealed, new_cert) for r in key_records(env.store)) == 3
    monkeypatch.setattr(ceremony, "_reseal", real)

    # the CA sealed a new key to the old vault key meanwhile; the resumed run sweeps it up
    make_leaver(env.cax, "third@example.com")
    with pytest.raises(EscrowError, match="its new shares exist already"):
        rekey_escrow(env.data_dir, env.store, shares, new_dir, actor="test",
                     officers=_rekey_officers(env))
    # ... and one more while the last batch is done (swept after vault.pem switched)
    late: list[int] = []

    def issue_late(done: int, total: int) -> None:
        if done == total and not late:
            late.append(1)
            make_leaver(env.cax, "late@example.com")

    result = rekey_escrow(env.data_dir, env.store, shares, new_dir, actor="test",
                          batch_size=2, progress=issue_late)
    assert result.resealed == 9 and result.share_files == ()
    new_key = reconstruct(result.state.active, env.shares("Bob", "Carol", "Erin",
                                                          generation=2, directory=new_dir))
    assert _all_open(env, KeyVault(new_cert, new_key)) == 12
    assert env.home.certificate("vault") == new_cert
    assert env.store.verify_audit_log() == []


def test_rekey_stops_at_a_tampered_record_and_changes_nothing_of_its_batch(
        env: Env, tmp_path: Path) -> None:
    make_leaver(env.cax)
    env.escrow()
    k = schema.private_keys
    records = key_records(env.store)
    flipped = bytearray(records[1].sealed)
    flipped[-20] ^= 1
    with env.store.transaction() as conn:
        conn.execute(k.update().where(k.c.id == records[1].id)
                     .values(encrypted_pkcs8=bytes(flipped)))
    with pytest.raises(EscrowError, match=f"key record {records[1].id} of leaver"):
        rekey_escrow(env.data_dir, env.store, env.shares("Alice", "Bob", "Carol"),
                     tmp_path / "new", actor="test", officers=_rekey_officers(env))
    assert key_records(env.store)[0].sealed == records[0].sealed


def test_rotate_refused_while_rekeying(env: Env, tmp_path: Path) -> None:
    make_leaver(env.cax)
    env.escrow()

    def stop(done: int, total: int) -> None:
        raise KeyboardInterrupt

    shares = env.shares("Alice", "Bob", "Carol")
    with pytest.raises(KeyboardInterrupt):
        rekey_escrow(env.data_dir, env.store, shares, tmp_path / "new", actor="test",
                     officers=_rekey_officers(env), batch_size=1, progress=stop)
    with pytest.raises(EscrowError, match="re-key is under way"):
        rotate_escrow(env.data_dir, env.store, shares, [o.spec for o in env.officers], 2,
                      tmp_path / "rot", actor="test")


# -- deposits -------------------------------------------------------------------------------------


def test_deposit_of_an_encryption_key(env: Env, pki: PKI) -> None:
    env.escrow()
    own = pki.person("own", "rsa2048", email="own@example.com", key_usage="encrypt")
    record = deposit_key(env.data_dir, env.store, own.key, own.cert, "Own@Example.com",
                         actor="test")
    (stored,) = env.store.private_keys_for("own@example.com")
    assert stored.id == record and sealed_to(stored.sealed, env.home.certificate("vault"))
    with pytest.raises(EscrowError, match=r"in own@example\.com's escrow already"):
        deposit_key(env.data_dir, env.store, own.key, own.cert, "own@example.com",
                    actor="test")
    state = load_state(env.home)
    assert state is not None
    vault = KeyVault(state.active.vault_cert,
                     reconstruct(state.active, env.shares("Alice", "Bob", "Carol")))
    key, cert = open_record(vault, env.store, stored)
    assert cert == own.cert and key.public_key() == own.cert.public_key()


@pytest.mark.parametrize("usage,match", [
    ("sign", "allows signing \\(digitalSignature\\).*non-repudiation"),
    ("both", "allows signing \\(digitalSignature\\).*non-repudiation"),
])
def test_deposit_of_a_signing_key_refused(env: Env, pki: PKI, usage: str, match: str) -> None:
    who = pki.person(f"signer-{usage}", "p256", email="s@example.com", key_usage=usage)
    with pytest.raises(EscrowError, match=match):
        deposit_key(env.data_dir, env.store, who.key, who.cert, "s@example.com", actor="test")
    assert env.store.private_keys_for("s@example.com") == []


def _with_usage(pki: PKI, key_usage: x509.KeyUsage | None) -> tuple[object, x509.Certificate]:
    who = pki.person("plain", "rsa2048", email="p@example.com", key_usage="encrypt")
    builder = (x509.CertificateBuilder().subject_name(who.cert.subject)
               .issuer_name(who.cert.issuer).public_key(who.cert.public_key())  # type: ignore[arg-type]
               .serial_number(x509.random_serial_number())
               .not_valid_before(who.cert.not_valid_before_utc)
               .not_valid_after(who.cert.not_valid_after_utc)
               .add_extension(x509.SubjectAlternativeName([x509.RFC822Name("p@example.com")]),
                              False))
    if key_usage is not None:
        builder = builder.add_extension(key_usage, critical=True)
    return who.key, builder.sign(pki.inter_key, hashes.SHA256())


def test_deposit_refuses_non_repudiation_and_missing_key_usage(env: Env, pki: PKI) -> None:
    flags = dict(digital_signature=False, content_commitment=True, key_encipherment=True,
                 data_encipherment=False, key_agreement=False, key_cert_sign=False,
                 crl_sign=False, encipher_only=False, decipher_only=False)
    key, cert = _with_usage(pki, x509.KeyUsage(**flags))
    with pytest.raises(EscrowError, match=r"nonRepudiation.*non-repudiation"):
        deposit_key(env.data_dir, env.store, key, cert, "p@example.com", actor="test")  # type: ignore[arg-type]
    key, cert = _with_usage(pki, None)
    with pytest.raises(EscrowError, match=r"no keyUsage.*non-repudiation"):
        deposit_key(env.data_dir, env.store, key, cert, "p@example.com", actor="test")  # type: ignore[arg-type]


def test_deposit_refuses_a_foreign_address_or_key(env: Env, pki: PKI) -> None:
    own = pki.person("own2", "rsa2048", email="own2@example.com", key_usage="encrypt")
    other = pki.person("other2", "rsa2048", key_usage="encrypt")
    with pytest.raises(EscrowError, match="does not name"):
        deposit_key(env.data_dir, env.store, own.key, own.cert, "x@example.com", actor="t")
    with pytest.raises(EscrowError, match="not the certificate's key"):
        deposit_key(env.data_dir, env.store, other.key, own.cert, "own2@example.com",
                    actor="t")


def test_vault_pem_swapped_is_refused(env: Env) -> None:
    env.escrow()
    other = KeyVault.create("Mallory")
    (env.home.path / "vault.pem").write_bytes(
        other.cert.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(EscrowError, match="not the vault certificate"):
        load_state(env.home)
