"""Files that users' mail clients import: PKCS#12, Apple configuration profiles, PEM chains.

:func:`pkcs12_bytes` writes a subscriber's key and certificate (with the chain, and optionally
older keys) as PKCS#12 (RFC 7292). The default form is PBES2 (RFC 8018) with
PBKDF2-HMAC-SHA256 and AES-256-CBC and an HMAC-SHA256 integrity MAC; ``legacy=True`` writes
pbeWithSHAAnd3-KeyTripleDES-CBC with a SHA-1 MAC for clients that read nothing newer (gpgsm
2.2, older Outlook and macOS). cryptography encrypts the bags; this module only reassembles
the file and computes its MAC, for two reasons:

* cryptography always writes the MAC with 2,048 iterations. A guess at the passphrase can be
  checked against the MAC alone, so the MAC sets the price of a guess; we recompute it with
  the same iteration count as the bags (:data:`ITERATIONS`).
* Several keys (a key history, ``extra``) in one file: cryptography serializes one key per
  file, so each pair is serialized on its own and the safe contents are joined.

ML-DSA and ML-KEM keys, which cryptography's writer refuses, go into a file of the same default
form written by :func:`smimekit.keys.pkcs12.write_pkcs12`; the legacy form refuses them.

GnuPG's gpgsm 2.2.40 derives a wrong 3DES key for about 1 salt in 128 (see
:func:`gpgsm_kdf_safe`); legacy files are re-encrypted with fresh salts until gpgsm reads them.

:func:`mobileconfig_bytes` wraps a PKCS#12 file (or a signing and an encryption one) and CA
certificates in an Apple configuration profile, with the Mail account that uses them for
S/MIME when a :class:`MailAccount` is given; :func:`pem_chain` writes certificates as PEM.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import plistlib
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from asn1crypto import cms as asn1_cms
from asn1crypto import pkcs12 as asn1_pkcs12
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, mldsa, mlkem, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from smimekit.cms.asn1 import PARSE_ERRORS, load
from smimekit.dn import display_name
from smimekit.errors import ASN1Error, CAError, SmimeError
from smimekit.keys.kinds import is_dsa_private_key
from smimekit.keys.pkcs12 import load_pkcs12_identities, write_pkcs12
from smimekit.keys.pkcs12 import pkcs12_kdf as _pkcs12_kdf

__all__ = [
    "ITERATIONS",
    "LEGACY_ITERATIONS",
    "RANDOM_PASSPHRASE_ITERATIONS",
    "MailAccount",
    "gpgsm_kdf_safe",
    "mobileconfig_bytes",
    "pem_chain",
    "pkcs12_bytes",
    "pkcs12_gpgsm_kdf_safe",
]

#: PBKDF2-HMAC-SHA256 iterations of the default form, also used for its MAC. OWASP's figure
#: for PBKDF2-HMAC-SHA256 (2023): the file leaves our hands (mail, downloads, backups) and its
#: passphrase is chosen by a person, so an offline guess should cost what a stored password
#: hash costs. Measured on one core: 0.33 s to write (0.19 s of it the MAC key, derived in
#: Python), 0.31 s to import with pk12util, 0.33 s with ``openssl pkcs12``; once per file,
#: which a user does not notice. OpenSSL 3's default (2,048) makes each guess ~300 times
#: cheaper. .NET's loader limits may refuse counts this high (not checked here).
ITERATIONS = 600_000

#: Iterations for a passphrase smimekit generated itself (20 characters from 50, ~113 bits):
#: no iteration count adds anything to that, and bulk enrolment writes thousands of files, so
#: OpenSSL 3's default count is used (~5 ms per file instead of ~0.35 s).
RANDOM_PASSPHRASE_ITERATIONS = 2048

#: Iterations of the legacy form (3DES bags and SHA-1 MAC, both through the RFC 7292
#: appendix B KDF). This is the count the clients that need this form write themselves
#: (``openssl pkcs12 -legacy``, gpgsm, Windows and macOS exports), so it is the count they are
#: known to read; the legacy form trades strength for reach.
LEGACY_ITERATIONS = 2048

# Fresh salts tried before giving up on a gpgsm-safe legacy file. One try fails with
# probability ~1/64 (two 3DES salts per file), so 64 tries all failing does not happen.
_LEGACY_ATTEMPTS = 64

_TRIPLEDES_OID = "1.2.840.113549.1.12.1.3"  # pbeWithSHAAnd3-KeyTripleDES-CBC (RFC 7292 C)
_ML_KEY_TYPES = (mldsa.MLDSA44PrivateKey, mldsa.MLDSA65PrivateKey, mldsa.MLDSA87PrivateKey,
                 mlkem.MLKEM768PrivateKey, mlkem.MLKEM1024PrivateKey)
_PKCS12_KEY_TYPES = (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey,
                     ed448.Ed448PrivateKey, *_ML_KEY_TYPES)
_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")


# --------------------------------------------------------------------------------------------
# The PKCS#12 key derivation (RFC 7292 appendix B.2) and gpgsm's mistake in it
# --------------------------------------------------------------------------------------------


def _fill(data: bytes, v: int) -> bytes:
    """Copies of ``data`` to the next multiple of ``v`` bytes (RFC 7292 B.2 steps 2-3)."""
    if not data:
        return b""
    n = v * -(-len(data) // v)
    return (data * (n // len(data) + 1))[:n]


def _bmp_password(passphrase: bytes) -> bytes:
    """The passphrase as a BMPString with its two-byte terminator (RFC 7292 B.1)."""
    return passphrase.decode("utf-8").encode("utf-16-be") + b"\x00\x00"


def gpgsm_kdf_safe(salt: bytes, iterations: int, password: bytes) -> bool:
    """Whether gpgsm 2.2.40 derives the right 3DES key from this PBE salt and passphrase.

    The 24-byte 3DES key takes two rounds of RFC 7292 B.2, and between them each 64-byte
    block of I becomes ``(I_j + B + 1) mod 2**512``. GnuPG's ``sm/minip12.c``
    (``string_to_key``) writes that sum back with ``gcry_mpi_print(GCRYMPI_FMT_USG, ...)``,
    which drops leading zero bytes and left-aligns the rest, so whenever a sum begins with a
    0x00 byte the second round hashes a different I and the last 4 key bytes are wrong: the
    bag does not decrypt ("decryption failed; trying charset ...", "data error at
    shrouded_key_bag.decrypted-text"). That happens for about 2 salts in 256 (one chance per
    block: the salt block and the password block). The IV (8 bytes), RC2-40 keys (5 bytes) and
    the MAC key (20 bytes, not checked on import) take one round and are never affected.

    ``password`` is the passphrase as UTF-8 bytes, as given to the exporter and to gpgsm
    (gpgsm refuses passphrases over 31 bytes and matches non-ASCII ones only through its
    charset retries; neither is this function's concern).
    """
    v = 64
    i = _fill(salt, v) + _fill(_bmp_password(password), v)
    # RFC 7292 C fixes SHA-1 for this KDF.
    a = hashlib.sha1(bytes([1]) * v + i).digest()  # noqa: S324
    for _ in range(iterations - 1):
        a = hashlib.sha1(a).digest()  # noqa: S324
    b = int.from_bytes(_fill(a, v), "big") + 1
    return all((int.from_bytes(i[j:j + v], "big") + b) % (1 << (8 * v)) >> (8 * (v - 1)) != 0
               for j in range(0, len(i), v))


def _tripledes_params(p12: bytes) -> list[tuple[bytes, int]]:
    """(salt, iterations) of every 3DES-encrypted part visible without decrypting: the
    encryptedData content infos and the shrouded key bags in plain data."""
    found: list[tuple[bytes, int]] = []
    try:
        pfx = load(asn1_pkcs12.Pfx, p12, "PKCS#12 file")
        for info in pfx.authenticated_safe:
            kind = info["content_type"].native
            if kind == "data":
                algs = [bag["bag_value"]["encryption_algorithm"]
                        for bag in asn1_pkcs12.SafeContents.load(info["content"].native)
                        if bag["bag_id"].native == "pkcs8_shrouded_key_bag"]
            elif kind == "encrypted_data":
                algs = [info["content"]["encrypted_content_info"]
                        ["content_encryption_algorithm"]]
            else:
                algs = []
            for alg in algs:
                if alg["algorithm"].dotted == _TRIPLEDES_OID:
                    params = alg["parameters"]
                    found.append((params["salt"].native, params["iterations"].native))
    except PARSE_ERRORS as exc:
        raise ASN1Error(f"malformed PKCS#12 file: {exc}") from None
    return found


def pkcs12_gpgsm_kdf_safe(p12: bytes, passphrase: bytes) -> bool:
    """Whether every 3DES part of a PKCS#12 file has a salt gpgsm 2.2.40 derives right.

    See :func:`gpgsm_kdf_safe`. Only parts visible without decrypting are checked (key bags
    inside encryptedData are not; OpenSSL and cryptography never put them there). A file with
    no 3DES part is trivially safe. Raises :class:`~smimekit.errors.ASN1Error` if ``p12`` is
    not a PKCS#12 file.
    """
    return all(gpgsm_kdf_safe(salt, iterations, passphrase)
               for salt, iterations in _tripledes_params(p12))


# --------------------------------------------------------------------------------------------
# PKCS#12
# --------------------------------------------------------------------------------------------


def _check_pair(key: object, cert: object, what: str) -> None:
    if not isinstance(cert, x509.Certificate):
        raise CAError(f"{what}: expected a certificate, got {type(cert).__name__}")
    if not (isinstance(key, _PKCS12_KEY_TYPES) or is_dsa_private_key(key)):
        raise CAError(f"{what}: a {type(key).__name__} cannot be exported as PKCS#12 "
                      "(RSA, EC, Ed25519, Ed448, DSA, ML-DSA and ML-KEM keys can)")
    if key.public_key() != cert.public_key():
        raise CAError(f"{what}: the private key does not match the certificate "
                      f"{display_name(cert.subject)!r}")


def _history_name(friendly_name: str, cert: x509.Certificate, taken: set[str]) -> str:
    name = f"{friendly_name} (until {cert.not_valid_after_utc:%Y-%m-%d})"
    if name in taken:
        name = f"{name[:-1]}, serial {cert.serial_number:x})"
    return name


def _encryption(passphrase: bytes, legacy: bool, iterations: int
                ) -> serialization.KeySerializationEncryption:
    builder = serialization.PrivateFormat.PKCS12.encryption_builder()
    if legacy:
        builder = (builder.kdf_rounds(LEGACY_ITERATIONS)
                   .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
                   .hmac_hash(hashes.SHA1()))  # noqa: S303  (the legacy form's MAC)
    else:
        builder = (builder.kdf_rounds(iterations)
                   .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
                   .hmac_hash(hashes.SHA256()))
    return builder.build(passphrase)


def _assemble(files: Sequence[bytes], passphrase: bytes, *, legacy: bool,
              iterations: int = ITERATIONS) -> bytes:
    """One PFX holding the safe contents of every file, with a MAC (RFC 7292 5.1 and B)."""
    infos: list[Any] = []
    for der in files:
        infos.extend(asn1_cms.ContentInfo.load(info.dump())
                     for info in asn1_pkcs12.Pfx.load(der).authenticated_safe)
    auth_safe = asn1_pkcs12.AuthenticatedSafe(infos).dump()
    name, digest, iterations, salt_len = (
        ("sha1", hashlib.sha1, LEGACY_ITERATIONS, 8) if legacy
        else ("sha256", hashlib.sha256, iterations, 16))
    salt = os.urandom(salt_len)
    mac_key = _pkcs12_kdf(digest, _bmp_password(passphrase), salt, iterations, 3,
                          digest().digest_size)
    mac = hmac.new(mac_key, auth_safe, name).digest()
    return asn1_pkcs12.Pfx({
        "version": "v3",
        "auth_safe": {"content_type": "data", "content": auth_safe},
        "mac_data": {"mac": {"digest_algorithm": {"algorithm": name}, "digest": mac},
                     "mac_salt": salt, "iterations": iterations},
    }).dump()


def pkcs12_bytes(
    key: PrivateKeyTypes,
    cert: x509.Certificate,
    chain: Sequence[x509.Certificate],
    passphrase: bytes,
    *,
    friendly_name: str,
    legacy: bool = False,
    extra: Sequence[tuple[PrivateKeyTypes, x509.Certificate]] = (),
    iterations: int | None = None,
) -> bytes:
    """A PKCS#12 file with ``key``, ``cert`` and the CA ``chain``, for a mail client.

    The default form is PBES2: PBKDF2-HMAC-SHA256 with ``iterations`` (:data:`ITERATIONS`)
    and AES-256-CBC for the key and for the certificates, and an HMAC-SHA256 MAC with the same
    iteration count. Lower ``iterations`` (at least :data:`LEGACY_ITERATIONS`) only for a
    passphrase that is random and long (:data:`RANDOM_PASSPHRASE_ITERATIONS`).
    ``legacy=True`` writes pbeWithSHAAnd3-KeyTripleDES-CBC for both and a SHA-1 MAC,
    :data:`LEGACY_ITERATIONS` each, with salts that gpgsm 2.2.40 derives correctly
    (:func:`gpgsm_kdf_safe`); OpenSSL 3 reads it without ``-legacy``. Use it only for clients
    that cannot read the default (gpgsm imports nothing else).

    The key and its certificate carry ``friendly_name`` and a localKeyId (the certificate's
    SHA-1 fingerprint), which is how clients pair them. ``extra`` adds older (key,
    certificate) pairs, a key history for reading old mail, to the same file, each with the
    friendly name ``"<friendly_name> (until <notAfter date>)"``; the current pair comes first,
    so readers that take one key (cryptography, smimekit's own loaders) take the current one.
    NSS, Windows and macOS import every key. gpgsm imports no key at all from a file with
    several, so ``legacy=True`` refuses ``extra``: give those users one file per key.

    Raises :class:`~smimekit.errors.CAError` for an empty or non-UTF-8 passphrase, an empty
    friendly name, a key that does not match its certificate or cannot go in PKCS#12, a
    certificate given twice, or ``extra`` with ``legacy=True``.
    """
    if not isinstance(passphrase, bytes) or not passphrase:
        raise CAError("a PKCS#12 export needs a non-empty passphrase (bytes)")
    try:
        passphrase.decode("utf-8")
    except UnicodeDecodeError:
        raise CAError("the PKCS#12 passphrase must be UTF-8") from None
    if not friendly_name.strip():
        raise CAError("a PKCS#12 export needs a friendly name (the label clients show)")
    if iterations is None:
        iterations = ITERATIONS
    if not legacy and iterations < LEGACY_ITERATIONS:
        raise CAError(f"at least {LEGACY_ITERATIONS} PBKDF2 iterations")
    if legacy and extra:
        raise CAError("the legacy PKCS#12 form holds one key: gpgsm imports no key from a "
                      "file with several; export the older keys as separate files")
    post_quantum = isinstance(key, _ML_KEY_TYPES) or any(
        isinstance(k, _ML_KEY_TYPES) for k, _ in extra)
    if legacy and post_quantum:
        raise CAError("the legacy PKCS#12 form cannot carry an ML-DSA or ML-KEM key: the "
                      "clients that need it (gpgsm 2.2, older Outlook and macOS) know no "
                      "post-quantum key; use the default form")
    _check_pair(key, cert, "the key")
    for n, (old_key, old_cert) in enumerate(extra, 1):
        _check_pair(old_key, old_cert, f"extra pair {n}")
    for n, ca in enumerate(chain, 1):
        if not isinstance(ca, x509.Certificate):
            raise CAError(f"chain entry {n}: expected a certificate, got {type(ca).__name__}")
    certs = [cert, *(c for _, c in extra)]
    if len(set(certs)) != len(certs):
        raise CAError("a certificate appears more than once among the key pairs")

    encryption = _encryption(passphrase, legacy, iterations)
    names = {friendly_name}
    pairs: list[tuple[str, PrivateKeyTypes, x509.Certificate, Sequence[x509.Certificate]]]
    pairs = [(friendly_name, key, cert, chain)]
    for old_key, old_cert in extra:
        name = _history_name(friendly_name, old_cert, names)
        names.add(name)
        pairs.append((name, old_key, old_cert, ()))

    if post_quantum:
        # cryptography's writer refuses ML keys: the same form, written by smimekit
        return write_pkcs12([(n, k, c) for n, k, c, _ in pairs], chain, passphrase,
                            iterations=iterations)
    files = []
    for name, k, c, cas in pairs:
        for _ in range(_LEGACY_ATTEMPTS if legacy else 1):
            der = pkcs12.serialize_key_and_certificates(
                name.encode(), k, c, list(cas) or None, encryption)  # type: ignore[arg-type]
            # gpgsm mis-derives the 3DES key for ~1 salt in 128: retry with fresh salts.
            if not legacy or pkcs12_gpgsm_kdf_safe(der, passphrase):
                break
        else:
            raise CAError(f"no gpgsm-safe 3DES salts in {_LEGACY_ATTEMPTS} tries")
        files.append(der)
    return _assemble(files, passphrase, legacy=legacy, iterations=iterations)


# --------------------------------------------------------------------------------------------
# Apple configuration profile, PEM
# --------------------------------------------------------------------------------------------


def _count_key_bags(p12: bytes) -> int:
    try:
        pfx = load(asn1_pkcs12.Pfx, p12, "PKCS#12 data")
        return sum(
            1
            for info in pfx.authenticated_safe if info["content_type"].native == "data"
            for bag in asn1_pkcs12.SafeContents.load(info["content"].native)
            if bag["bag_id"].native in ("pkcs8_shrouded_key_bag", "key_bag"))
    except (ASN1Error, *PARSE_ERRORS):
        raise CAError("the PKCS#12 data is not a PKCS#12 file") from None


def _cert_name(cert: x509.Certificate) -> str:
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = cns[0].value if cns else display_name(cert.subject)
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _is_self_signed(cert: x509.Certificate) -> bool:
    if cert.subject != cert.issuer:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


_ACCOUNT_TYPES = {"imap": "EmailTypeIMAP", "pop": "EmailTypePOP"}
_AUTH = {"none": "EmailAuthNone", "password": "EmailAuthPassword", "crammd5": "EmailAuthCRAMMD5",
         "ntlm": "EmailAuthNTLM", "httpmd5": "EmailAuthHTTPMD5"}
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?\Z")


@dataclass(frozen=True)
class MailAccount:
    """The Mail account a profile sets up to use its S/MIME identities (Apple's
    ``com.apple.mail.managed`` payload; the keys Apple marks required are always written).

    No password is ever written: the device asks for it when the profile is installed.
    """

    email: str
    incoming_host: str
    outgoing_host: str
    account_type: str = "imap"
    """``imap`` or ``pop``."""
    incoming_port: int | None = None
    """None: the protocol's default."""
    outgoing_port: int | None = None
    """None: the device tries 25, 587 and 465."""
    incoming_ssl: bool = True
    outgoing_ssl: bool = True
    username: str | None = None
    """The login for both servers; None: the device asks."""
    authentication: str = "password"
    """``none``, ``password``, ``crammd5``, ``ntlm`` or ``httpmd5``, for both servers."""
    name: str | None = None
    """The sender's name shown in sent mail."""
    description: str | None = None
    """The account's label in Mail and Settings (default: the address)."""
    sign_by_default: bool = True
    encrypt_by_default: bool = False

    def payload(self, identifier: str, signing_uuid: str, encryption_uuid: str | None
                ) -> dict[str, Any]:
        if self.account_type not in _ACCOUNT_TYPES:
            raise CAError(f"mail account type {self.account_type!r}: imap or pop")
        if self.authentication not in _AUTH:
            raise CAError(f"mail authentication {self.authentication!r}: one of"
                          f" {', '.join(_AUTH)}")
        if "@" not in self.email.strip("@"):
            raise CAError(f"{self.email!r} is not a mail address")
        for what, host in (("incoming", self.incoming_host), ("outgoing", self.outgoing_host)):
            if not _HOST.match(host):
                raise CAError(f"{what} mail server {host!r}: expected a host name")
        for what, port in (("incoming", self.incoming_port), ("outgoing", self.outgoing_port)):
            if port is not None and not 0 < port < 65536:
                raise CAError(f"{what} mail server port {port}: 1 to 65535")
        auth = _AUTH[self.authentication]
        out: dict[str, Any] = {
            "PayloadType": "com.apple.mail.managed",
            "PayloadVersion": 1,
            "PayloadIdentifier": f"{identifier}.mail",
            "PayloadUUID": str(uuid.uuid4()).upper(),
            "PayloadDisplayName": f"Mail: {self.email}",
            "EmailAccountType": _ACCOUNT_TYPES[self.account_type],
            "EmailAccountDescription": self.description or self.email,
            "EmailAddress": self.email,
            "IncomingMailServerHostName": self.incoming_host,
            "IncomingMailServerUseSSL": self.incoming_ssl,
            "IncomingMailServerAuthentication": auth,
            "OutgoingMailServerHostName": self.outgoing_host,
            "OutgoingMailServerUseSSL": self.outgoing_ssl,
            "OutgoingMailServerAuthentication": auth,
            # S/MIME (iOS 10 and later read these; macOS Mail ignores them, see docs/directory.md)
            "SMIMEEnabled": True,  # iOS before 10
            "SMIMESigningEnabled": self.sign_by_default,
            "SMIMESigningCertificateUUID": signing_uuid,
            "SMIMEEncryptionEnabled": encryption_uuid is not None,
            "SMIMEEncryptByDefault": self.encrypt_by_default and encryption_uuid is not None,
            "SMIMEEnableEncryptionPerMessageSwitch": encryption_uuid is not None,
        }
        if encryption_uuid is not None:
            out["SMIMEEncryptionCertificateUUID"] = encryption_uuid
        if self.name:
            out["EmailAccountName"] = self.name
        if self.incoming_port is not None:
            out["IncomingMailServerPortNumber"] = self.incoming_port
        if self.outgoing_port is not None:
            out["OutgoingMailServerPortNumber"] = self.outgoing_port
        if self.username:
            out["IncomingMailServerUsername"] = self.username
            out["OutgoingMailServerUsername"] = self.username
            out["OutgoingPasswordSameAsIncomingPassword"] = True
        return out


def _check_p12(p12: bytes, passphrase: str | None) -> None:
    keys = _count_key_bags(p12)
    if keys > 1:
        raise CAError(f"the PKCS#12 data holds {keys} keys; a profile installs exactly one "
                      "identity (export it without a key history)")
    if passphrase is not None:
        if not passphrase:
            raise CAError("an empty profile password: pass None to have the device ask")
        secret = passphrase.encode("utf-8")
        try:
            has_key = pkcs12.load_pkcs12(p12, secret).key is not None
        except ValueError:
            # cryptography's reader refuses ML-DSA and ML-KEM key bags: smimekit's reads them
            try:
                has_key = bool(load_pkcs12_identities(p12, secret).identities)
            except SmimeError:
                raise CAError("the passphrase does not open the PKCS#12 data") from None
        if not has_key:
            raise CAError("the PKCS#12 data holds no private key")


def mobileconfig_bytes(
    p12: bytes,
    *,
    passphrase: str | None,
    identifier: str,
    display_name: str,
    organization: str,
    ca_certs: Sequence[x509.Certificate],
    encryption_p12: bytes | None = None,
    mail: MailAccount | None = None,
) -> bytes:
    """An Apple configuration profile (``.mobileconfig``) installing an S/MIME identity.

    The profile (``PayloadType`` "Configuration", ``PayloadVersion`` 1) holds one
    ``com.apple.security.pkcs12`` payload with ``p12`` (one identity: Apple allows one per
    payload) and, for each CA certificate, a ``com.apple.security.root`` payload
    (self-signed) or ``com.apple.security.pkcs1`` payload (intermediate), DER encoded. Every
    payload gets a fresh ``PayloadUUID`` and the ``PayloadIdentifier``
    ``<identifier>.<part>``, where ``identifier`` is the profile's reverse-DNS name (a profile
    with the same identifier replaces an installed one).

    ``passphrase``, if given, is stored in the profile as ``Password`` so the identity installs
    without a prompt. Apple warns that profiles are obfuscated, not encrypted: whoever gets
    the profile then has the key. Pass None to have the device ask for it. Older Apple systems
    read only the legacy PKCS#12 form (``pkcs12_bytes(..., legacy=True)``).

    ``encryption_p12`` adds a second identity, the encryption one of a dual-key person
    (``p12`` is then the signing one), as a second ``com.apple.security.pkcs12`` payload
    (same ``passphrase``). ``mail`` adds a ``com.apple.mail.managed`` payload for that
    account whose ``SMIMESigningCertificateUUID`` and ``SMIMEEncryptionCertificateUUID``
    are the ``PayloadUUID`` of the identity payloads (the one of ``p12`` for both when there
    is no ``encryption_p12``): Mail then signs and decrypts with them.

    Raises :class:`~smimekit.errors.CAError` if ``p12`` (or ``encryption_p12``) is not
    PKCS#12 or holds more than one key (or, when ``passphrase`` is given, none), if
    ``passphrase`` is empty or does not open it, for an empty or malformed identifier or
    display name, or a mail account with a bad type, host, port or address.
    """
    if not _IDENTIFIER.match(identifier):
        raise CAError(f"profile identifier {identifier!r}: expected a reverse-DNS name "
                      "such as 'com.example.smime'")
    if not display_name.strip():
        raise CAError("a configuration profile needs a display name")
    _check_p12(p12, passphrase)
    if encryption_p12 is not None:
        _check_p12(encryption_p12, passphrase)
    for n, ca in enumerate(ca_certs, 1):
        if not isinstance(ca, x509.Certificate):
            raise CAError(f"CA entry {n}: expected a certificate, got {type(ca).__name__}")

    identity: dict[str, Any] = {
        "PayloadType": "com.apple.security.pkcs12",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{identifier}.identity",
        "PayloadUUID": str(uuid.uuid4()).upper(),
        "PayloadDisplayName": f"{display_name}: S/MIME identity",
        "PayloadCertificateFileName": "identity.p12",
        "PayloadContent": p12,
    }
    if passphrase is not None:
        identity["Password"] = passphrase
    payloads = [identity]
    encryption_uuid = identity["PayloadUUID"]
    if encryption_p12 is not None:
        second = {**identity, "PayloadIdentifier": f"{identifier}.encryption-identity",
                  "PayloadUUID": str(uuid.uuid4()).upper(),
                  "PayloadDisplayName": f"{display_name}: S/MIME encryption identity",
                  "PayloadCertificateFileName": "encryption.p12",
                  "PayloadContent": encryption_p12}
        identity["PayloadDisplayName"] = f"{display_name}: S/MIME signing identity"
        payloads.append(second)
        encryption_uuid = second["PayloadUUID"]
    if mail is not None:
        payloads.append(mail.payload(identifier, identity["PayloadUUID"], encryption_uuid))
    for n, ca in enumerate(ca_certs, 1):
        payloads.append({
            "PayloadType": ("com.apple.security.root" if _is_self_signed(ca)
                            else "com.apple.security.pkcs1"),
            "PayloadVersion": 1,
            "PayloadIdentifier": f"{identifier}.ca{n}",
            "PayloadUUID": str(uuid.uuid4()).upper(),
            "PayloadDisplayName": _cert_name(ca),
            "PayloadCertificateFileName": f"ca{n}.cer",
            "PayloadContent": ca.public_bytes(serialization.Encoding.DER),
        })
    profile = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": identifier,
        "PayloadUUID": str(uuid.uuid4()).upper(),
        "PayloadDisplayName": display_name,
        "PayloadDescription": "Installs your S/MIME certificate and key for signed and "
                              "encrypted mail, and the certificates of the issuing CA.",
        "PayloadOrganization": organization,
        "PayloadContent": payloads,
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML, sort_keys=True)


def pem_chain(certs: Iterable[x509.Certificate]) -> bytes:
    """The certificates as concatenated PEM blocks, in the order given.

    Raises :class:`~smimekit.errors.CAError` if there are none or one is not a certificate.
    """
    out = []
    for n, cert in enumerate(certs, 1):
        if not isinstance(cert, x509.Certificate):
            raise CAError(f"entry {n}: expected a certificate, got {type(cert).__name__}")
        out.append(cert.public_bytes(serialization.Encoding.PEM))
    if not out:
        raise CAError("no certificates to write")
    return b"".join(out)
