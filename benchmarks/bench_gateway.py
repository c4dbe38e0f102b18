"""Messages per second through Postfix + the S/MIME gateway, beside Postfix alone with the same
smtp-source load and beside smimekit's API in one process (issue 12).

For each size (10 KB, 1 MB) and direction:
- outbound: alice@example.org -> partner@partner.example, clear in; the gateway signs with
  alice's held key and encrypts to partner's certificate (found in the directory);
- inbound: partner -> bob@example.org, signed and encrypted to bob; the gateway decrypts with
  bob's held key, verifies, adds its result header and delivers in the clear (bob is a webmail
  user; tests/gwhome.py sets the node up).

``--attach``: how Postfix hands mail to the gateway. ``after-queue`` (the default) is
FILTER_README's advanced content filter: Postfix queues the message, hands it to the gateway,
and queues the gateway's output again (two queue passes). ``before-queue`` is
SMTPD_PROXY_README's proxy filter: the front smtpd hands the message to the gateway during the
client's session and the gateway's output is queued once (docs/gateway.md). ``both`` measures
the two against the same Postfix-alone and API figures.

Each run starts a private Postfix (tests/postfix.py; root needed) whose final destination is
Postfix's own smtp-sink; `smtp-source -F` sends the same prepared message ``count`` times over
``--sessions`` parallel sessions. The time is from the first connection until Postfix's log
says every message reached the sink. "Postfix alone" is the same Postfix without the
content filter. The in-process rate is api.sign_encrypt / api.decrypt_verify in a loop, one
process, one thread. Peak memory per node is its VmHWM. ``--workers N``: each node is
``gateway serve --workers N`` (N forked worker processes sharing its sockets; its peak
memory is then the sum of its processes' VmHWM, which counts the pages they share after the
fork more than once).

Goals (printed as met or not): the gateway at most 2x Postfix alone's time; at least 50% of
the in-process API rate; 40,000 messages/hour on average and 150,000 at peak on one node.

``relay`` (a stranger to a stranger, passed unchanged and audited) is the node's floor: SMTP
in and out, policy and audit with no cryptography; it has no goal. Each row also gives the
node's CPU time per message and the rest of the machine's (all processes but the nodes and
this script: Postfix, smtp-source, smtp-sink; less the machine's background use, measured
for 3 s before the runs and taken off in proportion to each run's time), alone and with the
gateway; a last table turns
them into what each goal leaves the node per message on these cores, beside the API's own
work and the node's floor (docs/benchmarks.md, "What the goals leave the node").

    sudo .venv/bin/python benchmarks/bench_gateway.py [--quick] [--nodes N] [--workers N]
        [--sessions N]
        [--database-url URL] [--json FILE] [--attach after-queue|before-queue|both]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))  # the Postfix harness, gateway nodes, the test PKI

from benchinfo import cpu_model, git_revision  # noqa: E402
from gwhome import GatewayHome, make_home  # noqa: E402
from gwnodes import FrontsPostfix, Node  # noqa: E402
from loopback import free_port  # noqa: E402
from pki import PKI  # noqa: E402
from postfix import ATTACHMENTS, Postfix  # noqa: E402

from smimekit import api  # noqa: E402

AVERAGE_PER_HOUR, PEAK_PER_HOUR = 40_000, 150_000
SIZES = {"10 KB": 10 * 1024, "1 MB": 1024 * 1024}


@dataclass
class Row:
    attach: str
    direction: str
    size: str
    count: int
    postfix_alone_s: float
    gateway_s: float
    api_per_s: float
    node_peak_mib: float
    node_cpu_ms: float
    """The nodes' CPU time (user + system) per message while the messages went through."""
    alone_rest_cpu_ms: float
    """Postfix alone: the machine's CPU time per message but for this script's own (Postfix,
    smtp-source, smtp-sink, anything else running)."""
    rest_cpu_ms: float
    """The same with the gateway, the nodes' own left out."""

    @property
    def postfix_per_s(self) -> float:
        return self.count / self.postfix_alone_s

    @property
    def gateway_per_s(self) -> float:
        return self.count / self.gateway_s


class AlonePostfix(Postfix):
    """The harness's Postfix without the content filter: straight to the sink."""

    def _write_config(self) -> None:
        super()._write_config()
        main = (self.conf / "main.cf").read_text()
        (self.conf / "main.cf").write_text(re.sub(r"(?m)^content_filter = .*$", "", main))


def _body(size: int) -> bytes:
    line = b"The quarterly figures are attached below; please review them carefully.\r\n"
    return line * max(1, size // len(line))


def _messages(home: GatewayHome, size: int) -> dict[str, tuple[str, str, bytes]]:
    """direction -> (sender, recipient, message as Postfix receives it)."""
    out = {}
    for direction, make in (("outbound", home.outbound), ("inbound", home.inbound),
                            ("relay", home.relay)):
        sender, [to], data = make(_body(size), f"bench-{direction}-{size}@example.org")
        out[direction] = (sender, to, data)
    return out


def _api_rate(home: GatewayHome, direction: str, data: bytes, count: int,
              trust: list[object]) -> float:
    if direction == "outbound":
        def once() -> object:
            return api.sign_encrypt(data, home.alice.key, home.alice.cert, [home.partner.cert],
                                    chain=home.chain)
    else:
        def once() -> object:
            return api.decrypt_verify(data, home.bob.key, home.bob.cert,
                                      trust=trust, revocation=None)  # type: ignore[arg-type]
    once()
    started = time.perf_counter()
    for _ in range(count):
        once()
    return count / (time.perf_counter() - started)


def _sent_to_sink(postfix: Postfix, sink_port: int) -> int:
    marker = f":{sink_port}, "
    return sum(1 for line in postfix.log().splitlines()
               if "status=sent" in line and marker in line)


def _run(postfix: Postfix, sink_port: int, message: tuple[str, str, bytes], count: int,
         sessions: int, workdir: Path, fronts: list[int]) -> float:
    """``count`` messages over ``sessions`` sessions, spread evenly over ``fronts`` (one
    smtp-source per front, all at once); seconds until the sink has them all."""
    sender, to, data = message
    prepared = workdir / "message.txt"
    prepared.write_bytes(data.replace(b"\r\n", b"\n"))  # smtp-source adds the CR
    shares = [count // len(fronts) + (i < count % len(fronts)) for i in range(len(fronts))]
    started = time.perf_counter()
    sources = [subprocess.Popen(
        ["smtp-source", "-s", str(max(1, sessions // len(fronts))), "-m", str(share),
         "-f", sender, "-t", to, "-F", str(prepared), "-M", "client.bench",
         f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for port, share in zip(fronts, shares, strict=True) if share]
    for source in sources:
        if source.wait(3600) != 0:
            raise SystemExit("smtp-source failed")
    deadline = time.monotonic() + 3600
    while _sent_to_sink(postfix, sink_port) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out: {postfix.log()[-3000:]}")
        time.sleep(0.05)
    return time.perf_counter() - started


def _machine_cpu_seconds() -> float:
    """The CPU time every process of the machine has used so far (/proc/stat: user, nice,
    system, irq, softirq), seconds."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(f) for f in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def _background_cpu(seconds: float = 3.0) -> float:
    """The machine's CPU use with nothing of this benchmark running, cores busy on average
    over ``seconds`` (other tenants of the VM, daemons): taken off "the rest of the machine"
    in proportion to each run's time."""
    before, ours = _machine_cpu_seconds(), time.process_time()
    time.sleep(seconds)
    return max(0.0, _machine_cpu_seconds() - before - (time.process_time() - ours)) / seconds


BACKGROUND = 0.0
"""Cores the machine keeps busy without the benchmark (:func:`_background_cpu`, set in main)."""


def _with_postfix(workdir: Path, *, nodes: int, home: GatewayHome | None,
                  body: Callable[[Postfix, int, list[int]], float], trusted: bool = False,
                  attach: str = "after-queue", workers: int = 1,
                  ) -> tuple[float, float, float, float]:
    """Start smtp-sink, Postfix (and ``nodes`` gateway nodes when ``home`` is given), run
    ``body``; (its seconds, the nodes' highest peak memory in MiB, the CPU seconds the nodes
    used during it, the CPU seconds the rest of the machine used: all but the nodes and this
    script). ``trusted``: the fronts
    hand mail to the nodes' trusted door (``--listen-submission``: outbound mail is signed
    only from there), else to their public door."""
    sink_port = free_port()
    sink = subprocess.Popen(["smtp-sink", "-u", "postfix", f"127.0.0.1:{sink_port}", "256"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    root = Path(tempfile.mkdtemp(prefix="postfix-", dir=workdir))
    postfix: Postfix
    started: list[Node] = []
    try:
        if home is None:
            postfix = AlonePostfix(root, sink_port=sink_port, maxproc=8)
            postfix.start(free_port())
            fronts = [postfix.smtpd_port]
        else:
            reinject = free_port()
            started = [Node(f"node-{i + 1}", reinject, data_dir=home.data_dir,
                            database_url=home.database_url, config=home.config,
                            log_dir=workdir, attach=attach, workers=workers)
                       for i in range(nodes)]
            ports = [n.submission_port if trusted else n.port for n in started]
            fronts_postfix = FrontsPostfix(root, sink_port=sink_port,
                                           nodes=[("127.0.0.1", p) for p in ports], maxproc=8,
                                           attach=attach)
            fronts_postfix.reinject_port = reinject
            postfix, fronts = fronts_postfix, fronts_postfix.fronts
            postfix.start(ports[0])
            for node in started:
                node.start()
        cpu = sum(n.cpu_seconds() for n in started)
        machine, ours = _machine_cpu_seconds(), time.process_time()
        seconds = body(postfix, sink_port, fronts)
        cpu = sum(n.cpu_seconds() for n in started) - cpu
        ours = time.process_time() - ours
        rest = _machine_cpu_seconds() - machine - cpu - ours - BACKGROUND * seconds
        peak = max((n.peak_rss() for n in started), default=0) / 1024
        return seconds, peak, cpu, rest
    finally:
        for node in started:
            node.stop()
        postfix.stop()
        sink.terminate()
        sink.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few messages (tests)")
    parser.add_argument("--nodes", type=int, default=1,
                        help="gateway nodes, each behind a Postfix front of its own [1]")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes per node (gateway serve --workers) [1]")
    parser.add_argument("--sessions", type=int, default=8, help="smtp-source sessions [8]")
    parser.add_argument("--database-url", help="the nodes' shared store [SQLite]")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--count", type=int,
                        help="10 KB messages per run (1 MB: a tenth) [400; --quick 20]")
    parser.add_argument("--only", action="append", default=[],
                        metavar="DIRECTION:SIZE",
                        help="only this case, e.g. outbound:10KB (repeatable) [all]")
    parser.add_argument("--attach", choices=(*ATTACHMENTS, "both"), default="after-queue",
                        help="how Postfix hands mail to the gateway: FILTER_README's"
                             " after-queue content filter, SMTPD_PROXY_README's before-queue"
                             " proxy filter, or both in the same run [after-queue]")
    args = parser.parse_args()
    attachments = ATTACHMENTS if args.attach == "both" else (args.attach,)
    if os.geteuid() != 0 or shutil.which("smtp-source") is None:
        raise SystemExit("bench_gateway needs root and Postfix (smtp-source, smtp-sink)")
    counts = {"10 KB": 20, "1 MB": 3} if args.quick else {"10 KB": 400, "1 MB": 40}
    if args.count:
        counts = {"10 KB": args.count, "1 MB": max(1, args.count // 10)}
    only = {o.replace(" ", "").upper() for o in args.only}
    rows: list[Row] = []
    global BACKGROUND
    BACKGROUND = _background_cpu(1.0 if args.quick else 3.0)
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        workdir = Path(tmp)
        os.chmod(workdir, 0o755)
        pki = PKI()
        home = make_home(workdir / "home", pki, database_url=args.database_url)
        for label, size in SIZES.items():
            count = counts[label]
            messages = _messages(home, size)
            for direction, message in messages.items():
                if only and f"{direction}:{label}".replace(" ", "").upper() not in only:
                    continue

                def run(postfix: Postfix, sink_port: int, fronts: list[int],
                        message: tuple[str, str, bytes] = message, count: int = count,
                        ) -> float:
                    return _run(postfix, sink_port, message, count, args.sessions, workdir,
                                fronts)

                alone, _, _, alone_rest = _with_postfix(workdir, nodes=0, home=None, body=run)
                through = {attach: _with_postfix(workdir, nodes=args.nodes, home=home,
                                                 body=run, trusted=direction == "outbound",
                                                 attach=attach, workers=args.workers)
                           for attach in attachments}
                rate = (_api_rate(home, direction, message[2], max(3, count // 4),
                                  [pki.root, pki.inter]) if direction != "relay" else 0.0)
                for attach, (gateway, peak, cpu, rest) in through.items():
                    rows.append(Row(attach, direction, label, count, alone, gateway, rate,
                                    peak, 1000 * cpu / count, 1000 * alone_rest / count,
                                    1000 * rest / count))
                print(f"  {direction} {label}: done", file=sys.stderr)
    _report(rows, args)


def _report(rows: list[Row], args: argparse.Namespace) -> None:
    print(f"# Gateway throughput ({cpu_model()}, {os.cpu_count()} cores, revision"
          f" {git_revision()}, {args.nodes} node(s) of {args.workers} worker(s),"
          f" {args.sessions} smtp-source sessions, background {BACKGROUND:.2f} cores"
          f"{', quick' if args.quick else ''})\n")
    print("| attachment | direction | size | messages | Postfix alone msg/s"
          " | Postfix + gateway msg/s | time x Postfix alone | in-process API msg/s"
          " | gateway / API | node CPU ms/msg | node peak MiB |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        api_rate, share = (f"{r.api_per_s:.1f}", f"{r.gateway_per_s / r.api_per_s:.0%}"
                           ) if r.api_per_s else ("-", "-")
        print(f"| {r.attach} | {r.direction} | {r.size} | {r.count} | {r.postfix_per_s:.1f} |"
              f" {r.gateway_per_s:.1f} | {r.gateway_s / r.postfix_alone_s:.2f} |"
              f" {api_rate} | {share} | {r.node_cpu_ms:.2f} | {r.node_peak_mib:.0f} |")
    print()
    for r in rows:
        if r.direction == "relay":  # the gateway's own cost: no goal of the issue
            continue
        slower = r.gateway_s / r.postfix_alone_s
        share = r.gateway_per_s / r.api_per_s
        print(f"goal {r.attach} {r.direction} {r.size}: gateway at most 2x Postfix alone's"
              f" time: {slower:.2f}x {'met' if slower <= 2 else 'NOT met'}; at least 50% of"
              f" the in-process API rate: {share:.0%} {'met' if share >= 0.5 else 'NOT met'}")
    for attach in dict.fromkeys(r.attach for r in rows):
        small = [r for r in rows if r.size == "10 KB" and r.attach == attach
                 and r.direction != "relay"]
        if not small:
            continue
        per_node = min(r.gateway_per_s for r in small) * 3600 / args.nodes
        for what, goal in (("average", AVERAGE_PER_HOUR), ("peak", PEAK_PER_HOUR)):
            print(f"goal {attach} {what} load, {goal:,} messages/hour (10 KB, the slower"
                  f" direction) on one node: {per_node:,.0f}/hour"
                  f" {'met' if per_node >= goal else 'NOT met'}")
    _budget(rows)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2))


def _budget(rows: list[Row]) -> None:
    """What the node may spend per message for each goal, from what the rest of the machine
    spent on the same messages (Postfix's path through the filter, smtp-source, smtp-sink):
    at the goal's rate the cores give ``cores / rate`` of CPU per message, the rest takes its
    share, the node gets what is left. Beside it: what the node spent, the API's own work
    (the cryptography, the least any node does) and the node's floor without cryptography
    (the relay row: SMTP in and out, policy, audit)."""
    cores = os.cpu_count() or 1
    print(f"\n# CPU per message ({cores} cores; ms): what the goals leave the node\n")
    print("| attachment | direction | size | Postfix alone: rest of the machine"
          " | with the gateway: rest of the machine | node | API's own work"
          " | node's floor (relay) | node may spend for 2x | node may spend for 50% of API |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    floors = {(r.attach, r.size): r.node_cpu_ms for r in rows if r.direction == "relay"}
    for r in rows:
        if r.direction == "relay":
            continue
        floor = floors.get((r.attach, r.size))
        for_2x = 1000 * cores / (r.postfix_per_s / 2) - r.rest_cpu_ms
        for_api = 1000 * cores / (r.api_per_s / 2) - r.rest_cpu_ms
        print(f"| {r.attach} | {r.direction} | {r.size} | {r.alone_rest_cpu_ms:.2f} |"
              f" {r.rest_cpu_ms:.2f} | {r.node_cpu_ms:.2f} | {1000 / r.api_per_s:.2f} |"
              f" {'-' if floor is None else f'{floor:.2f}'} | {for_2x:.2f} | {for_api:.2f} |")


if __name__ == "__main__":
    main()
