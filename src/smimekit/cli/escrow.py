"""``smimekit escrow ...``: the CA's key vault under M-of-N control of recovery officers.

``init``, ``status``, ``check-share``, ``rotate``, ``rekey``, ``deposit`` and ``recover``
(docs/escrow.md). Officers are named ``NAME=cert:FILE`` (shares encrypted to the officer's
certificate) or ``NAME=passphrase:FILE`` (a share passphrase, read from FILE); shares are
given as ``FILE[,key=KEYFILE][,passphrase-file=FILE]``.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

import smimekit
from smimekit.ca.export import ITERATIONS, RANDOM_PASSPHRASE_ITERATIONS, pkcs12_bytes
from smimekit.ca.home import CAHome
from smimekit.cli.ca import ca_options, new_passphrase
from smimekit.cli.common import (
    CliError,
    ca_data_dir,
    cli_actor,
    open_store,
    passphrase_from,
    write_output,
)
from smimekit.errors import EscrowError, PassphraseError, SmimeError
from smimekit.escrow import recovery
from smimekit.escrow.ceremony import (
    deposit_key,
    deposit_owner,
    init_escrow,
    rekey_escrow,
    rotate_escrow,
)
from smimekit.escrow.shares import OfficerSpec, UnlockedShare, read_share_header, unlock_share
from smimekit.escrow.vault import EscrowResult, check_share, load_state
from smimekit.fsutil import atomic_write, private_dir
from smimekit.keys.load import load_certificates, load_private_key
from smimekit.store import Store

__all__ = [
    "SHARE_HELP",
    "escrow",
    "recover_with_shares",
    "unlock_share_spec",
    "unlock_share_specs",
]


def _read_secret(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes().rstrip(b"\r\n")
    except OSError as exc:
        raise CliError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def _prompt(label: str, hint: str) -> bytes:
    if not sys.stdin.isatty():
        raise PassphraseError(f"{label} needs a passphrase: {hint} (no terminal to ask on)")
    return getpass.getpass(f"{label}: ").encode()


# -- officer and share specifications --------------------------------------------------------


def _officer(spec: str) -> OfficerSpec:
    name, eq, rest = spec.partition("=")
    kind, colon, path = rest.partition(":")
    if not eq or not colon or not path or kind not in ("cert", "passphrase"):
        raise click.BadParameter(f"{spec!r}: expected NAME=cert:FILE or NAME=passphrase:FILE",
                                 param_hint="--officer")
    if kind == "cert":
        certs = load_certificates(path)
        if not certs:
            raise CliError(f"{path} holds no certificate")
        return OfficerSpec(name, certificate=certs[0])
    return OfficerSpec(name, passphrase=_read_secret(path, "the share passphrase file"))


def _officers(specs: Sequence[str]) -> list[OfficerSpec]:
    return [_officer(s) for s in specs]


def unlock_share_spec(spec: str) -> UnlockedShare:
    """Read and unlock the share named by ``FILE[,key=KEYFILE][,passphrase-file=FILE]``
    (``--share``), asking for a missing passphrase on a terminal.

    Raises:
        click.BadParameter: the specification is malformed.
        CliError: a file cannot be read, or the wrong kind of secret is given.
        EscrowError: the share is damaged or does not open.
        KeyLoadError: the officer's key cannot be loaded (PassphraseError: wrong passphrase).
    """
    path, *options = spec.split(",")
    given: dict[str, str] = {}
    for option in options:
        field, eq, value = option.partition("=")
        if not eq or field not in ("key", "passphrase-file") or field in given or not value:
            raise click.BadParameter(
                f"{spec!r}: expected FILE[,key=KEYFILE][,passphrase-file=FILE]",
                param_hint="--share")
        given[field] = value
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read the share file {path}: {exc.strerror or exc}") from None
    header = read_share_header(data, path)
    secret = (_read_secret(given["passphrase-file"], "the passphrase file")
              if "passphrase-file" in given else None)
    who = f"officer {header.officer}"
    if header.protection == "certificate":
        if "key" not in given:
            raise CliError(f"{path} is encrypted to {who}'s certificate: give the key with"
                           f" --share '{path},key=KEYFILE[,passphrase-file=FILE]'")
        try:
            key = load_private_key(given["key"], secret)
        except PassphraseError:
            if secret is not None:
                raise
            key = load_private_key(given["key"], _prompt(
                f"Passphrase of {who}'s key {given['key']}",
                f"add ',passphrase-file=FILE' to --share {path}"))
        return unlock_share(data, key=key, source=path)
    if "key" in given:
        raise CliError(f"{path} is protected by {who}'s passphrase, not a key")
    if secret is None:
        secret = _prompt(f"Share passphrase of {who} ({path})",
                         f"add ',passphrase-file=FILE' to --share {path}")
    return unlock_share(data, passphrase=secret, source=path)


def unlock_share_specs(specs: Sequence[str]) -> list[UnlockedShare]:
    """:func:`unlock_share_spec` for each ``--share``; raises what it raises."""
    return [unlock_share_spec(s) for s in specs]


SHARE_HELP = ("A share: FILE[,key=KEYFILE][,passphrase-file=FILE]; key= for a share encrypted"
               " to the officer's certificate, passphrase-file= for the key's or the share's"
               " passphrase (asked for on a terminal otherwise). Repeat for each officer.")
_OFFICER_HELP = ("An officer: NAME=cert:FILE (the officer's encryption certificate, RSA"
                 " preferred) or NAME=passphrase:FILE (a share passphrase, at least 12"
                 " characters, read from FILE). Repeat for each officer.")


def _report(result: EscrowResult, what: str) -> None:
    gen = result.state.active if result.state.rekey is None else result.state.rekey
    click.echo(f"{what}: escrow {result.state.escrow_id}, generation {gen.generation},"
               f" any {gen.threshold} of {len(gen.officers)} officers recover")
    for path in result.share_files:
        click.echo(f"  wrote {path}")
    if result.share_files:
        click.echo("hand each share file to its officer only, then delete it here (shred"
                   " the copies): M of them together open every escrowed key")


# -- commands ------------------------------------------------------------------------------------


@click.group()
def escrow() -> None:
    """Key escrow: the vault key as M-of-N shares of key recovery officers."""


@escrow.command("init")
@click.option("--threshold", type=int, required=True, help="Shares needed to recover (M).")
@click.option("--officers", "count", type=int,
              help="Number of officers (N); checked against the --officer list.")
@click.option("--officer", "officer_specs", multiple=True, required=True, help=_OFFICER_HELP)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Write the share files here (one per officer).")
@ca_options
def init(threshold: int, count: int | None, officer_specs: tuple[str, ...], out_dir: str,
         passphrase_file: str | None, passphrase_env: str | None, pin_file: str | None) -> None:
    """Split the vault key among officers and remove it from the CA (vault.p12)."""
    if count is not None and count != len(officer_specs):
        raise click.BadParameter(f"--officers {count} but {len(officer_specs)} --officer given",
                                 param_hint="--officers")
    data_dir = ca_data_dir()
    home = CAHome(data_dir)
    officers = _officers(officer_specs)
    passphrase = passphrase_from(passphrase_file, passphrase_env)
    if passphrase is None:
        passphrase = _prompt("Passphrase for the CA keys", "use --passphrase-file,"
                             " --passphrase-env or SMIMEKIT_PASSPHRASE")
    store = open_store()
    try:
        result = init_escrow(data_dir, store, passphrase, officers, threshold, Path(out_dir),
                             actor=cli_actor())
    finally:
        store.close()
    if not result.share_files:
        click.echo(f"finished the interrupted init of escrow {result.state.escrow_id}:"
                   " vault.p12 removed")
        return
    _report(result, "the vault key is under escrow")
    click.echo(f"vault.p12 removed from {home.path}")


@escrow.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(as_json: bool) -> None:
    """Officers, threshold, generation and key records (no secrets)."""
    data_dir = ca_data_dir()
    store = open_store()
    try:
        info = recovery.escrow_status(data_dir, store)
    finally:
        store.close()
    data = info.to_json()
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    if info.state is None:
        click.echo("not under escrow: the vault key is in vault.p12 under the CA passphrase"
                   " ('smimekit escrow init' splits it among officers)")
    else:
        click.echo(f"escrow {data['escrow_id']}, generation {data['generation']}: any"
                   f" {data['threshold']} of {len(data['officers'])} officers recover")
        for officer in data["officers"]:
            shown = (f"certificate {officer['certificate']}" if officer["certificate"]
                     else "passphrase")
            click.echo(f"  {officer['index']:>3}  {officer['name']}  ({shown})")
        click.echo(f"state digest {data['state_digest']}, since {data['created_at']}")
        if data["rekey_to"]:
            click.echo(f"re-key under way to vault key {data['rekey_to'][:16]}...: run"
                       " 'smimekit escrow rekey' again to finish it")
        if info.vault_key_on_disk:
            click.echo("warning: vault.p12 is still on disk (an interrupted init): run"
                       " 'smimekit escrow init' again to finish it")
    click.echo(f"vault certificate {data['vault_fingerprint']}")
    click.echo(f"key records: {info.records} ({info.sealed_to_active} sealed to the active"
               f" vault key" + (f", {info.sealed_to_next} to the next" if info.sealed_to_next
                                else "")
               + (f", {info.sealed_elsewhere} to neither: not recoverable"
                  if info.sealed_elsewhere else "") + ")")


@escrow.command("check-share")
@click.option("--share", "share_spec", required=True, help=SHARE_HELP)
def check_share_cmd(share_spec: str) -> None:
    """An officer's drill: open one share and check it counts (nothing is recovered)."""
    unlocked = unlock_share_spec(share_spec)
    store = open_store()
    try:
        state = load_state(CAHome(ca_data_dir()), store)
        if state is None:
            raise EscrowError("the vault key is not under escrow")
        generation = state.active
        check_share(generation, unlocked)
        h = unlocked.header
        # the drill is evidence for `smimekit assess` (DPS-ESCROW-DRILLED); no secret here
        store.audit(cli_actor(), "escrow.check-share", f"escrow {h.escrow_id}", {
            "officer": h.officer, "index": h.index, "generation": h.generation})
    finally:
        store.close()
    click.echo(f"share {h.index} of officer {h.officer} opens and counts for escrow"
               f" {h.escrow_id}, generation {h.generation} (any {h.threshold} of {h.shares}"
               " recover)")


@escrow.command("rotate")
@click.option("--share", "share_specs", multiple=True, required=True, help=SHARE_HELP)
@click.option("--officer", "officer_specs", multiple=True, required=True, help=_OFFICER_HELP)
@click.option("--threshold", type=int, required=True, help="Shares needed from now on (M).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Write the new share files here.")
def rotate(share_specs: tuple[str, ...], officer_specs: tuple[str, ...], threshold: int,
           out_dir: str) -> None:
    """New officers or threshold for the same vault key; the old shares stop counting."""
    data_dir = ca_data_dir()
    officers = _officers(officer_specs)
    shares = unlock_share_specs(share_specs)
    store = open_store()
    try:
        result = rotate_escrow(data_dir, store, shares, officers, threshold,
                               Path(out_dir), actor=cli_actor())
    finally:
        store.close()
    _report(result, "officers rotated")


@escrow.command("rekey")
@click.option("--share", "share_specs", multiple=True, required=True, help=SHARE_HELP)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Write the new share files here.")
@click.option("--officer", "officer_specs", multiple=True,
              help="Change an officer's protection for the new share (needed for every"
                   " passphrase officer: NAME=passphrase:FILE).")
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=100, show_default=True,
              help="Key records re-sealed per transaction.")
def rekey(share_specs: tuple[str, ...], out_dir: str, officer_specs: tuple[str, ...],
          batch_size: int) -> None:
    """A new vault key: every key record re-sealed to it, new shares for the officers.

    Resumable: run it again with the same (current) shares after an interruption.
    """
    data_dir = ca_data_dir()
    officers = _officers(officer_specs)
    shares = unlock_share_specs(share_specs)
    store = open_store()

    def progress(done: int, total: int) -> None:
        if sys.stderr.isatty():
            click.echo(f"\rre-sealing key records: {done}/{total}", err=True, nl=done == total)

    try:
        result = rekey_escrow(data_dir, store, shares, Path(out_dir),
                              actor=cli_actor(), officers=officers, batch_size=batch_size,
                              progress=progress)
    finally:
        store.close()
    _report(result, f"re-keyed ({result.resealed} key records re-sealed)")


@escrow.command("deposit")
@click.option("--key", "key_path", required=True, help="The encryption private key.")
@click.option("--cert", "cert_path", required=True, help="Its certificate.")
@click.option("--email", help="Whose key history it joins [the one address the certificate"
                                " names].")
@click.option("--passphrase-file", type=click.Path(dir_okay=False),
              help="The key's passphrase (first line).")
def deposit(key_path: str, cert_path: str, email: str | None,
            passphrase_file: str | None) -> None:
    """Escrow an encryption key made elsewhere. Signing keys are refused (non-repudiation)."""
    data_dir = ca_data_dir()
    certs = load_certificates(cert_path)
    if not certs:
        raise CliError(f"{cert_path} holds no certificate")
    email = email or deposit_owner(certs[0])
    secret = _read_secret(passphrase_file, "the passphrase file") if passphrase_file else None
    try:
        key = load_private_key(key_path, secret)
    except PassphraseError:
        if secret is not None:
            raise
        key = load_private_key(key_path, _prompt(f"Passphrase for {key_path}",
                                                 "use --passphrase-file"))
    store = open_store()
    try:
        record = deposit_key(data_dir, store, key, certs[0], email, actor=cli_actor())
    finally:
        store.close()
    click.echo(f"escrowed the key of certificate {certs[0].serial_number:x} for {email}"
               f" (record {record})")


def _when(text: str | None, end: bool) -> dt.datetime | None:
    if text is None:
        return None
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text)
            at = dt.datetime.combine(day, dt.time.max if end else dt.time.min)
        else:
            at = dt.datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected YYYY-MM-DD or an ISO 8601 time"
                                 ) from None
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)


@escrow.command("recover")
@click.option("--user", "email", required=True, help="Whose keys (mailbox address).")
@click.option("--share", "share_specs", multiple=True, required=True, help=SHARE_HELP)
@click.option("--reason", required=True, help="Why (ticket, case, leaver): audited.")
@click.option("--from", "since", help="Only keys whose certificate was valid on or after"
                                      " this date (YYYY-MM-DD, UTC).")
@click.option("--to", "until", help="... and on or before this date.")
@click.option("--out", "out_p12", type=click.Path(dir_okay=False),
              help="Write the keys as one PKCS#12 (key history) here.")
@click.option("--p12-passphrase-file", type=click.Path(dir_okay=False),
              help="Protect the PKCS#12 with this passphrase [a random one, printed once].")
@click.option("--decrypt", "messages", multiple=True, type=click.Path(dir_okay=False),
              help="Decrypt this message instead (repeat); plaintext goes to --out-dir.")
@click.option("--out-dir", type=click.Path(file_okay=False),
              help="Where --decrypt writes the plaintext messages (mode 0600).")
@click.option("--allow-legacy", is_flag=True, help="Also open 3DES/RC2 messages.")
def recover(email: str, share_specs: tuple[str, ...], reason: str, since: str | None,
            until: str | None, out_p12: str | None, p12_passphrase_file: str | None,
            messages: tuple[str, ...], out_dir: str | None, allow_legacy: bool) -> None:
    """Recover a user's historic encryption keys with M officers' shares (audited)."""
    if (out_p12 is None) == (not messages):
        raise click.UsageError("give either --out FILE.p12 or --decrypt MSG ... --out-dir DIR")
    if messages and out_dir is None:
        raise click.UsageError("--decrypt needs --out-dir")
    start, end = _when(since, False), _when(until, True)
    data_dir = ca_data_dir()
    details: dict[str, Any] = ({"output": "pkcs12"} if out_p12 else
                               {"output": "decrypt", "messages": len(messages)})
    names = [Path(m).name for m in messages]
    if len(set(names)) != len(names):
        raise click.UsageError("two --decrypt messages have the same file name")
    inputs = []
    for path in messages:
        try:
            inputs.append(Path(path).read_bytes())
        except OSError as exc:
            raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    store = open_store()
    try:
        pairs, shares = recover_with_shares(data_dir, store, share_specs, email=email,
                                            reason=reason, details=details, since=start,
                                            until=end)
        try:
            if out_p12:
                p12_pass = _write_p12(Path(out_p12), email, pairs, p12_passphrase_file,
                                      data_dir)
            else:
                assert out_dir is not None
                _decrypt_all(inputs, names, messages, pairs, Path(out_dir), allow_legacy)
        except (SmimeError, click.ClickException) as exc:
            message = exc.format_message() if isinstance(exc, click.ClickException) \
                else str(exc)
            recovery.record_refusal(store, actor=cli_actor(), email=email, reason=reason,
                                    error=f"keys recovered, nothing written: {message}",
                                    details=details,
                                    officers=[s.header.officer for s in shares])
            raise
    finally:
        store.close()
    click.echo(f"recovered {len(pairs)} key{'s' if len(pairs) != 1 else ''} of {email}"
               f" (officers: {', '.join(s.header.officer for s in shares)})")
    if out_p12:
        click.echo(f"  wrote {out_p12}")
        if not p12_passphrase_file:
            click.echo(f"PKCS#12 passphrase (give it to its recipient separately): {p12_pass}")
    else:
        click.echo(f"  decrypted {len(messages)} message{'s' if len(messages) != 1 else ''}"
                   f" into {out_dir}")


def recover_with_shares(
    data_dir: Path, store: Store, share_specs: Sequence[str], *, email: str, reason: str,
    details: dict[str, Any], since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> tuple[list[tuple[PrivateKeyTypes, x509.Certificate]], list[UnlockedShare]]:
    """``email``'s escrowed keys (oldest first) with the shares of ``--share``, and the
    shares. Every attempt is audited: a share that does not open through
    :func:`recovery.record_refusal`, the rest in :func:`recovery.recover_keys`.

    Raises:
        EscrowError: refused (see :func:`recovery.recover_keys`), or nothing in escrow for
            that user and period.
        click.ClickException, SmimeError: a share specification is wrong or does not open.
        StoreError: the database failed or the attempt could not be audited.
    """
    try:
        shares = unlock_share_specs(share_specs)
    except (SmimeError, click.ClickException) as exc:
        message = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
        recovery.record_refusal(store, actor=cli_actor(), email=email, reason=reason,
                                error=message, details=details)
        raise
    pairs = recovery.recover_keys(data_dir, store, shares, email=email, reason=reason,
                                  actor=cli_actor(), since=since, until=until, details=details)
    if not pairs:
        raise EscrowError(f"nothing in escrow for {email}"
                          + (" in that period" if since or until else ""))
    return pairs, shares


def _write_p12(path: Path, email: str, pairs: list[Any], passphrase_file: str | None,
               data_dir: Path) -> str:
    passphrase = (_read_secret(passphrase_file, "the PKCS#12 passphrase file").decode()
                  if passphrase_file else new_passphrase())
    home = CAHome(data_dir)
    issuing = home.certificate("issuing")
    newest_first = list(reversed(pairs))
    key, cert = newest_first[0]
    chain: list[x509.Certificate] = ([issuing, home.certificate("root")]
                                     if cert.issuer == issuing.subject else [])
    data = pkcs12_bytes(key, cert, chain, passphrase.encode(),
                        friendly_name=f"{email} (recovered)", extra=newest_first[1:],
                        iterations=ITERATIONS if passphrase_file
                        else RANDOM_PASSPHRASE_ITERATIONS)
    write_output(str(path), data)
    return passphrase


def _decrypt_all(inputs: list[bytes], names: list[str], paths: Sequence[str],
                 pairs: list[Any], out_dir: Path, allow_legacy: bool) -> None:
    # all in memory first: a message that does not open leaves no file behind
    plain = []
    for data, source in zip(inputs, paths, strict=True):
        try:
            plain.append(smimekit.decrypt(data, None, keys=pairs,
                                          allow_legacy=allow_legacy).content)
        except SmimeError as exc:
            raise CliError(f"{source}: {exc}; nothing written") from None
    written: list[Path] = []
    try:
        private_dir(out_dir)
        for name, content in zip(names, plain, strict=True):
            atomic_write(out_dir / name, content)
            written.append(out_dir / name)
    except OSError as exc:
        for path in written:
            path.unlink(missing_ok=True)
        raise CliError(f"cannot write into {out_dir}: {exc.strerror or exc}; nothing"
                       " written") from None
