"""``ca sync``: the CA reconciled with the organisation's identity source (see docs/directory.md
"Identity sync").

The source (an LDAP directory, :func:`read_identity_ldap`, or an HR export,
:func:`read_identity_csv`) names each person by a stable id, an address and a name. The
store remembers, per id, the address and name the CA certified (``identities``, schema
version 5), so a new address or name is recognised as the same person. :func:`plan_sync`
compares the two and :func:`apply_sync` carries the plan out, in this order:

1. leavers (ids gone from the source): every live certificate revoked, reason
   ``cessation-of-operation`` (the person no longer controls the mailbox; nothing suggests a
   compromised key), one transaction and one CRL for all; their keys stay in the key history
   (escrow);
2. new addresses: the old address's live certificates revoked, reason ``superseded`` (first,
   so that an address two people swap, or a leaver's address given to a joiner, is free);
3. joiners and the new addresses enrolled through the enrolment path (``enrol``: the CLI
   passes :func:`~smimekit.ca.lifecycle.enroll_rows` or the pooled one, with files and
   results rows), the person's id recorded after each;
4. a new name that appears in the certificates: each live certificate renewed
   (:meth:`~smimekit.ca.issuance.CertificateAuthority.renew`, the name from the source) and
   the old one revoked ``superseded``, per person one transaction with their files.

Every step is audited and is derived from the store and the source alone, so a run that was
killed is finished by running it again, without duplicates, and a run after a complete one
finds nothing to do. The plan is refused when the source is empty, or when it would remove
more people than allowed (:func:`check_removals`).
"""

from __future__ import annotations

import csv
import datetime as dt
import enum
import io
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.x509.oid import NameOID

from smimekit.ca.issuance import CertificateAuthority, Issuance, checked_email
from smimekit.ca.lifecycle import (
    Deliver,
    Delivery,
    ResultsLog,
    Row,
    RowResult,
    RowStatus,
)
from smimekit.ca.profiles import DEFAULT_VALIDITY
from smimekit.errors import CAError, SmimeError
from smimekit.mailbox import comparable
from smimekit.store import IssuedRecord

if TYPE_CHECKING:
    from smimekit.config import SyncLdapConfig

__all__ = [
    "LEAVER_REASON",
    "Identity",
    "Leaver",
    "Move",
    "Rename",
    "SourceRead",
    "SyncAction",
    "SyncEvent",
    "SyncPlan",
    "SyncRefused",
    "apply_sync",
    "check_removals",
    "plan_sync",
    "publish_pending_crl",
    "read_identity_csv",
    "read_identity_ldap",
]

LEAVER_REASON = "cessation-of-operation"
"""CRL reason for a leaver's certificates (RFC 5280 5.3.1: no longer needed, no suspicion of
a compromised key; the S/MIME BR use it for a mailbox the subscriber no longer controls)."""
REPLACED_REASON = "superseded"
"""CRL reason for a certificate replaced because its address or name changed."""
_ACTOR_DETAIL = {"by": "ca sync"}


class SyncRefused(CAError):
    """The plan is not carried out: the source is empty, or it removes too many people."""


# -- the identity source -----------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """One person of the identity source."""

    id: str
    """Stable: uid, employee number; never reused for someone else."""
    email: str
    name: str | None = None

    @property
    def key(self) -> str:
        """The address in the store's form."""
        return comparable(self.email)


@dataclass(frozen=True)
class SourceRead:
    """What the source gave: the usable identities, and the entries left out, with why."""

    identities: tuple[Identity, ...]
    problems: tuple[str, ...] = ()
    held: frozenset[str] = frozenset()
    """Ids of entries left out (no usable address, duplicates): neither enrolled nor revoked
    in this run."""
    held_emails: frozenset[str] = frozenset()
    """Addresses (compared form) of entries left out for want of an id: whoever the sync
    knows at that address is not taken for a leaver either."""


def _collect(entries: Iterable[tuple[str, str | None, str | None, str | None]]) -> SourceRead:
    """(where, id, email, name) entries -> identities, with every unusable one reported."""
    problems: list[str] = []
    held: set[str] = set()
    held_emails: set[str] = set()
    by_id: dict[str, list[tuple[str, Identity]]] = {}
    for where, id_, email, name in entries:
        if not id_:
            problems.append(f"{where}: no id: left out")
            if email:
                held_emails.add(comparable(email))
            continue
        if not email:
            problems.append(f"{where}: no address: left out (their certificates are kept)")
            held.add(id_)
            continue
        try:
            checked_email(email)
        except CAError as exc:
            problems.append(f"{where}: {exc}: left out (their certificates are kept)")
            held.add(id_)
            continue
        by_id.setdefault(id_, []).append((where, Identity(id_, email, name or None)))
    by_email: dict[str, list[str]] = {}
    for id_, found in by_id.items():
        if len(found) > 1:
            problems.append(f"id {id_} is on {len(found)} entries ("
                            + ", ".join(w for w, _ in found) + "): left out")
            held.add(id_)
            continue
        by_email.setdefault(found[0][1].key, []).append(id_)
    for email, ids in by_email.items():
        if len(ids) > 1:
            problems.append(f"{email} is the address of {len(ids)} ids ({', '.join(ids)}):"
                            " left out")
            held.update(ids)
    identities = tuple(found[0][1] for id_, found in by_id.items() if id_ not in held)
    return SourceRead(identities, tuple(problems), frozenset(held), frozenset(held_emails))


_CSV_COLUMNS = {"id": ("id", "uid", "employee_id", "employeenumber"),
                "email": ("email", "e-mail", "mail"),
                "name": ("name", "cn", "display_name", "displayname")}


def read_identity_csv(path: Path | str) -> SourceRead:
    """The people of a UTF-8 CSV (an HR export) with a header row naming an ``id``, an
    ``email`` and optionally a ``name`` column (any order and case; ``uid``/``employee_id``,
    ``mail``, ``cn``/``display_name`` are taken too; other columns are ignored).

    Raises:
        CAError: the file cannot be read, is not UTF-8 or CSV, or lacks the id or email column.
    """
    try:
        text = Path(path).read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise CAError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise CAError(f"{path} is not UTF-8 text") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    columns: dict[str, int] | None = None
    entries: list[tuple[str, str | None, str | None, str | None]] = []
    try:
        for cells in reader:
            cells = [c.strip() for c in cells]
            if not any(cells):
                continue
            if columns is None:
                lowered = [c.lower() for c in cells]
                columns = {key: next(i for i, c in enumerate(lowered) if c in names)
                           for key, names in _CSV_COLUMNS.items()
                           if any(c in names for c in lowered)}
                if "id" not in columns or "email" not in columns:
                    raise CAError(f"{path}: the header row needs an 'id' and an 'email'"
                                  f" column (found {', '.join(map(repr, cells))})")
                continue

            entries.append((f"{path} line {reader.line_num}", _cell(cells, columns, "id"),
                            _cell(cells, columns, "email"), _cell(cells, columns, "name")))
    except csv.Error as exc:
        raise CAError(f"{path} line {reader.line_num}: not valid CSV ({exc})") from None
    if columns is None:
        raise CAError(f"{path} is empty: expected a header row with 'id' and 'email'")
    return _collect(entries)


def _cell(cells: list[str], columns: dict[str, int], key: str) -> str | None:
    index = columns.get(key)
    return (cells[index] or None) if index is not None and index < len(cells) else None


def read_identity_ldap(config: SyncLdapConfig) -> SourceRead:
    """The people under ``config.base_dn`` matching ``config.filter`` (paged), mapped by
    ``config.attributes`` (``id``, ``email``, ``name``; the first value of each).

    Raises:
        ConfigError: the [sync.ldap] table is wrong.
        DirectoryError: unreachable, bind refused, the search failed or timed out.
    """
    from smimekit.directory.ldap import LdapConnection
    from smimekit.errors import ConfigError

    mapping = {k: v for k, v in config.attributes.items()}
    unknown = sorted(set(mapping) - {"id", "email", "name"})
    if unknown:
        raise ConfigError(f"sync.ldap.attributes: unknown field {unknown[0]!r} (id, email,"
                          " name)")
    for needed in ("id", "email"):
        if not mapping.get(needed):
            raise ConfigError(f"sync.ldap.attributes.{needed} must name an LDAP attribute")

    def first(attributes: dict[str, list[bytes]], key: str) -> str | None:
        name = mapping.get(key)
        values = attributes.get(name.lower(), []) if name else []
        return values[0].decode("utf-8", "replace").strip() or None if values else None

    with LdapConnection(config, section="sync.ldap") as conn:
        entries = [(dn, first(attrs, "id"), first(attrs, "email"), first(attrs, "name"))
                   for dn, attrs in conn.search_all(config.filter, list(mapping.values()))]
    return _collect(entries)


# -- the plan ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Leaver:
    """A person gone from the source."""

    id: str
    email: str
    records: tuple[IssuedRecord, ...]
    """Their live certificates (to revoke)."""


@dataclass(frozen=True)
class Move:
    """A person whose address changed."""

    identity: Identity
    old_email: str
    records: tuple[IssuedRecord, ...]
    """The old address's live certificates (to supersede)."""


@dataclass(frozen=True)
class Rename:
    """A person whose new name appears in their certificates."""

    identity: Identity
    records: tuple[IssuedRecord, ...]


@dataclass(frozen=True)
class SyncPlan:
    """What a sync would do."""

    joiners: tuple[Identity, ...]
    leavers: tuple[Leaver, ...]
    moves: tuple[Move, ...]
    renames: tuple[Rename, ...]
    recorded: tuple[Identity, ...]
    """People whose certificates are right, whose id, address or name the store learns
    (adopting holders enrolled before the sync, a name that is not in the certificate)."""
    current: int
    """People the sync managed before this run (for the removal threshold)."""
    outside: tuple[str, ...]
    """Addresses holding live certificates that the source does not name and the sync never
    managed (enrolled by hand, role mailboxes): left alone."""
    problems: tuple[str, ...] = ()
    source_count: int = 0

    @property
    def empty(self) -> bool:
        """Nothing to do."""
        return not (self.joiners or self.leavers or self.moves or self.renames
                    or self.recorded)

    def counts(self) -> str:
        return (f"{len(self.joiners)} joiners, {len(self.leavers)} leavers,"
                f" {len(self.moves)} new addresses, {len(self.renames)} new names")


def _live_by_email(cax: CertificateAuthority, at: dt.datetime) -> dict[str, list[IssuedRecord]]:
    found: dict[str, list[IssuedRecord]] = {}
    for record in cax.store.issued_records(live_only=True):
        if record.issuer_fingerprint == cax.issuer_fingerprint and record.not_after > at:
            found.setdefault(record.email, []).append(record)
    return found


def _name_changed(cax: CertificateAuthority, identity: Identity,
                  records: Sequence[IssuedRecord]) -> bool:
    """Whether a certificate issued now, with the source's name, would name the person
    otherwise than one of ``records`` (only the sponsored profiles carry the name)."""
    for record in records:
        stored = cax.store.get_certificate(record.fingerprint)
        if stored is None:  # pragma: no cover - the issued table refers to it
            continue
        profile = cax.profile(record.profile)
        try:
            wanted = profile.subject(cax.subject(checked_email(identity.email),
                                                 identity.name, profile))
        except CAError:
            return True  # a name the profile cannot take: renewal will say why
        if _person_names(stored.certificate.subject) != _person_names(wanted):
            return True
    return False


_PERSON_NAME = (NameOID.COMMON_NAME, NameOID.GIVEN_NAME, NameOID.SURNAME, NameOID.PSEUDONYM)


def _person_names(name: x509.Name) -> list[tuple[str, object]]:
    """The attributes of a subject that name the person (a changed organisation name in the
    CA's configuration is not a person's new name)."""
    return [(a.oid.dotted_string, a.value) for a in name if a.oid in _PERSON_NAME]


def plan_sync(cax: CertificateAuthority, source: SourceRead, *,
              now: dt.datetime | None = None) -> SyncPlan:
    """Compare the source with the store: who joins, leaves, moved or was renamed.

    Raises:
        StoreError: the store cannot be read.
    """
    at = now or dt.datetime.now(dt.UTC)
    live = _live_by_email(cax, at)
    known = {k: v for k, v in cax.store.identities().items() if v.left_at is None}
    owner = {v.email: v.external_id for v in known.values()}
    in_source = {i.id for i in source.identities} | set(source.held)
    joiners: list[Identity] = []
    moves: list[Move] = []
    renames: list[Rename] = []
    recorded: list[Identity] = []
    for identity in source.identities:
        before = known.get(identity.id)
        records = live.get(identity.key, [])
        if before is not None and before.email != identity.key:
            moves.append(Move(identity, before.email, tuple(live.get(before.email, []))))
        elif not records or owner.get(identity.key, identity.id) != identity.id:
            joiners.append(identity)  # (an address still held by a leaver or a mover)
        elif before is not None and before.name == identity.name:
            continue
        elif _name_changed(cax, identity, records):
            renames.append(Rename(identity, tuple(records)))
        else:
            recorded.append(identity)
    leavers = [Leaver(k.external_id, k.email, tuple(live.get(k.email, [])))
               for k in known.values()
               if k.external_id not in in_source and k.email not in source.held_emails]
    named = {i.key for i in source.identities} | set(owner)
    outside = tuple(sorted(e for e in live if e not in named))
    return SyncPlan(tuple(joiners), tuple(leavers), tuple(moves), tuple(renames),
                    tuple(recorded), current=len(known), outside=outside,
                    problems=source.problems, source_count=len(source.identities))


def check_removals(plan: SyncPlan, max_removals: float, *, allow: int | None = None) -> None:
    """Refuse an empty source, and more leavers than ``max_removals`` (a share < 1 of the
    people the sync manages, or a count >= 1) unless ``allow`` (a count, for this run)
    covers them.

    Raises:
        SyncRefused: with what was found and how to go on.
    """
    if plan.source_count == 0:
        raise SyncRefused("the identity source returned nobody: refusing to treat everyone"
                          " as a leaver (check the filter, base DN and bind; nothing was"
                          " changed)")
    removals = len(plan.leavers)
    if allow is not None:
        limit = allow
    elif max_removals < 1:
        limit = math.floor(max_removals * plan.current)
    else:
        limit = int(max_removals)
    if removals > limit:
        share = f" of {plan.current}" if plan.current else ""
        raise SyncRefused(
            f"{removals} leavers{share} is more than the {limit} allowed"
            f" ([sync] max_removals = {max_removals:g}): nothing was changed; check the"
            f" source, and if it is right run again with --allow-removals {removals}")


# -- carrying it out -----------------------------------------------------------------------


class SyncAction(enum.Enum):
    """What one event of :func:`apply_sync` was about."""

    LEFT = "left"
    MOVED = "moved"
    JOINED = "joined"
    RENAMED = "renamed"
    RECORDED = "recorded"


@dataclass(frozen=True)
class SyncEvent:
    """One person's outcome."""

    action: SyncAction
    id: str
    email: str
    status: RowStatus
    message: str = ""
    emails: tuple[str, ...] = ()
    """Addresses whose certificates changed (for the directory)."""


Enrol = Callable[[list[Row]], Iterator[RowResult]]
"""Enrol rows: :func:`~smimekit.ca.lifecycle.enroll_rows` or the pooled one, set up by the
CLI with its files and results."""


def _remember(cax: CertificateAuthority, identity: Identity, at: dt.datetime,
              was: str | None = None) -> None:
    with cax.store.transaction():
        cax.store.record_identity(identity.id, identity.key, identity.name, at)
        details: dict[str, object] = {**_ACTOR_DETAIL, "id": identity.id,
                                      "name": identity.name}
        if was is not None:
            details["was"] = was
        cax.store.audit(cax.actor, "ca.sync.identity", identity.key, details)


def apply_sync(
    cax: CertificateAuthority,
    plan: SyncPlan,
    *,
    enrol: Enrol,
    deliver: Deliver | None = None,
    results: ResultsLog | None = None,
    validity: dt.timedelta = DEFAULT_VALIDITY,
    now: dt.datetime | None = None,
) -> Iterator[SyncEvent]:
    """Carry ``plan`` out (see the module docstring for the order), yielding one event per
    person. A person that fails yields an error event and the run goes on.

    Raises:
        StoreError: the store fails for a whole step (leavers, superseded addresses).
        OSError: the results file cannot be written.
    """
    at = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    revoked_any = False
    # 1. leavers, all at once: one transaction, one CRL
    if plan.leavers:
        with cax.store.transaction():
            for leaver in plan.leavers:
                cax.revoke_records(leaver.records, reason=LEAVER_REASON, now=at,
                                   details={**_ACTOR_DETAIL, "id": leaver.id}, publish=False)
                cax.store.mark_left(leaver.id, at)
                cax.store.audit(cax.actor, "ca.sync.left", leaver.email,
                                {**_ACTOR_DETAIL, "id": leaver.id,
                                 "revoked": [r.serial for r in leaver.records]})
            if any(leaver.records for leaver in plan.leavers):
                cax.publish_crl(now=at)
        for leaver in plan.leavers:
            message = (f"revoked {len(leaver.records)} certificates ({LEAVER_REASON})"
                       if leaver.records else "no live certificate")
            _log(results, leaver.email, message)
            yield SyncEvent(SyncAction.LEFT, leaver.id, leaver.email, RowStatus.OK, message,
                            (leaver.email,))
    # 2. the old addresses of people who moved, all at once
    moving = [m for m in plan.moves if m.records]
    if moving:
        with cax.store.transaction():
            for move in moving:
                cax.revoke_records(move.records, reason=REPLACED_REASON, now=at, details={
                    **_ACTOR_DETAIL, "id": move.identity.id, "new_email": move.identity.key},
                    publish=False)
            cax.publish_crl(now=at)
    # 3. joiners and new addresses through the enrolment path
    todo: dict[str, tuple[SyncAction, Identity, Move | None]] = {}
    for identity in plan.joiners:
        todo[identity.key] = (SyncAction.JOINED, identity, None)
    for move in plan.moves:
        todo[move.identity.key] = (SyncAction.MOVED, move.identity, move)
    rows = [Row(n, identity.email, identity.name)
            for n, (_, identity, _) in enumerate(todo.values(), start=1)]
    if rows:
        batch = enrol(rows)
        try:
            for result in batch:
                action, identity, moved = todo[comparable(result.email)]
                emails = (identity.key,) + ((moved.old_email,) if moved else ())
                if result.status is RowStatus.ERROR:
                    yield SyncEvent(action, identity.id, identity.key, RowStatus.ERROR,
                                    result.message)
                    continue
                # enrolled now, or holding live certificates already (a resumed run)
                _remember(cax, identity, at, was=moved.old_email if moved else None)
                message = result.message or "enrolled"
                if moved is not None:
                    message = f"was {moved.old_email}: {message}"
                yield SyncEvent(action, identity.id, identity.key, result.status, message,
                                emails)
        finally:
            close = getattr(batch, "close", None)
            if close is not None:
                close()
    # 4. new names in certificates: renewed, the old ones superseded
    for rename in plan.renames:
        event = _rename(cax, rename, deliver=deliver, results=results, validity=validity,
                        at=at)
        revoked_any = revoked_any or event.status is RowStatus.OK
        yield event
    for identity in plan.recorded:
        _remember(cax, identity, at)
        yield SyncEvent(SyncAction.RECORDED, identity.id, identity.key, RowStatus.OK,
                        "certificates are current; identity recorded")
    if revoked_any:  # the new names' old certificates (revoked at ``at``, as step 1's CRL)
        cax.publish_crl()
    else:
        publish_pending_crl(cax)


def _log(results: ResultsLog | None, email: str, message: str) -> None:
    if results is not None:
        results.append(RowResult(email, RowStatus.OK, message))


def _rename(cax: CertificateAuthority, rename: Rename, *, deliver: Deliver | None,
            results: ResultsLog | None, validity: dt.timedelta,
            at: dt.datetime) -> SyncEvent:
    identity = rename.identity
    delivery: Delivery | None = None
    try:
        # the name renew() certifies is the user's: set it first (a rerun after a kill here
        # finds the certificates still carrying the old name, and renews them)
        cax.store.upsert_user(identity.key, identity.name)
        with cax.store.transaction():
            fresh = [cax.store.issued_record(fingerprint=r.fingerprint) for r in rename.records]
            todo = [r for r in fresh if r is not None and r.live]
            items = tuple(cax.renew(r, validity=validity) for r in todo)
            cax.revoke_records(todo, reason=REPLACED_REASON, now=at, publish=False,
                               details={**_ACTOR_DETAIL, "id": identity.id,
                                        "name": identity.name})
            issuance = Issuance(identity.key, items)
            delivery = deliver(issuance) if deliver is not None else Delivery()
            cax.store.record_identity(identity.id, identity.key, identity.name, at)
            cax.store.audit(cax.actor, "ca.sync.identity", identity.key,
                            {**_ACTOR_DETAIL, "id": identity.id, "name": identity.name})
            message = "new name: replaces " + ", ".join(f"{r.purpose} {r.serial}"
                                                        for r in todo)
            if results is not None:
                results.append(RowResult(identity.key, RowStatus.OK, message,
                                         serials=tuple(i.record.serial for i in items),
                                         files=delivery.files,
                                         passphrase=delivery.passphrase))
        return SyncEvent(SyncAction.RENAMED, identity.id, identity.key, RowStatus.OK, message,
                         (identity.key,))
    except (SmimeError, OSError) as exc:
        for path in delivery.files if delivery is not None else ():
            path.unlink(missing_ok=True)
        return SyncEvent(SyncAction.RENAMED, identity.id, identity.key, RowStatus.ERROR,
                         str(exc))


def publish_pending_crl(cax: CertificateAuthority) -> bool:
    """Publish a CRL when the newest one lists fewer certificates than the store has revoked
    (a run killed between its revocations and their CRL; every CRL lists every revocation).
    Returns whether it published one.

    Raises:
        StoreError: the store fails.
    """
    revocations = cax.store.revocations(cax.issuer_fingerprint)
    if not revocations:
        return False
    latest = cax.store.latest_crl(cax.issuer_fingerprint)
    if latest is not None and latest.der is not None \
            and len(x509.load_der_x509_crl(latest.der)) >= len(revocations):
        return False
    cax.publish_crl()
    return True
