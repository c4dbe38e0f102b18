"""The crisis drill: the organisation's daily operations with every outside network cut.

:func:`cut_network` moves the calling process into a fresh network namespace with only
``lo`` (``unshare(CLONE_NEWNET)``, as root) or, where that is refused, installs a guard that
refuses every connection to a non-loopback address in this process and says so. The
``smimekit drill`` command runs it in a child process, so the caller keeps its network.

:func:`run_drill` then runs each operation through the same library paths as the commands,
timing each one and recording why it failed; a failed step never stops the drill (later
steps that need its result fail naming it). The inputs are the drill's own: a throwaway
identity is issued by the CA (department ``drill``), revoked again before the drill ends
(even when a step failed), and its escrowed key is the one recovered unless a leaver is
named. The report is :class:`~smimekit.audit.model.DrillReport`, written as JSON to
``<data-dir>/drill/latest.json`` (:func:`write_report`) for ``smimekit assess``.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import errno
import fcntl
import http.client
import json
import os
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from smimekit.audit.model import DrillReport, DrillStep
from smimekit.errors import FetchError, SmimeError
from smimekit.fsutil import atomic_write
from smimekit.validation.fetchers import Fetcher

if TYPE_CHECKING:
    from smimekit.ca.issuance import CertificateAuthority

__all__ = [
    "DRILL_DEPARTMENT",
    "NAMESPACE",
    "REPORT_SCHEMA",
    "STEPS",
    "DrillInputs",
    "cut_network",
    "latest_report",
    "outside_unreachable",
    "read_report",
    "report_from_dict",
    "report_to_dict",
    "run_drill",
    "write_report",
]

REPORT_SCHEMA = "smimekit-drill/1"
NAMESPACE = "network namespace (loopback only)"
DRILL_DEPARTMENT = "drill"
"""The department of the throwaway identity: ``assess`` leaves it out of the coverage."""
STEPS = ("isolation", "issue", "sign", "verify-hard-revocation", "encrypt-by-address",
         "decrypt", "serve-ocsp", "revoke-and-crl", "recover-leaver")
"""Every step, in the order they run (``isolation`` proves the outside is unreachable)."""
OUTSIDE_PROBE = ("192.0.2.1", 80)
"""An address outside (TEST-NET-1, RFC 5737) that the isolation step must fail to reach."""
SERVE_START_TIMEOUT = 60.0

_CLONE_NEWNET = 0x40000000
_CLONE_NEWUSER = 0x10000000
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


# --- cutting the outside off ------------------------------------------------------------

def _enter_namespace() -> None:
    """unshare(CLONE_NEWNET) for this process (inside a new user namespace when not root),
    then bring ``lo`` up.

    Raises:
        OSError: not permitted (not root, no CAP_SYS_ADMIN, or namespaces disabled): the
            process is where it was.
        SmimeError: in the new namespace, but ``lo`` could not be brought up.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(_CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        if code != errno.EPERM or os.geteuid() == 0:
            raise OSError(code, os.strerror(code))
        _user_namespace(libc)
    try:
        _loopback_up()
    except OSError as exc:
        raise SmimeError(f"in a new network namespace, but lo could not be brought up:"
                         f" {exc.strerror or exc}") from None


def _user_namespace(libc: ctypes.CDLL) -> None:
    """Not root: a user namespace that maps our own uid and gid to themselves (files keep
    their owner) and, in it, a network namespace this process may configure.

    Raises:
        OSError: user namespaces are not allowed here either (nothing changed).
        SmimeError: the namespaces were made but could not be set up.
    """
    uid, gid = os.geteuid(), os.getegid()
    if libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{os.strerror(code)} (also as an unprivileged user namespace)")
    try:
        Path("/proc/self/setgroups").write_text("deny")
        Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
        Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")
    except OSError as exc:
        raise SmimeError(f"in a new user namespace, but its uid/gid map could not be written:"
                         f" {exc.strerror or exc}") from None


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14s", b"lo", 0, b"")
        flags = struct.unpack("16sH", fcntl.ioctl(sock, _SIOCGIFFLAGS, request)[:18])[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH14s", b"lo", flags | _IFF_UP, b""))


def _is_loopback(address: Any) -> bool:
    if not isinstance(address, tuple) or not address:
        return True  # AF_UNIX paths: local by nature
    host = str(address[0])
    return host in ("localhost", "::1") or host.startswith("127.")


_guard_installed = False


def _install_guard() -> None:
    """Refuse connections to anything but loopback in this process (the fallback)."""
    global _guard_installed
    if _guard_installed:
        return
    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex

    def connect(self: socket.socket, address: Any) -> None:
        if not _is_loopback(address):
            raise OSError(errno.ENETUNREACH, f"drill: outbound connection to {address!r}"
                          " refused (outside network cut)")
        original_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if not _is_loopback(address):
            return errno.ENETUNREACH
        return original_connect_ex(self, address)

    socket.socket.connect = connect  # type: ignore[method-assign,assignment]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign,assignment]
    _guard_installed = True


def cut_network(*, allow_namespace: bool = True) -> str:
    """Cut this process off from the outside; return how, said plainly for the report.

    A network namespace when the kernel allows it; otherwise the in-process socket guard
    (loopback only), which child processes do not inherit: the statement says so.

    Raises:
        SmimeError: the namespace was entered but its loopback is down (no local service
            could be reached: the drill would measure nothing).
    """
    if allow_namespace:
        try:
            _enter_namespace()
        except OSError as exc:
            why = exc.strerror or str(exc)
        else:
            return NAMESPACE
    else:
        why = "not requested"
    _install_guard()
    return (f"no network namespace ({why}): outbound connections to non-loopback addresses"
            " refused in the drill process by a socket guard; child processes (ca serve) are"
            " not covered")


def outside_unreachable(probe: tuple[str, int] = OUTSIDE_PROBE, timeout: float = 3.0) -> str:
    """Try to reach ``probe``; the reason it failed (the proof), or raise if it connected.

    Raises:
        SmimeError: the connection succeeded: the outside is reachable.
    """
    interfaces = ", ".join(name for _, name in socket.if_nameindex())
    try:
        with socket.create_connection(probe, timeout=timeout):
            pass
    except OSError as exc:
        return (f"connect to {probe[0]}:{probe[1]} failed: {exc.strerror or exc};"
                f" interfaces: {interfaces}")
    raise SmimeError(f"the outside is reachable: connected to {probe[0]}:{probe[1]}")


# --- the report's JSON -----------------------------------------------------------------

def report_to_dict(report: DrillReport) -> dict[str, Any]:
    """The JSON form (docs/assess.md, "The crisis drill"): DrillReport.to_dict() with the
    schema named."""
    return {"schema": REPORT_SCHEMA, **report.to_dict()}


def report_from_dict(data: Any) -> DrillReport:
    """Read :func:`report_to_dict`'s form back.

    Raises:
        SmimeError: not a drill report of this schema, or a field missing or mistyped.
    """
    try:
        if data.get("schema") != REPORT_SCHEMA:
            raise SmimeError(f"not a drill report ({REPORT_SCHEMA!r} expected)")
        return DrillReport.from_dict(data)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise SmimeError(f"drill report: malformed ({type(exc).__name__}: {exc})") from None


def write_report(report: DrillReport, data_dir: Path, extra: Path | None = None) -> Path:
    """Write the report to ``<data-dir>/drill/latest.json`` (and ``extra``); its path."""
    text = (json.dumps(report_to_dict(report), indent=2) + "\n").encode()
    folder = data_dir / "drill"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / "latest.json"
    atomic_write(path, text)
    if extra is not None:
        atomic_write(extra, text)
    return path


def read_report(path: Path) -> DrillReport:
    """A report written by :func:`write_report`.

    Raises:
        SmimeError: unreadable, not JSON, or not a drill report.
    """
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise SmimeError(f"cannot read the drill report {path}: {exc}") from None
    return report_from_dict(data)


def latest_report(data_dir: Path) -> DrillReport | None:
    """The latest drill of ``data_dir``; None when none ran (for ``assess``).

    Raises:
        SmimeError: the file is there but is not a readable drill report.
    """
    path = data_dir / "drill" / "latest.json"
    return read_report(path) if path.exists() else None


# --- the operations --------------------------------------------------------------------

@dataclass
class DrillInputs:
    """What the drill works with; built by ``smimekit drill`` (cli/drill.py)."""

    data_dir: Path
    ca: CertificateAuthority
    """The unlocked :class:`~smimekit.ca.issuance.CertificateAuthority` (with its store)."""
    address: str
    """The throwaway identity's address (issued, then revoked)."""
    colleagues: Sequence[str]
    """Addresses to encrypt to, looked up through the directory sources (store, cache)."""
    resolve: Callable[[Sequence[str]], tuple[list[x509.Certificate], list[x509.Certificate]]]
    """Address -> (chosen certificates, CA certificates completing them): the lookup that
    ``encrypt --to ADDR`` uses."""
    serve_argv: Sequence[str]
    """``smimekit ca serve`` without --host, --port and the passphrase option."""
    serve_passphrase: bytes = field(repr=False)
    """The CA passphrase for ``ca serve``, handed over through a pipe (never the
    environment or the command line)."""
    shares: Callable[[], Sequence[Any]] | None = None
    """Unlocks the officers' escrow shares (M of them), inside the timed recovery step
    (a share that does not open fails that step); None: none given, the step fails saying
    so."""
    leaver: str | None = None
    """Whose keys to recover; None: the throwaway identity's (changes no real user)."""
    reason: str = "crisis drill"


@dataclass
class _State:
    sign_key: PrivateKeyTypes | None = None
    sign_cert: x509.Certificate | None = None
    enc_key: PrivateKeyTypes | None = None
    enc_cert: x509.Certificate | None = None
    signed: bytes | None = None
    encrypted: bytes | None = None
    body: bytes = b""
    revoked: bool = False


class _StepFailed(Exception):
    """A step did not do what it should: the message is the report's detail."""


class _OfflineFetcher(Fetcher):
    """A Fetcher that never reaches anything: the drill's revocation answers come from the
    CRLs already held (store, CA folder, disk cache) or from our own loopback responder."""

    def __init__(self, ocsp_url: str | None = None, timeout: float = 10.0) -> None:
        self.ocsp_url = ocsp_url
        self.timeout = timeout

    def fetch_crl(self, url: str) -> bytes:
        raise FetchError(f"no fetch in the drill: {url}", url=url)

    def post_ocsp(self, url: str, request_der: bytes) -> bytes:
        if self.ocsp_url is None:
            raise FetchError(f"no fetch in the drill: {url}", url=url)
        host, port = self.ocsp_url.split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=self.timeout)
        try:
            conn.request("POST", "/ocsp", body=request_der,
                         headers={"Content-Type": "application/ocsp-request"})
            answer = conn.getresponse()
            data = answer.read(1 << 20)
        except OSError as exc:
            raise FetchError(f"our OCSP responder at {self.ocsp_url}: {exc}", url=url) from None
        finally:
            conn.close()
        if answer.status != 200:
            raise FetchError(f"our OCSP responder answered HTTP {answer.status}", url=url)
        return data

    def get_ocsp(self, url: str, request_der: bytes) -> bytes:
        return self.post_ocsp(url, request_der)


def _message(inputs: DrillInputs, to: str, body: bytes) -> bytes:
    return (f"From: {inputs.address}\r\nTo: {to}\r\n"
            f"Subject: smimekit crisis drill\r\nContent-Type: text/plain\r\n\r\n").encode() + body


def _anchors(inputs: DrillInputs) -> list[x509.Certificate]:
    from smimekit.directory.store_source import our_ca_chain
    from smimekit.validation.trust import TrustStore

    ours = our_ca_chain(inputs.data_dir)
    roots = [c for c in ours if c.issuer == c.subject]
    return roots + [c for c in TrustStore(inputs.data_dir).anchors() if c not in roots]


def _need(value: Any, step: str) -> Any:
    if value is None:
        raise _StepFailed(f"needs the '{step}' step, which failed")
    return value


def _issue(inputs: DrillInputs, st: _State) -> str:
    from smimekit.ca.issuance import SubscriberKeyType
    from smimekit.ca.profiles import Purpose

    issued = inputs.ca.issue_generated(
        inputs.address, name="smimekit crisis drill", department=DRILL_DEPARTMENT,
        sign_key=SubscriberKeyType.P256, encrypt_key=SubscriberKeyType.P256,
        validity=dt.timedelta(days=1), action="drill.issue")
    sign, enc = issued.item(Purpose.SIGN), issued.item(Purpose.ENCRYPT)
    if sign is None or enc is None or sign.key is None or enc.key is None:
        raise _StepFailed("the CA did not hand back a signing and an encryption key pair")
    st.sign_key, st.sign_cert = sign.key, sign.cert
    st.enc_key, st.enc_cert = enc.key, enc.cert
    return (f"{inputs.address}: signing certificate {sign.cert.serial_number:x} and encryption"
            f" certificate {enc.cert.serial_number:x}, valid one day")


def _sign(inputs: DrillInputs, st: _State) -> str:
    import smimekit
    from smimekit.directory.store_source import our_ca_chain

    key = _need(st.sign_key, "issue")
    st.body = f"Drill at {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC.\r\n".encode()
    chain = [c for c in our_ca_chain(inputs.data_dir) if c.issuer != c.subject]
    st.signed = smimekit.sign(_message(inputs, inputs.address, st.body), key,
                              _need(st.sign_cert, "issue"), chain=chain)
    return f"signed {len(st.signed)} bytes as {inputs.address}"


def _verify_hard(inputs: DrillInputs, st: _State) -> str:
    import smimekit
    from smimekit.directory.store_source import our_ca_revocation
    from smimekit.validation.revocation import RevocationOptions, RevocationPolicy

    signed = _need(st.signed, "sign")
    crls = our_ca_revocation(inputs.ca.store, inputs.data_dir)
    options = RevocationOptions(policy=RevocationPolicy.HARD, crls=crls,
                                cache_dir=inputs.data_dir / "revocation-cache",
                                fetcher=_OfflineFetcher())
    result = smimekit.verify(signed, trust=_anchors(inputs), revocation=options,
                             raise_for_failure=False)
    if not result.verdict.valid:
        reasons = "; ".join(result.verdict.all_reasons()) or "not valid"
        raise _StepFailed(f"{reasons} (CRLs held locally: {len(crls)}, and the disk cache)")
    return (f"signature valid, revocation checked hard from {len(crls)} CRL(s) held locally"
            " (no fetch)")


def _encrypt(inputs: DrillInputs, st: _State) -> str:
    import smimekit

    _need(st.enc_cert, "issue")
    addresses = [inputs.address, *inputs.colleagues]
    certs, chains = inputs.resolve(addresses)
    st.encrypted = smimekit.encrypt(_message(inputs, ", ".join(addresses), st.body), certs,
                                    check_recipients=False)
    return (f"encrypted to {len(certs)} address(es) found by lookup: {', '.join(addresses)}"
            f" ({len(chains)} CA certificate(s) completing the chains)")


def _decrypt(inputs: DrillInputs, st: _State) -> str:
    import smimekit

    encrypted = _need(st.encrypted, "encrypt-by-address")
    result = smimekit.decrypt(encrypted, st.enc_key, st.enc_cert)
    if st.body not in bytes(result.content):
        raise _StepFailed("decrypted, but the text is not what was encrypted")
    return f"decrypted {len(encrypted)} bytes with the drill identity's encryption key"


@contextmanager
def _served(inputs: DrillInputs) -> Iterator[str]:
    """``ca serve`` on a free loopback port; yields ``host:port`` once it accepts."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, inputs.serve_passphrase + b"\n")
    finally:
        os.close(write_end)
    argv = [*inputs.serve_argv, "--host", "127.0.0.1", "--port", str(port),
            "--passphrase-file", f"/dev/fd/{read_end}"]
    try:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, pass_fds=(read_end,))
    finally:
        os.close(read_end)
    try:
        deadline = time.monotonic() + SERVE_START_TIMEOUT
        while True:
            if process.poll() is not None:
                err = process.stderr.read().decode(errors="replace") if process.stderr else ""
                raise _StepFailed("ca serve exited: " + (err.strip().splitlines() or ["?"])[-1])
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise _StepFailed(f"ca serve did not listen within"
                                     f" {SERVE_START_TIMEOUT:.0f} s") from None
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()


def _serve_ocsp(inputs: DrillInputs, st: _State) -> str:
    import smimekit
    from smimekit.directory.store_source import our_ca_revocation
    from smimekit.validation.revocation import RevocationOptions, RevocationPolicy

    signed = _need(st.signed, "sign")
    # the root's CRL for the issuing CA; the end entity only through OCSP (no issuing CRL)
    root_crls = our_ca_revocation(None, inputs.data_dir)
    with _served(inputs) as where:
        options = RevocationOptions(policy=RevocationPolicy.HARD, crls=root_crls,
                                    fetcher=_OfflineFetcher(where))
        result = smimekit.verify(signed, trust=_anchors(inputs), revocation=options,
                                 raise_for_failure=False)
    if not result.verdict.valid:
        reasons = "; ".join(result.verdict.all_reasons()) or "not valid"
        raise _StepFailed(f"OCSP from ca serve on {where}: {reasons}")
    return f"ca serve on {where} answered OCSP: the drill certificate is good"


def _revoke(inputs: DrillInputs, st: _State) -> str:
    _need(st.sign_cert, "issue")
    done = inputs.ca.revoke(email=inputs.address, reason="cessation-of-operation")
    st.revoked = True
    issuer = inputs.ca.issuer_fingerprint
    latest = inputs.ca.store.latest_crl(issuer)
    if latest is None or latest.der is None:
        raise _StepFailed("revoked, but no CRL of the issuing CA is in the store")
    crl = x509.load_der_x509_crl(latest.der)
    listed = [c for c in (st.sign_cert, st.enc_cert)
              if c is not None and crl.get_revoked_certificate_by_serial_number(
                  c.serial_number) is not None]
    if len(listed) != 2:
        raise _StepFailed(f"CRL {latest.number} does not list both drill certificates")
    return (f"revoked {len(done)} certificate(s); CRL number {latest.number} published,"
            f" next update {latest.next_update:%Y-%m-%d %H:%M} UTC")


def _recover(inputs: DrillInputs, st: _State) -> str:
    import smimekit
    from smimekit.escrow.recovery import recover_keys

    if inputs.shares is None:
        raise _StepFailed("no officer shares given (--share): recovery needs M of them")
    who = inputs.leaver or inputs.address
    if inputs.leaver is None:
        _need(st.enc_cert, "issue")
    shares = inputs.shares()
    pairs = recover_keys(inputs.data_dir, inputs.ca.store, shares, email=who,
                         reason=inputs.reason, actor=inputs.ca.actor,
                         details={"drill": True})
    if not pairs:
        raise _StepFailed(f"no escrowed key of {who}")
    if inputs.leaver is None and st.encrypted is not None:
        result = smimekit.decrypt(st.encrypted, None, keys=pairs)
        if st.body not in bytes(result.content):
            raise _StepFailed("the recovered key did not open the drill message")
        return (f"{len(shares)} officers' shares opened {who}'s key history"
                f" ({len(pairs)} key(s)); the recovered key decrypted the drill message")
    return (f"{len(shares)} officers' shares opened {who}'s key history:"
            f" {len(pairs)} key(s), kept in memory only")


_OPERATIONS: tuple[tuple[str, Callable[[DrillInputs, _State], str]], ...] = (
    ("issue", _issue), ("sign", _sign), ("verify-hard-revocation", _verify_hard),
    ("encrypt-by-address", _encrypt), ("decrypt", _decrypt), ("serve-ocsp", _serve_ocsp),
    ("revoke-and-crl", _revoke), ("recover-leaver", _recover))


def _timed(name: str, action: Callable[[], str]) -> DrillStep:
    start = time.perf_counter()
    try:
        detail, ok = action(), True
    except _StepFailed as exc:
        detail, ok = str(exc), False
    except SmimeError as exc:
        detail, ok = f"{type(exc).__name__}: {exc}", False
    except Exception as exc:  # a bug or an environment failure: the drill goes on
        detail, ok = f"{type(exc).__name__}: {exc}", False
    return DrillStep(name, ok, time.perf_counter() - start, detail)


def run_drill(inputs: DrillInputs, isolation: str,
              on_step: Callable[[DrillStep], None] | None = None) -> DrillReport:
    """Run every step (``isolation`` first); the throwaway identity is revoked before this
    returns whatever failed. ``on_step`` sees each step as it ends."""
    started = dt.datetime.now(dt.UTC).replace(microsecond=0)
    state = _State()
    steps: list[DrillStep] = []

    def record(step: DrillStep) -> None:
        steps.append(step)
        if on_step is not None:
            on_step(step)

    record(_timed("isolation", outside_unreachable))
    try:
        for name, operation in _OPERATIONS:
            record(_timed(name, lambda op=operation: op(inputs, state)))  # type: ignore[misc]
    finally:
        if state.sign_cert is not None and not state.revoked:
            # the revoke step failed, or the drill was interrupted: the drill must not
            # leave a live certificate behind
            record(_timed("cleanup-revoke", lambda: _revoke(inputs, state)))

    def audit() -> str:
        inputs.ca.store.audit(inputs.ca.actor, "drill.run", inputs.address, {
            "isolation": isolation, "ok": all(s.ok for s in steps),
            "failed": [s.name for s in steps if not s.ok]})
        return "the drill's outcome is in the audit log (action drill.run)"

    outcome = _timed("audit", audit)
    if not outcome.ok:
        record(outcome)  # a passing audit row is no step of the day's work
    return DrillReport(started, isolation, tuple(steps))
