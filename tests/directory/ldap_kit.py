"""Helpers of the directory tests: [directory.ldap] settings for a test slapd."""

from __future__ import annotations

from slapd import Slapd

from smimekit.config import LdapConfig


def writer(server: Slapd, **changes: object) -> LdapConfig:
    """[directory.ldap] that may write (the root DN) to ``server``'s people."""
    settings: dict[str, object] = {"url": server.url, "base_dn": server.people,
                                   "bind_dn": server.root_dn,
                                   "password_file": server.password_file}
    settings.update(changes)
    return LdapConfig(**settings)  # type: ignore[arg-type]


def reader(server: Slapd, **changes: object) -> LdapConfig:
    """[directory.ldap] that reads anonymously, as a mail client does."""
    settings: dict[str, object] = {"url": server.url, "base_dn": server.suffix}
    settings.update(changes)
    return LdapConfig(**settings)  # type: ignore[arg-type]
