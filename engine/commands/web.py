"""`valuemail web`: serve the web app with waitress (the production WSGI server)."""

from __future__ import annotations

import functools
import gc
import ipaddress
import logging
import threading
from dataclasses import dataclass
from typing import Any

import click

log = logging.getLogger(__name__)

#: Worker threads per process; requests are short DB reads and small writes.
THREADS = 8


def register(main: click.Group) -> None:
    main.add_command(web)


@click.command()
@click.option("--host", default=None, help="Address to bind (default from [web] host, 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="Port (default from [web] port, 8000).")
@click.pass_context
def web(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Serve the admin area and the recipient pages."""
    # Imported here: engine.cli imports this module, and `serve` must be importable on its own.
    from ..cli import get_runtime

    runtime = get_runtime(ctx)
    settings = runtime.settings
    serve(build_app(runtime), host=host or settings.web.host, port=settings.web.port if port is None else port)


def build_app(runtime):
    """The production app of `runtime`: every page, "view in browser" included."""
    from ..rendering import Renderer
    from ..sending.view import make_view_renderer
    from ..web import create_app

    settings = runtime.settings
    renderer = Renderer(settings.templates_dir)
    return create_app(settings=settings, engine=runtime.engine, clock=runtime.clock,
                      view_renderer=make_view_renderer(settings=settings, renderer=renderer, clock=runtime.clock))


def make_server(app, *, host: str, port: int, threads: int = THREADS):
    """A waitress server bound to host:port (port 0 picks a free one); .run() serves, close_server() releases."""
    from waitress import create_server

    if not _is_loopback(host):
        log.warning("binding to %s: the admin area has no login yet; bind to 127.0.0.1 only", host)
    # Browsers keep idle connections open: waitress's default limit of 100 leaves clients waiting.
    # With that many sockets, select() (waitress's default) is the wrong call: a socket numbered past
    # FD_SETSIZE (1024) raises ValueError in the server loop, which ends it and stops serving; poll()
    # has no such limit.
    server = create_server(app, host=host, port=port, threads=threads, ident="valuemail", connection_limit=1000,
                           asyncore_use_poll=True)
    from waitress.server import BaseWSGIServer

    for dispatcher in list(_socket_map(server).values()):  # one listener per address the host resolves to
        if isinstance(dispatcher, BaseWSGIServer):
            dispatcher.channel_class = _channel_class()
    return server


@functools.cache
def _channel_class():
    """waitress's connection class, minus a busy loop that starves the worker threads under load.

    While a request runs, its worker thread sends the response itself, holding the connection's
    output lock. waitress's loop meanwhile polls every connection with unsent output for
    writability; the socket is writable, so poll() returns at once, the loop fails to take the
    lock, and polls again: it spins, and holds the GIL the worker needs to finish sending. Under
    load this feeds itself: with 200 keep-alive clients, 100,000+ loop iterations per 1,000
    requests and 4-15 times less throughput, switching unpredictably between good and bad runs.

    So a connection whose worker holds the lock is left out of the poll for writing. A worker that
    could not send everything pulls the trigger when its task ends (HTTPChannel.service), which
    wakes the loop to send the rest; one that passed the high watermark waits for the loop with
    the lock released, so that case is polled as before. (A response streamed in several chunks
    may wait up to the loop timeout, 1 s, between chunks on an idle server; this app streams none.)
    Relies on waitress internals, hence the pinned waitress version and tests/commands/test_web_serving.py.
    """
    from waitress.channel import HTTPChannel

    class Channel(HTTPChannel):
        def writable(self):
            if self.will_close or self.close_when_flushed:
                return True
            if not self.total_outbufs_len:
                return False
            if self.requests and self.total_outbufs_len < self.adj.outbuf_high_watermark:
                if not self.outbuf_lock.acquire(blocking=False):
                    return False  # its worker is sending; see above
                self.outbuf_lock.release()
            return True

    return Channel


def freeze_heap() -> None:
    """Exempt every object alive now from the cyclic garbage collector (once the app is built).

    Modules, the Flask app, ORM mappers and templates live as long as the process, yet every full
    collection walks all of them (over 100,000 objects) while holding the GIL, stalling every
    request in flight: 60-160 ms per full collection under bench/web.py. A collection first, so no
    garbage is kept for good, then gc.freeze(); later objects are collected as usual.
    """
    gc.collect()
    gc.freeze()


def serve(app, *, host: str, port: int) -> None:
    """Serve `app` on host:port with waitress until interrupted; logs the URL it serves on."""
    server = make_server(app, host=host, port=port)
    for url in server_urls(server):
        log.info("serving on %s", url)
    freeze_heap()
    try:
        server.run()
    finally:
        close_server(server)


@dataclass
class BackgroundServer:
    """A waitress server running its loop in a daemon thread (for `valuemail run` and tests)."""

    server: Any
    thread: threading.Thread

    @property
    def url(self) -> str:
        return server_urls(self.server)[0]

    def stop(self, timeout: float = 10.0) -> None:
        """Close the listening sockets from inside the loop, wait for the thread, stop the workers."""
        from waitress.trigger import trigger

        if self.thread.is_alive():
            wakers = [obj for obj in list(_socket_map(self.server).values()) if isinstance(obj, trigger)]
            if wakers:
                # Closing sockets from this thread would pull them out from under the loop's
                # select(); the trigger runs the close inside the loop, which then finds its map
                # empty and returns.
                wakers[0].pull_trigger(lambda: _close_sockets(self.server))
            self.thread.join(timeout)
        close_server(self.server)


def start_in_thread(app, *, host: str, port: int, threads: int = THREADS) -> BackgroundServer:
    """Serve `app` from a daemon thread; returns at once with the bound URL in `.url`."""
    server = make_server(app, host=host, port=port, threads=threads)
    thread = threading.Thread(target=server.run, name="valuemail-web", daemon=True)
    thread.start()
    log.info("serving on %s", ", ".join(server_urls(server)))
    return BackgroundServer(server=server, thread=thread)


def close_server(server) -> None:
    """Release a server's sockets and worker threads once its loop has ended (or never ran)."""
    _close_sockets(server)
    server.task_dispatcher.shutdown()


def _close_sockets(server) -> None:
    from waitress import wasyncore

    wasyncore.close_all(_socket_map(server), ignore_all=True)


def _socket_map(server) -> dict:
    # A single-socket server keeps its map as _map; a MultiSocketServer as map.
    return server._map if hasattr(server, "_map") else server.map


def server_urls(server) -> list[str]:
    """The http URLs a waitress server listens on (a host name can resolve to several sockets)."""
    listen = getattr(server, "effective_listen", None) or [(server.effective_host, server.effective_port)]
    return [f"http://[{h}]:{p}" if ":" in str(h) else f"http://{h}:{p}" for h, p in listen]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
