"""``smimekit directory ...``: certificate distribution (docs/directory.md).

Each part of the group is a block of its own below (publish/export, smimea, harvest, client
settings), added by the branch that built it; the commands stay thin over
:mod:`smimekit.directory`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from smimekit.cli.common import (
    CliError,
    cli_config,
    cli_globals,
    load_cert_files,
    open_store,
    trust_anchors,
    write_output,
)
from smimekit.cli.messages import _CERTS, _TRUST, _revocation_options

if TYPE_CHECKING:
    from smimekit.config import LdapConfig

__all__ = ["directory"]


@click.group()
def directory() -> None:
    """Certificate distribution: LDAP, harvested mail, SMIMEA in DNS, client settings."""


# -- LDAP ------------------------------------------------------------------------------------


def _ldap_config(purpose: str) -> LdapConfig:
    config = cli_config()
    ldap = config.directory.ldap if config.directory is not None else None
    if ldap is None:
        raise CliError(f"{purpose} needs a [directory.ldap] table in the configuration file"
                       " (--config or SMIMEKIT_CONFIG; see docs/directory.md)")
    return ldap


@directory.command("publish")
def publish_command() -> None:
    """Write every live encryption certificate of our CA to the LDAP directory, and remove
    revoked, renewed and expired ones.

    Entries are found by mail; an address without an entry gets a minimal inetOrgPerson
    entry. Running it again changes nothing. Needs [directory.ldap] with a bind DN allowed
    to write; the CA passphrase is not needed.
    """
    from smimekit.cli.ca import open_ca
    from smimekit.directory.ldap import publish

    ldap = _ldap_config("directory publish")
    with open_ca(None, None, None, locked=True) as cax:
        report = publish(cax.store, ldap, issuer_fingerprint=cax.issuer_fingerprint,
                         chain=[cax.ca.authority.cert, cax.ca.authority.root])
    click.echo(report.summary())


@directory.command("export")
@click.option("--ldif", "ldif", is_flag=True, required=True,
              help="An LDIF of changetype: modify records (the only format for now).")
@click.option("-o", "--output", "output", help="Write here (default: standard output).")
@click.option("--base-dn", help="The {base_dn} of the DN template [directory.ldap.base_dn].")
@click.option("--dn-template", default="mail={mail},{base_dn}", show_default=True,
              help="Each entry's DN from {mail}, {local}, {domain}, {cn} and {base_dn}"
                   " (Active Directory: e.g. 'CN={cn},OU=Staff,DC=corp,DC=example').")
@click.option("--binary-option", is_flag=True,
              help="Write userCertificate;binary (OpenLDAP's ldapmodify) instead of the"
                   " bare name Active Directory takes.")
def export_command(ldif: bool, output: str | None, base_dn: str | None, dn_template: str,
                   binary_option: bool) -> None:
    """Write the live encryption certificates of our CA as an LDIF, for directories we do
    not write to (Active Directory: 'ldifde -i -f FILE').

    One record per person, replacing userCertificate and userSMIMECertificate.
    """
    from smimekit.cli.ca import open_ca
    from smimekit.directory.ldap import export_ldif

    if base_dn is None:
        config = cli_config()
        ldap = config.directory.ldap if config.directory is not None else None
        if ldap is None and "{base_dn}" in dn_template:
            raise click.UsageError("give --base-dn (or set directory.ldap.base_dn)")
        base_dn = ldap.base_dn if ldap is not None else ""
    with open_ca(None, None, None, locked=True) as cax:
        text = export_ldif(cax.store, issuer_fingerprint=cax.issuer_fingerprint,
                           chain=[cax.ca.authority.cert, cax.ca.authority.root],
                           base_dn=base_dn, dn_template=dn_template,
                           binary_option=binary_option)
    if output in (None, "-"):
        click.echo(text, nl=False)
    else:
        write_output(output, text.encode(), mode=0o644)
        click.echo(f"wrote {Path(output)}", err=True)


# -- SMIMEA (RFC 8162) -----------------------------------------------------------------------


@directory.command("smimea")
@click.option("--domain", required=True,
              help="Write records for the addresses in this domain only.")
@click.option("-o", "--output", "output", type=click.Path(dir_okay=False),
              help="Write the zone fragment here (default: stdout).")
@click.option("--ttl", type=click.IntRange(0, 2**31 - 1), default=3600, show_default=True,
              help="TTL of every record, in seconds.")
def smimea(domain: str, output: str | None, ttl: int) -> None:
    """Write the SMIMEA zone fragment (RFC 8162) for our CA's live encryption certificates.

    One record "SMIMEA 3 0 0" (DANE-EE, the whole certificate) per live encryption
    certificate in DOMAIN, owned by the SHA-256 of the local part under _smimecert.DOMAIN.
    Include it in the zone and sign the zone: validating senders refuse unsigned records.
    """
    from smimekit.directory.dns import smimea_records, zone_fragment

    store = open_store()
    try:
        records = smimea_records(store, domain)
    finally:
        store.close()
    text = zone_fragment(records, domain, ttl=ttl)
    write_output(output, text.encode("utf-8"), mode=0o644)
    click.echo(f"{len(records)} SMIMEA record(s) for {domain}"
               + (f" written to {output}" if output else ""), err=True)


# -- end of SMIMEA -----------------------------------------------------------------------------


# -- harvest (certificates from signed mail) -------------------------------------------------


@directory.command("harvest")
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@_TRUST
@_CERTS
@click.option("--allow-legacy", is_flag=True,
              help="Accept SHA-1 signatures and other legacy algorithms (old archives).")
@click.option("--max-size", type=click.IntRange(min=1), default=32 * 1024 * 1024,
              show_default=True, metavar="BYTES",
              help="A larger message is skipped unread.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@_revocation_options
def harvest_command(paths: tuple[str, ...], trust_paths: tuple[str, ...],
                    cert_paths: tuple[str, ...], allow_legacy: bool, max_size: int,
                    as_json: bool, revocation: Any) -> None:
    """Keep the certificates of validly signed mail (mbox, Maildir, .eml files or folders).

    Each message is verified as 'smimekit verify' does (the trust store and --trust,
    revocation per --revocation). Only when the signature validates and the From address
    is the signer's are the signer's certificate and the encryption certificate it names
    (SMIMEEncryptionKeyPreference) kept for that address. Encrypted messages are skipped.
    """
    from smimekit.cli import local
    from smimekit.directory.harvest import harvest
    from smimekit.validation.intermediates import IntermediateCache

    for path in paths:
        if not Path(path).exists():
            raise CliError(f"{path} does not exist")
    data_dir = cli_globals().data_dir
    trust = trust_anchors(trust_paths)
    if not trust:
        raise CliError("no trust anchors: add some with 'smimekit trust add' or give --trust"
                       " (nothing can validate without them)")
    extra = load_cert_files(cert_paths)
    extra += [c for c in local.local_ca_chain(data_dir) if c not in extra]
    # the store our CA uses when there is one; else harvesting makes one (a mail user's)
    store = open_store(create=not local.has_ca(data_dir))
    try:
        report = harvest(paths, store=store, trust=trust, extra_certs=extra,
                         revocation=revocation, allow_legacy=allow_legacy,
                         intermediates=IntermediateCache.in_data_dir(data_dir),
                         max_size=max_size)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(report.skipped.items())) or "none"
    click.echo(f"messages read: {report.messages}; signed: {report.signed}; valid and bound"
               f" to their From: {report.valid}")
    click.echo(f"certificates: {report.new} new, {report.updated} updated,"
               f" {report.unchanged} unchanged")
    click.echo(f"skipped: {skipped}")
    for note in report.notes[:20]:
        click.echo(f"  {note}", err=True)
    if len(report.notes) > 20:
        click.echo(f"  ... and {len(report.notes) - 20} more (--json lists them)", err=True)


# -- client settings (Apple, Thunderbird, Outlook) ---------------------------------------------


def _org_chain(chain_paths: tuple[str, ...]) -> list[Any]:
    """--chain files, else the data directory's CA (issuing CA, then root)."""
    from smimekit.cli import local

    chain = load_cert_files(chain_paths) if chain_paths else \
        local.local_ca_chain(cli_globals().data_dir)
    if not chain:
        raise CliError("no CA certificates: give --chain PEM, or run in the CA's data"
                       " directory")
    return chain


def _root_of(chain: list[Any]) -> Any:
    roots = [c for c in chain if c.subject == c.issuer]
    if not roots:
        raise CliError("the chain has no root (self-issued) certificate")
    return roots[-1]


_CHAIN = click.option("--chain", "chain_paths", multiple=True, metavar="PEM",
                      help="The organisation's CA certificates (default: the data directory's"
                           " CA).")


@directory.group("client-settings")
def client_settings() -> None:
    """Settings for mail clients: Apple profiles, Thunderbird policies, a .p7b for Windows."""


@client_settings.command("apple")
@click.option("--p12", "p12_path", required=True, type=click.Path(dir_okay=False),
              help="The signing identity (or the only one), e.g. ADDR.sign.p12 of 'ca issue'.")
@click.option("--encryption-p12", "encryption_p12_path", type=click.Path(dir_okay=False),
              help="The encryption identity of a dual-key person (ADDR.encrypt.p12).")
@click.option("--email", help="The account's address: adds the Mail account that signs and"
                              " decrypts with the identities.")
@click.option("--incoming-host", help="IMAP or POP server (with --email).")
@click.option("--incoming-port", type=click.IntRange(1, 65535))
@click.option("--outgoing-host", help="SMTP server (with --email).")
@click.option("--outgoing-port", type=click.IntRange(1, 65535))
@click.option("--account-type", type=click.Choice(["imap", "pop"]), default="imap",
              show_default=True)
@click.option("--username", help="Login for both servers (default: the device asks).")
@click.option("--name", "full_name", help="The sender's name in sent mail.")
@click.option("--encrypt-by-default", is_flag=True, help="Encrypt new mail by default.")
@click.option("--no-sign-by-default", is_flag=True, help="Do not sign new mail by default.")
@click.option("--organization", help="PayloadOrganization (default: the CA's organisation).")
@_CHAIN
@click.option("-o", "--output", required=True, metavar="FILE", help="The .mobileconfig.")
def apple_command(p12_path: str, encryption_p12_path: str | None, email: str | None,
                  incoming_host: str | None, incoming_port: int | None,
                  outgoing_host: str | None, outgoing_port: int | None, account_type: str,
                  username: str | None, full_name: str | None, encrypt_by_default: bool,
                  no_sign_by_default: bool, organization: str | None,
                  chain_paths: tuple[str, ...], output: str) -> None:
    """An Apple .mobileconfig: identities, CA certificates and, with --email, the Mail
    account's S/MIME settings (signing and encryption certificate UUIDs)."""
    from smimekit.cli.common import write_output
    from smimekit.directory.clients import MailAccount, apple_profile

    def read(path: str) -> bytes:
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None

    account = None
    if email is not None:
        if not incoming_host or not outgoing_host:
            raise click.UsageError("--email needs --incoming-host and --outgoing-host")
        account = MailAccount(email=email, incoming_host=incoming_host,
                              outgoing_host=outgoing_host, account_type=account_type,
                              incoming_port=incoming_port, outgoing_port=outgoing_port,
                              username=username, name=full_name,
                              sign_by_default=not no_sign_by_default,
                              encrypt_by_default=encrypt_by_default)
    chain = _org_chain(chain_paths)
    if organization is None:
        from smimekit.ca.home import CAHome

        home = CAHome(cli_globals().data_dir)
        organization = home.config().organization if home.exists() else None
    if not organization:
        raise CliError("--organization is needed outside the CA's data directory")
    profile = apple_profile(
        read(p12_path), account=account, ca_certs=chain, organization=organization,
        encryption_p12=read(encryption_p12_path) if encryption_p12_path else None)
    write_output(output, profile)


@client_settings.command("thunderbird")
@_CHAIN
@click.option("--install-path", metavar="PATH",
              help="The root's path as Certificates.Install names it (default: the file name"
                   " alone; Thunderbird then looks in its certificate folders).")
@click.option("--import-enterprise-roots", is_flag=True,
              help="Also trust the roots of the operating system's store.")
@click.option("-o", "--output", required=True, metavar="DIR",
              help="A new or empty folder for policies.json, the root and the AutoConfig.")
def thunderbird_command(chain_paths: tuple[str, ...], install_path: str | None,
                        import_enterprise_roots: bool, output: str) -> None:
    """Thunderbird: policies.json installing the root and, from [directory.ldap], the LDAP
    directory searched for recipients' certificates (AutoConfig files)."""
    from smimekit.cli.common import cli_config
    from smimekit.directory.clients import thunderbird_files
    from smimekit.fsutil import atomic_write

    config = cli_config()
    ldap = config.directory.ldap if config.directory is not None else None
    made = thunderbird_files(_root_of(_org_chain(chain_paths)), ldap,
                             install_path=install_path,
                             import_enterprise_roots=import_enterprise_roots)
    out = Path(output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CliError(f"{out} is not an empty folder")
    for name, data in made.files.items():
        target = out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, data, mode=0o644)
        click.echo(str(target))
    if ldap is None:
        click.echo("smimekit: no [directory.ldap] in the configuration: only the root is"
                   " installed", err=True)


@client_settings.command("outlook")
@_CHAIN
@click.option("-o", "--output", required=True, metavar="FILE", help="The .p7b (DER).")
def outlook_command(chain_paths: tuple[str, ...], output: str) -> None:
    """Windows and Outlook: the organisation's chain as a .p7b (PKCS#7, DER)."""
    from smimekit.cli.common import write_output
    from smimekit.directory.clients import p7b_bytes

    write_output(output, p7b_bytes(_org_chain(chain_paths)), mode=0o644)
