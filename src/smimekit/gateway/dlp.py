"""Data-loss rules (``[[gateway.dlp]]``) counted in the clear text of a message.

:func:`evaluate` decodes every text part (quoted-printable and base64 undone, the charset
applied, HTML reduced to its text) and the Subject, counts each rule's keywords (whole
words, case-insensitive) and regular expressions there, and fires a rule whose count reaches
its threshold. The strongest action of the rules fired decides: reject > quarantine >
require-encryption > warn.

Time is bounded: patterns are compiled once per rule set, a pattern with nested unbounded
repetition (``(a+)+``, which backtracks exponentially) is refused when the rules are
compiled, each regular expression runs over windows of at most :data:`WINDOW` characters,
at most :data:`MAX_TEXT` characters of a message are read and matching stops after
:data:`TIME_BUDGET` seconds (the result says when not everything was counted). Encrypted
parts and attachments that are not text are not read (noted).
"""

from __future__ import annotations

import binascii
import functools
import html
import os
import re
import re._parser as sre_parse  # type: ignore[import-not-found]  # the parse tree (3.11+)
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from pathlib import Path
from typing import Any, Literal

from smimekit.config import DlpAction, DlpRule
from smimekit.errors import ConfigError, GatewayError, MIMEError
from smimekit.smime.canonical import Entity, split_multipart, to_crlf

__all__ = ["ACTION_RANK", "DlpResult", "Fired", "RuleSet", "compile_rules", "evaluate",
           "quarantine"]

ACTION_RANK: dict[DlpAction, int] = {"warn": 1, "require-encryption": 2, "quarantine": 3,
                                     "reject": 4}
"""The order of strength of the actions: the strongest fired rule decides."""

WINDOW = 8 * 1024
"""Characters one regular expression scans at a time (windows overlap by :data:`OVERLAP`):
even a pattern that backtracks quadratically stays well under a second per window."""
OVERLAP = 512
"""A match longer than this across a window edge may be missed (card numbers, words and
the like are far shorter)."""
TIME_BUDGET = 5.0
"""Seconds of matching per message; past it the rest is not counted (``incomplete``)."""
MAX_TEXT = 8 * 1024 * 1024
"""Characters of decoded text read from one message; the rest is not scanned."""
MAX_PARTS = 1000
MAX_DEPTH = 16

Direction = Literal["outbound", "inbound"]


@dataclass(frozen=True)
class Fired:
    """A rule whose count reached its threshold."""

    rule: str
    action: DlpAction
    count: int
    """Keyword and pattern matches together."""


@dataclass(frozen=True)
class DlpResult:
    """What :func:`evaluate` found in one message."""

    fired: tuple[Fired, ...] = ()
    """The rules that fired, in the order of the configuration."""
    action: DlpAction | None = None
    """The strongest action of the rules fired; None when none fired."""
    truncated: bool = False
    """Not everything was counted: more than :data:`MAX_TEXT` characters of text, or the
    matching took longer than :data:`TIME_BUDGET` (see ``notes``)."""
    notes: tuple[str, ...] = ()
    """Parts that were not read (encrypted, not text, malformed)."""

    def summary(self) -> str:
        """e.g. ``cards(3):require-encryption, secret(2):warn``; "" when nothing fired."""
        return ", ".join(f"{f.rule}({f.count}):{f.action}" for f in self.fired)

    def names(self, action: DlpAction) -> tuple[str, ...]:
        """The rules fired with ``action``."""
        return tuple(f.rule for f in self.fired if f.action == action)


@dataclass(frozen=True)
class _Compiled:
    rule: DlpRule
    keywords: tuple[re.Pattern[str], ...]
    patterns: tuple[re.Pattern[str], ...]


@dataclass(frozen=True)
class RuleSet:
    """Rules with their patterns compiled (:func:`compile_rules`)."""

    rules: tuple[_Compiled, ...] = field(default=())

    def for_direction(self, direction: Direction) -> tuple[_Compiled, ...]:
        return tuple(c for c in self.rules if c.rule.direction in (direction, "both"))


def compile_rules(rules: Sequence[DlpRule]) -> RuleSet:
    """Check and compile ``rules`` once (cached: the same rules give the same RuleSet).

    Raises:
        ConfigError: a rule with no keyword and no pattern, a threshold below 1, a pattern
            that does not compile or that could backtrack catastrophically, two rules with
            one name. The message names the rule (``gateway.dlp[i]``).
    """
    return _compile(tuple(rules))


@functools.lru_cache(maxsize=16)
def _compile(rules: tuple[DlpRule, ...]) -> RuleSet:
    compiled: list[_Compiled] = []
    seen: set[str] = set()
    for i, rule in enumerate(rules):
        where = f"gateway.dlp[{i}] ({rule.name})"
        if rule.name in seen:
            raise ConfigError(f"{where}: another rule has the name {rule.name!r}")
        seen.add(rule.name)
        if not rule.keywords and not rule.patterns:
            raise ConfigError(f"{where}: give keywords or patterns")
        if rule.threshold < 1:
            raise ConfigError(f"{where}: threshold must be 1 or more")
        if any(not k.strip() for k in rule.keywords):
            raise ConfigError(f"{where}: an empty keyword")
        # A keyword is a phrase: whitespace inside matches any run of whitespace (a line
        # break of quoted-printable or HTML), and it must stand as whole words.
        keywords = tuple(
            re.compile(r"(?<!\w)" + r"\s+".join(map(re.escape, k.split())) + r"(?!\w)",
                       re.IGNORECASE)
            for k in rule.keywords)
        patterns = []
        for p in rule.patterns:
            try:
                pattern = re.compile(p)
            except re.error as exc:
                raise ConfigError(f"{where}: the pattern {p!r} does not compile: {exc}") from None
            if pattern.search("") is not None:
                raise ConfigError(f"{where}: the pattern {p!r} matches the empty text")
            if _nested_repeat(sre_parse.parse(p)):
                raise ConfigError(
                    f"{where}: the pattern {p!r} repeats a repetition without bound, which"
                    " can take exponential time on hostile mail; bound the outer repetition"
                    " or make the inner one possessive (a++)")
            patterns.append(pattern)
        compiled.append(_Compiled(rule, keywords, tuple(patterns)))
    return RuleSet(tuple(compiled))


_REPEATS = (sre_parse.MAX_REPEAT, sre_parse.MIN_REPEAT)
_LARGE = 64


def _nested_repeat(tree: Any, inside_unbounded: bool = False) -> bool:
    """True when a repetition of more than one item sits inside an unbounded one."""
    for op, arg in tree:
        if op in _REPEATS:
            _low, high, sub = arg
            many = high is sre_parse.MAXREPEAT or high > _LARGE
            if inside_unbounded and (high is sre_parse.MAXREPEAT or high > 1):
                return True
            if _nested_repeat(sub, inside_unbounded or many):
                return True
        elif op in (sre_parse.SUBPATTERN,):
            if _nested_repeat(arg[-1], inside_unbounded):
                return True
        elif op is sre_parse.BRANCH:
            if any(_nested_repeat(branch, inside_unbounded) for branch in arg[1]):
                return True
        elif op in (sre_parse.ASSERT, sre_parse.ASSERT_NOT):
            if _nested_repeat(arg[1], inside_unbounded):
                return True
        # POSSESSIVE_REPEAT and ATOMIC_GROUP never backtrack into themselves
    return False


def evaluate(rules: Sequence[DlpRule] | RuleSet, message: bytes,
             direction: Direction) -> DlpResult:
    """Count the rules that apply to ``direction`` in the clear text of ``message``.

    ``message`` is a whole message in the clear (decrypt first: encrypted parts are not
    read). Never raises for what the message contains: a part that cannot be decoded is
    skipped with a note.

    Raises:
        ConfigError: ``rules`` (not yet compiled) are wrong, as :func:`compile_rules` says.
    """
    ruleset = rules if isinstance(rules, RuleSet) else compile_rules(rules)
    active = ruleset.for_direction(direction)
    if not active:
        return DlpResult()
    texts, truncated, notes = _texts(message)
    fired: list[Fired] = []
    best: DlpAction | None = None
    deadline = time.monotonic() + TIME_BUDGET
    for compiled in active:
        try:
            count = _count_all(texts, (*compiled.keywords, *compiled.patterns), deadline)
        except _OutOfTime as late:
            count = late.count
            if not truncated:
                notes.append(f"matching took over {TIME_BUDGET:g} s: the rest was not"
                             " counted")
            truncated = True
        if count >= compiled.rule.threshold:
            fired.append(Fired(compiled.rule.name, compiled.rule.action, count))
            if best is None or ACTION_RANK[compiled.rule.action] > ACTION_RANK[best]:
                best = compiled.rule.action
    return DlpResult(tuple(fired), best, truncated, tuple(notes))


# The text of a message: strings, and multipart/alternative groups (one list of texts per
# alternative) that are counted once, by the alternative that matches most.
Texts = list["str | list[Texts]"]


class _OutOfTime(Exception):
    def __init__(self, count: int) -> None:
        self.count = count


def _count_all(texts: Texts, patterns: Sequence[re.Pattern[str]], deadline: float) -> int:
    total = 0
    for item in texts:
        if isinstance(item, str):
            for p in patterns:
                try:
                    total += _count(p, item, deadline)
                except _OutOfTime as late:
                    raise _OutOfTime(total + late.count) from None
        else:
            best = 0
            for alternative in item:
                try:
                    best = max(best, _count_all(alternative, patterns, deadline))
                except _OutOfTime as late:
                    raise _OutOfTime(total + max(best, late.count)) from None
            total += best
    return total


def _count(pattern: re.Pattern[str], text: str, deadline: float) -> int:
    if time.monotonic() > deadline:
        raise _OutOfTime(0)
    if len(text) <= WINDOW:
        return sum(1 for _ in pattern.finditer(text))
    # Windows that overlap; a match is counted in the window where it starts, unless it
    # starts in the overlap that the next window reads again.
    count = 0
    start = 0
    while start < len(text):
        if time.monotonic() > deadline:
            raise _OutOfTime(count)
        end = min(len(text), start + WINDOW)
        limit = end - OVERLAP if end < len(text) else end
        count += sum(1 for m in pattern.finditer(text, start, end) if m.start() < limit)
        start = limit
    return count


def _texts(message: bytes) -> tuple[Texts, bool, list[str]]:
    texts: Texts = []
    notes: list[str] = []
    budget = [MAX_TEXT]
    parts = [0]
    truncated = False
    try:
        root = Entity.parse(to_crlf(message))
    except MIMEError as exc:
        return [], False, [f"the message cannot be read: {exc}"]
    subject = root.get("subject")
    if subject:
        texts.append(_decoded_header(subject))
    truncated = _walk(root, texts, notes, budget, parts, 0)
    return texts, truncated, notes


def _decoded_header(value: str) -> str:
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError):
        return value


def _walk(entity: Entity, texts: Texts, notes: list[str], budget: list[int],
          parts: list[int], depth: int) -> bool:
    parts[0] += 1
    if parts[0] > MAX_PARTS or depth > MAX_DEPTH:
        notes.append("too many or too deeply nested parts: the rest was not read")
        return True
    ctype = entity.content_type
    if ctype.startswith("multipart/"):
        boundary = entity.params.get("boundary")
        if not boundary:
            notes.append(f"a {ctype} part without a boundary was not read")
            return False
        try:
            # One more than the walk may read, so that it notes the rest was not read.
            children = split_multipart(entity.body, boundary, max_parts=MAX_PARTS - parts[0] + 1)
        except MIMEError as exc:
            notes.append(f"a {ctype} part cannot be split: {exc}")
            return False
        # The same content twice (text and HTML) must not count twice: each alternative
        # is counted apart and the one with the most matches stands for the group.
        alternatives: list[Texts] | None = [] if ctype == "multipart/alternative" else None
        if alternatives is not None:
            texts.append(alternatives)
        for child in children:
            try:
                parsed = Entity.parse(child)
            except MIMEError as exc:
                notes.append(f"a part cannot be read: {exc}")
                continue
            into = texts
            if alternatives is not None:
                into = []
                alternatives.append(into)
            if _walk(parsed, into, notes, budget, parts, depth + 1):
                return True
        return False
    if ctype == "message/rfc822":
        try:
            inner = Entity.parse(_decoded(entity))
        except MIMEError as exc:
            notes.append(f"an attached message cannot be read: {exc}")
            return False
        subject = inner.get("subject")
        if subject:
            texts.append(_decoded_header(subject))
        return _walk(inner, texts, notes, budget, parts, depth + 1)
    if ctype in ("application/pkcs7-mime", "application/x-pkcs7-mime"):
        notes.append("an encrypted or opaque-signed part was not read")
        return False
    if not ctype.startswith("text/"):
        return False  # attachments: the scanning hook's business
    try:
        raw = _decoded(entity)
    except MIMEError as exc:
        notes.append(f"a {ctype} part cannot be decoded: {exc}")
        return False
    text = _as_text(raw, entity.params.get("charset", "utf-8"))
    if ctype == "text/html":
        text = _html_text(text)
    if len(text) > budget[0]:
        texts.append(text[:budget[0]])
        budget[0] = 0
        return True
    budget[0] -= len(text)
    texts.append(text)
    return False


def _decoded(entity: Entity) -> bytes:
    cte = (entity.get("content-transfer-encoding") or "7bit").strip().lower()
    if cte == "base64":
        try:
            return binascii.a2b_base64(entity.body_view)
        except binascii.Error:
            raise MIMEError("bad base64") from None
    if cte == "quoted-printable":
        return binascii.a2b_qp(entity.body)
    return entity.body


def _as_text(raw: bytes, charset: str) -> str:
    try:
        return raw.decode(charset.strip().strip('"') or "utf-8", "replace")
    except LookupError:
        return raw.decode("utf-8", "replace")


# [^<>]: a scan that starts at "<" ends at the next "<", so hostile markup stays linear
_TAG = re.compile(r"<[^<>]*>")


def _html_text(text: str) -> str:
    # Tags become spaces; entities are decoded so "&#112;roject" cannot hide a keyword.
    # Scripts and styles are counted too: for data loss, text the reader does not see
    # still leaves the organisation.
    return html.unescape(_TAG.sub(" ", text))


def quarantine(message: bytes, directory: Path | None, *, label: str = "message") -> Path:
    """Keep ``message`` in ``directory`` (``quarantine_dir``): a new file, mode 0600,
    written atomically; the directory is created 0700 when missing.

    Raises:
        GatewayError: no quarantine directory is configured (permanent: the policy cannot be
            followed), or it cannot be written (not permanent: 4xx, tried again).
    """
    from smimekit.fsutil import atomic_write, private_dir

    if directory is None:
        raise GatewayError("a data-loss rule asks for quarantine but [gateway]"
                           " quarantine_dir is not set", permanent=True)
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", label)[:40] or "message"
    name = f"{safe}-{secrets.token_hex(8)}.eml"
    try:
        private_dir(directory)
        path = directory / name
        if path.exists():  # pragma: no cover - 64 random bits
            raise FileExistsError(os.fspath(path))
        atomic_write(path, message, mode=0o600)
    except OSError as exc:
        raise GatewayError(f"cannot write to the quarantine {directory}:"
                           f" {exc.strerror or exc}") from None
    return path
