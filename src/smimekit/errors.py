"""Every exception smimekit raises on purpose, in one tree.

::

    SmimeError
    ├── MalformedError                 input that is not what it claims to be
    │   ├── ASN1Error                  truncated or wrong DER/BER, bad tags, huge lengths
    │   │   └── LimitExceededError     more elements than a parser budget allows (cms.limits)
    │   └── MIMEError                  wrong or missing MIME structure, bad transfer encoding
    ├── UnsupportedError               a valid construct we do not implement
    │   └── LegacyAlgorithmError       3DES, RC2, SHA-1 ... refused unless explicitly allowed
    ├── ArchiveError                   a mail archive cannot be read or changed as asked
    ├── AssessError                    a deployment cannot be assessed as asked (bad domain,
    │                                  damaged drill report)
    ├── CAError                        our CA refuses or cannot issue a certificate as asked
    ├── ConfigError                    the TOML configuration file is missing, invalid or unknown
    ├── DirectoryError                 a certificate source (LDAP, DNS, harvest) cannot answer
    ├── EscrowError                    key escrow refuses: bad or too few shares, tampered
    │                                  escrow data, a signing key offered for escrow
    ├── GatewayError                   the SMTP gateway cannot process a message (.permanent:
    │                                  the policy rejects it, 5xx; else 4xx, Postfix retries)
    ├── KeyLoadError                   a key or certificate file cannot be read
    │   └── PassphraseError            passphrase missing, unreadable or wrong
    ├── SigningError                   the signing operation itself cannot be carried out
    ├── EncryptionError                the encryption operation cannot be carried out
    ├── DecryptionError                one generic failure for every unwrap/decrypt step
    │   └── NoRecipientError           none of our keys/certificates is a recipient
    ├── RevocationError                revocation information cannot be obtained or used
    │   └── FetchError                 a CRL or OCSP fetch failed: network, HTTP, size, scheme
    ├── StoreError                     the database cannot be opened, read or written as asked
    ├── TrustStoreError                the trust store cannot be read or changed as asked
    └── VerificationError              a signature or its trust decision failed
        ├── NoSignatureError           the message is not signed (or has zero signers)
        ├── SignatureInvalidError      the cryptographic check failed (digest, signature)
        ├── SignedAttributesError      a required signed attribute is missing or wrong
        └── UntrustedError             intact, but the certificate check failed

``DecryptionError`` deliberately carries no detail about which step failed (key transport,
key unwrap, padding, tag): telling them apart would give a padding oracle (RFC 3218).
``VerificationError`` carries the whole verdict in ``.verdict`` when one was computed.
``RevocationError`` never escapes a validation run: a failed fetch becomes an ``unknown``
revocation status in the verdict, and the revocation policy decides whether that fails.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

__all__ = [
    "ASN1Error",
    "ArchiveError",
    "AssessError",
    "CAError",
    "ConfigError",
    "DecryptionError",
    "DirectoryError",
    "EncryptionError",
    "EscrowError",
    "FetchError",
    "GatewayError",
    "KeyLoadError",
    "LegacyAlgorithmError",
    "LimitExceededError",
    "MIMEError",
    "MalformedError",
    "NoRecipientError",
    "NoSignatureError",
    "PassphraseError",
    "RevocationError",
    "SignatureInvalidError",
    "SignedAttributesError",
    "SigningError",
    "SmimeError",
    "StoreError",
    "TrustStoreError",
    "UnsupportedError",
    "UntrustedError",
    "VerificationError",
]


class SmimeError(Exception):
    """Root of every error smimekit raises on purpose."""


class MalformedError(SmimeError):
    """The input is not well-formed: bad ASN.1, bad MIME, bad encoding."""


class ASN1Error(MalformedError):
    """Truncated, mis-tagged or otherwise undecodable ASN.1 (DER or BER)."""


class LimitExceededError(ASN1Error):
    """The input has more of some element than a parser budget allows.

    The budgets (:mod:`smimekit.cms.limits`) sit far above what real messages carry; they
    stop a hostile message (200,000 RecipientInfos, a million one-byte BER segments) before
    it is parsed. ``limit`` names the budget (``MAX_RECIPIENT_INFOS`` ...), ``maximum`` is its
    value and ``count`` how many were counted when counting stopped (one over the maximum).
    """

    def __init__(self, limit: str, maximum: int, count: int, what: str) -> None:
        super().__init__(f"too many {what}: more than {maximum:,} (limit {limit}; counting "
                         f"stopped at {count:,})")
        self.limit = limit
        self.maximum = maximum
        self.count = count


class MIMEError(MalformedError):
    """The MIME structure is missing, wrong or inconsistent."""


class UnsupportedError(SmimeError):
    """A well-formed construct that smimekit does not implement."""


class LegacyAlgorithmError(UnsupportedError):
    """A legacy algorithm (3DES, RC2, SHA-1 signatures...) refused by policy.

    Pass ``allow_legacy=True`` (CLI: ``--allow-legacy``) to read archives that need it.
    """


class ArchiveError(SmimeError):
    """A mail archive cannot be read or changed as asked (:mod:`smimekit.archive`).

    The archive is missing or locked, it changed during the run, an export folder holds
    something else, or a new mbox did not verify (the old one is then left as it was).
    """


class AssessError(SmimeError):
    """``smimekit assess`` cannot judge the deployment as asked: a domain that is not one, a
    damaged drill report, a time without a zone."""


class CAError(SmimeError):
    """Our CA refuses, or cannot carry out, an issuance as asked.

    A profile that does not fit the key or purpose, a validity beyond the Baseline
    Requirements, or a certificate the linter finds ERRORs in. ``findings`` holds the linter
    findings when linting was the reason (empty otherwise).
    """

    def __init__(self, message: str, findings: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.findings = list(findings)


class ConfigError(SmimeError):
    """The configuration file (``--config`` / ``SMIMEKIT_CONFIG``) cannot be used: missing,
    not TOML, an unknown key or a value of the wrong type; the message names the key."""


class DirectoryError(SmimeError):
    """A certificate source cannot answer (:mod:`smimekit.directory`): the directory is
    unreachable, the bind is refused, a DNS answer is bogus or unsigned, an entry holds
    garbage. ``source`` names the source (``ldap``, ``smimea``, ...); the message never carries
    a password."""

    def __init__(self, message: str, source: str = "") -> None:
        super().__init__(message)
        self.source = source


class EscrowError(SmimeError):
    """Key escrow refuses or cannot carry out an operation (:mod:`smimekit.escrow`).

    Too few recovery shares, a wrong share or one of another escrow or generation, escrow
    data altered on disk (``escrow.json``, a share file, a sealed key record), or a signing
    key offered for escrow (non-repudiation: signing keys are never escrowed). The message
    names the share, officer or record at fault and never carries key material.
    """


class GatewayError(SmimeError):
    """The gateway cannot pass a message on as its policy asks.

    ``permanent`` is True when the policy itself refuses the message (the SMTP client gets
    a 5xx and the sender a bounce naming ``str(error)``); False for a failure that may pass
    (key store or database down, next hop refusing, a scanner that does not answer): a 4xx,
    so the message stays in Postfix's queue and is tried again.
    """

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class KeyLoadError(SmimeError):
    """A private key, certificate or PKCS#12 file cannot be loaded."""


class PassphraseError(KeyLoadError):
    """The passphrase is missing, cannot be read, or does not open the key."""


class SigningError(SmimeError):
    """Signing cannot be carried out (key and certificate do not match, bad options)."""


class EncryptionError(SmimeError):
    """Encryption cannot be carried out (unusable recipient certificate, bad options)."""


class DecryptionError(SmimeError):
    """Decryption failed. Deliberately says nothing about which step failed."""

    def __init__(self, message: str = "decryption failed: wrong key or damaged message") -> None:
        super().__init__(message)


class NoRecipientError(DecryptionError):
    """None of the given keys or certificates matches a recipient of the message."""

    def __init__(
        self, message: str = "no matching recipient: the message is not encrypted to this key"
    ) -> None:
        super().__init__(message)


class StoreError(SmimeError):
    """The database cannot be opened, read or written as asked.

    A locked SQLite file, an unreachable PostgreSQL server, a bad URL, a duplicate
    certificate or user: the message says which, never the SQL.
    """


class TrustStoreError(SmimeError):
    """The trust store cannot be read or changed as asked."""


class RevocationError(SmimeError):
    """Revocation information (a CRL or an OCSP response) cannot be obtained or used."""


class FetchError(RevocationError):
    """Fetching a CRL or an OCSP response failed: network, HTTP status, size cap, URL scheme.

    ``url`` is the address that was asked.
    """

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message)
        self.url = url


class VerdictReport(Protocol):
    """What an error needs of a verification report (:class:`~smimekit.validation.verdict.Verdict`
    is one). A protocol, so that this module, the bottom of every layer, imports nothing of
    smimekit: ``validation.verdict`` raises these errors, and must not be imported back."""

    @property
    def valid(self) -> bool: ...

    def summary(self) -> str: ...

    def to_json(self) -> str: ...


class VerificationError(SmimeError):
    """A signature, or the trust decision about it, failed.

    ``verdict`` holds the full :class:`~smimekit.validation.verdict.Verdict` when the failure
    came out of a complete verification run, so a caller can report every reason.
    """

    def __init__(self, message: str, verdict: VerdictReport | None = None,
                 **data: Any) -> None:
        super().__init__(message)
        self.verdict = verdict
        self.data = data


class NoSignatureError(VerificationError):
    """The message carries no signature, or a SignedData with zero signers."""


class SignatureInvalidError(VerificationError):
    """The cryptographic check failed: digest mismatch or bad signature value."""


class SignedAttributesError(VerificationError):
    """A signed attribute required by RFC 5652/8551 is missing, duplicated or wrong."""


class UntrustedError(VerificationError):
    """The signature is intact but its certificate did not pass validation."""
