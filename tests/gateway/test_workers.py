"""``gateway serve --workers N``: one node as N forked worker processes (docs/gateway.md
"Deployment"), as real processes: the node with the real policy pipeline over a PostgreSQL
store (tests/gwhome.py), mail straight to its doors over SMTP, an SMTP sink as the next hop.

What is held: messages arrive once each and more than one worker did the work (the journal
names a node host:pid); a worker killed with -9 is replaced and mail still flows; SIGTERM
ends the parent with 0 and leaves no worker behind; a bad ``--workers`` or ``[gateway]
workers`` is one line and exit 1.
"""

from __future__ import annotations

import os
import signal
import smtplib
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from gwhome import GatewayHome, make_home
from gwnodes import Node, journal_nodes, pg_store, tally
from loopback import wait_until
from pki import PKI
from smtpkit import SinkHandler, sink

pytestmark = [pytest.mark.slow]


@dataclass
class Served:
    node: Node
    sink: SinkHandler
    home: GatewayHome
    database_url: str


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with ExitStack() as stack:
        url = stack.enter_context(pg_store(tmp_path / "data"))
        home = make_home(tmp_path, PKI(), database_url=url)
        handler, sink_port = stack.enter_context(sink())
        node = Node("workers", sink_port, data_dir=home.data_dir, database_url=url,
                    config=home.config, log_dir=tmp_path, workers=2)
        node.start()
        stack.callback(node.stop)
        yield Served(node, handler, home, url)


def _send_outbound(served: Served, ids: list[str]) -> None:
    """Each message on a connection of its own, four at a time (so that both workers take
    some), through the trusted door: alice -> partner, signed and encrypted."""
    def one(message_id: str) -> None:
        sender, to, data = served.home.outbound(f"Hello {message_id}.\r\n".encode(),
                                                message_id)
        with smtplib.SMTP(served.node.host, served.node.submission_port, timeout=60) as client:
            client.sendmail(sender, to, data)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, ids))


def _until_every_worker_works(send: Callable[[list[str]], None], url: str, data_dir: Path,
                              workers: list[int], *, prefix: str, batch: int,
                              rounds: int = 10) -> list[str]:
    """Send batches of ``batch`` messages (``send``) until the shared journal names every
    one of ``workers``, at most ``rounds`` batches; the Message-IDs sent. Which worker
    accepts a connection is the kernel's choice between the two woken: a worker that
    answers fast can take a whole batch, so one batch does not always show both."""
    ids: list[str] = []
    for round_ in range(rounds):
        sent = [f"{prefix}{round_}-{i}@example.org" for i in range(batch)]
        send(sent)
        ids += sent
        journal = journal_nodes(url, data_dir)
        if {int(n.rsplit(":", 1)[1]) for n in journal} >= set(workers):
            break
    return ids


def test_two_workers_each_message_arrives_once_and_both_work(served: Served) -> None:
    workers = served.node.children()
    assert len(workers) == 2
    ids = _until_every_worker_works(lambda batch: _send_outbound(served, batch),
                                    served.database_url, served.home.data_dir, workers,
                                    prefix="w", batch=20)
    copies = tally(served.sink.received)
    assert sorted(copies) == sorted(ids)
    assert all(len(hashes) == 1 for hashes in copies.values())
    # every copy is encrypted to the partner (the real pipeline ran in the workers)
    assert all(b"application/pkcs7-mime" in got.data for got in served.sink.received)
    journal = journal_nodes(served.database_url, served.home.data_dir)
    assert sum(journal.values()) == len(ids)
    pids = {int(node.rsplit(":", 1)[1]) for node in journal}
    assert len(pids) == 2 and pids <= set(workers), (journal, workers)


def test_a_worker_killed_while_idle_is_replaced_and_mail_flows(served: Served) -> None:
    first = served.node.children()
    assert len(first) == 2
    os.kill(first[0], signal.SIGKILL)
    wait_until(lambda: len(served.node.children()) == 2
               and first[0] not in served.node.children(), "a new worker", 60)
    assert served.node.process is not None and served.node.process.poll() is None
    ids = [f"k{i}@example.org" for i in range(6)]
    _send_outbound(served, ids)
    copies = tally(served.sink.received)
    assert sorted(copies) == sorted(ids)
    assert all(len(hashes) == 1 for hashes in copies.values())
    log = served.node.log.read_text()
    assert f"worker {first[0]} died (killed by SIGKILL); starting another" in log
    assert "Traceback" not in log


def test_sigterm_exits_0_and_leaves_no_worker(served: Served) -> None:
    process = served.node.process
    assert process is not None
    workers = served.node.children()
    assert len(workers) == 2
    _send_outbound(served, ["t@example.org"])
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    served.node.process = None
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists(), f"worker {pid} outlived the parent"
    assert "Traceback" not in served.node.log.read_text()


@pytest.mark.parametrize("how", ["--workers=0", "--workers=65", "config"])
def test_a_bad_workers_value_is_one_line_and_exit_1(tmp_path: Path, how: str) -> None:
    config = tmp_path / "smimekit.toml"
    config.write_text("[gateway]\nworkers = 65\n" if how == "config" else "[gateway]\n")
    args = [sys.executable, "-m", "smimekit.cli.main", "--data-dir", str(tmp_path / "data"),
            "--config", str(config), "gateway", "serve", "--listen", "127.0.0.1:0"]
    if how != "config":
        args.append(how)
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "workers" in lines[0] and "64" in lines[0]


def test_a_bad_address_with_workers_is_one_line_and_exit_1(tmp_path: Path) -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        config = tmp_path / "smimekit.toml"
        config.write_text("[gateway]\n")
        done = subprocess.run(
            [sys.executable, "-m", "smimekit.cli.main", "--data-dir", str(tmp_path / "data"),
             "--config", str(config), "gateway", "serve", "--listen", f"127.0.0.1:{port}",
             "--workers", "2"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot listen on" in lines[0], done.stderr


def test_workers_dying_too_often_make_the_parent_exit_1_saying_why(served: Served) -> None:
    process = served.node.process
    assert process is not None
    for _ in range(4):  # more than max_restarts(2) = 3 within 10 s
        wait_until(lambda: len(served.node.children()) == 2, "two workers", 60)
        victim = served.node.children()[0]
        os.kill(victim, signal.SIGKILL)
        # a killed worker is listed until the parent reaps it: counting it as one of the
        # two would kill the corpse next time, and the parent would see one death too few
        wait_until(lambda pid=victim: pid not in served.node.children()
                   or process.poll() is not None, "the parent to reap the killed worker", 30)
    assert process.wait(30) == 1
    served.node.process = None
    log = served.node.log.read_text()
    assert "died within 10 s, more than 3; giving up" in log
    assert "Traceback" not in log


def test_no_worker_outlives_a_parent_killed_with_9(served: Served) -> None:
    workers = served.node.children()
    assert len(workers) == 2
    served.node.kill9()
    wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers),
               "the workers to end with their parent", 30)


def test_two_workers_each_log_in_to_the_token_and_sign_with_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The parent never opens the token: each worker loads the PKCS#11 module and logs in
    after the fork, and both sign with alice's key that lives only in the token."""
    import datetime as dt

    from softhsm import init_tokens, require_module

    from smimekit.keys.pkcs12 import write_pkcs12
    from smimekit.store import Store
    from smimekit.validation.trust import TrustStore

    module = require_module()
    pin, label = "workers-pin-2718", "gw-workers"
    monkeypatch.setenv("SOFTHSM2_CONF", init_tokens(tmp_path / "softhsm", [label], pin=pin,
                                                    so_pin="so-pin-2718")["SOFTHSM2_CONF"])
    pki = PKI()
    alice = pki.person("wk-alice", email="alice@example.org", issuer=(pki.root_key, pki.root))
    partner = pki.person("wk-partner", email="partner@partner.example")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with ExitStack() as stack:
        url = stack.enter_context(pg_store(data_dir))
        TrustStore(data_dir).add([pki.root])
        with Store.open(url, data_dir) as store:
            store.record_harvested(partner.email, partner.cert, chain=(pki.inter,),
                                   role="signer", preferred=False,
                                   seen_at=dt.datetime.now(dt.UTC), message_ref="workers")
        (tmp_path / "pin").write_text(pin + "\n")
        config = tmp_path / "smimekit.toml"
        config.write_text(f'[gateway]\ninternal_domains = ["example.org"]\n'
                          f'pkcs11_module = "{module}"\ntoken_label = "{label}"\n'
                          f'pin_file = "{tmp_path / "pin"}"\n')
        p12 = tmp_path / "alice.p12"
        p12.write_bytes(write_pkcs12([("current", alice.key, alice.cert)], [pki.root],
                                     b"p12 pass", iterations=1000))
        (tmp_path / "p12.pass").write_text("p12 pass\n")
        cli = [sys.executable, "-m", "smimekit.cli.main", "--data-dir", str(data_dir),
               "--database-url", url, "--config", str(config)]
        imported = subprocess.run(
            [*cli, "gateway", "keys", "import", "--into-token", "--passphrase-file",
             str(tmp_path / "p12.pass"), str(p12)], capture_output=True, text=True,
            timeout=120)
        assert imported.returncode == 0, imported.stderr
        handler, sink_port = stack.enter_context(sink())
        node = Node("token-workers", sink_port, data_dir=data_dir, database_url=url,
                    config=config, log_dir=tmp_path, workers=2)
        node.start()
        stack.callback(node.stop)
        workers = node.children()

        def one(message_id: str) -> None:
            data = (f"From: {alice.email}\r\nTo: {partner.email}\r\nSubject: {message_id}\r\n"
                    f"Message-ID: <{message_id}>\r\n\r\nHello.\r\n").encode()
            with smtplib.SMTP(node.host, node.submission_port, timeout=60) as client:
                client.sendmail(alice.email, [partner.email], data)

        def four_at_a_time(batch: list[str]) -> None:
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(one, batch))

        ids = _until_every_worker_works(four_at_a_time, url, data_dir, workers, prefix="tk",
                                        batch=12)
        copies = tally(handler.received)
        assert sorted(copies) == sorted(ids)
        assert all(b"application/pkcs7-mime" in got.data for got in handler.received)
        journal = journal_nodes(url, data_dir)
        assert {int(n.rsplit(":", 1)[1]) for n in journal} == set(workers), journal
        log = node.log.read_text()
        assert pin not in log and "Traceback" not in log


def test_workers_that_cannot_start_stop_the_node_with_exit_1(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    from smimekit.store import Store

    Store.open(None, data_dir, create=True).close()
    config = tmp_path / "smimekit.toml"
    config.write_text(f'[gateway]\nkey_passphrase_file = "{tmp_path / "absent.pass"}"\n')
    done = subprocess.run(
        [sys.executable, "-m", "smimekit.cli.main", "--data-dir", str(data_dir),
         "--config", str(config), "gateway", "serve", "--listen", "127.0.0.1:0",
         "--workers", "2"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "could not start" in done.stderr.splitlines()[-1]
    assert "Traceback" not in done.stderr
