"""Settings that mail clients need, written for the tools that push them to devices.

* **Apple Mail (iOS, iPadOS, visionOS)**: a configuration profile with the person's
  identities, the CA certificates and a ``com.apple.mail.managed`` account whose S/MIME keys
  point at the identities (:func:`apple_profile`, over
  :func:`smimekit.ca.export.mobileconfig_bytes`).
* **Thunderbird**: an enterprise ``policies.json`` that installs the organisation's root
  (``Certificates.Install``), and, with ``[directory.ldap]`` configured, the LDAP directory
  that Thunderbird searches for recipients' certificates (:func:`thunderbird_files`).
  Thunderbird's ``Preferences`` policy only sets preferences under some prefixes
  (``mail.``, ``mailnews.`` ... but not ``ldap_2.``: others are dropped with "Preference
  not allowed for stability reasons"), so the directory itself (``ldap_2.servers.*``,
  ``ldap_2.autoComplete.*``) goes into an AutoConfig file beside it.
* **Windows and Outlook**: the organisation's chain as a ``.p7b`` (:func:`p7b_bytes`), a
  degenerate PKCS#7 SignedData in DER that ``certutil``, the certificate import wizard and
  Group Policy import; the LDIF of the certificates is ``directory export --ldif``.

Nothing here holds a password: the clients ask for them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from smimekit.ca.export import MailAccount, mobileconfig_bytes
from smimekit.config import LdapConfig
from smimekit.errors import ConfigError, DirectoryError

__all__ = [
    "THUNDERBIRD_POLICY_PREFIXES",
    "MailAccount",
    "ThunderbirdFiles",
    "apple_profile",
    "p7b_bytes",
    "thunderbird_files",
]

THUNDERBIRD_POLICY_PREFIXES = (
    "accessibility.", "app.update.", "browser.", "calendar.", "chat.", "datareporting.policy.",
    "dom.", "extensions.", "general.autoScroll", "general.smoothScroll", "geo.", "gfx.",
    "intl.", "layers.", "layout.", "mail.", "mailnews.", "media.", "network.", "pdfjs.",
    "places.", "print.", "signon.", "spellchecker.", "ui.", "widget.")
"""The preference prefixes Thunderbird's ``Preferences`` policy sets (its
``Policies.sys.mjs``); a preference outside them is ignored with an error in the console."""

DIRECTORY_KEY = "smimekit"
"""The directory's name in Thunderbird's preferences: ``ldap_2.servers.smimekit``."""
_KEY = re.compile(r"[A-Za-z0-9_]{1,64}\Z")


def apple_profile(
    p12: bytes,
    *,
    account: MailAccount | None,
    ca_certs: Sequence[x509.Certificate],
    organization: str,
    encryption_p12: bytes | None = None,
    identifier: str | None = None,
) -> bytes:
    """A ``.mobileconfig`` installing a person's identities and, with ``account``, the Mail
    account that signs and decrypts with them.

    ``p12`` is the signing identity (or the only one, for a key that does both);
    ``encryption_p12`` the encryption identity of a dual-key person. Neither carries its
    passphrase into the profile: the device asks for it. ``identifier`` defaults to a
    reverse-DNS name from the account's address (``org.example.smime.alice``).

    Raises:
        CAError: bad PKCS#12 data, identifier or account fields.
    """
    if identifier is None:
        address = account.email if account is not None else "user@smimekit.invalid"
        local, _, domain = address.rpartition("@")
        parts = [re.sub(r"[^A-Za-z0-9-]", "-", p) or "x" for p in reversed(domain.split("."))]
        identifier = ".".join([*parts, "smime", re.sub(r"[^A-Za-z0-9-]", "-", local) or "user"])
    who = account.email if account is not None else "S/MIME"
    return mobileconfig_bytes(
        p12, passphrase=None, identifier=identifier, display_name=f"S/MIME for {who}",
        organization=organization, ca_certs=ca_certs, encryption_p12=encryption_p12,
        mail=account)


def p7b_bytes(certs: Sequence[x509.Certificate]) -> bytes:
    """The certificates as a degenerate PKCS#7 SignedData (no signers), DER: a ``.p7b``.

    Raises:
        DirectoryError: no certificates.
    """
    if not certs:
        raise DirectoryError("no certificates for the .p7b", source="clients")
    return pkcs7.serialize_certificates(list(certs), serialization.Encoding.DER)


@dataclass(frozen=True)
class ThunderbirdFiles:
    """What :func:`thunderbird_files` writes, by path relative to the output folder."""

    files: dict[str, bytes]
    policies: dict[str, Any]
    """The ``policies`` object of ``policies.json``."""
    preferences: dict[str, str | int | bool]
    """The AutoConfig preferences (empty without ``[directory.ldap]``)."""


def _ldap_uri(ldap: LdapConfig) -> str:
    parts = urlsplit(ldap.url)
    if parts.scheme not in ("ldap", "ldaps") or not parts.hostname:
        raise ConfigError(f"directory.ldap.url {ldap.url!r}: expected ldap://HOST or"
                          " ldaps://HOST")
    port = f":{parts.port}" if parts.port else ""
    # RFC 4516: ldap://host:port/dn?attributes?scope?filter
    return (f"{parts.scheme}://{parts.hostname}{port}/{quote(ldap.base_dn, safe='=,')}"
            "??sub?(mail=*)")


def _js(value: str | int | bool) -> str:
    return json.dumps(value)


def thunderbird_files(
    root: x509.Certificate,
    ldap: LdapConfig | None,
    *,
    root_file: str = "smimekit-root.pem",
    install_path: str | None = None,
    import_enterprise_roots: bool = False,
    description: str = "Organisation directory",
) -> ThunderbirdFiles:
    """``distribution/policies.json`` installing ``root``, and with ``ldap`` the AutoConfig
    pair (``defaults/pref/autoconfig.js``, ``smimekit.cfg``) that sets the directory up.

    ``install_path`` is the path ``Certificates.Install`` names (default ``root_file``
    alone: Thunderbird then looks in its certificate folders, e.g. /usr/lib/mozilla/
    certificates or ~/.mozilla/certificates on Linux). ``import_enterprise_roots`` also
    trusts the roots of the operating system's store. The files are relative to the
    Thunderbird installation folder (``distribution/``, ``defaults/pref/``, the ``.cfg``
    beside the executable) except the root, which goes where ``install_path`` says.

    Raises:
        ConfigError: a ``directory.ldap.url`` that is not ldap:// or ldaps://.
    """
    certificates: dict[str, Any] = {"Install": [install_path or root_file]}
    if import_enterprise_roots:
        certificates["ImportEnterpriseRoots"] = True
    policies: dict[str, Any] = {"Certificates": certificates}
    prefs: dict[str, str | int | bool] = {}
    files: dict[str, bytes] = {
        root_file: root.public_bytes(serialization.Encoding.PEM),
    }
    if ldap is not None:
        server = f"ldap_2.servers.{DIRECTORY_KEY}"
        prefs = {
            f"{server}.description": description,
            f"{server}.uri": _ldap_uri(ldap),
            f"{server}.maxHits": 100,
            # certificate lookup on sending encrypted mail asks the directory chosen for
            # address autocompletion (ldap_2.autoComplete.*), or an identity's own
            "ldap_2.autoComplete.useDirectory": True,
            "ldap_2.autoComplete.directoryServer": server,
        }
        if ldap.bind_dn:
            prefs[f"{server}.auth.dn"] = ldap.bind_dn  # the password is asked for
        # these two are under mail.: the policy may set them; every identity without its
        # own choice then uses the directory above
        policies["Preferences"] = {
            "mail.identity.default.directoryServer": {"Value": server, "Status": "default"},
            "mail.identity.default.overrideGlobal_Pref": {"Value": True, "Status": "default"},
        }
        cfg = ["// smimekit: the LDAP directory for S/MIME certificates (AutoConfig; the"
               " first line is skipped)"]
        cfg += [f"defaultPref({_js(name)}, {_js(value)});" for name, value in prefs.items()]
        files["smimekit.cfg"] = ("\n".join(cfg) + "\n").encode()
        files["defaults/pref/autoconfig.js"] = (
            b'// smimekit: load smimekit.cfg from the installation folder\n'
            b'pref("general.config.filename", "smimekit.cfg");\n'
            b'pref("general.config.obscure_value", 0);\n')
    files["distribution/policies.json"] = (
        json.dumps({"policies": policies}, indent=2, sort_keys=True) + "\n").encode()
    return ThunderbirdFiles(files, policies, prefs)
