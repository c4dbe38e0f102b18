"""Certificate paths for S/MIME: build every candidate path to a trust anchor and check it.

Building: from the end entity up, through the message's certificates, a local cache of
intermediates (``intermediates``) and, when the caller allows it, certificates fetched on
demand (``issuer_source``, e.g. AIA caIssuers). Names chain as RFC 5280 7.1 compares them;
cross-certificates and re-issued CAs give several candidate paths, and every one is tried
(within a budget, so a hostile bundle cannot stall verification). A trust anchor is its name
and key: a certificate in the bundle with an anchor's name and key ends the path there.

Checking is RFC 5280 section 6.1: signatures, validity of every certificate, name chaining,
basicConstraints and pathLenConstraint (self-issued certificates not counted), keyUsage of
CAs, name constraints (:mod:`.names`), certificate policies (:mod:`.policies`) and unknown
critical extensions. The anchor's validity, basicConstraints, pathLenConstraint, key usage
and name constraints are applied too (as RFC 5937 allows).

Then S/MIME (RFC 8550 section 4.4, CA/Browser Forum S/MIME Baseline Requirements): the end
entity carries emailProtection (or no EKU, or anyExtendedKeyUsage) and a key usage fitting
the operation, no CA restricts its EKU away from emailProtection, RSA keys have at least 2048
bits and EC keys at least 256, and SHA-1/MD5 signatures and DSA keys are refused unless legacy
is allowed.

Revocation is :mod:`.revocation`'s business, on the chain this module returns.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from smimekit.validation.certinfo import (
    MIN_RSA_BITS,
    CertInfo,
    cert_info,
    readable_name,
    signed_by,
)
from smimekit.validation.names import NameConstraintsState, NameKey, certificate_names
from smimekit.validation.policies import PolicyError, PolicyState

__all__ = [
    "MAX_CANDIDATES",
    "MAX_DEPTH",
    "MIN_RSA_BITS",
    "PathResult",
    "Purpose",
    "usage_problems",
    "validate",
]

MAX_DEPTH = 10
"""Most certificates in a path below the trust anchor."""
MAX_CANDIDATES = 200
"""Most issuer candidates tried (signature checks) for one validation."""
_EMAIL_EKUS = frozenset(
    {ExtendedKeyUsageOID.EMAIL_PROTECTION, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}
)


class Purpose(enum.Enum):
    SIGN = "sign"
    ENCRYPT = "encrypt"


@dataclass(frozen=True)
class PathResult:
    """The best path found for a certificate and what is wrong with it, if anything."""

    chain: tuple[x509.Certificate, ...]
    """End entity first, trust anchor last; empty when no anchor was reached."""
    reasons: tuple[str, ...]
    """Failures of the chain (dates, CA constraints, signatures, names, policies...)."""
    usage_reasons: tuple[str, ...]
    """Failures of the end entity's key usage / EKU for the purpose."""
    policies: tuple[str, ...] = ()
    """The user-constrained policy set (RFC 5280 6.1.6) in the trust anchor's policy domain,
    dotted OIDs, sorted; ``2.5.29.32.0`` (anyPolicy) when any policy is acceptable."""

    @property
    def trusted(self) -> bool:
        return bool(self.chain) and not self.reasons

    @property
    def key_usage_ok(self) -> bool:
        return not self.usage_reasons

    @property
    def ok(self) -> bool:
        return self.trusted and self.key_usage_ok


# -- S/MIME end-entity usage ---------------------------------------------------------------


def usage_problems(cert: x509.Certificate, purpose: Purpose) -> list[str]:
    """Why ``cert`` may not be used to sign (or to receive) mail; empty when it may."""
    return list(_usage_problems(cert_info(cert), purpose))


@functools.lru_cache(maxsize=4096)
def _usage_problems(info: CertInfo, purpose: Purpose) -> tuple[str, ...]:
    out = []
    eku = info.ext_key_usage
    if eku is not None and not set(eku) & _EMAIL_EKUS:
        out.append(f"{info.name()}: extended key usage lacks emailProtection")
    # RFC 9881 / RFC 9935: an ML-DSA key only signs, an ML-KEM key only receives.
    wrong_key = (purpose is Purpose.SIGN and info.is_ml_kem) or (
        purpose is not Purpose.SIGN and info.is_ml_dsa
    )
    if wrong_key:  # its key usage bits are then beside the point
        what = "an ML-KEM key cannot sign mail" if info.is_ml_kem else (
            "an ML-DSA key cannot receive encrypted mail"
        )
        out.append(f"{info.name()}: {what}")
    ku = info.key_usage
    if ku is not None and not wrong_key:
        transport = info.is_rsa or info.is_ml_kem
        if purpose is Purpose.SIGN:
            if not (ku.digital_signature or ku.content_commitment):
                out.append(
                    f"{info.name()}: key usage does not allow digitalSignature or nonRepudiation"
                )
        elif not (ku.key_encipherment if transport else ku.key_agreement):
            what = "keyEncipherment" if transport else "keyAgreement"
            out.append(f"{info.name()}: key usage does not allow {what}")
    return tuple(out)


# -- checks ----------------------------------------------------------------------------------


def _own_problems(info: CertInfo, allow_legacy: bool, *, anchor: bool) -> Iterator[str]:
    """What is wrong with a certificate whatever its place in the path (dates aside)."""
    if info.defect:
        yield info.defect
    if info.key_error:
        yield info.key_error
    elif info.weak_key and not allow_legacy:
        yield info.weak_key
    if not info.issuer:
        yield "the issuer name is empty (RFC 5280 4.1.2.4)"
    if info.weak_hash and not anchor and not allow_legacy:  # an anchor's signature is unused
        yield f"signed with {info.weak_hash}, refused by default"
    for oid in info.critical_unknown:
        yield f"unrecognised critical extension {oid}"


def _ca_problems(info: CertInfo, *, anchor: bool) -> Iterator[str]:
    """RFC 5280 6.1.4 (k), (n) for a certificate that issued the next one, plus S/MIME."""
    if info.defect:
        return  # already the reason; its extensions cannot be read
    bc = info.basic_constraints
    if bc is not None:
        if not bc.ca:
            yield "used as a CA but basicConstraints says it is not one"
    elif info.v3:
        yield "used as a CA but has no basicConstraints"
    elif not anchor:
        # A v1 trust anchor is a CA by configuration; a v1 intermediate is not (6.1.4 (k)).
        yield "used as a CA but is a version 1 certificate"
    if not info.subject:
        yield "used as a CA but its subject name is empty"
    ku = info.key_usage
    if ku is not None and not ku.key_cert_sign:
        yield "used as a CA but key usage lacks keyCertSign"
    eku = info.ext_key_usage
    if eku is not None and not set(eku) & _EMAIL_EKUS:
        yield "CA extended key usage excludes emailProtection"


def _leaf_problems(info: CertInfo) -> Iterator[str]:
    """RFC 5280 profile rules whose breach makes an end entity meaningless."""
    bc = info.basic_constraints
    if bc is None or not bc.ca:
        if info.get(x509.NameConstraints) is not None:
            yield "nameConstraints in a certificate that is not a CA (RFC 5280 4.2.1.10)"
        ku = info.key_usage
        if ku is not None and ku.key_cert_sign:
            yield "keyCertSign asserted without basicConstraints cA (RFC 5280 4.2.1.9)"


def _date_problems(info: CertInfo, when: dt.datetime) -> Iterator[str]:
    if when < info.not_before:
        yield f"{info.name()}: not valid before {info.not_before.isoformat()}"
    if when > info.not_after:
        yield f"{info.name()}: expired on {info.not_after.isoformat()}"


@dataclass(frozen=True)
class _Inputs:
    """Everything but the time that a chain's verdict depends on."""

    allow_legacy: bool
    initial_policies: frozenset[str] | None
    require_explicit_policy: bool
    inhibit_mapping: bool
    inhibit_any_policy: bool
    max_intermediates: int | None


@functools.lru_cache(maxsize=2048)
def _chain_problems(
    chain: tuple[CertInfo, ...], inputs: _Inputs
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """RFC 5280 6.1 over ``chain`` (end entity first, anchor last), validity dates aside:
    problems and the user-constrained policy set. Cached: the same chain comes with every
    message from the same sender."""
    problems: list[str] = []

    def note(info: CertInfo, what: Iterable[str]) -> None:
        problems.extend(f"{info.name()}: {p}" for p in what)

    anchor = chain[-1]
    note(anchor, _own_problems(anchor, inputs.allow_legacy, anchor=True))
    certs = chain[-2::-1]  # RFC order: certs[0] was issued by the anchor, the end entity last
    n = len(certs)
    if n == 0:
        return tuple(problems), ()
    note(anchor, _ca_problems(anchor, anchor=True))
    if inputs.max_intermediates is not None:
        counted = sum(1 for c in certs[:-1] if not c.self_issued)
        if counted > inputs.max_intermediates:
            problems.append(
                f"the path has {counted} intermediate CAs, more than {inputs.max_intermediates}"
            )

    constraints = NameConstraintsState()
    anchor_nc = anchor.get(x509.NameConstraints)
    if anchor_nc is not None:
        constraints.add(anchor_nc)
    anchor_bc = anchor.basic_constraints
    max_path_length = n
    if anchor_bc is not None and anchor_bc.path_length is not None:
        max_path_length = anchor_bc.path_length
    policy: PolicyState | None = PolicyState.start(
        n,
        initial_policies=inputs.initial_policies,
        require_explicit_policy=inputs.require_explicit_policy,
        inhibit_mapping=inputs.inhibit_mapping,
        inhibit_any_policy=inputs.inhibit_any_policy,
    )
    user_policies: frozenset[str] = frozenset()
    for i, info in enumerate(certs, start=1):
        leaf = i == n
        note(info, _own_problems(info, inputs.allow_legacy, anchor=False))
        if info.defect:
            continue
        # 6.1.3 (b)-(c): self-issued CA certificates are exempt, the end entity never is.
        if not constraints.empty and (leaf or not info.self_issued):
            names = certificate_names(info.cert, info.get(x509.SubjectAlternativeName))
            note(info, constraints.problems(names))
        try:
            if policy is not None:  # 6.1.3 (d)-(f)
                policy.process(i, info.get(x509.CertificatePolicies), self_issued=info.self_issued)
                if leaf:
                    user_policies = policy.finish(info.get(x509.PolicyConstraints))
                else:  # 6.1.4 (a)-(b), (h)-(j)
                    policy.prepare(
                        info.mappings,
                        info.get(x509.PolicyConstraints),
                        info.get(x509.InhibitAnyPolicy),
                        self_issued=info.self_issued,
                    )
        except PolicyError as exc:
            note(info, [str(exc)])
            policy = None
        if leaf:
            note(info, _leaf_problems(info))
            break
        nc = info.get(x509.NameConstraints)  # 6.1.4 (g)
        if nc is not None:
            constraints.add(nc)
        note(info, _ca_problems(info, anchor=False))  # (k), (n)
        if not info.self_issued:  # (l)
            if max_path_length <= 0:
                note(info, ["exceeds the path length constraint of a CA above it"])
            max_path_length -= 1
        bc = info.basic_constraints  # (m)
        if bc is not None and bc.path_length is not None and bc.path_length < max_path_length:
            max_path_length = bc.path_length
    return tuple(problems), tuple(sorted(user_policies))


# -- path building ---------------------------------------------------------------------------


@dataclass
class _Pool:
    """Candidate issuers by (prepared) subject name; anchors also by (name, key)."""

    by_subject: dict[NameKey, list[CertInfo]]
    anchors: dict[tuple[NameKey, bytes], CertInfo]

    def add(self, info: CertInfo) -> None:
        self.by_subject.setdefault(info.subject, []).append(info)


@functools.lru_cache(maxsize=16)
def _anchor_pool(ids: tuple[int, ...], anchors: tuple[x509.Certificate, ...]) -> _Pool:
    # Keyed by object identity: the same trust list comes with every message, and hashing a
    # few hundred roots each time would cost more than the validation. The cache entry keeps
    # ``anchors`` alive, so their ids cannot be reused while it exists.
    del ids
    pool = _Pool({}, {})
    for anchor in anchors:
        info = cert_info(anchor)
        pool.add(info)
        if info.spki is not None:
            pool.anchors.setdefault((info.subject, info.spki), info)
    return pool


def validate(
    leaf: x509.Certificate,
    *,
    intermediates: Sequence[x509.Certificate] = (),
    anchors: Sequence[x509.Certificate],
    at: dt.datetime | None = None,
    purpose: Purpose = Purpose.SIGN,
    allow_legacy: bool = False,
    initial_policies: Iterable[str | x509.ObjectIdentifier] | None = None,
    require_explicit_policy: bool = False,
    inhibit_mapping: bool = False,
    inhibit_any_policy: bool = False,
    max_intermediates: int | None = None,
    issuer_source: Callable[[x509.Certificate], Iterable[x509.Certificate]] | None = None,
) -> PathResult:
    """Find the best path from ``leaf`` to one of ``anchors`` and check it at ``at``.

    Several candidate paths (cross-certificates, re-issued intermediates) are all tried; the
    first one without problems wins, otherwise the one with the fewest.

    ``initial_policies`` (None: any policy), ``require_explicit_policy``,
    ``inhibit_mapping`` and ``inhibit_any_policy`` are the RFC 5280 6.1.1 inputs
    user-initial-policy-set, initial-explicit-policy, initial-policy-mapping-inhibit and
    initial-any-policy-inhibit. ``max_intermediates`` caps the CA certificates between the
    end entity and the anchor (self-issued ones not counted). ``issuer_source`` is asked
    for more candidates when no known certificate can have issued one in the path (the
    place for AIA caIssuers fetching); it must not raise.

    Never raises for a bad certificate or path: everything wrong is in the result.
    """
    when = (at or dt.datetime.now(dt.UTC)).replace(microsecond=0)  # second granularity
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    leaf_info = cert_info(leaf)
    usage = _usage_problems(leaf_info, purpose)
    if not anchors:
        return PathResult((), ("no trust anchors were given",), usage)
    inputs = _Inputs(
        allow_legacy=allow_legacy,
        initial_policies=None
        if initial_policies is None
        else frozenset(
            p.dotted_string if isinstance(p, x509.ObjectIdentifier) else p for p in initial_policies
        ),
        require_explicit_policy=require_explicit_policy,
        inhibit_mapping=inhibit_mapping,
        inhibit_any_policy=inhibit_any_policy,
        max_intermediates=max_intermediates,
    )
    anchor_tuple = tuple(anchors)
    trusted = _anchor_pool(tuple(map(id, anchor_tuple)), anchor_tuple)
    pool = _Pool({}, {})
    for cert in intermediates:
        info = cert_info(cert)
        if not _same(info, leaf_info):
            pool.add(info)
    builder = _Builder(trusted, pool, inputs, when, issuer_source)
    builder.search([leaf_info])
    if builder.best is None:
        return PathResult((), tuple(builder.no_path_reasons(leaf_info)), usage)
    chain, problems, policies = builder.best
    return PathResult(tuple(i.cert for i in chain), problems, usage, policies)


def _same(a: CertInfo, b: CertInfo) -> bool:
    return a is b or (a.subject == b.subject and a.spki is not None and a.spki == b.spki)


class _Builder:
    """Depth-first search over issuer candidates; keeps the best complete path."""

    def __init__(
        self,
        trusted: _Pool,
        pool: _Pool,
        inputs: _Inputs,
        when: dt.datetime,
        issuer_source: Callable[[x509.Certificate], Iterable[x509.Certificate]] | None,
    ) -> None:
        self.trusted = trusted
        self.pool = pool
        self.inputs = inputs
        self.when = when
        self.issuer_source = issuer_source
        self.fetched: set[NameKey] = set()
        self.tries = 0
        self.best: tuple[tuple[CertInfo, ...], tuple[str, ...], tuple[str, ...]] | None = None
        self.bad_signatures: list[str] = []

    def _anchor_for(self, info: CertInfo) -> CertInfo | None:
        if info.spki is None:
            return None
        return self.trusted.anchors.get((info.subject, info.spki))

    def search(self, path: list[CertInfo]) -> bool:
        """True once a path without problems has been found (and kept in ``best``)."""
        current = path[-1]
        anchor = self._anchor_for(current)
        if anchor is not None:
            return self._evaluate((*path[:-1], anchor))
        if len(path) > MAX_DEPTH:
            return False
        return any(self.search([*path, issuer]) for issuer in self._issuers(current, path))

    def _evaluate(self, chain: tuple[CertInfo, ...]) -> bool:
        static, policies = _chain_problems(chain, self.inputs)
        dates = [p for info in chain for p in _date_problems(info, self.when)]
        problems = (*dates, *static)
        if self.best is None or len(problems) < len(self.best[1]):
            self.best = (chain, problems, policies)
        return not problems

    def _issuers(self, current: CertInfo, path: list[CertInfo]) -> Iterator[CertInfo]:
        named = [
            *self.trusted.by_subject.get(current.issuer, ()),
            *self.pool.by_subject.get(current.issuer, ()),
        ]
        if not named and self.issuer_source is not None and current.issuer not in self.fetched:
            self.fetched.add(current.issuer)
            for fetched in self.issuer_source(current.cert):
                self.pool.add(cert_info(fetched))
            named = list(self.pool.by_subject.get(current.issuer, ()))
        candidates = [c for c in named if not any(_same(c, p) for p in path)]
        if len(candidates) > 1:
            candidates.sort(key=lambda c: self._rank(c, current))
        for candidate in candidates:
            if self.tries >= MAX_CANDIDATES:
                return
            self.tries += 1
            if signed_by(current, candidate):
                yield candidate
            else:
                self.bad_signatures.append(
                    f"{current.name()}: signature does not verify with the key of"
                    f" {candidate.name()}"
                )

    def _rank(self, candidate: CertInfo, child: CertInfo) -> tuple[bool, bool, bool]:
        """Anchors first, then the issuer the AKI names, then one valid now."""
        return (
            self._anchor_for(candidate) is None,
            child.aki is None or child.aki != candidate.ski,
            not candidate.not_before <= self.when <= candidate.not_after,
        )

    def no_path_reasons(self, leaf: CertInfo) -> list[str]:
        out = [
            f"no chain to a trust anchor: issuer {readable_name(leaf.cert, 'issuer')!r} of"
            f" {leaf.name()} is not trusted or not found"
        ]
        out += list(dict.fromkeys(self.bad_signatures))[:5]
        if self.tries >= MAX_CANDIDATES:
            out.append(f"path building gave up after {MAX_CANDIDATES} candidate issuers")
        return out
