"""``smimekit directory ...``: certificate distribution (docs/directory.md).

One command per distribution channel; each command keeps to its own section below.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from smimekit.cli.common import CliError, cli_config, write_output

if TYPE_CHECKING:
    from smimekit.config import LdapConfig

__all__ = ["directory"]


@click.group()
def directory() -> None:
    """Certificate distribution: LDAP publishing and export, SMIMEA, harvesting."""


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
