"""What every certificate source gives the resolver (:mod:`smimekit.directory.resolver`).

A source answers one question: which certificates does it hold for this address? It does
not validate them (the resolver validates every candidate the same way, whatever its source)
and it does not rank them. Sources:

=============  =========================================================================
``store``      certificates our own CA issued (the store's certificates table)
``harvested``  certificates kept from signed mail that validated (``directory harvest``)
``ldap``       an LDAP directory: ``userCertificate;binary`` / ``userSMIMECertificate``
``smimea``     DNS SMIMEA records (RFC 8162), DNSSEC validated
=============  =========================================================================

A source that cannot answer (unreachable, refused bind, bogus DNSSEC, garbage in an entry it
cannot skip) raises :class:`~smimekit.errors.DirectoryError`; the resolver records that as
the source's answer and asks the others. A source that answered "nothing here" returns an
empty list. Garbage in one entry among good ones is skipped and noted in ``Found.notes``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from cryptography import x509

__all__ = ["Candidate", "Found", "Source"]


@dataclass(frozen=True)
class Candidate:
    """One certificate a source holds for an address, with what the source knows of it."""

    certificate: x509.Certificate
    source: str
    """The source's name (``store``, ``harvested``, ``ldap``, ``smimea``)."""
    chain: tuple[x509.Certificate, ...] = ()
    """Intermediates the source had with it (LDAP's userSMIMECertificate, a signed mail)."""
    where: str = ""
    """Where exactly, for people: an LDAP DN, a DNS owner name, a message file."""
    preferred: bool = False
    """The owner announced this one (SMIMEEncryptionKeyPreference in signed mail)."""
    first_seen: dt.datetime | None = None
    last_seen: dt.datetime | None = None


@dataclass(frozen=True)
class Found:
    """A source's answer for one address."""

    candidates: Sequence[Candidate]
    notes: Sequence[str] = field(default_factory=tuple)
    """Entries skipped and why (``garbage in userCertificate of uid=bob``)."""


@runtime_checkable
class Source(Protocol):
    """A certificate source (see the module docstring)."""

    name: str

    def find(self, address: str) -> Found:
        """The certificates this source holds for ``address`` (an addr-spec, already
        normalised by the resolver: lower-case domain in A-labels, local part as given).

        Raises:
            DirectoryError: the source cannot answer.
        """
        ...
