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
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from smimekit.errors import ConfigError

__all__ = [
    "EMPTY",
    "Config",
    "DirectoryConfig",
    "DnsConfig",
    "LdapConfig",
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


@dataclass(frozen=True)
class Config:
    directory: DirectoryConfig | None = None
    sync: SyncConfig | None = None
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
        elif (fields[name].default is dataclasses.MISSING
              and fields[name].default_factory is dataclasses.MISSING):
            raise ConfigError(f"{key} is required in the configuration")
    return cls(**values)


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _value(hint: Any, value: Any, key: str, base: Path) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return _value(options[0], value, key, base)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key, base)  # type: ignore[arg-type]
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
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key} must be a list of strings")
        return tuple(value)
    if origin in (Mapping, dict) or hint is Mapping:
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ConfigError(f"{key} must be a table of strings")
        return dict(value)
    raise ConfigError(f"{key}: unsupported value")  # pragma: no cover - a new field's type
