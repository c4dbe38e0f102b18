"""``smimekit trust add|list|show|remove``: the anchors in the data directory."""

from __future__ import annotations

import click
from cryptography import x509

from smimekit.cli.common import Globals, existing_data_dir, load_cert_files
from smimekit.dn import display_name
from smimekit.keys.kinds import certificate_public_key, key_algorithm_name
from smimekit.validation.trust import TrustStore, fingerprint, system_bundle
from smimekit.validation.verdict import cert_emails


def _store(ctx: click.Context) -> TrustStore:
    globals_: Globals = ctx.find_object(Globals)  # type: ignore[assignment]
    return TrustStore(globals_.data_dir)


@click.group()
def trust() -> None:
    """Manage the trust anchors kept in the data directory."""


@trust.command("add")
@click.argument("files", nargs=-1, metavar="[PEM ...]")
@click.option("--system", is_flag=True, help="Import the operating system's CA bundle.")
@click.option(
    "--allow-end-entity",
    is_flag=True,
    help="Also accept certificates that are not CAs (direct trust).",
)
@click.pass_context
def add(ctx: click.Context, files: tuple[str, ...], system: bool, allow_end_entity: bool) -> None:
    """Add anchors from certificate files (PEM, DER, PKCS#7), or the system bundle."""
    if not files and not system:
        raise click.UsageError("give certificate files, or --system")
    certs = load_cert_files(files)
    if system:
        certs += system_bundle()
    added = _store(ctx).add(certs, allow_end_entity=allow_end_entity)
    for cert, new in added:
        state = "added" if new else "already trusted"
        click.echo(f"{state}: {fingerprint(cert)[:16]}  {display_name(cert.subject)}")


@trust.command("list")
@click.pass_context
def list_(ctx: click.Context) -> None:
    """List the anchors."""
    existing_data_dir()
    anchors = _store(ctx).anchors()
    if not anchors:
        click.echo("no trust anchors (add some with: smimekit trust add ROOT.pem)")
        return
    from rich.console import Console  # rich only where a table is shown (start-up time)
    from rich.table import Table

    table = Table("fingerprint (SHA-256)", "subject", "valid until")
    for cert in anchors:
        table.add_row(
            fingerprint(cert)[:16],
            display_name(cert.subject),
            cert.not_valid_after_utc.date().isoformat(),
        )
    Console(soft_wrap=True).print(table)


def _describe(cert: x509.Certificate) -> list[str]:
    key = certificate_public_key(cert)
    size = getattr(key, "key_size", None)
    return [
        f"subject:     {display_name(cert.subject)}",
        f"issuer:      {display_name(cert.issuer)}",
        f"serial:      {format(cert.serial_number, 'x')}",
        f"valid:       {cert.not_valid_before_utc.isoformat()} .. "
        f"{cert.not_valid_after_utc.isoformat()}",
        "key:         "
        + (key_algorithm_name(key) or type(key).__name__.removesuffix("PublicKey").lstrip("_"))
        + (f" {size} bits" if size else ""),
        f"emails:      {', '.join(cert_emails(cert)) or '-'}",
        f"sha256:      {fingerprint(cert)}",
    ]


@trust.command("show")
@click.argument("fingerprint_prefix", metavar="FINGERPRINT")
@click.pass_context
def show(ctx: click.Context, fingerprint_prefix: str) -> None:
    """Show one anchor (by a fingerprint prefix of at least 8 hex digits)."""
    existing_data_dir()
    for line in _describe(_store(ctx).find(fingerprint_prefix)):
        click.echo(line)


@trust.command("remove")
@click.argument("fingerprint_prefix", metavar="FINGERPRINT")
@click.pass_context
def remove(ctx: click.Context, fingerprint_prefix: str) -> None:
    """Remove one anchor."""
    existing_data_dir()
    cert = _store(ctx).remove(fingerprint_prefix)
    click.echo(f"removed: {fingerprint(cert)[:16]}  {display_name(cert.subject)}")
