"""No Python warning or traceback ever reaches a user's stderr.

Every command's ``--help`` and a representative operation of each command family run as real
processes with ``PYTHONWARNINGS=error``, so a warning raised anywhere (an import included, as
cryptography 51's DSA deprecation was) turns into a failure here. Under ``make test`` this runs
against the locked dependency set; ``make test-latest`` runs it against the newest releases.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click
import pytest

from smimekit.cli.main import cli

pytestmark = pytest.mark.slow

CA_PASSPHRASE = "correct horse battery staple"
P12_PASSPHRASE = "p12 passphrase for the test"
MESSAGE = (b"From: alice@example.com\r\nTo: alice@example.com\r\nSubject: warnings\r\n"
           b"Date: Sat, 28 Nov 2026 10:00:00 +0000\r\n\r\nNo warnings, please.\r\n")


def _command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    ctx = click.Context(group)
    paths: list[tuple[str, ...]] = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, name
        paths.append((*prefix, name))
        if isinstance(command, click.Group):
            paths.extend(_command_paths(command, (*prefix, name)))
    return paths


def _run(args: list[str], cwd: Path,
         stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONWARNINGS": "error", "SMIMEKIT_PASSPHRASE": CA_PASSPHRASE}
    env.pop("SMIMEKIT_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "smimekit.cli.main", *args], cwd=cwd,
                          input=stdin if stdin is not None else b"", capture_output=True,
                          env=env, timeout=120, check=False)


def _clean(result: subprocess.CompletedProcess[bytes], what: str) -> None:
    stderr = result.stderr.decode(errors="replace")
    assert "Warning" not in stderr, f"{what}: {stderr}"
    assert "Traceback" not in stderr, f"{what}: {stderr}"
    assert "internal error" not in stderr, f"{what}: {stderr}"
    assert result.returncode == 0, f"{what}: exit {result.returncode}: {stderr}"


def test_command_tree_is_complete() -> None:
    paths = {" ".join(p) for p in _command_paths(cli)}
    for expected in ("sign", "verify", "encrypt", "decrypt", "sign-encrypt", "decrypt-verify",
                     "trust list", "log verify", "ca init", "ca enroll", "escrow recover",
                     "archive scan"):
        assert expected in paths


def test_every_help_prints_no_warning(tmp_path: Path) -> None:
    paths = [(), *_command_paths(cli)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda p: _run([*p, "--help"], tmp_path), paths))
    for path, result in zip(paths, results, strict=True):
        what = "smimekit " + " ".join((*path, "--help"))
        _clean(result, what)
        assert result.stderr == b"", f"{what}: {result.stderr!r}"
        assert b"Usage:" in result.stdout, what


def test_representative_operations_print_no_warning(tmp_path: Path) -> None:
    (tmp_path / "p12pass").write_text(P12_PASSPHRASE + "\n")
    (tmp_path / "message.eml").write_bytes(MESSAGE)
    data = ["--data-dir", str(tmp_path / "data")]
    alice = tmp_path / "alice"
    steps: list[list[str]] = [
        [*data, "--version"],
        [*data, "ca", "init", "--org", "Example Ltd", "--base-url", "http://pki.example.com",
         "--key-type", "p256", "--country", "GB"],
        [*data, "ca", "issue", "--email", "alice@example.com", "--name", "Alice Liddell",
         "--out", str(alice), "--p12-passphrase-file", "p12pass"],
        [*data, "ca", "chain", "-o", "ca.pem"],
        [*data, "trust", "add", "ca.pem"],
        [*data, "trust", "list"],
        [*data, "sign", "--key", f"{alice}/alice@example.com.sign.p12", "--passphrase-file",
         "p12pass", "--cert", f"{alice}/alice@example.com.sign.pem", "message.eml",
         "-o", "signed.eml"],
        [*data, "verify", "--revocation", "offline", "signed.eml", "-o", "content.eml"],
        [*data, "encrypt", "--revocation", "offline", "--to",
         f"{alice}/alice@example.com.encrypt.pem", "signed.eml", "-o", "sealed.eml"],
        [*data, "decrypt", "--key", f"{alice}/alice@example.com.encrypt.p12",
         "--passphrase-file", "p12pass", "sealed.eml", "-o", "opened.eml"],
        [*data, "ca", "revoke", "--email", "alice@example.com", "--reason", "superseded"],
        [*data, "ca", "crl"],
        [*data, "log", "verify"],
        [*data, "archive", "scan", "sealed.eml"],
    ]
    for step in steps:
        result = _run(step, tmp_path)
        _clean(result, "smimekit " + " ".join(step))
    assert (tmp_path / "content.eml").read_bytes().replace(b"\r\n", b"\n").endswith(
        b"No warnings, please.\n")
    # decrypt keeps the signed layer inside: the opened message is the signed one
    assert (tmp_path / "opened.eml").read_bytes() == (tmp_path / "signed.eml").read_bytes()


CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus"
PKITS = CORPUS / "pyca-cryptography-vectors" / "PKITS_data"


def _corpus(*parts: str) -> Path:
    path = CORPUS.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is not in ../shared/corpus")
    return path


def test_input_cryptography_warns_about_gets_our_words_only(tmp_path: Path) -> None:
    """Somebody else's files that cryptography 51 warns about (a DSA signature, a BER
    PKCS#12 from NSS, a certificate with a negative serial): the user sees smimekit's verdict
    or error line, never a Python warning and never an internal error."""
    (tmp_path / "m.eml").write_bytes(MESSAGE)
    (tmp_path / "nss.pass").write_text("nss\n")
    data = ["--data-dir", str(tmp_path / "data")]
    runs = {
        # legacy DSA: read with --allow-legacy, judged in our words (PKITS 4.1.4)
        "dsa": [*data, "verify", "--allow-legacy", "--revocation", "offline", "--trust",
                str(_corpus("pyca-cryptography-vectors", "PKITS_data", "certs",
                            "TrustAnchorRootCertificate.crt")),
                str(_corpus("pyca-cryptography-vectors", "PKITS_data", "smime",
                            "SignedValidDSASignaturesTest4.eml")), "-o", "out.eml"],
        # OpenSSL's badrsa.pem: negative serial, even modulus
        "serial": [*data, "encrypt", "--revocation", "offline", "--to",
                   str(_corpus("openssl-test-data", "test", "smime-certs", "badrsa.pem")),
                   "m.eml", "-o", "sealed.eml"],
        # Thunderbird's Alice.p12 is BER: the key loads, then m.eml is not encrypted
        "ber": [*data, "decrypt", "--key",
                str(_corpus("thunderbird-comm-central", "mailnews", "test", "data", "smime",
                            "Alice.p12")), "--passphrase-file", "nss.pass", "m.eml"],
    }
    for name, args in runs.items():
        result = _run(args, tmp_path)
        stderr = result.stderr.decode(errors="replace")
        assert "Warning" not in stderr and "Traceback" not in stderr, f"{name}: {stderr}"
        assert "internal error" not in stderr, f"{name}: {stderr}"
        assert result.returncode == 1, f"{name}: {stderr}"
        assert stderr.splitlines()[-1].startswith("smimekit: error:"), f"{name}: {stderr}"
    assert not (tmp_path / "sealed.eml").exists()
