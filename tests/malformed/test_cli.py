"""The CLI on hostile input: exit status 1, one ``smimekit: error:`` line, no traceback, and
no output file (not even a temporary one) when ``-o`` is given.

Every broken input of :mod:`malformed.cases` goes through ``smimekit.cli.main.main`` in
process (cheap); a few also through the installed ``smimekit`` script in a subprocess
(~0.3 s each), which is what a user runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from properties.pki import Pki, PkiFiles, cert_pem

from malformed.cases import DECRYPT_INPUTS, VERIFY_INPUTS, openssl, openssl_run
from smimekit.cli.main import main

SMIMEKIT = Path(sys.executable).with_name("smimekit")


def _verify_args(files: PkiFiles, out: Path) -> list[str]:
    return ["verify", "--trust", str(files.ca), "in.eml", "-o", str(out)]


def _decrypt_args(files: PkiFiles, out: Path) -> list[str]:
    return ["decrypt", "--key", str(files.keys["rsa"]), "--cert", str(files.certs["rsa"]),
            "in.eml", "-o", str(out)]


def _assert_clean_failure(status: int, stdout: str, stderr: str, out: Path) -> None:
    lines = stderr.splitlines()
    assert status == 1, stderr
    assert "Traceback" not in stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith("smimekit: error: "), lines[0]
    assert stdout == ""
    assert not out.exists()
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")] == []


def _in_process(args: list[str], cwd: Path, capsys: pytest.CaptureFixture[str],
                monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("SMIMEKIT_DEBUG", raising=False)
    status = main(args)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _subprocess(args: list[str], cwd: Path) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMIMEKIT_")}
    done = subprocess.run([str(SMIMEKIT), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env=env)
    return done.returncode, done.stdout, done.stderr


@pytest.mark.parametrize("case", list(VERIFY_INPUTS))
def test_verify_fails_cleanly_in_process(
    kit: Pki, kit_files: PkiFiles, tmp_path: Path, case: str,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "in.eml").write_bytes(VERIFY_INPUTS[case](kit))
    out = tmp_path / "out.eml"
    _assert_clean_failure(*_in_process(_verify_args(kit_files, out), tmp_path, capsys,
                                       monkeypatch), out)


@pytest.mark.parametrize("case", list(DECRYPT_INPUTS))
def test_decrypt_fails_cleanly_in_process(
    kit: Pki, kit_files: PkiFiles, tmp_path: Path, case: str,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "in.eml").write_bytes(DECRYPT_INPUTS[case](kit))
    out = tmp_path / "out.eml"
    _assert_clean_failure(*_in_process(_decrypt_args(kit_files, out), tmp_path, capsys,
                                       monkeypatch), out)


@pytest.mark.parametrize(
    "case", ["random-bytes", "three-parts", "tampered-content", "certificate-with-invalid-version"]
)
def test_verify_fails_cleanly(kit: Pki, kit_files: PkiFiles, tmp_path: Path, case: str) -> None:
    (tmp_path / "in.eml").write_bytes(VERIFY_INPUTS[case](kit))
    out = tmp_path / "out.eml"
    _assert_clean_failure(*_subprocess(_verify_args(kit_files, out), tmp_path), out)


def test_an_out_of_spec_name_in_a_signer_certificate_prints_no_warning(
        kit: Pki, kit_files: PkiFiles, tmp_path: Path) -> None:
    """A countryName of one letter: cryptography reads it with a UserWarning ("Attribute's
    length must be >= 2 ..."), which reached the user's stderr under a verdict. Another
    party's certificate is input we read on purpose: no warning, the verdict alone."""
    from cryptography import x509
    from properties.pki import message

    import smimekit
    from malformed.certs import with_one_letter_country

    user = kit["rsa"]
    odd = x509.load_der_x509_certificate(with_one_letter_country(user.cert, kit.ca_key))
    (tmp_path / "in.eml").write_bytes(smimekit.sign(message(sender="rsa"), user.key, odd))
    status, _, stderr = _subprocess(_verify_args(kit_files, tmp_path / "out.eml"), tmp_path)
    assert status == 0, stderr
    assert "Warning" not in stderr and "length must be" not in stderr, stderr


@pytest.mark.parametrize("case", ["wrong-key", "tampered-tag", "absurd-length"])
def test_decrypt_fails_cleanly(kit: Pki, kit_files: PkiFiles, tmp_path: Path, case: str) -> None:
    (tmp_path / "in.eml").write_bytes(DECRYPT_INPUTS[case](kit))
    out = tmp_path / "out.eml"
    _assert_clean_failure(*_subprocess(_decrypt_args(kit_files, out), tmp_path), out)


def test_decrypt_refuses_3des_cleanly(kit_files: PkiFiles, tmp_path: Path) -> None:
    if openssl() is None:
        pytest.skip("openssl is not installed: cannot craft a 3DES EnvelopedData")
    (tmp_path / "plain.txt").write_bytes(b"Content-Type: text/plain\r\n\r\nold\r\n")
    openssl_run("cms", "-encrypt", "-des3", "-in", tmp_path / "plain.txt",
                "-out", tmp_path / "in.eml", "-recip", kit_files.certs["rsa"])
    out = tmp_path / "out.eml"
    status, stdout, stderr = _subprocess(_decrypt_args(kit_files, out), tmp_path)
    _assert_clean_failure(status, stdout, stderr, out)
    assert "legacy" in stderr


def test_the_pki_files_are_what_the_cli_reads(kit: Pki, kit_files: PkiFiles, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Guard for the cases above: the same files do open a good message."""
    assert kit_files.ca.read_bytes() == cert_pem(kit.ca)
    (tmp_path / "in.eml").write_bytes(VERIFY_INPUTS["encrypted-without-key"](kit))  # to rsa
    out = tmp_path / "out.eml"
    status, _stdout, stderr = _in_process(_decrypt_args(kit_files, out), tmp_path, capsys,
                                          monkeypatch)
    assert status == 0, stderr
    assert out.read_bytes().endswith(b"The secret is 42.\r\n")
