"""Every ``smimekit`` command the README shows runs as written, in order, through the real
command line (issue 8, section 4).

The README's ``sh`` / ``bash`` / ``console`` blocks are read as a user reads them: ``\\``
continues a line, ``#`` starts a comment, ``;`` separates commands, ``[...]`` is optional
(left out here), ``a | b | c`` after a command group lists alternatives (each is run). What a
reader must supply is data below, keyed by the command exactly as the README writes it:

- ``FILL``: a command that elides arguments with ``...`` and the complete command run instead;
- ``PLACEHOLDERS``: example values that only make sense for the reader's own files;
- ``SERVERS``: commands that serve until interrupted (started, asked once, stopped);
- ``BEFORE``: the input files a command assumes, made just before it runs.

A README command that is new, changed or unparseable and is not covered fails the test, as
does any command that exits non-zero; so a change that breaks a documented command is caught.
"""

from __future__ import annotations

import csv
import mailbox
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from loopback import free_port
from pki import PKI, message

import smimekit
from smimekit.keys.load import load_pkcs12
from smimekit.validation.trust import fingerprint

README = Path(__file__).resolve().parents[2] / "README.md"
PASS = "correct horse battery staple"  # SMIMEKIT_PASSPHRASE: the CA's and the key files'

pytestmark = pytest.mark.slow


# -- reading the README ----------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    line: int  # where it starts in README.md
    text: str  # as written (continuations joined, comment removed)


def readme_commands(text: str) -> list[Command]:
    """The ``smimekit`` commands of the README's shell blocks, in order."""
    commands: list[Command] = []
    lang: str | None = None
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        fence = re.match(r"^```(\w*)", raw)
        if fence:
            lang = None if lang is not None else fence.group(1) or "text"
            continue
        if lang not in ("sh", "bash", "console", "shell"):
            continue
        line = raw.removeprefix("$ ") if lang == "console" else raw
        if not pending:
            start = number
        pending += line
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        for part in _split_commands(_strip_comment(pending)):
            if part.split()[:1] == ["smimekit"]:
                commands.append(Command(start, " ".join(part.split())))
        pending = ""
    return commands


def _strip_comment(line: str) -> str:
    quoted = False
    for i, ch in enumerate(line):  # a '#' outside quotes starts a comment
        if ch == '"':
            quoted = not quoted
        elif ch == "#" and not quoted and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def _split_commands(line: str) -> list[str]:
    parts, quoted, current = [], False, ""
    for ch in line:
        if ch == '"':
            quoted = not quoted
        if ch == ";" and not quoted:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    parts.append(current.strip())
    return [p for p in parts if p]


def expand(text: str) -> list[str]:
    """A command as written -> the commands run: optional ``[...]`` left out, ``a | b``
    alternatives of one command group run one after the other."""
    without = re.sub(r"\s*\[[^\]]*\]", "", text)
    words = without.split()
    if " | " not in without:
        return [without]
    prefix = " ".join(words[:2])  # smimekit GROUP
    alternatives = without[len(prefix):].split(" | ")
    return [f"{prefix} {alt.strip()}" for alt in alternatives]


# -- what the README leaves to the reader, as data ------------------------------------------

OFFICERS = ('--officer "Bob Jones=passphrase:b.pass" --officer "Carol White=passphrase:c.pass"'
            ' --officer "Dave Brown=passphrase:d.pass" --officer "Erin Green=passphrase:e.pass"')
SHARES = "--share a.share,key=alice.p12 --share b.share,passphrase-file=b.pass"

# README text (after expansion) -> the command run: "..." stands for more of the same
FILL: dict[str, str] = {
    'smimekit escrow init --officers 5 --threshold 3 --out ceremony/ --officer'
    ' "Alice Smith=cert:alice.pem" ...':
        'smimekit escrow init --officers 5 --threshold 3 --out ceremony/ --officer'
        f' "Alice Smith=cert:alice.pem" {OFFICERS}',
    'smimekit escrow recover --user leaver@example.com --reason "HR-2291" --share'
    ' a.share,key=alice.p12 --share b.share,passphrase-file=b.pass ... --out leaver.p12':
        'smimekit escrow recover --user leaver@example.com --reason "HR-2291" --share'
        ' a.share,key=alice.p12 --share b.share,passphrase-file=b.pass --share'
        ' c.share,passphrase-file=c.pass --out leaver.p12',
    "smimekit escrow rotate ...":
        f"smimekit escrow rotate {SHARES} --share c.share,passphrase-file=c.pass"
        ' --threshold 2 --out rotated/ --officer "Alice Smith=cert:alice.pem"'
        ' --officer "Frank Black=passphrase:f.pass"',
    "smimekit escrow rekey ...":
        "smimekit escrow rekey --share ra.share,key=alice.p12"
        " --share rf.share,passphrase-file=f.pass --out rekeyed/"
        ' --officer "Frank Black=passphrase:f.pass"',
}

# example values that name the reader's own objects -> how the test finds its own
PLACEHOLDERS: dict[str, Callable[[Path], str]] = {
    "3f2a9c01": lambda work: fingerprint(
        x509.load_pem_x509_certificate((work / "root.pem").read_bytes()))[:8],
}

# serve until interrupted: port 8080 may be taken on a shared machine, so a free one
SERVERS: dict[str, str] = {
    "smimekit ca serve --port 8080": "/crl/issuing.crl",
}


def _p12(key: object, cert: x509.Certificate, passphrase: str | None) -> bytes:
    return pkcs12.serialize_key_and_certificates(
        b"key", key, cert, None,  # type: ignore[arg-type]
        serialization.BestAvailableEncryption(passphrase.encode()) if passphrase
        else serialization.NoEncryption())


def _messages_inputs(work: Path, pki: PKI) -> None:
    """The reader's own files for the message commands: a key pair and certificate of
    theirs, their correspondents' certificates, the root they trust, a message."""
    root = pki.root_key, pki.root
    alice = pki.person("alice", "rsa2048", issuer=root)  # signs, and receives as an officer
    bob = pki.person("bob", "rsa2048", key_usage="encrypt", issuer=root)
    carol = pki.person("carol", "p256", key_usage="encrypt", issuer=root)
    (work / "root.pem").write_bytes(pki.root.public_bytes(serialization.Encoding.PEM))
    for name, who in (("alice", alice), ("bob", bob), ("carol", carol)):
        (work / f"{name}.pem").write_bytes(who.pem_cert())
        (work / f"{name}.key").write_bytes(who.pem_key())
    (work / "alice.p12").write_bytes(_p12(alice.key, alice.cert, None))
    (work / "bob.p12").write_bytes(_p12(bob.key, bob.cert, "bob's p12 passphrase"))
    (work / "pass.txt").write_text("bob's p12 passphrase\n")
    (work / "message.eml").write_bytes(message())
    (work / "sealed.eml").write_bytes(smimekit.encrypt(message(), [bob.cert]))
    dana = pki.person("dana", "rsa2048", key_usage="encrypt", issuer=root)
    (work / "enc.pem").write_bytes(dana.pem_cert())
    (work / "enc.key").write_bytes(dana.pem_key())


def _ca_inputs(work: Path, pki: PKI) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bob")]))
           .sign(key, hashes.SHA256()))
    (work / "bob.csr").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    (work / "users.csv").write_text("email,name,department\n"
                                    "leaver@example.com,Lee Leaver,Sales\n"
                                    "dora@example.com,Dora Stay,IT\n")


def _usb(work: Path, pki: PKI) -> None:
    (work / "usb").mkdir(mode=0o700)  # the mounted stick the README writes the root key to


def _escrow_inputs(work: Path, pki: PKI) -> None:
    for name in "bcdef":
        (work / f"{name}.pass").write_text(f"share passphrase of officer {name}\n")


def _share_files(work: Path, pki: PKI) -> None:
    """The officers' share files under the short names the README gives them."""
    for short, officer in (("a", "Alice_Smith"), ("b", "Bob_Jones"), ("c", "Carol_White")):
        (found,) = (work / "ceremony").glob(f"*-{officer}.share")
        shutil.copy(found, work / f"{short}.share")


def _rotated_shares(work: Path, pki: PKI) -> None:
    for short, officer in (("ra", "Alice_Smith"), ("rf", "Frank_Black")):
        (found,) = (work / "rotated").glob(f"*-{officer}.share")
        shutil.copy(found, work / f"{short}.share")


def _maildir(work: Path, pki: PKI) -> None:
    box = mailbox.Maildir(work / "Maildir", create=True)
    box.add(_sealed_to_dora(work))
    box.add(message())


def _sealed_to_dora(work: Path) -> bytes:
    cert = x509.load_pem_x509_certificate(
        (work / "issued" / "dora@example.com.encrypt.pem").read_bytes())
    return smimekit.encrypt(message(sender="dora@example.com"), [cert])


def _mbox_and_history(work: Path, pki: PKI) -> None:
    """An mbox of Dora's encrypted mail and her key history under SMIMEKIT_PASSPHRASE."""
    with (work / "issued" / "results.csv").open() as fh:
        rows = {r["email"]: r for r in csv.DictReader(fh)}
    secret = next(v for k, v in rows["dora@example.com"].items() if "passphrase" in k)
    key, cert, _ = load_pkcs12((work / "issued" / "dora@example.com.encrypt.p12").read_bytes(),
                               secret.encode())
    (work / "history.p12").write_bytes(_p12(key, cert, PASS))
    box = mailbox.mbox(work / "mail.mbox", create=True)
    box.add(_sealed_to_dora(work))
    box.flush()


BEFORE: dict[str, Callable[[Path, PKI], None]] = {
    "smimekit sign": _messages_inputs,
    "smimekit ca init": _ca_inputs,
    "smimekit ca export-root": _usb,
    "smimekit escrow init": _escrow_inputs,
    "smimekit escrow recover": _share_files,
    "smimekit escrow rekey": _rotated_shares,
    "smimekit archive scan": _maildir,
    "smimekit archive reencrypt": _mbox_and_history,
}


# -- running ----------------------------------------------------------------------------------


def _environment(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMIMEKIT_")}
    env.update(HOME=str(work), SMIMEKIT_DATA_DIR=str(work / "data"),
               SMIMEKIT_PASSPHRASE=PASS, SMIMEKIT_ACTOR="readme-test")
    return env


def _argv(command: str, work: Path) -> list[str]:
    for placeholder, value in PLACEHOLDERS.items():
        command = command.replace(placeholder, value(work))
    # the shell expands ~ with the HOME of the run, which is the work folder
    words = [str(work) + w[1:] if w == "~" or w.startswith("~/") else w
             for w in shlex.split(command)]
    assert words[0] == "smimekit"
    return [sys.executable, "-m", "smimekit.cli.main", *words[1:]]


def _serve(argv: list[str], path: str, work: Path, env: dict[str, str]) -> str | None:
    port = free_port()
    argv = [str(port) if a == "8080" else a for a in argv]
    server = subprocess.Popen(argv, cwd=work, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                    return None if r.status == 200 and r.read() else f"status {r.status}"
            except OSError as exc:
                if server.poll() is not None:
                    return f"exited {server.returncode}: {server.stderr.read().decode()}"  # type: ignore[union-attr]
                if time.monotonic() > deadline:
                    return f"no answer on {path}: {exc}"
                time.sleep(0.2)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_readme_commands_run_as_written(tmp_path: Path, pki: PKI) -> None:
    commands = readme_commands(README.read_text())
    assert len(commands) > 20, "the README's command blocks were not found"
    work = tmp_path
    env = _environment(work)
    failures: list[str] = []
    for command in commands:
        for written in expand(command.text):
            run = FILL.get(written, written)
            if re.search(r"(^|\s)\.\.\.(\s|$)", run):
                failures.append(f"README.md:{command.line}: {written!r} elides arguments:"
                                " add the complete command to FILL")
                continue
            for prefix, make in BEFORE.items():
                if run.startswith(prefix + " ") and not getattr(make, "done", False):
                    make(work, pki)
                    make.done = True  # type: ignore[attr-defined]
            argv = _argv(run, work)
            started = time.monotonic()
            if written in SERVERS:
                problem = _serve(argv, SERVERS[written], work, env)
            else:
                result = subprocess.run(argv, cwd=work, env=env, capture_output=True,
                                        stdin=subprocess.DEVNULL, timeout=300, check=False)
                problem = (None if result.returncode == 0 else
                           f"exit {result.returncode}: {result.stderr.decode().strip()}")
            if problem:
                failures.append(f"README.md:{command.line}: {run}\n    {problem}")
            print(f"{time.monotonic() - started:6.2f}s  {run}")
    assert not failures, "\n".join(failures)


def test_the_parser_reads_continuations_comments_and_alternatives() -> None:
    text = ("```sh\n"
            "smimekit a --x 1 \\\n    --y \"two words\"  # comment\n"
            "make demo\n"
            "smimekit b [--opt V] arg; smimekit c\n"
            "smimekit escrow rotate ... | status\n"
            "```\n"
            "smimekit outside a block\n")
    commands = readme_commands(text)
    assert [(c.line, c.text) for c in commands] == [
        (2, 'smimekit a --x 1 --y "two words"'), (5, "smimekit b [--opt V] arg"),
        (5, "smimekit c"), (6, "smimekit escrow rotate ... | status")]
    assert expand("smimekit b [--opt V] arg") == ["smimekit b arg"]
    assert expand("smimekit escrow rotate ... | status") == [
        "smimekit escrow rotate ...", "smimekit escrow status"]
