"""Assertions shared by the matrix modules: what "the peer got our message" means.

No smimekit import here (the harness must run without it); smimekit objects are only
touched through their public attributes.
"""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass
from typing import Any

from peers import EMAIL_DOMAIN, ENTITY, crlf, entity_view, from_header, header, outer_headers


@dataclass(frozen=True)
class Loaded:
    """The PKI as smimekit objects: keys and certificates loaded by smimekit itself."""

    root: Any
    inter: Any
    keys: dict[str, Any]
    certs: dict[str, Any]

    def __getitem__(self, name: str) -> tuple[Any, Any]:
        return self.keys[name], self.certs[name]


def assert_is_original(content: bytes) -> None:
    """The entity that came back is the one that went in: same Content-* headers, same
    body bytes (line endings compared as CRLF)."""
    assert entity_view(content) == entity_view(ENTITY)


def assert_is_protected(content: bytes, mode: str, sender: str = "alice",
                        recipient: str = "bob") -> None:
    """What a peer got from smimekit's default header protection (RFC 9788): the original
    entity with ``hp=<mode>`` added to its Content-Type, and the message's header fields
    (From, To, Subject, Date, Message-ID) copied into its header section exactly; for
    ``cipher`` also one HP-Outer per field, the Subject recorded as ``[...]`` (baseline)."""
    head = crlf(content).partition(b"\r\n\r\n")[0] + b"\r\n\r\n"
    got = email.message_from_bytes(head, policy=email.policy.compat32)
    want = email.message_from_bytes(ENTITY, policy=email.policy.compat32)
    assert got.get_param("hp") == mode
    del got["Content-Type"]
    got["Content-Type"] = str(want["Content-Type"])  # the only change: the hp parameter
    rebuilt = got.as_bytes() + crlf(content).partition(b"\r\n\r\n")[2]
    assert entity_view(rebuilt) == entity_view(ENTITY)
    fields = [line for line in head.split(b"\r\n") if line]
    expected = outer_headers(sender, recipient).split(b"\r\n")[:-1]
    assert [f for f in fields if f in expected] == expected
    outer = [f for f in fields if f.startswith(b"HP-Outer: ")]
    if mode == "clear":
        assert outer == []
    else:
        recorded = [b"HP-Outer: " + (b"Subject: [...]" if f.startswith(b"Subject:") else f)
                    for f in expected]
        assert outer == recorded


def assert_complete_message(content: bytes, sender: str = "alice") -> None:
    """smimekit's output is the complete message: the original entity and the outer headers."""
    assert_is_original(content)
    assert header(content, "From") == from_header(sender)
    assert header(content, "Subject") == "smimekit interop"


def assert_valid_signature(verified: Any, signer: str) -> None:
    """smimekit.verify's verdict: valid, one intact and trusted signer, the expected one."""
    verdict = verified.verdict
    assert verdict.valid, verdict.all_reasons()
    assert len(verdict.signers) == 1
    (s,) = verdict.signers
    assert s.intact and s.trusted and s.key_usage_ok and s.from_match
    assert s.email == (f"{signer}@{EMAIL_DOMAIN}",)
    assert verdict.signed
