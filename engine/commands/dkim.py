"""`valuemail dkim keygen` and `valuemail dkim show`: DKIM keys and the DNS records to publish."""

from __future__ import annotations

from pathlib import Path

import click

from ..config import DkimKeySettings, load_settings


def register(main: click.Group) -> None:
    main.add_command(dkim)


@click.group()
def dkim() -> None:
    """DKIM signing keys ([dkim] in config.toml) and their DNS TXT records."""


def _settings(ctx: click.Context):
    # Settings only: neither command needs the database.
    return load_settings(ctx.find_root().params.get("config_path"))


@dkim.command()
@click.option("--selector", required=True, help="The selector (the DNS name is <selector>._domainkey.<domain>).")
@click.option("--algorithm", type=click.Choice(["rsa-sha256", "ed25519-sha256"]), default="rsa-sha256",
              show_default=True)
@click.option("--bits", type=click.IntRange(min=2048), default=2048, show_default=True, help="RSA key size.")
@click.option("--out", "out", type=click.Path(dir_okay=False), help="Key file (default dkim/<selector>.pem).")
@click.pass_context
def keygen(ctx: click.Context, selector: str, algorithm: str, bits: int, out: str | None) -> None:
    """Write a new private key (mode 0600) and print the TXT record to publish and the config to add."""
    from .. import dkim as signing

    settings = _settings(ctx)
    relative = out or f"dkim/{selector}.pem"
    spec = DkimKeySettings(selector=selector, algorithm=algorithm, private_key_file=relative)
    path = settings.path(relative)
    if path.exists():
        raise click.ClickException(f"{path} exists; choose another selector or --out (keys are never overwritten)")
    signing.generate(algorithm, path, bits=bits)
    key = signing.load_key(spec, path)
    domain = signing.signing_domain(settings)
    click.echo(f"wrote {path} (mode 0600); keep it private and back it up.\n")
    click.echo(f"Publish this DNS TXT record for {signing.dns_name(selector, domain)}:\n")
    click.echo(f"  {signing.zone_line(key, domain)}\n")
    click.echo("Then add the key to config.toml:\n")
    click.echo(f'  [[dkim.keys]]\n  selector = "{selector}"\n  algorithm = "{algorithm}"\n'
               f'  private_key_file = "{Path(relative).as_posix()}"')


@dkim.command()
@click.pass_context
def show(ctx: click.Context) -> None:
    """Print the DNS TXT record of every configured key (checks the key files too)."""
    from .. import dkim as signing

    settings = _settings(ctx)
    keys = signing.load_keys(settings)
    if not keys:
        click.echo("No DKIM keys configured: mail goes out unsigned. Create one with "
                   "`valuemail dkim keygen --selector S`.")
        return
    domain = signing.signing_domain(settings)
    click.echo(f"Signing as d={domain}; publish:")
    for key, spec in zip(keys, settings.dkim.keys):
        click.echo(f"\n# {key.algorithm}, {spec.private_key_file}")
        click.echo(signing.zone_line(key, domain))
