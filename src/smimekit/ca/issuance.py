"""Issuance with records: our CA, the store and the key vault working as one.

:class:`CertificateAuthority` issues from a CSR (proof of possession checked) or with keys it
generates, renews, revokes and publishes CRLs. Every operation writes its certificates, its
key-history rows and its audit row in one store transaction: a failure anywhere leaves nothing
behind. Encryption keys the CA generates are sealed into the user's key history (the vault);
signing keys it generates are handed over and forgotten (non-repudiation).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa, mlkem, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

from smimekit.ca.crl import build_crl, parse_reason
from smimekit.ca.home import UnlockedCA
from smimekit.ca.profiles import (
    DEFAULT_VALIDITY,
    PROFILES,
    Profile,
    Purpose,
    SubjectInfo,
    ValidationLevel,
)
from smimekit.dn import display_name
from smimekit.errors import CAError
from smimekit.mailbox import AddressError, certificate_form, comparable
from smimekit.store import IssuedRecord, Store
from smimekit.store.certificates import LiveCertificateExists

__all__ = [
    "CRL_VALIDITY",
    "CertificateAuthority",
    "Issuance",
    "IssuedItem",
    "PreparedIssuance",
    "SubscriberKeyType",
    "check_key_types",
    "fingerprint",
]

CRL_VALIDITY = dt.timedelta(days=7)
"""nextUpdate - thisUpdate of our CRLs (S/MIME BR 4.9.7: at most 10 days)."""


class SubscriberKeyType(enum.Enum):
    """Key types the CA generates for subscribers."""

    RSA2048 = "rsa2048"
    RSA3072 = "rsa3072"
    RSA4096 = "rsa4096"
    P256 = "p256"
    P384 = "p384"
    ED25519 = "ed25519"
    """Signing only. (X25519 is not offered: the S/MIME BR do not allow it, see docs/ca.md.)"""
    ML_DSA_44 = "ml-dsa-44"
    """Signing only (post-quantum, FIPS 204; BR 1.0.11, ballot SMC013)."""
    ML_DSA_65 = "ml-dsa-65"
    """Signing only (post-quantum)."""
    ML_DSA_87 = "ml-dsa-87"
    """Signing only (post-quantum)."""
    ML_KEM_768 = "ml-kem-768"
    """Encryption only (post-quantum, FIPS 203, RFC 9935). (ML-KEM-512 is not offered:
    ``cryptography`` has no ML-KEM-512.)"""
    ML_KEM_1024 = "ml-kem-1024"
    """Encryption only (post-quantum)."""

    @property
    def can_sign(self) -> bool:
        """False for the ML-KEM types (they only receive)."""
        return not self.value.startswith("ml-kem")

    @property
    def can_encrypt(self) -> bool:
        """False for Ed25519 and the ML-DSA types (they only sign)."""
        return self is not SubscriberKeyType.ED25519 and not self.value.startswith("ml-dsa")

    def generate(self) -> PrivateKeyTypes:
        """A fresh private key."""
        if self.value in _ML_GENERATORS:
            return _ML_GENERATORS[self.value]()
        if self.value.startswith("rsa"):
            return rsa.generate_private_key(65537, int(self.value[3:]))
        if self is SubscriberKeyType.P256:
            return ec.generate_private_key(ec.SECP256R1())
        if self is SubscriberKeyType.P384:
            return ec.generate_private_key(ec.SECP384R1())
        return ed25519.Ed25519PrivateKey.generate()


_ML_GENERATORS: dict[str, Callable[[], PrivateKeyTypes]] = {
    "ml-dsa-44": mldsa.MLDSA44PrivateKey.generate,
    "ml-dsa-65": mldsa.MLDSA65PrivateKey.generate,
    "ml-dsa-87": mldsa.MLDSA87PrivateKey.generate,
    "ml-kem-768": mlkem.MLKEM768PrivateKey.generate,
    "ml-kem-1024": mlkem.MLKEM1024PrivateKey.generate,
}

DEFAULT_SIGN_KEY = SubscriberKeyType.P256
"""Generated signing keys: ECDSA P-256 (every current client verifies it)."""
DEFAULT_ENCRYPT_KEY = SubscriberKeyType.RSA3072
"""Generated encryption keys: RSA, because gpgsm and NSS (Thunderbird) cannot decrypt to EC
keys (ECDH), and 3072 bits for mail that must stay confidential for decades."""


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint, lower-case hex."""
    return cert.fingerprint(hashes.SHA256()).hex()


@dataclass(frozen=True)
class IssuedItem:
    """One certificate from an issuance, with its key when the CA generated it."""

    cert: x509.Certificate
    purpose: Purpose
    key: PrivateKeyTypes | None
    record: IssuedRecord


@dataclass(frozen=True)
class Issuance:
    """What one issue, enrolment or renewal produced for one person."""

    email: str
    items: tuple[IssuedItem, ...]

    def item(self, purpose: Purpose) -> IssuedItem | None:
        """The item for ``purpose``, if there is one."""
        return next((i for i in self.items if i.purpose is purpose), None)


@dataclass(frozen=True)
class PreparedIssuance:
    """Keys generated and certificates signed for one person, not yet recorded (nothing is
    issued until :meth:`CertificateAuthority.record_generated`)."""

    email: str
    name: str | None
    profile: Profile
    built: tuple[tuple[x509.Certificate, Purpose, PrivateKeyTypes | None], ...]

    @property
    def purposes(self) -> frozenset[Purpose]:
        """The purposes of the certificates in it."""
        return frozenset(purpose for _, purpose, _ in self.built)


def _purposes(purpose: str) -> tuple[Purpose, ...]:
    if purpose == "dual":
        return (Purpose.SIGN, Purpose.ENCRYPT)
    try:
        return (Purpose(purpose),)
    except ValueError:
        raise CAError(f"unknown purpose {purpose!r}: sign, encrypt, both or dual") from None


def check_key_types(purpose: str, sign_key: SubscriberKeyType,
                    encrypt_key: SubscriberKeyType) -> None:
    """Refuse generated key types that cannot serve ``purpose`` before any key is made.

    ``sign`` uses ``sign_key``; ``encrypt`` and ``both`` use ``encrypt_key``; ``dual``
    uses each for its half (ML-DSA signing with ML-KEM encryption, for instance).

    Raises:
        CAError: unknown purpose, or a signing-only type (Ed25519, ML-DSA) asked to encrypt
            or an ML-KEM type asked to sign.
    """
    pq = sign_key.value.startswith("ml-") or encrypt_key.value.startswith("ml-")
    if purpose == "both" and pq:
        raise CAError("no post-quantum key both signs and receives: use purpose dual with an"
                      " ML-DSA signing and an ML-KEM encryption key type")
    for wanted in _purposes(purpose):
        kind = sign_key if wanted is Purpose.SIGN else encrypt_key
        if wanted in (Purpose.SIGN, Purpose.BOTH) and not kind.can_sign:
            raise CAError(f"a {kind.value} key cannot sign: give a signing key type for"
                          f" purpose {purpose} (e.g. ml-dsa-65 for signing, {kind.value} for"
                          " encryption)")
        if wanted in (Purpose.ENCRYPT, Purpose.BOTH) and not kind.can_encrypt:
            raise CAError(f"a {kind.value} key cannot receive encrypted mail: give an"
                          f" encryption key type for purpose {purpose} (e.g. {kind.value}"
                          " for signing, ml-kem-768 or rsa3072 for encryption)")


def _split_name(name: str | None) -> tuple[str | None, str | None]:
    if not name or " " not in name.strip():
        return None, None
    given, _, surname = name.strip().rpartition(" ")
    return given, surname


MAX_IDENTITY_CHECK = 200


def identity_detail(check: str | None) -> dict[str, str]:
    """The ``identity`` detail of an issuance's audit row: how the holder's identity was
    checked (``ca issue --identity-check``; ``smimekit assess`` looks for it).

    Raises:
        CAError: empty, too long, or not one line of printable text.
    """
    if check is None:
        return {}
    text = check.strip()
    if not text or len(text) > MAX_IDENTITY_CHECK or not text.isprintable():
        raise CAError(f"the identity check must be one line of 1 to {MAX_IDENTITY_CHECK}"
                      " printable characters, e.g. 'passport seen by HR, ticket 4411'")
    return {"identity": text}


def checked_email(email: str) -> str:
    """``email`` in the form the certificate carries (A-label domain, lower case).

    Raises:
        CAError: not a mailbox address we can certify.
    """
    try:
        return certificate_form(email)
    except AddressError as exc:
        raise CAError(str(exc)) from None


class CertificateAuthority:
    """Our CA with its store: issue, renew, revoke, publish."""

    def __init__(self, ca: UnlockedCA, store: Store, *, actor: str = "smimekit") -> None:
        self.ca = ca
        self.store = store
        self.actor = actor
        self.issuer_fingerprint = fingerprint(ca.authority.cert)
        self._crl_cache: tuple[int, bytes] | None = None

    # -- building blocks -----------------------------------------------------------------

    def profile(self, name: str | None) -> Profile:
        """A profile by name (the CA's default when None)."""
        name = name or self.ca.config.default_profile
        try:
            return PROFILES[name]
        except KeyError:
            raise CAError(f"unknown profile {name!r}; one of: "
                          + ", ".join(sorted(PROFILES))) from None

    def subject(self, email: str, name: str | None, profile: Profile) -> SubjectInfo:
        """The subject fields ``profile`` needs, from the CA's configuration and the name."""
        config = self.ca.config
        given, surname = _split_name(name)
        if profile.level is ValidationLevel.SPONSORED and not (given and surname):
            raise CAError(f"profile {profile.name} needs the person's given name and surname"
                          " (--name 'Given Surname')")
        return SubjectInfo(
            email=email,
            organization=config.organization,
            organization_identifier=config.organization_identifier,
            common_name=name if profile.level is ValidationLevel.SPONSORED else None,
            given_name=given,
            surname=surname,
            country=config.country,
        )

    def _sign(self, profile: Profile, info: SubjectInfo, public_key: PublicKeyTypes,
              purpose: Purpose, validity: dt.timedelta, lint: bool,
              now: dt.datetime | None) -> x509.Certificate:
        return self.ca.authority.issue(profile, info, public_key, purpose, validity=validity,
                                       check=lint, not_before=now)

    def _record(self, email: str, name: str | None, department: str | None,
                built: Sequence[tuple[x509.Certificate, Purpose, PrivateKeyTypes | None]],
                profile: Profile, origin: str, action: str,
                details: dict[str, object], replace: bool = False) -> Issuance:
        # Only database work in here: keys were generated and certificates signed and linted
        # before, outside the write transaction.
        items: list[IssuedItem] = []
        with self.store.transaction():
            self.store.upsert_user(email, name, department)
            for cert, purpose, key in built:
                retired = (self.store.retire_live(email, purpose.value) if replace else [])
                try:
                    record = self.store.record_issuance(
                        cert, email=email, purpose=purpose.value, profile=profile.name,
                        key_origin=origin, issuer_fingerprint=self.issuer_fingerprint)
                except LiveCertificateExists:
                    # another process issued between our check and this transaction
                    raise CAError(
                        f"{email} already holds a live certificate for {purpose.value}"
                        " (issued meanwhile): renew or revoke it, or issue with"
                        " replace=True (--replace)") from None
                for old in retired:
                    self.store.mark_renewed(old, record.fingerprint)
                if retired:
                    details = {**details, "replaced": retired}
                if key is not None and purpose is Purpose.ENCRYPT:
                    self.store.add_private_key(self.ca.vault.seal(key), owner=email,
                                               purpose="encrypt",
                                               certificate_fingerprint=record.fingerprint)
                items.append(IssuedItem(cert, purpose, key, record))
            self.store.audit(self.actor, action, email, {
                **details,
                "profile": profile.name,
                "certificates": [{"serial": i.record.serial, "purpose": i.purpose.value,
                                  "fingerprint": i.record.fingerprint,
                                  "not_after": i.record.not_after.isoformat()}
                                 for i in items],
            })
        return Issuance(email, tuple(items))

    def _refuse_duplicates(self, email: str, purposes: Sequence[Purpose],
                           now: dt.datetime | None) -> None:
        at = now or dt.datetime.now(dt.UTC)
        wanted = {p.value for p in purposes}
        if "both" in wanted:
            wanted |= {"sign", "encrypt"}
        for record in self.store.issued_for(email):
            held = {"sign", "encrypt"} if record.purpose == "both" else {record.purpose}
            if record.live and record.not_after > at and held & wanted:
                raise CAError(
                    f"{email} already holds a live {record.purpose} certificate (serial"
                    f" {record.serial}, until {record.not_after:%Y-%m-%d}): renew or revoke"
                    " it, or issue with replace=True (--replace)")

    # -- issuance ------------------------------------------------------------------------

    def issue_csr(
        self,
        csr_data: bytes,
        *,
        email: str,
        purpose: str,
        name: str | None = None,
        department: str | None = None,
        profile: str | None = None,
        validity: dt.timedelta = DEFAULT_VALIDITY,
        lint: bool = True,
        now: dt.datetime | None = None,
        replace: bool = False,
        identity_check: str | None = None,
    ) -> Issuance:
        """Certify the key in a PKCS#10 request (PEM or DER) for ``email``.

        The request's signature must verify (proof of possession). Its subject and
        extensions are not copied: the CA writes what it validated. ``purpose`` is ``sign``,
        ``encrypt`` or ``both``. Unless ``replace``, an address that already holds a live
        certificate for the purpose is refused (renew or revoke that one instead).

        Raises:
            CAError: unreadable request, bad signature, unfit key, profile or linter refusal,
                a live certificate for the purpose exists.
        """
        email = checked_email(email)
        purposes = _purposes(purpose)
        if len(purposes) != 1:
            raise CAError("a CSR carries one key: use --purpose sign, encrypt or both")
        if not replace:
            self._refuse_duplicates(email, purposes, now)
        identity_detail(identity_check)  # refused before anything is signed
        csr = _load_csr(csr_data)
        if not csr.is_signature_valid:
            raise CAError("the CSR signature does not verify: no proof of possession")
        chosen = self.profile(profile)
        info = self.subject(email, name, chosen)
        cert = self._sign(chosen, info, csr.public_key(), purposes[0], validity, lint, now)
        return self._record(email, name, department, [(cert, purposes[0], None)], chosen,
                            "csr", "ca.issue",
                            {"origin": "csr", **identity_detail(identity_check)}, replace)

    def issue_generated(
        self,
        email: str,
        *,
        purpose: str = "dual",
        name: str | None = None,
        department: str | None = None,
        profile: str | None = None,
        sign_key: SubscriberKeyType = DEFAULT_SIGN_KEY,
        encrypt_key: SubscriberKeyType = DEFAULT_ENCRYPT_KEY,
        validity: dt.timedelta = DEFAULT_VALIDITY,
        lint: bool = True,
        now: dt.datetime | None = None,
        action: str = "ca.issue",
        replace: bool = False,
        identity_check: str | None = None,
    ) -> Issuance:
        """Generate keys and certify them. ``dual`` (default): one signing and one encryption
        key pair. ``both`` uses ``encrypt_key``'s type for a single key that does both.

        The encryption key is sealed into the user's key history (and so into escrow); a key
        that can sign, ``sign`` or ``both``, is handed over and never kept (non-repudiation:
        nobody but its holder may ever sign with it). Mail to a ``both`` certificate is
        therefore lost with its key: prefer ``dual``. Unless ``replace``, a live certificate
        for a requested purpose is refused.
        """
        email = checked_email(email)
        identity_detail(identity_check)  # refused before any key is made
        if not replace:
            self._refuse_duplicates(email, _purposes(purpose), now)
        prepared = self.prepare_generated(
            email, purpose=purpose, name=name, profile=profile, sign_key=sign_key,
            encrypt_key=encrypt_key, validity=validity, lint=lint, now=now)
        return self.record_generated(prepared, department=department, action=action,
                                     replace=replace, now=now, identity_check=identity_check)

    def prepare_generated(
        self,
        email: str,
        *,
        purpose: str = "dual",
        name: str | None = None,
        profile: str | None = None,
        sign_key: SubscriberKeyType = DEFAULT_SIGN_KEY,
        encrypt_key: SubscriberKeyType = DEFAULT_ENCRYPT_KEY,
        validity: dt.timedelta = DEFAULT_VALIDITY,
        lint: bool = True,
        now: dt.datetime | None = None,
    ) -> PreparedIssuance:
        """The slow half of :meth:`issue_generated`: generate the keys, sign and lint the
        certificates, without touching the store (so outside any write transaction). Nothing
        is issued until :meth:`record_generated`.

        Raises:
            CAError: bad address, unknown purpose or profile, profile or linter refusal.
        """
        email = checked_email(email)
        self.subject(email, name, self.profile(profile))  # refusals before the slow keys
        check_key_types(purpose, sign_key, encrypt_key)
        keys = {p: (sign_key if p is Purpose.SIGN else encrypt_key).generate()
                for p in _purposes(purpose)}
        return self.prepare_with_keys(email, keys, name=name, profile=profile,
                                      validity=validity, lint=lint, now=now)

    def prepare_with_keys(
        self,
        email: str,
        keys: Mapping[Purpose, PrivateKeyTypes],
        *,
        name: str | None = None,
        profile: str | None = None,
        validity: dt.timedelta = DEFAULT_VALIDITY,
        lint: bool = True,
        now: dt.datetime | None = None,
    ) -> PreparedIssuance:
        """Sign (and with ``lint``, lint) a certificate for each of ``keys``, keys the CA
        generated for ``email`` (one per purpose, in order), without touching the store.
        Bulk enrolment generates the keys in worker processes and lints there too
        (``lint=False`` here, :func:`~smimekit.ca.authority.refuse_lint_errors` there).

        Raises:
            CAError: bad address, unknown profile, profile or linter refusal.
        """
        email = checked_email(email)
        chosen = self.profile(profile)
        info = self.subject(email, name, chosen)
        built: list[tuple[x509.Certificate, Purpose, PrivateKeyTypes | None]] = []
        for purpose_, key in keys.items():
            cert = self._sign(chosen, info, key.public_key(), purpose_, validity, lint, now)
            built.append((cert, purpose_, key))
        return PreparedIssuance(email, name, chosen, tuple(built))

    def record_generated(self, prepared: PreparedIssuance, *, department: str | None = None,
                         action: str = "ca.issue", replace: bool = False,
                         now: dt.datetime | None = None,
                         identity_check: str | None = None) -> Issuance:
        """Record what :meth:`prepare_generated` made, in one short write transaction.

        Raises:
            CAError: the address holds a live certificate for a purpose (unless ``replace``).
        """
        if not replace:
            self._refuse_duplicates(prepared.email, tuple(prepared.purposes), now)
        return self._record(prepared.email, prepared.name, department, prepared.built,
                            prepared.profile, "generated", action,
                            {"origin": "generated", **identity_detail(identity_check)}, replace)

    # -- renewal -------------------------------------------------------------------------

    def renew(
        self,
        record: IssuedRecord,
        *,
        validity: dt.timedelta = DEFAULT_VALIDITY,
        lint: bool = True,
        now: dt.datetime | None = None,
        encrypt_key: SubscriberKeyType | None = None,
    ) -> IssuedItem:
        """Replace one certificate. Encryption (and ``both``) certificates are always re-keyed
        (an old encryption key stays in the key history); a signing certificate keeps a key
        the holder made (the CSR is not needed again) and gets a new one when the CA made it.

        Raises:
            CAError: the certificate is revoked or was renewed already.
        """
        if record.revoked_at is not None:
            raise CAError(f"certificate {record.serial} is revoked; issue a new one instead")
        if record.renewed_by is not None:
            raise CAError(f"certificate {record.serial} was renewed already")
        stored = self.store.get_certificate(record.fingerprint)
        assert stored is not None
        old = stored.certificate
        profile = self.profile(record.profile)
        user = self.store.get_user(record.email)
        name = user.name if user else None
        info = self.subject(record.email, name, profile)
        purpose = Purpose(record.purpose)
        key: PrivateKeyTypes | None = None
        if purpose in (Purpose.ENCRYPT, Purpose.BOTH) or record.key_origin == "generated":
            kind = encrypt_key or _same_kind(old.public_key())
            key = kind.generate()
            public = key.public_key()
        else:
            public = old.public_key()
        cert = self._sign(profile, info, public, purpose, validity, lint, now)
        at = now or dt.datetime.now(dt.UTC)
        with self.store.transaction():
            # first, and only if nobody renewed it meanwhile: frees its live slot
            if not self.store.mark_renewed(record.fingerprint, fingerprint(cert)):
                raise CAError(f"certificate {record.serial} was renewed already")
            try:
                new = self.store.record_issuance(
                    cert, email=record.email, purpose=record.purpose, profile=profile.name,
                    key_origin=record.key_origin if key is None else "generated",
                    issuer_fingerprint=self.issuer_fingerprint)
            except LiveCertificateExists:
                raise CAError(f"{record.email} holds another live {record.purpose}"
                              f" certificate besides {record.serial}: renew that one") from None
            if key is not None and purpose is Purpose.ENCRYPT:
                self.store.retire_key(record.fingerprint, at)
                self.store.add_private_key(self.ca.vault.seal(key), owner=record.email,
                                           purpose="encrypt",
                                           certificate_fingerprint=new.fingerprint)
            self.store.audit(self.actor, "ca.renew", record.email, {
                "old_serial": record.serial, "serial": new.serial, "purpose": record.purpose,
                "rekeyed": key is not None, "not_after": new.not_after.isoformat()})
        return IssuedItem(cert, purpose, key, new)

    # -- revocation ------------------------------------------------------------------------

    def revoke(
        self,
        *,
        serial: str | None = None,
        email: str | None = None,
        reason: str = "unspecified",
        now: dt.datetime | None = None,
    ) -> list[IssuedRecord]:
        """Revoke one certificate by serial (hex, colons allowed) or every live one of an
        address, record it, and publish a fresh CRL, all in one transaction.

        Raises:
            CAError: nothing to revoke, unknown reason.
        """
        reason = parse_reason(reason)
        at = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
        if serial is not None:
            serial = serial.replace(":", "").strip().lower().lstrip("0") or "0"
            try:
                int(serial, 16)
            except ValueError:
                raise CAError(f"{serial!r} is not a hexadecimal serial number") from None
            record = self.store.issued_record(serial=serial,
                                              issuer_fingerprint=self.issuer_fingerprint)
            if record is None:
                raise CAError(f"this CA issued no certificate with serial {serial}")
            targets = [record]
        elif email is not None:
            targets = [r for r in self.store.issued_for(comparable(email))
                       if r.revoked_at is None
                       and r.renewed_by is None and r.not_after > at]
            if not targets:
                raise CAError(f"{email} holds no live certificate of this CA")
        else:
            raise CAError("name a serial or an address to revoke")
        done = self.revoke_records(targets, reason=reason, now=at)
        if not done:
            raise CAError("already revoked")
        return done

    def revoke_records(
        self,
        records: Sequence[IssuedRecord],
        *,
        reason: str,
        now: dt.datetime | None = None,
        details: Mapping[str, object] | None = None,
        publish: bool = True,
    ) -> list[IssuedRecord]:
        """Revoke ``records`` in one transaction, each with its audit row (``details``
        added to it), and with ``publish`` a fresh CRL in the same transaction. Those
        revoked already are left out of the result (and not audited again).

        Raises:
            CAError: unknown reason.
        """
        reason = parse_reason(reason)
        at = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
        done: list[IssuedRecord] = []
        with self.store.transaction():
            # First: a CRL publication that starts after this commits lists these serials,
            # and none runs in between (it waits for this lock).
            self.store.lock_crl_issuer(self.issuer_fingerprint)
            for record in records:
                if self.store.add_revocation(record.serial, self.issuer_fingerprint, at,
                                             reason):
                    done.append(record)
                    self.store.audit(self.actor, "ca.revoke", record.email, {
                        **(details or {}), "serial": record.serial, "reason": reason,
                        "purpose": record.purpose})
            if done and publish:
                self.publish_crl(now=at)
        return [self.store.issued_record(fingerprint=r.fingerprint) or r for r in done]

    # -- CRLs ------------------------------------------------------------------------------

    def publish_crl(self, *, now: dt.datetime | None = None) -> x509.CertificateRevocationList:
        """Build, sign and record the next CRL (number one higher than the last).

        Serialised per issuer: the lock comes first in the transaction that reads the last
        number and the revocations and records the CRL, so no two CRLs share a number (the
        unique index would refuse it anyway) and every revocation committed before is listed.
        """
        at = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
        with self.store.transaction():
            self.store.lock_crl_issuer(self.issuer_fingerprint)
            latest = self.store.latest_crl(self.issuer_fingerprint, with_der=False)
            number = (latest.number + 1) if latest else 1
            crl = build_crl(self.ca.authority.cert, self.ca.authority.signer,
                            self.store.revocations(self.issuer_fingerprint), number=number,
                            this_update=at, next_update=at + CRL_VALIDITY)
            self.store.add_crl(self.issuer_fingerprint, number, at, at + CRL_VALIDITY,
                               crl.public_bytes(serialization.Encoding.DER))
            self.store.audit(self.actor, "ca.crl", display_name(self.ca.authority.cert.subject),
                             {"number": number})
        return crl

    def current_crl(self, *, now: dt.datetime | None = None) -> bytes:
        """The newest CRL's DER; a fresh one is published when none is current.

        Called for every CRL request by ``ca serve``: it asks the store only for the newest
        number and nextUpdate, and loads the DER again only when the number changed (another
        process may have revoked and published)."""
        at = now or dt.datetime.now(dt.UTC)
        latest = self.store.latest_crl(self.issuer_fingerprint, with_der=False)
        # republish when less than half the period is left
        if latest is not None and latest.next_update is not None \
                and latest.next_update - at > CRL_VALIDITY / 2:
            if self._crl_cache is None or self._crl_cache[0] != latest.number:
                full = self.store.latest_crl(self.issuer_fingerprint)
                assert full is not None and full.der is not None
                self._crl_cache = (full.number, full.der)
            return self._crl_cache[1]
        return self.publish_crl(now=at).public_bytes(serialization.Encoding.DER)

    # -- key history -----------------------------------------------------------------------

    def key_history(self, email: str, *, skip: Collection[str] = ()
                    ) -> list[tuple[PrivateKeyTypes, x509.Certificate]]:
        """Every encryption key the CA keeps for ``email`` with its certificate, oldest
        first, but for the certificates whose fingerprints are in ``skip`` (their keys are
        not even opened: opening an RSA key checks it, ~0.1 s for RSA-3072). Needs the
        unlocked vault.

        Raises:
            CAError: the vault is locked, or a record is damaged or tampered.
        """
        result = []
        for stored in self.store.private_keys_for(comparable(email), "encrypt"):
            if stored.certificate_fingerprint is None \
                    or stored.certificate_fingerprint in skip:
                continue
            cert_row = self.store.get_certificate(stored.certificate_fingerprint)
            if cert_row is None:
                raise CAError(f"key history of {email}: a certificate is missing")
            cert = cert_row.certificate
            result.append((self.ca.vault.open(stored.sealed, cert), cert))
        return result


def _same_kind(public: PublicKeyTypes) -> SubscriberKeyType:
    if isinstance(public, rsa.RSAPublicKey):
        return SubscriberKeyType(f"rsa{max(2048, public.key_size)}") \
            if public.key_size in (2048, 3072, 4096) else SubscriberKeyType.RSA3072
    if isinstance(public, ec.EllipticCurvePublicKey):
        return SubscriberKeyType.P384 if public.curve.key_size >= 384 else SubscriberKeyType.P256
    if isinstance(public, ed25519.Ed25519PublicKey):
        return SubscriberKeyType.ED25519
    for kind, key_type in _ML_PUBLIC:
        if isinstance(public, kind):
            return key_type
    return DEFAULT_ENCRYPT_KEY


# Renewal keeps the parameter set of the key it replaces.
_ML_PUBLIC: tuple[tuple[type, SubscriberKeyType], ...] = (
    (mldsa.MLDSA44PublicKey, SubscriberKeyType.ML_DSA_44),
    (mldsa.MLDSA65PublicKey, SubscriberKeyType.ML_DSA_65),
    (mldsa.MLDSA87PublicKey, SubscriberKeyType.ML_DSA_87),
    (mlkem.MLKEM768PublicKey, SubscriberKeyType.ML_KEM_768),
    (mlkem.MLKEM1024PublicKey, SubscriberKeyType.ML_KEM_1024),
)


def _load_csr(data: bytes) -> x509.CertificateSigningRequest:
    try:
        if b"-----BEGIN" in data[:4096]:
            return x509.load_pem_x509_csr(data)
        return x509.load_der_x509_csr(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CAError(f"the CSR cannot be read: {exc}") from None
