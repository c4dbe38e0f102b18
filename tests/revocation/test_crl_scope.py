"""Which CRLs speak for a certificate (RFC 5280 6.3.3): names, CRL numbers, distribution
points, CRLs signed by another key of the CA, indirect CRLs, CRLs partitioned by reason.

The same rules as PKITS 4.3, 4.4.19-21, 4.5, 4.14 and x509-limbo ``crl::``, on small cases
built here (see ``tests/pkits`` and ``tests/limbo`` for the suites themselves).
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from revpki import DAY, HOUR, NOW, Party, RevPKI, key, name

from smimekit.validation.fetchers import MemoryFetcher
from smimekit.validation.revocation import (
    RevocationOptions,
    RevocationPolicy,
    check_certificate,
    check_chain,
)

R = x509.ReasonFlags
HARD = RevocationPolicy.HARD


def opts(**kw: object) -> RevocationOptions:
    return RevocationOptions(fetcher=MemoryFetcher(), policy=HARD, **kw)  # type: ignore[arg-type]


def make_cert(
    subject: x509.Name,
    issuer: Party,
    *,
    ca: bool = False,
    crl_sign: bool = False,
    extensions: Sequence[x509.ExtensionType] = (),
) -> Party:
    """A certificate with exactly the extensions asked for (plus basicConstraints, keyUsage)."""
    k = key()
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject)
        .public_key(k.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - 30 * DAY)
        .not_valid_after(NOW + 365 * DAY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(not crl_sign, False, False, False, False, ca, crl_sign, False, False),
            critical=True,
        )
    )
    for extension in extensions:
        b = b.add_extension(extension, critical=False)
    return Party(k, b.sign(issuer.key, hashes.SHA256()))


def make_crl(
    issuer: x509.Name,
    signer: Party,
    entries: Sequence[tuple[int, x509.ReasonFlags | None, x509.Name | None]] = (),
    *,
    number: int | None = 1,
    number_critical: bool = False,
    idp: x509.IssuingDistributionPoint | None = None,
) -> x509.CertificateRevocationList:
    """A CRL named ``issuer``, signed by ``signer``; entries (serial, reason, certificateIssuer)."""
    b = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer)
        .last_update(NOW - HOUR)
        .next_update(NOW + DAY)
    )
    if number is not None:
        b = b.add_extension(x509.CRLNumber(number), critical=number_critical)
    if idp is not None:
        b = b.add_extension(idp, critical=True)
    for serial, reason, cert_issuer in entries:
        rb = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(NOW - DAY)
        if reason is not None:
            rb = rb.add_extension(x509.CRLReason(reason), critical=False)
        if cert_issuer is not None:
            rb = rb.add_extension(
                x509.CertificateIssuer([x509.DirectoryName(cert_issuer)]), critical=True
            )
        b = b.add_revoked_certificate(rb.build())
    return b.sign(signer.key, hashes.SHA256())


def idp(
    full_name: Sequence[x509.GeneralName] | None = None,
    *,
    relative: x509.RelativeDistinguishedName | None = None,
    reasons: frozenset[x509.ReasonFlags] | None = None,
    indirect: bool = False,
) -> x509.IssuingDistributionPoint:
    return x509.IssuingDistributionPoint(
        list(full_name) if full_name else None, relative, False, False, reasons, indirect, False
    )


def points(*dps: x509.DistributionPoint) -> x509.CRLDistributionPoints:
    return x509.CRLDistributionPoints(list(dps))


def uri(value: str) -> x509.UniformResourceIdentifier:
    return x509.UniformResourceIdentifier(value)


def cn_rdn(value: str) -> x509.RelativeDistinguishedName:
    return x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COMMON_NAME, value)])


def root_crl(rpki: RevPKI, revoked: Sequence[int] = ()) -> x509.CertificateRevocationList:
    return make_crl(rpki.root.cert.subject, rpki.root, [(s, None, None) for s in revoked])


# -- names and CRL numbers --------------------------------------------------------------


def test_crl_issuer_is_compared_as_rfc5280_says(rpki: RevPKI) -> None:
    """PKITS 4.3.3-5, 4.3.11: case and spacing of the CRL's issuer name do not matter."""
    mallory = rpki.person("mallory", ocsp_url=False)
    recased = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SMIMEKIT  Revocation Tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, " rev issuing ca"),
        ]
    )
    crl = make_crl(recased, rpki.ca, [(mallory.cert.serial_number, None, None)])
    status = check_certificate(mallory.cert, rpki.ca.cert, options=opts(crls=[crl]))
    assert status.status == "revoked"


@pytest.mark.parametrize(
    ("number", "critical", "why"),
    [(None, False, "carries no CRL number"), (1, True, "marks its CRL number critical")],
)
def test_crl_number_is_required_and_not_critical(
    rpki: RevPKI, number: int | None, critical: bool, why: str
) -> None:
    """RFC 5280 5.2.3 (x509-limbo crl::crlnumber-missing, crl::crlnumber-critical)."""
    bob = rpki.person("bob", ocsp_url=False)
    crl = make_crl(rpki.ca.cert.subject, rpki.ca, number=number, number_critical=critical)
    status = check_certificate(bob.cert, rpki.ca.cert, options=opts(crls=[crl]))
    assert status.status == "unknown" and why in status.detail


# -- distribution points ----------------------------------------------------------------


def test_idp_must_name_a_point_of_the_certificate(rpki: RevPKI) -> None:
    """PKITS 4.14.3: a CRL scoped to another distribution point says nothing."""
    bob = rpki.person("bob", ocsp_url=False)  # names rpki.ca_crl_url
    other = make_crl(rpki.ca.cert.subject, rpki.ca, idp=idp([uri(rpki.url("other.crl"))]))
    status = check_certificate(bob.cert, rpki.ca.cert, options=opts(crls=[other]))
    assert status.status == "unknown" and "distribution point" in status.detail
    mine = make_crl(rpki.ca.cert.subject, rpki.ca, idp=idp([uri(rpki.ca_crl_url)]))
    assert check_certificate(bob.cert, rpki.ca.cert, options=opts(crls=[mine])).status == "good"


def test_idp_scoped_crl_does_not_cover_a_certificate_without_points(rpki: RevPKI) -> None:
    """PKITS 4.14.9: only the implicit point (named by the issuer) remains."""
    bob = rpki.person("bob", ocsp_url=False, crl=False)
    scoped = make_crl(rpki.ca.cert.subject, rpki.ca, idp=idp(relative=cn_rdn("CRL1")))
    status = check_certificate(bob.cert, rpki.ca.cert, options=opts(crls=[scoped]))
    assert status.status == "unknown" and "distribution point" in status.detail
    by_issuer = make_crl(
        rpki.ca.cert.subject, rpki.ca, idp=idp([x509.DirectoryName(rpki.ca.cert.subject)])
    )
    assert check_certificate(bob.cert, rpki.ca.cert, options=opts(crls=[by_issuer])).status == (
        "good"
    )


def test_relative_names_are_relative_to_the_crl_issuer(rpki: RevPKI) -> None:
    """PKITS 4.14.7-8: nameRelativeToCRLIssuer on either side, or a full directoryName."""
    ext = points(x509.DistributionPoint(None, cn_rdn("CRL1"), None, None))
    carol = make_cert(name("carol"), rpki.ca, extensions=[ext])
    full = x509.DirectoryName(x509.Name([*rpki.ca.cert.subject.rdns, cn_rdn("crl1")]))
    for scope in (idp(relative=cn_rdn("CRL1")), idp([full])):
        crl = make_crl(rpki.ca.cert.subject, rpki.ca, idp=scope)
        assert check_certificate(carol.cert, rpki.ca.cert, options=opts(crls=[crl])).status == (
            "good"
        )
    crl = make_crl(rpki.ca.cert.subject, rpki.ca, idp=idp(relative=cn_rdn("CRL2")))
    assert check_certificate(carol.cert, rpki.ca.cert, options=opts(crls=[crl])).status == (
        "unknown"
    )


# -- reasons ------------------------------------------------------------------------------

SOME = frozenset({R.key_compromise, R.ca_compromise})
REST = frozenset(
    {
        R.affiliation_changed,
        R.superseded,
        R.cessation_of_operation,
        R.certificate_hold,
        R.privilege_withdrawn,
        R.aa_compromise,
    }
)


def test_crls_partitioned_by_reason_count_together(rpki: RevPKI) -> None:
    """PKITS 4.14.17-21: onlySomeReasons CRLs answer once they cover every reason."""
    bob = rpki.person("bob", ocsp_url=False)
    here = [uri(rpki.ca_crl_url)]
    some = make_crl(rpki.ca.cert.subject, rpki.ca, idp=idp(here, reasons=SOME))
    rest = make_crl(rpki.ca.cert.subject, rpki.ca, idp=idp(here, reasons=REST))
    status = check_certificate(bob.cert, rpki.ca.cert, options=opts(crls=[some]))
    assert status.status == "unknown" and "no CRL covers the revocation reasons" in status.detail
    assert "superseded" in status.detail and "keyCompromise" not in status.detail
    status = check_certificate(bob.cert, rpki.ca.cert, options=opts(crls=[some, rest]))
    assert status.status == "good" and "cover every reason" in status.detail
    listed = make_crl(
        rpki.ca.cert.subject,
        rpki.ca,
        [(bob.cert.serial_number, R.superseded, None)],
        idp=idp(here, reasons=REST),
    )
    status = check_certificate(bob.cert, rpki.ca.cert, options=opts(crls=[some, listed]))
    assert status.status == "revoked" and status.reason == "superseded"


def test_reasons_of_the_distribution_point_partition_a_complete_crl(rpki: RevPKI) -> None:
    """A point that serves only some reasons: its CRL does not cover the others."""
    dp = x509.DistributionPoint([uri(rpki.url("kc.crl"))], None, SOME, None)
    carol = make_cert(name("carol"), rpki.ca, extensions=[points(dp)])
    scoped = make_crl(rpki.ca.cert.subject, rpki.ca, idp=idp([uri(rpki.url("kc.crl"))]))
    status = check_certificate(carol.cert, rpki.ca.cert, options=opts(crls=[scoped]))
    assert status.status == "unknown"
    complete = make_crl(rpki.ca.cert.subject, rpki.ca)  # no IDP: every reason
    assert check_certificate(carol.cert, rpki.ca.cert, options=opts(crls=[complete])).status == (
        "good"
    )


# -- CRLs signed by another key ---------------------------------------------------------


def crl_signer(rpki: RevPKI, issuer: Party | None = None, *, crl_sign: bool = True) -> Party:
    """A certificate for another key of the issuing CA, with its name, issued by the root."""
    return make_cert(rpki.ca.cert.subject, issuer or rpki.root, crl_sign=crl_sign)


def test_crl_signed_by_a_separate_crl_signing_key(rpki: RevPKI) -> None:
    """PKITS 4.4.19: the signer's certificate comes with the chain or the options."""
    mallory = rpki.person("mallory", ocsp_url=False)
    signer = crl_signer(rpki)
    crl = make_crl(rpki.ca.cert.subject, signer, [(mallory.cert.serial_number, None, None)])
    crls = [crl, root_crl(rpki)]
    chain = rpki.chain(mallory)
    report = check_chain(chain, options=opts(crls=crls), extra_certs=[signer.cert])
    assert report.revoked and "CRL signed by the key certified as" in report.statuses[0].detail
    report = check_chain(chain, options=opts(crls=crls, extra_certs=[signer.cert]))
    assert report.revoked
    report = check_chain(chain, options=opts(crls=crls))
    assert not report.ok and not report.revoked
    assert "signature does not verify" in report.statuses[0].detail
    # No trust anchor to validate the signer against: not used.
    status = check_certificate(
        mallory.cert, rpki.ca.cert, options=opts(crls=crls, extra_certs=[signer.cert])
    )
    assert status.status == "unknown" and "no trust anchor" in status.detail


def test_revoked_crl_signer_is_refused(rpki: RevPKI) -> None:
    """PKITS 4.4.20: the CRL signing certificate itself is revoked."""
    bob = rpki.person("bob", ocsp_url=False)
    signer = crl_signer(rpki)
    crls = [make_crl(rpki.ca.cert.subject, signer), root_crl(rpki, [signer.cert.serial_number])]
    report = check_chain(rpki.chain(bob), options=opts(crls=crls), extra_certs=[signer.cert])
    assert not report.ok and report.statuses[0].status == "unknown"
    assert "revoked" in report.statuses[0].detail


def test_crl_signer_must_chain_to_the_same_anchor_and_have_crl_sign(rpki: RevPKI) -> None:
    bob = rpki.person("bob", ocsp_url=False)
    foreign_root = RevPKI().root
    for signer, why in (
        (crl_signer(rpki, foreign_root), "does not validate"),
        (crl_signer(rpki, crl_sign=False), "key usage lacks cRLSign"),
    ):
        crls = [make_crl(rpki.ca.cert.subject, signer), root_crl(rpki)]
        report = check_chain(rpki.chain(bob), options=opts(crls=crls), extra_certs=[signer.cert])
        assert not report.ok and why in report.statuses[0].detail


@pytest.mark.parametrize("policy", [RevocationPolicy.HARD, RevocationPolicy.SOFT])
def test_a_key_does_not_vouch_for_its_own_certificate(
    rpki: RevPKI, policy: RevocationPolicy
) -> None:
    """A self-issued CRL signing certificate whose only CRL is one it signed itself."""
    bob = rpki.person("bob", ocsp_url=False)
    signer = make_cert(rpki.ca.cert.subject, rpki.ca, crl_sign=True)  # self-issued
    crls = [make_crl(rpki.ca.cert.subject, signer), root_crl(rpki)]
    options = RevocationOptions(fetcher=MemoryFetcher(), policy=policy, crls=crls)
    report = check_chain(rpki.chain(bob), options=options, extra_certs=[signer.cert])
    assert report.statuses[0].status == "unknown"
    assert "a CRL it signed itself" in report.statuses[0].detail


def test_crl_signed_by_the_other_key_of_a_rolled_over_ca(rpki: RevPKI) -> None:
    """PKITS 4.5.1: the certificate's issuer is the old-with-new certificate (self-issued)."""
    new = make_cert(name("Rollover CA"), rpki.root, ca=True, crl_sign=True)
    old_key = key()
    old_with_new = Party(
        old_key,
        x509.CertificateBuilder()
        .subject_name(new.cert.subject)
        .issuer_name(new.cert.subject)
        .public_key(old_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - 30 * DAY)
        .not_valid_after(NOW + 365 * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(new.key, hashes.SHA256()),
    )
    dave = make_cert(name("dave"), old_with_new)
    crl = make_crl(new.cert.subject, new, [(dave.cert.serial_number, R.key_compromise, None)])
    chain = [dave.cert, old_with_new.cert, new.cert, rpki.root.cert]
    report = check_chain(chain, options=opts(crls=[crl, root_crl(rpki)]))
    assert [s.status for s in report.statuses] == ["revoked", "good", "good"]


# -- indirect CRLs ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def indirect(rpki: RevPKI) -> tuple[Party, Party]:
    """(the indirect CRL issuer, issued by the root; carol, whose point names it)."""
    crl_issuer = make_cert(name("Rev Indirect CRL Issuer"), rpki.root, crl_sign=True)
    dp = x509.DistributionPoint(
        [uri(rpki.url("indirect.crl"))], None, None, [x509.DirectoryName(crl_issuer.cert.subject)]
    )
    return crl_issuer, make_cert(name("carol"), rpki.ca, extensions=[points(dp)])


def test_indirect_crl_entries_belong_to_their_certificate_issuer(
    rpki: RevPKI, indirect: tuple[Party, Party]
) -> None:
    """PKITS 4.14.22-35: certificateIssuer says whose serial number an entry is."""
    crl_issuer, carol = indirect
    scope = idp([uri(rpki.url("indirect.crl"))], indirect=True)
    chain = [carol.cert, rpki.ca.cert, rpki.root.cert]
    serial = carol.cert.serial_number

    def status(
        entries: Sequence[tuple[int, x509.ReasonFlags | None, x509.Name | None]],
        scope: x509.IssuingDistributionPoint = scope,
    ) -> str:
        crl = make_crl(crl_issuer.cert.subject, crl_issuer, entries, idp=scope)
        options = opts(crls=[crl, root_crl(rpki)])
        return check_chain(chain, options=options, extra_certs=[crl_issuer.cert]).statuses[0].status

    ca_name, other = rpki.ca.cert.subject, name("Someone Else")
    assert status([(1, None, other), (serial, None, ca_name)]) == "revoked"
    assert status([(1, None, ca_name), (serial, None, None)]) == "revoked"  # carried forward
    assert status([(serial, None, other)]) == "good"
    assert status([(serial, None, None)]) == "good"  # the CRL issuer's own serial number
    # The CRL must say it is indirect.
    assert status([(serial, None, ca_name)], idp([uri(rpki.url("indirect.crl"))])) == "unknown"
