"""Archives for the archive tests: the people, a message of every kind, the three formats.

The 3DES, RC2-40 and RSA-1024 messages are made by ``openssl cms -encrypt`` (a foreign
producer); they are left out when openssl (or its legacy provider, for RC2) is missing.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from pki import PKI, Identity, message

import smimekit
from smimekit import archive
from smimekit.cms.algorithms import Cipher
from smimekit.errors import SmimeError
from smimekit.smime.canonical import Entity, to_crlf
from smimekit.store import Store

KeyPair = tuple[PrivateKeyTypes, x509.Certificate | None]


@dataclass(frozen=True)
class People:
    ann_old: Identity
    """Ann's first encryption certificate: renewed; its key is in the store's history."""
    ann: Identity
    """Ann's current certificate (RSA-2048)."""
    ben: Identity
    """Ben (P-256), his own key (CSR): live in the store, no key there."""
    stranger: Identity
    """Known to nobody."""
    ann_new: Identity
    """Ann's next certificate (P-256), the target of re-encryption."""
    weak_key: PrivateKeyTypes | None
    weak_cert: x509.Certificate | None
    """An RSA-1024 recipient made by openssl (None without openssl)."""

    def keys(self) -> list[KeyPair]:
        pairs: list[KeyPair] = [(p.key, p.cert) for p in
                                (self.ann_old, self.ann, self.ben, self.ann_new)]
        if self.weak_key is not None:
            pairs.append((self.weak_key, None))
        return pairs


def make_people(pki: PKI, work: Path) -> People:
    ann_old = pki.person("ann-old", "rsa2048", email="ann@example.org")
    ann = pki.person("ann", "rsa2048", email="ann@example.org")
    ben = pki.person("ben", "p256", email="ben@example.org")
    stranger = pki.person("stranger", "rsa2048", email="who@example.net")
    ann_new = pki.person("ann-new", "p256", email="ann@example.org")
    weak_key = weak_cert = None
    if shutil.which("openssl"):
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:1024", "-nodes", "-keyout",
             str(work / "weak.key"), "-out", str(work / "weak.pem"), "-subj",
             "/CN=weak/emailAddress=weak@example.org", "-days", "30",
             "-addext", "keyUsage=keyEncipherment"],
            check=True, capture_output=True)
        weak_key = serialization.load_pem_private_key((work / "weak.key").read_bytes(), None)
        weak_cert = x509.load_pem_x509_certificate((work / "weak.pem").read_bytes())
    return People(ann_old, ann, ben, stranger, ann_new, weak_key, weak_cert)


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def fill_store(store: Store, people: People, *, ann_current: Identity | None = None) -> None:
    """Ann: ann_old (renewed, key kept) then ``ann_current`` (default: ann); Ben: live."""
    current = ann_current or people.ann
    chain = [people.ann_old, people.ann] + ([current] if current is not people.ann else [])
    # As 'ca renew' does it: the old certificate is marked renewed (its live slot freed)
    # before its successor is recorded; one live certificate per address and purpose.
    for old, person in zip([None, *chain], chain, strict=False):
        if old is not None:
            store.mark_renewed(fingerprint(old.cert), fingerprint(person.cert))
        store.record_issuance(person.cert, email=person.email, purpose="encrypt",
                              profile="test", key_origin="generated", issuer_fingerprint="ca")
        store.add_private_key(b"sealed", owner=person.email, purpose="encrypt",
                              certificate_fingerprint=fingerprint(person.cert))
    store.record_issuance(people.ben.cert, email=people.ben.email, purpose="both",
                          profile="test", key_origin="csr", issuer_fingerprint="ca")


@dataclass(frozen=True)
class Sample:
    name: str
    data: bytes
    kind: str
    readable: str | None = None
    """With the store of :func:`fill_store` and no keys."""
    flags: frozenset[str] = field(default_factory=frozenset)


def _mail(name: str, body: bytes | None = None) -> bytes:
    text = body if body is not None else f"This is {name}.\r\nFrom here on, text.\r\n".encode()
    return message(body=text).replace(b"<t1@example.org>", f"<{name}@example.org>".encode())


def _enc(name: str, certs: Sequence[x509.Certificate], cipher: Cipher = Cipher.AES256_GCM,
         body: bytes | None = None) -> bytes:
    return smimekit.encrypt(_mail(name, body), certs, cipher=cipher, check_recipients=False)


def _openssl_encrypt(name: str, cert: x509.Certificate, cipher: str, work: Path,
                     legacy: bool = False) -> bytes | None:
    if not shutil.which("openssl"):
        return None
    (work / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (work / f"{name}.in").write_bytes(b"Content-Type: text/plain\r\n\r\n" +
                                      f"Old mail: {name}.\r\n".encode())
    cmd = ["openssl", "cms", "-encrypt", f"-{cipher}", "-in", str(work / f"{name}.in"),
           "-from", "alice@example.org", "-to", "ann@example.org", "-subject", name,
           str(work / f"{name}.pem")]
    if legacy:
        cmd[2:2] = ["-provider", "legacy", "-provider", "default"]
    result = subprocess.run(cmd, capture_output=True, check=False)
    if result.returncode or not result.stdout:
        return None
    return f"Message-ID: <{name}@example.org>\r\n".encode() + to_crlf(result.stdout)


_MESSAGE_ID = re.compile(rb"Message-ID: <([^@>]+)@example.org>", re.IGNORECASE)


def sample_name(data: bytes) -> str:
    """Which sample a message is (each has its own Message-ID)."""
    match = _MESSAGE_ID.search(data)
    assert match is not None
    return match.group(1).decode()


def _content_part(msg: bytes) -> bytes:
    """The content headers and body of a message (its outer headers dropped)."""
    entity = Entity.parse(to_crlf(msg))
    return entity.entity_bytes()


def make_corpus(pki: PKI, people: People, work: Path) -> list[Sample]:
    p = people
    enc = frozenset({"cbc-no-integrity"})
    samples = [
        Sample("plain", _mail("plain"), "plain"),
        Sample("signed", smimekit.sign(_mail("signed"), p.ann.key, p.ann.cert), "signed"),
        Sample("gcm-rsa", _enc("gcm-rsa", [p.ann.cert]), "encrypted", "now"),
        Sample("cbc-p256", _enc("cbc-p256", [p.ben.cert], Cipher.AES256_CBC), "encrypted",
               "now", enc),
        Sample("gcm-old", _enc("gcm-old", [p.ann_old.cert], Cipher.AES128_GCM), "encrypted",
               "escrow"),
        Sample("both", _enc("both", [p.ann.cert, p.ben.cert], Cipher.AES128_CBC),
               "encrypted", "now", enc),
        Sample("sign-then-encrypt",
               smimekit.sign_encrypt(_mail("sign-then-encrypt"), p.ben.key, p.ben.cert,
                                     [p.ann.cert], check_recipients=False),
               "encrypted", "now"),
        Sample("encrypt-then-sign",
               smimekit.sign(_enc("encrypt-then-sign", [p.ann.cert]), p.ben.key, p.ben.cert),
               "encrypted", "now", frozenset({"encrypted-then-signed"})),
        Sample("stranger", _enc("stranger", [p.stranger.cert]), "encrypted", "unreadable"),
    ]
    inner = _content_part(_enc("partial", [p.ann.cert]))
    partial = (_mail("partial").split(b"Content-Type:")[0]
               + b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n--b1\r\n'
               + b"Content-Type: text/plain\r\n\r\nSee the attachment.\r\n--b1\r\n"
               + inner + b"\r\n--b1--\r\n")
    samples.append(Sample("partial", partial, "encrypted", "now",
                          frozenset({"partially-encrypted"})))
    des3 = _openssl_encrypt("des3", p.ann.cert, "des3", work)
    if des3 is not None:
        samples.append(Sample("des3", des3, "encrypted", "now",
                              frozenset({"3des", "cbc-no-integrity"})))
    rc2 = _openssl_encrypt("rc2", p.ann.cert, "rc2-40", work, legacy=True)
    if rc2 is not None:
        samples.append(Sample("rc2", rc2, "encrypted", "now",
                              frozenset({"rc2", "cbc-no-integrity"})))
    if p.weak_cert is not None:
        weak = _openssl_encrypt("weak-rsa", p.weak_cert, "aes128", work)
        assert weak is not None
        samples.append(Sample("weak-rsa", weak, "encrypted", "unreadable",
                              frozenset({"rsa-under-2048", "cbc-no-integrity"})))
    garbage = (_mail("garbage-p7m").split(b"Content-Type:")[0]
               + b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n"
               + b"Content-Transfer-Encoding: base64\r\n\r\n"
               + base64.encodebytes(os.urandom(300)).replace(b"\n", b"\r\n"))
    truncated = _enc("truncated", [p.ann.cert], body=b"x" * 4000 + b"\r\n")
    samples += [
        Sample("garbage-p7m", garbage, "malformed"),
        Sample("truncated", truncated[:len(truncated) // 2], "malformed"),
    ]
    return samples


# -- writing archives ----------------------------------------------------------------------------

_FROM = re.compile(rb"^(>*From )", re.MULTILINE)


def write_mbox(path: Path, messages: Iterable[bytes], *, lf: bool = True) -> None:
    """An mboxrd file (``>From`` quoting), LF line ends unless ``lf`` is False."""
    with open(path, "wb") as fh:
        for n, msg in enumerate(messages):
            if lf:
                msg = msg.replace(b"\r\n", b"\n")
            nl = b"\n" if lf else b"\r\n"
            body = _FROM.sub(rb">\1", msg)
            fh.write(b"From sender@example.org Thu Jan  1 00:00:%02d 2026" % (n % 60) + nl
                     + body + (b"" if body.endswith(b"\n") else nl) + nl)


def write_maildir(root: Path, messages: Iterable[bytes]) -> None:
    """Maildir with Dovecot-style ``,S=`` sizes; every third message in new/."""
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for n, msg in enumerate(messages):
        if n % 3 == 2:
            (root / "new" / f"17000{n:05d}.M{n}P1.host").write_bytes(msg)
        else:
            name = f"17000{n:05d}.M{n}P1.host,S={len(msg)}:2,S"
            (root / "cur" / name).write_bytes(msg)


def write_eml(root: Path, messages: Iterable[bytes]) -> None:
    """A folder of .eml files, half of them one level down."""
    for n, msg in enumerate(messages):
        folder = root / "2024" if n % 2 else root
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{n:03d}.eml").write_bytes(msg)


WRITERS = {"mbox": write_mbox, "maildir": write_maildir, "eml": write_eml}


def build(kind: str, where: Path, messages: Sequence[bytes]) -> Path:
    path = where / {"mbox": "inbox.mbox", "maildir": "Maildir", "eml": "mail"}[kind]
    where.mkdir(parents=True, exist_ok=True)
    WRITERS[kind](path, messages)
    return path


# -- what a message says -----------------------------------------------------------------------


def content_digest(data: bytes, keys: Sequence[KeyPair]) -> str:
    """SHA-256 of what the message says: the decrypted message, or the message itself."""
    try:
        content = smimekit.decrypt(data, None, keys=keys, allow_legacy=True).content
    except SmimeError:
        content = to_crlf(data)
    return hashlib.sha256(content).hexdigest()


def digests(path: Path, keys: Sequence[KeyPair]) -> Counter[str]:
    return Counter(content_digest(m.data, keys) for m in archive.iter_messages(path))
