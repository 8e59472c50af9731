"""`valuemail validate` and `valuemail preview`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..campaigns import campaign_files, load_campaign
from ..campaigns.loader import SEGMENTS_FILE
from ..cli import get_runtime
from ..dkim import load_keys
from ..errors import InvalidFile, NotFound, Problem, ProviderError
from ..providers import available, provider_factory
from ..rendering import Renderer
from ..rendering.renderer import SUBJECT_PART
from ..previews import render_previews
from ..segments import load_segments
from ..sending.compose import SAMPLE_CONTACT, Composer, sample_recipient
from ..sending.service import load_project_campaign, load_project_segments
from ..tokens import TokenSigner
from ..tomlpos import TomlDocument


def register(main: click.Group) -> None:
    main.add_command(validate)
    main.add_command(preview)


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.pass_context
def validate(ctx: click.Context, paths: tuple[Path, ...]) -> None:
    """Check settings, segments, campaigns and templates (every variant compiles and renders)."""
    runtime = get_runtime(ctx, migrated=False)  # loading the settings already validated config.toml
    settings = runtime.settings
    problems: list[Problem] = []
    warnings: list[Problem] = []
    _check_providers(settings, problems, warnings)
    try:  # the [dkim] key files, which sending would otherwise only open when it starts
        load_keys(settings)
    except InvalidFile as exc:
        problems.extend(exc.problems)
    segments_path = settings.campaigns_dir / SEGMENTS_FILE
    try:
        segments = load_segments(segments_path)
    except InvalidFile as exc:
        problems.extend(exc.problems)
        segments = None
    files = _campaign_paths(paths, settings.campaigns_dir)
    renderer = Renderer(settings.templates_dir)
    signer = TokenSigner(settings.secret_key)
    today = runtime.clock.now().astimezone(settings.tz).date()
    variants = 0
    templates: set[str] = set()
    for path in files:
        try:
            campaign = load_campaign(path, settings=settings, segment_names=list(segments) if segments else None,
                                     today=None)
        except InvalidFile as exc:
            problems.extend(exc.problems)
            continue
        try:  # dates in the past do not make a file invalid (an ended campaign stays in git), but say so
            load_campaign(path, settings=settings, segment_names=None, today=today)
        except InvalidFile as exc:
            warnings.extend(Problem(p.file, p.line, f"{p.message}: it will not be sent") for p in exc.problems)
        composer = Composer(campaign=campaign, run_id=0, settings=settings, renderer=renderer, signer=signer)
        document = TomlDocument.parse(campaign.path, campaign.source)
        for segment, variant in campaign.variants.items():
            variants += 1
            templates.add(variant.template)
            context = composer.context(1, SAMPLE_CONTACT, sample_recipient(campaign, segment,
                                                                           language=SAMPLE_CONTACT.language))
            for problem in renderer.check(variant.template, subject=variant.subject, context=context):
                problems.append(_in_campaign_file(problem, document, segment, campaign.id))
    for warning in warnings:
        click.echo(f"{warning} (warning)", err=True)
    for problem in problems:
        click.echo(str(problem), err=True)
    if problems:
        click.echo(f"{len(problems)} problem(s) found", err=True)
        sys.exit(1)
    click.echo(f"ok: {settings.source}, {segments_path.name} ({len(segments)} segments), "
               f"{len(files)} campaign(s), {variants} variant(s), {len(templates)} template(s) compiled and rendered")


def _in_campaign_file(problem: Problem, document: TomlDocument, segment: str, campaign_id: str) -> Problem:
    """A template problem as the marketer must fix it: one in the subject names the campaign file and
    the line of its `subject` (the variant's own, if it has one), not the template."""
    where = f" (campaign {campaign_id}, variant {segment})"
    if not problem.message.startswith(SUBJECT_PART):
        return Problem(problem.file, problem.line, problem.message + where)
    key = ("variants", segment, "subject")
    line = document.line_of(key)
    if line is None:
        key, line = ("subject",), document.line_of(("subject",))
    message = problem.message[len(SUBJECT_PART):]
    return Problem(document.path, line, f"{'.'.join(key)}: {message}{where}")


def _check_providers(settings, problems: list[Problem], warnings: list[Problem]) -> None:
    """The provider and its fallback must be installed; one that cannot be built yet (a secret missing
    from this environment, say) is a warning, since validate often runs where the secrets are not."""
    installed = available()
    for role, name in (("name", settings.provider.name), ("fallback", settings.provider.fallback)):
        if not name:
            continue
        if name not in installed:
            problems.append(Problem(settings.source, None, f"[provider] {role}: provider {name!r} is not installed "
                                                           f"(installed: {', '.join(sorted(installed))})"))
            continue
        try:
            provider_factory(settings, name=name)
        except ProviderError as exc:
            warnings.append(Problem(settings.source, None, f"[provider] {role} = {name!r}: {exc}; sending will "
                                                           f"refuse to start here"))


def _campaign_paths(paths: tuple[Path, ...], campaigns_dir: Path) -> list[Path]:
    if not paths:
        return campaign_files(campaigns_dir)
    found: list[Path] = []
    for path in paths:
        found.extend(campaign_files(path) if path.is_dir() else [] if path.name == SEGMENTS_FILE else [path])
    return found


@click.command()
@click.argument("campaign")
@click.option("--contact", "contact_email", metavar="EMAIL", help="Render for this contact (default: a sample member).")
@click.option("--segment", help="Only this segment's variant (default: every variant).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), help="Directory (default var/preview).")
@click.pass_context
def preview(ctx: click.Context, campaign: str, contact_email: str | None, segment: str | None, out_dir: Path | None) -> None:
    """Write .html, .txt and .eml previews of each segment variant; nothing is sent or stored."""
    runtime = get_runtime(ctx)
    settings = runtime.settings
    segments = load_project_segments(runtime)
    definition = load_project_campaign(runtime, campaign, segments=segments)
    if segment is not None and segment not in definition.variants:
        raise NotFound(f"campaign '{campaign}' has no segment '{segment}' (its segments: {', '.join(definition.segments)})")
    chosen = [segment] if segment else list(definition.segments)
    out_dir = out_dir or settings.var_dir / "preview"
    out_dir.mkdir(parents=True, exist_ok=True)
    for item in render_previews(runtime, segments, definition, chosen, contact_email=contact_email):
        message = item.message
        stem = out_dir / f"{definition.id}-{item.segment}"
        stem.with_suffix(".html").write_text(message.html)
        stem.with_suffix(".txt").write_text(message.text)
        stem.with_suffix(".eml").write_bytes(message.data)
        click.echo(f"{item.segment}: {message.subject!r} for {item.contact.email} -> {stem}.html|.txt|.eml")
