"""The red-team suite uses the web app fixtures."""

from tests.web.conftest import app, client, clock, signer  # noqa: F401 - fixtures shared with tests/web
