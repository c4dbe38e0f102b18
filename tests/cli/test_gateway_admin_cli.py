"""``smimekit gateway keys import|list|retire`` with PKCS#12 files that ``ca issue`` wrote, and
``smimekit gateway policy``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from backends import Backend

from smimekit.cli.main import main
from smimekit.gateway.keys import StoreHeldKeys
from smimekit.store import Store

PASS = "correct horse battery staple"
KEY_STORE_PASS = b"the gateway's own passphrase"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SMIMEKIT_PASSPHRASE", PASS)
    (tmp_path / "gw.pass").write_bytes(KEY_STORE_PASS + b"\n")
    (tmp_path / "smimekit.toml").write_text(
        f'[gateway]\nkey_passphrase_file = "{tmp_path / "gw.pass"}"\n')
    return tmp_path


def run(backend: Backend, env: Path, *args: str) -> int:
    return main([*backend.cli_args(), "--config", str(env / "smimekit.toml"), *args])


def test_import_list_retire(backend: Backend, env: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    assert run(backend, env, "ca", "init", "--org", "Example Ltd", "--base-url",
               "http://pki.example.com", "--key-type", "p256", "--country", "GB") == 0
    assert run(backend, env, "ca", "issue", "--email", "alice@example.com", "--name",
               "Alice A", "--key-type", "p256", "--out", str(env / "alice")) == 0
    out = capsys.readouterr().out
    p12_pass = re.search(r"PKCS#12 passphrase .*: (\S+)", out)
    assert p12_pass, out
    (env / "p12.pass").write_text(p12_pass.group(1) + "\n")
    for purpose in ("sign", "encrypt"):
        assert run(backend, env, "gateway", "keys", "import", "--passphrase-file",
                   str(env / "p12.pass"),
                   str(env / "alice" / f"alice@example.com.{purpose}.p12")) == 0
        assert re.search(rf"^held: [0-9a-f]{{16}}  alice@example.com  {purpose}  until ",
                         capsys.readouterr().out, re.M)
    assert run(backend, env, "gateway", "keys", "import", "--passphrase-file",
               str(env / "p12.pass"), str(env / "alice" / "alice@example.com.sign.p12")) == 0
    assert capsys.readouterr().out.startswith("already held: ")

    assert run(backend, env, "gateway", "keys", "list") == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[1:3] for line in listed] == [["alice@example.com", "sign"],
                                                     ["alice@example.com", "encrypt"]]
    assert all(line.endswith("current") for line in listed)
    sign_fp = listed[0].split()[0]

    with Store.open(backend.url, backend.data_dir, create=False) as store:
        held = StoreHeldKeys.open(store, KEY_STORE_PASS)
        assert held.signing_key("alice@example.com") is not None
        assert len(held.decryption_keys("alice@example.com")) == 1
        actions = [e.action for e in store.audit_entries()]
        assert actions.count("gateway.keys.import") == 2

    assert run(backend, env, "gateway", "keys", "retire", sign_fp) == 0
    assert capsys.readouterr().out.startswith(f"retired: {sign_fp}")
    assert run(backend, env, "gateway", "keys", "retire", sign_fp) == 1
    assert "retired already" in capsys.readouterr().err
    assert run(backend, env, "gateway", "keys", "list", "alice@example.com") == 0
    assert "retired " in capsys.readouterr().out.splitlines()[0]
    with Store.open(backend.url, backend.data_dir, create=False) as store:
        assert StoreHeldKeys.open(store, KEY_STORE_PASS).signing_key(
            "alice@example.com") is None


@pytest.mark.parametrize(("args", "says"), [
    (["retire", "xyz"], "is not a certificate fingerprint"),
    (["retire", "0123456789abcdef"], "no held key has the fingerprint"),
])
def test_bad_input_is_one_line(backend: Backend, env: Path, args: list[str], says: str,
                               capsys: pytest.CaptureFixture[str]) -> None:
    with Store.open(backend.url, backend.data_dir):
        pass
    assert run(backend, env, "gateway", "keys", *args) == 1
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1


def test_import_without_a_key_store_passphrase_says_so(
        backend: Backend, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "x.p12").write_bytes(b"not a p12")
    assert main([*backend.cli_args(), "gateway", "keys", "import", str(tmp_path / "x.p12")]) == 1
    assert "gateway.key_passphrase_file is not set" in capsys.readouterr().err


def test_policy_shows_each_value_with_its_level(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "gw.toml"
    config.write_text('[gateway]\ninternal_domains = ["example.org"]\n'
                      '[gateway.domains."*.partner.example"]\nencrypt = "always"\n'
                      '[gateway.users."ceo@example.org"]\nwebmail = true\n')
    assert main(["--config", str(config), "gateway", "policy", "--from", "ceo@example.org",
                 "A@X.Partner.Example", "ceo@example.org"]) == 0
    out = capsys.readouterr().out
    first, second = out.split("\n\n")
    assert first.startswith("a@x.partner.example  (outbound from ceo@example.org through the"
                            " trusted door; relay through the public door)")
    assert re.search(r"^  encrypt +always +domain \*\.partner\.example$", first, re.M)
    assert re.search(r"^  no_certificate +bounce +default$", first, re.M)
    assert second.startswith("ceo@example.org  (internal from ceo@example.org through the"
                             " trusted door; inbound through the public door)")
    assert re.search(r"^  webmail +true +user ceo@example.org$", second, re.M)


def test_policy_with_a_bad_level_is_one_line(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "gw.toml"
    config.write_text('[gateway.users."not-an-address"]\nencrypt = "always"\n')
    assert main(["--config", str(config), "gateway", "policy", "a@example.org"]) == 1
    err = capsys.readouterr().err
    assert "gateway.users: 'not-an-address' is not a mail address" in err
    assert len(err.strip().splitlines()) == 1
