"""``smimekit gateway serve``: the S/MIME gateway as Postfix's after-queue content filter."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import signal
from typing import TYPE_CHECKING

import click

from smimekit.cli.common import CliError, cli_config, cli_globals, open_store

if TYPE_CHECKING:
    from smimekit.config import GatewayConfig
    from smimekit.gateway.model import Processor
    from smimekit.gateway.server import GatewayServer
    from smimekit.store import Store

JOURNAL_DAYS = 14
"""Journal rows older than this are dropped at start: longer than Postfix keeps a message
(maximal_queue_lifetime, 5 days by default), so no retry can need them."""


@click.group()
def gateway() -> None:
    """The S/MIME gateway: Postfix's after-queue content filter (serve)."""


@gateway.command("serve")
@click.option("--listen", metavar="HOST:PORT",
              help="Where Postfix's content_filter hands mail over [default: [gateway] listen,"
              " 127.0.0.1:10025].")
@click.option("--next-hop", metavar="HOST:PORT",
              help="Postfix's re-injection smtpd [default: [gateway] next_hop,"
              " 127.0.0.1:10026].")
@click.option("--grace", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Seconds to let messages in flight finish at SIGTERM.")
def serve(listen: str | None, next_hop: str | None, grace: float) -> None:
    """Take mail from Postfix over SMTP, process it by policy, hand it back; until SIGTERM.

    Answers 250 only after the next hop accepted everything made of a message; any failure
    is a 4xx, so Postfix keeps the message and tries again (docs/gateway.md "No lost mail").
    The configuration file (--config) holds the [gateway] table; the store (--data-dir or
    --database-url) holds the delivery journal, shared by every node.
    """
    from smimekit.config import GatewayConfig
    from smimekit.gateway.journal import StoreJournal
    from smimekit.gateway.relay import NextHop, parse_address
    from smimekit.gateway.server import GatewayHandler, GatewayServer, Limits

    config = cli_config().gateway or GatewayConfig()
    listen = listen or config.listen
    next_hop = next_hop or config.next_hop
    for option, value in (("--listen", listen), ("--next-hop", next_hop)):
        try:
            parse_address(value, any_port=option == "--listen")
        except ValueError:
            raise CliError(f"{option}: {value!r} is not HOST:PORT") from None
    store = open_store()
    try:
        store.prune_deliveries(dt.datetime.now(dt.UTC) - dt.timedelta(days=JOURNAL_DAYS))
        handler = GatewayHandler(
            _processor(config, store), StoreJournal(store),
            NextHop(next_hop, timeout=config.timeout),
            limits=Limits(config.max_message_size, config.max_recipients))
        server = GatewayServer(handler, listen)
        logging.basicConfig(level=logging.INFO,
                            format="%(asctime)s %(name)s %(levelname)s %(message)s")
        logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd: every command
        asyncio.run(_run(server, next_hop, grace))
    finally:
        store.close()


def _processor(config: GatewayConfig, store: Store) -> Processor:
    """The policy pipeline (gateway/pipeline.py) when ``internal_domains`` says what is
    inside; without them there is no inbound or outbound and every message passes unchanged
    (a plain relay)."""
    if not config.internal_domains:
        from smimekit.gateway.passthrough import PassThrough

        return PassThrough()
    from smimekit.gateway.pipeline import pipeline_from_data_dir

    return pipeline_from_data_dir(cli_config(), store, cli_globals().data_dir)


async def _run(server: GatewayServer, next_hop: str, grace: float) -> None:
    try:
        await server.start()
    except OSError as exc:
        raise CliError(f"cannot listen on {server.host}:{server.port}:"
                       f" {exc.strerror or exc}") from None
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    logging.getLogger("smimekit.gateway").info(
        "listening on %s:%d, next hop %s", server.host, server.port, next_hop)
    await stopping.wait()
    await server.stop(grace)
    logging.getLogger("smimekit.gateway").info("stopped")
