"""LDAP: look certificates up (:class:`LdapSource`), publish ours (:func:`publish`), and write
an LDIF for directories we do not write to (:func:`export_ldif`). See docs/directory.md "LDAP".

What mail clients read, and so what we write, per entry found by ``mail``:

``userCertificate;binary``
    the DER encryption certificate(s): Thunderbird's query,
    ``(|(mail=a)(mail=b))`` for ``usercertificate;binary``.
``userSMIMECertificate``
    a degenerate SignedData (RFC 5652 5.1, no signers: a "certs-only" PKCS#7) per encryption
    certificate, the certificate then the issuing CA and the root: what Outlook reads first.
    RFC 2798 also allows SMIMECapabilities there, but they can only be carried in a SignerInfo
    signed by the holder's own key, which we never hold (signing keys stay with their holder;
    encryption keys are sealed for escrow): the chain is what we can vouch for.

Only values that hold certificates our CA issued are ours: publishing replaces those (live
ones added, revoked, renewed and expired ones removed) and leaves every other value alone.
The connection is made with ``ldap3`` (pure Python) with referrals off; every failure is a
:class:`~smimekit.errors.DirectoryError` naming the directory, never the password.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import ssl
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from smimekit.directory.sources import Candidate, Found
from smimekit.errors import ConfigError, DirectoryError

if TYPE_CHECKING:
    from smimekit.config import Config, LdapConfig, SyncLdapConfig
    from smimekit.store import Store

__all__ = [
    "CERTIFICATE_ATTRIBUTE",
    "SMIME_ATTRIBUTE",
    "LdapConnection",
    "LdapSource",
    "PublishReport",
    "certs_only",
    "export_ldif",
    "publish",
]

CERTIFICATE_ATTRIBUTE = "userCertificate;binary"
# OpenLDAP refuses the ;binary option on it (its syntax, Binary, is one without transfer
# options); the bare name is what Outlook asks for and what every directory takes.
SMIME_ATTRIBUTE = "userSMIMECertificate"
_ATTRIBUTES = (CERTIFICATE_ATTRIBUTE, SMIME_ATTRIBUTE)
_PAGE = 500
_SOURCE = "ldap"
_Entry = tuple[str, dict[str, list[bytes]]]
"""An entry's DN and raw values by lower-case attribute name (options dropped)."""


# -- the connection --------------------------------------------------------------------------


def _ldap3() -> Any:
    """ldap3, imported on first use with its own import-time DeprecationWarnings (pyasn1's
    renamed names) kept off the user's stderr."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import ldap3
        import ldap3.core.exceptions
        import ldap3.utils.dn
    return ldap3


def _password(config: LdapConfig | SyncLdapConfig, section: str) -> str | None:
    if config.bind_dn is None:
        return None
    if config.password_file is None:
        raise ConfigError(f"{section}.bind_dn needs {section}.password_file (an empty"
                          " password would be an unauthenticated bind)")
    try:
        text = config.password_file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {section}.password_file {config.password_file}:"
                          f" {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{section}.password_file {config.password_file} is not"
                          " UTF-8 text") from None
    lines = text.splitlines()
    if not lines or not lines[0]:
        raise ConfigError(f"{section}.password_file {config.password_file} is empty")
    return lines[0]


def _check(config: LdapConfig | SyncLdapConfig, section: str) -> None:
    scheme = config.url.partition("://")[0].lower()
    if scheme not in ("ldap", "ldaps"):
        raise ConfigError(f"{section}.url must be ldap:// or ldaps://, not {config.url!r}")
    if scheme == "ldaps" and config.starttls:
        raise ConfigError(f"{section}.starttls is for ldap:// URLs (ldaps:// is TLS"
                          " already)")
    if config.ca_file is not None and not config.ca_file.is_file():
        raise ConfigError(f"{section}.ca_file {config.ca_file} is not a file")
    if config.timeout <= 0:
        raise ConfigError(f"{section}.timeout must be more than 0 seconds")


class LdapConnection:
    """One bound connection to the configured directory, opened on first use and kept.

    Raises (from every method):
        DirectoryError: unreachable, TLS refused, the bind refused, an operation failed or
            timed out.
    """

    def __init__(self, config: LdapConfig | SyncLdapConfig, *,
                 section: str = "directory.ldap") -> None:
        """``section``: the configuration table ``config`` came from, for messages
        (``ca sync`` reads the identity directory of ``[sync.ldap]`` through it)."""
        _check(config, section)
        self.config = config
        self._password = _password(config, section)
        self._conn: Any = None

    @property
    def where(self) -> str:
        return f"the LDAP directory {self.config.url}"

    def _fail(self, what: str) -> DirectoryError:
        return DirectoryError(f"{self.where}: {what}", source=_SOURCE)

    def open(self) -> Any:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        ldap3 = _ldap3()
        LDAPException = ldap3.core.exceptions.LDAPException

        config = self.config
        tls = None
        if config.url.lower().startswith("ldaps://") or config.starttls:
            tls = ldap3.Tls(validate=ssl.CERT_REQUIRED,
                            ca_certs_file=str(config.ca_file) if config.ca_file else None)
        conn = None
        try:
            server = ldap3.Server(config.url, get_info=ldap3.NONE, tls=tls,
                                  connect_timeout=config.timeout)
            conn = ldap3.Connection(
                server, user=config.bind_dn, password=self._password,
                auto_bind=ldap3.AUTO_BIND_NONE, auto_referrals=False, check_names=False,
                # ldap3 packs it into SO_RCVTIMEO as whole seconds
                receive_timeout=max(1, math.ceil(config.timeout)), raise_exceptions=False)
            with warnings.catch_warnings():
                # ldap3 checks the server's name with ssl.match_hostname (deprecated)
                warnings.simplefilter("ignore", DeprecationWarning)
                conn.open()
                if config.starttls and not conn.start_tls():
                    raise self._fail(f"StartTLS refused ({_result(conn)})")
            if not conn.bind():
                who = f"as {config.bind_dn}" if config.bind_dn else "anonymously"
                raise self._fail(f"refused the bind {who} ({_result(conn)})")
        except DirectoryError:
            _discard(conn)
            raise
        except (LDAPException, OSError, ssl.SSLError) as exc:
            _discard(conn)
            raise self._fail(_reason(exc)) from None
        self._conn = conn
        return conn

    def close(self) -> None:
        conn, self._conn = self._conn, None
        _discard(conn)

    def __enter__(self) -> LdapConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, op: str, *args: Any, retry: bool = True, **kwargs: Any) -> bool:
        LDAPException = _ldap3().core.exceptions.LDAPException

        reused = self._conn is not None and not self._conn.closed
        conn = self.open()
        try:
            return bool(getattr(conn, op)(*args, **kwargs))
        except (LDAPException, OSError, ssl.SSLError) as exc:
            self.close()
            if reused and retry:
                # a kept connection the server dropped (idle timeout, restart): once more
                # on a fresh one
                return self._call(op, *args, retry=False, **kwargs)
            raise self._fail(_reason(exc)) from None

    def search(self, filter_: str, attributes: Sequence[str]) -> list[_Entry]:
        """(dn, raw attributes by lower-case name without options) for the entries under the
        base DN that match ``filter_`` (one request; see :meth:`search_all` for many)."""
        ldap3 = _ldap3()

        if not self._call("search", self.config.base_dn, filter_, ldap3.SUBTREE,
                          attributes=list(attributes)):
            result = self._conn.result if self._conn is not None else {}
            if result.get("description") == "noSuchObject":
                raise self._fail(f"the base DN {self.config.base_dn} does not exist")
            if result.get("result", 0) != 0:
                raise self._fail(f"search refused ({_result(self._conn)})")
        return [_entry(e) for e in self._conn.response if e.get("type") == "searchResEntry"]

    def search_all(self, filter_: str, attributes: Sequence[str]) -> Iterator[_Entry]:
        """Like :meth:`search`, page by page (RFC 2696), for every entry of a large base."""
        ldap3 = _ldap3()
        LDAPException = ldap3.core.exceptions.LDAPException

        conn = self.open()
        try:
            for entry in conn.extend.standard.paged_search(
                    self.config.base_dn, filter_, ldap3.SUBTREE, attributes=list(attributes),
                    paged_size=_PAGE, generator=True):
                if entry.get("type") == "searchResEntry":
                    yield _entry(entry)
        except LDAPException as exc:
            self.close()
            raise self._fail(_reason(exc)) from None
        except (OSError, ssl.SSLError) as exc:
            self.close()
            raise self._fail(_reason(exc)) from None
        if conn.result and conn.result.get("result", 0) not in (0,):
            raise self._fail(f"search refused ({_result(conn)})")

    def modify(self, dn: str, changes: dict[str, list[bytes]]) -> None:
        """Replace the values of each attribute in ``changes`` (an empty list removes it)."""
        ldap3 = _ldap3()

        if not self._call("modify", dn, {name: [(ldap3.MODIFY_REPLACE, values)]
                                         for name, values in changes.items()}):
            raise self._fail(f"cannot modify {dn} ({_result(self._conn)})")

    def add(self, dn: str, object_classes: Sequence[str], attributes: dict[str, Any]) -> None:
        # not retried: an add that reached the server before the connection broke would
        # fail the second time with "already exists"
        if not self._call("add", dn, list(object_classes), attributes, retry=False):
            raise self._fail(f"cannot add {dn} ({_result(self._conn)})")


def _discard(conn: Any) -> None:
    """Unbind and close, whatever state the connection is in (ldap3 leaves the socket of a
    failed connect open)."""
    if conn is None:
        return
    try:
        conn.unbind()
    except Exception:  # noqa: S110 - closing a connection that broke already
        pass
    sock = getattr(conn, "socket", None)
    if sock is not None:
        try:
            sock.close()
        except OSError:
            pass


def _entry(raw: dict[str, Any]) -> _Entry:
    attributes: dict[str, list[bytes]] = {}
    for name, values in (raw.get("raw_attributes") or {}).items():
        key = name.split(";", 1)[0].lower()
        attributes.setdefault(key, []).extend(bytes(v) for v in values)
    return str(raw.get("dn", "")), attributes


def _result(conn: Any) -> str:
    result = getattr(conn, "result", None) or {}
    text = result.get("description") or "no answer"
    message = (result.get("message") or "").strip()
    return f"{text}: {message}" if message else str(text)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    # ldap3 wraps socket errors as "socket connection error while opening: [Errno 111] ..."
    if "timed out" in text or "timeout" in text.lower():
        return f"no answer in time ({text})"
    return text


# -- lookup ----------------------------------------------------------------------------------


def escape_filter_value(value: str) -> str:
    """``value`` for an LDAP filter assertion (RFC 4515 3: ``*``, ``(``, ``)``, ``\\`` and NUL
    as ``\\XX``)."""
    out = []
    for ch in value:
        if ch in "*()\\\x00":
            out.append(f"\\{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


class LdapSource:
    """Certificates held in an LDAP directory for an address (``userCertificate;binary`` and
    the certificates of ``userSMIMECertificate``). The connection is opened by the
    first :meth:`find` and kept for the next ones; :meth:`close` ends it."""

    name = "ldap"

    def __init__(self, config: LdapConfig) -> None:
        self.connection = LdapConnection(config)

    @classmethod
    def from_config(cls, config: Config, *, store: Store | None,
                    data_dir: Path) -> LdapSource | None:
        """The source of ``[directory.ldap]``; None when there is none.

        Raises:
            ConfigError: the table is set up wrongly (URL scheme, password file, CA file).
        """
        directory = config.directory
        if directory is None or directory.ldap is None:
            return None
        return cls(directory.ldap)

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> LdapSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def find(self, address: str) -> Found:
        """The certificates of the entries whose ``mail`` is ``address``.

        Raises:
            DirectoryError: unreachable, bind refused, the search failed or timed out.
        """
        entries = self.connection.search(f"(mail={escape_filter_value(address)})",
                                         _ATTRIBUTES)
        candidates: dict[bytes, Candidate] = {}
        notes: list[str] = []
        for dn, attributes in entries:
            for value in attributes.get("usercertificate", []):
                try:
                    cert = x509.load_der_x509_certificate(value)
                except ValueError:
                    notes.append(f"garbage in userCertificate of {dn}: not a DER certificate")
                    continue
                key = cert.fingerprint(hashes.SHA256())
                candidates.setdefault(key, Candidate(cert, _SOURCE, where=dn))
            for value in attributes.get("usersmimecertificate", []):
                try:
                    certs = _bundle(value)
                except ValueError:
                    notes.append(f"garbage in userSMIMECertificate of {dn}: not a PKCS#7"
                                 " SignedData with certificates")
                    continue
                chain = tuple(c for c in certs if _is_ca(c))
                for cert in certs:
                    if _is_ca(cert):
                        continue
                    # the chain that came with it is worth more than a bare certificate
                    candidates[cert.fingerprint(hashes.SHA256())] = Candidate(
                        cert, _SOURCE, chain=chain, where=dn)
        return Found(tuple(candidates.values()), tuple(notes))


def _bundle(value: bytes) -> list[x509.Certificate]:
    from smimekit.validation.intermediates import parse_certificates

    if not value.startswith(b"\x30"):
        raise ValueError("not DER")
    certs = parse_certificates(value)
    # parse_certificates also takes a bare certificate: userSMIMECertificate holds PKCS#7
    if len(certs) == 1 and certs[0].public_bytes(serialization.Encoding.DER) == value:
        raise ValueError("a bare certificate")
    return certs


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except (x509.ExtensionNotFound, ValueError):
        return False


# -- what we publish -------------------------------------------------------------------------


def certs_only(certificates: Sequence[x509.Certificate]) -> bytes:
    """A degenerate SignedData (RFC 5652 5.1: no signers, eContentType data, no content)
    holding ``certificates`` (a SET OF: sorted, as DER wants), as DER: the
    ``userSMIMECertificate`` value and
    what ``openssl pkcs7 -print_certs`` reads. Written with the CMS layer's DER writer
    (asn1crypto took five times as long, which bulk publishing felt)."""
    from smimekit.cms import der

    signed = der.seq(
        der.integer(1),                                 # version: no signers, data content
        der.set_of(),                                   # digestAlgorithms: none
        der.seq(der.oid(_DATA)),                        # encapContentInfo without eContent
        der.tlv(0xA0, *sorted(c.public_bytes(serialization.Encoding.DER)
                              for c in certificates)),
        der.set_of(),                                   # signerInfos: none
    )
    return der.seq(der.oid(_SIGNED_DATA), der.tlv(0xA0, signed))


_DATA = "1.2.840.113549.1.7.1"
_SIGNED_DATA = "1.2.840.113549.1.7.2"


@dataclass
class _Person:
    email: str
    name: str | None = None
    certificates: list[x509.Certificate] = field(default_factory=list)


@dataclass(frozen=True)
class _Plan:
    people: dict[str, _Person]
    """Every address holding a live encryption certificate of our CA (may be empty)."""
    ours: frozenset[str]
    """SHA-256 fingerprints (hex) of every certificate our CA ever issued."""
    chain: tuple[x509.Certificate, ...]

    def values(self, person: _Person) -> dict[str, list[bytes]]:
        ders = [c.public_bytes(serialization.Encoding.DER) for c in person.certificates]
        smime = [certs_only([c, *self.chain]) for c in person.certificates]
        return {"usercertificate": ders, "usersmimecertificate": smime}


def _plan(store: Store, *, issuer_fingerprint: str, chain: Sequence[x509.Certificate],
          emails: Iterable[str] | None, now: dt.datetime) -> _Plan:
    if emails is None:
        records = [r for r in store.issued_records(live_only=False)
                   if r.issuer_fingerprint == issuer_fingerprint]
    else:
        records = [r for email in dict.fromkeys(e.strip().lower() for e in emails)
                   for r in store.issued_for(email) if r.issuer_fingerprint == issuer_fingerprint]
    people: dict[str, _Person] = {}
    ours: set[str] = set()
    for record in records:
        ours.add(record.fingerprint)
        if emails is not None:
            people.setdefault(record.email, _Person(record.email))
        if not record.live or record.not_after <= now or record.purpose not in ("encrypt",
                                                                               "both"):
            continue
        stored = store.get_certificate(record.fingerprint)
        if stored is None:  # pragma: no cover - the issued table refers to it
            continue
        people.setdefault(record.email, _Person(record.email)).certificates.append(
            stored.certificate)
    return _Plan(people, frozenset(ours), tuple(chain))


def _fingerprints(value: bytes, attribute: str) -> set[str]:
    """The fingerprints of the certificates in one attribute value (empty when it is not
    one we can read: such a value is not ours and is left alone)."""
    try:
        if attribute == "usercertificate":
            certs = [x509.load_der_x509_certificate(value)]
        else:
            certs = _bundle(value)
    except ValueError:
        return set()
    return {c.fingerprint(hashes.SHA256()).hex() for c in certs if not _is_ca(c)}


def _merged(current: list[bytes], wanted: list[bytes], attribute: str,
            ours: frozenset[str]) -> list[bytes]:
    """The values the attribute should hold: every value that is not ours, then ours."""
    kept = [v for v in current if not (_fingerprints(v, attribute) & ours)]
    return kept + [v for v in wanted if v not in kept]


@dataclass(frozen=True)
class PublishReport:
    """What :func:`publish` did."""

    people: int
    """Addresses holding at least one live encryption certificate of our CA."""
    certificates: int
    """Live encryption certificates published."""
    created: int
    """Entries created (no entry had the address)."""
    updated: int
    """Entries whose certificate attributes changed."""
    unchanged: int
    """Entries that held exactly what they should already."""
    removed: int
    """Certificates taken out (revoked, renewed or expired)."""

    def summary(self) -> str:
        if not self.created and not self.updated:
            return (f"the directory is current: {self.certificates} certificates of"
                    f" {self.people} people, nothing changed")
        return (f"published {self.certificates} certificates of {self.people} people:"
                f" {self.created} entries created, {self.updated} updated,"
                f" {self.unchanged} unchanged, {self.removed} certificates removed")


def new_entry_dn(email: str, base_dn: str) -> str:
    """The DN of an entry we create for an address no entry has: ``mail=ADDR,BASE``."""
    return f"mail={_ldap3().utils.dn.escape_rdn(email)},{base_dn}"


def publish(
    store: Store,
    config: LdapConfig,
    *,
    issuer_fingerprint: str,
    chain: Sequence[x509.Certificate],
    emails: Iterable[str] | None = None,
    now: dt.datetime | None = None,
    connection: LdapConnection | None = None,
) -> PublishReport:
    """Make the directory hold every live encryption certificate of our CA (the issuer with
    ``issuer_fingerprint``; ``chain`` is its certificate then the root), and none of its
    revoked, renewed or expired ones. ``emails``: only these people (the CLI's hook after
    issue/renew/revoke); None: everyone, and every entry under the base DN is checked.

    An address with live certificates and no entry gets a minimal inetOrgPerson entry
    (:func:`new_entry_dn`; cn the person's name or the address, sn the last word of it).
    Running it again changes nothing.

    Raises:
        ConfigError: the [directory.ldap] table is wrong.
        DirectoryError: the directory cannot be reached, refuses the bind or a write.
    """
    when = now or dt.datetime.now(dt.UTC)
    plan = _plan(store, issuer_fingerprint=issuer_fingerprint, chain=chain, emails=emails,
                 now=when)
    conn = connection or LdapConnection(config)
    attributes = ("mail", *_ATTRIBUTES)
    created = updated = unchanged = removed = 0
    try:
        # read first, then write: a write between two pages could end the paged search
        if emails is None:
            entries = list(conn.search_all("(mail=*)", attributes))
        else:
            entries = [e for email in plan.people for e in conn.search(
                f"(mail={escape_filter_value(email)})", attributes)]
        seen: set[str] = set()
        for dn, current in entries:
            mails = {m.decode("utf-8", "replace").strip().lower()
                     for m in current.get("mail", [])}
            holders = [plan.people[m] for m in sorted(mails) if m in plan.people]
            wanted = _Person("", certificates=[c for p in holders for c in p.certificates])
            values = plan.values(wanted)
            changes: dict[str, list[bytes]] = {}
            for attribute, name in (("usercertificate", CERTIFICATE_ATTRIBUTE),
                                    ("usersmimecertificate", SMIME_ATTRIBUTE)):
                now_held = current.get(attribute, [])
                should = _merged(now_held, values[attribute], attribute, plan.ours)
                if sorted(should) != sorted(now_held):
                    changes[name] = should
                    if attribute == "usercertificate":
                        removed += sum(1 for v in now_held if v not in should)
            seen.update(p.email for p in holders)
            if changes:
                conn.modify(dn, changes)
                updated += 1
            elif holders:
                unchanged += 1
        for person in plan.people.values():
            if person.email in seen or not person.certificates:
                continue
            user = store.get_user(person.email)
            cn = (user.name if user is not None else None) or person.email
            values = plan.values(person)
            conn.add(new_entry_dn(person.email, config.base_dn), ["inetOrgPerson"], {
                "cn": cn, "sn": cn.split()[-1], "mail": person.email,
                CERTIFICATE_ATTRIBUTE: values["usercertificate"],
                SMIME_ATTRIBUTE: values["usersmimecertificate"]})
            created += 1
    finally:
        if connection is None:
            conn.close()
    live = [p for p in plan.people.values() if p.certificates]
    return PublishReport(people=len(live), certificates=sum(len(p.certificates) for p in live),
                         created=created, updated=updated, unchanged=unchanged,
                         removed=removed)


# -- LDIF for directories we do not write to -------------------------------------------------

DEFAULT_DN_TEMPLATE = "mail={mail},{base_dn}"


def export_ldif(
    store: Store,
    *,
    issuer_fingerprint: str,
    chain: Sequence[x509.Certificate],
    base_dn: str,
    dn_template: str = DEFAULT_DN_TEMPLATE,
    binary_option: bool = False,
    now: dt.datetime | None = None,
) -> str:
    """An LDIF (RFC 2849) of ``changetype: modify`` records, one per person holding live
    encryption certificates of our CA, each replacing ``userCertificate`` and
    ``userSMIMECertificate`` with those certificates (base64 ``::`` values), for directories
    we do not write to (Active Directory: ``ldifde -i -f FILE``).

    ``dn_template`` names each entry: ``{mail}``, ``{local}``, ``{domain}``, ``{cn}`` (the
    person's name, else the address) and ``{base_dn}``, each RDN value escaped (RFC 4514).
    ``binary_option`` writes ``userCertificate;binary`` (OpenLDAP's ``ldapmodify``) instead
    of the bare name Active Directory takes.

    Raises:
        ConfigError: the template names an unknown field.
    """
    escape_rdn = _ldap3().utils.dn.escape_rdn
    when = now or dt.datetime.now(dt.UTC)
    plan = _plan(store, issuer_fingerprint=issuer_fingerprint, chain=chain, emails=None,
                 now=when)
    names = {"usercertificate": "userCertificate;binary" if binary_option
             else "userCertificate",
             # bare in every case: OpenLDAP refuses ;binary on it (see SMIME_ATTRIBUTE)
             "usersmimecertificate": "userSMIMECertificate"}
    lines = ["version: 1", ""]
    for email in sorted(plan.people):
        person = plan.people[email]
        if not person.certificates:
            continue
        user = store.get_user(email)
        local, _, domain = email.rpartition("@")
        fields = {"mail": escape_rdn(email), "local": escape_rdn(local),
                  "domain": escape_rdn(domain),
                  "cn": escape_rdn(user.name if user and user.name else email)}
        try:
            dn = dn_template.format(base_dn=base_dn, **fields)
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(f"the DN template {dn_template!r} is not usable ({exc}); use"
                              " {mail}, {local}, {domain}, {cn} and {base_dn}") from None
        values = plan.values(person)
        lines += _ldif_line("dn", dn.encode())
        lines.append("changetype: modify")
        for attribute, name in names.items():
            lines.append(f"replace: {name}")
            for value in values[attribute]:
                lines += _ldif_line(name, value, force_base64=True)
            lines.append("-")
        lines.append("")
    return "\n".join(lines)


def _ldif_line(name: str, value: bytes, *, force_base64: bool = False) -> list[str]:
    """``name: value`` or ``name:: base64``, folded at 76 columns (RFC 2849)."""
    safe = (not force_base64 and value.isascii() and b"\n" not in value and b"\r" not in value
            and b"\x00" not in value and not value.startswith((b" ", b":", b"<"))
            and not value.endswith(b" "))
    line = f"{name}: {value.decode()}" if safe else \
        f"{name}:: {base64.b64encode(value).decode()}"
    folded = [line[:76]]
    folded += [" " + line[i:i + 75] for i in range(76, len(line), 75)]
    return folded
