"""The gateway's policy for one address: built-in defaults <- global <- domain <- user.

Each level of ``[gateway]`` (:class:`~smimekit.config.PolicyConfig`) leaves a key it does not
set as None, which inherits from the level above. :meth:`Policy.resolve` walks the levels for
one address and records, per field, the level the value came from, so a Decision can say
"encrypt=always (domain *.partner.example)".

Domains: an exact domain (``partner.example``) beats any wildcard; a wildcard ``*.D`` matches
every subdomain of ``D`` at any depth (not ``D`` itself: list both when both are meant), and
of two wildcards that match, the longer (more specific) wins. ``internal_domains`` match the
same way and decide each recipient's direction (:meth:`Policy.direction`), together with the
door the message came through: the envelope sender alone is a claim anyone can make.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Literal

from smimekit.config import (
    EncryptMode,
    GatewayConfig,
    HeaderConfidentiality,
    MissingKey,
    NoCertificate,
    PolicyConfig,
)
from smimekit.errors import ConfigError
from smimekit.gateway.model import Direction

__all__ = ["DEFAULTS", "EffectivePolicy", "Policy", "domain_of", "normalise"]

DEFAULTS = PolicyConfig(
    sign=True,
    organisation_signature=False,
    missing_key="defer",
    encrypt="if-possible",
    no_certificate="bounce",
    subject_trigger="[encrypt]",
    hcp="baseline",
    decrypt=True,
    verify=True,
    harvest=True,
    webmail=False,
)
"""The built-in level: sign when the gateway holds the sender's key (signing set in the
configuration and no key: defer, ``missing_key``); encrypt to every
recipient with a usable certificate; when encryption is required and impossible, refuse (never
fall back to clear text unless the configuration says so); RFC 9788 ``hcp_baseline``."""

Level = Literal["default", "global", "domain", "user"]


def normalise(address: str) -> str:
    """An address as the policy compares it: stripped, without angle brackets, lower case."""
    return address.strip().strip("<>").strip().lower()


def domain_of(address: str) -> str:
    """The domain of ``address`` (after the last ``@``), or "" when it has none."""
    local, at, domain = normalise(address).rpartition("@")
    return domain if at and local else ""


@dataclass(frozen=True)
class EffectivePolicy:
    """Every field resolved for one address, with the level each value came from."""

    address: str
    sign: bool
    organisation_signature: bool
    missing_key: MissingKey
    encrypt: EncryptMode
    no_certificate: NoCertificate
    subject_trigger: str
    """"" when no trigger is set."""
    hcp: HeaderConfidentiality
    decrypt: bool
    verify: bool
    harvest: bool
    webmail: bool
    levels: Mapping[str, str] = field(default_factory=dict)
    """Per field: ``default``, ``global``, ``domain <pattern>`` or ``user <address>``."""

    def source(self, name: str) -> str:
        """``name=value (level)``, for a Decision's reason."""
        return f"{name}={getattr(self, name)} ({self.levels.get(name, 'default')})"


def _check_domain(pattern: str, where: str) -> str:
    text = pattern.strip().lower()
    bare = text[2:] if text.startswith("*.") else text
    if not bare or "*" in bare or "@" in bare or " " in bare or bare.startswith(".") \
            or bare.endswith(".") or ".." in bare:
        raise ConfigError(f"{where}: {pattern!r} is not a domain or a wildcard *.domain")
    return text


def _check_address(address: str, where: str) -> str:
    text = normalise(address)
    local, at, domain = text.rpartition("@")
    if not at or not local or not domain or "*" in text or " " in text:
        raise ConfigError(f"{where}: {address!r} is not a mail address")
    _check_domain(domain, where)
    return text


def _matches(pattern: str, domain: str) -> bool:
    if pattern.startswith("*."):
        return domain.endswith(pattern[1:])
    return domain == pattern


def _best_domain(patterns: Iterable[str], domain: str) -> str | None:
    """The pattern that applies to ``domain``: exact first, then the longest wildcard."""
    if not domain:
        return None
    found = [p for p in patterns if _matches(p, domain)]
    if not found:
        return None
    return max(found, key=lambda p: (not p.startswith("*."), len(p)))


class Policy:
    """The ``[gateway]`` levels, checked once; resolves addresses and directions.

    Raises (constructor):
        ConfigError: a domain key that is not a domain or ``*.domain``, a user key that is
            not an address, two keys that are the same after lower-casing, a blank
            subject trigger, or an internal domain that is not a domain.
    """

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self._global = config.policy
        self._domains: dict[str, PolicyConfig] = {}
        for pattern, level in config.domains.items():
            key = _check_domain(pattern, "gateway.domains")
            if key in self._domains:
                raise ConfigError(f"gateway.domains: {pattern!r} is given twice")
            self._domains[key] = level
        self._users: dict[str, PolicyConfig] = {}
        for address, level in config.users.items():
            key = _check_address(address, "gateway.users")
            if key in self._users:
                raise ConfigError(f"gateway.users: {address!r} is given twice")
            self._users[key] = level
        for name, level in [("gateway.policy", self._global),
                            *((f"gateway.domains.{k!r}", v) for k, v in self._domains.items()),
                            *((f"gateway.users.{k!r}", v) for k, v in self._users.items())]:
            if level.subject_trigger is not None and level.subject_trigger != "" \
                    and not level.subject_trigger.strip():
                raise ConfigError(f"{name}.subject_trigger: blank (use \"\" for no trigger)")
        self._internal = tuple(_check_domain(d, "gateway.internal_domains")
                               for d in config.internal_domains)

    def resolve(self, address: str) -> EffectivePolicy:
        """The effective policy for ``address`` (a recipient, or the sender for signing)."""
        address = normalise(address)
        chain: list[tuple[str, PolicyConfig]] = [("default", DEFAULTS), ("global", self._global)]
        pattern = _best_domain(self._domains, domain_of(address))
        if pattern is not None:
            chain.append((f"domain {pattern}", self._domains[pattern]))
        if address in self._users:
            chain.append((f"user {address}", self._users[address]))
        values: dict[str, object] = {}
        levels: dict[str, str] = {}
        for name, level in chain:
            for f in fields(PolicyConfig):
                value = getattr(level, f.name)
                if value is not None:
                    values[f.name] = value
                    levels[f.name] = name
        return EffectivePolicy(address=address, levels=levels, **values)  # type: ignore[arg-type]

    def is_internal(self, address: str) -> bool:
        """Whether ``address`` is in one of ``internal_domains``."""
        domain = domain_of(address)
        return bool(domain) and any(_matches(p, domain) for p in self._internal)

    def direction(self, sender: str, recipient: str, *, trusted: bool = False) -> Direction:
        """outbound (ours to outside), inbound (outside to ours), internal or relay.

        ``trusted``: the message came through the trusted door (``listen_submission``). Only
        then does the sender count: mail from the public door is from outside whatever its
        sender claims, so inbound for our recipients and relay (passed unchanged, never
        signed) for the others. A bounce (empty sender) to one of ours is inbound.
        """
        ours_to = self.is_internal(recipient)
        if not trusted:
            return "inbound" if ours_to else "relay"
        ours_from = self.is_internal(sender)
        if ours_from and ours_to:
            return "internal"
        if ours_from:
            return "outbound"
        if ours_to:
            return "inbound"
        return "relay"
