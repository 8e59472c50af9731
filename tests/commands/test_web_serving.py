"""The waitress setup of `valuemail web` / `valuemail run`: the connection class without the busy loop, poll()."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from engine.commands.web import _channel_class, close_server, make_server, start_in_thread

BIG = 8 * 1024 * 1024  # more than a loopback socket buffer takes at once: sent in parts
CHUNK = 256 * 1024


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/big":
        body = [b"b" * BIG]
    elif path == "/stream":
        def chunks():
            for i in range(16):
                time.sleep(0.01)
                yield bytes([65 + i]) * CHUNK
        body = chunks()
    else:
        body = [path.encode()]
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return body


def test_every_listener_uses_the_connection_class_and_poll():
    server = make_server(app, host="127.0.0.1", port=0)
    try:
        listeners = [d for d in server._map.values() if hasattr(d, "channel_class")]
        assert listeners and all(d.channel_class is _channel_class() for d in listeners)
        assert server.adj.asyncore_use_poll
    finally:
        close_server(server)


def test_a_connection_whose_worker_holds_the_output_lock_is_not_polled_for_writing():
    server = make_server(app, host="127.0.0.1", port=0)
    ours, theirs = socket.socketpair()
    try:
        channel = _channel_class()(server, ours, ("127.0.0.1", 0), server.adj, map={})
        assert not channel.writable()  # nothing to send
        channel.total_outbufs_len = 100
        assert channel.writable()  # no task running: the loop sends
        channel.requests = [object()]
        assert channel.writable()  # a task runs, its worker is not sending: the loop may send

        holding, release = threading.Event(), threading.Event()

        def worker():
            with channel.outbuf_lock:
                holding.set()
                release.wait(10)

        thread = threading.Thread(target=worker)
        thread.start()
        holding.wait(10)
        try:
            assert not channel.writable()  # the worker is sending: polling would only spin
            channel.total_outbufs_len = server.adj.outbuf_high_watermark
            assert channel.writable()  # past the high watermark the worker waits for the loop
            channel.total_outbufs_len = 100
            channel.close_when_flushed = True
            assert channel.writable()
        finally:
            release.set()
            thread.join(10)
        channel.close_when_flushed = False
        assert channel.writable()
        channel.requests = []
        channel.total_outbufs_len = 0
        channel.close()
    finally:
        theirs.close()
        close_server(server)


def test_big_and_streamed_responses_and_many_keepalive_clients_arrive_whole():
    background = start_in_thread(app, host="127.0.0.1", port=0)
    port = background.server.effective_port
    try:
        def client(index: int) -> list[bytes]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            bodies = []
            for i in range(5):
                conn.request("GET", f"/c{index}/{i}")
                response = conn.getresponse()
                bodies.append(response.read())
            conn.close()
            return bodies

        with ThreadPoolExecutor(50) as pool:
            results = list(pool.map(client, range(50)))
        assert results == [[f"/c{c}/{i}".encode() for i in range(5)] for c in range(50)]

        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/big")
        assert conn.getresponse().read() == b"b" * BIG
        conn.request("GET", "/stream")
        assert conn.getresponse().read() == b"".join(bytes([65 + i]) * CHUNK for i in range(16))
        conn.close()
    finally:
        background.stop()
