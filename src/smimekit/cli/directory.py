"""``smimekit directory ...``: certificate distribution (docs/directory.md).

Each subcommand sits in its own block below (LDAP publishing/export, harvesting, SMIMEA),
so the parts of issue 10 join without touching each other.
"""

from __future__ import annotations

import click

from smimekit.cli.common import open_store, write_output


@click.group()
def directory() -> None:
    """Certificate distribution: LDAP, harvested mail, SMIMEA in DNS."""


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
