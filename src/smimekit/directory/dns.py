"""SMIMEA (RFC 8162): our certificates as DNS records, and lookup that trusts only DNSSEC.

Publishing: :func:`zone_fragment` writes one ``SMIMEA 3 0 0`` record per live encryption
certificate our CA issued in a domain, at ``<hex of the first 28 octets of SHA-256(local
part)>._smimecert.<domain>.`` (RFC 8162 section 3; the local part hashed as UTF-8, as
given, no case folding). Why ``3 0 0``:

- matching type 0 / selector 0 (the whole certificate): a sender needs the certificate
  itself to encrypt; a hash (matching type 1 or 2) or a bare public key (selector 1) only lets
  it check a certificate it got somewhere else, and lookup is for when it has none;
- usage 3 (DANE-EE): the record names the end-entity certificate, trusted through DNSSEC, so
  a DANE-aware sender that does not know our private root can still use it. smimekit's own
  resolver validates every candidate against its policy whatever the usage says.

Lookup: :class:`SmimeaSource` asks the configured resolver(s) with the DO bit and

1. requires the AD bit on every answer, positive or negative (the resolver validated it);
   a SERVFAIL is a refusal (unbound answers SERVFAIL for bogus data; its RFC 8914 extended
   error, when sent, is quoted);
2. when ``trust_anchor_file`` is set, checks the answer's signatures itself, from the
   anchor down (DNSKEY, DS and RRSIG of every zone on the way, with ``dns.dnssec``).

The AD bit alone is only as good as the path to the resolver: it is accepted without our own
check only from a resolver on this host (loopback), and :meth:`SmimeaSource.from_config`
refuses a remote resolver without a trust anchor. dnspython cannot check NSEC/NSEC3
denial proofs, so "no such record" rests on the AD bit; forging it only hides a
certificate (which a network attacker can do anyway by dropping packets), never adds one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rrset
import dns.zonefile
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.utils import CryptographyDeprecationWarning

from smimekit.directory.sources import Candidate, Found
from smimekit.errors import ConfigError, DirectoryError

with warnings.catch_warnings():
    # dnspython's DSA module touches cryptography's deprecated DSA classes at import: not the
    # user's to act on (a DSA-signed zone still fails or passes on its own merits).
    warnings.simplefilter("ignore", CryptographyDeprecationWarning)
    import dns.dnssec

if TYPE_CHECKING:
    from smimekit.config import Config
    from smimekit.store import Store

__all__ = ["SmimeaRecord", "SmimeaSource", "owner_name", "smimea_records", "zone_fragment"]

# RFC 6698 / RFC 8162 field values.
USAGE_PKIX_TA, USAGE_PKIX_EE, USAGE_DANE_TA, USAGE_DANE_EE = 0, 1, 2, 3
SELECTOR_CERT, MATCH_FULL = 0, 0

#: The usage/selector/matching type :func:`zone_fragment` writes (see the module docstring).
RECORD_TYPE = (USAGE_DANE_EE, SELECTOR_CERT, MATCH_FULL)

_EDNS_PAYLOAD = 1232  # RFC 9715 / DNS flag day 2020: no IP fragmentation; larger goes TCP
_MAX_CHAIN = 12       # zone cuts between a record and its trust anchor we are prepared to walk


def _split(address: str) -> tuple[str, str]:
    local, at, domain = address.strip().rpartition("@")
    if not at or not local or not domain:
        raise DirectoryError(f"{address!r} is not a mail address (local-part@domain)",
                             source="smimea")
    return local, domain


def _domain_name(domain: str) -> dns.name.Name:
    try:
        return dns.name.from_text(domain.rstrip(".").lower() + ".")
    except (dns.exception.DNSException, UnicodeError) as exc:
        raise DirectoryError(f"{domain!r} is not a DNS domain name ({exc})",
                             source="smimea") from None


def owner_name(address: str) -> dns.name.Name:
    """The SMIMEA owner name for ``address`` (RFC 8162 section 3): the SHA-256 of the local
    part (UTF-8, as given), its first 28 octets in hex, under ``_smimecert.<domain>``.

    Raises:
        DirectoryError: ``address`` is not local-part@domain, or the domain is not a name.
    """
    local, domain = _split(address)
    label = hashlib.sha256(local.encode("utf-8")).digest()[:28].hex()
    return dns.name.Name((label.encode("ascii"), b"_smimecert")).concatenate(
        _domain_name(domain))


@dataclass(frozen=True)
class SmimeaRecord:
    """One record of the zone fragment."""

    owner: dns.name.Name
    address: str
    """The address as the certificate spells it (its local part was hashed)."""
    certificate: x509.Certificate

    def to_text(self, ttl: int) -> str:
        der = self.certificate.public_bytes(serialization.Encoding.DER)
        usage, selector, matching = RECORD_TYPE
        # One hex token: every zone parser takes it (some refuse hex split by spaces).
        return f"{self.owner.to_text()} {ttl} IN SMIMEA {usage} {selector} {matching} {der.hex()}"


def _spellings(cert: x509.Certificate, email: str) -> list[str]:
    """The certificate's own spellings of ``email`` (case kept), lower-case form last."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        named = list(san.get_values_for_type(x509.RFC822Name))
    except x509.ExtensionNotFound:
        named = []
    out = [n for n in named if n.lower() == email.lower()]
    if email.lower() not in out:
        out.append(email.lower())
    return list(dict.fromkeys(out))


def smimea_records(store: Store, domain: str, *, now: dt.datetime | None = None
                   ) -> list[SmimeaRecord]:
    """An SMIMEA record for every live (not revoked, not replaced, not expired) encryption
    certificate our CA issued to an address in ``domain``.

    An address whose certificate spells the local part with capitals gets a record under
    that spelling and one under its lower-case form (RFC 8162 hashes the local part as
    given; senders mostly type lower case).

    Raises:
        DirectoryError: ``domain`` is not a DNS name.
        StoreError: the store cannot be read.
    """
    wanted = _domain_name(domain)
    now = now or dt.datetime.now(dt.UTC)
    records: list[SmimeaRecord] = []
    for issued in store.issued_records(live_only=True):
        if issued.purpose not in ("encrypt", "both") or issued.not_after <= now:
            continue
        local, _, at = issued.email.rpartition("@")
        if not local or _domain_name(at) != wanted:
            continue
        stored = store.get_certificate(issued.fingerprint)
        if stored is None:  # pragma: no cover - issued rows reference stored certificates
            continue
        cert = stored.certificate
        for spelling in _spellings(cert, issued.email):
            records.append(SmimeaRecord(owner_name(spelling), spelling, cert))
    return records


def zone_fragment(records: Sequence[SmimeaRecord], domain: str, *, ttl: int = 3600,
                  now: dt.datetime | None = None) -> str:
    """The records as zone-file text (RFC 1035 master file syntax), absolute owner names,
    each after a comment naming the address, serial and notAfter."""
    now = now or dt.datetime.now(dt.UTC)
    usage, selector, matching = RECORD_TYPE
    lines = [
        f"; SMIMEA (RFC 8162) for {domain}: {len(records)} record(s),"
        f" {now.strftime('%Y-%m-%dT%H:%M:%SZ')}, by smimekit directory smimea",
        f"; usage {usage} (DANE-EE), selector {selector} (full certificate), matching type"
        f" {matching} (exact): the certificate itself, so a sender can encrypt to it",
        "; the zone must be DNSSEC-signed: unsigned SMIMEA records are refused by validating"
        " senders",
    ]
    for record in records:
        cert = record.certificate
        lines.append(f"; {record.address} serial {cert.serial_number:x} notAfter"
                     f" {cert.not_valid_after_utc.strftime('%Y-%m-%dT%H:%M:%SZ')}")
        lines.append(record.to_text(ttl))
    return "\n".join(lines) + "\n"


# -- lookup ---------------------------------------------------------------------------------


def _read_anchors(path: Path) -> dict[dns.name.Name, list[Any]]:
    """DS and DNSKEY records in zone-file form (what unbound's ``trust-anchor-file`` and
    ``/usr/share/dns/root.key`` hold)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"directory.dns.trust_anchor_file {path}: cannot read it"
                          f" ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"directory.dns.trust_anchor_file {path} is not text") from None
    try:
        rrsets = dns.zonefile.read_rrsets(text, default_ttl=0, rdclass=None,
                                              origin=dns.name.root)
    except dns.exception.DNSException as exc:
        raise ConfigError(f"directory.dns.trust_anchor_file {path} is not DS/DNSKEY records"
                          f" in zone-file form: {exc}") from None
    anchors: dict[dns.name.Name, list[Any]] = {}
    for rrset in rrsets:
        if rrset.rdtype not in (dns.rdatatype.DS, dns.rdatatype.DNSKEY):
            raise ConfigError(f"directory.dns.trust_anchor_file {path}: only DS and DNSKEY"
                              f" records belong there, not {dns.rdatatype.to_text(rrset.rdtype)}")
        anchors.setdefault(rrset.name, []).extend(rrset)
    if not anchors:
        raise ConfigError(f"directory.dns.trust_anchor_file {path} holds no DS or DNSKEY record")
    return anchors


def _loopback(address: str) -> bool:
    return ipaddress.ip_address(address).is_loopback


_DNSSEC_EDE = {1, 2, 5, 6, 7, 8, 9, 10, 11, 12}  # RFC 8914 codes that mean a DNSSEC failure


def _ede(response: dns.message.Message) -> str:
    texts = []
    for option in response.options:
        if isinstance(option, dns.edns.EDEOption):
            name = dns.edns.EDECode.to_text(option.code).replace("_", " ").lower()
            texts.append(f"EDE {int(option.code)} ({name})"
                         + (f": {option.text}" if option.text else ""))
    return "; ".join(texts)


@dataclass
class SmimeaSource:
    """SMIMEA records through validating resolver(s), DNSSEC required (module docstring)."""

    resolvers: tuple[str, ...]
    port: int = 53
    timeout: float = 5.0
    anchors: dict[dns.name.Name, list[Any]] | None = None
    """Trust anchors (DS/DNSKEY by name): when set, every positive answer is also checked
    here, from an anchor down; None: the resolver's AD bit (loopback only)."""
    name: str = field(default="smimea", init=False)
    _trusted: dict[dns.name.Name, tuple[dns.rrset.RRset, float]] = field(
        default_factory=dict, init=False, repr=False)
    """DNSKEY sets our own check trusted, and until when (POSIX time): see :class:`_Chain`."""
    _first: int = field(default=0, init=False, repr=False)
    """The resolver that answered last: asked first next time (a dead first resolver costs
    its timeout once, not on every query of every lookup)."""

    @classmethod
    def from_config(cls, config: Config, *, store: Store | None, data_dir: Path
                    ) -> SmimeaSource | None:
        """The source ``[directory.dns]`` sets up, or None without that table.

        Raises:
            ConfigError: a resolver that is not an IP address, a bad port or timeout, an
                unreadable trust anchor file, or a resolver off this host without one.
        """
        dns_config = config.directory.dns if config.directory is not None else None
        if dns_config is None:
            return None
        if not dns_config.resolvers:
            raise ConfigError("directory.dns.resolvers is empty: name at least one resolver")
        for resolver in dns_config.resolvers:
            try:
                ipaddress.ip_address(resolver)
            except ValueError:
                raise ConfigError(f"directory.dns.resolvers: {resolver!r} is not an IP"
                                  " address") from None
        if not 0 < dns_config.port < 65536:
            raise ConfigError(f"directory.dns.port {dns_config.port} is not a port number")
        if not dns_config.timeout > 0:
            raise ConfigError("directory.dns.timeout must be more than 0 seconds")
        anchors = (_read_anchors(dns_config.trust_anchor_file)
                   if dns_config.trust_anchor_file is not None else None)
        remote = [r for r in dns_config.resolvers if not _loopback(r)]
        if remote and anchors is None:
            raise ConfigError(
                f"directory.dns.resolvers: {remote[0]} is not on this host, and its AD bit"
                " would cross the network unauthenticated: set directory.dns.trust_anchor_file"
                " (e.g. /usr/share/dns/root.key) so smimekit checks the signatures itself, or"
                " use a validating resolver on 127.0.0.1")
        return cls(tuple(dns_config.resolvers), dns_config.port, dns_config.timeout, anchors)

    # -- the question ------------------------------------------------------------------

    def find(self, address: str) -> Found:
        """The certificates in the SMIMEA records for ``address``; an empty answer when the
        signed zone says there are none.

        Raises:
            DirectoryError: no resolver answered, the answer is not DNSSEC-validated
                (unsigned zone, non-validating resolver), bogus (SERVFAIL, a signature that
                fails our own check), or the address is not one.
        """
        local, _ = _split(address)
        owners = [owner_name(address)]
        if local != local.lower():
            owners.append(owner_name(f"{local.lower()}@{address.rpartition('@')[2]}"))
        notes: list[str] = []
        for owner in owners:
            rrset = self._smimea(owner)
            if rrset is not None:
                return self._candidates(owner, rrset, notes)
            notes.append(f"no SMIMEA record at {owner} (DNSSEC-validated denial)")
        return Found([], tuple(notes))

    def _smimea(self, owner: dns.name.Name) -> dns.rrset.RRset | None:
        response, _ = self._ask(owner, dns.rdatatype.SMIMEA)
        what = f"{owner} SMIMEA"
        if response.rcode() == dns.rcode.NXDOMAIN:
            return None
        # The records at the owner name, or at the end of its CNAME chain; nothing else in
        # the answer section is ours to take.
        name = owner
        for _ in range(_MAX_CHAIN):
            cname = _rrset(response, name, dns.rdatatype.CNAME)
            if cname is None:
                break
            name = cname[0].target
        rrset = _rrset(response, name, dns.rdatatype.SMIMEA)
        if rrset is None:
            return None
        if self.anchors is not None:
            _Chain(self).check_answer(response, what)
        return rrset

    def _ask(self, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType
             ) -> tuple[dns.message.Message, str]:
        """The first resolver's validated answer (AD set, NOERROR or NXDOMAIN)."""
        what = f"{qname} {dns.rdatatype.to_text(rdtype)}"
        failures: list[str] = []
        count = len(self.resolvers)
        for index in [(self._first + i) % count for i in range(count)]:
            resolver = self.resolvers[index]
            query = dns.message.make_query(qname, rdtype, want_dnssec=True,
                                           payload=_EDNS_PAYLOAD)
            query.flags |= dns.flags.AD  # RFC 6840 5.7: tell us whether it validated
            where = f"{resolver}:{self.port}" if ":" not in resolver else \
                f"[{resolver}]:{self.port}"
            try:
                response, _ = dns.query.udp_with_fallback(query, resolver, self.timeout,
                                                          self.port)
            except dns.exception.Timeout:
                failures.append(f"{where} did not answer within {self.timeout:g} s")
                continue
            except ConnectionRefusedError:
                failures.append(f"{where} refused (no DNS server listens there)")
                continue
            except OSError as exc:
                failures.append(f"{where}: {exc.strerror or exc}")
                continue
            except dns.exception.DNSException as exc:
                failures.append(f"{where} sent no usable DNS answer ({exc})")
                continue
            self._first = index
            return self._checked(response, where, what), resolver
        raise DirectoryError(f"no DNS resolver answered for {what}: " + "; ".join(failures),
                             source="smimea")

    def _checked(self, response: dns.message.Message, where: str, what: str
                 ) -> dns.message.Message:
        rcode = response.rcode()
        if rcode == dns.rcode.SERVFAIL:
            ede = _ede(response)
            dnssec = any(isinstance(o, dns.edns.EDEOption) and int(o.code) in _DNSSEC_EDE
                         for o in response.options)
            cause = ("DNSSEC validation failed (bogus signatures)" if dnssec else
                     "DNSSEC validation failed (bogus) or the zone's servers cannot be reached")
            raise DirectoryError(f"refused {what}: {cause}; {where} answered SERVFAIL"
                                 + (f" ({ede})" if ede else ""), source="smimea")
        if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            raise DirectoryError(f"{where} answered {dns.rcode.to_text(rcode)} for {what}",
                                 source="smimea")
        if not response.flags & dns.flags.AD:
            raise DirectoryError(
                f"refused {what}: the answer from {where} is not DNSSEC-validated (no AD bit):"
                " the zone is unsigned (or the resolver does not validate), and SMIMEA is only"
                " trusted when signed", source="smimea")
        return response

    def _candidates(self, owner: dns.name.Name, rrset: Iterable[Any], notes: list[str]
                    ) -> Found:
        certificates: list[tuple[int, int, int, x509.Certificate]] = []
        for rdata in rrset:
            kind = f"{rdata.usage} {rdata.selector} {rdata.mtype}"
            if rdata.selector != SELECTOR_CERT or rdata.mtype != MATCH_FULL:
                # A hash or a bare SPKI can only confirm a certificate found elsewhere;
                # there is nothing here to encrypt to.
                notes.append(f"SMIMEA {kind} at {owner}: a hash or public key, not a"
                             " certificate; skipped")
                continue
            try:
                cert = x509.load_der_x509_certificate(rdata.cert)
            except ValueError:
                notes.append(f"SMIMEA {kind} at {owner}: not a DER certificate; skipped")
                continue
            certificates.append((rdata.usage, rdata.selector, rdata.mtype, cert))
        # Trust-anchor usages (0, 2) name a CA certificate: it goes with the end-entity
        # ones as chain, never as a recipient.
        chain = tuple(c for u, _, _, c in certificates if u in (USAGE_PKIX_TA, USAGE_DANE_TA))
        candidates = [
            Candidate(certificate=c, source=self.name, chain=chain,
                      where=f"{owner} SMIMEA {u} {s} {m}")
            for u, s, m, c in certificates if u in (USAGE_PKIX_EE, USAGE_DANE_EE)]
        for u, s, m, _ in certificates:
            if u not in (USAGE_PKIX_TA, USAGE_PKIX_EE, USAGE_DANE_TA, USAGE_DANE_EE):
                notes.append(f"SMIMEA {u} {s} {m} at {owner}: unknown usage; skipped")
        return Found(candidates, tuple(notes))


class _Chain:
    """Our own DNSSEC check of an answer, from a configured trust anchor down (RFC 4035
    section 5): every RRset's RRSIG verified with its signer's DNSKEY set, which is trusted
    through a DS set the parent signed, up to a DS or DNSKEY in the anchor file.

    A zone's DNSKEY set, once trusted, is kept in the source (``_trusted``) until the first
    of its TTL, the expiry of a signature it rests on, or that of its parent's keys: later
    lookups then cost one query and one signature."""

    def __init__(self, source: SmimeaSource) -> None:
        assert source.anchors is not None
        self.source = source
        self.anchors = source.anchors
        self.entry: dict[dns.name.Name, tuple[dns.rrset.RRset, float]] = {}
        self.now = time.time()

    def check_answer(self, response: dns.message.Message, what: str) -> None:
        sigs = [r for r in response.answer if r.rdtype == dns.rdatatype.RRSIG]
        data = [r for r in response.answer if r.rdtype != dns.rdatatype.RRSIG]
        for rrset in data:
            if not any(rrset.name.is_subdomain(anchor) for anchor in self.anchors):
                raise self._bogus(what, f"no trust anchor in directory.dns.trust_anchor_file"
                                        f" covers {rrset.name}")
            self._verify(rrset, sigs, what, 0)

    def _bogus(self, what: str, why: str) -> DirectoryError:
        return DirectoryError(f"refused {what}: our own DNSSEC check failed: {why}",
                              source="smimea")

    def _verify(self, rrset: dns.rrset.RRset, sigs: Sequence[dns.rrset.RRset], what: str,
                depth: int) -> float:
        """Check ``rrset`` against one of its RRSIGs; until when that holds (POSIX time)."""
        covering = [s for s in sigs if s.name == rrset.name and s.covers == rrset.rdtype]
        if not covering:
            raise self._bogus(what, f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)}"
                                    " came without an RRSIG")
        failures = []
        for sigset in covering:
            for rrsig in sigset:
                signer = rrsig.signer
                if not rrset.name.is_subdomain(signer):
                    failures.append(f"signer {signer} is not above {rrset.name}")
                    continue
                keys, keys_until = self._zone_keys(signer, what, depth + 1)
                try:
                    dns.dnssec.validate(rrset, (sigset.name, dns.rdataset.from_rdata_list(
                        sigset.ttl, [rrsig])), {signer: keys}, now=self.now)
                except (dns.exception.ValidationFailure, dns.exception.DeniedByPolicy,
                        dns.exception.UnsupportedAlgorithm) as exc:
                    failures.append(f"RRSIG by {signer} key {rrsig.key_tag}: {exc}")
                    continue
                return min(keys_until, float(rrsig.expiration), self.now + rrset.ttl)
        raise self._bogus(what, f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)}: "
                          + "; ".join(failures))

    def _zone_keys(self, zone: dns.name.Name, what: str, depth: int
                   ) -> tuple[dns.rrset.RRset, float]:
        """``zone``'s DNSKEY set, trusted through an anchor or a DS set its parent signed,
        and until when."""
        if zone in self.entry:  # the secure entry point(s), for the DNSKEY set's own RRSIG
            return self.entry[zone]
        cached = self.source._trusted.get(zone)
        if cached is not None and cached[1] > self.now:
            return cached
        if depth > _MAX_CHAIN:
            raise self._bogus(what, f"more than {_MAX_CHAIN} zone cuts to a trust anchor")
        response, _ = self.source._ask(zone, dns.rdatatype.DNSKEY)
        dnskey = _rrset(response, zone, dns.rdatatype.DNSKEY)
        if dnskey is None:
            raise self._bogus(what, f"{zone} has no DNSKEY set")
        until = float("inf")
        if zone in self.anchors:
            ds_set: list[Any] = [a for a in self.anchors[zone] if a.rdtype == dns.rdatatype.DS]
            anchored_keys = [a for a in self.anchors[zone] if a.rdtype == dns.rdatatype.DNSKEY]
        else:
            if zone == dns.name.root:
                raise self._bogus(what, "no trust anchor in directory.dns.trust_anchor_file"
                                        " covers this name")
            ds_response, _ = self.source._ask(zone, dns.rdatatype.DS)
            ds_rrset = _rrset(ds_response, zone, dns.rdatatype.DS)
            if ds_rrset is None:
                raise self._bogus(what, f"{zone} has no DS in its parent: the chain from the"
                                        " trust anchor is broken there")
            ds_sigs = [r for r in ds_response.answer if r.rdtype == dns.rdatatype.RRSIG]
            until = self._verify(ds_rrset, ds_sigs, what, depth)
            ds_set, anchored_keys = list(ds_rrset), []
        trusted = [k for k in dnskey if k in anchored_keys or any(
            _ds_matches(zone, k, ds) for ds in ds_set)]
        if not trusted:
            raise self._bogus(what, f"no DNSKEY of {zone} matches its DS or trust anchor")
        sigs = [r for r in response.answer if r.rdtype == dns.rdatatype.RRSIG]
        self.entry[zone] = (dns.rrset.from_rdata_list(zone, dnskey.ttl, trusted), until)
        try:
            until = min(until, self._verify(dnskey, sigs, what, depth))
        finally:
            del self.entry[zone]
        self.source._trusted[zone] = (dnskey, until)
        return dnskey, until


def _rrset(response: dns.message.Message, name: dns.name.Name,
           rdtype: dns.rdatatype.RdataType) -> dns.rrset.RRset | None:
    return next((r for r in response.answer if r.name == name and r.rdtype == rdtype), None)


def _ds_matches(zone: dns.name.Name, key: Any, ds: Any) -> bool:
    try:
        return bool(dns.dnssec.make_ds(zone, key, ds.digest_type) == ds)
    except (dns.exception.DNSException, ValueError):
        return False
