"""Post-quantum S/MIME through the public API and the CLI: an ML-DSA-65 signer under an
ML-DSA-65 CA, ML-KEM-768/1024 recipients, a dual-key PQ sender (ML-DSA signing, ML-KEM
encryption), mixed with classical recipients."""

from __future__ import annotations

from pathlib import Path

import pytest
from pki import PKI, Identity, message, ml_dsa_pki

import smimekit
from smimekit.cli.main import main
from smimekit.errors import EncryptionError


@pytest.fixture(scope="module")
def pq_alice() -> Identity:
    return ml_dsa_pki().person("alice", "mldsa65")


@pytest.fixture(scope="module")
def pq_alice_kem() -> Identity:
    return ml_dsa_pki().person("alice", "mlkem768")


@pytest.fixture(scope="module")
def pq_bob() -> Identity:
    return ml_dsa_pki().person("bob", "mlkem1024")


def test_ml_dsa_signed_mail_verifies(pq_alice: Identity) -> None:
    pki = ml_dsa_pki()
    for opaque in (False, True):
        signed = smimekit.sign(message(), pq_alice.key, pq_alice.cert, chain=[pki.inter],
                               opaque=opaque)
        if not opaque:
            assert b'micalg="sha-512"' in signed or b"micalg=sha-512" in signed
        result = smimekit.verify(signed, trust=[pki.root])
        assert result.verdict.valid
        (signer,) = result.verdict.signers
        assert signer.signature_algorithm == "ml-dsa-65"
        assert result.content.endswith(b"Hello, world.\r\n")


def test_ml_kem_and_classical_recipients_each_decrypt(pki: PKI, pq_bob: Identity,
                                                      pq_alice_kem: Identity) -> None:
    classic = pki.person("carol", "p384")
    trust = [pki.root, ml_dsa_pki().root]
    sealed = smimekit.encrypt(message(), [pq_bob.cert, pq_alice_kem.cert, classic.cert],
                              trust=trust, intermediates=[pki.inter, ml_dsa_pki().inter])
    for who in (pq_bob, pq_alice_kem, classic):
        out = smimekit.decrypt(sealed, who.key, who.cert)
        assert out.content.endswith(b"Hello, world.\r\n")
    assert smimekit.decrypt(sealed, pq_bob.key).recipient == "kemri-ml-kem-1024"


def test_encrypting_to_an_ml_dsa_certificate_is_refused(pq_alice: Identity) -> None:
    with pytest.raises(EncryptionError):
        smimekit.encrypt(message(), [pq_alice.cert], trust=[ml_dsa_pki().root],
                         intermediates=[ml_dsa_pki().inter])


def test_dual_key_pq_sender_sign_encrypt_and_decrypt_verify(
    pq_alice: Identity, pq_alice_kem: Identity, pq_bob: Identity
) -> None:
    pki = ml_dsa_pki()
    sealed = smimekit.sign_encrypt(
        message(), pq_alice.key, pq_alice.cert, [pq_bob.cert], chain=[pki.inter],
        encryption_cert=pq_alice_kem.cert, trust=[pki.root], intermediates=[pki.inter],
        self_copy_required=True,
    )
    result = smimekit.decrypt_verify(sealed, pq_bob.key, pq_bob.cert, trust=[pki.root])
    assert [x.kind for x in result.verdict.layers] == ["encrypted", "signed"]
    assert result.verdict.valid
    # The sent copy opens with the sender's ML-KEM key.
    assert smimekit.decrypt(sealed, pq_alice_kem.key, pq_alice_kem.cert).content


def _write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_cli_sign_encrypt_decrypt_verify(tmp_path: Path, pq_alice: Identity,
                                         pq_alice_kem: Identity, pq_bob: Identity,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    pki = ml_dsa_pki()
    from cryptography.hazmat.primitives import serialization
    root = _write(tmp_path, "root.pem", pki.root.public_bytes(serialization.Encoding.PEM))
    chain = _write(tmp_path, "chain.pem", pki.inter.public_bytes(serialization.Encoding.PEM))
    a_key = _write(tmp_path, "alice.key", pq_alice.pem_key())
    a_cert = _write(tmp_path, "alice.pem", pq_alice.pem_cert())
    a_kem = _write(tmp_path, "alice-kem.pem", pq_alice_kem.pem_cert())
    a_kem_key = _write(tmp_path, "alice-kem.key", pq_alice_kem.pem_key())
    b_key = _write(tmp_path, "bob.key", pq_bob.pem_key())
    b_cert = _write(tmp_path, "bob.pem", pq_bob.pem_cert())
    msg = _write(tmp_path, "msg.eml", message())
    out = tmp_path / "out"
    out.mkdir()
    checks = ["--trust", root, "--certs", chain, "--revocation", "offline"]
    assert main(["sign", "--key", a_key, "--cert", a_cert, "--chain", chain, msg,
                 "-o", str(out / "signed.eml")]) == 0, capsys.readouterr().err
    assert main(["verify", *checks, str(out / "signed.eml"),
                 "-o", str(out / "verified.eml")]) == 0, capsys.readouterr().err
    assert main(["encrypt", "--to", b_cert, *checks, msg, "-o", str(out / "enc.eml")]) == 0, \
        capsys.readouterr().err
    assert main(["decrypt", "--key", b_key, "--cert", b_cert, str(out / "enc.eml"),
                 "-o", str(out / "dec.eml")]) == 0, capsys.readouterr().err
    assert (out / "dec.eml").read_bytes().endswith(b"Hello, world.\r\n")
    assert main(["sign-encrypt", "--key", a_key, "--cert", a_cert, "--chain", chain,
                 "--self-cert", a_kem, "--to", b_cert, *checks, msg,
                 "-o", str(out / "se.eml")]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(["decrypt-verify", "--key", b_key, "--cert", b_cert, *checks,
                 str(out / "se.eml"), "-o", str(out / "dv.eml")]) == 0, \
        capsys.readouterr().err
    assert "alice@example.org" in capsys.readouterr().err
    assert (out / "dv.eml").read_bytes().endswith(b"Hello, world.\r\n")
    # The sender's own copy, with the ML-KEM key of her dual pair.
    assert main(["decrypt", "--key", a_kem_key, "--cert", a_kem, str(out / "se.eml"),
                 "-o", str(out / "copy.eml")]) == 0, capsys.readouterr().err


def test_cli_ml_kem_512_key_is_one_clear_line(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from corpus.vectors import corpus_path
    key = corpus_path("pqc-cms", "lamps-cms-kyber-example", "ML-KEM-512-seed.priv")
    msg = _write(tmp_path, "msg.eml", message())
    assert main(["decrypt", "--key", str(key), msg, "-o", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err.strip()
    assert "ML-KEM-512 private keys are not supported" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1


def test_archive_scan_names_the_ml_kem_recipient(pq_bob: Identity) -> None:
    from smimekit import archive

    sealed = smimekit.encrypt(message(), [pq_bob.cert], check_recipients=False)
    info = archive.Classifier().classify("pq.eml", sealed)  # type: ignore[arg-type]
    assert info.envelope is not None
    (rid,) = info.envelope.recipients
    assert (rid.kind, rid.algorithm) == ("kemri", "ml-kem-1024")
    assert rid.serial == pq_bob.cert.serial_number


def test_cli_trust_store_takes_an_ml_dsa_root(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from cryptography.hazmat.primitives import serialization

    pki = ml_dsa_pki()
    root = _write(tmp_path, "root.pem", pki.root.public_bytes(serialization.Encoding.PEM))
    data = ["--data-dir", str(tmp_path / "data")]
    assert main([*data, "trust", "add", root]) == 0, capsys.readouterr().err
    fingerprint = capsys.readouterr().out.split()[1]
    assert main([*data, "trust", "show", fingerprint]) == 0
    assert "key:         ML-DSA-65" in capsys.readouterr().out
