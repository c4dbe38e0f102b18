"""Our CA: a root and an issuing intermediate, and S/MIME subscriber issuance.

:class:`Authority` holds the two CA certificates and a :class:`~smimekit.keys.signer.Signer`
for each key (software or PKCS#11); the root's may be absent (an offline root). It records
nothing: :mod:`smimekit.ca.home` keeps it on disk and :mod:`smimekit.ca.issuance` in the store.
Every certificate :meth:`Authority.issue` builds is linted with pkilint's CA/Browser Forum
S/MIME linter before it is returned, and refused with :class:`CAError` when the linter reports
an ERROR (or worse).
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    PublicKeyTypes,
)
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from smimekit.ca.profiles import (
    DEFAULT_VALIDITY,
    Profile,
    Purpose,
    SubjectInfo,
    key_type_of,
    key_usage,
)
from smimekit.errors import CAError
from smimekit.keys.signer import LocalSigner, Signer, sign_builder
from smimekit.mailbox import SMTP_UTF8_MAILBOX, is_smtp_utf8

__all__ = ["Authority", "CAKeyType", "Finding", "lint", "refuse_lint_errors"]


def _as_signer(key: CertificateIssuerPrivateKeyTypes | Signer) -> Signer:
    # A private key object has public_key() and sign() too, so test for it first.
    if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
                  | ed25519.Ed25519PrivateKey | mldsa.MLDSA44PrivateKey
                  | mldsa.MLDSA65PrivateKey | mldsa.MLDSA87PrivateKey):
        return LocalSigner(key)
    if isinstance(key, Signer):
        return key
    raise CAError(f"a {type(key).__name__} cannot be a CA key")


class CAKeyType(enum.Enum):
    """Key types for the root and the issuing CA (BR 6.1.5 and 7.1.3.2).

    ML-DSA-65 and ML-DSA-87 (BR 1.0.11, ballot SMC013; RFC 9881) make a post-quantum CA:
    every certificate, CRL and OCSP answer it signs carries a pure ML-DSA signature, which
    only post-quantum-aware relying parties verify (not OpenSSL 3.0, gpgsm or NSS 3.87).
    """

    RSA3072 = "rsa3072"
    RSA4096 = "rsa4096"
    P256 = "p256"
    P384 = "p384"
    ED25519 = "ed25519"
    ML_DSA_65 = "ml-dsa-65"
    ML_DSA_87 = "ml-dsa-87"

    @property
    def post_quantum(self) -> bool:
        """True for the ML-DSA types."""
        return self in (CAKeyType.ML_DSA_65, CAKeyType.ML_DSA_87)

    def generate(self) -> CertificateIssuerPrivateKeyTypes:
        """A fresh private key of this type."""
        if self is CAKeyType.RSA3072:
            return rsa.generate_private_key(65537, 3072)
        if self is CAKeyType.RSA4096:
            return rsa.generate_private_key(65537, 4096)
        if self is CAKeyType.P256:
            return ec.generate_private_key(ec.SECP256R1())
        if self is CAKeyType.P384:
            return ec.generate_private_key(ec.SECP384R1())
        if self is CAKeyType.ML_DSA_65:
            return mldsa.MLDSA65PrivateKey.generate()
        if self is CAKeyType.ML_DSA_87:
            return mldsa.MLDSA87PrivateKey.generate()
        return ed25519.Ed25519PrivateKey.generate()


@dataclass(frozen=True)
class Finding:
    """One pkilint finding about a certificate."""

    severity: str
    """``FATAL``, ``ERROR``, ``WARNING``, ``NOTICE`` or ``INFO``."""
    code: str
    """The linter's code, e.g. ``cabf.smime.prohibited_ku_present``."""
    message: str | None
    """Detail the linter gave, if any."""
    path: str
    """Where in the certificate (pkilint node path)."""

    @property
    def is_error(self) -> bool:
        """True for ERROR and FATAL: the certificate breaks a MUST of the BR."""
        return self.severity in ("ERROR", "FATAL")

    def __str__(self) -> str:
        detail = f": {self.message}" if self.message else ""
        return f"{self.severity} {self.code}{detail} @ {self.path}"


@functools.cache
def _validator(level: Any, generation: Any) -> Any:
    # Building the validator tree costs more than running it; the tree holds no state
    # between documents (the validity start is read from each certificate).
    from pkilint.cabf import smime  # type: ignore[import-untyped]
    from pkilint.pkix import certificate  # type: ignore[import-untyped]

    return certificate.create_pkix_certificate_validator_container(
        smime.create_decoding_validators(),
        smime.create_subscriber_validators(level, generation),
    )


def lint(cert: x509.Certificate) -> list[Finding]:
    """Lint a subscriber certificate with pkilint's CA/B Forum S/MIME BR linter.

    The profile is detected from the reserved policy OID, as ``lint_cabf_smime_cert lint -d``
    does. Findings of every severity are returned, most severe first.

    Raises:
        CAError: the certificate carries no CA/B Forum S/MIME policy OID, or cannot be decoded.
    """
    # pkilint ships no type information.
    from pkilint import loader  # type: ignore[import-untyped]
    from pkilint.cabf import smime

    der = cert.public_bytes(serialization.Encoding.DER)
    try:
        doc = loader.RFC5280CertificateDocumentLoader().load_der_document(der, "certificate")
    except Exception as exc:  # pkilint raises a variety of pyasn1 errors
        raise CAError(f"pkilint cannot decode the certificate: {exc}") from exc
    level_generation = smime.determine_validation_level_and_generation(doc)
    if level_generation is None:
        raise CAError("the certificate carries no CA/B Forum S/MIME policy OID")
    level, generation = level_generation
    validator = _validator(level, generation)
    found: list[tuple[int, Finding]] = []
    for result in validator.validate(doc.root):
        for description in result.finding_descriptions:
            severity = description.finding.severity
            found.append((int(severity), Finding(
                severity=severity.name,
                code=description.finding.code,
                message=description.message,
                path=str(result.node.path),
            )))
    found.sort(key=lambda pair: pair[0])
    return [finding for _, finding in found]


def refuse_lint_errors(cert: x509.Certificate, profile_name: str) -> None:
    """Lint ``cert`` (:func:`lint`) and refuse it on any ERROR or FATAL finding.

    Separate from :meth:`Authority.issue` so that bulk enrolment can lint in a worker
    process, before the certificate is recorded (nothing is issued until then).

    Raises:
        CAError: the linter found errors (``.findings`` holds every finding), or cannot
            read the certificate.
    """
    findings = lint(cert)
    errors = [f for f in findings if f.is_error]
    if errors:
        raise CAError(f"refusing to issue a {profile_name} certificate: "
                      + "; ".join(str(f) for f in errors), findings)


def _ca_name(organization: str, common_name: str, country: str | None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COUNTRY_NAME, country)] if country else []
    attrs += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
              x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    return x509.Name(attrs)


_EMAIL_PROTECTION = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION])


@functools.cache
def _policies(policy_oid: x509.ObjectIdentifier) -> x509.CertificatePolicies:
    return x509.CertificatePolicies([x509.PolicyInformation(policy_oid, None)])


_CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=True, content_commitment=False, key_encipherment=False,
    data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
    encipher_only=False, decipher_only=False,
)


def mailbox_name(email: str) -> x509.GeneralName:
    """The subjectAltName entry for ``email`` (certificate form): an rfc822Name, or an
    SmtpUTF8Mailbox otherName when the local part is not ASCII (RFC 9598 3)."""
    if not is_smtp_utf8(email):
        return x509.RFC822Name(email)
    from asn1crypto import core

    return x509.OtherName(x509.ObjectIdentifier(SMTP_UTF8_MAILBOX),
                          core.UTF8String(email).dump())


@dataclass(frozen=True)
class Authority:
    """A root CA and the intermediate that issues S/MIME subscriber certificates."""

    root: x509.Certificate
    """The self-signed root: the trust anchor."""
    cert: x509.Certificate
    """The issuing CA certificate, signed by the root."""
    signer: Signer
    """The issuing CA's key (software or in a token)."""
    base_url: str
    """HTTP base of the CRL, OCSP and caIssuers URLs written into subscriber certificates."""
    root_signer: Signer | None = None
    """The root's key, or None when the root is kept offline."""

    @property
    def crl_url(self) -> str:
        """Where the issuing CA's CRL is published (cRLDistributionPoints)."""
        return f"{self.base_url}/crl/issuing.crl"

    @property
    def ocsp_url(self) -> str:
        """The OCSP responder (authorityInfoAccess)."""
        return f"{self.base_url}/ocsp"

    @property
    def root_crl_url(self) -> str:
        """Where the root's CRL (covering the issuing CA) is published."""
        return f"{self.base_url}/crl/root.crl"

    @property
    def ca_issuers_url(self) -> str:
        """Where the issuing CA certificate can be fetched (authorityInfoAccess caIssuers)."""
        return f"{self.base_url}/certs/issuing.der"

    # The extensions every subscriber certificate of this CA carries alike, made once per
    # Authority (cached_property writes the instance dict, which a frozen dataclass allows).

    @functools.cached_property
    def _authority_key_identifier(self) -> x509.AuthorityKeyIdentifier:
        issuer_ski = self.cert.extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski)

    @functools.cached_property
    def _crl_distribution_points(self) -> x509.CRLDistributionPoints:
        return x509.CRLDistributionPoints([x509.DistributionPoint(
            [x509.UniformResourceIdentifier(self.crl_url)], None, None, None)])

    @functools.cached_property
    def _authority_information_access(self) -> x509.AuthorityInformationAccess:
        return x509.AuthorityInformationAccess([
            x509.AccessDescription(AuthorityInformationAccessOID.OCSP,
                                   x509.UniformResourceIdentifier(self.ocsp_url)),
            x509.AccessDescription(AuthorityInformationAccessOID.CA_ISSUERS,
                                   x509.UniformResourceIdentifier(self.ca_issuers_url)),
        ])

    @property
    def chain(self) -> list[x509.Certificate]:
        """The intermediate then the root, to send with signed mail."""
        return [self.cert, self.root]

    @classmethod
    def create(
        cls,
        organization: str,
        *,
        base_url: str,
        key_type: CAKeyType = CAKeyType.P384,
        country: str | None = None,
        now: dt.datetime | None = None,
        root_key: CertificateIssuerPrivateKeyTypes | Signer | None = None,
        issuing_key: CertificateIssuerPrivateKeyTypes | Signer | None = None,
    ) -> Authority:
        """Create a root (20 years) and an issuing intermediate (10 years) for ``organization``.

        The intermediate is restricted to emailProtection (BR 7.1.2.2 g) with pathLen 0.
        Keys are generated in software unless given, as private keys or as signers (e.g. a
        :class:`~smimekit.keys.pkcs11.Pkcs11Signer`). ``base_url`` must name a public host: pkilint
        reports an internal name or address (``127.0.0.1``, ``.local``, ``.invalid``) in
        the CRL or AIA URLs as an ERROR, so issuance would be refused.

        Raises:
            CAError: ``base_url`` is not an http URL (the BR allow only http for CRL/AIA).
        """
        if not base_url.startswith("http://"):
            raise CAError("CRL and AIA URLs must be http:// (S/MIME BR 7.1.2.3 b, c)")
        now = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
        base = base_url.rstrip("/")
        root_signer = _as_signer(root_key or key_type.generate())
        signer = _as_signer(issuing_key or key_type.generate())
        root_public = root_signer.public_key()
        root_name = _ca_name(organization, f"{organization} S/MIME Root CA", country)
        root_ski = x509.SubjectKeyIdentifier.from_public_key(root_public)
        root = sign_builder(
            x509.CertificateBuilder()
            .subject_name(root_name)
            .issuer_name(root_name)
            .public_key(root_public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=365 * 20))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_CA_KEY_USAGE, critical=True)
            .add_extension(root_ski, critical=False),
            root_signer,
        )
        name = _ca_name(organization, f"{organization} S/MIME Issuing CA", country)
        cert = sign_builder(
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(root_name)
            .public_key(signer.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=365 * 10))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_CA_KEY_USAGE, critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]),
                           critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(signer.public_key()),
                critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski),
                critical=False)
            # BR 7.1.2.2: where relying parties find the root's CRL and certificate
            .add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
                [x509.UniformResourceIdentifier(f"{base}/crl/root.crl")], None, None, None)]),
                critical=False)
            .add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
                AuthorityInformationAccessOID.CA_ISSUERS,
                x509.UniformResourceIdentifier(f"{base}/certs/root.der"))]), critical=False),
            root_signer,
        )
        assert isinstance(root, x509.Certificate) and isinstance(cert, x509.Certificate)
        return cls(root=root, cert=cert, signer=signer, base_url=base,
                   root_signer=root_signer)

    def issue(
        self,
        profile: Profile,
        subject: SubjectInfo,
        public_key: PublicKeyTypes,
        purpose: Purpose,
        *,
        not_before: dt.datetime | None = None,
        validity: dt.timedelta = DEFAULT_VALIDITY,
        check: bool = True,
    ) -> x509.Certificate:
        """Build, sign and lint a subscriber certificate for ``subject`` under ``profile``.

        ``purpose`` sets the key usage (dual key pairs: one ``SIGN`` and one ``ENCRYPT``
        certificate per person). With ``check`` (the default) the certificate is linted and
        refused on any ERROR finding.

        Raises:
            CAError: the key cannot serve the purpose, the validity is beyond the profile's
                maximum, a subject field the profile needs is missing, or the linter found
                errors (``.findings``).
        """
        usage = key_usage(key_type_of(public_key), purpose)
        if validity > profile.max_validity or validity <= dt.timedelta(0):
            raise CAError(f"validity {validity.days} days is outside 1..{profile.max_validity.days}"
                          f" days for profile {profile.name} (S/MIME BR 6.3.2)")
        start = (not_before or dt.datetime.now(dt.UTC)).replace(microsecond=0)
        # RFC 5280 4.1.2.5: notAfter is inclusive, so the period is notAfter - notBefore + 1s.
        end = start + validity - dt.timedelta(seconds=1)
        builder = (
            x509.CertificateBuilder()
            .subject_name(profile.subject(subject))
            .issuer_name(self.cert.subject)
            .public_key(public_key)  # type: ignore[arg-type]  # X25519 is certifiable
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(usage, critical=True)
            .add_extension(_EMAIL_PROTECTION, critical=False)
            .add_extension(x509.SubjectAlternativeName([mailbox_name(subject.email)]),
                           critical=False)
            .add_extension(_policies(profile.policy_oid), critical=False)
            .add_extension(self._crl_distribution_points, critical=False)
            .add_extension(self._authority_information_access, critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key),  # type: ignore[arg-type]
                           critical=False)
            .add_extension(self._authority_key_identifier, critical=False)
        )
        cert = sign_builder(builder, self.signer)
        assert isinstance(cert, x509.Certificate)
        if check:
            refuse_lint_errors(cert, profile.name)
        return cert

