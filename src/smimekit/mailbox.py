"""Mailbox addresses: internationalised domains (IDNA) and local parts (RFC 9598, RFC 6532).

One place decides how an address is written into a certificate and how two addresses
compare, so that the CA and the verifier agree.

- Domains are compared and certified as A-labels (``xn--...``), lower case (RFC 5280 7.5,
  RFC 9598 3). A U-label is checked with a conservative subset of IDNA 2008 (RFC 5891
  5.4, RFC 5892): NFC, lower case, letters, marks and digits only (no symbols, no joiners),
  no leading combining mark, no ``--`` in positions 3 and 4. Python's built-in ``idna``
  codec is IDNA 2003, which maps ``ß`` to ``ss``: a certificate for another domain than the
  one asked for. We encode with Punycode directly instead, as IDNA 2008 does.
- A local part that is not ASCII makes the address an SmtpUTF8Mailbox (otherName
  1.3.6.1.5.5.7.8.9); an ASCII one an rfc822Name (RFC 9598 3).
- Comparison ignores case in the domain and, like NSS and Thunderbird, in the local part too;
  local parts are compared in Unicode NFC.
"""

from __future__ import annotations

import unicodedata

SMTP_UTF8_MAILBOX = "1.3.6.1.5.5.7.8.9"
"""id-on-SmtpUTF8Mailbox (RFC 9598)."""

_LDH = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
# RFC 5322 specials that cannot appear unquoted in a local part; quoted local parts are not
# certified (nobody's mailbox needs one, and readers disagree on them).
_SPECIALS = frozenset('()<>[]:;@\\,"')


class AddressError(ValueError):
    """Not a mailbox address we can certify or compare as one."""


def _ldh_label(label: str, domain: str) -> None:
    if not 1 <= len(label) <= 63 or not set(label) <= _LDH:
        raise AddressError(f"{label!r} is not a valid domain label")
    if label.startswith("-") or label.endswith("-"):
        raise AddressError(f"{label!r} starts or ends with a hyphen")


def _check_u_label(label: str, domain: str) -> None:
    """A conservative subset of RFC 5891 5.4 / RFC 5892 for one non-ASCII label."""
    if unicodedata.normalize("NFC", label) != label:
        raise AddressError(f"the label {label!r} is not in Unicode NFC")
    if label[2:4] == "--":
        raise AddressError(f"the label {label!r} has '--' in positions 3 and 4")
    if unicodedata.category(label[0]).startswith("M"):
        raise AddressError(f"the label {label!r} starts with a combining mark")
    for ch in label:
        if ch in _LDH:
            continue
        cat = unicodedata.category(ch)
        # PVALID code points are (roughly) lower-case letters, marks and decimal digits.
        if cat not in ("Ll", "Lo", "Lm", "Mn", "Mc", "Nd") or ch.lower() != ch:
            raise AddressError(
                f"U+{ord(ch):04X} is not allowed in an internationalised domain"
                " name (IDNA 2008)"
            )


def domain_to_ascii(domain: str) -> str:
    """``domain`` as lower-case A-labels, checked.

    Raises:
        AddressError: an empty label, a label that is too long, a character IDNA 2008 does
            not allow, or an ``xn--`` label that is not a valid A-label.
    """
    if not domain or domain.endswith(".") or len(domain) > 253 * 4:
        raise AddressError(f"{domain!r} is not a domain name")
    out = []
    for label in unicodedata.normalize("NFC", domain).lower().split("."):
        if label.isascii():
            _ldh_label(label, domain)
            if label.startswith("xn--"):
                try:
                    u_label = label[4:].encode("ascii").decode("punycode")
                except (UnicodeError, ValueError):
                    raise AddressError(f"{label!r} is not a valid A-label") from None
                if not u_label or u_label.isascii():
                    raise AddressError(f"{label!r} is not a valid A-label")
                _check_u_label(u_label, domain)
                if "xn--" + u_label.encode("punycode").decode("ascii") != label:
                    raise AddressError(f"{label!r} is not a canonical A-label")
            out.append(label)
            continue
        _check_u_label(label, domain)
        a_label = "xn--" + label.encode("punycode").decode("ascii")
        _ldh_label(a_label, domain)
        out.append(a_label)
    ascii_domain = ".".join(out)
    if len(ascii_domain) > 253:
        raise AddressError(f"{domain!r} is longer than 253 characters as A-labels")
    return ascii_domain


def domain_to_unicode(domain: str) -> str:
    """``domain`` with its A-labels shown as U-labels (for people); never raises."""
    labels = []
    for label in domain.split("."):
        if label.lower().startswith("xn--"):
            try:
                label = label[4:].encode("ascii").decode("punycode")
            except (UnicodeError, ValueError):
                pass
        labels.append(label)
    return ".".join(labels)


def _local_part(local: str, address: str) -> str:
    local = unicodedata.normalize("NFC", local)
    if not local or len(local.encode("utf-8")) > 64:
        raise AddressError("the local part must be 1 to 64 octets")
    if local.startswith(".") or local.endswith(".") or ".." in local:
        raise AddressError("misplaced '.' in the local part")
    for ch in local:
        if ch in _SPECIALS or ch.isspace() or unicodedata.category(ch).startswith("C"):
            raise AddressError(f"{ch!r} is not allowed in the local part")
    return local


def certificate_form(address: str) -> str:
    """``address`` as a certificate carries it: NFC lower-case local part, A-label domain.

    Raises:
        AddressError: not a mailbox address we certify (see :func:`domain_to_ascii`).
    """
    address = address.strip()
    local, at, domain = address.rpartition("@")
    if not at or not local:
        raise AddressError(f"{address!r} is not a mailbox address")
    try:
        ascii_domain = domain_to_ascii(domain)
        if "." not in ascii_domain:
            raise AddressError("the domain has no dot")
        form = f"{_local_part(local, address).lower()}@{ascii_domain}"
        if len(form.encode("utf-8")) > 254:
            raise AddressError("longer than 254 octets")
    except AddressError as exc:
        raise AddressError(f"{address!r} is not a mailbox address: {exc}") from None
    return form


def is_smtp_utf8(address: str) -> bool:
    """True when the local part is not ASCII: an SmtpUTF8Mailbox, not an rfc822Name."""
    return not address.rpartition("@")[0].isascii()


def comparable(address: str) -> str:
    """The form two addresses are compared in; never raises.

    Case-insensitive in both parts (as NSS and Thunderbird compare), NFC local part, domain
    as A-labels. A domain that is not valid IDNA is compared as written, lower case.
    """
    local, at, domain = address.strip().rpartition("@")
    if not at:
        return unicodedata.normalize("NFC", address.strip()).lower()
    try:
        domain = domain_to_ascii(domain)
    except AddressError:
        domain = domain.lower()
    return f"{unicodedata.normalize('NFC', local).lower()}@{domain}"
