"""`valuemail api-key ...`: REST API keys (being built)."""

from __future__ import annotations

import click


def register(main: click.Group) -> None:
    main.add_command(api_key)


@click.group("api-key")
def api_key() -> None:
    """Keys for the REST API."""
