"""Names in certification paths: DN matching and name constraints.

Distinguished names are compared as RFC 5280 section 7.1 asks (attribute values prepared
roughly as in RFC 4518: NFKC, case folding, insignificant spaces removed), so a CA whose
name was re-encoded as UTF8String, re-cased or re-spaced still chains (PKITS 4.3).

Name constraints follow RFC 5280 sections 4.2.1.10 and 6.1.3 (b)-(c), 6.1.4 (g):

- rfc822Name: a mailbox (``user@host``, exact), a host (``host``: every mailbox on that
  host) or a domain (``.domain``: every mailbox on a host *below* it). Every address of a
  certificate is checked: SAN rfc822Name, SmtpUTF8Mailbox (RFC 9598) and the legacy
  emailAddress attribute of the subject DN.
- dNSName (``host`` and every name below it; a SAN wildcard ``*.x`` is treated as every
  name it can match), directoryName (RDN prefix), uniformResourceIdentifier (host or
  ``.domain``), iPAddress (address/mask).
- Any other name form that is constrained and appears in a certificate cannot be checked,
  so the certificate is rejected (RFC 5280 4.2.1.10). Malformed constraints and malformed
  names of a constrained form fail the same way.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.x509.oid import NameOID

from smimekit.dn import display_name

#: RFC 8398 / RFC 9598 SmtpUTF8Mailbox otherName.
SMTP_UTF8_MAILBOX = "1.3.6.1.5.5.7.8.9"

#: Name-constraint comparisons allowed per certificate before giving up (a deliberately
#: quadratic certificate must not stall verification: x509-limbo ``nc-dos-*``).
MAX_CHECKS = 1 << 16

NameKey = tuple[frozenset[tuple[str, object]], ...]


def _prepare(value: object) -> object:
    if not isinstance(value, str):
        return value
    return " ".join(unicodedata.normalize("NFKC", value).casefold().split())


@functools.lru_cache(maxsize=4096)
def name_key(name: x509.Name) -> NameKey:
    """A comparable form of ``name``: RDNs in order, attributes per RDN as a set."""
    return tuple(
        frozenset((attr.oid.dotted_string, _prepare(attr.value)) for attr in rdn)
        for rdn in name.rdns
    )


# -- syntax -----------------------------------------------------------------------------

_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)\Z")
_ATEXT = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+\Z")


def _valid_hostname(host: str) -> bool:
    host = host.lower()
    if not host or len(host) > 253 or host.endswith("."):
        return False
    return all(_LABEL.match(label) for label in host.split("."))


def _valid_dns_name(name: str) -> bool:
    """Preferred name syntax (RFC 1034 3.5), optionally with a whole ``*`` first label."""
    if name.startswith("*."):
        name = name[2:]
    return _valid_hostname(name)


def _split_mailbox(address: str) -> tuple[str, str] | None:
    """``(local, domain)`` of an RFC 5321 mailbox, or None when it is not one."""
    if address.startswith('"'):
        end = address.find('"@', 1)
        if end < 0:
            return None
        local, domain = address[: end + 1], address[end + 2 :]
    else:
        local, at, domain = address.partition("@")
        if not at or "@" in domain:
            return None
        if not all(_ATEXT.match(atom) for atom in local.split(".")):
            return None
    if not domain or not (_valid_hostname(domain) or _domain_literal(domain)):
        return None
    return local, domain.lower()


def _domain_literal(domain: str) -> bool:
    if not (domain.startswith("[") and domain.endswith("]")):
        return False
    try:
        ipaddress.ip_address(domain[1:-1].removeprefix("IPv6:"))
    except ValueError:
        return False
    return True


def _ascii_domain(domain: str) -> str | None:
    try:
        return domain.encode("idna").decode("ascii").lower()
    except (UnicodeError, ValueError):
        return None


# -- one constraint against one name ---------------------------------------------------


def _email_matches(constraint: str, local: str, domain: str) -> bool | None:
    """None when the constraint itself is malformed."""
    if "@" in constraint:
        parts = _split_mailbox(constraint)
        if parts is None:
            return None
        return parts == (local, domain)
    if constraint.startswith("."):
        if not _valid_hostname(constraint[1:]):
            return None
        return domain.endswith(constraint.lower())
    if not _valid_hostname(constraint):
        return None
    return domain == constraint.lower()


def _dns_within(name: str, constraint: str) -> bool:
    return name == constraint or name.endswith("." + constraint)


def _dns_matches(constraint: str, name: str, *, excluded: bool) -> bool | None:
    if constraint == "":
        return True
    constraint = constraint.lower()
    if not _valid_hostname(constraint):
        return None  # wildcards and leading periods are not DNS constraints (4.2.1.10)
    name = name.lower()
    if not name.startswith("*."):
        return _dns_within(name, constraint)
    base = name[2:]
    if _dns_within(base, constraint):
        return True  # every name *.base can stand for lies below the constraint
    # *.base may still stand for the constrained name itself (CVE-2025-61727): that is
    # enough to exclude it, never enough to permit it.
    return excluded and constraint.partition(".")[2] == base


def _uri_host(uri: str) -> str | None:
    scheme, sep, rest = uri.partition(":")
    if not sep or not scheme or not rest.startswith("//"):
        return None
    authority = rest[2:].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    host = authority.rpartition("@")[2]
    if host.startswith("["):
        return None  # an IP literal has no host name to constrain
    host = host.rpartition(":")[0] if ":" in host else host
    return host.lower() if _valid_hostname(host) else None


def _uri_matches(constraint: str, host: str) -> bool | None:
    if constraint.startswith("."):
        if not _valid_hostname(constraint[1:]):
            return None
        return host.endswith(constraint.lower())
    if not _valid_hostname(constraint):
        return None
    return host == constraint.lower()


def _dn_matches(constraint: NameKey, name: NameKey) -> bool:
    return name[: len(constraint)] == constraint


# -- the state carried along a path ---------------------------------------------------


@dataclass(frozen=True)
class _Name:
    """One name of a certificate, classified for constraint checking."""

    kind: str
    """``email``, ``dns``, ``dn``, ``uri``, ``ip`` or ``other:<oid>`` / ``registered``."""
    value: object
    shown: str
    valid: bool = True


def certificate_names(
    cert: x509.Certificate, san: x509.SubjectAlternativeName | None
) -> list[_Name]:
    """Every name of ``cert`` that name constraints apply to."""
    out: list[_Name] = []
    if cert.subject.rdns:
        out.append(_Name("dn", name_key(cert.subject), display_name(cert.subject)))
    for attr in cert.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS):
        out.append(_email(str(attr.value)))
    for general in san or ():
        out.append(_general_name(general))
    return out


def _email(address: str, *, utf8: bool = False) -> _Name:
    parts = _split_mailbox(address) if not utf8 else _split_utf8_mailbox(address)
    if parts is None:
        return _Name("email", None, address, valid=False)
    return _Name("email", parts, address)


def _split_utf8_mailbox(address: str) -> tuple[str, str] | None:
    local, at, domain = address.rpartition("@")
    ascii_domain = _ascii_domain(domain) if at and local else None
    if ascii_domain is None or not _valid_hostname(ascii_domain):
        return None
    return local, ascii_domain


def _utf8_string(der: bytes) -> str:
    # The otherName value is an explicit [0] around a UTF8String.
    from asn1crypto import core

    try:
        inner = core.Any.load(der).contents if der[:1] == b"\xa0" else der
        return str(core.UTF8String.load(inner).native)
    except (ValueError, TypeError):
        return ""


def _general_name(general: x509.GeneralName) -> _Name:
    if isinstance(general, x509.RFC822Name):
        return _email(general.value)
    if isinstance(general, x509.DNSName):
        return _Name("dns", general.value.lower(), general.value, _valid_dns_name(general.value))
    if isinstance(general, x509.DirectoryName):
        return _Name("dn", name_key(general.value), display_name(general.value))
    if isinstance(general, x509.UniformResourceIdentifier):
        host = _uri_host(general.value)
        return _Name("uri", host, general.value, host is not None)
    if isinstance(general, x509.IPAddress):
        value = general.value
        valid = isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address)
        return _Name("ip", value, str(value), valid)
    if isinstance(general, x509.OtherName):
        if general.type_id.dotted_string == SMTP_UTF8_MAILBOX:
            return _email(_utf8_string(general.value), utf8=True)
        oid = general.type_id.dotted_string
        return _Name(f"other:{oid}", general.value, f"otherName {oid}")
    return _Name("registered", general.value, str(general.value))


def _kind_of(general: x509.GeneralName) -> str:
    if isinstance(general, x509.RFC822Name):
        return "email"
    if isinstance(general, x509.DNSName):
        return "dns"
    if isinstance(general, x509.DirectoryName):
        return "dn"
    if isinstance(general, x509.UniformResourceIdentifier):
        return "uri"
    if isinstance(general, x509.IPAddress):
        return "ip"
    if isinstance(general, x509.OtherName):
        return f"other:{general.type_id.dotted_string}"
    return "registered"


def _matches(general: x509.GeneralName, name: _Name, *, excluded: bool) -> bool | None:
    """Whether ``name`` lies in the subtree ``general``; None when that cannot be decided."""
    if not name.valid:
        return None
    if isinstance(general, x509.RFC822Name):
        assert isinstance(name.value, tuple)
        return _email_matches(general.value, str(name.value[0]), str(name.value[1]))
    if isinstance(general, x509.DNSName):
        return _dns_matches(general.value, str(name.value), excluded=excluded)
    if isinstance(general, x509.DirectoryName):
        return _dn_matches(name_key(general.value), name.value)  # type: ignore[arg-type]
    if isinstance(general, x509.UniformResourceIdentifier):
        return _uri_matches(general.value, str(name.value))
    if isinstance(general, x509.IPAddress):
        network = general.value
        if not isinstance(network, ipaddress.IPv4Network | ipaddress.IPv6Network):
            return None
        address = name.value
        return isinstance(address, type(network.network_address)) and address in network
    return None  # otherName / registeredID constraints cannot be processed


@dataclass
class NameConstraintsState:
    """permitted_subtrees and excluded_subtrees of RFC 5280 6.1.2 (b)-(c)."""

    permitted: dict[str, list[list[x509.GeneralName]]] = field(default_factory=dict)
    """Per name form, one list per constraining certificate: a name must match one
    subtree of every list (that is the intersection of 6.1.4 (g)(1), kept unexpanded)."""
    excluded: dict[str, list[x509.GeneralName]] = field(default_factory=dict)

    def copy(self) -> NameConstraintsState:
        return NameConstraintsState(
            {k: list(v) for k, v in self.permitted.items()},
            {k: list(v) for k, v in self.excluded.items()},
        )

    @property
    def empty(self) -> bool:
        return not self.permitted and not self.excluded

    def add(self, constraints: x509.NameConstraints) -> None:
        """6.1.4 (g): narrow the permitted subtrees, widen the excluded ones."""
        by_kind: dict[str, list[x509.GeneralName]] = {}
        for general in constraints.permitted_subtrees or ():
            by_kind.setdefault(_kind_of(general), []).append(general)
        for kind, subtrees in by_kind.items():
            self.permitted.setdefault(kind, []).append(subtrees)
        for general in constraints.excluded_subtrees or ():
            self.excluded.setdefault(_kind_of(general), []).append(general)

    def _size(self) -> int:
        return sum(len(g) for groups in self.permitted.values() for g in groups) + sum(
            len(v) for v in self.excluded.values()
        )

    def problems(self, names: Iterable[_Name]) -> Iterator[str]:
        """Why the names violate the constraints (6.1.3 (b)-(c)); nothing when they do not."""
        names = list(names)
        if self.empty:
            return
        if len(names) * max(self._size(), 1) > MAX_CHECKS:
            yield (
                f"{len(names)} names against {self._size()} name constraints: too many"
                " to check, refused"
            )
            return
        for name in names:
            for general in self.excluded.get(name.kind, ()):
                hit = _matches(general, name, excluded=True)
                if hit is None:
                    yield f"name {name.shown!r} cannot be checked against excluded subtrees"
                    break
                if hit:
                    yield f"name {name.shown!r} is in an excluded subtree"
                    break
            for group in self.permitted.get(name.kind, ()):
                results = [_matches(general, name, excluded=False) for general in group]
                if True in results:
                    continue
                if None in results:
                    yield f"name {name.shown!r} cannot be checked against permitted subtrees"
                else:
                    yield f"name {name.shown!r} is outside the permitted subtrees"
                break
