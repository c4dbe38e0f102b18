"""``smimekit gateway keys import|list|retire|move-to-token`` (the keys the gateway holds)
and ``smimekit gateway policy`` (the effective policy of addresses), docs/gateway.md.

Both join the ``gateway`` group of cli/gateway.py through ``COMMANDS`` (the ``extend`` of its
entry in cli/main.py). The key store opens with ``[gateway]
key_passphrase_file`` (or the PKCS#11 token of ``pkcs11_module``), as ``gateway serve`` opens
it; ``import --into-token`` keeps the keys themselves inside that token, and ``move-to-token``
moves keys sealed in the store there.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import click

from smimekit.cli.common import (
    CliError,
    cli_actor,
    cli_config,
    open_store,
    passphrase_from,
    passphrase_options,
)

if TYPE_CHECKING:
    from smimekit.config import GatewayConfig

__all__ = ["COMMANDS", "keys", "policy"]


def _gateway_config() -> GatewayConfig:
    from smimekit.config import GatewayConfig

    return cli_config().gateway or GatewayConfig()


@click.group()
def keys() -> None:
    """The keys the gateway holds for users (and the organisation): sealed in the store, or
    inside the PKCS#11 token (import --into-token)."""


@keys.command("import")
@click.argument("p12", type=click.Path(dir_okay=False, exists=True))
@passphrase_options
@click.option("--address", help="Hold the keys for this address [default: the certificate's"
              " first address].")
@click.option("--organisation", is_flag=True,
              help="The organisation's signing key (policy organisation_signature).")
@click.option("--into-token", is_flag=True,
              help="Keep the keys (every one of the file, the older ones too) inside the"
              " PKCS#11 token of [gateway] pkcs11_module, as sensitive, non-extractable"
              " objects; the store then holds only where they are.")
def import_(p12: str, passphrase_file: str | None, passphrase_env: str | None,
            address: str | None, organisation: bool, into_token: bool) -> None:
    """Hold every key of a PKCS#12 file (e.g. what 'ca issue' writes, with the key history).

    The PKCS#12 passphrase comes from --passphrase-file, --passphrase-env or
    SMIMEKIT_PASSPHRASE; the gateway's own key store opens with [gateway]
    key_passphrase_file, or the PKCS#11 token of pkcs11_module.
    """
    from smimekit.gateway.keys import StoreHeldKeys, import_pkcs12, master_key_source

    gateway = _gateway_config()
    if into_token and gateway.pkcs11_module is None:
        raise CliError("--into-token needs a PKCS#11 token: set [gateway] pkcs11_module,"
                       " token_label and pin_file")
    secret = master_key_source(gateway)
    data = Path(p12).read_bytes()
    with open_store(create=True) as store:
        held = StoreHeldKeys.open(store, secret, create=True)
        try:
            done = import_pkcs12(held, data, passphrase_from(passphrase_file, passphrase_env),
                                 address=address, organisation=organisation,
                                 label=f"PKCS#12 {p12}", into_token=into_token)
        finally:
            held.close()
        where = f"token {gateway.token_label!r}" if into_token else "store"
        for item in done:
            if item.new:
                store.audit(cli_actor(), "gateway.keys.import", item.address or "organisation",
                            {"fingerprint": item.fingerprint, "purpose": item.purpose,
                             "where": where})
            state = ("held" + (f" in {where}" if into_token else "")) if item.new \
                else "already held"
            click.echo(f"{state}: {item.fingerprint[:16]}  {item.address or '(organisation)'}"
                       f"  {item.purpose}  until {item.not_after.date().isoformat()}")


@keys.command("list")
@click.argument("address", required=False)
def list_(address: str | None) -> None:
    """The keys held (for ADDRESS, or all): fingerprint, address, purpose, validity, where
    the key lives (store: sealed in the store; token 'LABEL': inside the token), state.

    Reads the store only; no passphrase is needed and no key is opened.
    """
    from smimekit.gateway.keys import where

    with open_store() as store:
        rows = store.gateway_keys(address)
    if not rows:
        click.echo("no keys held" + (f" for {address}" if address else "")
                   + " (import some with: smimekit gateway keys import FILE.p12)")
        return
    now = dt.datetime.now(dt.UTC)
    for row in rows:
        state = ("retired " + row.retired_at.date().isoformat() if row.retired_at
                 else "expired" if row.not_after < now else "current")
        click.echo(f"{row.fingerprint[:16]}  {row.address or '(organisation)'}  {row.purpose}"
                   f"  until {row.not_after.date().isoformat()}  {where(row)}  {state}")


@keys.command("retire")
@click.argument("fingerprint")
def retire(fingerprint: str) -> None:
    """Stop signing with a held key (FINGERPRINT: its certificate's SHA-256, or a unique
    prefix of at least 16 hex digits, as 'list' shows). It still decrypts old mail."""
    text = fingerprint.strip().lower().replace(":", "")
    if len(text) < 16 or any(c not in "0123456789abcdef" for c in text):
        raise CliError(f"{fingerprint!r} is not a certificate fingerprint (16 to 64 hex digits)")
    with open_store() as store:
        matches = [r for r in store.gateway_keys() if r.fingerprint.startswith(text)]
        if not matches:
            raise CliError(f"no held key has the fingerprint {text}")
        if len(matches) > 1:
            raise CliError(f"{text} names {len(matches)} held keys; give more digits")
        row = matches[0]
        if not store.retire_gateway_key(row.fingerprint, dt.datetime.now(dt.UTC)):
            raise CliError(f"the key {row.fingerprint[:16]} is retired already")
        store.audit(cli_actor(), "gateway.keys.retire", row.address or "organisation",
                    {"fingerprint": row.fingerprint, "purpose": row.purpose})
    click.echo(f"retired: {row.fingerprint[:16]}  {row.address or '(organisation)'}")


@keys.command("move-to-token")
@click.argument("addresses", nargs=-1, metavar="[ADDRESS]...")
@click.option("--organisation", is_flag=True, help="The organisation's keys.")
@click.option("--all", "all_", is_flag=True,
              help="Every held key: each address's and the organisation's.")
@click.option("--seal-master-in-token", "seal_master", is_flag=True,
              help="The store's master key is sealed under key_passphrase_file: seal it in"
                   " the token instead (needed to move keys; the passphrase then no longer"
                   " opens the store, and every node needs the token configuration).")
def move_to_token(addresses: tuple[str, ...], organisation: bool, all_: bool,
                  seal_master: bool) -> None:
    """Move the keys of ADDRESS (or the organisation's, or --all) sealed in the store into
    the PKCS#11 token of [gateway] pkcs11_module: every key of the history, retired ones
    too. There is no way back (the token's objects are non-extractable).

    Each key's row refers to the token only once the token holds the key and has signed or
    decrypted with it; keys in the token already are skipped, so running it again is safe.
    A store whose master key is sealed under key_passphrase_file needs it sealed in the
    token first, which changes how every node opens the store: only with
    --seal-master-in-token.
    """
    from smimekit.errors import ConfigError
    from smimekit.gateway.keys import (
        StoreHeldKeys,
        TokenKek,
        master_key_sealing,
        master_key_source,
        read_key_passphrase,
    )

    if not (addresses or organisation or all_):
        raise click.UsageError("name the keys to move: ADDRESS..., --organisation or --all")
    if all_ and (addresses or organisation):
        raise click.UsageError("--all moves every key: give no ADDRESS or --organisation")
    gateway = _gateway_config()
    if gateway.pkcs11_module is None:
        raise CliError("move-to-token needs a PKCS#11 token: set [gateway] pkcs11_module,"
                       " token_label and pin_file")
    token = master_key_source(gateway)
    assert isinstance(token, TokenKek)
    actor = cli_actor()
    with open_store() as store:
        rows = list(store.gateway_keys()) if all_ else []
        for address in addresses:
            found = store.gateway_keys(address)
            if not found:
                raise CliError(f"no keys held for {address.strip().lower()}")
            rows += found
        if organisation:
            found = store.gateway_organisation_keys()
            if not found:
                raise CliError("no organisation key is held")
            rows += found
        sealing = master_key_sealing(store)
        if not rows or sealing is None:
            click.echo("no keys held (nothing to move)")
            return
        secret: bytes | TokenKek = token
        if sealing == "scrypt":
            if not seal_master:
                raise CliError("the store's master key is sealed under the key passphrase"
                               " (key_passphrase_file): keys in the token need it sealed in"
                               " the token too, after which the passphrase no longer opens"
                               " the store and every node needs the token configuration;"
                               " add --seal-master-in-token to do that (nothing was changed)")
            try:
                secret = read_key_passphrase(gateway.key_passphrase_file)
            except ConfigError as exc:
                raise CliError(f"the store's master key is sealed under the key passphrase,"
                               f" which is needed once more to move keys: {exc}") from None
        held = StoreHeldKeys.open(store, secret, token=token)
        unique = list({r.fingerprint: r for r in rows}.values())  # an ADDRESS given twice
        counts: Counter[str] = Counter()
        where = f"token {token.token_label!r}"
        try:
            if held.seal_master_in_token(actor=actor):
                click.echo(f"master key: now sealed in {where} (key_passphrase_file no"
                           " longer opens it)")
            for item in held.move_to_token(unique, actor=actor):
                counts[item.state] += 1
                who = f"{item.fingerprint[:16]}  {item.address or '(organisation)'}" \
                      f"  {item.purpose}"
                if item.state == "moved":
                    click.echo(f"moved to {where}: {who}")
                elif item.state == "reused":
                    click.echo(f"moved to {where} (its object was there already): {who}")
                elif item.state == "in token":
                    click.echo(f"already in {item.reason}: {who}")
                elif item.state == "stays":
                    click.echo(f"stays in the store: {who} ({item.reason})")
                else:
                    click.echo(f"failed: {who}: {item.reason}", err=True)
        finally:
            held.close()
            moved = counts["moved"] + counts["reused"]
            click.echo(f"{moved} moved, {counts['in token']} in the token already,"
                       f" {counts['stays']} staying in the store, {counts['failed']} failed")
        if counts["failed"]:
            raise CliError(f"{counts['failed']} key(s) could not be moved into {where}"
                           " (their rows are unchanged; see above)")


_FIELDS = ("sign", "organisation_signature", "missing_key", "subject_trigger", "encrypt",
           "no_certificate", "hcp", "decrypt", "verify", "harvest", "webmail")


@click.command("policy")
@click.argument("addresses", nargs=-1, required=True, metavar="ADDRESS...")
@click.option("--from", "sender", metavar="ADDRESS",
              help="The sender, to show each recipient's direction through each door.")
def policy(addresses: tuple[str, ...], sender: str | None) -> None:
    """The effective gateway policy of each ADDRESS, every value with the level it comes
    from (default, global, domain or user), as the gateway resolves it."""
    from smimekit.gateway.policy import Policy

    resolved = Policy(_gateway_config())
    for n, address in enumerate(addresses):
        effective = resolved.resolve(address)
        head = effective.address
        if sender is not None:
            via = resolved.direction(sender, address, trusted=True)
            public = resolved.direction(sender, address)
            head += (f"  ({via} from {sender.strip().lower()} through the trusted door; {public}"
                     " through the public door)")
        else:
            head += "  (internal)" if resolved.is_internal(address) else "  (outside)"
        click.echo(("\n" if n else "") + head)
        for name in _FIELDS:
            value = getattr(effective, name)
            shown = str(value).lower() if isinstance(value, bool) else repr(value) \
                if name == "subject_trigger" else str(value)
            click.echo(f"  {name:<23} {shown:<14} {effective.levels.get(name, 'default')}")


COMMANDS: list[click.Command] = [keys, policy]
