"""``smimekit gateway serve`` as a process: listens, passes mail on with the journal in the
store, stops cleanly at SIGTERM; mistakes are one line and a non-zero exit."""

from __future__ import annotations

import signal
import smtplib
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from loopback import free_port, wait_for_port
from smtpkit import gateway_config, message, sink

from smimekit.gateway.journal import message_key
from smimekit.gateway.model import Envelope
from smimekit.store import Store

ANN, BOB = "ann@example.org", "bob@example.net"


def _smimekit(data_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "smimekit.cli.main", "--data-dir", str(data_dir), *args]


def test_serve_passes_mail_journals_it_and_stops_at_sigterm(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    Store.open(None, data_dir).close()
    port = free_port()
    data = message("served")
    with sink() as (handler, sink_port):
        config = gateway_config(tmp_path, f'listen = "127.0.0.1:{port}"\n'
                                          f'next_hop = "127.0.0.1:{sink_port}"\n')
        server = subprocess.Popen(_smimekit(data_dir, "--config", str(config), "gateway",
                                            "serve"), stderr=subprocess.PIPE)
        try:
            wait_for_port(port, server, "gateway serve")
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                refused = client.sendmail(ANN, [BOB], data)
            assert refused == {}
        finally:
            server.send_signal(signal.SIGTERM)
            _, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    assert [m.data for m in handler.received] == [data]
    assert b"listening on 127.0.0.1:" in err and b"Traceback" not in err
    assert b"no listen_submission: all mail is treated as from outside" in err
    assert b"Hello." not in err  # no message content in the log
    with Store.open(None, data_dir, create=False) as store:
        key = message_key(Envelope(ANN, (BOB,), data))
        assert store.delivered_keys(key) == {"0:bob@example.net"}
        [row] = [r for r in store.audit_entries() if r.action.startswith("gateway.")]
        assert (row.action, row.subject) == ("gateway.passed", BOB)


@pytest.mark.parametrize(("option", "value"), [("--listen", "localhost"),
                                              ("--listen-submission", "10027")])
def test_bad_listen_address_is_one_line(tmp_path: Path, option: str, value: str) -> None:
    Store.open(None, tmp_path / "data").close()
    done = subprocess.run(_smimekit(tmp_path / "data", "--config", str(gateway_config(tmp_path)),
                                    "gateway", "serve", option, value),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr == f"smimekit: error: {option}: {value!r} is not HOST:PORT\n"


def test_no_store_is_one_line(tmp_path: Path) -> None:
    done = subprocess.run(_smimekit(tmp_path / "nowhere", "gateway", "serve"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and done.stderr.count("\n") == 1
    assert done.stderr.startswith("smimekit: error:") and "Traceback" not in done.stderr


def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    Store.open(None, tmp_path / "data").close()
    with sink() as (_, busy):
        done = subprocess.run(_smimekit(tmp_path / "data", "--config",
                                        str(gateway_config(tmp_path)), "gateway", "serve",
                                        "--listen", f"127.0.0.1:{busy}"),
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.startswith(f"smimekit: error: cannot listen on 127.0.0.1:{busy}:")
    assert done.stderr.count("\n") == 1


def test_no_key_passphrase_file_is_one_line(tmp_path: Path) -> None:
    Store.open(None, tmp_path / "data").close()
    done = subprocess.run(_smimekit(tmp_path / "data", "gateway", "serve"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert "key_passphrase_file is not set" in done.stderr


def test_a_number_out_of_range_is_one_line_and_nothing_starts(tmp_path: Path) -> None:
    # review 12 item 10: max_message_size = 0 used to switch the limit off
    Store.open(None, tmp_path / "data").close()
    for line, named in (("max_message_size = 0", "gateway.max_message_size must be at least 1"),
                        ("max_recipients = 0", "gateway.max_recipients must be at least 1"),
                        ("timeout = -1", "gateway.timeout must be above 0")):
        config = gateway_config(tmp_path, line + "\n")
        done = subprocess.run(_smimekit(tmp_path / "data", "--config", str(config), "gateway",
                                        "serve", "--listen", f"127.0.0.1:{free_port()}"),
                              capture_output=True, text=True, timeout=60)
        assert done.returncode != 0 and done.stderr.count("\n") == 1, done.stderr
        assert done.stderr.startswith("smimekit: error:") and named in done.stderr


def test_wrong_key_passphrase_exits_1_at_start_without_listening(tmp_path: Path) -> None:
    # review 12 item 6: not a 4xx per message; nothing listens, so Postfix's connection is
    # refused and it defers the mail (test_postfix_end_to_end: the gateway down and back)
    from smimekit.gateway.keys import StoreHeldKeys

    with Store.open(None, tmp_path / "data") as store:
        StoreHeldKeys.open(store, b"the right passphrase", create=True)
    port = free_port()
    config = gateway_config(tmp_path, f'listen = "127.0.0.1:{port}"\n')
    done = subprocess.run(_smimekit(tmp_path / "data", "--config", str(config), "gateway",
                                    "serve"), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("smimekit: error: the gateway's key store cannot be opened:"
                                  " wrong passphrase")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_serve_has_a_trusted_door_for_submission(tmp_path: Path) -> None:
    """--listen-submission (or [gateway] listen_submission) is a second listener: the audit
    names the door each message came through; without it the log says nothing is trusted."""
    data_dir = tmp_path / "data"
    Store.open(None, data_dir).close()
    public, trusted = free_port(), free_port()
    with sink() as (handler, sink_port):
        config = gateway_config(tmp_path, f'listen = "127.0.0.1:{public}"\n'
                                          f'next_hop = "127.0.0.1:{sink_port}"\n'
                                          'internal_domains = ["example.org"]\n')
        server = subprocess.Popen(_smimekit(data_dir, "--config", str(config), "gateway",
                                            "serve", "--listen-submission",
                                            f"127.0.0.1:{trusted}"), stderr=subprocess.PIPE)
        try:
            wait_for_port(public, server, "gateway serve")
            wait_for_port(trusted, server, "gateway serve (submission)")
            for port, subject in ((public, "by the public door"), (trusted, "by submission")):
                with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                    assert client.sendmail(ANN, ["carol@example.org"], message(subject)) == {}
        finally:
            server.send_signal(signal.SIGTERM)
            _, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    assert len(handler.received) == 2
    assert f"listening on 127.0.0.1:{trusted} (trusted door)".encode() in err
    assert b"no listen_submission" not in err
    with Store.open(None, data_dir, create=False) as store:
        rows = [(r.details["door"], r.details["direction"]) for r in store.audit_entries()
                if r.action.startswith("gateway.")]
    assert sorted(rows) == [("public", "inbound"), ("submission", "internal")]
