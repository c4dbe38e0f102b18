"""A DNSSEC test world on loopback: NSD (authoritative) and unbound (validating resolver).

Zones, all served by one ``nsd`` on a free loopback port, signed with ``ldns-signzone``
(ECDSA P-256, one key per zone, with keys from ``ldns-keygen``):

=================  ======================================================================
``test.``          the parent; its DS is the trust anchor; delegates the zones below
``good.test.``     signed, DS in ``test.``: answers validate (AD)
``bogus.test.``    signed, DS in ``test.``, then one SMIMEA record's data altered after
                   signing: its RRSIG no longer matches (unbound: SERVFAIL, EDE "DNSSEC
                   Bogus")
``expired.test.``  signed, DS in ``test.``, with RRSIGs that expired in 2020 (EDE
                   "Signature Expired")
``unsigned.test.`` not signed, no DS: ``test.``'s signed NSEC proves the delegation
                   insecure (answers come without AD)
=================  ======================================================================

``unbound`` listens on another free loopback port with ``test.``'s DS as
``trust-anchor-file`` and a stub zone per zone pointing at NSD. Both are started by
:func:`start_dns_lab` and stopped by :meth:`DnsLab.stop` (tests/directory/conftest.py wraps
that in fixtures). Nothing runs as root-owned daemons, nothing leaves the temp folder.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import loopback

PARENT = "test."
SIGNED_CHILDREN = ("good.test.", "bogus.test.", "expired.test.")
UNSIGNED_CHILDREN = ("unsigned.test.",)
ZONES = (PARENT, *SIGNED_CHILDREN, *UNSIGNED_CHILDREN)
COMMANDS = ("nsd", "unbound", "ldns-keygen", "ldns-signzone", "dig")
START_TIMEOUT = 15.0


def missing_commands() -> list[str]:
    return [c for c in COMMANDS if shutil.which(c) is None
            and not Path("/usr/sbin", c).exists()]


def _command(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (DNS needs both)."""
    return loopback.free_port(udp=True)


def _soa(zone: str) -> list[str]:
    return [f"$ORIGIN {zone}", "$TTL 300",
            f"@ IN SOA ns.test. hostmaster.{zone} 1 3600 600 86400 300",
            "@ IN NS ns.test."]


def _run(args: list[str], cwd: Path) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def _keygen(zone: str, cwd: Path) -> tuple[str, str]:
    """A KSK/ZSK in one (SEP flag set) for ``zone``: the key files' base name and its DS."""
    base = _run([_command("ldns-keygen"), "-a", "ECDSAP256SHA256", "-k", zone], cwd)
    ds = (cwd / f"{base}.ds").read_text().strip()
    return base, ds


def _tamper(signed: str) -> str:
    """Change the last octet of the first SMIMEA record's data, leaving its RRSIG as it was."""
    lines = signed.splitlines()
    for i, line in enumerate(lines):
        fields = line.split()
        if len(fields) >= 8 and fields[3] == "SMIMEA":
            data = fields[-1]
            last = int(data[-2:], 16) ^ 0x01
            fields[-1] = data[:-2] + f"{last:02x}"
            lines[i] = "\t".join(fields)
            return "\n".join(lines) + "\n"
    raise RuntimeError("no SMIMEA record to tamper with in the bogus zone")


@dataclass
class DnsLab:
    """The running servers, their ports and the trust anchor."""

    folder: Path
    auth_port: int
    resolver_port: int
    anchor_file: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def query(self, name: str, rdtype: str, *, port: int | None = None,
              timeout: float = 3.0) -> dns.message.Message:
        query = dns.message.make_query(name, rdtype, want_dnssec=True, payload=1232)
        response, _ = dns.query.udp_with_fallback(query, "127.0.0.1", timeout,
                                                  port or self.resolver_port)
        return response

    def dig(self, name: str, rdtype: str) -> str:
        return _run(["dig", "+dnssec", "+tries=1", "+time=3", "-p", str(self.resolver_port),
                     "@127.0.0.1", name, rdtype], self.folder)

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=5)
        self.processes.clear()


def start_dns_lab(folder: Path, records: Mapping[str, str]) -> DnsLab:
    """Sign the zones (``records``: zone name -> extra zone-file text, e.g. an SMIMEA
    fragment), start NSD and unbound on free loopback ports, wait until unbound answers a
    validated query for ``test.``. The caller must call :meth:`DnsLab.stop`."""
    folder.mkdir(parents=True, exist_ok=True)
    keys = folder / "keys"
    keys.mkdir(exist_ok=True)
    parent_lines = [*_soa(PARENT), "ns IN A 127.0.0.1"]
    zone_files: dict[str, str] = {}
    for zone in (*SIGNED_CHILDREN, *UNSIGNED_CHILDREN):
        label = zone.split(".")[0]
        text = "\n".join(_soa(zone)) + "\n" + records.get(zone, "") + "\n"
        (folder / f"{label}.zone").write_text(text)
        parent_lines.append(f"{label} IN NS ns.test.")
        if zone in UNSIGNED_CHILDREN:
            zone_files[zone] = f"{label}.zone"
            continue
        base, ds = _keygen(zone, keys)
        parent_lines.append(ds)
        sign = [_command("ldns-signzone"), "-o", zone, "-f", str(folder / f"{label}.signed")]
        if zone == "expired.test.":
            sign += ["-i", "20200101000000", "-e", "20200201000000"]
        _run([*sign, str(folder / f"{label}.zone"), str(keys / base)], folder)
        if zone == "bogus.test.":
            signed = folder / f"{label}.signed"
            signed.write_text(_tamper(signed.read_text()))
        zone_files[zone] = f"{label}.signed"
    (folder / "test.zone").write_text("\n".join(parent_lines) + "\n")
    base, parent_ds = _keygen(PARENT, keys)
    _run([_command("ldns-signzone"), "-o", PARENT, "-f", str(folder / "test.signed"),
          str(folder / "test.zone"), str(keys / base)], folder)
    zone_files[PARENT] = "test.signed"
    anchor = folder / "anchor.ds"
    anchor.write_text(parent_ds + "\n")

    auth_port, resolver_port = free_port(), free_port()  # never the same one twice
    lab = DnsLab(folder, auth_port, resolver_port, anchor)
    nsd_conf = folder / "nsd.conf"
    nsd_conf.write_text("\n".join([
        "server:",
        f"  ip-address: 127.0.0.1@{auth_port}",
        f"  port: {auth_port}",
        '  username: ""',
        '  chroot: ""',
        f'  zonesdir: "{folder}"',
        '  database: ""',
        f'  zonelistfile: "{folder}/zone.list"',
        f'  xfrdfile: "{folder}/xfrd.state"',
        f'  xfrdir: "{folder}"',
        f'  pidfile: "{folder}/nsd.pid"',
        f'  logfile: "{folder}/nsd.log"',
        "  server-count: 1",
        "  do-ip6: no",
        "  verbosity: 1",
        "remote-control:",
        "  control-enable: no",
        *[line for zone, file in zone_files.items()
          for line in ("zone:", f"  name: {zone}", f"  zonefile: {file}")],
    ]) + "\n")
    unbound_conf = folder / "unbound.conf"
    unbound_conf.write_text("\n".join([
        "server:",
        f"  interface: 127.0.0.1@{resolver_port}",
        f"  port: {resolver_port}",
        "  do-ip6: no",
        "  do-not-query-localhost: no",
        '  username: ""',
        '  chroot: ""',
        f'  directory: "{folder}"',
        f'  pidfile: "{folder}/unbound.pid"',
        "  use-syslog: no",
        f'  logfile: "{folder}/unbound.log"',
        "  verbosity: 1",
        "  val-log-level: 2",
        "  ede: yes",
        "  num-threads: 1",
        "  so-reuseport: no",
        "  qname-minimisation: no",
        '  module-config: "validator iterator"',
        f'  trust-anchor-file: "{anchor}"',
        '  local-zone: "test." nodefault',
        "remote-control:",
        "  control-enable: no",
        *[line for zone in ZONES
          for line in ("stub-zone:", f'  name: "{zone}"', f"  stub-addr: 127.0.0.1@{auth_port}")],
    ]) + "\n")
    try:
        lab.processes.append(subprocess.Popen(
            [_command("nsd"), "-d", "-c", str(nsd_conf)], cwd=folder,
            stdout=subprocess.DEVNULL, stderr=(folder / "nsd.stderr").open("wb")))
        _wait(lab, auth_port, "nsd", folder / "nsd.log", lambda r: r.rcode() == dns.rcode.NOERROR)
        lab.processes.append(subprocess.Popen(
            [_command("unbound"), "-d", "-c", str(unbound_conf)], cwd=folder,
            stdout=subprocess.DEVNULL, stderr=(folder / "unbound.stderr").open("wb")))
        _wait(lab, resolver_port, "unbound", folder / "unbound.log",
              lambda r: bool(r.flags & dns.flags.AD))
    except BaseException:
        lab.stop()
        raise
    return lab


def _wait(lab: DnsLab, port: int, what: str, log: Path,
          ready: Callable[[dns.message.Message], bool]) -> None:
    """Until a query for ``test. SOA`` on ``port`` is answered as ``ready`` says (bounded)."""
    process = lab.processes[-1]
    deadline = time.monotonic() + START_TIMEOUT
    last = "no answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            err = (lab.folder / f"{what}.stderr").read_text(errors="replace")
            text = log.read_text(errors="replace") if log.exists() else ""
            raise RuntimeError(f"{what} exited ({process.returncode}): {err}{text}")
        try:
            response = lab.query(PARENT, "SOA", port=port, timeout=0.25)
            if ready(response):
                return
            last = f"{dns.rcode.to_text(response.rcode())} flags {response.flags!r}"
        except (dns.exception.DNSException, OSError) as exc:
            last = str(exc)
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not become ready on 127.0.0.1:{port}: {last}")


class LyingForwarder:
    """A UDP "resolver" on loopback that passes every query to ``upstream_port`` (NSD) and
    sets the AD bit on whatever comes back, validated or not: what anyone on the path between
    a client and its resolver can do to the one unauthenticated bit. Stop with :meth:`stop`."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = int(self.sock.getsockname()[1])
        self.forwarded = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                wire, client = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                query = dns.message.from_wire(wire)
                answer = dns.query.udp(query, "127.0.0.1", 2.0, self.upstream_port)
            except (dns.exception.DNSException, OSError):
                continue
            answer.flags |= dns.flags.AD | dns.flags.RA
            self.forwarded += 1
            self.sock.sendto(answer.to_wire(), client)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()
