"""Message commands: sign, verify, encrypt, decrypt, sign-encrypt, decrypt-verify."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from cryptography import x509

from smimekit import api
from smimekit.cli import local
from smimekit.cli.common import (
    CliError,
    Globals,
    content_type_option,
    io_options,
    load_cert_files,
    load_decryption_keys,
    load_key_and_cert,
    message_input,
    open_store,
    passphrase_from,
    passphrase_options,
    read_input,
    trust_anchors,
    write_output,
)
from smimekit.cms.algorithms import Cipher, Digest
from smimekit.smime.hp import HeaderConfidentiality
from smimekit.validation.assess import SIGNING_TIME
from smimekit.validation.intermediates import IntermediateCache
from smimekit.validation.recipients import can_receive_mail
from smimekit.validation.revinfo import load_crl, load_ocsp_response
from smimekit.validation.revocation import RevocationOptions, RevocationPolicy

if TYPE_CHECKING:
    from smimekit.keys.pkcs12 import KeyPair

CIPHERS = [c.value for c in Cipher]
DIGESTS = [d.value for d in Digest]


F = TypeVar("F", bound=Callable[..., Any])


def _options(
    *options: Callable[[Any], Any], then: Callable[[Any], Any] | None = None
) -> Callable[[F], F]:
    """One decorator applying click options in the order listed (then ``then``)."""

    def apply(func: F) -> F:
        out: Any = func
        for option in reversed(options):
            out = option(out)
        return then(out) if then is not None else out

    return apply


# Shared by verify (signers, intermediates) and encrypt (the recipients' chains).
_TRUST = click.option(
    "--trust",
    "trust_paths",
    multiple=True,
    metavar="PEM",
    help="Trust anchors for this run, besides the trust store (repeatable).",
)
_CERTS = click.option(
    "--certs",
    "cert_paths",
    multiple=True,
    metavar="PEM",
    help="Extra certificates: signers and intermediates (repeatable).",
)

_sign_options = _options(
    click.option(
        "--key",
        "key_path",
        required=True,
        metavar="KEY",
        help="Signing key: PEM, DER, encrypted PKCS#8 or PKCS#12.",
    ),
    click.option(
        "--cert",
        "cert_path",
        metavar="CERT",
        help="Signing certificate (taken from the PKCS#12 when --key is one).",
    ),
    click.option(
        "--chain",
        "chain_paths",
        multiple=True,
        metavar="PEM",
        help="Intermediate certificates to include (repeatable).",
    ),
    click.option(
        "--opaque", is_flag=True, help="Opaque application/pkcs7-mime instead of multipart/signed."
    ),
    click.option("--digest", type=click.Choice(DIGESTS), default="sha256", show_default=True),
    click.option("--pss", is_flag=True, help="RSASSA-PSS instead of PKCS#1 v1.5 (RSA keys)."),
    click.option("--use-ski", is_flag=True, help="Identify the signer by subject key identifier."),
    click.option(
        "--encryption-cert",
        "--self-cert",
        "encryption_cert_path",
        metavar="CERT",
        help="The sender's encryption certificate, when --cert only signs (dual keys):"
        " announced in the signature (RFC 8551 SMIMEEncryptionKeyPreference) and included,"
        " so recipients can answer encrypted; sign-encrypt also encrypts the sent copy to"
        " it. Default: the newest one the data directory's CA issued to the sender.",
    ),
    then=passphrase_options,
)

_encrypt_options = _options(
    click.option(
        "--to",
        "to_paths",
        multiple=True,
        required=True,
        metavar="CERT|ADDR",
        help="Recipient certificate file, or an address (has '@', names no file) whose"
        " certificate the directory sources find (smimekit lookup; repeatable).",
    ),
    click.option("--cipher", type=click.Choice(CIPHERS), default="aes256-gcm", show_default=True),
    click.option("--oaep", is_flag=True, help="RSAES-OAEP key transport for RSA recipients."),
    _TRUST,
    _CERTS,
    click.option(
        "--no-recipient-check",
        is_flag=True,
        help="Encrypt even to expired, unfit, revoked or untrusted certificates.",
    ),
    click.option(
        "--aia/--no-aia",
        "recipient_aia",
        default=True,
        show_default=True,
        help="Fetch intermediate CAs of a recipient's chain from the certificates' AIA"
        " caIssuers URLs (http, at most 4, 5 s each). Never with --revocation offline."
        " DATA-DIR/intermediates and the data directory's own CA are used either way.",
    ),
)

_NO_HEADER_PROTECTION = click.option(
    "--no-header-protection",
    is_flag=True,
    help="Do not copy the header fields into the protected part (RFC 9788 header"
    " protection, on by default): the signature then covers no header field, and"
    " encryption hides none.",
)

_hp_options = _options(
    _NO_HEADER_PROTECTION,
    click.option(
        "--hcp",
        type=click.Choice([p.value for p in HeaderConfidentiality]),
        default=None,
        help="Header confidentiality policy (RFC 9788 3.2): what the unencrypted outside"
        " still says. baseline (default): Subject [...], no Keywords or Comments; shy: also"
        " no display names, Date in UTC; none: every field stays readable outside.",
    ),
    click.option(
        "--legacy-display",
        is_flag=True,
        help="Also write the fields the policy hides (e.g. the real Subject) at the top of"
        " the text, for mail clients that do not read protected headers (RFC 9788).",
    ),
)


def _header_protection(
    no_header_protection: bool, hcp: str | None, legacy_display: bool
) -> dict[str, Any]:
    """The header-protection keyword arguments of api.encrypt / api.sign_encrypt."""
    if no_header_protection and (hcp is not None or legacy_display):
        raise click.UsageError(
            "--hcp and --legacy-display choose how headers are protected: they cannot go"
            " with --no-header-protection"
        )
    return {
        "header_protection": not no_header_protection,
        "hcp": HeaderConfidentiality(hcp or HeaderConfidentiality.BASELINE),
        "legacy_display": legacy_display,
    }


_verify_options = _options(
    _TRUST,
    click.option(
        "--at",
        "at_text",
        metavar="ISO8601",
        help="Validate at this ISO 8601 time, or at each signature's own signing"
        " time with 'signing-time' (archives).",
    ),
    click.option(
        "--report", "report_path", metavar="FILE", help="Write the verdict as JSON to FILE."
    ),
    _CERTS,
    click.option(
        "--aia/--no-aia",
        default=True,
        show_default=True,
        help="Fetch intermediate CAs the message lacks from the certificates' AIA"
        " caIssuers URLs (http, at most 4, 5 s each; the sender may notice the"
        " fetch). Never with --revocation offline. Intermediates of chains that"
        " validate are kept in DATA-DIR/intermediates and used either way.",
    ),
)

_decrypt_options = _options(
    click.option(
        "--key",
        "key_paths",
        multiple=True,
        required=True,
        metavar="KEY",
        help="Private key: PEM, DER, encrypted PKCS#8 or PKCS#12 (repeatable). Every key"
        " of a PKCS#12 file is tried, older ones of a key history too; the passphrase"
        " options apply to each file.",
    ),
    click.option(
        "--cert",
        "cert_path",
        metavar="CERT",
        help="The certificate of a --key that has none (picks the matching recipient;"
        " a PKCS#12 file brings its own).",
    ),
    then=passphrase_options,
)

_legacy = click.option(
    "--allow-legacy",
    is_flag=True,
    help="Read 3DES/RC2/SHA-1/short-key material (archives). Never used for writing.",
)


def _warn(text: str) -> None:
    click.echo(f"smimekit: warning: {text}", err=True)


def _local_ca_chain() -> list[x509.Certificate]:
    """The data directory's own CA certificates: candidates for every path (as --certs)."""
    globals_ = click.get_current_context().find_object(Globals)
    return local.local_ca_chain(globals_.data_dir) if globals_ is not None else []


def _sender_encryption_cert(
    cert: x509.Certificate, encryption_cert_path: str | None
) -> x509.Certificate | None:
    """--encryption-cert, else (for a signing-only certificate) what our CA issued."""
    if encryption_cert_path is not None:
        return load_cert_files((encryption_cert_path,))[0]
    globals_ = click.get_current_context().find_object(Globals)
    if globals_ is None or can_receive_mail(cert) or not local.has_ca(globals_.data_dir):
        return None
    store = open_store()
    try:
        return local.issued_encryption_cert(cert, store)
    finally:
        store.close()


def _intermediate_cache() -> IntermediateCache | None:
    """The intermediates cache of the data directory (None outside the CLI group)."""
    globals_ = click.get_current_context().find_object(Globals)
    return IntermediateCache.in_data_dir(globals_.data_dir) if globals_ is not None else None


def _at(text: str | None) -> dt.datetime | str | None:
    if text is None:
        return None
    if text == SIGNING_TIME:
        return SIGNING_TIME
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"not an ISO 8601 time: {text!r}", param_hint="--at") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _signer(
    key_path: str,
    cert_path: str | None,
    chain_paths: tuple[str, ...],
    passphrase_file: str | None,
    passphrase_env: str | None,
) -> tuple[Any, Any, list[Any]]:
    key, cert, extra = load_key_and_cert(
        key_path, cert_path, passphrase_from(passphrase_file, passphrase_env)
    )
    if cert is None:
        raise CliError("--cert is required unless --key is a PKCS#12 file holding it")
    return key, cert, extra + load_cert_files(chain_paths)


def _finish_verdict(result: api.Verified, report_path: str | None, output: str | None) -> None:
    verdict = result.verdict
    if report_path:
        write_output(report_path, verdict.to_json().encode() + b"\n")
    # One line on stderr either way (the CLI contract); warnings ride along on it.
    line = verdict.summary()
    if verdict.warnings:
        line += " -- warnings: " + "; ".join(verdict.warnings)
    if verdict.valid:
        write_output(output, result.content)
        click.echo(f"smimekit: {line}", err=True)
        return
    raise CliError(line)


def _revocation_options(func: Any) -> Any:
    """--revocation, --crl, --ocsp-response, --revocation-cache/-timeout -> ``revocation``."""

    @functools.wraps(func)
    def wrapper(
        *args: Any,
        revocation_policy: str,
        crl_paths: tuple[str, ...],
        ocsp_paths: tuple[str, ...],
        revocation_cache: str | None,
        revocation_timeout: float,
        **kwargs: Any,
    ) -> Any:
        kwargs["revocation"] = _revocation(
            revocation_policy,
            crl_paths,
            ocsp_paths,
            revocation_cache,
            revocation_timeout,
            kwargs.get("allow_legacy", False),
        )
        return func(*args, **kwargs)

    return _options(
        click.option(
            "--revocation",
            "revocation_policy",
            default="soft",
            show_default=True,
            type=click.Choice([p.value for p in RevocationPolicy]),
            help="hard: no fresh answer fails; soft: only revoked fails; offline:"
            " never touch the network (cached and given CRLs/OCSP only).",
        ),
        click.option(
            "--crl",
            "crl_paths",
            multiple=True,
            metavar="FILE",
            help="A CRL to use (DER or PEM; full or delta; repeatable).",
        ),
        click.option(
            "--ocsp-response",
            "ocsp_paths",
            multiple=True,
            metavar="FILE",
            help="A saved OCSP response to use (DER; repeatable).",
        ),
        click.option(
            "--revocation-cache",
            metavar="DIR",
            help="Where CRLs and OCSP answers are cached until their nextUpdate"
            " (default: DATA-DIR/revocation-cache).",
        ),
        click.option(
            "--revocation-timeout",
            type=float,
            default=10.0,
            show_default=True,
            metavar="SECONDS",
            help="Network timeout for CRL and OCSP fetches.",
        ),
    )(wrapper)


def _revocation(
    policy: str,
    crl_paths: tuple[str, ...],
    ocsp_paths: tuple[str, ...],
    cache: str | None,
    timeout: float,
    allow_legacy: bool,
) -> RevocationOptions:
    crls, responses = [], []
    for path in crl_paths:
        crls.append(load_crl(_read_file(path, "--crl")))
    for path in ocsp_paths:
        data = _read_file(path, "--ocsp-response")
        load_ocsp_response(data)
        responses.append(data)
    if cache is None:
        globals_ = click.get_current_context().find_object(Globals)
        cache_dir = globals_.data_dir / "revocation-cache" if globals_ else None
    else:
        cache_dir = Path(cache)
    return RevocationOptions(
        policy=RevocationPolicy(policy),
        crls=crls,
        ocsp_responses=responses,
        cache_dir=cache_dir,
        timeout=timeout,
        allow_legacy=allow_legacy,
    )


def _read_file(path: str, option: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise click.BadParameter(
            f"cannot read {path}: {exc.strerror or exc}", param_hint=option
        ) from None


@click.command()
@_sign_options
@_NO_HEADER_PROTECTION
@content_type_option
@io_options
def sign(
    key_path: str,
    cert_path: str | None,
    chain_paths: tuple[str, ...],
    opaque: bool,
    digest: str,
    pss: bool,
    use_ski: bool,
    encryption_cert_path: str | None,
    passphrase_file: str | None,
    passphrase_env: str | None,
    no_header_protection: bool,
    input_path: str | None,
    output: str | None,
) -> None:
    """Sign a message (multipart/signed, or opaque with --opaque)."""
    key, cert, chain = _signer(key_path, cert_path, chain_paths, passphrase_file, passphrase_env)
    own = _sender_encryption_cert(cert, encryption_cert_path)
    data = message_input(input_path)
    out = api.sign(
        data,
        key,
        cert,
        chain=chain,
        opaque=opaque,
        digest=Digest(digest),
        pss=pss,
        use_ski=use_ski,
        encryption_cert=own,
        header_protection=not no_header_protection,
    )
    write_output(output, out)


@click.command()
@_verify_options
@_legacy
@_revocation_options
@io_options
def verify(
    trust_paths: tuple[str, ...],
    at_text: str | None,
    report_path: str | None,
    cert_paths: tuple[str, ...],
    aia: bool,
    allow_legacy: bool,
    revocation: RevocationOptions,
    input_path: str | None,
    output: str | None,
) -> None:
    """Verify a signed message; write its content to OUT when every check passes."""
    _open(
        [],
        trust_paths,
        _at(at_text),
        report_path,
        cert_paths,
        aia,
        allow_legacy,
        revocation,
        input_path,
        output,
    )


@click.command()
@_encrypt_options
@_hp_options
@_revocation_options
@content_type_option
@io_options
def encrypt(
    to_paths: tuple[str, ...],
    cipher: str,
    oaep: bool,
    trust_paths: tuple[str, ...],
    cert_paths: tuple[str, ...],
    no_recipient_check: bool,
    recipient_aia: bool,
    no_header_protection: bool,
    hcp: str | None,
    legacy_display: bool,
    revocation: RevocationOptions,
    input_path: str | None,
    output: str | None,
) -> None:
    """Encrypt a message to one or more recipients (each certificate is checked first)."""
    protection = _header_protection(no_header_protection, hcp, legacy_display)
    recipients, check = _recipients(
        to_paths, trust_paths, cert_paths, no_recipient_check, recipient_aia, revocation)
    data = message_input(input_path)
    write_output(
        output,
        api.encrypt(data, recipients, cipher=Cipher(cipher), oaep=oaep, **check, **protection),
    )


def _recipients(
    to_paths: tuple[str, ...],
    trust_paths: tuple[str, ...],
    cert_paths: tuple[str, ...],
    disabled: bool,
    aia: bool,
    revocation: RevocationOptions,
) -> tuple[list[x509.Certificate], dict[str, Any]]:
    """The --to certificates (files as given; addresses through the resolver, which always
    validates what it chooses) and the keyword arguments of the recipient check. Without an
    address this is exactly load_cert_files + _recipient_check."""
    from smimekit.cli.lookup import is_address  # light: the resolver is imported on use

    addresses = [t for t in to_paths if is_address(t)]
    if not addresses:
        check = _recipient_check(trust_paths, cert_paths, disabled, aia)
        check["revocation"] = revocation
        return load_cert_files(to_paths), check
    from smimekit.cli.lookup import resolve_recipients

    files = {t: load_cert_files((t,)) for t in to_paths if t not in addresses}
    found, chains, anchors, checked = resolve_recipients(
        addresses, trust_paths=trust_paths, cert_paths=cert_paths, revocation=revocation,
        aia=aia)
    by_address = dict(zip(addresses, found, strict=True))
    recipients: list[x509.Certificate] = []
    for to in to_paths:
        recipients += [by_address[to]] if to in by_address else files[to]
    check = _recipient_check(trust_paths, cert_paths, disabled, aia, anchors=anchors)
    check["revocation"] = checked
    if "intermediates" in check:
        check["intermediates"] += [c for c in chains if c not in check["intermediates"]]
    return recipients, check


def _recipient_check(
    trust_paths: tuple[str, ...], cert_paths: tuple[str, ...], disabled: bool, aia: bool,
    anchors: list[x509.Certificate] | None = None,
) -> dict[str, Any]:
    """Keyword arguments for the recipient check of api.encrypt / api.sign_encrypt: chains
    completed as verify completes them (--certs, the data directory's CA and intermediates
    cache, AIA), warnings on stderr. ``anchors``: those a lookup used (the trust store,
    --trust and our CA's root), when some recipients were addresses."""
    if disabled:
        return {"check_recipients": False}
    if anchors is None:
        anchors = trust_anchors(trust_paths)
    if not anchors:
        click.echo(
            "smimekit: warning: no trust anchors (--trust or `smimekit trust add`):"
            " recipients checked for dates and key usage only",
            err=True,
        )
    given = load_cert_files(cert_paths)
    return {
        "trust": anchors or None,
        "intermediates": given + [c for c in _local_ca_chain() if c not in given],
        "intermediate_cache": _intermediate_cache(),
        "aia": aia,
        "on_warning": _warn,
    }


@click.command()
@_decrypt_options
@_legacy
@io_options
def decrypt(
    key_paths: tuple[str, ...],
    cert_path: str | None,
    passphrase_file: str | None,
    passphrase_env: str | None,
    allow_legacy: bool,
    input_path: str | None,
    output: str | None,
) -> None:
    """Decrypt a message (signed layers inside are kept for verify)."""
    keys = load_decryption_keys(
        key_paths, cert_path, passphrase_from(passphrase_file, passphrase_env)
    )
    data = read_input(input_path)
    result = api.decrypt(data, None, keys=keys, allow_legacy=allow_legacy)
    write_output(output, result.content)
    if result.partial:
        click.echo(
            "smimekit: warning: the encrypted part sat next to unencrypted parts; only"
            " the encrypted part was written (Efail protection)",
            err=True,
        )
    protection = result.header_protection
    if protection is not None and protection.disagreed:
        click.echo(
            "smimekit: warning: outer header fields differ from what the sender protected:"
            f" {', '.join(protection.disagreed)} (the protected ones were written)",
            err=True,
        )
    line = f"smimekit: decrypted ({result.cipher}, {result.recipient})"
    click.echo(line + (f"; {protection.summary()}" if protection else ""), err=True)


@click.command("sign-encrypt")
@_sign_options
@_encrypt_options
@click.option("--no-self", is_flag=True, help="Do not add the sender as a recipient.")
@_hp_options
@_revocation_options
@content_type_option
@io_options
def sign_encrypt(
    key_path: str,
    cert_path: str | None,
    chain_paths: tuple[str, ...],
    opaque: bool,
    digest: str,
    pss: bool,
    use_ski: bool,
    encryption_cert_path: str | None,
    passphrase_file: str | None,
    passphrase_env: str | None,
    to_paths: tuple[str, ...],
    cipher: str,
    oaep: bool,
    trust_paths: tuple[str, ...],
    cert_paths: tuple[str, ...],
    no_recipient_check: bool,
    recipient_aia: bool,
    no_self: bool,
    no_header_protection: bool,
    hcp: str | None,
    legacy_display: bool,
    revocation: RevocationOptions,
    input_path: str | None,
    output: str | None,
) -> None:
    """Sign, then encrypt (the sender can read the sent copy unless --no-self).

    A signing-only certificate (dual keys) needs the sender's encryption certificate for
    the sent copy: --self-cert, or the one the data directory's CA issued to the sender.
    """
    protection = _header_protection(no_header_protection, hcp, legacy_display)
    key, cert, chain = _signer(key_path, cert_path, chain_paths, passphrase_file, passphrase_env)
    own = _sender_encryption_cert(cert, encryption_cert_path)
    recipients, check = _recipients(
        to_paths, trust_paths, cert_paths, no_recipient_check, recipient_aia, revocation)
    data = message_input(input_path)
    out = api.sign_encrypt(
        data,
        key,
        cert,
        recipients,
        chain=chain,
        opaque=opaque,
        digest=Digest(digest),
        pss=pss,
        use_ski=use_ski,
        cipher=Cipher(cipher),
        oaep=oaep,
        include_self=not no_self,
        self_copy_required=True,
        encryption_cert=own,
        **check,
        **protection,
    )
    write_output(output, out)


@click.command("decrypt-verify")
@_decrypt_options
@_verify_options
@_legacy
@_revocation_options
@io_options
def decrypt_verify(
    key_paths: tuple[str, ...],
    cert_path: str | None,
    passphrase_file: str | None,
    passphrase_env: str | None,
    trust_paths: tuple[str, ...],
    at_text: str | None,
    report_path: str | None,
    cert_paths: tuple[str, ...],
    aia: bool,
    allow_legacy: bool,
    revocation: RevocationOptions,
    input_path: str | None,
    output: str | None,
) -> None:
    """Decrypt, then verify; the verdict covers every layer."""
    when = _at(at_text)  # a bad --at is a usage error before any passphrase is asked
    keys = load_decryption_keys(
        key_paths, cert_path, passphrase_from(passphrase_file, passphrase_env)
    )
    _open(
        keys,
        trust_paths,
        when,
        report_path,
        cert_paths,
        aia,
        allow_legacy,
        revocation,
        input_path,
        output,
    )


def _open(
    keys: list[KeyPair],
    trust_paths: tuple[str, ...],
    at: str | dt.datetime | None,
    report_path: str | None,
    cert_paths: tuple[str, ...],
    aia: bool,
    allow_legacy: bool,
    revocation: RevocationOptions,
    input_path: str | None,
    output: str | None,
) -> None:
    """verify and decrypt-verify: unwrap every layer, judge, report (one line on stderr)."""
    trust = trust_anchors(trust_paths)
    extra = load_cert_files(cert_paths)
    extra += [c for c in _local_ca_chain() if c not in extra]
    data = read_input(input_path)
    result = api.decrypt_verify(
        data,
        None,
        keys=keys,
        trust=trust,
        at=at,
        extra_certs=extra,
        allow_legacy=allow_legacy,
        raise_for_failure=False,
        revocation=revocation,
        aia=aia,
        intermediates=_intermediate_cache(),
    )
    _finish_verdict(result, report_path, output)


COMMANDS = [sign, verify, encrypt, decrypt, sign_encrypt, decrypt_verify]
