"""The checks of ``smimekit assess``: each reads the deployment and returns one Finding.

A check only reads: the store (through :class:`Facts`, loaded once), the CA directory, the
escrow state, the trust store, the configuration and, when given, mail archives (through
archive/classify.py's ``scan``: no key is used). docs/assess.md explains every id.

Scoring: a passed check earns its whole ``weight``, a failed one nothing; a check whose
subject is absent (no archive given) is a fact with weight 0.
"""

from __future__ import annotations

import datetime as dt
import inspect
import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID
from sqlalchemy import select

from smimekit.audit.model import Domain, DrillReport, Finding, Severity
from smimekit.config import Config
from smimekit.errors import CAError, EscrowError
from smimekit.store import Store, schema

# how the thresholds below were chosen is written next to each check in docs/assess.md
COVERAGE_TARGET = 0.95
"""Share of mailboxes that must hold a valid signing and encryption certificate."""
OUR_CA_TARGET = 0.90
"""Share of certified internal mailboxes whose certificates must come from our CA."""
RUNWAY_DAYS = 3
"""Days the newest CRL of every issuer must still be good for if the CA went dark now."""
DRILL_DAYS = 180
"""Officers must have checked their shares (``escrow check-share``) within this time."""
DRILL_REPORT_DAYS = 90
"""The crisis drill must have run within this time."""
CRL_AFTER_REVOKE = dt.timedelta(hours=24)
"""S/MIME BR 4.9.7: a new CRL within 24 hours of recording a revocation."""
EXPIRY_WINDOWS = (30, 60, 90)
MIN_RSA = 2048
_LIST = 12
"""At most this many names in one line of evidence."""

_ISSUANCE_ACTIONS = frozenset({"ca.issue", "ca.enroll", "ca.renew"})
_ML_KEM = frozenset({"2.16.840.1.101.3.4.4.2", "2.16.840.1.101.3.4.4.3"})
_ML_DSA = frozenset({"2.16.840.1.101.3.4.3.17", "2.16.840.1.101.3.4.3.18",
                     "2.16.840.1.101.3.4.3.19"})


def _names(items: Iterable[str]) -> str:
    items = sorted(set(items))
    more = len(items) - _LIST
    return ", ".join(items[:_LIST]) + (f" and {more} more" if more > 0 else "")


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 1.0


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class Cert:
    """A certificate in the store with what the checks need of it."""

    fingerprint: str
    cert: x509.Certificate
    emails: tuple[str, ...]
    source: str


@dataclass
class Facts:
    """What the checks read, loaded once per assessment."""

    data_dir: Path
    store: Store
    config: Config
    at: dt.datetime
    domains: tuple[str, ...]
    archives: tuple[Path, ...] = ()
    drill: DrillReport | None = None
    scans: list[dict[str, Any]] = field(default_factory=list)

    # -- the CA ------------------------------------------------------------------------

    @cached_property
    def home(self) -> Any:
        from smimekit.ca.home import CAHome

        home = CAHome(self.data_dir)
        return home if home.exists() else None

    @cached_property
    def ca_certs(self) -> dict[str, x509.Certificate]:
        if self.home is None:
            return {}
        return {name: self.home.certificate(name) for name in ("root", "issuing")}

    @cached_property
    def issuing_fingerprint(self) -> str | None:
        issuing = self.ca_certs.get("issuing")
        return issuing.fingerprint(hashes.SHA256()).hex() if issuing else None

    def ours(self, cert: x509.Certificate) -> bool:
        return any(cert.issuer == ca.subject for ca in self.ca_certs.values())

    # -- the store ---------------------------------------------------------------------

    @cached_property
    def users(self) -> list[tuple[str, str | None, str | None]]:
        u = schema.users
        with self.store.read() as conn:
            rows = conn.execute(select(u.c.email, u.c.name, u.c.department)
                                .order_by(u.c.email)).all()
        return [(row[0].lower(), row[1], row[2]) for row in rows]

    @cached_property
    def certificates(self) -> list[Cert]:
        c = schema.certificates
        with self.store.read() as conn:
            rows = conn.execute(select(c.c.fingerprint, c.c.der, c.c.emails, c.c.source)).all()
        out = []
        for fp, der, emails, source in rows:
            try:
                cert = x509.load_der_x509_certificate(der)
            except ValueError:
                continue
            out.append(Cert(fp, cert, tuple(e.lower() for e in json.loads(emails)), source))
        return out

    @cached_property
    def issued(self) -> list[Any]:
        return self.store.issued_records(live_only=False)

    @cached_property
    def live_issued(self) -> list[Any]:
        return [r for r in self.issued if r.revoked_at is None and r.renewed_by is None
                and _utc(r.not_after) > self.at]

    @cached_property
    def revoked_fingerprints(self) -> set[str]:
        return {r.fingerprint for r in self.issued if r.revoked_at is not None}

    @cached_property
    def audit(self) -> list[Any]:
        return self.store.audit_entries()

    def internal(self, email: str) -> bool:
        domain = email.rpartition("@")[2].lower()
        return any(domain == d or domain.endswith("." + d) for d in self.domains)

    def host_inside(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return host in ("localhost", "127.0.0.1", "::1") or any(
            host == d or host.endswith("." + d) for d in self.domains)

    def in_use(self, cert: x509.Certificate) -> bool:
        return _utc(cert.not_valid_before_utc) <= self.at < _utc(cert.not_valid_after_utc)

    @cached_property
    def internal_in_use(self) -> list[Cert]:
        """Unexpired certificates in the store for internal addresses, not revoked by us."""
        return [c for c in self.certificates
                if c.source != "harvested" and self.in_use(c.cert)
                and c.fingerprint not in self.revoked_fingerprints
                and any(self.internal(e) for e in c.emails)]


@dataclass(frozen=True)
class Check:
    id: str
    domain: Domain
    title: str
    severity: Severity
    weight: int
    run: Callable[[Facts], tuple[bool, list[str], str, dict[str, Any]]]
    """-> (passed, evidence, remedy, data); the remedy is dropped when passed."""

    def __call__(self, facts: Facts) -> Finding:
        passed, evidence, remedy, data = self.run(facts)
        weight = self.weight if data.get("scored", True) else 0
        data = {k: v for k, v in data.items() if k != "scored"}
        return Finding(self.id, self.domain, self.title, passed, self.severity,
                       tuple(evidence), "" if passed else remedy, weight,
                       weight if passed else 0, data)


Result = tuple[bool, list[str], str, dict[str, Any]]

# -- DPS -------------------------------------------------------------------------------


def internal_ca(f: Facts) -> Result:
    if f.home is None:
        return (False, [f"no CA in {f.data_dir / 'ca'}"],
                "Run 'smimekit ca init' and issue internal certificates from it.",
                {"ca": False})
    certified = {e for c in f.internal_in_use for e in c.emails if f.internal(e)}
    ours = {e for c in f.internal_in_use if f.ours(c.cert) for e in c.emails if f.internal(e)}
    share = _share(len(ours), len(certified))
    root = f.ca_certs["root"].subject.rfc4514_string()
    return (bool(ours) and share >= OUR_CA_TARGET,
            [f"our CA: {root}",
             f"{len(ours)} of {len(certified)} certified internal mailboxes hold a"
             f" certificate from it ({_pct(share)}; target {_pct(OUR_CA_TARGET)})"],
            "Issue internal mailboxes' certificates from our CA ('smimekit ca enroll') and"
            " retire the others.",
            {"ca": True, "certified": len(certified), "ours": len(ours), "share": share})


def outside_cas(f: Facts) -> Result:
    from smimekit.validation.trust import TrustStore

    anchors = TrustStore(f.data_dir).anchors()
    foreign_anchors = [a.subject.rfc4514_string() for a in anchors
                       if not any(a.subject == ca.subject for ca in f.ca_certs.values())]
    outside = [c for c in f.internal_in_use if not f.ours(c.cert)]
    by_issuer = Counter(c.cert.issuer.rfc4514_string() for c in outside)
    evidence = [f"{len(foreign_anchors)} trust anchor(s) not operated by us"
                + (f": {_names(foreign_anchors)}" if foreign_anchors else "")]
    evidence += [f"{n} internal certificate(s) in use issued by {issuer}"
                 for issuer, n in by_issuer.most_common()]
    if not outside:
        evidence.append("no internal certificate in use comes from an outside CA")
    return (not outside, evidence,
            "Re-issue these mailboxes' certificates from our CA; keep outside anchors only"
            " for partners' mail.",
            {"anchors": foreign_anchors, "certificates": dict(by_issuer),
             "mailboxes": sorted({e for c in outside for e in c.emails})})


def _urls(cert: x509.Certificate) -> list[str]:
    out: list[str] = []
    try:
        cdp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints)
        for point in cdp.value:
            out += [n.value for n in point.full_name or () if isinstance(
                n, x509.UniformResourceIdentifier)]
    except x509.ExtensionNotFound:
        pass
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess)
        out += [d.access_location.value for d in aia.value
                if d.access_method in (AuthorityInformationAccessOID.OCSP,
                                       AuthorityInformationAccessOID.CA_ISSUERS)
                and isinstance(d.access_location, x509.UniformResourceIdentifier)]
    except x509.ExtensionNotFound:
        pass
    return out


def revocation_urls(f: Facts) -> Result:
    certs = list(f.ca_certs.values()) + [c.cert for c in f.internal_in_use]
    urls = sorted({u for cert in certs for u in _urls(cert)})
    outside = sorted({u for u in urls if not f.host_inside(urlsplit(u).hostname or "")})
    hosts = sorted({urlsplit(u).hostname or u for u in outside})
    return (not outside,
            [f"{len(urls)} CRL/OCSP/AIA URL(s) in our CA and the internal certificates in use",
             f"organisation's domains: {', '.join(f.domains) or '(none)'}",
             (f"{len(outside)} on hosts outside them: {_names(hosts)}" if outside
              else "every host is inside them")],
            "Serve CRLs, OCSP and CA certificates from the organisation's own hosts"
            " ('smimekit ca serve') and re-issue certificates naming other hosts.",
            {"urls": urls, "outside": outside})


def _later(item: dict[str, Any], key: str, when: dt.datetime | None) -> None:
    if when is not None and (item.get(key) is None or when.isoformat() > item[key]):
        item[key] = when.isoformat()


def _cached_revocation(f: Facts, runway: dict[str, dict[str, Any]]) -> None:
    """CRLs and OCSP answers kept in ``<data-dir>/revocation-cache`` (validation/
    revocation.py's disk cache), by issuer; an OCSP answer's issuer is found by its issuer
    name hash among the issuers the store knows."""
    cache = f.data_dir / "revocation-cache"
    if not cache.is_dir():
        return
    names = {c.cert.issuer for c in f.certificates} | {
        c.subject for c in f.ca_certs.values()}
    by_hash: dict[bytes, str] = {}
    for name in names:
        # the CertID's issuerNameHash (RFC 6960 4.1.1): a lookup key here, not a signature
        for algorithm in (hashes.SHA1(), hashes.SHA256()):  # noqa: S303
            digest = hashes.Hash(algorithm)
            digest.update(name.public_bytes())
            by_hash[digest.finalize()] = name.rfc4514_string()
    for path in sorted(cache.rglob("*.der")):
        if not path.is_file():
            continue
        data = path.read_bytes()
        try:
            crl = x509.load_der_x509_crl(data)
        except ValueError:
            pass
        else:
            _later(runway.setdefault(crl.issuer.rfc4514_string(), {}), "crl_next_update",
                   crl.next_update_utc)
            continue
        try:
            answer = ocsp.load_der_ocsp_response(data)
            if answer.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
                continue
            for single in answer.responses:
                issuer = by_hash.get(single.issuer_name_hash,
                                     f"issuer name hash {single.issuer_name_hash.hex()}")
                _later(runway.setdefault(issuer, {}), "ocsp_next_update",
                       single.next_update_utc)
        except ValueError:
            continue


def _host_of(endpoint: str) -> str:
    """The host of a URL or of ``host:port`` / ``[v6]:port``."""
    if "://" in endpoint:
        return urlsplit(endpoint).hostname or ""
    host = endpoint.rsplit(":", 1)[0] if endpoint.count(":") == 1 else endpoint
    return host.strip("[]")


def _private(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_private
    except ValueError:
        return False


def outside_services(f: Facts) -> Result:
    c = f.config
    used: list[tuple[str, str]] = []
    if c.directory is not None and c.directory.ldap is not None:
        used.append(("[directory.ldap] url", c.directory.ldap.url))
    if c.directory is not None and c.directory.dns is not None:
        used += [("[directory.dns] resolvers", r) for r in c.directory.dns.resolvers]
    if c.sync is not None and c.sync.ldap is not None:
        used.append(("[sync.ldap] url", c.sync.ldap.url))
    if c.gateway is not None:
        used.append(("[gateway] next_hop", c.gateway.next_hop))
    if not used:
        return (True, ["no directory, sync or gateway configured (--config)"], "",
                {"scored": False})
    outside = [(what, value) for what, value in used
               if not (f.host_inside(_host_of(value)) or _private(_host_of(value)))]
    return (not outside,
            [f"{len(used)} service(s) in the configuration"]
            + [f"{what} = {value}: outside the organisation's domains and private networks"
               for what, value in outside],
            "Run the directory, DNS resolver and next hop in-house (or on the private"
            " network) so that mail keeps flowing when the outside is cut off.",
            {"services": [v for _, v in used], "outside": [v for _, v in outside]})


def dark_ca_runway(f: Facts) -> Result:
    runway: dict[str, dict[str, Any]] = {}
    ours: list[str] = []
    if f.home is not None:
        root, issuing = f.ca_certs["root"], f.ca_certs["issuing"]
        ours = [issuing.subject.rfc4514_string(), root.subject.rfc4514_string()]
        latest = f.store.latest_crl(f.issuing_fingerprint or "", with_der=False)
        _later(runway.setdefault(ours[0], {}), "crl_next_update",
               _utc(latest.next_update) if latest is not None and latest.next_update
               else None)
        try:
            root_next: dt.datetime | None = x509.load_der_x509_crl(
                f.home.root_crl()).next_update_utc
        except (ValueError, CAError):  # a missing or damaged root CRL: no runway
            root_next = None
        _later(runway.setdefault(ours[1], {}), "crl_next_update", root_next)
    _cached_revocation(f, runway)
    evidence, short = [], []
    for name, item in sorted(runway.items(), key=lambda kv: (kv[0] not in ours, kv[0])):
        item.setdefault("crl_next_update", None)
        item.setdefault("ocsp_next_update", None)
        ends = [v for v in (item["crl_next_update"], item["ocsp_next_update"]) if v]
        whose = "" if name in ours else " (outside CA, cached)"
        if not ends:
            item["days"] = 0.0
            evidence.append(f"{name}{whose}: no current CRL or OCSP answer")
            short += [name] if name in ours else []
            continue
        last = max(ends)
        days = (dt.datetime.fromisoformat(last) - f.at).total_seconds() / 86400
        item["days"] = round(days, 2)
        what = ", ".join(f"newest {k} good until {v}" for k, v in (
            ("CRL", item["crl_next_update"]), ("OCSP answer", item["ocsp_next_update"])) if v)
        evidence.append(f"{name}{whose}: {what} ({max(days, 0):.1f} days)")
        if days < RUNWAY_DAYS and name in ours:
            short.append(name)
    if not ours:
        evidence.append("no CA of ours: nothing clients could validate against if it went"
                        " dark")
    return (bool(ours) and not short, evidence,
            f"Publish CRLs early enough that each has at least {RUNWAY_DAYS} days left"
            " ('smimekit ca crl', 'ca root-crl'), and keep copies where clients fetch them.",
            {"issuers": runway, "short": short})


def root_offline(f: Facts) -> Result:
    if f.home is None:
        return False, ["no CA"], "Create the CA, then export its root key.", {"scored": False}
    online = f.home.has_root_key()
    return (not online,
            [f"root key file {'present' if online else 'absent'} in {f.home.path}"],
            "Move the root key offline: 'smimekit ca export-root --remove' onto removable"
            " media kept in a safe.", {"online": online})


def ca_key_token(f: Facts) -> Result:
    if f.home is None:
        return False, ["no CA"], "Create the CA with its key in a token.", {"scored": False}
    token = f.home.config().pkcs11
    return (token is not None,
            [f"issuing key in token {token.token!r} (module {token.module})" if token
             else "issuing key held in software (PKCS#12 in the CA directory)"],
            "Keep the issuing key in a PKCS#11 token or HSM ('ca init --pkcs11-module ...').",
            {"token": token.token if token else None})


def _escrow_state(f: Facts) -> tuple[Any, str | None]:
    """(the escrow state or None, why it cannot be trusted or None)."""
    if f.home is None:
        return None, None
    from smimekit.escrow.vault import load_state

    try:
        return load_state(f.home, f.store), None
    except EscrowError as exc:  # escrow.json damaged, rolled back, or not what the log says
        return None, str(exc)


def escrow_threshold(f: Facts) -> Result:
    remedy = ("Put the vault key under escrow with at least two officers needed:"
              " 'smimekit escrow init --threshold M' with M >= 2.")
    state, problem = _escrow_state(f)
    if problem is not None:
        return (False, [f"the escrow state cannot be trusted: {problem}"],
                "Find out who changed escrow.json (smimekit log show) and restore the"
                " generation the audit log records.", {"threshold": None, "shares": None,
                                                       "problem": problem})
    if state is None:
        return (False, ["the vault key is not under escrow (no escrow.json)"], remedy,
                {"threshold": None, "shares": None})
    g = state.active
    m, n = g.threshold, len(g.officers)
    return (2 <= m <= n,
            [f"escrow {state.escrow_id} generation {g.generation}: any {m} of {n} officers"],
            remedy, {"threshold": m, "shares": n})


def escrow_drilled(f: Facts) -> Result:
    state, _problem = _escrow_state(f)
    if state is None:
        return (False, ["no escrow to drill"], "Set up escrow first.", {"scored": False})
    since = f.at - dt.timedelta(days=DRILL_DAYS)
    drilled = {str(e.details.get("officer")) for e in f.audit
               if e.action == "escrow.check-share"
               and dt.datetime.fromisoformat(e.at) >= since
               and e.details.get("generation") == state.active.generation}
    names = [o.name for o in state.active.officers]
    missing = [n for n in names if n not in drilled]
    m = state.active.threshold
    return (len(set(names) - set(missing)) >= m,
            [f"{len(names) - len(missing)} of {len(names)} officers checked their share"
             f" in the last {DRILL_DAYS} days (at least {m} needed)"]
            + ([f"not drilled: {_names(missing)}"] if missing else []),
            "Have every officer run 'smimekit escrow check-share' at least twice a year.",
            {"drilled": sorted(set(names) - set(missing)), "missing": missing})


def key_history(f: Facts) -> Result:
    k = schema.private_keys
    with f.store.read() as conn:
        kept = {row[0] for row in conn.execute(
            select(k.c.certificate_fingerprint).where(k.c.purpose == "encrypt"))}
    enc = [r for r in f.issued if r.purpose in ("encrypt", "both")]
    missing = sorted({r.email for r in enc if r.fingerprint not in kept})
    people = {r.email for r in enc}
    return (not missing,
            [f"{len(enc)} encryption certificate(s) issued to {len(people)} people;"
             f" {len(enc) - sum(1 for r in enc if r.fingerprint not in kept)} keys kept"]
            + ([f"no key kept for: {_names(missing)}"] if missing else []),
            "Deposit the missing encryption keys ('smimekit escrow deposit') or re-issue"
            " with generated keys so that the key history is complete.",
            {"missing": missing})


def _scan(f: Facts) -> list[dict[str, Any]]:
    if not f.scans and f.archives:
        from smimekit.archive.classify import scan

        f.scans.extend(scan(path, store=f.store, now=f.at).to_json() for path in f.archives)
    return f.scans


def archive_readable(f: Facts) -> Result:
    scans = _scan(f)
    if not scans:
        return (True, ["no archive given (--archive)"], "", {"scored": False})
    total: Counter[str] = Counter()
    for s in scans:
        total.update(s["by_readability"])
    n = sum(total.values())
    lost = total.get("unreadable", 0)
    return (lost == 0,
            [f"{n} encrypted message(s) in {len(scans)} archive(s): {total.get('now', 0)}"
             f" readable now, {total.get('escrow', 0)} only via escrow, {lost} lost"],
            "Find the keys of the lost messages (old PKCS#12 files, escrow deposits) and"
            " re-encrypt the archive ('smimekit archive reencrypt').",
            {"now": total.get("now", 0), "escrow": total.get("escrow", 0), "lost": lost})


_WEAK = ("rc2", "3des", "cbc-no-integrity", "rsa-under-2048")


def archive_weak(f: Facts) -> Result:
    scans = _scan(f)
    if not scans:
        return (True, ["no archive given (--archive)"], "", {"scored": False})
    flags: Counter[str] = Counter()
    for s in scans:
        flags.update({k: v for k, v in s["flags"].items() if k in _WEAK})
    return (not flags,
            [f"{flags[w]} message(s) {w}" for w in _WEAK if flags[w]]
            or ["no message uses RC2, 3DES, CBC without integrity or RSA < 2048"],
            "Re-encrypt these messages to current certificates with AES-256-GCM"
            " ('smimekit archive reencrypt').", dict(flags))


def _spki_oid(cert: x509.Certificate) -> str:
    return cert.public_key_algorithm_oid.dotted_string


def pq_readiness(f: Facts) -> Result:
    live = [c for c in f.internal_in_use]
    pq = [c for c in live if _spki_oid(c.cert) in _ML_KEM | _ML_DSA]
    messages = pq_messages = 0
    for s in _scan(f):
        for kt, n in s["by_key_transport"].items():
            messages += n
            pq_messages += n if "ml-kem" in kt.lower() else 0
    share = _share(len(pq), len(live))
    return (bool(pq),
            [f"{len(pq)} of {len(live)} internal certificates in use have ML-KEM or ML-DSA"
             f" keys ({_pct(share)})",
             f"{pq_messages} of {messages} archived recipient slots use ML-KEM"],
            "Start issuing ML-DSA signing and ML-KEM encryption certificates to those whose"
            " mail must stay confidential for years ('ca issue --key-type ml-dsa-65"
            " --key-type ml-kem-768').",
            {"keys": len(pq), "of_keys": len(live), "messages": pq_messages,
             "of_messages": messages})


def drill_recent(f: Facts) -> Result:
    d = f.drill
    remedy = "Run 'smimekit drill' and fix the steps that fail."
    if d is None:
        return False, ["no drill report (<data-dir>/drill/latest.json)"], remedy, {}
    age = (f.at - _utc(d.started)).days
    failed = [s.name for s in d.steps if not s.ok]
    return (d.ok and age <= DRILL_REPORT_DAYS,
            [f"last drill {d.started.isoformat()} ({age} days ago), {d.isolation}",
             f"{len(d.steps) - len(failed)} of {len(d.steps)} steps worked"]
            + ([f"failed: {', '.join(failed)}"] if failed else []),
            remedy, {"age_days": age, "failed": failed})


# -- IAT -------------------------------------------------------------------------------


def _usable(f: Facts) -> dict[str, set[str]]:
    """email -> purposes held by a certificate valid now (ours: not revoked or replaced;
    others: unexpired)."""
    out: dict[str, set[str]] = defaultdict(set)
    for r in f.live_issued:
        out[r.email.lower()] |= {"sign", "encrypt"} if r.purpose == "both" else {r.purpose}
    for c in f.internal_in_use:
        if f.ours(c.cert):
            continue
        try:
            ku = c.cert.extensions.get_extension_for_class(x509.KeyUsage).value
            purposes = ({"sign"} if ku.digital_signature else set()) | (
                {"encrypt"} if ku.key_encipherment or ku.key_agreement else set())
        except x509.ExtensionNotFound:
            purposes = {"sign", "encrypt"}
        for e in c.emails:
            out[e] |= purposes
    return out


def coverage(f: Facts) -> Result:
    usable = _usable(f)
    by_dept: dict[str, dict[str, int]] = {}
    for email, _name, dept in f.users:
        row = by_dept.setdefault(dept or "(none)", {"mailboxes": 0, "sign": 0, "encrypt": 0,
                                                    "both": 0})
        row["mailboxes"] += 1
        have = usable.get(email, set())
        row["sign"] += "sign" in have
        row["encrypt"] += "encrypt" in have
        row["both"] += {"sign", "encrypt"} <= have
    total = sum(r["mailboxes"] for r in by_dept.values())
    both = sum(r["both"] for r in by_dept.values())
    share = _share(both, total)
    low = [d for d, r in by_dept.items() if _share(r["both"], r["mailboxes"]) < COVERAGE_TARGET]
    return (total > 0 and share >= COVERAGE_TARGET,
            [f"{both} of {total} mailboxes hold a valid signing and encryption certificate"
             f" ({_pct(share)}; target {_pct(COVERAGE_TARGET)})"]
            + [f"{d}: {by_dept[d]['both']} of {by_dept[d]['mailboxes']}" for d in sorted(low)],
            "Enrol the mailboxes without certificates ('smimekit ca enroll') and renew or"
            " replace revoked and expired ones.",
            {"share": share, "departments": by_dept})


def expiring(f: Facts) -> Result:
    counts = {w: 0 for w in EXPIRY_WINDOWS}
    soon: list[str] = []
    for r in f.live_issued:
        days = (_utc(r.not_after) - f.at).total_seconds() / 86400
        for w in EXPIRY_WINDOWS:
            counts[w] += days <= w
        if days <= EXPIRY_WINDOWS[0]:
            soon.append(r.email)
    return (not soon,
            [f"{counts[w]} live certificate(s) end within {w} days" for w in EXPIRY_WINDOWS]
            + ([f"within {EXPIRY_WINDOWS[0]} days: {_names(soon)}"] if soon else []),
            "Renew them now ('smimekit ca renew --due 30d') and send notices"
            " ('ca expiring --notify').", {str(w): counts[w] for w in EXPIRY_WINDOWS})


def identity_checks(f: Facts) -> Result:
    known = {i.email.lower() for i in f.store.identities().values()}
    vetted = {e.subject.lower() for e in f.audit if e.action in _ISSUANCE_ACTIONS
              and (e.details.get("identity") or e.details.get("vetting"))}
    people = {r.email.lower() for r in f.live_issued}
    unchecked = sorted(people - known - vetted)
    return (not unchecked,
            [f"{len(people) - len(unchecked)} of {len(people)} certified people have a"
             " recorded identity (ca sync from the HR/LDAP source, or a vetting note in the"
             " issuance's audit row)"]
            + ([f"no identity record: {_names(unchecked)}"] if unchecked else []),
            "Issue through 'smimekit ca sync' from the authoritative identity source so each"
            " issuance traces to a verified identity.", {"unchecked": unchecked})


def dual_key(f: Facts) -> Result:
    both = sorted({r.email for r in f.live_issued if r.purpose == "both"})
    people = {r.email for r in f.live_issued}
    return (not both,
            [f"{len(people) - len(both)} of {len(people)} people hold separate signing and"
             " encryption keys"] + ([f"one key for both: {_names(both)}"] if both else []),
            "Re-issue with separate keys ('ca issue --purpose dual'): an escrowed encryption"
            " key must not be able to sign.", {"both": both})


def signature_policy(f: Facts) -> Result:
    from smimekit import api
    from smimekit.directory import harvest
    from smimekit.validation import path as vpath

    # what runs without --allow-legacy: path validation, verify and harvesting (the gateway
    # and the message commands call these with their defaults)
    lenient = [f"{fn.__module__}.{fn.__name__}" for fn in (
        vpath.validate, api.verify, api.decrypt_verify, harvest.harvest)
        if inspect.signature(fn).parameters["allow_legacy"].default is not False]
    legacy_default = bool(lenient)
    weak: list[str] = []
    for c in f.internal_in_use:
        key = c.cert.public_key()
        algo = c.cert.signature_hash_algorithm
        if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA:
            weak.append(f"{c.emails[0] if c.emails else c.fingerprint[:16]}"
                        f" (RSA {key.key_size})")
        elif algo is not None and algo.name in ("sha1", "md5"):
            weak.append(f"{c.emails[0] if c.emails else c.fingerprint[:16]} ({algo.name})")
    ok = vpath.MIN_RSA_BITS >= MIN_RSA and not legacy_default and not weak
    return (ok,
            [f"validation refuses RSA < {vpath.MIN_RSA_BITS} and SHA-1/MD5 signatures unless"
             " --allow-legacy is asked for" if not lenient
             else f"legacy accepted by default in: {', '.join(lenient)}",
             (f"{len(weak)} internal certificate(s) in use that only legacy validation"
              f" accepts: {_names(weak)}" if weak
              else "no internal certificate in use needs SHA-1 or RSA < 2048")],
            "Replace these certificates; never run verify with --allow-legacy in production.",
            {"weak": weak, "lenient_defaults": lenient})


def audit_log(f: Facts) -> Result:
    chain = f.store.verify_audit_log()
    evidence = [f"{len(f.audit)} audit rows; hash chain "
                + ("intact" if not chain else f"broken: {len(chain)} problem(s)")]
    evidence += [str(p) for p in chain[:_LIST]]
    wrong, unanchored = 0, 0
    anchored = False
    if f.home is None or not f.home.has_audit_key():
        evidence.append("no audit key: rows are not anchored")
    else:
        try:
            report = f.store.check_audit_anchors(f.home.audit_key())
        except CAError as exc:  # a damaged key file: no anchor can be checked
            evidence.append(f"the audit key cannot be read: {exc}")
        else:
            wrong, unanchored = len(report.problems), len(report.unanchored)
            anchored = not wrong and not unanchored
            evidence.append(f"MACs under the audit key: {wrong} wrong, {unanchored} row(s)"
                            " unanchored")
    return (not chain and anchored, evidence,
            "Investigate the broken rows (smimekit log verify); create the audit key"
            " ('log init-key') and anchor the log ('log anchor').",
            {"problems": len(chain) + wrong, "unanchored": unanchored})


def revocation_published(f: Facts) -> Result:
    late: list[str] = []
    r = schema.revocations
    p = schema.crl_publications
    with f.store.read() as conn:
        revs = conn.execute(select(r.c.serial, r.c.issuer_fingerprint, r.c.revoked_at)).all()
        crls = conn.execute(select(p.c.issuer_fingerprint, p.c.this_update)).all()
    times: dict[str, list[dt.datetime]] = defaultdict(list)
    for issuer, this_update in crls:
        times[issuer].append(_utc(this_update))
    for serial, issuer, revoked_at in revs:
        at = _utc(revoked_at)
        ok = any(at <= t <= at + CRL_AFTER_REVOKE for t in times[issuer])
        if not ok and f.at - at > CRL_AFTER_REVOKE:  # within the 24 hours it is not late yet
            late.append(serial)
    return (not late,
            [f"{len(revs)} revocation(s); {len(late)} not on a CRL published within"
             f" {int(CRL_AFTER_REVOKE.total_seconds() // 3600)} hours"]
            + ([f"late serials: {_names(late)}"] if late else []),
            "Publish a CRL now ('smimekit ca crl') and revoke with CRL publication on"
            " (the default), or run 'ca serve --sign-crls'.", {"late": late})


CHECKS: tuple[Check, ...] = (
    Check("DPS-INTERNAL-CA", "DPS", "An internal CA exists and issues the internal"
          " mailboxes' certificates", "critical", 10, internal_ca),
    Check("DPS-OUTSIDE-CA", "DPS", "No internal certificate in use comes from an outside CA",
          "high", 8, outside_cas),
    Check("DPS-REVOCATION-URLS", "DPS", "CRL, OCSP and AIA URLs are on the organisation's"
          " hosts", "medium", 5, revocation_urls),
    Check("DPS-OUTSIDE-SERVICES", "DPS", "The directory, DNS resolvers and next hop the"
          " configuration names are in-house", "medium", 3, outside_services),
    Check("DPS-DARK-CA-RUNWAY", "DPS", f"Every issuer's newest CRL lasts {RUNWAY_DAYS} more"
          " days if the CA goes dark", "high", 6, dark_ca_runway),
    Check("DPS-ROOT-OFFLINE", "DPS", "The root key is offline", "high", 6, root_offline),
    Check("DPS-CA-KEY-TOKEN", "DPS", "The issuing key is in a token", "medium", 4,
          ca_key_token),
    Check("DPS-ESCROW-THRESHOLD", "DPS", "Encryption keys are under M-of-N escrow with"
          " M >= 2", "critical", 10, escrow_threshold),
    Check("DPS-ESCROW-DRILLED", "DPS", f"At least M officers checked their shares in the"
          f" last {DRILL_DAYS} days", "medium", 4, escrow_drilled),
    Check("DPS-KEY-HISTORY", "DPS", "Every encryption certificate's key is in the key"
          " history", "high", 8, key_history),
    Check("DPS-ARCHIVE-READABLE", "DPS", "Every archived message can still be read",
          "high", 8, archive_readable),
    Check("DPS-ARCHIVE-WEAK", "DPS", "No archived message uses RC2, 3DES, CBC without"
          " integrity or RSA < 2048", "medium", 4, archive_weak),
    Check("DPS-PQ-READINESS", "DPS", "Some keys in use are post-quantum (ML-KEM, ML-DSA)",
          "low", 2, pq_readiness),
    Check("DPS-DRILL", "DPS", f"The crisis drill ran in the last {DRILL_REPORT_DAYS} days"
          " and every step worked", "medium", 4, drill_recent),
    Check("IAT-COVERAGE", "IAT", "Mailboxes hold a valid signing and encryption"
          " certificate", "high", 10, coverage),
    Check("IAT-EXPIRING", "IAT", f"No live certificate ends within {EXPIRY_WINDOWS[0]} days",
          "medium", 4, expiring),
    Check("IAT-IDENTITY-CHECKS", "IAT", "Every certified person's identity check is"
          " recorded", "high", 6, identity_checks),
    Check("IAT-DUAL-KEY", "IAT", "Signing and encryption use separate keys", "medium", 4,
          dual_key),
    Check("IAT-SIGNATURE-POLICY", "IAT", "SHA-1 and RSA < 2048 are accepted nowhere",
          "high", 8, signature_policy),
    Check("IAT-AUDIT-LOG", "IAT", "The audit log is intact and anchored", "critical", 10,
          audit_log),
    Check("IAT-REVOCATION-PUBLISHED", "IAT", "Every revocation was on a CRL within 24"
          " hours", "high", 6, revocation_published),
)


def run_checks(facts: Facts, domains: Sequence[Domain] = ("DPS", "IAT")) -> list[Finding]:
    """Every check of ``domains``, in the order of :data:`CHECKS`."""
    return [check(facts) for check in CHECKS if check.domain in domains]
