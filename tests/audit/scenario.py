"""The scenario organisations `smimekit assess` is tested against, built through the real CA,
escrow and store code (one of each per session, SQLite).

- ``broken``: "Scenario Ltd", 200 people in five departments: our CA (root key online, key
  in software), no escrow (the vault key under the CA passphrase alone), 10 internal
  mailboxes on certificates of an outside CA (one with an RSA-1024 key) whose CRL and OCSP
  URLs are on the outside CA's host, 10 people with one key for both purposes, 20 without
  certificates, 4 ending within 30 days, a leaver revoked 3 days ago with no CRL since (the
  newest CRL has a day left), an encryption key certified from a CSR and never deposited,
  identities recorded for half, audit rows written without the audit key, and an archive
  with RC2, 3DES, AES-CBC, escrow-only and lost mail.
- ``healthy``: "Healthy Ltd", 20 people, all dual-key (two with ML-DSA-65 + ML-KEM-768),
  identities from the HR source, escrow 2 of 3 drilled by two officers, root key exported,
  a fresh CRL, one revocation published at once, every row anchored, a passing drill, an
  archive that is all AES-256-GCM and readable now.
- ``outsourced``: a store and nothing else: the mailboxes certified by an outside CA.

The RC2 and 3DES mail is made by ``openssl cms -encrypt`` (a foreign producer, as in the
archive tests); the scenario is not built without openssl.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID
from pki import PKI, message

import smimekit
import smimekit.escrow.shares
from smimekit.audit.assess import assess
from smimekit.audit.model import Assessment, DrillReport, DrillStep
from smimekit.ca.home import CAConfig, CAHome
from smimekit.ca.issuance import CertificateAuthority, SubscriberKeyType
from smimekit.cms.algorithms import Cipher
from smimekit.config import Config
from smimekit.escrow.ceremony import init_escrow
from smimekit.escrow.shares import OfficerSpec
from smimekit.store import Store
from smimekit.validation.trust import TrustStore

CA_PASS = b"scenario ca passphrase"
DOMAIN = "example.com"
BASE = "http://pki.example.com"
OUTSIDE_HOST = "crl.outside-ca.example"
DEPARTMENTS = ("Engineering", "Finance", "Legal", "Operations", "Sales")
P256 = SubscriberKeyType.P256
OFFICERS = ("Olga Officer", "Pete Officer", "Quinn Officer")


def email(i: int) -> str:
    return f"p{i:03d}@{DOMAIN}"


@dataclass
class Org:
    """A scenario organisation on disk and what the tests expect of it."""

    data_dir: Path
    at: dt.datetime
    archive: Path | None = None
    facts: dict[str, object] = field(default_factory=dict)

    def store(self) -> Store:
        return Store.open(None, self.data_dir, create=False)

    def assess(self, **kwargs: object) -> Assessment:
        store = self.store()
        try:
            archives = [self.archive] if self.archive is not None else []
            return assess(self.data_dir, store, Config(), archives=archives,  # type: ignore[arg-type]
                          at=self.at, **kwargs)
        finally:
            store.close()


def _outside_cert(pki: PKI, mail: str, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
                  ) -> x509.Certificate:
    """An outside CA's mailbox certificate with its CRL and OCSP on the outside CA's host."""
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.EMAIL_ADDRESS, mail)]))
        .issuer_name(pki.inter.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=10))
        .not_valid_after(now + dt.timedelta(days=300))
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(mail)]), False)
        .add_extension(x509.KeyUsage(True, False, False, False, True, False, False, False,
                                     False), critical=True)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
            [x509.UniformResourceIdentifier(f"http://{OUTSIDE_HOST}/issuing.crl")],
            None, None, None)]), False)
        .add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
            AuthorityInformationAccessOID.OCSP,
            x509.UniformResourceIdentifier("http://ocsp.outside-ca.example/"))]), False)
    )
    return builder.sign(pki.inter_key, hashes.SHA256())


def _cache(data_dir: Path, name: str, der: bytes) -> None:
    """Into the revocation cache that the message commands keep (validation/revocation.py)."""
    cache = data_dir / "revocation-cache"
    cache.mkdir(exist_ok=True)
    (cache / f"{name}.der").write_bytes(der)


def _outside_ocsp(pki: PKI, cert: x509.Certificate, next_update: dt.datetime) -> bytes:
    answer = (ocsp.OCSPResponseBuilder()
              .add_response(cert=cert, issuer=pki.inter, algorithm=hashes.SHA256(),
                            cert_status=ocsp.OCSPCertStatus.GOOD,
                            this_update=next_update - dt.timedelta(days=7),
                            next_update=next_update, revocation_time=None,
                            revocation_reason=None)
              .responder_id(ocsp.OCSPResponderEncoding.HASH, pki.inter)
              .sign(pki.inter_key, hashes.SHA256()))
    return answer.public_bytes(serialization.Encoding.DER)


def _outside_crl(pki: PKI, next_update: dt.datetime) -> bytes:
    crl = (x509.CertificateRevocationListBuilder()
           .issuer_name(pki.inter.subject)
           .last_update(next_update - dt.timedelta(days=7))
           .next_update(next_update)
           .sign(pki.inter_key, hashes.SHA256()))
    return crl.public_bytes(serialization.Encoding.DER)


def new_ca(data_dir: Path, organisation: str, url: str | None = None
           ) -> tuple[CAHome, Store, CertificateAuthority]:
    """A CA as 'ca init' leaves it, with its store (SQLite in ``data_dir`` unless ``url``)."""
    home = CAHome(data_dir)
    home.create(CAConfig(organization=organisation, base_url=BASE, key_type="p256",
                         country="GB"), CA_PASS)
    store = Store.open(url, data_dir)
    store.use_audit_key(home.audit_key())  # as 'ca init' leaves it
    store.audit("scenario", "ca.init", organisation, {})
    return home, store, CertificateAuthority(home.unlock(CA_PASS), store, actor="scenario")


def _escrow(data_dir: Path, store: Store, threshold: int, out: Path) -> None:
    saved = smimekit.escrow.shares.SCRYPT_N
    smimekit.escrow.shares.SCRYPT_N = 2**10  # test speed only; the shares are throwaway
    try:
        init_escrow(data_dir, store, CA_PASS,
                    [OfficerSpec(n, passphrase=f"{n} passphrase".encode()) for n in OFFICERS],
                    threshold, out, actor="scenario")
    finally:
        smimekit.escrow.shares.SCRYPT_N = saved


def _mail(name: str) -> bytes:
    return message(body=f"Archived mail {name}.\r\n".encode())


def _enc(name: str, certs: Sequence[x509.Certificate], cipher: Cipher = Cipher.AES256_GCM
         ) -> bytes:
    return smimekit.encrypt(_mail(name), certs, cipher=cipher, check_recipients=False)


def _openssl(name: str, cert: x509.Certificate, cipher: str, work: Path) -> bytes:
    (work / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (work / f"{name}.in").write_bytes(b"Content-Type: text/plain\r\n\r\nOld mail.\r\n")
    cmd = ["openssl", "cms", "-encrypt", f"-{cipher}", "-in", str(work / f"{name}.in"),
           "-subject", name, str(work / f"{name}.pem")]
    if cipher.startswith("rc2"):
        cmd[2:2] = ["-provider", "legacy", "-provider", "default"]
    out = subprocess.run(cmd, capture_output=True, check=True).stdout
    return out.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _mbox(path: Path, messages: Sequence[bytes]) -> Path:
    with path.open("wb") as fh:
        for msg in messages:
            fh.write(b"From scenario@scenario.example Mon Dec  7 00:00:00 2026\n")
            fh.write(msg.replace(b"\r\n", b"\n").rstrip(b"\n") + b"\n\n")
    return path


def _encryption_cert(store: Store, mail: str) -> x509.Certificate:
    record = next(r for r in store.issued_for(mail) if r.purpose in ("encrypt", "both"))
    stored = store.get_certificate(record.fingerprint)
    assert stored is not None
    return stored.certificate


def build_broken(root: Path, pki: PKI, people: int = 200) -> Org:
    if shutil.which("openssl") is None:
        raise RuntimeError("openssl is needed for the RC2 and 3DES mail of the scenario")
    at = dt.datetime.now(dt.UTC).replace(microsecond=0)
    data_dir = root / "broken"
    _home, store, cax = new_ca(data_dir, "Scenario Ltd")
    org = Org(data_dir, at)
    try:
        # no escrow: the vault key stays in vault.p12 under the CA passphrase alone
        issued_at = at - dt.timedelta(days=30)
        expiring, both, outside, none = [], [], [], []
        for i in range(people):
            mail, dept = email(i), DEPARTMENTS[i % len(DEPARTMENTS)]
            if i < people - 40:
                short = i % 40 == 5
                # p010 reads old mail with an RSA key (RC2 and 3DES need key transport)
                cax.issue_generated(mail, name=f"Person {i}", department=dept, sign_key=P256,
                                    encrypt_key=SubscriberKeyType.RSA2048 if i == 10
                                    else P256, lint=False, now=issued_at,
                                    validity=dt.timedelta(days=45 if short else 365))
                if short:
                    expiring.append(mail)
            elif i < people - 30:
                cax.issue_generated(mail, purpose="both", name=f"Person {i}", department=dept,
                                    encrypt_key=P256, lint=False, now=issued_at)
                both.append(mail)
            elif i < people - 20:
                weak = i == people - 21  # an RSA-1024 key only legacy validation takes
                key = (rsa.generate_private_key(65537, 1024) if weak
                       else ec.generate_private_key(ec.SECP256R1()))
                store.upsert_user(mail, f"Person {i}", dept)
                store.add_certificate(_outside_cert(pki, mail, key), "imported")
                outside.append(mail)
            else:
                store.upsert_user(mail, f"Person {i}", dept)
                none.append(mail)
        # an encryption key certified from a request: the CA never saw it, nobody deposited it
        csr_person = email(people - 41)
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.EMAIL_ADDRESS,
                                                           csr_person)]))
               .sign(key, hashes.SHA256()))
        cax.revoke(email=csr_person, reason="superseded", now=issued_at)
        cax.issue_generated(csr_person, purpose="sign", sign_key=P256, lint=False,
                            now=issued_at, replace=True)
        cax.issue_csr(csr.public_bytes(serialization.Encoding.PEM), email=csr_person,
                      purpose="encrypt", lint=False, now=issued_at, replace=True)
        for i in range(people // 2):
            store.record_identity(f"hr-{i}", email(i), f"Person {i}", issued_at)
        TrustStore(data_dir).add([pki.root])
        # the newest CRL: published six days ago, a day left
        cax.publish_crl(now=at - dt.timedelta(days=6))
        # from here on the audit key was not used (someone ran without it)
        store.use_audit_key(None)
        leaver = email(1)
        leaver_enc = _encryption_cert(store, leaver)
        cax.revoke_records(store.issued_for(leaver), reason="affiliation-changed",
                           now=at - dt.timedelta(days=3), publish=False)
        # the archive
        work = root / "broken-work"
        work.mkdir()
        live = _encryption_cert(store, email(10))
        outsider = next(c.certificate for c in store.certificates_for(outside[0]))
        org.archive = _mbox(root / "broken.mbox", [
            _enc("gcm-1", [live]), _enc("gcm-2", [live]),
            _enc("cbc", [live], Cipher.AES256_CBC),
            _enc("leaver", [leaver_enc]),
            _enc("outsider", [outsider]),
            _openssl("rc2", live, "rc2-40", work),
            _openssl("3des", live, "des3", work),
        ])
        # an OCSP answer about an outside certificate, cached five days ago by verify
        _cache(data_dir, "a" * 64, _outside_ocsp(pki, outsider, at + dt.timedelta(days=5)))
        org.facts.update(expiring=expiring, both=both, outside=outside, none=none,
                         leaver=leaver, csr_person=csr_person)
    finally:
        store.close()
    return org


def build_healthy(root: Path, pki: PKI, people: int = 20) -> Org:
    at = dt.datetime.now(dt.UTC).replace(microsecond=0)
    data_dir = root / "healthy"
    home, store, cax = new_ca(data_dir, "Healthy Ltd")
    org = Org(data_dir, at)
    try:
        _escrow(data_dir, store, 2, root / "healthy-shares")
        cax = CertificateAuthority(home.unlock(CA_PASS), store, actor="scenario")
        issued_at = at - dt.timedelta(days=30)
        for i in range(people):
            mail = email(i)
            pq = i < 2
            cax.issue_generated(
                mail, name=f"Person {i}", department=DEPARTMENTS[i % len(DEPARTMENTS)],
                sign_key=SubscriberKeyType.ML_DSA_65 if pq else P256,
                encrypt_key=SubscriberKeyType.ML_KEM_768 if pq else P256,
                lint=False, now=issued_at)
            store.record_identity(f"hr-{i}", mail, f"Person {i}", issued_at)
        # a lost laptop: revoked, the CRL published with it, a new pair issued
        lost = email(people - 1)
        cax.revoke(email=lost, reason="key-compromise", now=at - dt.timedelta(hours=2))
        cax.issue_generated(lost, name=f"Person {people - 1}", department=DEPARTMENTS[0],
                            sign_key=P256, encrypt_key=P256, lint=False,
                            now=at - dt.timedelta(hours=1))
        cax.publish_crl(now=at)
        # two officers drilled (what 'escrow check-share' records)
        generation = 1
        for index, name in enumerate(OFFICERS[:2], start=1):
            store.audit("scenario", "escrow.check-share", "escrow", {
                "officer": name, "index": index, "generation": generation})
        home.export_root(root / "healthy-root-offline.p12", remove=True)
        drill = DrillReport(at - dt.timedelta(days=1), "network namespace (loopback only)",
                            tuple(DrillStep(n, True, 0.1, "worked") for n in (
                                "sign", "verify-hard-revocation", "encrypt-by-address",
                                "decrypt", "issue", "revoke-and-crl", "ocsp",
                                "recover-leaver")))
        from smimekit.audit.drill import write_report  # as smimekit drill writes it

        write_report(drill, data_dir)
        # a partner's CRL about to lapse in the cache: reported, but it is not our CA's
        _cache(data_dir, "b" * 64, _outside_crl(pki, at + dt.timedelta(hours=1)))
        pq_enc = _encryption_cert(store, email(0))
        org.archive = _mbox(root / "healthy.mbox", [
            _enc("gcm-1", [_encryption_cert(store, email(5))]),
            _enc("gcm-2", [_encryption_cert(store, email(6))]),
            _enc("ml-kem", [pq_enc]),
        ])
    finally:
        store.close()
    return org


def build_outsourced(root: Path, pki: PKI) -> Org:
    data_dir = root / "outsourced"
    store = Store.open(None, data_dir)
    try:
        for i in range(5):
            store.upsert_user(email(i), f"Person {i}", DEPARTMENTS[0])
            store.add_certificate(_outside_cert(pki, email(i), ec.generate_private_key(
                ec.SECP256R1())), "imported")
    finally:
        store.close()
    return Org(data_dir, dt.datetime.now(dt.UTC).replace(microsecond=0))
