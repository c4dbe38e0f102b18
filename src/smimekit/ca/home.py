"""The CA's files in the data directory, keys encrypted at rest.

::

    <data-dir>/ca/            0700
      ca.json                 names, URLs, key type, token reference, the store (no secrets)
      root.pem issuing.pem    the CA certificates
      ocsp.pem vault.pem      the delegated OCSP signer (P-384; an ML-DSA CA's own ML-DSA type)
                              and the key vault certificates
      root.crl                the root's CRL (signed at init, 12 months; 'ca crl --root')
      root.p12                root key (absent once exported for an offline root)
      issuing.p12             issuing key (absent when it lives in a PKCS#11 token)
      ocsp.p12 vault.p12      OCSP signer and vault keys

Every ``.p12`` holds one private key under the CA passphrase (:mod:`smimekit.keys.protect`).
:meth:`CAHome.create` builds the whole directory beside its final place and renames it into
place, so a crash leaves either no CA or a complete one.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from smimekit.ca.authority import Authority, CAKeyType
from smimekit.ca.crl import build_crl
from smimekit.ca.ocsp import build_responder_certificate
from smimekit.ca.profiles import PROFILES, ValidationLevel
from smimekit.errors import CAError, KeyLoadError, PassphraseError, StoreError
from smimekit.fsutil import atomic_write, private_dir, write_output_file
from smimekit.keys.protect import protect_key, unprotect_key
from smimekit.keys.signer import LocalSigner, Signer
from smimekit.keys.vault import KeyVault
from smimekit.store import Revocation
from smimekit.store.audit import AuditKey
from smimekit.store.location import StoreLocation

AUDIT_KEY_FILE = "audit.key"

__all__ = ["CAConfig", "CAHome", "OcspSigner", "Pkcs11Ref", "UnlockedCA", "check_base_url"]

CONFIG_VERSION = 1
OCSP_SIGNER_VALIDITY = dt.timedelta(days=90)


# BR 7.1.4.2.2 d: scheme (3 letters), country (2), optional +state/province, '-', reference
_ORGANIZATION_IDENTIFIER = re.compile(r"[A-Z]{3}[A-Z]{2}(\+[A-Z0-9]{1,3})?-[\x21-\x7e]+")


def check_base_url(base_url: str) -> str:
    """``base_url`` checked for a CA's CRL, OCSP and caIssuers URLs; returns it without a
    trailing slash.

    Raises:
        CAError: not ``http://`` (BR 7.1.2.3 b, c), no host, user information, a query or
            fragment, a bad port, non-ASCII (give an IDN host as its xn-- A-label), or a
            host that is not a public DNS name: an IP address or an internal name
            (``localhost``, ``.local``, ``.internal``, ``.test``, an unknown top-level
            domain), which pkilint reports as an ERROR in every certificate issued.
    """
    if not base_url.isascii() or any(c.isspace() or ord(c) < 32 for c in base_url):
        raise CAError(f"base URL {base_url!r}: use ASCII without spaces (an IDN host as its"
                      " xn-- form)")
    parts = urlsplit(base_url)
    if parts.scheme != "http":
        raise CAError(f"base URL {base_url!r}: CRL and AIA URLs must be http://"
                      " (S/MIME BR 7.1.2.3 b, c)")
    try:
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        raise CAError(f"base URL {base_url!r}: bad port") from None
    host = parts.hostname or ""
    if parts.username is not None or parts.query or parts.fragment or "#" in base_url:
        raise CAError(f"base URL {base_url!r}: no user, query or fragment, only"
                      " http://host[:port][/path]")
    if not host:
        raise CAError(f"base URL {base_url!r}: no host name")
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    else:
        raise CAError(f"base URL {base_url!r}: use a public DNS name, not an IP address"
                      " (pkilint refuses it in every certificate issued)")
    labels = host.split(".")
    if not all(_DNS_LABEL.fullmatch(label) for label in labels) or len(host) > 253:
        raise CAError(f"base URL {base_url!r}: {host!r} is not a valid DNS name")
    # the list pkilint itself consults (its dependency): a host under no public suffix is
    # "internal" and every certificate naming it would be refused
    if _public_suffixes().privatesuffix(host.lower()) is None:
        raise CAError(f"base URL {base_url!r}: {host!r} is not a public DNS name (an"
                      " internal or unknown domain; pkilint would refuse every certificate)")
    return base_url.rstrip("/")


_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


@functools.cache
def _public_suffixes() -> Any:
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList(accept_unknown=False)


@dataclass(frozen=True)
class Pkcs11Ref:
    """Where the issuing key lives in a token (the PIN is never stored)."""

    module: str
    token: str
    key_label: str


@dataclass(frozen=True)
class CAConfig:
    """What ``ca init`` was told; stored in ``ca.json``."""

    organization: str
    base_url: str
    key_type: str = CAKeyType.P384.value
    country: str | None = None
    organization_identifier: str | None = None
    """BR 7.1.4.2.2 d form (e.g. ``NTRGB-12345678``); needed by sponsored/organization
    profiles."""
    default_profile: str = "mailbox-strict"
    pkcs11: Pkcs11Ref | None = None
    created_at: str = field(default="")
    store: StoreLocation | None = None
    """The store the CA keeps its records in (None: a CA made before it was recorded)."""

    def check(self) -> None:
        """Everything ``ca init`` was told, checked before anything is created.

        Raises:
            CAError: a value the CA certificates, or the certificates it would issue, cannot
                carry: a base URL that is not a public http:// URL (pkilint refuses internal
                names and addresses in CRL and AIA URLs), a name too long or empty, a country
                that is not two letters, an organizationIdentifier not in the BR form, an
                unknown profile or key type, or a profile that needs an organizationIdentifier
                without one.
        """
        check_base_url(self.base_url)
        org = self.organization
        if not org.strip() or org != org.strip() or any(ord(c) < 32 or ord(c) == 127
                                                          for c in org):
            raise CAError("the organization name must be non-empty printable text without"
                          " leading or trailing spaces")
        for label in ("S/MIME Root CA", "S/MIME Issuing CA"):
            if len(f"{org} {label}") > 64:  # X.520 ub-common-name
                raise CAError(f"the organization name is too long: the CA's common name"
                              f" '{org} {label}' would exceed 64 characters (at most"
                              f" {64 - len(label) - 1} for the name)")
        if self.country is not None and not re.fullmatch(r"[A-Z]{2}", self.country):
            raise CAError(f"country {self.country!r}: expected a two-letter ISO 3166 code in"
                          " capitals, e.g. GB")
        org_id = self.organization_identifier
        if org_id is not None and not _ORGANIZATION_IDENTIFIER.fullmatch(org_id):
            raise CAError(f"organization identifier {org_id!r}: expected the BR 7.1.4.2.2 d"
                          " form, e.g. NTRGB-12345678 or VATDE-123456789")
        profile = PROFILES.get(self.default_profile)
        if profile is None:
            raise CAError(f"unknown profile {self.default_profile!r}; one of: "
                          + ", ".join(sorted(PROFILES)))
        if profile.level is not ValidationLevel.MAILBOX and org_id is None:
            raise CAError(f"profile {profile.name} needs --organization-identifier")
        try:
            key_type = CAKeyType(self.key_type)
        except ValueError:
            raise CAError(f"unknown CA key type {self.key_type!r}; one of: "
                          + ", ".join(k.value for k in CAKeyType)) from None
        if key_type.post_quantum and self.pkcs11 is not None:
            raise CAError(f"a {key_type.value} issuing key cannot live in a PKCS#11 token here"
                          " (no ML-DSA mechanism is used yet): keep it in software")

    def to_json(self) -> bytes:
        data = asdict(self)
        data["version"] = CONFIG_VERSION
        return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, raw: bytes) -> CAConfig:
        try:
            data: dict[str, Any] = json.loads(raw)
            if data.pop("version", None) != CONFIG_VERSION:
                raise CAError("ca.json has an unknown version")
            token = data.pop("pkcs11", None)
            store = data.pop("store", None)
            return cls(**data, pkcs11=Pkcs11Ref(**token) if token else None,
                       store=StoreLocation.from_json(store) if store is not None else None)
        except (ValueError, TypeError, StoreError) as exc:
            raise CAError(f"ca.json is damaged: {exc}") from None


@dataclass(frozen=True)
class UnlockedCA:
    """The CA with the keys this run needs."""

    config: CAConfig
    authority: Authority
    ocsp_cert: x509.Certificate
    ocsp_key: CertificateIssuerPrivateKeyTypes | None
    vault: KeyVault


@dataclass(frozen=True)
class OcspSigner:
    """What the default ``ca serve`` holds: the CA certificates and the delegated OCSP
    signer's key, never the issuing, root or vault key (:meth:`CAHome.open_ocsp_signer`)."""

    config: CAConfig
    root: x509.Certificate
    issuing: x509.Certificate
    cert: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes


ROOT_CRL_VALIDITY = dt.timedelta(days=365)
"""The root's CRL lasts the BR maximum for CA CRLs (4.9.7: 12 months): the root is offline."""


def root_crl_der(authority: Authority, number: int, now: dt.datetime,
                 revoked: Sequence[Revocation] = ()) -> bytes:
    """The root's CRL, signed with the root key."""
    assert authority.root_signer is not None
    crl = build_crl(authority.root, authority.root_signer, revoked, number=number,
                    this_update=now, next_update=now + ROOT_CRL_VALIDITY,
                    for_ca_certificates=True)
    return crl.public_bytes(serialization.Encoding.DER)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _issuer_key(key: Any, what: str) -> CertificateIssuerPrivateKeyTypes:
    from cryptography.hazmat.primitives.asymmetric import ed25519, mldsa, rsa

    if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
                  | ed25519.Ed25519PrivateKey | mldsa.MLDSA44PrivateKey
                  | mldsa.MLDSA65PrivateKey | mldsa.MLDSA87PrivateKey):
        return key
    raise CAError(f"{what} holds a key that cannot sign")


def _ocsp_key(config: CAConfig) -> CertificateIssuerPrivateKeyTypes:
    """A fresh delegated OCSP signer key: P-384, or for an ML-DSA CA the CA's own ML-DSA
    parameter set, so that no answer of a post-quantum CA rests on a classical signature."""
    key_type = CAKeyType(config.key_type)
    if key_type.post_quantum:
        return key_type.generate()
    return ec.generate_private_key(ec.SECP384R1())


class CAHome:
    """The ``ca`` directory under a data directory."""

    def __init__(self, data_dir: Path | str) -> None:
        self.path = Path(data_dir) / "ca"

    def exists(self) -> bool:
        """True once ``ca init`` has run here."""
        return (self.path / "ca.json").is_file()

    def _require(self) -> None:
        if not self.exists():
            raise CAError(f"no CA in {self.path.parent}: run 'smimekit ca init' first")

    # -- creation ------------------------------------------------------------------------

    def create(
        self,
        config: CAConfig,
        passphrase: bytes,
        *,
        issuing_signer: Signer | None = None,
        now: dt.datetime | None = None,
    ) -> UnlockedCA:
        """Create root, issuing CA, OCSP signer and key vault; write them all or nothing.

        ``issuing_signer`` is a token-held key (``config.pkcs11`` must say where); otherwise
        the issuing key is generated in software like the root's.

        Raises:
            CAError: a CA exists here already, bad configuration (:meth:`CAConfig.check`).
            PassphraseError: empty passphrase.
        """
        if self.exists():
            raise CAError(f"a CA exists already in {self.path}; refusing to replace it")
        if not passphrase:
            raise PassphraseError("the CA keys need a non-empty passphrase")
        config.check()
        if (config.pkcs11 is None) != (issuing_signer is None):
            raise CAError("a token-held issuing key needs its PKCS#11 reference, and back")
        key_type = CAKeyType(config.key_type)
        now = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
        config = CAConfig(**{**asdict(config), "pkcs11": config.pkcs11, "store": config.store,
                             "created_at": now.isoformat()})
        root_key = key_type.generate()
        issuing_key = None if issuing_signer is not None else key_type.generate()
        authority = Authority.create(
            config.organization, base_url=config.base_url, key_type=key_type,
            country=config.country, now=now, root_key=root_key,
            issuing_key=issuing_signer or issuing_key)
        ocsp_key = _ocsp_key(config)
        ocsp_cert = build_responder_certificate(
            authority.cert, authority.signer, ocsp_key.public_key(), now=now,
            validity=OCSP_SIGNER_VALIDITY)
        vault = KeyVault.create(config.organization, now=now)
        assert vault.key is not None
        assert authority.root_signer is not None
        root_crl = root_crl_der(authority, 1, now)

        files: dict[str, bytes] = {
            "ca.json": config.to_json(),
            "root.pem": _pem(authority.root),
            "issuing.pem": _pem(authority.cert),
            "ocsp.pem": _pem(ocsp_cert),
            "vault.pem": _pem(vault.cert),
            "root.crl": root_crl,
            "root.p12": protect_key(root_key, passphrase),
            "ocsp.p12": protect_key(ocsp_key, passphrase),
            "vault.p12": protect_key(vault.key, passphrase),
            AUDIT_KEY_FILE: AuditKey.generate().to_text().encode("ascii"),
        }
        if issuing_key is not None:
            files["issuing.p12"] = protect_key(issuing_key, passphrase)
        try:
            private_dir(self.path.parent)
            staging = Path(tempfile.mkdtemp(prefix=".ca-new.", dir=self.path.parent))
            try:
                for name, data in files.items():
                    atomic_write(staging / name, data)
                os.rename(staging, self.path)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        except OSError as exc:
            raise CAError(f"cannot create the CA in {self.path}: {exc.strerror or exc}") from None
        return UnlockedCA(config, authority, ocsp_cert, ocsp_key, vault)

    # -- reading -------------------------------------------------------------------------

    def config(self) -> CAConfig:
        """The stored configuration."""
        self._require()
        return CAConfig.from_json(self._read("ca.json"))

    def _read(self, name: str) -> bytes:
        try:
            return (self.path / name).read_bytes()
        except FileNotFoundError:
            raise CAError(f"the CA file {self.path / name} is missing") from None
        except OSError as exc:
            raise CAError(f"cannot read {self.path / name}: {exc.strerror or exc}") from None

    def certificate(self, name: str) -> x509.Certificate:
        """``root``, ``issuing``, ``ocsp`` or ``vault``."""
        self._require()
        try:
            return x509.load_pem_x509_certificate(self._read(f"{name}.pem"))
        except ValueError:
            raise CAError(f"the CA file {name}.pem is damaged") from None

    def _key(self, name: str, passphrase: bytes) -> CertificateIssuerPrivateKeyTypes:
        try:
            key = unprotect_key(self._read(f"{name}.p12"), passphrase, f"the CA {name} key")
        except (PassphraseError, KeyLoadError) as exc:
            raise type(exc)(str(exc).replace("passphrase for", "CA passphrase for")) from None
        return _issuer_key(key, f"{name}.p12")

    # -- the audit key -------------------------------------------------------------------

    @property
    def audit_key_path(self) -> Path:
        """``<data-dir>/ca/audit.key``: the HMAC key that anchors the store's audit rows."""
        return self.path / AUDIT_KEY_FILE

    def has_audit_key(self) -> bool:
        """True when the audit key file is there (``ca init`` writes it)."""
        return self.audit_key_path.is_file()

    def audit_key(self) -> AuditKey:
        """Read the audit key (64 hex digits, mode 0600).

        Raises:
            CAError: the file is missing (a CA made before audit keys: ``smimekit log
                init-key``), unreadable or not a key.
        """
        path = self.audit_key_path
        try:
            text = path.read_text(encoding="ascii")
        except FileNotFoundError:
            raise CAError(
                f"no audit key at {path}: restore it from your backup, or for a CA made"
                " before audit keys run 'smimekit log init-key'") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise CAError(f"cannot read the audit key {path}: {exc}") from None
        try:
            return AuditKey.from_text(text)
        except ValueError:
            raise CAError(f"{path} is not an audit key (64 hex digits)") from None

    def create_audit_key(self) -> AuditKey:
        """Write a new audit key (mode 0600); never replaces one.

        Raises:
            CAError: no CA here, a key exists already, or it cannot be written.
        """
        self._require()
        key = AuditKey.generate()
        path = self.audit_key_path
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise CAError(f"an audit key exists already at {path}; refusing to replace it")\
                from None
        except OSError as exc:
            raise CAError(f"cannot create {path}: {exc.strerror or exc}") from None
        try:
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(key.to_text())
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            path.unlink(missing_ok=True)
            raise CAError(f"cannot write {path}: {exc.strerror or exc}") from None
        return key

    def has_root_key(self) -> bool:
        """False once the root key was exported and removed (offline root)."""
        return (self.path / "root.p12").is_file()

    def unlock(
        self,
        passphrase: bytes | None,
        *,
        pin: str | None = None,
        root: bool = False,
    ) -> UnlockedCA:
        """The CA with its keys. ``passphrase`` None: certificates only (no signing).

        Raises:
            CAError: no CA, missing or damaged files, the root key is offline but ``root``
                was asked for, the token cannot be opened.
            PassphraseError: wrong passphrase.
        """
        config = self.config()
        root_cert = self.certificate("root")
        issuing_cert = self.certificate("issuing")
        ocsp_cert = self.certificate("ocsp")
        vault_cert = self.certificate("vault")
        signer: Signer = _NoKey()
        root_signer: Signer | None = None
        ocsp_key = None
        vault = KeyVault(vault_cert)
        if passphrase is not None:
            if config.pkcs11 is not None:
                if pin is None:
                    raise PassphraseError("the issuing key is in a PKCS#11 token: give its PIN "
                                          "(--pin-file or SMIMEKIT_PKCS11_PIN)")
                from smimekit.keys.pkcs11 import open_signer

                signer = open_signer(config.pkcs11.module, config.pkcs11.token,
                                     config.pkcs11.key_label, pin)
            else:
                signer = LocalSigner(self._key("issuing", passphrase))
            if signer.public_key() != issuing_cert.public_key():
                raise CAError("the issuing key does not match issuing.pem")
            ocsp_key = self._key("ocsp", passphrase)
            # after 'escrow init' the vault key exists only as officers' shares
            if (self.path / "vault.p12").is_file():
                vault = KeyVault(vault_cert, self._key("vault", passphrase))
            if root:
                if not self.has_root_key():
                    raise CAError("the root key is offline (exported); bring it back with "
                                  "'smimekit ca import-root'")
                root_signer = LocalSigner(self._key("root", passphrase))
        authority = Authority(root=root_cert, cert=issuing_cert, signer=signer,
                              base_url=config.base_url, root_signer=root_signer)
        return UnlockedCA(config, authority, ocsp_cert, ocsp_key, vault)

    def open_ocsp_signer(self, passphrase: bytes, *,
                         now: dt.datetime | None = None) -> OcspSigner:
        """The certificates and the OCSP signer's key only (``ocsp.p12``): neither
        ``issuing.p12`` nor the token, ``root.p12`` or ``vault.p12`` is read.

        Raises:
            CAError: no CA, a missing or damaged file, the OCSP signer certificate expired
                (renewing it needs the issuing key: ``ca crl``), or its key is
                not the certificate's.
            PassphraseError: wrong passphrase.
        """
        config = self.config()
        root_cert = self.certificate("root")
        issuing_cert = self.certificate("issuing")
        ocsp_cert = self.certificate("ocsp")
        now = now or dt.datetime.now(dt.UTC)
        if ocsp_cert.not_valid_after_utc <= now:
            raise CAError(f"the OCSP signer certificate expired on"
                          f" {ocsp_cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC: renew it with"
                          " 'smimekit ca crl' or 'smimekit ca serve --sign-crls' where the"
                          " issuing key is")
        if not (self.path / "ocsp.p12").is_file():
            raise CAError(f"the OCSP signer key {self.path / 'ocsp.p12'} is missing")
        key = self._key("ocsp", passphrase)
        if key.public_key() != ocsp_cert.public_key():
            raise CAError("the OCSP signer key does not match ocsp.pem")
        return OcspSigner(config, root_cert, issuing_cert, ocsp_cert, key)

    # -- offline root ----------------------------------------------------------------------

    def export_root(self, target: Path, *, remove: bool) -> None:
        """Copy the (still encrypted) root key to ``target``; with ``remove`` delete it here.

        The copy is written and fsynced before the original goes.

        Raises:
            CAError: no root key here, or the file cannot be written.
        """
        self._require()
        if not self.has_root_key():
            raise CAError("the root key is not here (already offline)")
        data = self._read("root.p12")
        # a regular file (through a link too) that reads back, never a device or a FIFO
        if target.exists() and not target.is_file():
            raise CAError(f"cannot export the root key to {target}: not a regular file;"
                          " the root key is kept here")
        try:
            write_output_file(target, data)
            if target.read_bytes() != data:
                raise CAError(f"the copy at {target} does not read back; root key kept")
            if remove:
                (self.path / "root.p12").unlink()
        except OSError as exc:
            raise CAError(f"cannot export the root key to {target}: {exc.strerror or exc};"
                          " the root key is kept here") from None

    def import_root(self, source: Path, passphrase: bytes) -> None:
        """Bring an exported root key back (it must match root.pem and open)."""
        self._require()
        try:
            data = source.read_bytes()
        except OSError as exc:
            raise CAError(f"cannot read {source}: {exc.strerror or exc}") from None
        key = _issuer_key(unprotect_key(data, passphrase, "the root key file"), str(source))
        if key.public_key() != self.certificate("root").public_key():
            raise CAError(f"{source} is not this CA's root key")
        try:
            atomic_write(self.path / "root.p12", data)
        except OSError as exc:
            raise CAError(f"cannot write the root key: {exc.strerror or exc}") from None

    def root_crl(self) -> bytes:
        """The root's current CRL (DER)."""
        self._require()
        return self._read("root.crl")

    def publish_root_crl(self, unlocked: UnlockedCA, revoked: Sequence[Revocation] = (),
                         now: dt.datetime | None = None) -> x509.CertificateRevocationList:
        """Re-sign the root's CRL (needs the root key online), numbered one higher."""
        if unlocked.authority.root_signer is None:
            raise CAError("the root key is needed to sign the root's CRL")
        now = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
        current = x509.load_der_x509_crl(self.root_crl())
        number = current.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        der = root_crl_der(unlocked.authority, number + 1, now, revoked)
        try:
            atomic_write(self.path / "root.crl", der, mode=0o644)
        except OSError as exc:
            raise CAError(f"cannot write the root CRL: {exc.strerror or exc}") from None
        return x509.load_der_x509_crl(der)

    def replace_ocsp_signer(self, unlocked: UnlockedCA, passphrase: bytes,
                            now: dt.datetime | None = None) -> UnlockedCA:
        """A fresh delegated OCSP signer (key and certificate), e.g. before the old expires."""
        now = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
        key = _ocsp_key(unlocked.config)
        cert = build_responder_certificate(unlocked.authority.cert, unlocked.authority.signer,
                                           key.public_key(), now=now,
                                           validity=OCSP_SIGNER_VALIDITY)
        try:
            atomic_write(self.path / "ocsp.p12", protect_key(key, passphrase))
            atomic_write(self.path / "ocsp.pem", _pem(cert))
        except OSError as exc:
            raise CAError(f"cannot write the OCSP signer: {exc.strerror or exc}") from None
        return UnlockedCA(unlocked.config, unlocked.authority, cert, key, unlocked.vault)


class _NoKey:
    """Stands for the issuing key when the CA was opened without its passphrase."""

    def public_key(self) -> Any:
        raise CAError("the CA is locked: give its passphrase")

    def sign(self, data: bytes) -> bytes:
        raise CAError("the CA is locked: give its passphrase")
