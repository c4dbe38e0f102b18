"""Distinguished names as people read them: RFC 4514 strings with attribute names, not OIDs.

``x509.Name.rfc4514_string()`` knows only the nine names of RFC 4514 section 3 and writes
every other attribute as a dotted OID (``1.2.840.113549.1.9.1=alice@example.org``). S/MIME
certificates carry emailAddress, organizationIdentifier, givenName, surname and pseudonym
(CA/B Forum S/MIME BR 7.1.4.2.2), so every name smimekit prints goes through
:func:`display_name`, with the names of RFC 4519 (and X.520 / PKCS #9 for the few it lacks).
"""

from __future__ import annotations

from cryptography import x509

_LABELS = {
    # RFC 4519
    "2.5.4.3": "CN",
    "2.5.4.4": "SN",
    "2.5.4.5": "serialNumber",
    "2.5.4.6": "C",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.9": "STREET",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "2.5.4.12": "title",
    "2.5.4.13": "description",
    "2.5.4.15": "businessCategory",
    "2.5.4.16": "postalAddress",
    "2.5.4.17": "postalCode",
    "2.5.4.18": "postOfficeBox",
    "2.5.4.20": "telephoneNumber",
    "2.5.4.41": "name",
    "2.5.4.42": "givenName",
    "2.5.4.43": "initials",
    "2.5.4.44": "generationQualifier",
    "2.5.4.45": "x500UniqueIdentifier",
    "2.5.4.46": "dnQualifier",
    "2.5.4.51": "houseIdentifier",
    "0.9.2342.19200300.100.1.1": "UID",
    "0.9.2342.19200300.100.1.25": "DC",
    # X.520
    "2.5.4.65": "pseudonym",
    "2.5.4.97": "organizationIdentifier",
    # PKCS #9 (RFC 2985)
    "1.2.840.113549.1.9.1": "emailAddress",
    "1.2.840.113549.1.9.2": "unstructuredName",
    # CA/B Forum EV jurisdiction (Microsoft arc)
    "1.3.6.1.4.1.311.60.2.1.1": "jurisdictionL",
    "1.3.6.1.4.1.311.60.2.1.2": "jurisdictionST",
    "1.3.6.1.4.1.311.60.2.1.3": "jurisdictionC",
}
_OVERRIDES = {x509.ObjectIdentifier(dotted): label for dotted, label in _LABELS.items()}


def attribute_label(dotted: str) -> str:
    """The name of an attribute type given as a dotted OID; the OID itself when unknown."""
    return _LABELS.get(dotted, dotted)


def display_name(name: x509.Name) -> str:
    """``name`` as an RFC 4514 string with readable attribute names (last RDN first)."""
    return name.rfc4514_string(_OVERRIDES)
