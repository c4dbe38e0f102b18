"""Drivers for the interop peers: the OpenSSL CLI, GnuPG's gpgsm and the NSS tools.

Everything here runs the real programs with explicit timeouts and raises :class:`PeerError`
(with the peer's own stderr) when one of them fails. Nothing here imports smimekit: the harness
is proved on its own by ``test_interop_harness.py`` (peer -> peer round trips).

* :func:`make_pki` builds the test PKI with the OpenSSL CLI (root, intermediate, end entities).
* :class:`Gpgsm` is a throw-away ``GNUPGHOME`` driven non-interactively (PEERS.md).
* :class:`NssDb` is a throw-away NSS database driven through ``cmsutil``.
* ``openssl_*`` wrap ``openssl cms``; they speak S/MIME, like a mail client would.
* :func:`smime_to_der`, :func:`der_to_smime` and :func:`detached_to_smime` move between
  S/MIME messages and the bare DER CMS blobs that gpgsm and cmsutil read and write.
"""

from __future__ import annotations

import base64
import datetime
import email
import email.policy
import email.utils
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

#: Seconds allowed for any single peer invocation. Generous: a peer call normally takes
#: milliseconds; a hang (a pinentry prompt, a blocked pipe) must fail the test, not the run.
TIMEOUT = 30

#: The password of every PKCS#12 file made by :func:`make_pki`.
PASSWORD = "interop-secret"

PEER_BINARIES = {
    "openssl": ("openssl",),
    "gpgsm": ("gpgsm", "gpgconf"),
    "nss": ("certutil", "cmsutil", "pk12util"),
}


def missing_binaries(peer: str) -> list[str]:
    return [b for b in PEER_BINARIES[peer] if shutil.which(b) is None]


def skip_unless_peer(peer: str) -> pytest.MarkDecorator:
    """A ``pytestmark`` entry that skips a whole module when the peer is not installed."""
    missing = missing_binaries(peer)
    return pytest.mark.skipif(
        bool(missing),
        reason=f"interop peer {peer!r} not installed (missing: {', '.join(missing)}); "
        "install the peers with `make peers`",
    )


class PeerError(RuntimeError):
    """A peer program exited non-zero (or timed out). Carries what it printed."""

    def __init__(self, cmd: Sequence[str], returncode: int | None, stdout: bytes, stderr: bytes):
        self.cmd = list(cmd)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        err = stderr.decode("utf-8", "replace").strip()
        super().__init__(f"{' '.join(self.cmd)!r} exited {returncode}: {err[-2000:]}")


def run(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    input: bytes = b"",
    env: Mapping[str, str] | None = None,
    timeout: float = TIMEOUT,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a peer program; raise :class:`PeerError` unless it exits 0."""
    args = [os.fspath(c) for c in cmd]
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env.setdefault("LC_ALL", "C")
    try:
        proc = subprocess.run(
            args,
            input=input,
            capture_output=True,
            env=full_env,
            timeout=timeout,
            cwd=cwd,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise PeerError(args, None, exc.stdout or b"", b"timed out") from exc
    if proc.returncode != 0:
        raise PeerError(args, proc.returncode, proc.stdout, proc.stderr)
    return proc


#: What a peer on this machine genuinely cannot do. The matrix skips these combinations with
#: this text as the reason; ``test_interop_harness.py::test_peer_limitation_still_holds`` proves
#: each one on every run with OpenSSL-made input, so a peer upgrade that lifts one shows up.
LIMITATIONS: dict[str, str] = {
    "gpgsm-oaep": "gpgsm 2.2.40 cannot decrypt RSA-OAEP key transport ('No secret key'; PEERS.md)",
    "gpgsm-gcm": "gpgsm 2.2.40 cannot read AES-GCM AuthEnvelopedData "
                 "('error getting IV: Buffer too short'; PEERS.md)",
    "gpgsm-ecdh": "gpgsm 2.2.40 refuses keyAgreement-only EC certificates for encryption "
                  "('Wrong key usage') and segfaults importing an EC PKCS#12",
    "gpgsm-p521": "gpgsm 2.2.40 cannot verify ECDSA P-521 "
                  "('DSA requires the hash length to be a multiple of 8 bits')",
    "gpgsm-p384-sha256": "gpgsm 2.2.40 rejects SHA-256 with a P-384 key "
                         "('a 256 bit hash is not valid for a 384 bit ECC key', exit 2)",
    "nss-oaep": "NSS 3.87 cmsutil cannot decrypt RSA-OAEP (SEC_ERROR_UNSUPPORTED_KEYALG)",
    "nss-gcm": "NSS 3.87 cmsutil cannot read AES-GCM AuthEnvelopedData "
               "(SEC_ERROR_UNRECOGNIZED_OID)",
    "nss-ecdh": "NSS 3.87 cmsutil has no ECDH key agreement (decrypt: SEC_ERROR_BAD_DER; "
                "-E to an EC certificate: SEC_ERROR_INVALID_ALGORITHM)",
    "nss-kari-any": "NSS 3.87 cmsutil rejects a whole EnvelopedData that has any "
                    "KeyAgreeRecipientInfo, even when its own RSA recipient is there too "
                    "(SEC_ERROR_BAD_DER)",
}


# --------------------------------------------------------------------------------------------
# The test PKI, made by the OpenSSL CLI
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """One end entity: key and certificate files made by OpenSSL."""

    name: str
    email: str
    #: "rsa" or "ec"
    kind: str
    #: RSA modulus bits ("2048") or curve name ("P-256")
    size: str
    #: unencrypted PKCS#8 PEM
    key: Path
    cert: Path
    #: OpenSSL 3 default PKCS#12 (PBES2/AES), password :data:`PASSWORD`, with the chain
    p12: Path
    #: ``openssl pkcs12 -legacy`` (3DES/RC2) PKCS#12, the only kind gpgsm imports
    p12_legacy: Path

    @property
    def label(self) -> str:
        return f"{self.name}-{self.kind}{self.size}"


@dataclass(frozen=True)
class Pki:
    directory: Path
    root_cert: Path
    root_key: Path
    inter_cert: Path
    inter_key: Path
    users: Mapping[str, Identity] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Identity:
        return self.users[name]


# (name, kind, size, keyUsage)
END_ENTITIES: tuple[tuple[str, str, str, str], ...] = (
    ("alice", "rsa", "2048", "digitalSignature,keyEncipherment"),
    ("bob", "ec", "P-256", "digitalSignature,keyAgreement"),
    ("carol", "rsa", "3072", "digitalSignature,keyEncipherment"),
    ("dave", "ec", "P-384", "digitalSignature,keyAgreement"),
    ("erin", "ec", "P-521", "digitalSignature,keyAgreement"),
)
EMAIL_DOMAIN = "example.org"
ORG = "smimekit interop"


def _genpkey_args(kind: str, size: str, out: Path) -> list[str]:
    if kind == "rsa":
        opts = ["-algorithm", "RSA", "-pkeyopt", f"rsa_keygen_bits:{size}"]
    else:
        opts = ["-algorithm", "EC", "-pkeyopt", f"ec_paramgen_curve:{size}",
                "-pkeyopt", "ec_param_enc:named_curve"]
    return ["openssl", "genpkey", *opts, "-out", str(out)]


def _extensions_config(ee: Iterable[tuple[str, str, str, str]]) -> str:
    lines = [
        "[req]", "distinguished_name = dn", "prompt = no", "[dn]", "CN = unused",
        "[v3_root]",
        "basicConstraints = critical,CA:TRUE",
        "keyUsage = critical,keyCertSign,cRLSign",
        "subjectKeyIdentifier = hash",
        "[v3_inter]",
        "basicConstraints = critical,CA:TRUE,pathlen:0",
        "keyUsage = critical,keyCertSign,cRLSign",
        "subjectKeyIdentifier = hash",
        "authorityKeyIdentifier = keyid:always",
    ]
    for name, _kind, _size, usage in ee:
        lines += [
            f"[v3_{name}]",
            "basicConstraints = critical,CA:FALSE",
            f"keyUsage = critical,{usage}",
            "extendedKeyUsage = emailProtection",
            "subjectKeyIdentifier = hash",
            "authorityKeyIdentifier = keyid:always",
            f"subjectAltName = email:{name}@{EMAIL_DOMAIN}",
        ]
    return "\n".join(lines) + "\n"


#: Fresh exports tried per ``-legacy`` file before :func:`make_pki` gives up (see there).
LEGACY_EXPORT_ATTEMPTS = 50


def make_pki(directory: Path, *, legacy_ok: Callable[[bytes], bool] | None = None) -> Pki:
    """Root CA -> intermediate CA -> end entities, all made by ``openssl`` commands.

    ``legacy_ok`` judges each ``-legacy`` PKCS#12 file; a file it rejects is exported again
    (fresh random salts) until it passes. conftest passes smimekit's gpgsm KDF check.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    cnf = d / "extensions.cnf"
    cnf.write_text(_extensions_config(END_ENTITIES))

    # Key generation dominates (RSA-3072); run every genpkey at once.
    keys = {"root": ("rsa", "2048"), "inter": ("rsa", "2048")}
    keys.update({name: (kind, size) for name, kind, size, _ in END_ENTITIES})
    procs = {
        name: subprocess.Popen(
            _genpkey_args(kind, size, d / f"{name}.key"),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        for name, (kind, size) in keys.items()
    }
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=TIMEOUT)
        if proc.returncode != 0:
            raise PeerError(["openssl", "genpkey", name], proc.returncode, b"", err)

    serial = iter(range(0x1001, 0x2000))
    root_cert = d / "root.pem"
    run(["openssl", "req", "-new", "-x509", "-config", cnf, "-key", d / "root.key",
         "-subj", f"/O={ORG}/CN=Interop Root CA", "-days", "3650", "-sha256",
         "-extensions", "v3_root", "-set_serial", str(next(serial)), "-out", root_cert])

    def issue(name: str, subject: str, ca_cert: Path, ca_key: Path, days: int) -> Path:
        csr = d / f"{name}.csr"
        cert = d / f"{name}.pem"
        run(["openssl", "req", "-new", "-config", cnf, "-key", d / f"{name}.key",
             "-subj", subject, "-out", csr])
        run(["openssl", "x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key,
             "-set_serial", str(next(serial)), "-days", str(days), "-sha256",
             "-extfile", cnf, "-extensions", f"v3_{name}", "-out", cert])
        return cert

    inter_cert = issue("inter", f"/O={ORG}/CN=Interop Intermediate CA", root_cert,
                       d / "root.key", 3650)
    users: dict[str, Identity] = {}
    for name, kind, size, _ in END_ENTITIES:
        cert = issue(name, f"/O={ORG}/CN={name.capitalize()}", inter_cert, d / "inter.key",
                     365)
        p12 = d / f"{name}.p12"
        p12_legacy = d / f"{name}-legacy.p12"

        def export(out: Path, *extra: str, name: str = name, cert: Path = cert) -> None:
            run(["openssl", "pkcs12", "-export", *extra, "-inkey", d / f"{name}.key",
                 "-in", cert, "-certfile", inter_cert, "-name", name,
                 "-passout", f"pass:{PASSWORD}", "-out", out])

        export(p12)
        # gpgsm 2.2.40 derives a wrong 3DES key for about 1 salt in 128: its PKCS#12 KDF
        # (sm/minip12.c, string_to_key) stores (I_j + B + 1) mod 2^512 with
        # gcry_mpi_print(GCRYMPI_FMT_USG), which drops a leading 0x00 byte, so a file whose
        # key-bag salt makes either 64-byte block start with 0x00 fails to import ("data
        # error at shrouded_key_bag.decrypted-text") and the session's gpgsm fixture fails
        # with it (a CI flake, ~0.8% of runs). The salt is random, so export again until
        # legacy_ok (smimekit.ca.export.pkcs12_gpgsm_kdf_safe) accepts it.
        for _ in range(LEGACY_EXPORT_ATTEMPTS):
            export(p12_legacy, "-legacy")
            if legacy_ok is None or legacy_ok(p12_legacy.read_bytes()):
                break
        else:
            raise PeerError(["openssl", "pkcs12", "-export", "-legacy", name], None, b"",
                            f"no accepted file in {LEGACY_EXPORT_ATTEMPTS} exports".encode())
        users[name] = Identity(name, f"{name}@{EMAIL_DOMAIN}", kind, size,
                               d / f"{name}.key", cert, p12, p12_legacy)
    return Pki(d, root_cert, d / "root.key", inter_cert, d / "inter.key", users)


def sha1_fingerprint(cert: Path) -> str:
    out = run(["openssl", "x509", "-in", cert, "-noout", "-fingerprint", "-sha1"]).stdout
    return out.decode().strip().split("=", 1)[1]


# --------------------------------------------------------------------------------------------
# Line endings and the test message
# --------------------------------------------------------------------------------------------


def crlf(data: bytes) -> bytes:
    """Canonical line endings (RFC 5751 3.1.1): every line ends in CRLF."""
    return re.sub(rb"\r?\n", b"\r\n", data)


def lf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


#: The Date of every test message: now (at import). Verifiers compare the signing-time
#: attribute with the Date header, so a fixed date would make the suite fail with time.
DATE = email.utils.format_datetime(datetime.datetime.now(datetime.UTC).replace(microsecond=0))


def outer_headers(sender: str = "alice", recipient: str = "bob") -> bytes:
    """From/To/Subject/Date/Message-ID. The sender must be the signer: verifiers bind the
    From address to the signer certificate's email (RFC 8550 section 3)."""
    return (
        f"From: {sender.capitalize()} <{sender}@{EMAIL_DOMAIN}>\r\n"
        f"To: {recipient.capitalize()} <{recipient}@{EMAIL_DOMAIN}>\r\n"
        "Subject: smimekit interop\r\n"
        f"Date: {DATE}\r\n"
        f"Message-ID: <interop-{sender}-{recipient}@{EMAIL_DOMAIN}>\r\n"
    ).encode()


def from_header(sender: str) -> str:
    return f"{sender.capitalize()} <{sender}@{EMAIL_DOMAIN}>"


OUTER_HEADERS = outer_headers()


#: The MIME entity that gets signed or encrypted: what a peer gives back.
ENTITY = (
    b"Content-Type: text/plain; charset=us-ascii\r\n"
    b"Content-Transfer-Encoding: 7bit\r\n"
    b"\r\n"
    b"Hello from the interop matrix.\r\n"
    b"\r\n"
    b"From the start of a line, a dot:\r\n"
    b".\r\n"
    b"Trailing spaces stay   \r\n"
    b"-- \r\n"
    b"smimekit\r\n"
)

def message(sender: str = "alice", recipient: str = "bob") -> bytes:
    """A complete RFC 5322 message: outer headers + MIME-Version + :data:`ENTITY`."""
    return outer_headers(sender, recipient) + b"MIME-Version: 1.0\r\n" + ENTITY


MESSAGE = message()


def with_outer_headers(mime: bytes, sender: str = "alice", recipient: str = "bob") -> bytes:
    """Put From/To/Subject/... in front of a peer's S/MIME output, as a mail client does."""
    return outer_headers(sender, recipient) + crlf(mime)


# --------------------------------------------------------------------------------------------
# S/MIME <-> DER
# --------------------------------------------------------------------------------------------


def _b64_lines(der: bytes) -> bytes:
    b64 = base64.b64encode(der)
    return b"".join(b64[i:i + 76] + b"\r\n" for i in range(0, len(b64), 76))


def der_to_smime(der: bytes, smime_type: str, *, sender: str = "alice") -> bytes:
    """Wrap a DER CMS blob (gpgsm, cmsutil) as an application/pkcs7-mime message."""
    return (
        outer_headers(sender)
        + b"MIME-Version: 1.0\r\n"
        + f'Content-Type: application/pkcs7-mime; smime-type={smime_type}; name="smime.p7m"\r\n'
        .encode()
        + b'Content-Disposition: attachment; filename="smime.p7m"\r\n'
        + b"Content-Transfer-Encoding: base64\r\n"
        + b"\r\n"
        + _b64_lines(der)
    )


def detached_to_smime(
    content: bytes, sig_der: bytes, *, micalg: str = "sha-256", sender: str = "alice"
) -> bytes:
    """Build multipart/signed from the signed entity and a detached DER signature."""
    boundary = b"----=_interop_boundary_7f3a9c"
    return (
        outer_headers(sender)
        + b"MIME-Version: 1.0\r\n"
        + b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; '
        + f"micalg={micalg}; ".encode()
        + b'boundary="' + boundary + b'"\r\n'
        + b"\r\n"
        + b"This is an S/MIME signed message\r\n"
        + b"--" + boundary + b"\r\n"
        + crlf(content)
        + b"\r\n--" + boundary + b"\r\n"  # this CRLF belongs to the delimiter (RFC 2046)
        + b'Content-Type: application/pkcs7-signature; name="smime.p7s"\r\n'
        + b"Content-Transfer-Encoding: base64\r\n"
        + b'Content-Disposition: attachment; filename="smime.p7s"\r\n'
        + b"\r\n"
        + _b64_lines(sig_der)
        + b"\r\n--" + boundary + b"--\r\n"
    )


@dataclass(frozen=True)
class Extracted:
    """The CMS blob of an S/MIME message and, for multipart/signed, the signed part."""

    content_type: str
    smime_type: str | None
    der: bytes
    #: raw bytes of the first part of multipart/signed, CRLF line endings; None if opaque
    signed_part: bytes | None


def _split_header_body(msg: bytes) -> tuple[bytes, bytes]:
    head, sep, body = msg.partition(b"\r\n\r\n")
    if not sep:
        raise ValueError("no header/body separator")
    return head + b"\r\n", body


def smime_to_der(message: bytes) -> Extracted:
    """Find the CMS blob in an S/MIME message (pkcs7-mime body or pkcs7-signature part).

    For multipart/signed the first part is returned exactly as it appears in the message
    (not re-serialised), with line endings made CRLF: that is what was signed.
    """
    msg_crlf = crlf(message)
    parsed = email.message_from_bytes(msg_crlf, policy=email.policy.compat32)
    ctype = parsed.get_content_type()
    if ctype in ("application/pkcs7-mime", "application/x-pkcs7-mime"):
        payload = parsed.get_payload(decode=True)
        if not isinstance(payload, bytes) or not payload:
            raise ValueError("empty application/pkcs7-mime body")
        return Extracted(ctype, parsed.get_param("smime-type"), payload, None)
    if ctype != "multipart/signed":
        raise ValueError(f"not an S/MIME message: {ctype}")
    boundary = parsed.get_boundary()
    if not boundary:
        raise ValueError("multipart/signed without boundary")
    _, body = _split_header_body(msg_crlf)
    delim = b"--" + boundary.encode()
    # Delimiter lines: "--boundary" at the start of a line, optional transport padding.
    pattern = re.compile(rb"(?:^|\r\n)" + re.escape(delim) + rb"(--)?[ \t]*\r\n", re.M)
    marks = list(pattern.finditer(body))
    if len(marks) < 3:
        raise ValueError(f"multipart/signed with {len(marks) - 1} parts")
    first = body[marks[0].end():marks[1].start()]
    second = body[marks[1].end():marks[2].start()]
    sig_part = email.message_from_bytes(second, policy=email.policy.compat32)
    sig_type = sig_part.get_content_type()
    if sig_type not in ("application/pkcs7-signature", "application/x-pkcs7-signature"):
        raise ValueError(f"second part is {sig_type}")
    der = sig_part.get_payload(decode=True)
    if not isinstance(der, bytes) or not der:
        raise ValueError("empty signature part")
    return Extracted(ctype, None, der, first)


def body_of(entity: bytes) -> bytes:
    """The body of a MIME entity or message (after the first empty line), CRLF."""
    return _split_header_body(crlf(entity))[1]


# --------------------------------------------------------------------------------------------
# OpenSSL (openssl cms)
# --------------------------------------------------------------------------------------------


class _Scratch:
    """A temporary directory for one peer call's input and output files."""

    def __enter__(self) -> Path:
        self._tmp = tempfile.TemporaryDirectory(prefix="smimekit-interop-")
        return Path(self._tmp.name)

    def __exit__(self, *exc: object) -> None:
        self._tmp.cleanup()


def openssl_sign(
    content: bytes,
    key: Path,
    cert: Path,
    *,
    chain: Sequence[Path] = (),
    detached: bool = True,
    digest: str = "sha256",
    pss: bool = False,
) -> bytes:
    """``openssl cms -sign``: S/MIME output (multipart/signed or opaque pkcs7-mime)."""
    with _Scratch() as t:
        (t / "in").write_bytes(content)
        cmd = ["openssl", "cms", "-sign", "-in", t / "in", "-out", t / "out",
               "-signer", cert, "-inkey", key, "-md", digest, "-outform", "SMIME"]
        if pss:
            cmd += ["-keyopt", "rsa_padding_mode:pss"]
        if not detached:
            cmd.append("-nodetach")
        for i, c in enumerate(chain):
            certfile = t / f"chain{i}.pem"
            certfile.write_bytes(Path(c).read_bytes())
            cmd += ["-certfile", certfile]
        run(cmd)
        return (t / "out").read_bytes()


def openssl_verify(message: bytes, ca: Path, *, purpose: str = "smimesign") -> bytes:
    """``openssl cms -verify`` of an S/MIME message; returns the signed content.

    The message goes through OpenSSL's own S/MIME parser in its default (text) mode, which
    is what users run. That mode re-canonicalises the signed part to CRLF, so for
    multipart/signed the signature is *also* checked over the exact bytes of the first part
    (DER signature + ``-content`` + ``-binary``): a signature made over anything but the
    canonical bytes on the wire fails there. (``-binary`` on a CRLF S/MIME file is not an
    option: OpenSSL 3.0 then keeps the CR of the CRLF before the boundary in the content.)
    The intermediate must be in the message: OpenSSL 3.0 ``cms`` has no ``-untrusted``.
    """
    with _Scratch() as t:
        (t / "in").write_bytes(message)
        cmd = ["openssl", "cms", "-verify", "-inform", "SMIME", "-in", t / "in",
               "-out", t / "out", "-CAfile", ca, "-purpose", purpose]
        proc = run(cmd)
        if b"Verification successful" not in proc.stderr:
            raise PeerError(cmd, 0, proc.stdout, proc.stderr)
        ext = smime_to_der(message)
        if ext.signed_part is not None:
            (t / "sig").write_bytes(ext.der)
            (t / "part").write_bytes(ext.signed_part)
            cmd = ["openssl", "cms", "-verify", "-inform", "DER", "-in", t / "sig",
                   "-content", t / "part", "-binary", "-out", t / "exact",
                   "-CAfile", ca, "-purpose", purpose]
            proc = run(cmd)
            if b"Verification successful" not in proc.stderr:
                raise PeerError(cmd, 0, proc.stdout, proc.stderr)
        return (t / "out").read_bytes()


def openssl_encrypt(
    content: bytes,
    recipients: Sequence[tuple[Path, Sequence[str]]],
    *,
    cipher: str = "aes-256-cbc",
) -> bytes:
    """``openssl cms -encrypt``; ``recipients`` are (cert, keyopts) pairs, keyopts like
    ``["rsa_padding_mode:oaep"]`` or ``["ecdh_kdf_md:sha256"]`` (they apply per recipient)."""
    with _Scratch() as t:
        (t / "in").write_bytes(content)
        cmd = ["openssl", "cms", "-encrypt", "-in", t / "in", "-out", t / "out",
               f"-{cipher}", "-outform", "SMIME", "-binary"]
        for cert, keyopts in recipients:
            cmd += ["-recip", cert]
            for opt in keyopts:
                cmd += ["-keyopt", opt]
        run(cmd)
        return (t / "out").read_bytes()


def openssl_decrypt(message: bytes, key: Path, cert: Path | None = None) -> bytes:
    """``openssl cms -decrypt`` of an S/MIME message; returns the decrypted entity."""
    with _Scratch() as t:
        (t / "in").write_bytes(message)
        cmd = ["openssl", "cms", "-decrypt", "-inform", "SMIME", "-in", t / "in",
               "-out", t / "out", "-inkey", key, "-binary"]
        if cert is not None:
            cmd += ["-recip", cert]
        run(cmd)
        return (t / "out").read_bytes()


def openssl_cms_print(der_or_smime: bytes, *, inform: str = "DER") -> str:
    """``openssl cms -cmsout -print``: the structure as text (to check algorithms used)."""
    with _Scratch() as t:
        (t / "in").write_bytes(der_or_smime)
        proc = run(["openssl", "cms", "-cmsout", "-print", "-inform", inform, "-in", t / "in"])
        return proc.stdout.decode("utf-8", "replace")


# --------------------------------------------------------------------------------------------
# GnuPG gpgsm
# --------------------------------------------------------------------------------------------


class Gpgsm:
    """A throw-away GNUPGHOME, driven non-interactively (loopback pinentry, see PEERS.md)."""

    def __init__(self, home: Path, passphrase: str = PASSWORD):
        self.home = Path(home)
        self.passphrase = passphrase
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.home.chmod(0o700)
        # s2k-count: the agent otherwise calibrates key protection to ~100 ms of hashing,
        # paid again on every decrypt/sign (0.3-0.6 s each); the minimum makes it ~20 ms.
        (self.home / "gpg-agent.conf").write_text("allow-loopback-pinentry\ns2k-count 65536\n")
        (self.home / "gpgsm.conf").write_text("disable-crl-checks\n")

    def _run(self, args: Sequence[str | os.PathLike[str]], *, passphrase: bool = False
             ) -> subprocess.CompletedProcess[bytes]:
        cmd: list[str | os.PathLike[str]] = ["gpgsm", "--batch", "--status-fd", "1"]
        stdin = b""
        if passphrase:
            cmd += ["--pinentry-mode", "loopback", "--passphrase-fd", "0"]
            stdin = self.passphrase.encode() + b"\n"
        # cwd: a crash (see LIMITATIONS["gpgsm-ecdh"]) must not drop a core file in the repo
        return run([*cmd, *args], input=stdin, env={"GNUPGHOME": str(self.home)},
                   cwd=self.home)

    def trust_root(self, root: Path) -> None:
        self._run(["--import", root])
        with (self.home / "trustlist.txt").open("a") as f:
            f.write(f"{sha1_fingerprint(root)} S relax\n")

    def import_certs(self, *certs: Path) -> None:
        self._run(["--import", *certs])

    def import_p12(self, p12: Path) -> None:
        self._run(["--import", p12], passphrase=True)

    def encrypt(self, content: bytes, recipients: Sequence[str], *, cipher: str = "AES256"
                ) -> bytes:
        """DER EnvelopedData (gpgsm always uses RSA PKCS#1 v1.5 key transport)."""
        with _Scratch() as t:
            (t / "in").write_bytes(content)
            rcpt: list[str] = []
            for r in recipients:
                rcpt += ["-r", r]
            self._run(["--cipher-algo", cipher, *rcpt, "--output", t / "out",
                       "--encrypt", t / "in"])
            return (t / "out").read_bytes()

    def decrypt(self, der: bytes) -> bytes:
        with _Scratch() as t:
            (t / "in").write_bytes(der)
            proc = self._run(["--output", t / "out", "--decrypt", t / "in"], passphrase=True)
            if b"[GNUPG:] DECRYPTION_OKAY" not in proc.stdout:
                raise PeerError(["gpgsm", "--decrypt"], 0, proc.stdout, proc.stderr)
            return (t / "out").read_bytes()

    def sign(self, content: bytes, signer: str, *, detached: bool = True) -> bytes:
        """DER SignedData, signed with the imported key (gpgsm's default SHA-256)."""
        with _Scratch() as t:
            (t / "in").write_bytes(content)
            mode = "--detach-sign" if detached else "--sign"
            self._run(["-u", signer, "--include-certs", "-2", "--output", t / "out",
                       mode, t / "in"], passphrase=True)
            return (t / "out").read_bytes()

    def verify(self, sig_der: bytes, content: bytes | None = None) -> str:
        """Verify a signature; returns the status lines. Raises unless GOODSIG + VALIDSIG."""
        with _Scratch() as t:
            (t / "sig").write_bytes(sig_der)
            args: list[str | os.PathLike[str]] = ["--verify", t / "sig"]
            if content is not None:
                (t / "content").write_bytes(content)
                args.append(t / "content")
            proc = self._run(args)
            status = proc.stdout.decode("utf-8", "replace")
            if "[GNUPG:] GOODSIG" not in status or "[GNUPG:] VALIDSIG" not in status:
                raise PeerError(["gpgsm", "--verify"], 0, proc.stdout, proc.stderr)
            return status

    def close(self) -> None:
        # Only the agent of this GNUPGHOME, addressed by its home directory.
        subprocess.run(["gpgconf", "--homedir", str(self.home), "--kill", "all"],
                       capture_output=True, timeout=TIMEOUT, check=False)


# --------------------------------------------------------------------------------------------
# NSS (certutil, pk12util, cmsutil)
# --------------------------------------------------------------------------------------------


class NssDb:
    """A throw-away NSS database with an empty password."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.db = f"sql:{self.directory}"
        run(["certutil", "-N", "-d", self.db, "--empty-password"])

    def add_cert(self, nickname: str, cert: Path, trust: str = ",,") -> None:
        run(["certutil", "-A", "-d", self.db, "-n", nickname, "-t", trust, "-i", cert])

    def import_p12(self, p12: Path, password: str = PASSWORD) -> None:
        run(["pk12util", "-i", p12, "-d", self.db, "-W", password])

    def decode(self, der: bytes, content: bytes | None = None) -> bytes:
        """``cmsutil -D``: decrypt, or verify (detached with ``content``); returns content."""
        with _Scratch() as t:
            (t / "in").write_bytes(der)
            cmd: list[str | os.PathLike[str]] = ["cmsutil", "-D", "-d", self.db,
                                                 "-i", t / "in", "-o", t / "out"]
            if content is not None:
                (t / "content").write_bytes(content)
                cmd += ["-c", t / "content"]
            run(cmd)
            return (t / "out").read_bytes()

    def encrypt(self, content: bytes, recipients: Sequence[str]) -> bytes:
        """``cmsutil -E``: DER EnvelopedData; recipients by nickname or email."""
        with _Scratch() as t:
            (t / "in").write_bytes(content)
            run(["cmsutil", "-E", "-d", self.db, "-r", ",".join(recipients),
                 "-i", t / "in", "-o", t / "out"])
            return (t / "out").read_bytes()

    def sign(self, content: bytes, nickname: str, *, detached: bool = True,
             digest: str = "SHA256", key_preference: bool | str = True) -> bytes:
        """``cmsutil -S`` with signing time and SMIMECapabilities: DER (BER) SignedData.

        By default cmsutil also adds the encryption-key-preference attributes (RFC 8551
        2.5.3 and Microsoft's 1.3.6.1.4.1.311.16.4) naming the signing certificate, as
        Thunderbird does; a nickname (``-Y NICK``) names that certificate instead;
        ``key_preference=False`` passes ``-Y NONE`` to leave both out.
        """
        with _Scratch() as t:
            (t / "in").write_bytes(content)
            cmd: list[str | os.PathLike[str]] = [
                "cmsutil", "-S", "-d", self.db, "-N", nickname, "-H", digest, "-G", "-P",
                "-i", t / "in", "-o", t / "out"]
            if detached:
                cmd.append("-T")
            if key_preference is False:
                cmd += ["-Y", "NONE"]
            elif isinstance(key_preference, str):
                cmd += ["-Y", key_preference]
            run(cmd)
            return (t / "out").read_bytes()


# --------------------------------------------------------------------------------------------
# Comparing what came back with what went in
# --------------------------------------------------------------------------------------------

_MIME_HEADERS = ("content-type", "content-transfer-encoding", "content-disposition")


def entity_view(data: bytes) -> tuple[list[tuple[str, str]], bytes]:
    """(MIME headers that define the entity, exact body with CRLF endings).

    Two entities are the same plaintext when their Content-* headers and their body bytes
    are the same; outer headers (From, To, MIME-Version, ...) are not part of the entity.
    """
    head, body = _split_header_body(crlf(data))
    parsed = email.message_from_bytes(head + b"\r\n", policy=email.policy.compat32)
    headers = [(k.lower(), " ".join(v.split())) for k, v in parsed.items()
               if k.lower() in _MIME_HEADERS]
    return sorted(headers), body


def header(message: bytes, name: str) -> str | None:
    head, _ = _split_header_body(crlf(message))
    value = email.message_from_bytes(head + b"\r\n", policy=email.policy.compat32).get(name)
    return None if value is None else " ".join(str(value).split())
