"""Revocation checking against CRLs and OCSP responses served from memory (no sockets)."""

from __future__ import annotations

import datetime as dt
import json
import stat
from dataclasses import asdict
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID
from revpki import DAY, HOUR, NOW, RevPKI, der, issue

from smimekit.errors import MalformedError
from smimekit.validation.fetchers import MemoryFetcher
from smimekit.validation.revocation import (
    RevocationOptions,
    RevocationPolicy,
    check_certificate,
    check_chain,
)
from smimekit.validation.verdict import _json_default

GOOD = ocsp.OCSPCertStatus.GOOD
REVOKED = ocsp.OCSPCertStatus.REVOKED
UNKNOWN = ocsp.OCSPCertStatus.UNKNOWN
KEY_COMPROMISE = x509.ReasonFlags.key_compromise


def opts(fetcher: MemoryFetcher | None = None, **kw: object) -> RevocationOptions:
    return RevocationOptions(fetcher=fetcher or MemoryFetcher(), **kw)  # type: ignore[arg-type]


def root_crls(pki: RevPKI) -> dict[str, bytes]:
    return {pki.url("root.crl"): der(pki.crl(issuer=pki.root))}


# -- OCSP ------------------------------------------------------------------------------------


def test_ocsp_good_is_asked_with_a_nonce_and_reported(rpki: RevPKI) -> None:
    alice = rpki.person("alice")
    fetcher = MemoryFetcher(ocsp={rpki.ocsp_url: rpki.responder_for({alice.cert.serial_number:
                                                                     (GOOD, None)})})
    status = check_certificate(alice.cert, rpki.ca.cert, options=opts(fetcher))
    assert (status.status, status.source, status.protocol, status.url) == (
        "good", "ocsp", "ocsp", rpki.ocsp_url)
    assert fetcher.calls == [("ocsp", rpki.ocsp_url)]
    # thisUpdate is NOW - 1 h, and NOW was taken when the module was imported: under a
    # loaded parallel run that can be minutes before this test runs
    elapsed = (dt.datetime.now(dt.UTC) - NOW).total_seconds()
    assert status.age_seconds is not None and 3599 <= status.age_seconds <= 3601 + elapsed
    assert status.next_update == NOW + DAY


def test_ocsp_revoked_fails_with_date_and_reason(rpki: RevPKI) -> None:
    mallory = rpki.person("mallory")
    when = NOW - 2 * HOUR
    fetcher = MemoryFetcher(
        ocsp={rpki.ocsp_url: rpki.responder_for({mallory.cert.serial_number: (REVOKED, when)},
                                                reason=KEY_COMPROMISE)},
        crls=root_crls(rpki))
    report = check_chain(rpki.chain(mallory), options=opts(fetcher))
    assert [s.status for s in report.statuses] == ["revoked", "good"]
    assert report.statuses[0].revoked_at == when
    assert report.statuses[0].reason == "keyCompromise"
    assert not report.ok and report.revoked
    assert "revoked on" in report.reasons[0] and "keyCompromise" in report.reasons[0]
    assert "OCSP response from http://ocsp.test/" in report.reasons[0]


def test_revoked_fails_under_every_policy(rpki: RevPKI) -> None:
    mallory = rpki.person("mallory")
    local = rpki.ocsp_response(mallory.cert, REVOKED, revoked_at=NOW - DAY)
    for policy in RevocationPolicy:
        report = check_chain(rpki.chain(mallory)[:2],
                             options=opts(policy=policy, ocsp_responses=[local]))
        assert not report.ok, policy


def test_ocsp_unknown_without_crl_warns_under_soft_and_fails_under_hard(rpki: RevPKI) -> None:
    stranger = rpki.person("stranger", crl=False)
    fetcher = MemoryFetcher(ocsp={rpki.ocsp_url: rpki.responder_for({})})
    soft = check_chain(rpki.chain(stranger)[:2], options=opts(fetcher))
    assert soft.statuses[0].status == "unknown"
    assert "does not know the certificate" in soft.statuses[0].detail
    assert soft.ok and "revocation status unknown" in soft.warnings[0]
    hard = check_chain(rpki.chain(stranger)[:2],
                       options=opts(fetcher, policy=RevocationPolicy.HARD))
    assert not hard.ok and "hard revocation policy" in hard.reasons[0]


def test_ocsp_unknown_falls_back_to_the_crl(rpki: RevPKI) -> None:
    bob = rpki.person("bob")
    fetcher = MemoryFetcher(ocsp={rpki.ocsp_url: rpki.responder_for({})},
                            crls={rpki.ca_crl_url: der(rpki.crl())})
    status = check_certificate(bob.cert, rpki.ca.cert, options=opts(fetcher))
    assert (status.status, status.protocol) == ("good", "crl")
    # SHA-256 CertID first, then SHA-1 for responders that only know those, then the CRL.
    assert fetcher.calls == [("ocsp", rpki.ocsp_url)] * 2 + [("crl", rpki.ca_crl_url)]


def test_sha1_only_responder_is_asked_again_with_a_sha1_cert_id(rpki: RevPKI) -> None:
    bob = rpki.person("bob", crl=False)
    inner = rpki.responder_for({bob.cert.serial_number: (GOOD, None)})

    def sha1_only(request_der: bytes) -> bytes:
        request = ocsp.load_der_ocsp_request(request_der)
        if not isinstance(request.hash_algorithm, hashes.SHA1):
            return ocsp.OCSPResponseBuilder.build_unsuccessful(
                ocsp.OCSPResponseStatus.MALFORMED_REQUEST).public_bytes(Encoding.DER)
        return inner(request_der)

    fetcher = MemoryFetcher(ocsp={rpki.ocsp_url: sha1_only})
    status = check_certificate(bob.cert, rpki.ca.cert, options=opts(fetcher))
    assert status.status == "good"
    assert len(fetcher.calls) == 2


def test_stale_ocsp_is_not_used(rpki: RevPKI) -> None:
    bob = rpki.person("bob", crl=False)
    stale = rpki.ocsp_response(bob.cert, this_update=NOW - 3 * DAY, next_update=NOW - DAY)
    status = check_certificate(bob.cert, rpki.ca.cert,
                               options=opts(MemoryFetcher(ocsp={rpki.ocsp_url: stale})))
    assert status.status == "unknown"
    assert "stale" in status.detail and "nextUpdate" in status.detail


def test_ocsp_without_next_update_is_fresh_only_for_max_age(rpki: RevPKI) -> None:
    bob = rpki.person("bob", crl=False)
    old = rpki.ocsp_response(bob.cert, this_update=NOW - 2 * DAY, next_update=None)
    status = check_certificate(bob.cert, rpki.ca.cert, options=opts(ocsp_responses=[old]))
    assert status.status == "unknown" and "no nextUpdate" in status.detail
    status = check_certificate(bob.cert, rpki.ca.cert,
                               options=opts(ocsp_responses=[old], max_age=dt.timedelta(days=3)))
    assert status.status == "good"


def test_ocsp_from_the_future_is_refused(rpki: RevPKI) -> None:
    bob = rpki.person("bob", crl=False)
    future = rpki.ocsp_response(bob.cert, this_update=NOW + DAY, next_update=NOW + 2 * DAY)
    status = check_certificate(bob.cert, rpki.ca.cert, options=opts(ocsp_responses=[future]))
    assert status.status == "unknown" and "in the future" in status.detail


def test_nonce_mismatch_is_refused_as_a_replay(rpki: RevPKI) -> None:
    bob = rpki.person("bob", crl=False)
    replay = rpki.ocsp_response(bob.cert, nonce=b"\x00" * 16)
    report = check_chain(rpki.chain(bob)[:2],
                         options=opts(MemoryFetcher(ocsp={rpki.ocsp_url: replay}),
                                      policy=RevocationPolicy.HARD))
    assert report.statuses[0].status == "unknown"
    assert "nonce does not match" in report.statuses[0].detail
    assert not report.ok


def test_response_without_nonce_is_accepted_on_its_times(rpki: RevPKI) -> None:
    bob = rpki.person("bob", crl=False)
    plain = rpki.ocsp_response(bob.cert)
    status = check_certificate(bob.cert, rpki.ca.cert,
                               options=opts(MemoryFetcher(ocsp={rpki.ocsp_url: plain})))
    assert status.status == "good"


def test_response_signed_by_another_key_is_refused(rpki: RevPKI) -> None:
    bob = rpki.person("bob", crl=False)
    forged = bytearray(rpki.ocsp_response(bob.cert))
    forged[-1] ^= 0x01  # the last byte of the signature (no certificates follow it)
    status = check_certificate(bob.cert, rpki.ca.cert, options=opts(ocsp_responses=[bytes(forged)]))
    assert status.status == "unknown" and "signature does not verify" in status.detail


def test_tampered_response_is_refused(rpki: RevPKI) -> None:
    bob = rpki.person("bob", crl=False)
    good = bytearray(rpki.ocsp_response(bob.cert, REVOKED, revoked_at=NOW - DAY))
    # Flip the status from revoked to ... anything: the signature no longer covers it.
    index = bytes(good).index(b"\xa1\x11\x18\x0f")  # [1] revokedInfo, GeneralizedTime
    good[index + 6] ^= 0x01
    status = check_certificate(bob.cert, rpki.ca.cert, options=opts(ocsp_responses=[bytes(good)]))
    assert status.status == "unknown" and "signature does not verify" in status.detail


def test_delegated_responder_with_ocsp_signing_is_accepted(rpki: RevPKI) -> None:
    bob = rpki.person("bob", crl=False)
    response = rpki.ocsp_response(bob.cert, responder=rpki.responder)
    status = check_certificate(bob.cert, rpki.ca.cert, options=opts(ocsp_responses=[response]))
    assert status.status == "good"
    assert "delegated responder" in status.detail


@pytest.mark.parametrize("by_name", [False, True])
def test_delegated_responder_without_ocsp_signing_is_refused(rpki: RevPKI, by_name: bool) -> None:
    bob = rpki.person("bob", crl=False)
    response = rpki.ocsp_response(bob.cert, responder=rpki.rogue_responder, by_name=by_name)
    status = check_certificate(bob.cert, rpki.ca.cert, options=opts(ocsp_responses=[response]))
    assert status.status == "unknown"
    assert "lacks the id-kp-OCSPSigning" in status.detail


def test_responder_certified_by_another_ca_is_refused(rpki: RevPKI) -> None:
    bob = rpki.person("bob", crl=False)
    other_ca = issue("Other CA", rpki.root, ca=True)
    outsider = issue("Outsider Responder", other_ca, eku=[ExtendedKeyUsageOID.OCSP_SIGNING])
    response = rpki.ocsp_response(bob.cert, responder=outsider)
    status = check_certificate(bob.cert, rpki.ca.cert, options=opts(ocsp_responses=[response]))
    assert status.status == "unknown" and "not issued by the certificate's issuer" in status.detail


def test_expired_delegated_responder_is_refused(rpki: RevPKI) -> None:
    bob = rpki.person("bob", crl=False)
    expired = issue("Expired Responder", rpki.ca, eku=[ExtendedKeyUsageOID.OCSP_SIGNING],
                    not_before=NOW - 30 * DAY, not_after=NOW - DAY)
    response = rpki.ocsp_response(bob.cert, responder=expired)
    status = check_certificate(bob.cert, rpki.ca.cert, options=opts(ocsp_responses=[response]))
    assert status.status == "unknown" and "not within its validity" in status.detail


def test_unsuccessful_response_status_is_reported(rpki: RevPKI) -> None:
    bob = rpki.person("bob", crl=False)
    later = ocsp.OCSPResponseBuilder.build_unsuccessful(ocsp.OCSPResponseStatus.TRY_LATER)
    fetcher = MemoryFetcher(ocsp={rpki.ocsp_url: later.public_bytes(Encoding.DER)})
    status = check_certificate(bob.cert, rpki.ca.cert, options=opts(fetcher))
    assert status.status == "unknown" and "TRY_LATER" in status.detail


def test_supplied_responses_about_others_are_ignored_quietly(rpki: RevPKI) -> None:
    alice, bob = rpki.person("alice", crl=False), rpki.person("bob", crl=False)
    responses = [rpki.ocsp_response(alice.cert), rpki.ocsp_response(bob.cert, REVOKED,
                                                                     revoked_at=NOW - DAY)]
    status = check_certificate(alice.cert, rpki.ca.cert,
                               options=opts(ocsp_responses=responses,
                                            policy=RevocationPolicy.OFFLINE))
    assert status.status == "good"


# -- CRLs ------------------------------------------------------------------------------------


def test_crl_revoked_with_reason(rpki: RevPKI) -> None:
    mallory = rpki.person("mallory", ocsp_url=False)
    when = NOW - DAY
    crl = rpki.crl([(mallory.cert, when, KEY_COMPROMISE)])
    fetcher = MemoryFetcher(crls={rpki.ca_crl_url: der(crl), **root_crls(rpki)})
    report = check_chain(rpki.chain(mallory), options=opts(fetcher))
    first = report.statuses[0]
    assert (first.status, first.source, first.reason, first.revoked_at) == (
        "revoked", "crl", "keyCompromise", when)
    assert report.statuses[1].status == "good"  # the CA, against the root's CRL
    assert not report.ok and "the CRL from http://pki.test/ca.crl" in report.reasons[0]


def test_crl_good_for_a_certificate_not_listed(rpki: RevPKI) -> None:
    bob = rpki.person("bob", ocsp_url=False)
    other = rpki.person("other")
    crl = rpki.crl([(other.cert, NOW - DAY, None)])
    status = check_certificate(bob.cert, rpki.ca.cert,
                               options=opts(MemoryFetcher(crls={rpki.ca_crl_url: der(crl)})))
    assert (status.status, status.protocol, status.url) == ("good", "crl", rpki.ca_crl_url)


def test_stale_crl_is_not_used(rpki: RevPKI) -> None:
    bob = rpki.person("bob", ocsp_url=False)
    stale = rpki.crl(this_update=NOW - 3 * DAY, next_update=NOW - DAY)
    fetcher = MemoryFetcher(crls={rpki.ca_crl_url: der(stale)})
    soft = check_chain(rpki.chain(bob)[:2], options=opts(fetcher))
    assert soft.statuses[0].status == "unknown" and "stale" in soft.statuses[0].detail
    assert soft.ok and soft.warnings
    hard = check_chain(rpki.chain(bob)[:2], options=opts(fetcher, policy=RevocationPolicy.HARD))
    assert not hard.ok


def test_stale_crl_still_proves_a_revocation_but_not_a_hold(rpki: RevPKI) -> None:
    mallory = rpki.person("mallory", ocsp_url=False)
    held = rpki.person("held", ocsp_url=False)
    stale = rpki.crl([(mallory.cert, NOW - 5 * DAY, KEY_COMPROMISE),
                      (held.cert, NOW - 5 * DAY, x509.ReasonFlags.certificate_hold)],
                     this_update=NOW - 3 * DAY, next_update=NOW - DAY)
    options = opts(crls=[stale], policy=RevocationPolicy.OFFLINE)
    assert check_certificate(mallory.cert, rpki.ca.cert, options=options).status == "revoked"
    assert check_certificate(held.cert, rpki.ca.cert, options=options).status == "unknown"


def test_crl_signed_by_another_key_is_refused(rpki: RevPKI) -> None:
    bob = rpki.person("bob", ocsp_url=False)
    forged = rpki.crl(signing_key=issue("Forger", None).key)
    status = check_certificate(bob.cert, rpki.ca.cert,
                               options=opts(MemoryFetcher(crls={rpki.ca_crl_url: der(forged)})))
    assert status.status == "unknown" and "signature does not verify" in status.detail


def test_crl_of_another_issuer_does_not_answer(rpki: RevPKI) -> None:
    bob = rpki.person("bob", ocsp_url=False)
    root_crl = rpki.crl(issuer=rpki.root)
    status = check_certificate(bob.cert, rpki.ca.cert,
                               options=opts(MemoryFetcher(crls={rpki.ca_crl_url: der(root_crl)})))
    assert status.status == "unknown" and "not the certificate's issuer" in status.detail


def test_crl_with_unknown_critical_extension_is_refused(rpki: RevPKI) -> None:
    bob = rpki.person("bob", ocsp_url=False)
    odd = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00")
    crl = rpki.crl(extensions=[(odd, True)])
    status = check_certificate(bob.cert, rpki.ca.cert, options=opts(crls=[crl]))
    assert status.status == "unknown" and "unrecognised critical extension" in status.detail


def test_crl_scoped_to_ca_certificates_does_not_answer_for_people(rpki: RevPKI) -> None:
    bob = rpki.person("bob", ocsp_url=False)
    idp = x509.IssuingDistributionPoint(None, None, False, True, None, False, False)
    crl = rpki.crl(extensions=[(idp, True)])
    status = check_certificate(bob.cert, rpki.ca.cert, options=opts(crls=[crl]))
    assert status.status == "unknown" and "only CA certificates" in status.detail


def test_sha1_signed_crl_needs_allow_legacy(rpki: RevPKI) -> None:
    bob = rpki.person("bob", ocsp_url=False)
    crl = rpki.crl(hash_alg=hashes.SHA1())
    status = check_certificate(bob.cert, rpki.ca.cert, options=opts(crls=[crl]))
    assert status.status == "unknown" and "SHA1" in status.detail
    status = check_certificate(bob.cert, rpki.ca.cert, options=opts(crls=[crl],
                                                                     allow_legacy=True))
    assert status.status == "good"


def test_ldap_distribution_points_are_not_fetched(rpki: RevPKI) -> None:
    odd = issue("Ldap Person", rpki.ca, crl_url="ldap://ldap.test/cn=CA?certificateRevocationList")
    fetcher = MemoryFetcher()
    status = check_certificate(odd.cert, rpki.ca.cert, options=opts(fetcher))
    assert status.status == "unknown" and "LDAP is not fetched" in status.detail
    assert fetcher.calls == []


def test_expired_certificate_absent_from_a_later_crl_is_unknown(rpki: RevPKI) -> None:
    old = rpki.person("old", ocsp_url=False, not_before=NOW - 60 * DAY,
                      not_after=NOW - 10 * DAY)
    at = NOW - 20 * DAY  # an archived message, signed while the certificate was valid
    crl = rpki.crl()
    status = check_certificate(old.cert, rpki.ca.cert, at=at, options=opts(crls=[crl]))
    assert status.status == "unknown" and "expired before the CRL" in status.detail
    keeps = x509.UnrecognizedExtension(x509.ObjectIdentifier("2.5.29.60"),
                                       b"\x18\x0f20000101000000Z")
    crl = rpki.crl(extensions=[(keeps, False)])
    status = check_certificate(old.cert, rpki.ca.cert, at=at, options=opts(crls=[crl]))
    assert status.status == "good"


def test_local_garbage_crl_raises_malformed(rpki: RevPKI) -> None:
    bob = rpki.person("bob")
    with pytest.raises(MalformedError):
        check_chain(rpki.chain(bob), options=opts(crls=[b"not a CRL"]))
    with pytest.raises(MalformedError):
        check_chain(rpki.chain(bob), options=opts(ocsp_responses=[b"\x30\x03\x0a\x01\x00"]))


def test_pem_crl_is_read(rpki: RevPKI) -> None:
    mallory = rpki.person("mallory", ocsp_url=False)
    pem = rpki.crl([(mallory.cert, NOW - DAY, None)]).public_bytes(Encoding.PEM)
    status = check_certificate(mallory.cert, rpki.ca.cert,
                               options=opts(crls=[pem], policy=RevocationPolicy.OFFLINE))
    assert status.status == "revoked" and status.reason is None


# -- delta CRLs ------------------------------------------------------------------------------


def test_local_delta_crl_adds_a_revocation(rpki: RevPKI) -> None:
    mallory = rpki.person("mallory", ocsp_url=False)
    base = rpki.crl(number=10, this_update=NOW - 2 * DAY, next_update=NOW + 5 * DAY)
    delta = rpki.crl([(mallory.cert, NOW - HOUR, KEY_COMPROMISE)], number=11, delta_of=10)
    options = opts(crls=[base, delta], policy=RevocationPolicy.OFFLINE)
    status = check_certificate(mallory.cert, rpki.ca.cert, options=options)
    assert (status.status, status.reason) == ("revoked", "keyCompromise")
    assert "delta CRL 11 applied" in status.detail
    assert check_certificate(mallory.cert, rpki.ca.cert,
                             options=opts(crls=[base])).status == "good"


def test_fetched_delta_crl_from_freshest_crl(rpki: RevPKI) -> None:
    mallory = rpki.person("mallory", ocsp_url=False)
    delta_url = rpki.url("ca-delta.crl")
    base = rpki.crl(number=20, freshest_url=delta_url)
    delta = rpki.crl([(mallory.cert, NOW - HOUR, None)], number=21, delta_of=20)
    fetcher = MemoryFetcher(crls={rpki.ca_crl_url: der(base), delta_url: der(delta)})
    status = check_certificate(mallory.cert, rpki.ca.cert, options=opts(fetcher))
    assert status.status == "revoked"
    assert fetcher.calls == [("crl", rpki.ca_crl_url), ("crl", delta_url)]


def test_fresh_delta_carries_a_stale_base(rpki: RevPKI) -> None:
    bob = rpki.person("bob", ocsp_url=False)
    base = rpki.crl(number=5, this_update=NOW - 8 * DAY, next_update=NOW - DAY)
    delta = rpki.crl(number=9, delta_of=5)
    status = check_certificate(bob.cert, rpki.ca.cert, options=opts(crls=[base, delta]))
    assert status.status == "good" and status.next_update == NOW + DAY


def test_delta_remove_from_crl_releases_a_hold(rpki: RevPKI) -> None:
    held = rpki.person("held", ocsp_url=False)
    base = rpki.crl([(held.cert, NOW - DAY, x509.ReasonFlags.certificate_hold)], number=30)
    assert check_certificate(held.cert, rpki.ca.cert,
                             options=opts(crls=[base])).reason == "certificateHold"
    delta = rpki.crl([(held.cert, NOW - HOUR, x509.ReasonFlags.remove_from_crl)], number=31,
                     delta_of=30)
    assert check_certificate(held.cert, rpki.ca.cert,
                             options=opts(crls=[base, delta])).status == "good"


def test_delta_for_a_newer_base_is_not_applied(rpki: RevPKI) -> None:
    mallory = rpki.person("mallory", ocsp_url=False)
    base = rpki.crl(number=40)
    delta = rpki.crl([(mallory.cert, NOW - HOUR, None)], number=43, delta_of=42)
    status = check_certificate(mallory.cert, rpki.ca.cert, options=opts(crls=[base, delta]))
    assert status.status == "good" and "delta" not in status.detail


def test_a_delta_alone_is_no_answer(rpki: RevPKI) -> None:
    bob = rpki.person("bob", ocsp_url=False)
    delta = rpki.crl(number=51, delta_of=50)
    status = check_certificate(bob.cert, rpki.ca.cert,
                               options=opts(crls=[delta], policy=RevocationPolicy.OFFLINE))
    assert status.status == "unknown"


# -- the validation time ---------------------------------------------------------------------


def test_revoked_after_the_validation_time_counts_as_good_then(rpki: RevPKI) -> None:
    mallory = rpki.person("mallory", ocsp_url=False)
    revoked_at = NOW - DAY
    crl = rpki.crl([(mallory.cert, revoked_at, x509.ReasonFlags.superseded)])
    options = opts(crls=[crl], policy=RevocationPolicy.HARD)
    earlier = check_chain(rpki.chain(mallory)[:2], at=NOW - 2 * DAY, options=options)
    assert earlier.ok
    assert earlier.statuses[0].status == "good"
    assert earlier.statuses[0].revoked_at == revoked_at
    assert earlier.statuses[0].reason == "superseded"
    assert "after the validation time" in earlier.warnings[0]
    later = check_chain(rpki.chain(mallory)[:2], at=NOW, options=options)
    assert not later.ok and later.statuses[0].status == "revoked"


def test_ocsp_revoked_after_the_validation_time_counts_as_good_then(rpki: RevPKI) -> None:
    mallory = rpki.person("mallory", crl=False)
    response = rpki.ocsp_response(mallory.cert, REVOKED, revoked_at=NOW - HOUR,
                                  reason=KEY_COMPROMISE)
    report = check_chain(rpki.chain(mallory)[:2], at=NOW - 3 * HOUR,
                         options=opts(ocsp_responses=[response]))
    assert report.ok and report.statuses[0].status == "good"
    assert report.statuses[0].revoked_at == NOW - HOUR


@pytest.mark.parametrize(("reason", "counts"), [
    (x509.ReasonFlags.key_compromise, True),
    (None, True),
    (x509.ReasonFlags.unspecified, True),
    (x509.ReasonFlags.ca_compromise, True),
    (x509.ReasonFlags.superseded, False),
    (x509.ReasonFlags.cessation_of_operation, False),
])
def test_asserted_signing_time_cannot_outrun_a_key_compromise(
        rpki: RevPKI, reason: x509.ReasonFlags | None, counts: bool) -> None:
    # Whoever stole the key can write any signing-time: only a revocation that says the key
    # was safe may come after a claimed time.
    mallory = rpki.person("mallory", ocsp_url=False)
    crl = rpki.crl([(mallory.cert, NOW - DAY, reason)])
    report = check_chain(rpki.chain(mallory)[:2], at=NOW - 3 * DAY, asserted_time=True,
                         options=opts(crls=[crl]))
    assert report.statuses[0].status == ("revoked" if counts else "good")
    assert report.ok is not counts
    trusted = check_chain(rpki.chain(mallory)[:2], at=NOW - 3 * DAY, options=opts(crls=[crl]))
    assert trusted.ok


def test_invalidity_date_before_the_validation_time_counts(rpki: RevPKI) -> None:
    mallory = rpki.person("mallory", ocsp_url=False)
    crl = rpki.crl([(mallory.cert, NOW - DAY, KEY_COMPROMISE)],
                   invalidity={mallory.cert.serial_number: NOW - 10 * DAY})
    status = check_certificate(mallory.cert, rpki.ca.cert, at=NOW - 5 * DAY,
                               options=opts(crls=[crl]))
    assert status.status == "revoked"


def test_archive_check_uses_the_crl_current_at_the_validation_time(rpki: RevPKI) -> None:
    bob = rpki.person("bob", ocsp_url=False)
    then = rpki.crl(this_update=NOW - 10 * DAY, next_update=NOW - 3 * DAY)
    options = opts(crls=[then], policy=RevocationPolicy.OFFLINE)
    assert check_certificate(bob.cert, rpki.ca.cert, at=NOW - 5 * DAY,
                             options=options).status == "good"
    assert check_certificate(bob.cert, rpki.ca.cert, options=options).status == "unknown"


# -- policies --------------------------------------------------------------------------------


@pytest.mark.parametrize(("policy", "ok", "warned", "asked"), [
    (RevocationPolicy.HARD, False, False, True),
    (RevocationPolicy.SOFT, True, True, True),
    (RevocationPolicy.OFFLINE, True, True, False),
])
def test_responder_down_under_each_policy(rpki: RevPKI, policy: RevocationPolicy, ok: bool,
                                          warned: bool, asked: bool) -> None:
    bob = rpki.person("bob")
    fetcher = MemoryFetcher()  # every URL: connection refused
    report = check_chain(rpki.chain(bob)[:2], options=opts(fetcher, policy=policy))
    assert report.statuses[0].status == "unknown"
    assert report.ok is ok
    assert bool(report.warnings) is warned
    assert bool(fetcher.calls) is asked
    if asked:
        assert "connection refused" in report.statuses[0].detail
    else:
        assert "offline" in report.statuses[0].detail


def test_offline_uses_a_local_crl_and_never_the_network(rpki: RevPKI) -> None:
    mallory = rpki.person("mallory")
    fetcher = MemoryFetcher()
    crl = rpki.crl([(mallory.cert, NOW - DAY, KEY_COMPROMISE)])
    report = check_chain(rpki.chain(mallory),
                         options=opts(fetcher, crls=[crl, rpki.crl(issuer=rpki.root)],
                                      policy=RevocationPolicy.OFFLINE))
    assert [s.status for s in report.statuses] == ["revoked", "good"]
    assert report.statuses[0].detail == "supplied locally"
    assert fetcher.calls == []


def test_certificate_without_revocation_pointers(rpki: RevPKI) -> None:
    plain = rpki.person("plain", ocsp_url=False, crl=False)
    report = check_chain(rpki.chain(plain)[:2], options=opts())
    assert "names no OCSP responder and no CRL" in report.statuses[0].detail
    assert report.ok and report.warnings


def test_chain_of_one_has_nothing_to_check(rpki: RevPKI) -> None:
    report = check_chain([rpki.root.cert], options=opts(policy=RevocationPolicy.HARD))
    assert report.statuses == () and report.ok


def test_naive_validation_time_is_utc(rpki: RevPKI) -> None:
    bob = rpki.person("bob", ocsp_url=False)
    status = check_certificate(bob.cert, rpki.ca.cert, at=NOW.replace(tzinfo=None),
                               options=opts(crls=[rpki.crl()]))
    assert status.status == "good"


# -- disk cache ------------------------------------------------------------------------------


def test_cache_answers_the_second_check_without_the_network(rpki: RevPKI, tmp_path: Path) -> None:
    bob = rpki.person("bob")
    fetcher = MemoryFetcher(ocsp={rpki.ocsp_url: rpki.responder_for({bob.cert.serial_number:
                                                                     (GOOD, None)})},
                            crls=root_crls(rpki))
    cache = tmp_path / "cache"
    options = opts(fetcher, cache_dir=cache)
    first = check_chain(rpki.chain(bob), options=options)
    calls = len(fetcher.calls)
    assert [s.source for s in first.statuses] == ["ocsp", "crl"]
    second = check_chain(rpki.chain(bob), options=options)
    assert [s.source for s in second.statuses] == ["cache", "cache"]
    assert [s.protocol for s in second.statuses] == ["ocsp", "crl"]
    assert [s.status for s in second.statuses] == ["good", "good"]
    assert len(fetcher.calls) == calls
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    # offline, the cache is all there is
    offline = check_chain(rpki.chain(bob), options=opts(MemoryFetcher(), cache_dir=cache,
                                                        policy=RevocationPolicy.HARD))
    assert offline.ok


def test_stale_cache_entry_is_fetched_again(rpki: RevPKI, tmp_path: Path) -> None:
    bob = rpki.person("bob", ocsp_url=False)
    fetcher = MemoryFetcher(crls={rpki.ca_crl_url: der(rpki.crl(next_update=NOW - HOUR,
                                                                this_update=NOW - DAY))})
    options = opts(fetcher, cache_dir=tmp_path)
    assert check_certificate(bob.cert, rpki.ca.cert, options=options).status == "unknown"
    fetcher.crls[rpki.ca_crl_url] = der(rpki.crl())
    status = check_certificate(bob.cert, rpki.ca.cert, options=options)
    assert (status.status, status.source) == ("good", "crl")
    assert len(fetcher.calls) == 2


def test_ocsp_without_next_update_is_not_cached(rpki: RevPKI, tmp_path: Path) -> None:
    bob = rpki.person("bob", crl=False)
    fetcher = MemoryFetcher(ocsp={rpki.ocsp_url: rpki.responder_for(
        {bob.cert.serial_number: (GOOD, None)}, next_update=None)})
    options = opts(fetcher, cache_dir=tmp_path)
    for _ in range(2):
        assert check_certificate(bob.cert, rpki.ca.cert, options=options).source == "ocsp"
    assert len(fetcher.calls) == 2


def test_tampered_cache_entry_is_ignored(rpki: RevPKI, tmp_path: Path) -> None:
    bob = rpki.person("bob", ocsp_url=False)
    fetcher = MemoryFetcher(crls={rpki.ca_crl_url: der(rpki.crl())})
    options = opts(fetcher, cache_dir=tmp_path)
    check_certificate(bob.cert, rpki.ca.cert, options=options)
    (entry,) = tmp_path.glob("*.der")
    entry.write_bytes(der(rpki.crl(signing_key=issue("Forger", None).key)))
    status = check_certificate(bob.cert, rpki.ca.cert, options=options)
    assert (status.status, status.source) == ("good", "crl")  # fetched again
    assert len(fetcher.calls) == 2


def test_unwritable_cache_costs_only_a_fetch(rpki: RevPKI, tmp_path: Path) -> None:
    bob = rpki.person("bob", ocsp_url=False)
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    fetcher = MemoryFetcher(crls={rpki.ca_crl_url: der(rpki.crl())})
    status = check_certificate(bob.cert, rpki.ca.cert,
                               options=opts(fetcher, cache_dir=blocker / "cache"))
    assert status.status == "good"


def test_status_serialises_in_the_verdict_json(rpki: RevPKI) -> None:
    mallory = rpki.person("mallory", ocsp_url=False)
    status = check_certificate(mallory.cert, rpki.ca.cert,
                               options=opts(crls=[rpki.crl([(mallory.cert, NOW - DAY, None)])]))
    text = json.dumps(asdict(status), default=_json_default)
    assert '"status": "revoked"' in text and '"revoked_at": "' in text


def test_options_are_immutable_and_hashable_sequences() -> None:
    options = RevocationOptions(crls=[b"x"], ocsp_responses=[b"y"])
    assert options.crls == (b"x",) and options.ocsp_responses == (b"y",)
    with pytest.raises(AttributeError):
        options.policy = RevocationPolicy.HARD  # type: ignore[misc]


@pytest.mark.parametrize("cut", [1, 10, 100, -1])
def test_truncated_answers_from_the_network_are_no_answer(rpki: RevPKI, cut: int) -> None:
    bob = rpki.person("bob")
    crl = der(rpki.crl())
    response = rpki.ocsp_response(bob.cert)
    fetcher = MemoryFetcher(crls={rpki.ca_crl_url: crl[:cut]},
                            ocsp={rpki.ocsp_url: response[:cut]})
    status = check_certificate(bob.cert, rpki.ca.cert, options=opts(fetcher))
    assert status.status == "unknown"
    assert "not a CRL" in status.detail and "OCSP response" in status.detail
