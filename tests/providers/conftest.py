"""What the SMTP provider tests share: a TLS certificate pair for the loopback server."""

from __future__ import annotations

import ssl

import pytest
import trustme


@pytest.fixture(scope="module")
def tls():
    """(server context, client context) for 127.0.0.1, from a throw-away CA."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client

