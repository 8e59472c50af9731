"""`valuemail admin ...`: admin accounts (being built)."""

from __future__ import annotations

import click


def register(main: click.Group) -> None:
    main.add_command(admin)


@click.group()
def admin() -> None:
    """Admin accounts of the web UI."""
