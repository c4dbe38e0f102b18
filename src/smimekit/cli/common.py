"""Shared CLI plumbing: input/output, passphrases, key and certificate options."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from smimekit.errors import KeyLoadError, MIMEError, PassphraseError
from smimekit.fsutil import private_dir, write_output_file
from smimekit.keys.load import (
    key_matches,
    load_certificates,
    load_pkcs12,
    load_private_key,
    read_source,
)
from smimekit.smime.content import InputKind, check_content_type, classify_input, wrap_as_entity
from smimekit.validation.trust import TrustStore

if TYPE_CHECKING:
    from smimekit.config import Config
    from smimekit.keys.pkcs12 import KeyPair
    from smimekit.store import Store
    from smimekit.store.location import StoreLocation

MAX_INPUT = 2 * 1024**3  # refuse to slurp more than 2 GiB from one input


class CliError(click.ClickException):
    """A failure of the operation: exit status 1, one line on stderr."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"smimekit: error: {self.format_message()}", err=True)


@dataclass
class Globals:
    data_dir: Path
    config: Path | None
    database_url: str | None
    loaded_config: Config | None = None


LOCAL_DATA_DIR = "smimekit-data"


def resolve_data_dir(explicit: str | None) -> Path:
    """The data directory of a run.

    ``--data-dir`` or ``SMIMEKIT_DATA_DIR`` (``explicit``) when given; else ``./smimekit-data``
    if it exists in the current directory; else the per-user default,
    ``$XDG_DATA_HOME/smimekit`` (an absolute XDG_DATA_HOME only, as the XDG specification
    says) or ``~/.local/share/smimekit``.
    """
    if explicit:
        return Path(explicit)
    local = Path(LOCAL_DATA_DIR)
    if local.exists():
        return local
    xdg = os.environ.get("XDG_DATA_HOME", "")
    if os.path.isabs(xdg):
        return Path(xdg) / "smimekit"
    home = os.path.expanduser("~")
    if not os.path.isabs(home):  # no home directory to be found: the old default
        return local
    return Path(home) / ".local" / "share" / "smimekit"


def cli_globals() -> Globals:
    """The global options of this run (--data-dir, --config, --database-url)."""
    globals_ = click.get_current_context().find_object(Globals)
    if globals_ is None:
        raise CliError("no data directory: run through the smimekit command")
    return globals_


def cli_config() -> Config:
    """The configuration file of this run (``--config`` / ``SMIMEKIT_CONFIG``), loaded once
    per run; an empty configuration when none is named.

    Raises:
        ConfigError: the file named cannot be read or holds an unknown or wrong key.
    """
    from smimekit.config import load_config

    globals_ = cli_globals()
    if globals_.loaded_config is None:
        globals_.loaded_config = load_config(globals_.config)
    return globals_.loaded_config


def existing_data_dir() -> Path:
    """The data directory of this run, which must exist (read commands never create it).

    Raises:
        CliError: it does not exist, or is not a directory.
    """
    data_dir = cli_globals().data_dir
    if not data_dir.is_dir():
        what = "is not a directory" if data_dir.exists() else "does not exist"
        raise CliError(f"the data directory {data_dir} {what} (choose one with --data-dir or"
                       " SMIMEKIT_DATA_DIR)")
    return data_dir


def open_store(*, create: bool = False) -> Store:
    """The store named by --database-url, or the SQLite file in --data-dir.

    Only ``create`` (``ca init``) makes a store that does not exist; every other command
    fails instead of working on an empty one. When the data directory holds a CA, the store
    must be the one its ``ca.json`` records, and the audit rows this run writes are anchored
    with the CA's audit key when ``<data-dir>/ca/audit.key`` is there (docs/store.md).

    Raises:
        CliError: no data directory (SQLite), or not the CA's store.
        StoreError: the store cannot be opened, or (without ``create``) does not exist.
        CAError: the audit key file is there but cannot be read.
    """
    from smimekit.ca.home import CAHome
    from smimekit.store import Store  # SQLAlchemy: only the commands that open a store pay
    from smimekit.store.location import StoreLocation

    globals_ = cli_globals()
    url, data_dir = globals_.database_url, globals_.data_dir
    if url is None and not create:
        existing_data_dir()
    home = CAHome(data_dir)
    if not create and home.exists():
        recorded = home.config().store
        given = StoreLocation.of(url, data_dir)
        if recorded is not None and recorded != given:
            raise CliError(f"the CA in {data_dir} keeps its records in"
                           f" {recorded.describe(data_dir)}, not in {given.describe(data_dir)}:"
                           f" {_store_hint(recorded, data_dir)}")
    store = Store.open(url, data_dir, create=create)
    if not create and home.has_audit_key():
        # Read once per process: every audit row this run appends is anchored with it.
        try:
            store.use_audit_key(home.audit_key())
        except BaseException:
            store.close()
            raise
    return store


def _store_hint(recorded: StoreLocation, data_dir: Path) -> str:
    if recorded.backend == "postgresql":
        return "give its --database-url (or SMIMEKIT_DATABASE_URL) as at 'ca init'"
    if recorded == type(recorded).of(None, data_dir):
        return "run without --database-url and SMIMEKIT_DATABASE_URL"
    return f"give --database-url sqlite:///{data_dir / recorded.location}"


def ca_data_dir() -> Path:
    """The data directory, which must hold a CA (checked before the store is opened).

    Raises:
        CliError: no data directory, or no CA in it.
    """
    from smimekit.ca.home import CAHome

    data_dir = cli_globals().data_dir
    if not data_dir.is_dir():
        raise CliError(f"no CA in {data_dir}: the directory does not exist (choose the data"
                       " directory with --data-dir or SMIMEKIT_DATA_DIR, or run 'smimekit ca"
                       " init')")
    if not CAHome(data_dir).exists():
        raise CliError(f"no CA in {data_dir}: run 'smimekit ca init' first")
    return data_dir


def cli_actor() -> str:
    """Who runs the command, for the audit log: ``cli:$SMIMEKIT_ACTOR`` or ``cli:$USER``."""
    user = os.environ.get("SMIMEKIT_ACTOR") or os.environ.get("USER") or "unknown"
    return f"cli:{user}"


def read_input(path: str | None) -> bytes:
    """The whole input message from a file or stdin ('-' or no argument)."""
    try:
        if path is None or path == "-":
            if sys.stdin.isatty():
                click.echo(
                    "smimekit: reading the message from standard input (end with Ctrl-D)", err=True
                )
            data = sys.stdin.buffer.read(MAX_INPUT + 1)
        else:
            with open(path, "rb") as fh:
                data = fh.read(MAX_INPUT + 1)
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_INPUT:
        raise CliError("input is larger than 2 GiB")
    if not data:
        raise CliError("the input message is empty")
    return data


_CONTENT_TYPE_KEY = "smimekit.content_type"


def _remember_content_type(ctx: click.Context, _param: click.Parameter,
                           value: str | None) -> str | None:
    if value is not None:
        try:
            value = check_content_type(value)
        except MIMEError as exc:
            raise click.BadParameter(str(exc)) from None
        ctx.meta[_CONTENT_TYPE_KEY] = value
    return value


def content_type_option(func: Any) -> Any:
    """``--content-type TYPE`` for the commands that protect a message (sign, encrypt)."""
    return click.option(
        "--content-type",
        metavar="TYPE",
        expose_value=False,
        callback=_remember_content_type,
        help="Protect the input as an attachment of this MIME type (base64, the bytes kept"
        " exactly), e.g. application/octet-stream. Needed for input that is neither a MIME"
        " message nor text.",
    )(func)


def message_input(path: str | None) -> bytes:
    """The input of sign / encrypt as a MIME message (see docs/messages.md).

    A message (a header block first) is used as it is; with ``--content-type`` any input is
    wrapped as an entity of that type; headerless text becomes text/plain, with a warning;
    headerless binary content is refused.

    Raises:
        CliError: the input cannot be read, or is binary without ``--content-type``.
    """
    data = read_input(path)
    ctx = click.get_current_context(silent=True)
    content_type = ctx.meta.get(_CONTENT_TYPE_KEY) if ctx is not None else None
    if content_type is not None:
        name = Path(path).name if path not in (None, "-") else None
        return wrap_as_entity(data, content_type, name)
    kind = classify_input(data)
    if kind is InputKind.BINARY:
        raise CliError(
            "the input is not a MIME message (no header block) and not text: give"
            " --content-type TYPE (e.g. application/octet-stream) to send it as an attachment"
        )
    if kind is InputKind.TEXT:
        click.echo(
            "smimekit: warning: the input has no MIME header block: protected as text/plain"
            " (give --content-type TYPE to choose another type)",
            err=True,
        )
    return data


def write_output(path: str | None, data: bytes, *, mode: int = 0o600) -> None:
    """Write ``data`` to stdout (no path or '-') or to ``path``: a file is replaced
    atomically (temp file, fsync, rename), through a symbolic link too; a FIFO or a
    character device is written through; anything else is refused
    (:func:`smimekit.fsutil.write_output_file`). ``mode``: 0600 unless the data is public.

    Raises:
        CliError: the path is refused or cannot be written.
    """
    if path is None or path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    try:
        write_output_file(path, data, mode=mode)  # 0600: plaintext mail and keys
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from None


def output_dir(path: str | Path) -> Path:
    """The folder a command writes its files into, made (0700, with missing parents) and
    checked for writing before anything is issued or changed.

    Raises:
        CliError: it cannot be created or written into.
    """
    folder = Path(path)
    try:
        private_dir(folder)
    except OSError as exc:
        raise CliError(f"cannot create the folder {folder}: {exc.strerror or exc}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CliError(f"cannot write into {folder}: permission denied")
    return folder


def passphrase_from(passphrase_file: str | None, passphrase_env: str | None) -> bytes | None:
    """A passphrase from the file, the named variable or SMIMEKIT_PASSPHRASE, if any."""
    if passphrase_file:
        try:
            text = Path(passphrase_file).read_bytes()
        except OSError as exc:
            raise CliError(
                f"cannot read passphrase file {passphrase_file}: {exc.strerror or exc}"
            ) from None
        return text.rstrip(b"\r\n")
    if passphrase_env:
        value = os.environ.get(passphrase_env)
        if value is None:
            raise CliError(f"environment variable {passphrase_env} is not set")
        return value.encode()
    value = os.environ.get("SMIMEKIT_PASSPHRASE")
    return value.encode() if value is not None else None


def _ask(label: str) -> bytes:
    if not sys.stdin.isatty():
        raise PassphraseError(
            f"{label} needs a passphrase: use --passphrase-file, --passphrase-env or"
            " SMIMEKIT_PASSPHRASE (no terminal to ask on)"
        )
    import getpass

    return getpass.getpass(f"Passphrase for {label}: ").encode()


def load_key_and_cert(
    key_path: str, cert_path: str | None, passphrase: bytes | None
) -> tuple[PrivateKeyTypes, x509.Certificate | None, list[x509.Certificate]]:
    """The private key (asking for a passphrase only when needed), its certificate and extras.

    A PKCS#12 file given as ``--key`` supplies the certificate and chain too.
    """
    data, _label = read_source(key_path, "key")
    secret = passphrase
    for attempt in range(2):
        try:
            if _looks_pkcs12(data):
                key, cert, extra = load_pkcs12(data, secret, label=f"key {key_path}")
                if key is None:
                    raise KeyLoadError(f"{key_path}: the PKCS#12 file holds no private key")
            else:
                key, cert, extra = load_private_key(data, secret), None, []
            break
        except PassphraseError:
            if secret is not None or attempt:
                raise
            secret = _ask(key_path)
    if key is None:
        raise KeyLoadError(f"{key_path}: no private key found")
    if cert_path is not None:
        certs = load_certificates(cert_path)
        cert, extra = certs[0], certs[1:] + extra
    return key, cert, extra


def load_decryption_keys(
    key_paths: Sequence[str], cert_path: str | None, passphrase: bytes | None
) -> list[KeyPair]:
    """Every private key of ``key_paths`` with its certificate, for decrypting.

    A PKCS#12 file gives every key it holds (a key history: the current and older keys),
    each with its certificate. A key without one (PEM, DER, PKCS#8) is paired with the
    certificate of ``cert_path`` if that certifies it, or with None: it is then tried on every
    recipient of its type. A key certified more than once (a certificate from ``cert_path``
    or a spare one in a PKCS#12 file) appears once per certificate. Without ``passphrase``,
    each file that needs one asks for it (the last one typed is tried first).

    Raises:
        KeyLoadError: a file holds no private key, or the certificate of ``cert_path``
            belongs to none of the keys.
        PassphraseError: as for :func:`load_key_and_cert`.
    """
    found: list[KeyPair] = []
    spare: list[x509.Certificate] = []
    typed: bytes | None = None
    for key_path in key_paths:
        data, _label = read_source(key_path, "key")
        secret = passphrase if passphrase is not None else typed
        for attempt in range(2):
            try:
                if _looks_pkcs12(data):
                    # its ASN.1 classes cost start-up time: only a PKCS#12 file pays for them
                    from smimekit.keys.pkcs12 import load_pkcs12_identities

                    identities, others = load_pkcs12_identities(
                        data, secret, label=f"key {key_path}"
                    )
                    if not identities:
                        raise KeyLoadError(f"{key_path}: the PKCS#12 file holds no private key")
                    found.extend(identities)
                    spare.extend(others)
                else:
                    found.append((load_private_key(data, secret), None))
                break
            except PassphraseError:
                if passphrase is not None or attempt:
                    raise
                secret = typed = _ask(key_path)
    wanted = load_certificates(cert_path) if cert_path is not None else []
    if wanted and not any(key_matches(key, wanted[0]) for key, _ in found):
        raise KeyLoadError(f"{cert_path}: the certificate belongs to none of the --key keys")
    pairs: list[KeyPair] = []
    for key, cert in found:
        certs = [cert] if cert is not None else []
        certs += [c for c in [*wanted, *spare] if c not in certs and key_matches(key, c)]
        if certs:
            pairs.extend((key, c) for c in certs)
        else:
            pairs.append((key, None))
    return pairs


def _looks_pkcs12(data: bytes) -> bool:
    if data.startswith(b"-----") or data[:1] != b"\x30":
        return False
    try:
        load_private_key(data, None)
    except PassphraseError:
        # An encrypted PKCS#8 DER key also asks for a passphrase; PKCS#12 has version 3 first.
        return b"\x02\x01\x03" in data[:8]
    except KeyLoadError:
        return True
    return False


def load_cert_files(paths: tuple[str, ...]) -> list[x509.Certificate]:
    certs: list[x509.Certificate] = []
    for path in paths:
        certs.extend(load_certificates(path))
    return certs


def trust_anchors(paths: tuple[str, ...]) -> list[x509.Certificate]:
    """The trust store's anchors plus those given with --trust for this run."""
    ctx = click.get_current_context(silent=True)
    globals_ = ctx.find_object(Globals) if ctx is not None else None
    stored = TrustStore(globals_.data_dir).anchors() if globals_ is not None else []
    return stored + [c for c in load_cert_files(paths) if c not in stored]


def passphrase_options(func: Any) -> Any:
    func = click.option(
        "--passphrase-env",
        metavar="NAME",
        help="Read the key passphrase from this environment variable.",
    )(func)
    func = click.option(
        "--passphrase-file",
        type=click.Path(dir_okay=False),
        help="Read the key passphrase from this file (first line).",
    )(func)
    return func


def io_options(func: Any) -> Any:
    func = click.option(
        "-o",
        "--output",
        "output",
        metavar="OUT",
        help="Write the result here (default: standard output).",
    )(func)
    func = click.argument("input_path", metavar="[IN]", required=False)(func)
    return func
