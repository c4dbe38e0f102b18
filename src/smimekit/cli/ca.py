"""``smimekit ca ...``: our own certificate authority.

``init``, ``issue``, ``chain``, ``revoke``, ``crl``, ``export-root``, ``import-root`` and
``history`` live here; the bulk lifecycle commands (``enroll``, ``renew``, ``expiring``) in
:mod:`smimekit.cli.ca_lifecycle`, ``serve`` in :mod:`smimekit.cli.ca_serve`.
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from smimekit.ca import bundle
from smimekit.ca.authority import CAKeyType
from smimekit.ca.bundle import new_passphrase
from smimekit.ca.bundle import safe_name as _safe_name
from smimekit.ca.export import (
    ITERATIONS,
    RANDOM_PASSPHRASE_ITERATIONS,
    pem_chain,
    pkcs12_bytes,
)
from smimekit.ca.home import CAConfig, CAHome, Pkcs11Ref, UnlockedCA
from smimekit.ca.issuance import (
    DEFAULT_ENCRYPT_KEY,
    DEFAULT_SIGN_KEY,
    CertificateAuthority,
    Issuance,
    SubscriberKeyType,
    check_key_types,
    checked_email,
    identity_detail,
)
from smimekit.ca.profiles import PROFILES
from smimekit.cli.common import (
    CliError,
    _ask,
    ca_data_dir,
    cli_actor,
    cli_globals,
    open_store,
    output_dir,
    passphrase_from,
    write_output,
)
from smimekit.cli.directory_hook import kept_current
from smimekit.dn import display_name
from smimekit.errors import CAError
from smimekit.fsutil import atomic_write, private_dir
from smimekit.store import DB_FILENAME
from smimekit.store.location import StoreLocation

__all__ = ["ca", "ca_options", "new_passphrase", "open_ca", "parse_duration", "write_bundle"]


def ca_options(func: Any) -> Any:
    """--passphrase-file/--passphrase-env for the CA passphrase, --pin-file for a token."""
    func = click.option("--pin-file", type=click.Path(dir_okay=False),
                        help="PKCS#11 user PIN (default: SMIMEKIT_PKCS11_PIN).")(func)
    func = click.option("--passphrase-env", metavar="NAME",
                        help="Read the CA passphrase from this environment variable.")(func)
    func = click.option("--passphrase-file", type=click.Path(dir_okay=False),
                        help="Read the CA passphrase from this file (first line).")(func)
    return func


def _ca_passphrase(passphrase_file: str | None, passphrase_env: str | None) -> bytes:
    secret = passphrase_from(passphrase_file, passphrase_env)
    return secret if secret is not None else _ask("the CA keys")


MIN_CA_PASSPHRASE = 12
_PROMPT_ATTEMPTS = 3


def _new_ca_passphrase(passphrase_file: str | None, passphrase_env: str | None) -> bytes:
    """The passphrase for a new CA: from the given source, or typed twice on a terminal.

    Raises:
        CliError: too short, not UTF-8, or typed differently three times.
        PassphraseError: no source and no terminal.
    """
    secret = passphrase_from(passphrase_file, passphrase_env)
    if secret is None:
        secret = _ask_twice()
    if len(secret) < MIN_CA_PASSPHRASE:
        raise CliError(f"the CA passphrase must be at least {MIN_CA_PASSPHRASE} characters")
    try:
        secret.decode("utf-8")
    except UnicodeDecodeError:
        raise CliError("the CA passphrase must be UTF-8 text") from None
    return secret


def _ask_twice() -> bytes:
    if not sys.stdin.isatty():
        _ask("the new CA keys")  # raises: no terminal to ask on
    for _ in range(_PROMPT_ATTEMPTS):
        first = getpass.getpass(f"New CA passphrase (at least {MIN_CA_PASSPHRASE}"
                                " characters): ").encode()
        if len(first) < MIN_CA_PASSPHRASE:
            click.echo(f"smimekit: too short (at least {MIN_CA_PASSPHRASE} characters);"
                       " try again", err=True)
            continue
        if getpass.getpass("Repeat the CA passphrase: ").encode() == first:
            return first
        click.echo("smimekit: the two passphrases differ; try again", err=True)
    raise CliError(f"no CA passphrase after {_PROMPT_ATTEMPTS} attempts (they were too short"
                   " or differed); nothing was created")


def _check_writable(data_dir: Path) -> None:
    """The data directory can be created, or written if it exists (probed, not guessed:
    permissions say nothing for root or a read-only mount)."""
    probe = data_dir
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise CliError(f"cannot create the CA in {data_dir}: {probe} is not a directory")
    try:
        fd, name = tempfile.mkstemp(prefix=".smimekit-probe.", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise CliError(f"cannot create the CA in {data_dir}: {probe} is not writable"
                       f" ({exc.strerror or exc})") from None


@dataclass
class _Created:
    """What did not exist before ``ca init``, to remove again if it fails half way."""

    data_dir: Path
    paths: list[Path]

    @classmethod
    def before(cls, data_dir: Path) -> _Created:
        top = data_dir
        while not top.parent.exists() and top.parent != top:
            top = top.parent
        candidates = [top] if not data_dir.exists() else [
            data_dir / "ca", *(data_dir / f"{DB_FILENAME}{s}" for s in ("", "-wal", "-shm"))]
        return cls(data_dir, [p for p in candidates if not p.exists()])

    def undo(self) -> None:
        for path in self.paths:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def _pin(pin_file: str | None) -> str | None:
    if pin_file:
        try:
            return Path(pin_file).read_text().strip()
        except OSError as exc:
            raise CliError(f"cannot read the PIN file {pin_file}: {exc.strerror or exc}") from None
    return os.environ.get("SMIMEKIT_PKCS11_PIN")


@contextmanager
def open_ca(
    passphrase_file: str | None, passphrase_env: str | None, pin_file: str | None, *,
    locked: bool = False, root: bool = False, passphrase: bytes | None = None,
) -> Iterator[CertificateAuthority]:
    """The CA of the data directory with its store; ``locked``: certificates only;
    ``passphrase``: the one read already (else from the options or asked)."""
    home = CAHome(ca_data_dir())
    if not locked and passphrase is None:
        passphrase = _ca_passphrase(passphrase_file, passphrase_env)
    if not locked:
        from smimekit.escrow.vault import load_state

        state = load_state(home)
        if state is not None and state.rekey is not None:
            # keys sealed now would go to the vault key being retired
            raise CliError("an escrow re-key is in progress: finish it ('smimekit escrow"
                           " rekey' with the officers' shares) before issuing")
    unlocked = home.unlock(passphrase, pin=_pin(pin_file), root=root)
    store = open_store()
    try:
        yield CertificateAuthority(unlocked, store, actor=cli_actor())
    finally:
        store.close()


_DURATION = re.compile(r"^\s*(\d+)\s*([dwy]?)\s*$")


def parse_duration(text: str) -> dt.timedelta:
    """``30d``, ``6w``, ``2y`` or a bare number of days."""
    match = _DURATION.match(text)
    if match is None:
        raise click.BadParameter(f"{text!r}: expected e.g. 30d, 6w or 2y")
    n, unit = int(match.group(1)), match.group(2) or "d"
    return dt.timedelta(days=n * {"d": 1, "w": 7, "y": 365}[unit])


def write_bundle(
    cax: CertificateAuthority, issuance: Issuance, out: Path, *, passphrase: str,
    legacy: bool, mobileconfig: bool, history: bool = True, generated: bool = True,
) -> list[Path]:
    """Write what the person needs: certificates (PEM), and for keys the CA generated a
    PKCS#12 per key (with the encryption key history when ``history``) and optionally a
    .mobileconfig. ``generated``: the passphrase came from :func:`new_passphrase` (random,
    so the PKCS#12 needs no high iteration count). Returns the paths written."""
    rounds = RANDOM_PASSPHRASE_ITERATIONS if generated else ITERATIONS
    return bundle.write_bundle(cax, issuance, bundle.BundleOptions(
        out, legacy=legacy, mobileconfig=mobileconfig, history=history, iterations=rounds),
        passphrase=passphrase)


KEY_TYPE_HELP = ("Generated key type [p256 to sign, rsa3072 to encrypt]; give it twice for"
                 " dual keys of two types: the signing type, then the encryption type (e.g."
                 " --key-type ml-dsa-65 --key-type ml-kem-768).")


def key_kinds(key_types: Sequence[str], purpose: str, *, legacy_p12: bool = False
              ) -> tuple[SubscriberKeyType, SubscriberKeyType]:
    """The (signing, encryption) key types of ``--key-type`` given zero, one or two times,
    checked against ``purpose`` (and ``--legacy-p12``) before any key is made.

    Raises:
        click.UsageError: more than two types, two types without dual, a type that cannot
            serve the purpose, or a post-quantum type with the legacy PKCS#12 form.
    """
    if len(key_types) > 2:
        raise click.UsageError("--key-type at most twice: the signing type, then the"
                               " encryption type")
    if not key_types:
        sign, encrypt = DEFAULT_SIGN_KEY, DEFAULT_ENCRYPT_KEY
    elif len(key_types) == 1:
        sign = encrypt = SubscriberKeyType(key_types[0])
    else:
        if purpose != "dual":
            raise click.UsageError("two --key-type values are for --purpose dual (the signing"
                                   " type, then the encryption type)")
        sign, encrypt = SubscriberKeyType(key_types[0]), SubscriberKeyType(key_types[1])
    try:
        check_key_types(purpose, sign, encrypt)
    except CAError as exc:
        raise click.UsageError(str(exc)) from None
    used = {sign} if purpose == "sign" else {encrypt} if purpose in ("encrypt", "both") \
        else {sign, encrypt}
    if legacy_p12 and any(k.value.startswith("ml-") for k in used):
        raise click.UsageError("--legacy-p12 cannot carry ML-DSA or ML-KEM keys (the clients"
                               " that need it know no post-quantum key)")
    return sign, encrypt


@click.group()
def ca() -> None:
    """Our own certificate authority: issue, renew, revoke, publish."""


@ca.command("init")
@click.option("--organization", "--org", required=True, help="Organisation name (O=).")
@click.option("--base-url", required=True,
              help="Public http:// base of the CRL, OCSP and caIssuers URLs.")
@click.option("--key-type", type=click.Choice([k.value for k in CAKeyType]),
              default=CAKeyType.P384.value, show_default=True,
              help="Root, issuing and OCSP keys (ml-dsa-65, ml-dsa-87: a post-quantum CA,"
                   " which only post-quantum-aware clients can validate).")
@click.option("--country", help="Two-letter country code (C=).")
@click.option("--organization-identifier",
              help="Registration reference, e.g. NTRGB-12345678 (sponsored/organization"
                   " profiles).")
@click.option("--profile", "default_profile", type=click.Choice(sorted(PROFILES)),
              help="Default subscriber profile [sponsored-strict with an organization"
                   " identifier, else mailbox-strict].")
@click.option("--pkcs11-module", type=click.Path(dir_okay=False, exists=True),
              help="Generate the issuing key in this PKCS#11 module's token.")
@click.option("--token-label", default="smimekit", show_default=True)
@click.option("--key-label", default="smimekit-issuing", show_default=True)
@ca_options
def init(organization: str, base_url: str, key_type: str, country: str | None,
         organization_identifier: str | None, default_profile: str | None,
         pkcs11_module: str | None, token_label: str, key_label: str,
         passphrase_file: str | None, passphrase_env: str | None, pin_file: str | None) -> None:
    """Create the root, the issuing CA, the OCSP signer and the key vault.

    Every input is checked before anything is created: a refusal leaves no directory,
    database or key behind.
    """
    globals_ = cli_globals()
    data_dir = globals_.data_dir
    home = CAHome(data_dir)
    if home.exists():
        raise CliError(f"a CA exists already in {home.path}")
    profile = default_profile or ("sponsored-strict" if organization_identifier
                                  else "mailbox-strict")
    ref = (Pkcs11Ref(str(Path(pkcs11_module).resolve()), token_label, key_label)
           if pkcs11_module else None)
    config = CAConfig(organization=organization, base_url=base_url, key_type=key_type,
                      country=country, organization_identifier=organization_identifier,
                      default_profile=profile, pkcs11=ref,
                      store=StoreLocation.of(globals_.database_url, data_dir))
    config.check()
    _check_writable(data_dir)
    pin = _pin(pin_file) if ref else None
    if ref and not pin:
        raise CliError("a PKCS#11 token needs its PIN: --pin-file or SMIMEKIT_PKCS11_PIN")
    passphrase = _new_ca_passphrase(passphrase_file, passphrase_env)

    created = _Created.before(data_dir)
    try:
        store = open_store(create=True)
        try:
            signer = None
            if ref is not None:
                assert pin is not None
                from smimekit.keys.pkcs11 import generate_ca_key

                signer = generate_ca_key(ref.module, token_label, key_label, pin, key_type)
            unlocked = home.create(config, passphrase, issuing_signer=signer)
            store.use_audit_key(home.audit_key())  # ca.init is the first anchored row
            cax = CertificateAuthority(unlocked, store, actor=cli_actor())
            with store.transaction():
                store.add_certificate(unlocked.authority.root, "ca-root")
                store.add_certificate(unlocked.authority.cert, "ca-issuing")
                store.audit(cax.actor, "ca.init", organization, {
                    "root": cax.issuer_fingerprint, "key_type": key_type,
                    "pkcs11": bool(ref), "profile": profile})
                cax.publish_crl()
        finally:
            store.close()
    except BaseException:
        created.undo()
        raise
    click.echo(f"created the CA for {organization} in {home.path}")
    click.echo(f"  root:    {display_name(unlocked.authority.root.subject)}")
    click.echo(f"  issuing: {display_name(unlocked.authority.cert.subject)}"
               + (" (key in PKCS#11 token)" if ref else ""))
    click.echo("  next: 'smimekit ca chain -o ca.pem' for clients; 'smimekit ca export-root"
               " --remove' to take the root key offline")


@ca.command("issue")
@click.option("--email", required=True, help="The mailbox address.")
@click.option("--name", help="The person's name ('Given Surname').")
@click.option("--csr", "csr_path", type=click.Path(dir_okay=False, exists=True),
              help="Certify the key in this PKCS#10 request instead of generating one.")
@click.option("--profile", type=click.Choice(sorted(PROFILES)),
              help="Certificate profile [the CA's default].")
@click.option("--purpose", type=click.Choice(["sign", "encrypt", "both", "dual"]),
              help="dual: a signing and an encryption certificate [dual; with --csr:"
                   " required].")
@click.option("--key-type", "key_types", multiple=True,
              type=click.Choice([k.value for k in SubscriberKeyType]), help=KEY_TYPE_HELP)
@click.option("--validity", default="730d", show_default=True,
              help="Validity, e.g. 365d (at most 825d).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=".",
              show_default=True, help="Where to write the files.")
@click.option("--legacy-p12", is_flag=True,
              help="PKCS#12 with 3DES/SHA-1 for older clients (gpgsm, old Outlook/macOS).")
@click.option("--mobileconfig", is_flag=True, help="Also write an Apple .mobileconfig.")
@click.option("--p12-passphrase-file", type=click.Path(dir_okay=False),
              help="Protect the PKCS#12 with this passphrase [a random one, printed once].")
@click.option("--replace", is_flag=True,
              help="Issue even if the address holds a live certificate for the purpose.")
@click.option("--identity-check", "identity_check", metavar="TEXT", default=None,
              help="How the holder's identity was checked (e.g. 'passport seen by HR,"
                   " ticket 4411'): kept in the issuance's audit row for 'smimekit assess'.")
@ca_options
def issue(email: str, name: str | None, csr_path: str | None, profile: str | None,
          purpose: str | None, key_types: tuple[str, ...], validity: str, out_dir: str,
          legacy_p12: bool, mobileconfig: bool, p12_passphrase_file: str | None,
          replace: bool, identity_check: str | None, passphrase_file: str | None,
          passphrase_env: str | None, pin_file: str | None) -> None:
    """Issue certificates for one person, from a CSR or with generated keys."""
    period = parse_duration(validity)
    with open_ca(passphrase_file, passphrase_env, pin_file) as cax, kept_current(cax) as changed:
        if csr_path and (purpose is None or purpose == "dual"):
            raise click.UsageError("with --csr, choose --purpose sign, encrypt or both")
        if csr_path and key_types:
            raise click.UsageError("--key-type is for generated keys, not with --csr")
        sign_kind, encrypt_kind = key_kinds(key_types, purpose or "dual",
                                            legacy_p12=legacy_p12)
        # every input checked, and the folder made, before anything is issued: keys made
        # here go nowhere else, and a refusal leaves nothing behind
        checked_email(email)
        identity_detail(identity_check)
        p12_pass = (Path(p12_passphrase_file).read_text().strip() if p12_passphrase_file
                    else new_passphrase())
        made = [p for p in (Path(out_dir), *Path(out_dir).parents) if not p.exists()]
        output_dir(out_dir)
        try:
            if csr_path:
                assert purpose is not None
                issuance = cax.issue_csr(Path(csr_path).read_bytes(), email=email,
                                         purpose=purpose, name=name, profile=profile,
                                         validity=period, replace=replace,
                                         identity_check=identity_check)
            else:
                issuance = cax.issue_generated(
                    email, purpose=purpose or "dual", name=name, profile=profile,
                    validity=period, sign_key=sign_kind, encrypt_key=encrypt_kind,
                    replace=replace, identity_check=identity_check)
        except BaseException:
            # refused (a live certificate, a locked store): leave no folder behind
            for folder in made:  # deepest first; only the empty folders made above
                try:
                    folder.rmdir()
                except OSError:
                    break
            raise
        changed.append(issuance.email)
        written = write_bundle(cax, issuance, Path(out_dir), passphrase=p12_pass,
                               legacy=legacy_p12, mobileconfig=mobileconfig,
                               generated=p12_passphrase_file is None)
    for item in issuance.items:
        click.echo(f"issued {item.purpose.value} certificate {item.record.serial} for"
                   f" {issuance.email}, valid until {item.record.not_after:%Y-%m-%d}")
    for path in written:
        click.echo(f"  wrote {path}")
    if any(i.key is not None for i in issuance.items) and not p12_passphrase_file:
        click.echo(f"PKCS#12 passphrase (give it to {issuance.email} separately): {p12_pass}")


@ca.command("chain")
@click.option("-o", "--output", "output", help="Write here (default: standard output).")
@click.option("--root-only", is_flag=True, help="Only the root (the trust anchor).")
def chain(output: str | None, root_only: bool) -> None:
    """The CA certificates as PEM: issuing CA then root."""
    home = CAHome(ca_data_dir())
    certs = [home.certificate("root")] if root_only else [home.certificate("issuing"),
                                                           home.certificate("root")]
    data = pem_chain(certs)
    if output in (None, "-"):
        click.echo(data.decode(), nl=False)
    else:
        write_output(output, data, mode=0o644)


@ca.command("revoke")
@click.argument("serial", required=False)
@click.option("--email", help="Revoke every live certificate of this address.")
@click.option("--reason", default="unspecified", show_default=True,
              help="unspecified, key-compromise, affiliation-changed, superseded,"
                   " cessation-of-operation or privilege-withdrawn.")
@ca_options
def revoke(serial: str | None, email: str | None, reason: str, passphrase_file: str | None,
           passphrase_env: str | None, pin_file: str | None) -> None:
    """Revoke by SERIAL (hex) or --email, and publish a new CRL."""
    if (serial is None) == (email is None):
        raise click.UsageError("give a SERIAL or --email, not both")
    with open_ca(passphrase_file, passphrase_env, pin_file) as cax, kept_current(cax) as changed:
        done = cax.revoke(serial=serial, email=email, reason=reason)
        changed += [record.email for record in done]
    for record in done:
        click.echo(f"revoked {record.purpose} certificate {record.serial} of {record.email}"
                   f" ({reason})")


@ca.command("crl")
@click.option("-o", "--output", "output", help="Write the CRL (DER) here.")
@click.option("--pem", is_flag=True, help="Write PEM instead of DER.")
@ca_options
def crl(output: str | None, pem: bool, passphrase_file: str | None,
        passphrase_env: str | None, pin_file: str | None) -> None:
    """Publish a fresh CRL now (run it from cron as well: CRLs expire after 7 days).

    Also renews the delegated OCSP signer when it expires within 30 days (that needs the
    issuing key, which a plain 'ca serve' does not hold)."""
    with open_ca(passphrase_file, passphrase_env, pin_file) as cax:
        built = cax.publish_crl()
        renewed = _renew_ocsp_signer_if_due(cax, passphrase_file, passphrase_env)
    if renewed is not None:
        until = renewed.ocsp_cert.not_valid_after_utc
        click.echo(f"renewed the OCSP signer until {until:%Y-%m-%d}: copy ocsp.pem and"
                   " ocsp.p12 to the serving nodes and restart them", err=True)
    number = built.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    click.echo(f"published CRL number {number} with {len(built)} entries, next update"
               f" {built.next_update_utc:%Y-%m-%d %H:%M} UTC", err=output in (None, "-"))
    if output:
        data = built.public_bytes(serialization.Encoding.PEM if pem
                                  else serialization.Encoding.DER)
        write_output(output, data, mode=0o644)


@ca.command("root-crl")
@click.option("-o", "--output", "output", help="Also write the CRL (DER) here.")
@ca_options
def root_crl(output: str | None, passphrase_file: str | None, passphrase_env: str | None,
             pin_file: str | None) -> None:
    """Re-sign the root's CRL (needs the root key: run it within 12 months of the last)."""
    home = CAHome(cli_globals().data_dir)
    with open_ca(passphrase_file, passphrase_env, pin_file, root=True) as cax:
        built = home.publish_root_crl(cax.ca)
        cax.store.audit(cax.actor, "ca.root-crl", cax.ca.config.organization, {})
    click.echo(f"root CRL re-signed, next update {built.next_update_utc:%Y-%m-%d}")
    if output:
        write_output(output, built.public_bytes(serialization.Encoding.DER), mode=0o644)


OCSP_SIGNER_RENEW_BEFORE = dt.timedelta(days=30)


def _renew_ocsp_signer_if_due(cax: CertificateAuthority, passphrase_file: str | None,
                              passphrase_env: str | None, *,
                              passphrase: bytes | None = None) -> UnlockedCA | None:
    """A new OCSP signer (needs the issuing key) when the current one expires within 30
    days; None when it does not. ``passphrase``: the one read already."""
    unlocked = cax.ca
    if unlocked.ocsp_cert.not_valid_after_utc - dt.datetime.now(dt.UTC) \
            >= OCSP_SIGNER_RENEW_BEFORE:
        return None
    home = CAHome(cli_globals().data_dir)
    if passphrase is None:
        passphrase = _ca_passphrase(passphrase_file, passphrase_env)
    renewed = home.replace_ocsp_signer(unlocked, passphrase)
    cax.store.audit(cax.actor, "ca.ocsp-signer", renewed.config.organization, {
        "not_after": renewed.ocsp_cert.not_valid_after_utc.isoformat()})
    return renewed


@ca.command("export-root")
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False),
              help="Where to write the (still encrypted) root key.")
@click.option("--remove", is_flag=True, help="Remove it from this machine afterwards.")
def export_root(output: str, remove: bool) -> None:
    """Take the root key offline: copy it out (encrypted) and optionally remove it here."""
    home = CAHome(ca_data_dir())
    store = open_store()  # first: the CA's own store, or nothing is exported
    try:
        home.export_root(Path(output), remove=remove)
        store.audit(cli_actor(), "ca.export-root", home.config().organization,
                    {"removed": remove})
    finally:
        store.close()
    click.echo(f"root key written to {output}" + ("; removed from this machine" if remove
                                                   else ""))


@ca.command("import-root")
@click.argument("source", type=click.Path(dir_okay=False, exists=True))
@ca_options
def import_root(source: str, passphrase_file: str | None, passphrase_env: str | None,
                pin_file: str | None) -> None:
    """Bring an exported root key back (e.g. to re-sign the issuing CA)."""
    home = CAHome(cli_globals().data_dir)
    home.import_root(Path(source), _ca_passphrase(passphrase_file, passphrase_env))
    click.echo("root key is back on this machine")


@ca.command("history")
@click.option("--email", required=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=".",
              show_default=True)
@click.option("--legacy-p12", is_flag=True, help="3DES/SHA-1 PKCS#12 for older clients.")
@click.option("--p12-passphrase-file", type=click.Path(dir_okay=False))
@ca_options
def history(email: str, out_dir: str, legacy_p12: bool, p12_passphrase_file: str | None,
            passphrase_file: str | None, passphrase_env: str | None,
            pin_file: str | None) -> None:
    """Export a person's encryption key history as one PKCS#12 (lost device, new client)."""
    with open_ca(passphrase_file, passphrase_env, pin_file) as cax:
        output_dir(out_dir)
        keys = cax.key_history(email)
        if not keys:
            raise CAError(f"no encryption keys kept for {email}")
        p12_pass = (Path(p12_passphrase_file).read_text().strip() if p12_passphrase_file
                    else new_passphrase())
        chain_certs = [cax.ca.authority.cert, cax.ca.authority.root]
        out = private_dir(Path(out_dir))
        targets: list[Path] = []
        if legacy_p12:  # gpgsm takes no key from a legacy file holding several
            for key, cert in keys:
                target = out / (f"{_safe_name(email)}.history."
                                f"{format(cert.serial_number, 'x')[:16]}.p12")
                atomic_write(target, pkcs12_bytes(
                    key, cert, chain_certs, p12_pass.encode(), legacy=True,
                    friendly_name=f"{email} (until {cert.not_valid_after_utc:%Y-%m-%d})"))
                targets.append(target)
        else:
            newest_key, newest_cert = keys[-1]
            target = out / f"{_safe_name(email)}.history.p12"
            atomic_write(target, pkcs12_bytes(
                newest_key, newest_cert, chain_certs, p12_pass.encode(),
                friendly_name=f"{email} (encrypt)", extra=keys[:-1],
                iterations=ITERATIONS if p12_passphrase_file else RANDOM_PASSPHRASE_ITERATIONS))
            targets.append(target)
        cax.store.audit(cax.actor, "ca.export-history", email, {"keys": len(keys)})
    click.echo(f"wrote {len(keys)} encryption key(s) of {email} to "
               + ", ".join(str(t) for t in targets))
    if not p12_passphrase_file:
        click.echo(f"PKCS#12 passphrase (give it to {email} separately): {p12_pass}")
