"""Certificate policy processing of RFC 5280 section 6.1 (valid_policy_tree).

The tree is kept as a graph with one node per (depth, valid_policy), each node knowing the
valid_policy values of its parents (as BoringSSL does since 2023). Every RFC tree node with
the same depth and valid_policy has the same expected_policy_set (set at creation, rewritten
for all of them by policy mapping), so merging them changes no outcome and keeps the work
polynomial for a hostile chain (the RFC tree can grow exponentially).

Qualifiers are not kept: nothing in S/MIME processing acts on them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from cryptography import x509

ANY_POLICY = "2.5.29.32.0"


@dataclass
class _Node:
    expected: set[str]
    parents: set[str] = field(default_factory=set)


class PolicyError(Exception):
    """Policy processing failed; the message says why."""


def policy_mappings(der: bytes) -> list[tuple[str, str]]:
    """(issuerDomainPolicy, subjectDomainPolicy) pairs of a policyMappings extension value,
    which pyca/cryptography leaves unparsed.

    Raises:
        ValueError: the value is not a well-formed PolicyMappings.
    """
    from asn1crypto import x509 as asn1_x509

    try:
        parsed = asn1_x509.PolicyMappings.load(der, strict=True)
        pairs = [
            (m["issuer_domain_policy"].dotted, m["subject_domain_policy"].dotted) for m in parsed
        ]
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"malformed policyMappings: {exc}") from None
    if not pairs:
        raise ValueError("malformed policyMappings: empty")
    return pairs


@dataclass
class PolicyState:
    """The policy variables of RFC 5280 6.1.2 for a path of ``n`` certificates."""

    n: int
    initial_policies: frozenset[str] | None
    """user-initial-policy-set; None is any-policy."""
    explicit_policy: int
    inhibit_any_policy: int
    policy_mapping: int
    levels: list[dict[str, _Node]] = field(default_factory=list)
    null: bool = False

    @classmethod
    def start(
        cls,
        n: int,
        *,
        initial_policies: Iterable[str] | None = None,
        require_explicit_policy: bool = False,
        inhibit_mapping: bool = False,
        inhibit_any_policy: bool = False,
    ) -> PolicyState:
        initial = None if initial_policies is None else frozenset(initial_policies)
        if initial is not None and ANY_POLICY in initial:
            initial = None
        return cls(
            n=n,
            initial_policies=initial,
            explicit_policy=0 if require_explicit_policy else n + 1,
            inhibit_any_policy=0 if inhibit_any_policy else n + 1,
            policy_mapping=0 if inhibit_mapping else n + 1,
            levels=[{ANY_POLICY: _Node({ANY_POLICY})}],
        )

    # -- tree helpers --------------------------------------------------------------------

    def _set_null(self) -> None:
        self.null = True
        self.levels = []

    def _prune(self) -> None:
        """Delete nodes that lost every parent (downwards), then childless nodes above the
        deepest level (upwards); an empty deepest level makes the tree NULL."""
        for depth in range(1, len(self.levels)):
            above = self.levels[depth - 1]
            level = self.levels[depth]
            for policy in list(level):
                node = level[policy]
                node.parents &= above.keys()
                if not node.parents:
                    del level[policy]
        for depth in range(len(self.levels) - 1, 0, -1):
            wanted = set().union(*(node.parents for node in self.levels[depth].values()))
            above = self.levels[depth - 1]
            for policy in list(above):
                if policy not in wanted:
                    del above[policy]
        if not self.levels or not self.levels[-1]:
            self._set_null()

    # -- 6.1.3 (d)-(f) -------------------------------------------------------------------

    def process(
        self,
        i: int,
        policies: x509.CertificatePolicies | None,
        *,
        self_issued: bool,
    ) -> None:
        """Certificate ``i`` (1-based from the trust anchor) of the path."""
        if policies is None:
            self._set_null()  # (e)
        elif not self.null:
            oids = [p.policy_identifier.dotted_string for p in policies]
            previous = self.levels[-1]
            level: dict[str, _Node] = {}
            for oid in oids:  # (d)(1)
                if oid == ANY_POLICY:
                    continue
                parents = {vp for vp, node in previous.items() if oid in node.expected}
                if not parents and ANY_POLICY in previous:
                    parents = {ANY_POLICY}
                if parents:
                    level.setdefault(oid, _Node({oid})).parents |= parents
            if ANY_POLICY in oids and (
                self.inhibit_any_policy > 0 or (i < self.n and self_issued)
            ):  # (d)(2)
                for vp, node in previous.items():
                    for value in node.expected:
                        level.setdefault(value, _Node({value})).parents.add(vp)
            self.levels.append(level)
            self._prune()  # (d)(3)
        if self.explicit_policy <= 0 and self.null:  # (f)
            raise PolicyError("no acceptable certificate policy and an explicit policy is required")

    # -- 6.1.4 (a)-(b), (h)-(j) ----------------------------------------------------------

    def prepare(
        self,
        mappings: Iterable[tuple[str, str]] | None,
        constraints: x509.PolicyConstraints | None,
        inhibit_any: x509.InhibitAnyPolicy | None,
        *,
        self_issued: bool,
    ) -> None:
        """After certificate ``i < n``: mappings, then the counters for the next one."""
        if mappings is not None:
            mapped: dict[str, set[str]] = {}
            for issuer, subject in mappings:
                if ANY_POLICY in (issuer, subject):  # (a)
                    raise PolicyError("a policy mapping maps to or from anyPolicy")
                mapped.setdefault(issuer, set()).add(subject)
            if not self.null:
                self._map(mapped)
        if not self_issued:  # (h)
            self.explicit_policy = max(self.explicit_policy - 1, 0)
            self.policy_mapping = max(self.policy_mapping - 1, 0)
            self.inhibit_any_policy = max(self.inhibit_any_policy - 1, 0)
        if constraints is not None:  # (i)
            require = constraints.require_explicit_policy
            if require is not None and require < self.explicit_policy:
                self.explicit_policy = require
            inhibit = constraints.inhibit_policy_mapping
            if inhibit is not None and inhibit < self.policy_mapping:
                self.policy_mapping = inhibit
        if inhibit_any is not None and inhibit_any.skip_certs < self.inhibit_any_policy:  # (j)
            self.inhibit_any_policy = inhibit_any.skip_certs

    def _map(self, mapped: Mapping[str, set[str]]) -> None:
        level = self.levels[-1]
        if self.policy_mapping > 0:  # (b)(1)
            for issuer, subjects in mapped.items():
                if issuer in level:
                    level[issuer].expected = set(subjects)
                elif ANY_POLICY in level:
                    level[issuer] = _Node(set(subjects), {ANY_POLICY})
        else:  # (b)(2)
            for issuer in mapped:
                level.pop(issuer, None)
            self._prune()

    # -- 6.1.5 ---------------------------------------------------------------------------

    def finish(self, constraints: x509.PolicyConstraints | None) -> frozenset[str]:
        """Wrap-up for certificate n; returns the user-constrained policy set."""
        if self.explicit_policy > 0:  # (a)
            self.explicit_policy -= 1
        if constraints is not None and constraints.require_explicit_policy == 0:  # (b)
            self.explicit_policy = 0
        self._intersect()  # (g)
        if self.explicit_policy <= 0 and self.null:
            raise PolicyError(
                "no certificate policy of the path is acceptable and an explicit policy is required"
            )
        return self._user_policies()

    def _intersect(self) -> None:
        if self.null or self.initial_policies is None:  # (g)(i)-(ii)
            return
        wanted = self.initial_policies
        below_any: set[str] = set()
        for level in self.levels[1:]:  # (g)(iii)(1)-(2)
            for policy, node in level.items():
                if policy != ANY_POLICY and ANY_POLICY in node.parents:
                    below_any.add(policy)
                    if policy not in wanted:
                        node.parents.discard(ANY_POLICY)
        leaves = self.levels[-1]
        if ANY_POLICY in leaves:  # (g)(iii)(3)
            for policy in wanted - below_any:
                leaves.setdefault(policy, _Node({policy})).parents.add(ANY_POLICY)
            del leaves[ANY_POLICY]
        self._prune()  # (g)(iii)(4)

    def _user_policies(self) -> frozenset[str]:
        """The policies of the tree in the trust anchor's domain: the valid_policy of every
        node hanging from the anyPolicy spine (they all reach depth n once pruned), and
        anyPolicy itself if the spine does."""
        if self.null:
            return frozenset()
        out = {
            policy
            for level in self.levels[1:]
            for policy, node in level.items()
            if policy != ANY_POLICY and ANY_POLICY in node.parents
        }
        if ANY_POLICY in self.levels[-1]:
            out.add(ANY_POLICY)
        return frozenset(out)
