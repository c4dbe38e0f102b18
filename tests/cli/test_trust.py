"""``smimekit trust`` and the recipient check of ``encrypt``."""

from __future__ import annotations

import datetime as dt
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from pki import NOW, PKI, Identity, message

import smimekit
from smimekit.cli.main import main
from smimekit.errors import EncryptionError, TrustStoreError
from smimekit.validation.trust import TrustStore, fingerprint


def _pem(path: Path, cert) -> str:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(path)


def test_add_list_show_remove(tmp_path: Path, pki: PKI, capsys: pytest.CaptureFixture[str]
                              ) -> None:
    data = str(tmp_path / "data")
    root = _pem(tmp_path / "root.pem", pki.root)
    assert main(["--data-dir", data, "trust", "add", root]) == 0
    assert main(["--data-dir", data, "trust", "add", root]) == 0
    out = capsys.readouterr().out
    assert "added:" in out and "already trusted:" in out
    store = tmp_path / "data" / "trust"
    assert stat.S_IMODE(store.stat().st_mode) == 0o700
    (anchor,) = store.glob("*.pem")
    assert stat.S_IMODE(anchor.stat().st_mode) == 0o600
    fp = fingerprint(pki.root)
    assert main(["--data-dir", data, "trust", "list"]) == 0
    assert fp[:16] in capsys.readouterr().out
    assert main(["--data-dir", data, "trust", "show", fp[:12]]) == 0
    assert "Test Root" in capsys.readouterr().out
    assert main(["--data-dir", data, "trust", "remove", fp[:12]]) == 0
    assert TrustStore(Path(data)).anchors() == []


def test_end_entities_are_not_anchors_unless_asked(tmp_path: Path, alice: Identity) -> None:
    store = TrustStore(tmp_path)
    with pytest.raises(TrustStoreError, match="not a CA"):
        store.add([alice.cert])
    store.add([alice.cert], allow_end_entity=True)
    assert store.anchors() == [alice.cert]


def test_unknown_or_ambiguous_fingerprints_fail(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--data-dir", str(tmp_path), "trust", "show", "deadbeef00"]) == 1
    assert "no trust anchor" in capsys.readouterr().err
    assert main(["--data-dir", str(tmp_path), "trust", "remove", "12"]) == 1


def test_verify_uses_the_store(tmp_path: Path, pki: PKI, alice: Identity,
                               capsys: pytest.CaptureFixture[str]) -> None:
    signed = tmp_path / "s.eml"
    signed.write_bytes(smimekit.sign(message(), alice.key, alice.cert))
    data = str(tmp_path / "data")
    assert main(["--data-dir", data, "verify", str(signed)]) == 1
    TrustStore(Path(data)).add([pki.root])
    assert main(["--data-dir", data, "verify", str(signed), "-o", str(tmp_path / "o")]) == 0


def test_encrypt_refuses_expired_unfit_and_untrusted_recipients(pki: PKI, bob: Identity
                                                                 ) -> None:
    expired = pki.person("old", "rsa2048", fresh_key=True,
                         not_before=NOW - dt.timedelta(days=800),
                         not_after=NOW - dt.timedelta(days=1))
    sign_only = pki.person("signer", "p256", key_usage="sign", fresh_key=True)
    with pytest.raises(EncryptionError, match="expired"):
        smimekit.encrypt(message(), [expired.cert])
    with pytest.raises(EncryptionError, match="keyAgreement"):
        smimekit.encrypt(message(), [sign_only.cert])
    with pytest.raises(EncryptionError, match="no chain to a trust anchor"):
        smimekit.encrypt(message(), [bob.cert], trust=[expired.cert])
    assert smimekit.encrypt(message(), [bob.cert], trust=[pki.root])
    assert smimekit.encrypt(message(), [expired.cert], check_recipients=False)


def test_cli_encrypt_checks_recipients_and_can_be_told_not_to(tmp_path: Path, pki: PKI,
                                                              bob: Identity,
                                                              capsys: pytest.CaptureFixture[str]
                                                              ) -> None:
    msg = tmp_path / "m.eml"
    msg.write_bytes(message())
    expired = pki.person("old", "rsa2048", fresh_key=True,
                         not_before=NOW - dt.timedelta(days=800),
                         not_after=NOW - dt.timedelta(days=1))
    old = _pem(tmp_path / "old.pem", expired.cert)
    out = str(tmp_path / "e.eml")
    assert main(["encrypt", "--to", old, str(msg), "-o", out]) == 1
    assert "refusing to encrypt" in capsys.readouterr().err
    assert not os.path.exists(out)
    assert main(["encrypt", "--to", old, "--no-recipient-check", str(msg), "-o", out]) == 0
    root = _pem(tmp_path / "root.pem", pki.root)
    bobs = _pem(tmp_path / "bob.pem", bob.cert)
    assert main(["encrypt", "--to", bobs, "--trust", root, str(msg), "-o", out]) == 0
