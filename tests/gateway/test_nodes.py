"""Two gateway nodes sharing one PostgreSQL store behind one Postfix, each a host of its own
on a separate loopback address: node 1 listens on 127.0.0.2 and node 2 on 127.0.0.3, on the
same port (Linux routes all of 127.0.0.0/8 to the loopback interface, so nothing leaves the
machine, and each node is reached only by its address, as two machines would be).

Postfix has two front smtpd listeners: the first hands its mail to node 1 and the second to
node 2, each with the other node as the fallback destination of the same content filter
(``content_filter = scan:[127.0.0.2]:<port>,[127.0.0.3]:<port>``, Postfix 3.5's list of next
hops). Load is split by the front a client uses; when a node is down Postfix hands its mail to
the other one within the same delivery attempt.

Most tests run the nodes without a policy (every message passes unchanged); one runs both with
the real policy pipeline over the shared store (tests/gwhome.py: held keys, trust anchors, a
partner's certificate), so that either node signs, encrypts and decrypts.
"""

from __future__ import annotations

import smtplib
import socket
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from gwhome import GatewayHome, make_home
from gwnodes import FrontsPostfix, Node, journal_nodes, pg_store, send, tally
from loopback import free_port
from pki import PKI
from postfix import require_postfix
from smtpkit import SinkHandler, sink

from smimekit import api

pytestmark = [pytest.mark.interop, pytest.mark.slow]

ANN, BOB, CAROL = "ann@example.org", "bob@example.net", "carol@example.net"
NODE_HOSTS = ("127.0.0.2", "127.0.0.3")


@dataclass
class Cluster:
    postfix: FrontsPostfix
    sink: SinkHandler
    nodes: tuple[Node, Node]
    database_url: str
    data_dir: Path
    home: GatewayHome | None = None
    """The nodes' keys, trust and configuration when they run the policy pipeline."""

    def wait_delivered(self, ids: set[str]) -> None:
        self.postfix.wait(lambda: ids <= set(tally(self.sink.received)),
                          f"{len(ids)} messages at the sink", 90)
        self.postfix.wait(lambda: not self.postfix.queued(), "an empty Postfix queue", 90)

    def journal(self) -> dict[str, int]:
        """Copies journalled, by node name (node-1, node-2) rather than host:pid."""
        counts = journal_nodes(self.database_url, self.data_dir)
        names = {}
        for node in self.nodes:
            for key, count in counts.items():
                if any(key.endswith(f":{pid}") for pid in node.pids):
                    names[node.name] = names.get(node.name, 0) + count
        return names


def _cluster(stack: ExitStack, tmp_path: Path, pki: PKI | None = None) -> Cluster:
    """Postfix with two fronts and two nodes; with ``pki``, the nodes run the policy
    pipeline (tests/gwhome.py's home in the shared store), else they pass mail unchanged."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    url = stack.enter_context(pg_store(data_dir))
    home = make_home(tmp_path, pki, database_url=url) if pki is not None else None
    handler, sink_port = stack.enter_context(sink())
    port, trusted = free_port(), free_port()
    postfix = FrontsPostfix(tmp_path / "postfix", sink_port=sink_port,
                            nodes=[(host, port) for host in NODE_HOSTS],
                            submission=[(host, trusted) for host in NODE_HOSTS])
    nodes = tuple(Node(f"node-{i + 1}", postfix.reinject_port, data_dir=data_dir,
                       database_url=url, host=host, port=port, submission_port=trusted,
                       log_dir=tmp_path, config=home.config if home is not None else None)
                  for i, host in enumerate(NODE_HOSTS))
    postfix.start()
    stack.callback(postfix.stop)
    for node in nodes:
        node.start()
        stack.callback(node.stop)
    return Cluster(postfix, handler, (nodes[0], nodes[1]), url, data_dir, home)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    require_postfix()
    with ExitStack() as stack:
        yield _cluster(stack, tmp_path)


def _ids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{i}@nodes.test" for i in range(count)]


def _answers(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        return False
    return True


def test_each_node_is_its_own_host(cluster: Cluster) -> None:
    """One port, three addresses: each node answers on its own address only."""
    port = cluster.nodes[0].port
    assert [_answers(host, port) for host in ("127.0.0.1", *NODE_HOSTS)] == [False, True, True]
    cluster.nodes[1].kill9()
    assert [_answers(host, port) for host in NODE_HOSTS] == [True, False]


def test_two_nodes_share_the_load_and_every_message_arrives_once(cluster: Cluster) -> None:
    sent = send(cluster.postfix.smtpd_port, _ids("a", 10), sender=ANN, to=[BOB])
    sent |= send(cluster.postfix.fronts[1], _ids("b", 10), sender=ANN, to=[BOB])
    assert len(sent) == 20
    cluster.wait_delivered(set(sent))
    copies = tally(cluster.sink.received)
    assert all(copies[i] == [sent[i]] for i in sent)
    assert len(cluster.sink.received) == 20
    assert cluster.journal() == {"node-1": 10, "node-2": 10}


def test_a_retry_served_by_the_other_node_skips_what_the_first_delivered(
        cluster: Cluster) -> None:
    postfix = cluster.postfix
    postfix.defer_file.write_text(f"{CAROL} 450 4.2.0 mailbox busy\n")
    postfix.reload()
    sent = send(postfix.smtpd_port, ["shared@nodes.test"], sender=ANN, to=[BOB, CAROL])
    [message_id] = sent
    postfix.wait(lambda: "deferred carol@example.net" in postfix.log(),
                 "node 1's 4xx for carol")
    # bob's copy went through Postfix's queue after the re-injection: it arrives in its time
    postfix.wait(lambda: len(cluster.sink.received) >= 1, "bob's copy")
    assert [m.recipients for m in cluster.sink.received] == [(BOB,)]
    cluster.nodes[0].kill9()  # the retry can only be served by node 2
    postfix.defer_file.write_text("")
    postfix.reload()
    postfix.flush()
    postfix.wait(lambda: len(cluster.sink.received) >= 2, "carol's copy", 90)
    postfix.wait(lambda: not postfix.queued(), "an empty Postfix queue", 90)
    assert sorted(m.recipients for m in cluster.sink.received) == [(BOB,), (CAROL,)]
    assert cluster.journal() == {"node-1": 1, "node-2": 1}
    copies = tally(cluster.sink.received)  # one copy to each recipient, the same body
    assert list(copies) == [message_id] and copies[message_id] == [sent[message_id]] * 2


def test_one_node_killed_the_other_carries_on(cluster: Cluster) -> None:
    first = send(cluster.postfix.fronts[1], _ids("first", 5), sender=ANN, to=[BOB])
    cluster.wait_delivered(set(first))
    cluster.nodes[1].kill9()
    after = send(cluster.postfix.fronts[1], _ids("after", 10), sender=ANN, to=[BOB])
    after |= send(cluster.postfix.smtpd_port, _ids("front1", 5), sender=ANN, to=[BOB])
    cluster.wait_delivered(set(after))
    copies = tally(cluster.sink.received)
    assert len(cluster.sink.received) == 20 and all(len(copies[i]) == 1 for i in after)
    assert cluster.journal() == {"node-1": 15, "node-2": 5}


def test_two_nodes_running_the_policy_pipeline_sign_encrypt_and_decrypt(
        tmp_path: Path, pki: PKI) -> None:
    """Both nodes with the real pipeline over the shared PostgreSQL store: mail from alice
    to the partner and from the partner to bob (a webmail user) through each front, so each
    node signs and encrypts and each decrypts and verifies."""
    require_postfix()
    with ExitStack() as stack:
        cluster = _cluster(stack, tmp_path, pki)
        home = cluster.home
        assert home is not None
        expected_out, expected_in = set(), set()
        fronts = zip(cluster.postfix.fronts, cluster.postfix.submission_fronts,
                     ("node-1", "node-2"), strict=True)
        for front, submission, node in fronts:
            # alice's mail through the trusted door, the partner's through the public one
            with smtplib.SMTP("127.0.0.1", submission, timeout=60) as client:
                for i in range(3):
                    body = f"Outbound {i} through {node}: the price is 42.\r\n".encode()
                    expected_out.add(body)
                    client.sendmail(*home.outbound(body, f"out-{node}-{i}@example.org"))
            with smtplib.SMTP("127.0.0.1", front, timeout=60) as client:
                for i in range(3):
                    body = f"Inbound {i} through {node}: the code is 7.\r\n".encode()
                    expected_in.add(body)
                    client.sendmail(*home.inbound(body, f"in-{node}-{i}@partner.example"))
        cluster.postfix.wait(lambda: len(cluster.sink.received) >= 12, "12 messages", 120)
        cluster.postfix.wait(lambda: not cluster.postfix.queued(), "an empty Postfix queue",
                             90)
        journal = cluster.journal()
    assert len(cluster.sink.received) == 12
    to_partner = cluster.sink.to(home.partner.email)
    to_bob = cluster.sink.to(home.bob.email)
    assert len(to_partner) == len(to_bob) == 6
    opened_out = set()
    for got in to_partner:
        assert b"the price is 42" not in got.data  # encrypted on the way out
        opened = api.decrypt_verify(got.data, home.partner.key, home.partner.cert,
                                    trust=[pki.root])
        assert opened.verdict.valid  # type: ignore[attr-defined]
        [signer] = opened.verdict.signers  # type: ignore[attr-defined]
        assert signer.signer.emails == (home.alice.email,)
        opened_out.add(opened.content.partition(b"\r\n\r\n")[2])
    assert opened_out == expected_out
    opened_in = set()
    for got in to_bob:
        head, _, body = got.data.partition(b"\r\n\r\n")
        unfolded = b" ".join(head.split(b"\r\n\t"))
        assert b"encryption=decrypted; signature=valid" in unfolded, head
        assert b"pkcs7" not in head.lower()  # delivered decrypted to the webmail user
        opened_in.add(body)
    assert opened_in == expected_in
    assert journal == {"node-1": 6, "node-2": 6}  # each node did its front's share
