"""The TOML configuration file (``--config FILE`` or ``SMIMEKIT_CONFIG``), as frozen dataclasses.

Every table and key is declared here; an unknown key, a value of the wrong type or a file
that is not TOML is a :class:`~smimekit.errors.ConfigError` naming the key (``directory.ldap.
bind_dn``). Command-line flags override the file. Relative paths in the file are taken
relative to the file's own folder. A missing file named by ``--config`` is an error; no
``--config`` at all gives :data:`EMPTY` (every section ``None``, every default).

::

    [directory]                       # certificate lookup (docs/directory.md)
    order = ["store", "harvested", "ldap", "smimea"]
    cache_seconds = 3600              # a lookup cached this long (never past notAfter)

    [directory.ldap]                  # lookup, and publishing when publish = true
    url = "ldap://ldap.example.org"   # ldap:// or ldaps://
    base_dn = "ou=people,dc=example,dc=org"
    bind_dn = "cn=smimekit,dc=example,dc=org"    # absent: anonymous bind
    password_file = "ldap.password"
    starttls = true
    ca_file = "ldap-ca.pem"           # trust for ldaps/StartTLS (default: the system's)
    timeout = 5
    publish = false                   # issue/renew/revoke keep the directory current

    [directory.dns]                   # SMIMEA (RFC 8162), DNSSEC validated
    resolvers = ["127.0.0.1"]
    port = 53
    timeout = 5
    trust_anchor_file = ""            # DS/DNSKEY of the root or the zone (test zones)

    [sync]                            # ca sync: the identity source
    max_removals = 0.05               # refuse to revoke more than this share (or count >= 1)
    [sync.ldap]
    url = "ldap://ad.example.org"
    base_dn = "ou=staff,dc=example,dc=org"
    bind_dn = "cn=reader,dc=example,dc=org"
    password_file = "ad.password"
    starttls = true
    ca_file = ""
    timeout = 10
    filter = "(&(objectClass=person)(mail=*))"
    [sync.ldap.attributes]            # identity field -> LDAP attribute
    id = "uid"
    email = "mail"
    name = "cn"

    [gateway]                         # smimekit gateway serve (docs/gateway.md)
    listen = "127.0.0.1:10025"        # the public door: Postfix's port 25 content filter
    listen_submission = "127.0.0.1:10027"   # the trusted door: submission (SASL) only
    next_hop = "127.0.0.1:10026"      # Postfix's re-injection smtpd
    attach = "after-queue"            # or "before-queue": Postfix's smtpd_proxy_filter
    internal_domains = ["example.org"]   # from these via the trusted door: outbound
    key_memo_seconds = 30             # held keys remembered this long (0: read every time)
    lookup_memo_seconds = 60          # certificates found remembered this long (0: off)
    harvest_memo_seconds = 60         # a signer harvested once this long (0: every message)
    processing_threads = 2            # work on messages at once per process (scan hook: 8)
    [gateway.policy]                  # every level: a key left out inherits from above
    encrypt = "if-possible"           # always | if-possible | never
    no_certificate = "clear"          # clear | bounce | pdf
    [gateway.domains."*.partner.example"]   # per domain (wildcards), then per user
    encrypt = "always"
    [gateway.users."ceo@example.org"]
    webmail = true
    [gateway.scan]                    # the scanning hook for decrypted content
    command = ["/usr/local/bin/scan-mail"]
    [[gateway.dlp]]                   # data-loss rules, each with its action
    name = "card numbers"
    patterns = ['\\b(?:\\d[ -]?){13,16}\\b']
    threshold = 1
    action = "require-encryption"
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from smimekit.errors import ConfigError

__all__ = [
    "EMPTY",
    "Config",
    "DirectoryConfig",
    "DlpRule",
    "DnsConfig",
    "GatewayConfig",
    "LdapConfig",
    "PolicyConfig",
    "ScanConfig",
    "SyncConfig",
    "SyncLdapConfig",
    "load_config",
]


@dataclass(frozen=True)
class LdapConfig:
    url: str
    base_dn: str
    bind_dn: str | None = None
    password_file: Path | None = None
    starttls: bool = False
    ca_file: Path | None = None
    timeout: float = 5.0
    publish: bool = False


@dataclass(frozen=True)
class DnsConfig:
    resolvers: tuple[str, ...] = ("127.0.0.1",)
    port: int = 53
    timeout: float = 5.0
    trust_anchor_file: Path | None = None


@dataclass(frozen=True)
class DirectoryConfig:
    order: tuple[str, ...] = ("store", "harvested", "ldap", "smimea")
    cache_seconds: int = 3600
    ldap: LdapConfig | None = None
    dns: DnsConfig | None = None


@dataclass(frozen=True)
class SyncLdapConfig:
    url: str
    base_dn: str
    bind_dn: str | None = None
    password_file: Path | None = None
    starttls: bool = False
    ca_file: Path | None = None
    timeout: float = 10.0
    filter: str = "(&(objectClass=person)(mail=*))"
    attributes: Mapping[str, str] = field(
        default_factory=lambda: {"id": "uid", "email": "mail", "name": "cn"})


@dataclass(frozen=True)
class SyncConfig:
    max_removals: float = 0.05
    ldap: SyncLdapConfig | None = None


EncryptMode = Literal["always", "if-possible", "never"]
NoCertificate = Literal["clear", "bounce", "pdf"]
MissingKey = Literal["defer", "send-unsigned"]
HeaderConfidentiality = Literal["baseline", "shy", "none"]
DlpAction = Literal["warn", "require-encryption", "quarantine", "reject"]


@dataclass(frozen=True)
class PolicyConfig:
    """One level of the gateway policy: global, a domain (wildcards) or a user.

    ``None`` inherits from the level above (built-in defaults <- ``[gateway.policy]`` <-
    ``[gateway.domains.D]`` <- ``[gateway.users.U]``); gateway/policy.py resolves them.
    """

    sign: bool | None = None
    """Outbound: sign with the sender's key held by the gateway."""
    organisation_signature: bool | None = None
    """Outbound: sign with the organisation's certificate when the sender has no key."""
    missing_key: MissingKey | None = None
    """Outbound: signing was asked for (``sign = true`` or ``organisation_signature = true``
    set in the configuration) and the gateway holds no key to sign with: ``defer`` (4xx, the
    mail waits in Postfix's queue for the key) or ``send-unsigned``. The built-in ``sign``
    (not set anywhere) signs when a key is held and never defers."""
    encrypt: EncryptMode | None = None
    """Outbound, per recipient."""
    no_certificate: NoCertificate | None = None
    """Outbound: what to do for a recipient without a usable certificate when encryption is
    required (by ``always``, the subject trigger or a DLP rule)."""
    subject_trigger: str | None = None
    """Outbound: a Subject containing this (e.g. ``[encrypt]``) requires encryption; the
    trigger is removed before sending."""
    hcp: HeaderConfidentiality | None = None
    """Outbound: RFC 9788 header confidentiality policy of encrypted mail."""
    decrypt: bool | None = None
    """Inbound: decrypt for users whose keys the gateway holds."""
    verify: bool | None = None
    """Inbound: verify signatures and add the result header."""
    harvest: bool | None = None
    """Inbound: keep valid signers' certificates for the directory."""
    webmail: bool | None = None
    """Inbound: the user reads mail in a web client: deliver decrypted over the internal hop
    (else the scanned content is re-encrypted to the user's current certificate)."""


@dataclass(frozen=True)
class ScanConfig:
    """The scanning hook decrypted content passes through (a command or a socket)."""

    command: tuple[str, ...] = ()
    """Run with the message on stdin: exit 0 clean, 1 infected (reject), other: failure."""
    socket: str | None = None
    """A clamd-style INSTREAM socket: ``unix:/path`` or ``tcp:host:port``."""
    timeout: float = field(default=30.0, metadata={"range": (0, True, 3600)})
    on_failure: Literal["defer", "pass"] = "defer"
    """Scanner down or silent: ``defer`` (4xx, Postfix retries) or ``pass`` (with a warning
    in the result header and the audit log)."""


@dataclass(frozen=True)
class DlpRule:
    """A data-loss rule: keywords and regular expressions counted in the clear content."""

    name: str
    keywords: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    threshold: int = field(default=1, metadata={"range": (1, False, 1_000_000)})
    """Matches (keywords and patterns together) needed to fire."""
    action: DlpAction = "warn"
    direction: Literal["outbound", "inbound", "both"] = "both"


@dataclass(frozen=True)
class GatewayConfig:
    listen: str = "127.0.0.1:10025"
    """The public door: mail here is from outside, whatever its sender claims."""
    listen_submission: str | None = None
    """The trusted door (Postfix's submission smtpd: SASL login, sender login maps): only
    mail that came here is signed with our users' keys and treated as outbound. None: no
    trusted door, nothing is outbound."""
    next_hop: str = "127.0.0.1:10026"
    attach: Literal["after-queue", "before-queue"] = "after-queue"
    """How Postfix hands mail over: ``after-queue`` (content_filter) or ``before-queue``
    (smtpd_proxy_filter); docs/gateway.md."""
    internal_domains: tuple[str, ...] = ()
    """Our domains (wildcards allowed): from one of them through the trusted door is
    outbound; to one of them from the public door is inbound."""
    key_passphrase_file: Path | None = None
    """The passphrase that opens the gateway's key store (keys held for users)."""
    pkcs11_module: Path | None = None
    """Keys held in a PKCS#11 token instead of the store."""
    token_label: str | None = None
    pin_file: Path | None = None
    result_header: str = "X-Smimekit-Result"
    max_message_size: int = field(default=50 * 1024 * 1024,
                                  metadata={"range": (1, False, 1024**3)})
    """Bytes; larger messages are refused (552) as they are read. At most 1 GiB: the gateway
    holds a message in memory several times over while it works on it."""
    max_recipients: int = field(default=1000, metadata={"range": (1, False, 100_000)})
    quarantine_dir: Path | None = None
    timeout: float = field(default=60.0, metadata={"range": (0, True, 3600)})
    """Seconds for the next hop to accept a message (then 4xx)."""
    workers: int = field(default=1, metadata={"range": (1, False, 64)})
    """Worker processes of one node (``gateway serve --workers``): 1 serves in the process
    itself; more fork that many, sharing the listening sockets (docs/gateway.md)."""
    processing_threads: int | None = field(default=None, metadata={"range": (1, False, 64)})
    """Threads of each gateway process that work on messages (policy, cryptography, store,
    the scanning hook): the SMTP of every connection runs on the event loop, the work on
    these. None: 2 (one waits for the store while the other computes; more threads all busy
    with cryptography contend for Python's GIL and cost CPU, docs/benchmarks.md), or 8 when
    a scanning hook is set (a message waiting for the scanner holds its thread)."""
    key_memo_seconds: float = field(default=30.0, metadata={"range": (0, False, 86_400)})
    """How long a node reuses which keys an address holds (retired or not) before asking the
    store again: a key retired on another node is used at most this late (0: every time)."""
    lookup_memo_seconds: float = field(default=60.0, metadata={"range": (0, False, 86_400)})
    """How long a node reuses a recipient's usable certificate (never past its notAfter): a
    certificate revoked or replaced in the directory is used at most this late (0: off)."""
    harvest_memo_seconds: float = field(default=60.0, metadata={"range": (0, False, 86_400)})
    """How long a node skips recording an inbound signer whose certificates it recorded
    already: the harvested row's "last seen" is at most this old (0: every message)."""
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    domains: Mapping[str, PolicyConfig] = field(default_factory=dict)
    users: Mapping[str, PolicyConfig] = field(default_factory=dict)
    scan: ScanConfig | None = None
    dlp: tuple[DlpRule, ...] = ()

    @property
    def threads(self) -> int:
        """The processing threads in effect (:attr:`processing_threads` or its default)."""
        if self.processing_threads is not None:
            return self.processing_threads
        return 8 if self.scan is not None else 2


@dataclass(frozen=True)
class Config:
    directory: DirectoryConfig | None = None
    sync: SyncConfig | None = None
    gateway: GatewayConfig | None = None
    path: Path | None = None
    """The file this came from (None: no file)."""


EMPTY = Config()

T = TypeVar("T")


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """The configuration in ``path``; :data:`EMPTY` when ``path`` is None.

    Raises:
        ConfigError: the file cannot be read, is not TOML, or holds an unknown key or a
            value of the wrong type.
    """
    if path is None:
        return EMPTY
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"the configuration file {file} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration file {file}:"
                          f" {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"the configuration file {file} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"the configuration file {file} is not valid TOML: {exc}") from None
    built = _build(Config, {k: v for k, v in data.items()}, "", file.parent,
                   skip=frozenset({"path"}))
    return dataclasses.replace(built, path=file)


def _build(cls: type[T], data: Any, where: str, base: Path,
           skip: frozenset[str] = frozenset()) -> T:
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'the file'} must be a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)  # type: ignore[arg-type]
              if f.name not in skip}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        known = ", ".join(sorted(fields))
        raise ConfigError(f"unknown key {_join(where, unknown[0])} in the configuration"
                          f" (known here: {known})")
    values: dict[str, Any] = {}
    for name in fields:
        key = _join(where, name)
        if name in data:
            values[name] = _value(hints[name], data[name], key, base)
            if "range" in fields[name].metadata:
                _in_range(values[name], fields[name].metadata["range"], key)
        elif (fields[name].default is dataclasses.MISSING
              and fields[name].default_factory is dataclasses.MISSING):
            raise ConfigError(f"{key} is required in the configuration")
    return cls(**values)


def _in_range(value: float, bounds: tuple[float, bool, float], key: str) -> None:
    """Refuse a number out of ``bounds`` (lowest, whether the lowest itself is excluded,
    highest), NaN and infinity included, naming the key (review 12 item 10: a zero size
    limit or recipient limit, a timeout of 0 or less must not start a gateway)."""
    low, exclusive, high = bounds
    fits = math.isfinite(value) and (value > low if exclusive else value >= low) \
        and value <= high
    if not fits:
        above = f"above {_number(low)}" if exclusive else f"at least {_number(low)}"
        raise ConfigError(f"{key} must be {above} and at most {_number(high)}"
                          f" (it is {_number(value)})")


def _number(value: float) -> str:
    return str(int(value)) if math.isfinite(value) and value == int(value) else str(value)


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _value(hint: Any, value: Any, key: str, base: Path) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return _value(options[0], value, key, base)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key, base)  # type: ignore[arg-type]
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise ConfigError(f"{key} must be one of: {', '.join(map(str, allowed))}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be a whole number")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string")
        return value
    if hint is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{key} must be a file path")
        path = Path(value).expanduser()
        return path if path.is_absolute() else base / path
    args = typing.get_args(hint)
    if origin is tuple and args and dataclasses.is_dataclass(args[0]):
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list of tables ([[{key}]])")
        return tuple(_build(args[0], item, f"{key}[{i}]", base)  # type: ignore[arg-type]
                     for i, item in enumerate(value))
    if origin in (Mapping, dict) and len(args) == 2 and dataclasses.is_dataclass(args[1]):
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a table")
        return {name: _build(args[1], item, f"{key}.{name}", base)  # type: ignore[arg-type]
                for name, item in value.items()}
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key} must be a list of strings")
        return tuple(value)
    if origin in (Mapping, dict) or hint is Mapping:
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ConfigError(f"{key} must be a table of strings")
        return dict(value)
    raise ConfigError(f"{key}: unsupported value")  # pragma: no cover - a new field's type
