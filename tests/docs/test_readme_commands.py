"""Every ``smimekit`` command that README.md and docs/*.md show runs as written, in order,
through the real command line (issue 8, section 4); one walk per document, in its own folder.

The ``sh`` / ``bash`` / ``console`` blocks are read as a user reads them: ``\\`` continues a
line, ``#`` starts a comment, ``;`` separates commands, ``[...]`` is optional (left out here),
``a | b | c`` after a command group lists alternatives (each is run). What a reader supplies
is data in a :class:`Walkthrough`, keyed by the command exactly as the document writes it:
the arguments behind ``...`` (``fill``), synopses that are not commands (``skip``, with the
reason), example values naming the reader's own objects (``placeholders``), commands that
serve until interrupted (``servers``), and the input files a command assumes (``before``).

A command that is new or changed and cannot run as written, or any command that exits
non-zero, fails the test; so does a data entry whose command left the document.
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


# -- what a reader supplies, as data ---------------------------------------------------------


class Run:
    """The state of one walk through a document: its folder (also HOME), the test PKI, the
    environment of every command, and :meth:`cli` for what a hook must do first."""

    def __init__(self, work: Path, pki: PKI) -> None:
        self.work, self.pki = work, pki
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SMIMEKIT_")}
        self.env.update(HOME=str(work), SMIMEKIT_DATA_DIR=str(work / "data"),
                        SMIMEKIT_PASSPHRASE=PASS, SMIMEKIT_ACTOR="docs-test")

    def cli(self, *args: str) -> None:
        result = subprocess.run([sys.executable, "-m", "smimekit.cli.main", *args],
                                cwd=self.work, env=self.env, capture_output=True,
                                stdin=subprocess.DEVNULL, timeout=300, check=False)
        assert result.returncode == 0, (args, result.stderr.decode())


Hook = Callable[[Run], None]


@dataclass(frozen=True)
class Walkthrough:
    """A document's commands and what its reader supplies, each keyed by the command as
    the document writes it (after ``[...]`` is left out)."""

    path: Path
    # a command that elides arguments with "..." -> the complete command(s) run instead
    fill: dict[str, list[str]]
    # not a command but a synopsis of options -> why it is not run, and where it is tested
    skip: dict[str, str]
    # example values that name the reader's own objects -> how this run finds its own
    placeholders: dict[str, Callable[[Run], str]]
    # serves until interrupted -> the path asked once before it is stopped (on a free port)
    servers: dict[str, str]
    # a command's first words -> what must exist before the first such command
    before: dict[str, Hook]


def _p12(key: object, cert: x509.Certificate, passphrase: str | None) -> bytes:
    return pkcs12.serialize_key_and_certificates(
        b"key", key, cert, None,  # type: ignore[arg-type]
        serialization.BestAvailableEncryption(passphrase.encode()) if passphrase
        else serialization.NoEncryption())


def _messages_inputs(run: Run) -> None:
    """The reader's own files for the message commands: a key pair and certificate of
    theirs, their correspondents' certificates, the root they trust, a message."""
    work, pki = run.work, run.pki
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


def _ca_inputs(run: Run) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bob")]))
           .sign(key, hashes.SHA256()))
    (run.work / "bob.csr").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    (run.work / "users.csv").write_text("email,name,department\n"
                                        "leaver@example.com,Lee Leaver,Sales\n"
                                        "dora@example.com,Dora Stay,IT\n")


def _folder(relative: str) -> Hook:
    def make(run: Run) -> None:
        (run.work / relative).mkdir(mode=0o700, parents=True)
    make.__doc__ = f"{relative}: a folder the document assumes (a mounted medium)"
    return make


def _passphrases(*names: str) -> Hook:
    def make(run: Run) -> None:
        for name in names:
            (run.work / name).write_text(f"share passphrase {name} of an officer\n")
    return make


def _copy_shares(folder: str, names: dict[str, str]) -> Hook:
    """Officers' share files under the short names the document gives them."""
    def make(run: Run) -> None:
        for short, officer in names.items():
            (found,) = (run.work / folder).glob(f"*-{officer}.share")
            shutil.copy(found, run.work / short)
    return make


def _sealed_to(run: Run, email: str) -> bytes:
    cert = x509.load_pem_x509_certificate(
        (run.work / "issued" / f"{email}.encrypt.pem").read_bytes())
    return smimekit.encrypt(message(sender=email), [cert])


def _history_of(run: Run, email: str, target: str) -> None:
    """``email``'s key (from ``ca enroll``) as a PKCS#12 under SMIMEKIT_PASSPHRASE."""
    with (run.work / "issued" / "results.csv").open() as fh:
        rows = {r["email"]: r for r in csv.DictReader(fh)}
    key, cert, _ = load_pkcs12(
        (run.work / "issued" / f"{email}.encrypt.p12").read_bytes(),
        rows[email]["p12_passphrase"].encode())
    assert cert is not None
    (run.work / target).write_bytes(_p12(key, cert, PASS))


def _readme_maildir(run: Run) -> None:
    box = mailbox.Maildir(run.work / "Maildir", create=True)
    box.add(_sealed_to(run, "dora@example.com"))
    box.add(message())


def _readme_mbox_and_history(run: Run) -> None:
    """An mbox of Dora's encrypted mail and her key history."""
    _history_of(run, "dora@example.com", "history.p12")
    box = mailbox.mbox(run.work / "mail.mbox", create=True)
    box.add(_sealed_to(run, "dora@example.com"))
    box.flush()


README_OFFICERS = ('--officer "Bob Jones=passphrase:b.pass" --officer "Carol White=passphrase:'
                   'c.pass" --officer "Dave Brown=passphrase:d.pass" --officer "Erin Green='
                   'passphrase:e.pass"')
README_SHARES = ("--share a.share,key=alice.p12 --share b.share,passphrase-file=b.pass"
                 " --share c.share,passphrase-file=c.pass")

README_WALK = Walkthrough(
    path=README,
    fill={
        'smimekit escrow init --officers 5 --threshold 3 --out ceremony/ --officer'
        ' "Alice Smith=cert:alice.pem" ...': [
            'smimekit escrow init --officers 5 --threshold 3 --out ceremony/ --officer'
            f' "Alice Smith=cert:alice.pem" {README_OFFICERS}'],
        'smimekit escrow recover --user leaver@example.com --reason "HR-2291" --share'
        ' a.share,key=alice.p12 --share b.share,passphrase-file=b.pass ... --out leaver.p12': [
            'smimekit escrow recover --user leaver@example.com --reason "HR-2291"'
            f" {README_SHARES} --out leaver.p12"],
        "smimekit escrow rotate ...": [
            f"smimekit escrow rotate {README_SHARES} --threshold 2 --out rotated/"
            ' --officer "Alice Smith=cert:alice.pem" --officer "Frank Black=passphrase:f.pass"'],
        "smimekit escrow rekey ...": [
            "smimekit escrow rekey --share ra.share,key=alice.p12"
            " --share rf.share,passphrase-file=f.pass --out rekeyed/"
            ' --officer "Frank Black=passphrase:f.pass"'],
    },
    skip={"smimekit directory publish": "needs an LDAP directory it may write to:"
                                         " tests/directory/test_ldap.py publishes to a real"
                                         " slapd through the CLI",
          "smimekit ca sync --ldap --out issued/": "needs the organisation's directory"
                                                  " ([sync.ldap]): tests/directory/"
                                                  "test_sync.py syncs from a real slapd"},
    placeholders={
        "3f2a9c01": lambda run: fingerprint(
            x509.load_pem_x509_certificate((run.work / "root.pem").read_bytes()))[:8],
    },
    servers={"smimekit ca serve --port 8080": "/crl/issuing.crl"},
    before={
        "smimekit sign": _messages_inputs,
        "smimekit ca init": _ca_inputs,
        "smimekit ca export-root": _folder("usb"),
        "smimekit escrow init": _passphrases(*(f"{n}.pass" for n in "bcdef")),
        "smimekit escrow recover": _copy_shares("ceremony", {
            "a.share": "Alice_Smith", "b.share": "Bob_Jones", "c.share": "Carol_White"}),
        "smimekit escrow rekey": _copy_shares("rotated", {
            "ra.share": "Alice_Smith", "rf.share": "Frank_Black"}),
        "smimekit archive scan": _readme_maildir,
        "smimekit archive reencrypt": _readme_mbox_and_history,
    },
)

def _media(run: Run) -> str:
    return f"{run.work}/media/"


def _serial_of_bobs_certificate(run: Run) -> str:
    cert = x509.load_pem_x509_certificate(
        (run.work / "bob" / "bob@example.com.sign.pem").read_bytes())
    return format(cert.serial_number, "X")


def _root_key_back(run: Run) -> None:
    """'yearly, with the root key brought back': the document's comment on root-crl."""
    run.cli("ca", "import-root", f"{run.work}/media/usb/root.p12")


CA_WALK = Walkthrough(
    path=README.parent / "docs" / "ca.md",
    fill={},
    skip={
        "smimekit --data-dir /var/lib/smimekit --database-url"
        " postgresql+psycopg://smimekit@db.example.internal/smimekit ca serve --host 127.0.0.1"
        " --port 8080 --passphrase-file /etc/smimekit/ca.pass":
            "a serving node of the reader's deployment (their PostgreSQL, their files); run"
            " with a database and data directories of the test's own in"
            " tests/ca/test_multinode.py",
        "smimekit --config smimekit.toml ca sync --ldap --out issued/":
            "needs the organisation's directory ([sync.ldap] in the reader's smimekit.toml):"
            " tests/directory/test_sync.py syncs from a real slapd through the CLI",
    },
    placeholders={
        "/media/": _media,  # a mounted medium: a folder of this run
        "3F9A0C...": _serial_of_bobs_certificate,
    },
    servers={"smimekit ca serve --host 127.0.0.1 --port 8080": "/crl/issuing.crl"},
    before={
        "smimekit ca init": _ca_inputs,
        "smimekit ca export-root": _folder("media/usb"),
        "smimekit ca root-crl": _root_key_back,
    },
)

def _archives(run: Run) -> None:
    """A CA that issued Dora's keys, her key history, and her mail as mbox and Maildir."""
    _ca_inputs(run)
    run.cli("ca", "init", "--org", "Example Ltd", "--base-url", "http://pki.example.com")
    run.cli("ca", "enroll", "--csv", "users.csv", "--out", "issued/")
    _history_of(run, "dora@example.com", "history.p12")
    (run.work / "Mail").mkdir()
    inbox = mailbox.mbox(run.work / "Mail" / "inbox.mbox", create=True)
    maildir = mailbox.Maildir(run.work / "Maildir", create=True)
    for box in (inbox, maildir):
        box.add(_sealed_to(run, "dora@example.com"))
        box.add(message())
        box.flush()


ARCHIVE_WALK = Walkthrough(
    path=README.parent / "docs" / "archive.md",
    fill={},
    skip={
        "smimekit archive decrypt|reencrypt ... --user ADDR --share SPEC --share SPEC ..."
        " --reason TEXT": "a synopsis of the escrow options (metavariables, not values); run"
                          " in tests/archive/test_archive_escrow.py",
    },
    placeholders={},
    servers={},
    before={"smimekit archive scan": _archives},
)

def _escrow_inputs(run: Run) -> None:
    """A CA that issued keys to the leaver and to Alice; the officers' certificates, keys
    and passphrase files; the user's own key to deposit."""
    work, pki = run.work, run.pki
    _ca_inputs(run)
    (work / "users.csv").write_text("email,name\nleaver@example.com,Lee Leaver\n"
                                    "alice@example.com,Alice Liddell\n")
    run.cli("ca", "init", "--org", "Example Ltd", "--base-url", "http://pki.example.com")
    run.cli("ca", "enroll", "--csv", "users.csv", "--out", "issued/")
    root = pki.root_key, pki.root
    for name in ("alice", "bob", "carol", "gina"):
        officer = pki.person(f"officer-{name}", "rsa2048", key_usage="encrypt", issuer=root)
        (work / f"{name}-enc.pem").write_bytes(officer.pem_cert())
        (work / f"{name}.key").write_bytes(officer.pem_key())
        if name == "alice":
            (work / "alice-p12.txt").write_text("alice's p12 passphrase\n")
            (work / "alice.p12").write_bytes(_p12(officer.key, officer.cert,
                                                  "alice's p12 passphrase"))
    for name in ("dave", "erin", "frank", "dave-new", "erin-new", "frank-new"):
        (work / f"{name}.txt").write_text(f"the share passphrase of {name}\n")
    own = pki.person("own", "rsa2048", email="user@example.com", key_usage="encrypt",
                     issuer=root)
    (work / "own-enc.pem").write_bytes(own.pem_cert())
    (work / "own-enc.key").write_bytes(own.pem_key())
    (work / "media").mkdir()


def _share_path(officer: str, folder: str = "media/ceremony") -> Callable[[Run], str]:
    def find(run: Run) -> str:
        (found,) = (run.work / folder).glob(f"escrow-*-{officer}.share")
        return str(found)
    return find


def _leavers_mail(run: Run) -> None:
    _copy_shares("media/ceremony", {"alice.share": "Alice_Smith", "bob.share": "Bob_Jones",
                                    "dave.share": "Dave_Brown"})(run)
    (run.work / "inbox").mkdir()
    for n in (1, 2):
        (run.work / "inbox" / f"{n}.eml").write_bytes(_sealed_to(run, "leaver@example.com"))


ESCROW_SHARES = ('--share "alice.share,key=alice.p12,passphrase-file=alice-p12.txt"'
                 ' --share "bob.share,key=bob.key" --share "dave.share,passphrase-file=dave.txt"')

ESCROW_WALK = Walkthrough(
    path=README.parent / "docs" / "escrow.md",
    fill={
        'smimekit escrow recover --user alice@example.com --reason "IT-4711 stolen laptop"'
        " --share ... --share ... --share ... --out alice-history.p12": [
            'smimekit escrow recover --user alice@example.com --reason "IT-4711 stolen laptop"'
            f" {ESCROW_SHARES} --out alice-history.p12"],
        "smimekit escrow rotate --share ... --share ... --share ... --threshold 2 --out"
        ' /media/new/ --officer "Alice Smith=cert:alice-enc.pem" --officer "Frank Black='
        'passphrase:frank.txt" --officer "Gina Grey=cert:gina-enc.pem"': [
            f"smimekit escrow rotate {ESCROW_SHARES} --threshold 2 --out"
            ' /media/new/ --officer "Alice Smith=cert:alice-enc.pem" --officer "Frank Black='
            'passphrase:frank.txt" --officer "Gina Grey=cert:gina-enc.pem"'],
        'smimekit escrow rekey --share ... --share ... --out /media/rekeyed/ --officer'
        ' "Frank Black=passphrase:frank-new.txt"': [
            'smimekit escrow rekey --share "alice-new.share,key=alice.p12,passphrase-file='
            'alice-p12.txt" --share "frank-new.share,passphrase-file=frank.txt" --out'
            ' /media/rekeyed/ --officer "Frank Black=passphrase:frank-new.txt"'],
    },
    skip={},
    placeholders={
        "/media/": _media,
        "/secure/": lambda run: f"{run.work}/secure/",
        "escrow-...-Alice_Smith.share": _share_path("Alice_Smith"),
    },
    servers={},
    before={
        "smimekit escrow init": _escrow_inputs,
        "smimekit escrow recover": _leavers_mail,
        "smimekit escrow rekey": _copy_shares("media/new", {
            "alice-new.share": "Alice_Smith", "frank-new.share": "Frank_Black"}),
    },
)

WALKTHROUGHS = [README_WALK, CA_WALK, ARCHIVE_WALK, ESCROW_WALK]


# -- running ----------------------------------------------------------------------------------


def _argv(command: str, walk: Walkthrough, run: Run) -> list[str]:
    for placeholder, value in walk.placeholders.items():
        if placeholder in command:
            command = command.replace(placeholder, value(run))
    # the shell expands ~ with the HOME of the run, which is the work folder
    words = [str(run.work) + w[1:] if w == "~" or w.startswith("~/") else w
             for w in shlex.split(command)]
    assert words[0] == "smimekit"
    return [sys.executable, "-m", "smimekit.cli.main", *words[1:]]


def _serve(argv: list[str], path: str, run: Run) -> str | None:
    port = free_port()
    argv = [str(port) if a == "8080" else a for a in argv]
    server = subprocess.Popen(argv, cwd=run.work, env=run.env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                    return None if r.status == 200 and r.read() else f"status {r.status}"
            except OSError as exc:
                if server.poll() is not None:
                    assert server.stderr is not None
                    return f"exited {server.returncode}: {server.stderr.read().decode()}"
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


def walk_through(walk: Walkthrough, work: Path, pki: PKI) -> list[str]:
    """Run every command of ``walk.path`` in order; the problems, one entry per command."""
    name = walk.path.relative_to(README.parent)
    commands = readme_commands(walk.path.read_text())
    assert commands, f"the command blocks of {name} were not found"
    run = Run(work, pki)
    done: set[str] = set()
    failures: list[str] = []
    for command in commands:
        for written in expand(command.text):
            where = f"{name}:{command.line}"
            if written in walk.skip:
                continue
            runs = walk.fill.get(written, [written])
            for text in runs:
                if re.search(r"(^|\s)\.\.\.(\s|$)", text):
                    failures.append(f"{where}: {written!r} elides arguments: add the complete"
                                    " command to the walkthrough's fill")
                    continue
                for prefix, make in walk.before.items():
                    if text.startswith(prefix + " ") or text == prefix:
                        if prefix not in done:
                            done.add(prefix)
                            make(run)
                argv = _argv(text, walk, run)
                started = time.monotonic()
                if written in walk.servers:
                    problem = _serve(argv, walk.servers[written], run)
                else:
                    result = subprocess.run(argv, cwd=work, env=run.env, capture_output=True,
                                            stdin=subprocess.DEVNULL, timeout=300,
                                            check=False)
                    problem = (None if result.returncode == 0 else
                               f"exit {result.returncode}: {result.stderr.decode().strip()}")
                if problem:
                    failures.append(f"{where}: {text}\n    {problem}")
                print(f"{time.monotonic() - started:6.2f}s  {text}")
    unused = [key for key in [*walk.fill, *walk.skip, *walk.servers]
              if not any(key in expand(c.text) for c in commands)]
    failures += [f"{name}: {key!r} is no longer in the document: update the walkthrough"
                 for key in unused]
    return failures


@pytest.mark.parametrize("walk", WALKTHROUGHS, ids=lambda w: w.path.name)
def test_documented_commands_run_as_written(walk: Walkthrough, tmp_path: Path,
                                            pki: PKI) -> None:
    failures = walk_through(walk, tmp_path, pki)
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
