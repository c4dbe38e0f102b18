"""Our OCSP responder: the delegated responder certificate and every kind of answer.

Answers are read back with ``cryptography`` and with smimekit's own client-side checks
(:func:`smimekit.validation.ocsp.evaluate_ocsp`), which verify the delegation.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from asn1crypto import ocsp as asn1_ocsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

sys.path.insert(0, str(Path(__file__).parents[1] / "revocation"))

from backends import Backend
from revpki import Party, issue

from smimekit.ca.ocsp import (
    CertStatus,
    OCSPResponder,
    build_responder_certificate,
    store_lookup,
)
from smimekit.errors import CAError
from smimekit.keys.signer import LocalSigner
from smimekit.store.db import IssuedStatus
from smimekit.validation.ocsp import evaluate_ocsp
from smimekit.validation.revinfo import Context

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
HOUR = dt.timedelta(hours=1)
REVOKED_AT = NOW - 3 * HOUR
Status = ocsp.OCSPCertStatus


class TokenLike:
    """A Signer that is not a LocalSigner: sign_builder's PKCS#11 path."""

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self._inner = LocalSigner(key)

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._inner.key.public_key()  # type: ignore[return-value]

    def sign(self, data: bytes) -> bytes:
        return self._inner.sign(data)


@dataclasses.dataclass
class World:
    root: Party
    ca: Party
    good: Party
    revoked: Party
    stranger: Party
    """Issued by the CA, but the lookup does not know it."""
    other_ca: Party
    foreign: Party
    """Issued by another CA."""
    responder_key: ec.EllipticCurvePrivateKey
    responder_cert: x509.Certificate

    def lookup(self, serial: int) -> CertStatus:
        if serial == self.good.cert.serial_number:
            return CertStatus.good()
        if serial == self.revoked.cert.serial_number:
            return CertStatus.revoked(REVOKED_AT, x509.ReasonFlags.key_compromise)
        return CertStatus.unknown()

    def responder(self, lookup: Callable[[int], CertStatus] | None = None,
                  **kw: object) -> OCSPResponder:
        return OCSPResponder(self.ca.cert, self.responder_cert, self.responder_key,
                             lookup or self.lookup, clock=lambda: NOW, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def world() -> World:
    root = issue("OCSP Root", None, ca=True)
    ca = issue("OCSP Issuing CA", root, ca=True)
    other_ca = issue("Other CA", root, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = build_responder_certificate(ca.cert, LocalSigner(ca.key), key.public_key(),
                                       now=NOW - HOUR)
    return World(root, ca, issue("good", ca), issue("revoked", ca), issue("stranger", ca),
                 other_ca, issue("foreign", other_ca), key, cert)


def request(cert: x509.Certificate, issuer: x509.Certificate, *,
            algorithm: hashes.HashAlgorithm | None = None, nonce: bytes | None = None) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer,
                                                        algorithm or hashes.SHA256())
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def ask(responder: OCSPResponder, cert: x509.Certificate, issuer: x509.Certificate,
        **kw: object) -> ocsp.OCSPResponse:
    return ocsp.load_der_ocsp_response(responder.respond(request(cert, issuer, **kw)))  # type: ignore[arg-type]


def context() -> Context:
    now = dt.datetime.now(dt.UTC)
    return Context(at=now, now=now)


# -- the responder's certificate ----------------------------------------------------------


@pytest.mark.parametrize("token", [False, True])
def test_responder_certificate_is_a_delegated_ocsp_signer(world: World, token: bool) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    signer = TokenLike(world.ca.key) if token else LocalSigner(world.ca.key)
    cert = build_responder_certificate(world.ca.cert, signer, key.public_key(), now=NOW,
                                       validity=dt.timedelta(days=30))
    cert.verify_directly_issued_by(world.ca.cert)
    ext = cert.extensions
    eku = ext.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.OCSP_SIGNING]
    ku = ext.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    assert ext.get_extension_for_class(x509.OCSPNoCheck)
    assert ext.get_extension_for_class(x509.BasicConstraints).value.ca is False
    ca_ski = world.ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest
    assert ext.get_extension_for_class(x509.SubjectKeyIdentifier).value == (
        x509.SubjectKeyIdentifier.from_public_key(key.public_key()))
    assert cert.subject.rfc4514_string().startswith("CN=OCSP Issuing CA OCSP Responder")
    assert cert.not_valid_before_utc == NOW
    assert cert.not_valid_after_utc == NOW + dt.timedelta(days=30, seconds=-1)


def test_responder_certificate_needs_the_issuers_key(world: World) -> None:
    with pytest.raises(CAError, match="not the key of the issuer"):
        build_responder_certificate(world.ca.cert, LocalSigner(world.other_ca.key),
                                    world.responder_key.public_key(), now=NOW)
    with pytest.raises(CAError, match="positive"):
        build_responder_certificate(world.ca.cert, LocalSigner(world.ca.key),
                                    world.responder_key.public_key(), now=NOW,
                                    validity=dt.timedelta(0))


def test_responder_refuses_an_unfit_setup(world: World) -> None:
    key = world.responder_key
    with pytest.raises(CAError, match="8 hours to 10 days"):
        world.responder(validity=dt.timedelta(hours=7))
    with pytest.raises(CAError, match="8 hours to 10 days"):
        world.responder(validity=dt.timedelta(days=10, seconds=1))
    no_eku = issue("not a responder", world.ca)
    with pytest.raises(CAError, match="OCSPSigning"):
        OCSPResponder(world.ca.cert, no_eku.cert, no_eku.key, world.lookup)
    elsewhere = build_responder_certificate(world.other_ca.cert, LocalSigner(world.other_ca.key),
                                            key.public_key(), now=NOW)
    with pytest.raises(CAError, match="not issued by the CA"):
        OCSPResponder(world.ca.cert, elsewhere, key, world.lookup)
    with pytest.raises(CAError, match="not the key of the responder"):
        OCSPResponder(world.ca.cert, world.responder_cert, ec.generate_private_key(
            ec.SECP256R1()), world.lookup)


# -- answers ------------------------------------------------------------------------------


def test_good_revoked_and_unknown(world: World) -> None:
    responder = world.responder()
    good = ask(responder, world.good.cert, world.ca.cert)
    revoked = ask(responder, world.revoked.cert, world.ca.cert)
    unknown = ask(responder, world.stranger.cert, world.ca.cert)
    for response in (good, revoked, unknown):
        assert response.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
        assert response.this_update_utc == NOW
        assert response.next_update_utc == NOW + dt.timedelta(hours=12)
        assert response.responder_key_hash == x509.SubjectKeyIdentifier.from_public_key(
            world.responder_key.public_key()).digest
        assert response.certificates == [world.responder_cert]
        assert world.responder_key.public_key().verify(
            response.signature, response.tbs_response_bytes, ec.ECDSA(hashes.SHA256())) is None
    assert good.certificate_status == Status.GOOD
    assert revoked.certificate_status == Status.REVOKED
    assert revoked.revocation_time_utc == REVOKED_AT
    assert revoked.revocation_reason is x509.ReasonFlags.key_compromise
    assert unknown.certificate_status == Status.UNKNOWN
    assert good.serial_number == world.good.cert.serial_number


def test_answers_pass_the_validation_layers_checks(world: World) -> None:
    responder = world.responder(validity=dt.timedelta(days=1))
    expected = {"good": world.good, "revoked": world.revoked, "unknown": world.stranger}
    for status, party in expected.items():
        nonce = b"n" * 16
        data = responder.respond(request(party.cert, world.ca.cert, nonce=nonce))
        answer = evaluate_ocsp(data, party.cert, world.ca.cert, context(), nonce=nonce)
        assert answer.status == status
        assert answer.fresh
    answer = evaluate_ocsp(responder.respond(request(world.revoked.cert, world.ca.cert)),
                           world.revoked.cert, world.ca.cert, context())
    assert answer.reason == "keyCompromise" and answer.revoked_at == REVOKED_AT


@pytest.mark.parametrize("algorithm", [hashes.SHA1(), hashes.SHA224(), hashes.SHA256(),
                                       hashes.SHA384(), hashes.SHA512()])
def test_cert_id_in_any_hash_is_answered_in_kind(world: World,
                                                 algorithm: hashes.HashAlgorithm) -> None:
    sent = ocsp.load_der_ocsp_request(request(world.good.cert, world.ca.cert,
                                              algorithm=algorithm))
    response = ask(world.responder(), world.good.cert, world.ca.cert, algorithm=algorithm)
    assert response.certificate_status == Status.GOOD
    assert response.hash_algorithm.name == algorithm.name
    assert (response.issuer_name_hash, response.issuer_key_hash) == (
        sent.issuer_name_hash, sent.issuer_key_hash)


@pytest.mark.parametrize("size", [1, 16, 32])
def test_nonce_is_echoed(world: World, size: int) -> None:
    nonce = bytes(range(size))
    response = ask(world.responder(), world.good.cert, world.ca.cert, nonce=nonce)
    assert response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == nonce


def test_no_nonce_no_echo(world: World) -> None:
    response = ask(world.responder(), world.good.cert, world.ca.cert)
    assert len(response.extensions) == 0


def request_with_raw_nonce(world: World, nonce: bytes) -> bytes:
    # cryptography refuses to write over-long or empty nonces; asn1crypto does not.
    cid = ocsp.load_der_ocsp_request(request(world.good.cert, world.ca.cert))
    return asn1_ocsp.OCSPRequest({"tbs_request": {
        "request_list": [{"req_cert": {
            "hash_algorithm": {"algorithm": "sha256"},
            "issuer_name_hash": cid.issuer_name_hash, "issuer_key_hash": cid.issuer_key_hash,
            "serial_number": cid.serial_number}}],
        "request_extensions": [{"extn_id": "nonce", "extn_value": nonce}],
    }}).dump()


@pytest.mark.parametrize("size", [0, 33, 128])
def test_nonce_outside_1_to_32_bytes_is_malformed(world: World, size: int) -> None:
    response = ocsp.load_der_ocsp_response(
        world.responder().respond(request_with_raw_nonce(world, b"x" * size)))
    assert response.response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST


@pytest.mark.parametrize("data", [
    b"", b"\x00", b"garbage", b"\x30\x03\x02\x01\x01", b"\x30\x80\x00\x00", b"\x30" * 64,
    b"\x30\x82\xff\xff" + b"\x00" * 10,
])
def test_malformed_request_gets_malformed_request(world: World, data: bytes) -> None:
    response = ocsp.load_der_ocsp_response(world.responder().respond(data))
    assert response.response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_truncated_and_trailing_requests_are_malformed(world: World) -> None:
    good = request(world.good.cert, world.ca.cert)
    for data in (good[:-1], good + b"\x00", good[:10]):
        response = ocsp.load_der_ocsp_response(world.responder().respond(data))
        assert response.response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_unknown_critical_request_extension_is_malformed(world: World) -> None:
    cid = ocsp.load_der_ocsp_request(request(world.good.cert, world.ca.cert))
    data = asn1_ocsp.OCSPRequest({"tbs_request": {
        "request_list": [{"req_cert": {
            "hash_algorithm": {"algorithm": "sha256"},
            "issuer_name_hash": cid.issuer_name_hash, "issuer_key_hash": cid.issuer_key_hash,
            "serial_number": cid.serial_number}}],
        "request_extensions": [{"extn_id": "1.2.3.4", "critical": True,
                                "extn_value": b"\x05\x00"}],
    }}).dump()
    response = ocsp.load_der_ocsp_response(world.responder().respond(data))
    assert response.response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_wrong_issuer_is_unauthorized(world: World) -> None:
    response = ask(world.responder(), world.foreign.cert, world.other_ca.cert)
    assert response.response_status == ocsp.OCSPResponseStatus.UNAUTHORIZED
    # Our serial, but named under the other CA: still not ours.
    response = ask(world.responder(), world.good.cert, world.other_ca.cert)
    assert response.response_status == ocsp.OCSPResponseStatus.UNAUTHORIZED


def test_unsupported_cert_id_hash_is_unauthorized(world: World) -> None:
    data = asn1_ocsp.OCSPRequest({"tbs_request": {"request_list": [{"req_cert": {
        "hash_algorithm": {"algorithm": "md5"}, "issuer_name_hash": b"a" * 16,
        "issuer_key_hash": b"b" * 16, "serial_number": world.good.cert.serial_number}}]}}).dump()
    response = ocsp.load_der_ocsp_response(world.responder().respond(data))
    assert response.response_status == ocsp.OCSPResponseStatus.UNAUTHORIZED


def test_several_cert_ids_answer_the_first_of_ours(world: World) -> None:
    def cert_id(cert: x509.Certificate, issuer: x509.Certificate) -> dict[str, object]:
        r = ocsp.load_der_ocsp_request(request(cert, issuer))
        return {"hash_algorithm": {"algorithm": "sha256"}, "issuer_name_hash": r.issuer_name_hash,
                "issuer_key_hash": r.issuer_key_hash, "serial_number": r.serial_number}

    data = asn1_ocsp.OCSPRequest({"tbs_request": {"request_list": [
        {"req_cert": cert_id(world.foreign.cert, world.other_ca.cert)},
        {"req_cert": cert_id(world.revoked.cert, world.ca.cert)},
        {"req_cert": cert_id(world.good.cert, world.ca.cert)},
    ]}}).dump()
    response = ocsp.load_der_ocsp_response(world.responder().respond(data))
    assert response.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert response.serial_number == world.revoked.cert.serial_number
    assert response.certificate_status == Status.REVOKED


def test_failing_lookup_is_try_later(world: World) -> None:
    def broken(serial: int) -> CertStatus:
        raise RuntimeError("database unreachable")

    response = ask(world.responder(broken), world.good.cert, world.ca.cert)
    assert response.response_status == ocsp.OCSPResponseStatus.TRY_LATER


def test_lookup_returning_nonsense_is_internal_error(world: World) -> None:
    response = ask(world.responder(lambda serial: "good"),  # type: ignore[arg-type,return-value]
                   world.good.cert, world.ca.cert)
    assert response.response_status == ocsp.OCSPResponseStatus.INTERNAL_ERROR


def test_unspecified_reason_is_left_out(world: World) -> None:
    responder = world.responder(
        lambda serial: CertStatus.revoked(REVOKED_AT, x509.ReasonFlags.unspecified))
    response = ask(responder, world.revoked.cert, world.ca.cert)
    assert response.certificate_status == Status.REVOKED
    assert response.revocation_reason is None


def test_expired_responder_certificate_is_internal_error(world: World) -> None:
    late = NOW + dt.timedelta(days=91)
    responder = OCSPResponder(world.ca.cert, world.responder_cert, world.responder_key,
                              world.lookup, clock=lambda: late)
    response = ask(responder, world.good.cert, world.ca.cert)
    assert response.response_status == ocsp.OCSPResponseStatus.INTERNAL_ERROR


def test_certificate_status_is_checked() -> None:
    assert CertStatus.good().status == "good"
    with pytest.raises(CAError):
        CertStatus("revoked")
    with pytest.raises(CAError):
        CertStatus.revoked(NOW.replace(tzinfo=None))
    with pytest.raises(CAError):
        CertStatus("good", NOW)
    with pytest.raises(CAError, match="not offered"):
        CertStatus.revoked(NOW, x509.ReasonFlags.certificate_hold)
    with pytest.raises(CAError):
        CertStatus("maybe")  # type: ignore[arg-type]


def test_store_lookup_maps_issuance_records(world: World) -> None:
    def record(serial: int, revoked_at: dt.datetime | None, reason: str | None) -> IssuedStatus:
        return IssuedStatus(revoked_at=revoked_at, reason=reason)

    records = {
        "a": record(0xA, None, None),
        "b": record(0xB, REVOKED_AT, "superseded"),
        "c": record(0xC, REVOKED_AT, None),
        "d": record(0xD, REVOKED_AT, "certificateHold"),
    }
    asked: list[tuple[str, str]] = []

    class Store:
        def issued_status(self, *, serial: str, issuer_fingerprint: str) -> IssuedStatus | None:
            asked.append((serial, issuer_fingerprint))
            return records.get(serial) if issuer_fingerprint == "ca" else None

    lookup = store_lookup(Store(), "ca")
    assert lookup(0xA) == CertStatus.good()
    assert lookup(0xB) == CertStatus.revoked(REVOKED_AT, x509.ReasonFlags.superseded)
    assert lookup(0xC) == CertStatus.revoked(REVOKED_AT)
    assert lookup(0xD) == CertStatus.revoked(REVOKED_AT)  # an unknown reason is left out
    assert lookup(0xE) == CertStatus.unknown()
    assert lookup(0) == CertStatus.unknown() and lookup(-3) == CertStatus.unknown()
    assert asked[0] == ("a", "ca")
    assert store_lookup(Store(), "other")(0xA) == CertStatus.unknown()


def test_response_passes_pkilint(world: World, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    from pkilint.bin import lint_ocsp_response

    path = tmp_path / "response.der"
    path.write_bytes(world.responder().respond(request(world.revoked.cert, world.ca.cert,
                                                       nonce=b"n" * 16)))
    assert lint_ocsp_response.main(["lint", "-s", "NOTICE", str(path)]) == 0, (
        capsys.readouterr().out)


# -- pre-produced answers (RFC 5019): the cache of signed answers ---------------------------


class Clock:
    def __init__(self, at: dt.datetime) -> None:
        self.at = at

    def __call__(self) -> dt.datetime:
        return self.at


class Statuses:
    """A lookup whose answers the test changes, counting its calls."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.calls = 0
        self.revoked: set[int] = set()

    def __call__(self, serial: int) -> CertStatus:
        self.calls += 1
        if serial in self.revoked:
            return CertStatus.revoked(REVOKED_AT, x509.ReasonFlags.key_compromise)
        return self.world.lookup(serial)


def test_a_nonce_less_answer_is_reused_while_young_and_unchanged(world: World) -> None:
    statuses = Statuses(world)
    responder = world.responder(statuses)
    first = responder.respond(request(world.good.cert, world.ca.cert))
    again = responder.respond(request(world.good.cert, world.ca.cert))
    assert again == first
    assert (responder.signed, responder.reused) == (1, 1)
    assert statuses.calls == 2  # the status is read on every request all the same
    answer = ocsp.load_der_ocsp_response(again)
    assert answer.certificate_status == Status.GOOD
    assert answer.this_update_utc == NOW and answer.produced_at_utc <= dt.datetime.now(dt.UTC)
    assert answer.next_update_utc == NOW + responder.validity


def test_a_revocation_is_answered_at_once_with_the_cache_on(world: World) -> None:
    statuses = Statuses(world)
    responder = world.responder(statuses)
    assert ask(responder, world.good.cert, world.ca.cert).certificate_status == Status.GOOD
    assert ask(responder, world.good.cert, world.ca.cert).certificate_status == Status.GOOD
    assert responder.reused == 1
    statuses.revoked.add(world.good.cert.serial_number)
    revoked = ask(responder, world.good.cert, world.ca.cert)
    assert revoked.certificate_status == Status.REVOKED
    assert revoked.revocation_reason == x509.ReasonFlags.key_compromise
    assert responder.signed == 2
    # and the revoked answer is the one kept from then on
    assert ask(responder, world.good.cert, world.ca.cert).certificate_status == Status.REVOKED
    assert responder.reused == 2


def test_an_answer_older_than_reuse_for_is_signed_again(world: World) -> None:
    clock = Clock(NOW)
    responder = OCSPResponder(world.ca.cert, world.responder_cert, world.responder_key,
                              world.lookup, clock=clock, reuse_for=dt.timedelta(minutes=5))
    first = ask(responder, world.good.cert, world.ca.cert)
    clock.at = NOW + dt.timedelta(minutes=4, seconds=59)
    assert ask(responder, world.good.cert, world.ca.cert).this_update_utc == NOW
    clock.at = NOW + dt.timedelta(minutes=5)
    later = ask(responder, world.good.cert, world.ca.cert)
    assert later.this_update_utc == clock.at != first.this_update_utc
    assert later.next_update_utc == clock.at + responder.validity
    assert (responder.signed, responder.reused) == (2, 1)
    clock.at = NOW  # a clock set back never hands out an answer from its future
    assert ask(responder, world.good.cert, world.ca.cert).this_update_utc == NOW
    assert responder.signed == 3


def test_requests_with_a_nonce_are_always_signed_afresh(world: World) -> None:
    responder = world.responder()
    ask(responder, world.good.cert, world.ca.cert)
    for nonce in (b"a" * 16, b"b" * 16, b"a" * 16):
        answer = ask(responder, world.good.cert, world.ca.cert, nonce=nonce)
        assert answer.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == nonce
    assert (responder.signed, responder.reused) == (4, 0)
    # a nonce answer is not kept for nonce-less requests either
    plain = ask(responder, world.good.cert, world.ca.cert)
    with pytest.raises(x509.ExtensionNotFound):
        plain.extensions.get_extension_for_class(x509.OCSPNonce)
    assert responder.reused == 1


def test_each_cert_id_hash_has_its_own_answer(world: World) -> None:
    responder = world.responder()
    for algorithm in (hashes.SHA1(), hashes.SHA256(), hashes.SHA1()):
        answer = ask(responder, world.good.cert, world.ca.cert, algorithm=algorithm)
        assert answer.hash_algorithm.name == algorithm.name
    assert (responder.signed, responder.reused) == (2, 1)


def test_the_cache_is_bounded_least_recently_used_first(world: World) -> None:
    responder = world.responder(cache_size=2)
    good, revoked, stranger = world.good.cert, world.revoked.cert, world.stranger.cert
    for cert in (good, revoked, good, stranger):  # stranger pushes out revoked, not good
        ask(responder, cert, world.ca.cert)
    assert (responder.signed, responder.reused) == (3, 1)
    ask(responder, good, world.ca.cert)
    assert responder.reused == 2
    ask(responder, revoked, world.ca.cert)
    assert responder.signed == 4
    assert len(responder._answers) == 2 and len(responder._requests) == 2


def test_cache_off_signs_every_answer(world: World) -> None:
    for kw in ({"cache_size": 0}, {"reuse_for": dt.timedelta(0)}):
        responder = world.responder(**kw)
        assert ask(responder, world.good.cert, world.ca.cert).this_update_utc == NOW
        ask(responder, world.good.cert, world.ca.cert)
        assert (responder.signed, responder.reused) == (2, 0)


def test_reuse_is_bounded_by_half_the_validity(world: World) -> None:
    with pytest.raises(CAError, match="half"):
        world.responder(validity=dt.timedelta(hours=8), reuse_for=dt.timedelta(hours=5))
    with pytest.raises(CAError, match="half"):
        world.responder(reuse_for=dt.timedelta(seconds=-1))
    with pytest.raises(CAError, match="negative"):
        world.responder(cache_size=-1)
    assert world.responder(validity=dt.timedelta(hours=8),
                           reuse_for=dt.timedelta(hours=4)).reuse_for == dt.timedelta(hours=4)


def test_a_failing_lookup_is_try_later_even_with_an_answer_kept(world: World) -> None:
    statuses = Statuses(world)
    responder = world.responder(statuses)
    ask(responder, world.good.cert, world.ca.cert)
    world_lookup = statuses.world

    class Broken:
        def lookup(self, serial: int) -> CertStatus:
            raise RuntimeError("database unreachable")

    statuses.world = Broken()  # type: ignore[assignment]
    response = ask(responder, world.good.cert, world.ca.cert)
    assert response.response_status == ocsp.OCSPResponseStatus.TRY_LATER
    statuses.world = world_lookup
    assert ask(responder, world.good.cert, world.ca.cert).certificate_status == Status.GOOD


def test_bad_requests_are_not_remembered(world: World) -> None:
    responder = world.responder()
    for _ in range(2):
        assert ocsp.load_der_ocsp_response(responder.respond(b"\x30\x00")).response_status \
            == ocsp.OCSPResponseStatus.MALFORMED_REQUEST
        foreign = ask(responder, world.foreign.cert, world.other_ca.cert)
        assert foreign.response_status == ocsp.OCSPResponseStatus.UNAUTHORIZED
    assert not responder._requests and not responder._answers


def test_every_node_answers_revoked_right_after_a_revocation(backend: Backend) -> None:
    """Two stores on one database, as two serving nodes and the CA: the node with the cache
    on answers good, the CA revokes, and the node's next answer is revoked."""
    from smimekit.ca.home import CAConfig, CAHome
    from smimekit.ca.issuance import CertificateAuthority, SubscriberKeyType
    from smimekit.store import Store

    passphrase = b"correct horse battery staple"
    home = CAHome(backend.data_dir)
    home.create(CAConfig(organization="Example Ltd", base_url="http://pki.example.com",
                         key_type="p256"), passphrase)
    ca_store = Store.open(backend.url, backend.data_dir)
    node_store = Store.open(backend.url, backend.data_dir)
    try:
        cax = CertificateAuthority(home.unlock(passphrase), ca_store, actor="test")
        cert = cax.issue_generated("ann@example.com", purpose="sign",
                                   sign_key=SubscriberKeyType.P256, lint=False).items[0].cert
        signer = home.open_ocsp_signer(passphrase)
        node = OCSPResponder(signer.issuing, signer.cert, signer.key,
                             store_lookup(node_store, cax.issuer_fingerprint))
        issuing = cax.ca.authority.cert
        for _ in range(3):
            assert ask(node, cert, issuing).certificate_status == Status.GOOD
        assert node.reused == 2
        cax.revoke(serial=format(cert.serial_number, "x"), reason="keyCompromise")
        answer = ask(node, cert, issuing)
        assert answer.certificate_status == Status.REVOKED
        assert answer.revocation_reason == x509.ReasonFlags.key_compromise
        # the store's side: issued_status, as the lookup reads it
        serial, fp = format(cert.serial_number, "x"), cax.issuer_fingerprint
        status = node_store.issued_status(serial=serial.upper(), issuer_fingerprint=fp)
        assert status is not None and status.reason == "key-compromise"
        assert status.revoked_at is not None and status.revoked_at.tzinfo is not None
        assert abs(status.revoked_at - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=5)
        assert node_store.issued_status(serial="1234", issuer_fingerprint=fp) is None
        assert node_store.issued_status(serial=serial, issuer_fingerprint="0" * 64) is None
        with node_store.read():  # inside a read block it joins that transaction
            assert node_store.issued_status(serial=serial, issuer_fingerprint=fp) == status
    finally:
        node_store.close()
        ca_store.close()


def test_the_cache_holds_under_concurrent_requests(world: World) -> None:
    """Threads asking at once (as ca serve's do), some with nonces, with the status flipping
    meanwhile: every answer is successful and states what the lookup said for it."""
    import threading

    statuses = Statuses(world)
    responder = world.responder(statuses, cache_size=2)
    certs = (world.good.cert, world.revoked.cert, world.stranger.cert)
    wrong: list[str] = []

    def worker(n: int) -> None:
        for i in range(40):
            cert = certs[(n + i) % 3]
            nonce = bytes([n + 1]) * 8 if i % 5 == 0 else None
            answer = ask(responder, cert, world.ca.cert, nonce=nonce)
            if answer.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL \
                    or answer.serial_number != cert.serial_number:
                wrong.append(f"{n}/{i}")

    flipper_done = threading.Event()

    def flipper() -> None:
        for _ in range(50):
            statuses.revoked ^= {world.good.cert.serial_number}
        flipper_done.set()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    threads.append(threading.Thread(target=flipper))
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert flipper_done.is_set() and not wrong
    assert responder.signed + responder.reused == 6 * 40
    assert len(responder._answers) <= 2 and len(responder._requests) <= 2
