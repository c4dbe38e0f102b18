"""Assertions shared by the matrix modules: what "the peer got our message" means.

No smimekit import here (the harness must run without it); smimekit objects are only
touched through their public attributes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peers import EMAIL_DOMAIN, ENTITY, entity_view, from_header, header


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
