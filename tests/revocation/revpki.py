"""A test PKI that publishes revocation: certificates naming CRL and OCSP URLs, CRL and OCSP
response builders, a loopback HTTP server for CRLs and an ``openssl ocsp`` responder.

Declared once here; the tests pick end entities by what they need (OCSP only, CRL only, both).
Keys are P-256 (generation is instant); every certificate is made in the test run.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)


def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "smimekit revocation tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass(frozen=True)
class Party:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    def pem_cert(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def pem_key(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())


def _uri(url: str) -> x509.UniformResourceIdentifier:
    return x509.UniformResourceIdentifier(url)


def issue(subject: str, issuer: Party | None, *, ca: bool = False,
          ocsp_url: str | None = None, crl_url: str | None = None,
          freshest_url: str | None = None, ca_issuers: str | None = None,
          eku: Sequence[x509.ObjectIdentifier] | None = (ExtendedKeyUsageOID.EMAIL_PROTECTION,),
          not_before: dt.datetime | None = None, not_after: dt.datetime | None = None,
          signing_key: ec.EllipticCurvePrivateKey | None = None,
          hash_alg: hashes.HashAlgorithm | None = None) -> Party:
    """A certificate for ``subject`` issued by ``issuer`` (self-signed when None)."""
    k = key()
    issuer_name = issuer.cert.subject if issuer else name(subject)
    b = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(issuer_name)
         .public_key(k.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(not_before or NOW - 30 * DAY)
         .not_valid_after(not_after or NOW + 365 * DAY)
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(k.public_key()), False))
    if ca:
        b = b.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                          False), critical=True)
    else:
        b = b.add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False,
                                          False), critical=True)
        if eku is not None:
            b = b.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
        b = b.add_extension(x509.SubjectAlternativeName([x509.RFC822Name(
            f"{subject.lower().replace(' ', '-')}@example.org")]), False)
    access = []
    if ocsp_url:
        access.append(x509.AccessDescription(AuthorityInformationAccessOID.OCSP, _uri(ocsp_url)))
    if ca_issuers:
        access.append(x509.AccessDescription(AuthorityInformationAccessOID.CA_ISSUERS,
                                             _uri(ca_issuers)))
    if access:
        b = b.add_extension(x509.AuthorityInformationAccess(access), False)
    if crl_url:
        b = b.add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
            [_uri(crl_url)], None, None, None)]), False)
    if freshest_url:
        b = b.add_extension(x509.FreshestCRL([x509.DistributionPoint(
            [_uri(freshest_url)], None, None, None)]), False)
    signer = signing_key or (issuer.key if issuer else k)
    return Party(k, b.sign(signer, hash_alg or hashes.SHA256()))


@dataclass
class RevPKI:
    """Root -> issuing CA -> end entities, all pointing at ``http_base`` and ``ocsp_url``."""

    http_base: str = "http://pki.test"
    ocsp_url: str = "http://ocsp.test/"

    def __post_init__(self) -> None:
        self.root = issue("Rev Root", None, ca=True)
        self.ca = issue("Rev Issuing CA", self.root, ca=True, crl_url=self.url("root.crl"))

    def url(self, path: str) -> str:
        return f"{self.http_base}/{path}"

    @property
    def ca_crl_url(self) -> str:
        return self.url("ca.crl")

    def person(self, who: str, *, ocsp_url: bool = True, crl: bool = True,
               freshest: bool = False, issuer: Party | None = None, **kw: object) -> Party:
        """An end entity issued by the CA, naming its OCSP responder and/or CRL."""
        return issue(who, issuer or self.ca,
                     ocsp_url=self.ocsp_url if ocsp_url else None,
                     crl_url=self.ca_crl_url if crl else None,
                     freshest_url=self.url("ca-delta.crl") if freshest else None,
                     ca_issuers=self.url("ca.crt"), **kw)  # type: ignore[arg-type]

    @cached_property
    def responder(self) -> Party:
        """A delegated OCSP responder: issued by the CA with id-kp-OCSPSigning."""
        return issue("Rev OCSP Responder", self.ca, eku=[ExtendedKeyUsageOID.OCSP_SIGNING],
                     not_before=NOW - DAY, not_after=NOW + 30 * DAY)

    @cached_property
    def rogue_responder(self) -> Party:
        """Issued by the CA, but without id-kp-OCSPSigning: may not answer for the CA."""
        return issue("Rev Rogue Responder", self.ca, eku=[ExtendedKeyUsageOID.EMAIL_PROTECTION])

    def chain(self, party: Party) -> list[x509.Certificate]:
        return [party.cert, self.ca.cert, self.root.cert]

    # -- CRLs --------------------------------------------------------------------------

    def crl(self, revoked: Iterable[tuple[x509.Certificate, dt.datetime, x509.ReasonFlags | None]]
            = (), *, issuer: Party | None = None, this_update: dt.datetime | None = None,
            next_update: dt.datetime | None = NOW + DAY, number: int = 1,
            delta_of: int | None = None, freshest_url: str | None = None,
            extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
            signing_key: ec.EllipticCurvePrivateKey | None = None,
            hash_alg: hashes.HashAlgorithm | None = None,
            invalidity: dict[int, dt.datetime] | None = None) -> x509.CertificateRevocationList:
        issuer = issuer or self.ca
        b = (x509.CertificateRevocationListBuilder().issuer_name(issuer.cert.subject)
             .last_update(this_update or NOW - HOUR)
             .add_extension(x509.CRLNumber(number), False))
        if next_update is not None and not isinstance(hash_alg, hashes.SHA1):
            b = b.next_update(next_update)
        if delta_of is not None:
            b = b.add_extension(x509.DeltaCRLIndicator(delta_of), critical=True)
        if freshest_url:
            b = b.add_extension(x509.FreshestCRL([x509.DistributionPoint(
                [_uri(freshest_url)], None, None, None)]), False)
        for ext, critical in extensions:
            b = b.add_extension(ext, critical)
        for cert, when, reason in revoked:
            rb = (x509.RevokedCertificateBuilder().serial_number(cert.serial_number)
                  .revocation_date(when))
            if reason is not None:
                rb = rb.add_extension(x509.CRLReason(reason), False)
            if invalidity and cert.serial_number in invalidity:
                rb = rb.add_extension(x509.InvalidityDate(invalidity[cert.serial_number]
                                                          .replace(tzinfo=None)), False)
            b = b.add_revoked_certificate(rb.build())
        signer = signing_key or issuer.key
        if next_update is None or isinstance(hash_alg, hashes.SHA1):
            return _resign(b.next_update(NOW + DAY).sign(signer, hashes.SHA256()), signer,
                           drop_next_update=next_update is None,
                           sha1=isinstance(hash_alg, hashes.SHA1))
        return b.sign(signer, hash_alg or hashes.SHA256())

    # -- OCSP --------------------------------------------------------------------------

    def ocsp_response(
        self, cert: x509.Certificate, status: ocsp.OCSPCertStatus = ocsp.OCSPCertStatus.GOOD, *,
        responder: Party | None = None, nonce: bytes | None = None,
        this_update: dt.datetime | None = None, next_update: dt.datetime | None = NOW + DAY,
        revoked_at: dt.datetime | None = None, reason: x509.ReasonFlags | None = None,
        issuer: Party | None = None, by_name: bool = False, signing_key:
        ec.EllipticCurvePrivateKey | None = None, hash_alg: hashes.HashAlgorithm | None = None,
    ) -> bytes:
        issuer = issuer or self.ca
        responder = responder or issuer
        b = ocsp.OCSPResponseBuilder().add_response(
            cert=cert, issuer=issuer.cert, algorithm=hashes.SHA1(), cert_status=status,
            this_update=this_update or NOW - HOUR, next_update=next_update,
            revocation_time=revoked_at if status == ocsp.OCSPCertStatus.REVOKED else None,
            revocation_reason=reason if status == ocsp.OCSPCertStatus.REVOKED else None,
        ).responder_id(ocsp.OCSPResponderEncoding.NAME if by_name
                       else ocsp.OCSPResponderEncoding.HASH, responder.cert)
        if responder is not issuer:
            b = b.certificates([responder.cert])
        if nonce is not None:
            b = b.add_extension(x509.OCSPNonce(nonce), critical=False)
        return b.sign(signing_key or responder.key, hash_alg or hashes.SHA256()).public_bytes(
            serialization.Encoding.DER)

    def responder_for(self, statuses: dict[int, tuple[ocsp.OCSPCertStatus, dt.datetime | None]],
                      **kw: object):  # type: ignore[no-untyped-def]
        """An OCSP responder as a function of the request DER (for MemoryFetcher): echoes
        the nonce, answers by serial from ``statuses``, 'unknown' otherwise."""
        by_serial = {serial: v for serial, v in statuses.items()}
        certs = kw.pop("certs", {})
        assert isinstance(certs, dict)

        def answer(request_der: bytes) -> bytes:
            request = ocsp.load_der_ocsp_request(request_der)
            try:
                nonce = request.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
            except x509.ExtensionNotFound:
                nonce = None
            status, when = by_serial.get(request.serial_number,
                                         (ocsp.OCSPCertStatus.UNKNOWN, None))
            cert = certs[request.serial_number] if request.serial_number in certs else None
            if cert is None:
                cert = _placeholder(request.serial_number, self.ca)
            return self.ocsp_response(cert, status, nonce=nonce, revoked_at=when, **kw)  # type: ignore[arg-type]

        return answer


def _placeholder(serial: int, issuer: Party) -> x509.Certificate:
    # cryptography's OCSP builder wants a certificate; only its serial and issuer matter.
    k = key()
    return (x509.CertificateBuilder().subject_name(name("placeholder")).issuer_name(
        issuer.cert.subject).public_key(k.public_key()).serial_number(serial)
        .not_valid_before(NOW - DAY).not_valid_after(NOW + DAY).sign(issuer.key, hashes.SHA256()))


def _resign(crl: x509.CertificateRevocationList, signer: ec.EllipticCurvePrivateKey, *,
            drop_next_update: bool = False, sha1: bool = False) -> x509.CertificateRevocationList:
    """Re-sign ``crl`` as cryptography will not: without nextUpdate (X.509 allows it, RFC 5280
    does not), or with SHA-1 (legacy CAs)."""
    from asn1crypto import crl as acrl

    parsed = acrl.CertificateList.load(crl.public_bytes(serialization.Encoding.DER))
    tbs = parsed["tbs_cert_list"]
    if drop_next_update:
        tbs["next_update"] = None
    alg = hashes.SHA256()
    if sha1:
        alg = hashes.SHA1()
        tbs["signature"] = {"algorithm": "sha1_ecdsa"}
        parsed["signature_algorithm"] = {"algorithm": "sha1_ecdsa"}
    tbs_der = tbs.dump(force=True)
    parsed["tbs_cert_list"] = acrl.TbsCertList.load(tbs_der)
    parsed["signature"] = signer.sign(tbs_der, ec.ECDSA(alg))
    return x509.load_der_x509_crl(parsed.dump(force=True))


def der(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.DER)


# -- servers ---------------------------------------------------------------------------------



def listening(port: int) -> bool:
    """Is anything listening on ``port``? Read from /proc: never connect to openssl ocsp,
    which serves one connection at a time and would wait on a probe."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


def _index_time(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%y%m%d%H%M%SZ")


def _index_serial(serial: int) -> str:
    text = format(serial, "X")
    return text if len(text) % 2 == 0 else "0" + text


class OpensslResponder:
    """``openssl ocsp -port N``: an independent OCSP responder over an index.txt."""

    def __init__(self, workdir: Path, port: int, ca: Party, signer: Party,
                 entries: Sequence[tuple[x509.Certificate, str, dt.datetime | None, str | None]],
                 *, nmin: int | None = 5) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        lines = []
        for cert, state, revoked_at, reason in entries:
            revoked = ""
            if state == "R":
                assert revoked_at is not None
                revoked = _index_time(revoked_at) + (f",{reason}" if reason else "")
            lines.append("\t".join([state, _index_time(cert.not_valid_after_utc), revoked,
                                    _index_serial(cert.serial_number), "unknown",
                                    "/" + cert.subject.rfc4514_string().replace(",", "/")]))
        (workdir / "index.txt").write_text("\n".join(lines) + "\n")
        (workdir / "index.txt.attr").write_text("unique_subject = no\n")
        (workdir / "ca.pem").write_bytes(ca.pem_cert())
        (workdir / "rsigner.pem").write_bytes(signer.pem_cert())
        (workdir / "rkey.pem").write_bytes(signer.pem_key())
        self.port = port
        self.url = f"http://127.0.0.1:{port}/"
        args = ["openssl", "ocsp", "-index", "index.txt", "-port", str(port),
                "-rsigner", "rsigner.pem", "-rkey", "rkey.pem", "-CA", "ca.pem",
                "-nrequest", "1000", "-ignore_err"]
        if nmin is not None:
            args += ["-nmin", str(nmin)]
        self.log = workdir / "responder.log"
        self._out = self.log.open("wb")
        self.proc = subprocess.Popen(args, cwd=workdir, stdout=self._out,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while not listening(port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"openssl ocsp did not start: {self.log.read_text()}")
            time.sleep(0.01)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()
