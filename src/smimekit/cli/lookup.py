"""smimekit lookup ADDR...: the usable encryption certificates of addresses; and the resolver
that encrypt --to ADDR and sign-encrypt --to ADDR use (docs/directory.md, "Lookup")."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click
from cryptography import x509

from smimekit.cli.common import (
    CliError,
    cli_config,
    cli_globals,
    load_cert_files,
    open_store,
    trust_anchors,
    write_output,
)
from smimekit.cli.messages import _revocation_options
from smimekit.validation.revocation import RevocationOptions

if TYPE_CHECKING:
    from smimekit.directory.resolver import LookupResult, Resolver
    from smimekit.store import Store


def is_address(value: str) -> bool:
    """A --to value is an address when it has an '@' and names no existing file."""
    from pathlib import Path

    return "@" in value and not Path(value).exists()


@contextmanager
def resolver(
    *,
    trust_paths: Sequence[str] = (),
    cert_paths: Sequence[str] = (),
    revocation: RevocationOptions | None,
    aia: bool,
    only: Sequence[str] | None = None,
    use_cache: bool = True,
) -> Iterator[Resolver]:
    """The run's resolver: the sources of the configuration over the data directory's store
    (when it has one), the trust store, --trust and our CA's root as anchors, our CA's chain
    and --certs as intermediates, our CA's CRLs added to ``revocation``."""
    from smimekit.api import _issuer_source
    from smimekit.directory.resolver import Resolver
    from smimekit.directory.store_source import our_ca_chain, our_ca_revocation
    from smimekit.validation.intermediates import IntermediateCache

    globals_ = cli_globals()
    data_dir = globals_.data_dir
    store = _store()
    try:
        ours = our_ca_chain(data_dir)
        anchors = trust_anchors(tuple(trust_paths))
        anchors += [c for c in ours if c.issuer == c.subject and c not in anchors]
        given = load_cert_files(tuple(cert_paths))
        if revocation is not None:
            revocation = dataclasses.replace(revocation, crls=tuple(revocation.crls) + tuple(
                our_ca_revocation(store, data_dir)))
        cache = IntermediateCache.in_data_dir(data_dir)
        yield Resolver.from_config(
            cli_config(), store=store, data_dir=data_dir, only=only, use_cache=use_cache,
            trust=anchors, intermediates=given + [c for c in ours if c not in given],
            revocation=revocation, issuer_source=_issuer_source(aia, cache, revocation),
            our_ca=ours)
    finally:
        if store is not None:
            store.close()


def _store() -> Store | None:
    """The data directory's store when there is one (a CA, or --database-url); None when the
    data directory holds no database: lookup then asks the other sources."""
    from smimekit.store.base import DB_FILENAME

    globals_ = cli_globals()
    if globals_.database_url is None and not (globals_.data_dir / DB_FILENAME).is_file():
        return None
    return open_store()


def resolve_recipients(
    addresses: Sequence[str], *, trust_paths: Sequence[str], cert_paths: Sequence[str],
    revocation: RevocationOptions | None, aia: bool,
) -> tuple[list[x509.Certificate], list[x509.Certificate], list[x509.Certificate],
           RevocationOptions | None]:
    """For encrypt --to ADDR: the chosen certificate of each address (in order), the CA
    certificates that complete their chains, and the anchors and revocation options (with
    our CA's CRLs) the lookup used.

    Raises:
        CliError: an address has no usable certificate (one line: every source asked and
            its answer, for each such address).
    """
    with resolver(trust_paths=trust_paths, cert_paths=cert_paths, revocation=revocation,
                  aia=aia) as found:
        results = [found.lookup(a) for a in addresses]
        anchors, used = list(found.trust), found.revocation
    failed = [r.explain() for r in results if not r.ok]
    if failed:
        raise CliError(" | ".join(failed))
    chosen = [r.usable[0] for r in results]
    chains = [c for u in chosen for c in u.chain[1:] if c not in anchors]
    return [u.certificate for u in chosen], list(dict.fromkeys(chains)), anchors, used


@click.command("lookup")
@click.argument("addresses", nargs=-1, required=True, metavar="ADDR...")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document (docs/directory.md).")
@click.option("--source", "source_list", metavar="NAMES",
              help="Ask only these sources, comma-separated (store,harvested,ldap,smimea).")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the lookup cache.")
@click.option("--refresh", is_flag=True,
              help="Ask every source again (the answers still refresh the cache).")
@click.option("--trust", "trust_paths", multiple=True, metavar="PEM",
              help="Trust anchors for this run, besides the trust store and our CA (repeatable).")
@click.option("--certs", "cert_paths", multiple=True, metavar="PEM",
              help="Intermediate CA certificates to complete chains with (repeatable).")
@click.option("--aia/--no-aia", default=True, show_default=True,
              help="Fetch missing intermediate CAs from caIssuers URLs (never offline).")
@_revocation_options
@click.option("-o", "--output", metavar="FILE", help="Write the answer here, not to stdout.")
def lookup(
    addresses: tuple[str, ...],
    as_json: bool,
    source_list: str | None,
    no_cache: bool,
    refresh: bool,
    trust_paths: tuple[str, ...],
    cert_paths: tuple[str, ...],
    aia: bool,
    revocation: RevocationOptions,
    output: str | None,
) -> None:
    """The usable encryption certificates of addresses, validated and ranked."""
    from smimekit.errors import DirectoryError

    only = None
    if source_list is not None:
        from smimekit.directory.resolver import SOURCES

        only = [s.strip() for s in source_list.split(",") if s.strip()]
        unknown = [s for s in only if s not in SOURCES]
        if not only or unknown:
            raise click.BadParameter(
                f"unknown source {unknown[0]!r}" if unknown else "name at least one source",
                param_hint=f"--source (known: {', '.join(SOURCES)})")
    results: list[LookupResult | tuple[str, str]] = []
    with resolver(trust_paths=trust_paths, cert_paths=cert_paths, revocation=revocation,
                  aia=aia, only=only, use_cache=not no_cache) as found:
        for address in addresses:
            try:
                results.append(found.lookup(address, refresh=refresh))
            except DirectoryError as exc:  # not an address: said, and the others go on
                results.append((address, str(exc)))
    if as_json:
        document = {"version": 1, "results": [
            r.to_dict() if not isinstance(r, tuple)
            else {"address": r[0], "ok": False, "error": r[1]} for r in results]}
        write_output(output, (json.dumps(document, indent=2) + "\n").encode())
    else:
        write_output(output, "".join(_text(r) for r in results).encode())
    bad = [r[1] if isinstance(r, tuple) else r.explain()
           for r in results if isinstance(r, tuple) or not r.ok]
    if bad:
        raise _NotFound(bad)


class _NotFound(CliError):
    """Exit status 1: one line on stderr per address without a usable certificate."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines

    def show(self, file: object = None) -> None:
        for line in self.lines:
            click.echo(f"smimekit: {line}", err=True)


def _text(result: LookupResult | tuple[str, str]) -> str:
    from smimekit.validation.verdict import CertSummary

    if isinstance(result, tuple):
        return f"{result[0]}: {result[1]}\n"
    lines = [f"{result.address}:" if result.ok else f"{result.address}: none usable"]
    for rank, usable in enumerate(result.usable, 1):
        cert = usable.certificate
        marks = [m for m, on in (("preferred", usable.candidate.preferred),
                                 ("our CA", usable.ours)) if on]
        lines.append(
            f"  {rank}. {CertSummary.of(cert).subject}  serial {cert.serial_number:x}"
            f"  notAfter {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%SZ}"
            f"  from {', '.join(usable.sources)}"
            + (f" ({usable.candidate.where})" if usable.candidate.where else "")
            + (f"  [{', '.join(marks)}]" if marks else ""))
        lines += [f"     warning: {w}" for w in usable.warnings]
    for refused in result.refused:
        cert = refused.candidate.certificate
        lines.append(f"  refused: serial {cert.serial_number:x} from {refused.candidate.source}:"
                     f" {'; '.join(refused.reasons)}")
    return "\n".join(lines) + "\n"

