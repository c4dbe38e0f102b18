"""``smimekit gateway serve``: the S/MIME gateway as Postfix's after-queue content filter."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import signal
from typing import TYPE_CHECKING

import click

from smimekit.cli.common import CliError, cli_config, cli_globals, open_store
from smimekit.errors import SmimeError

if TYPE_CHECKING:
    from smimekit.config import Config, GatewayConfig
    from smimekit.gateway.model import Processor
    from smimekit.gateway.server import GatewayHandler, GatewayServer
    from smimekit.store import Store

JOURNAL_DAYS = 14
"""Journal rows older than this are dropped at start and daily: longer than Postfix keeps a message
(maximal_queue_lifetime, 5 days by default), so no retry can need them."""


@click.group()
def gateway() -> None:
    """The S/MIME gateway: Postfix's after-queue content filter (serve, keys, policy)."""


@gateway.command("serve")
@click.option("--listen", metavar="HOST:PORT",
              help="Where Postfix's content_filter hands mail over [default: [gateway] listen,"
              " 127.0.0.1:10025].")
@click.option("--listen-submission", metavar="HOST:PORT",
              help="The trusted door: where Postfix's submission smtpd hands mail over; only"
              " mail from here is signed and outbound [default: [gateway] listen_submission,"
              " none].")
@click.option("--next-hop", metavar="HOST:PORT",
              help="Postfix's re-injection smtpd [default: [gateway] next_hop,"
              " 127.0.0.1:10026].")
@click.option("--grace", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Seconds to let messages in flight finish at SIGTERM.")
@click.option("--attach", type=click.Choice(["after-queue", "before-queue"]),
              help="How Postfix hands mail over: content_filter (after-queue) or"
              " smtpd_proxy_filter (before-queue) [default: [gateway] attach, after-queue].")
@click.option("--workers", type=int, metavar="N",
              help="Worker processes of this node (1 to 64): more than 1 forks that many,"
              " sharing the listening sockets, to use every core [default: [gateway]"
              " workers, 1].")
def serve(listen: str | None, listen_submission: str | None, next_hop: str | None,
          grace: float, attach: str | None, workers: int | None) -> None:
    """Take mail from Postfix over SMTP, process it by policy, hand it back; until SIGTERM.

    Answers 250 only after the next hop accepted everything made of a message; any failure
    is a 4xx, so Postfix keeps the message and tries again (docs/gateway.md "No lost mail").
    The configuration file (--config) holds the [gateway] table (key_passphrase_file opens
    the keys the gateway holds); the store (--data-dir or --database-url) holds those keys,
    the audit log and the delivery journal, shared by every node. Mail from --listen is
    from outside whatever its sender claims; only mail from --listen-submission (Postfix's
    submission smtpd) may be outbound and signed.
    """
    from smimekit.config import GatewayConfig
    from smimekit.gateway.relay import parse_address
    from smimekit.gateway.server import GatewayServer

    whole = cli_config()
    config = whole.gateway or GatewayConfig()
    listen = listen or config.listen
    submission = listen_submission or config.listen_submission
    next_hop = next_hop or config.next_hop
    for option, value in (("--listen", listen), ("--listen-submission", submission),
                          ("--next-hop", next_hop)):
        if value is None:
            continue
        try:
            parse_address(value, any_port=option != "--next-hop")
        except ValueError:
            raise CliError(f"{option}: {value!r} is not HOST:PORT") from None
    workers = config.workers if workers is None else workers
    if not 1 <= workers <= 64:
        raise CliError(f"--workers must be at least 1 and at most 64 (it is {workers})")
    attach = attach or config.attach
    if workers > 1:
        _serve_workers(whole, config, listen, submission, next_hop, grace, attach, workers)
        return
    store = open_store()
    try:
        _prune(store)
        handler = _handler(whole, config, store, next_hop, attach)
        servers = [GatewayServer(handler, listen)]
        if submission is not None:
            servers.append(GatewayServer(handler, submission, trusted=True))
        _logging()
        asyncio.run(_run(servers, next_hop, grace, store))
    finally:
        store.close()


def _logging(workers: int = 1) -> None:
    pid = " [%(process)d]" if workers > 1 else ""
    logging.basicConfig(level=logging.INFO,
                        format=f"%(asctime)s %(name)s{pid} %(levelname)s %(message)s")
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd: every command


def _handler(whole: Config, config: GatewayConfig, store: Store, next_hop: str,
             attach: str) -> GatewayHandler:
    """The SMTP front's handler of one gateway process over ``store``."""
    from smimekit.gateway.journal import StoreJournal
    from smimekit.gateway.relay import NextHop
    from smimekit.gateway.server import GatewayHandler, Limits

    return GatewayHandler(
        _processor(whole, store), StoreJournal(store), NextHop(next_hop, timeout=config.timeout),
        limits=Limits(config.max_message_size, config.max_recipients), attach=attach,
        threads=config.threads)


def _serve_workers(whole: Config, config: GatewayConfig, listen: str, submission: str | None,
                   next_hop: str, grace: float, attach: str, workers: int) -> None:
    """``--workers N`` (N > 1): bind here, fork N workers, supervise them
    (smimekit.gateway.workers)."""
    import socket

    from smimekit.gateway import workers as pool
    from smimekit.gateway.server import GatewayServer

    doors: list[tuple[str, socket.socket, bool]] = []
    try:
        for address, trusted in ((listen, False), (submission, True)):
            if address is None:
                continue
            try:
                doors.append((address, pool.bind(address), trusted))
            except OSError as exc:
                raise CliError(f"cannot listen on {address}: {exc.strerror or exc}") from None
        store = open_store()  # the journal pruned here, closed before any fork
        try:
            _prune(store)
        finally:
            store.close()
        _logging(workers)
        log = logging.getLogger("smimekit.gateway")

        def worker() -> int:
            try:
                store = open_store()
            except (SmimeError, CliError) as exc:
                log.error("worker cannot start: %s", _message(exc))
                return pool.CANNOT_START
            try:
                try:
                    handler = _handler(whole, config, store, next_hop, attach)
                except (SmimeError, CliError) as exc:
                    log.error("worker cannot start: %s", _message(exc))
                    return pool.CANNOT_START
                servers = [GatewayServer(handler, address, trusted=trusted, sock=sock)
                           for address, sock, trusted in doors]
                asyncio.run(_run(servers, next_hop, grace, store))
                return 0
            finally:
                store.close()

        log.info("%d workers, next hop %s", workers, next_hop)
        try:
            pool.supervise(workers, worker, grace)
        except pool.GiveUp as exc:
            raise CliError(str(exc)) from None
        log.info("stopped")
    finally:
        for _, sock, _ in doors:
            sock.close()


def _message(exc: Exception) -> str:
    return exc.format_message() if isinstance(exc, CliError) else str(exc)


def _prune(store: Store) -> None:
    store.prune_deliveries(dt.datetime.now(dt.UTC) - dt.timedelta(days=JOURNAL_DAYS))


async def _prune_daily(store: Store) -> None:
    log = logging.getLogger("smimekit.gateway")
    while True:
        await asyncio.sleep(24 * 3600)
        try:
            await asyncio.to_thread(_prune, store)
        except SmimeError as exc:  # the database is down: next time
            log.warning("the delivery journal was not pruned: %s", exc)


def _processor(config: Config, store: Store) -> Processor:
    # The policy pipeline: held keys opened with [gateway] key_passphrase_file, the
    # [directory] resolver over the store, the inbound context; every decision audited.
    # Without internal_domains every recipient is "relay": passed unchanged, still audited.
    from smimekit.gateway.pipeline import pipeline_from_data_dir

    return pipeline_from_data_dir(config, store, cli_globals().data_dir)


async def _run(servers: list[GatewayServer], next_hop: str, grace: float,
               store: Store) -> None:
    log = logging.getLogger("smimekit.gateway")
    for server in servers:
        try:
            await server.start()
        except OSError as exc:
            for started in servers:
                await started.stop()
            raise CliError(f"cannot listen on {server.host}:{server.port}:"
                           f" {exc.strerror or exc}") from None
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    for server in servers:
        log.info("listening on %s:%d (%s door), next hop %s", server.host, server.port,
                 "trusted" if server.trusted else "public", next_hop)
    if len(servers) == 1:
        log.info("no listen_submission: all mail is treated as from outside (none is signed"
                 " or outbound)")
    pruning = asyncio.create_task(_prune_daily(store))  # each worker: the same rows, idempotent
    await stopping.wait()
    pruning.cancel()
    await asyncio.gather(*(server.stop(grace) for server in servers))
    log.info("stopped")
