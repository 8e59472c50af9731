"""Load and validate campaign files: every error names the file, the line and the key."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Any, Iterable

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from ..config import Settings
from ..errors import CampaignError, InvalidFile, Problem
from ..providers import available
from ..tomlpos import TomlDocument
from ..validation import describe, problems_from
from .definition import VALUE_DIMENSIONS, CampaignDefinition, Variant
from .kinds import IMPLEMENTATIONS, get_kind
from .schedule import parse_schedule

SEGMENTS_FILE = "segments.toml"
_CAMPAIGN_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")
_OVERRIDABLE = ("subject", "template", "preheader")


class CommonKeys(BaseModel):
    """Keys every campaign file has, whatever its kind."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str
    kind: str
    values: list[str]
    template: str
    subject: str
    preheader: str = ""
    segments: list[str]
    schedule: dict[str, Any] | None = None
    local_time: bool = False
    provider: str | None = None  # send through this provider instead of [provider].name

    @field_validator("name", "subject", "template")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("values")
    @classmethod
    def _values(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError(f"name at least one value dimension ({', '.join(VALUE_DIMENSIONS)})")
        bad = [v for v in value if v not in VALUE_DIMENSIONS]
        if bad:
            raise ValueError(f"unknown value dimension {bad[0]!r} (use {', '.join(VALUE_DIMENSIONS)})")
        return value

    @field_validator("segments")
    @classmethod
    def _segments(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("list at least one segment")
        if len(set(value)) != len(value):
            raise ValueError("a segment is listed twice")
        return value


def campaign_files(campaigns_dir: Path) -> list[Path]:
    """Every campaign file in `campaigns_dir` (segments.toml is not a campaign)."""
    return sorted(p for p in campaigns_dir.glob("*.toml") if p.name != SEGMENTS_FILE)


def campaign_file(campaigns_dir: Path, campaign_id: str) -> Path | None:
    """The file of campaign `campaign_id`, or None; the id (often from a URL) must be a plain file stem."""
    if not campaign_id or "/" in campaign_id or "\\" in campaign_id or campaign_id.startswith(".") \
            or f"{campaign_id}.toml" == SEGMENTS_FILE:
        return None
    path = campaigns_dir / f"{campaign_id}.toml"
    return path if path.is_file() else None


def load_campaign_id(campaign_id: str, *, settings: Settings, kind: str | None = None) -> CampaignDefinition | None:
    """Campaign `campaign_id` as its file is now (of `kind`, when given); None when missing, invalid or another kind."""
    path = campaign_file(settings.campaigns_dir, campaign_id)
    if path is None:
        return None
    try:
        campaign = load_campaign(path, settings=settings, segment_names=None, today=None)
    except InvalidFile:
        return None
    return campaign if kind is None or campaign.kind_name == kind else None


def load_stored(definition: dict, *, settings: Settings) -> CampaignDefinition:
    """The campaign as a run stored it (its file name and source text), so later edits cannot change it."""
    try:
        file, source = definition["file"], definition["source"]
    except (KeyError, TypeError):
        raise CampaignError.single("<run>", None, "this run stored no campaign text") from None
    return load_campaign(settings.campaigns_dir / file, settings=settings, segment_names=None, today=None,
                         source=source)


def load_campaign(path: Path, *, settings: Settings, segment_names: Iterable[str] | None, today: date | None,
                  source: str | None = None) -> CampaignDefinition:
    """Read and fully validate one campaign file (or its `source` text), raising CampaignError with every problem.

    `segment_names=None` skips the check against segments.toml and `today=None` the date checks:
    both are for reloading the copy stored with a run, which was checked when the run began.
    """
    path = Path(path)
    doc = TomlDocument.parse(path, source, error=CampaignError) if source is not None else TomlDocument.load(path, error=CampaignError)
    problems: list[Problem] = []

    def problem(key: tuple, message: str) -> None:
        problems.append(Problem(str(path), doc.line_of(key), message))

    campaign_id = path.stem
    if not _CAMPAIGN_ID.match(campaign_id):
        problems.append(Problem(str(path), None, "file name must be lower-case letters, digits, - or _ (it is the campaign id)"))

    data = dict(doc.data)
    kind_name = data.get("kind")
    kind = get_kind(kind_name) if isinstance(kind_name, str) else None
    section_key = kind.section_key if kind else None
    variants_raw = data.pop("variants", {})
    section_raw = data.pop(section_key, None) if section_key else None
    if kind is None and isinstance(kind_name, str):
        if kind_name in IMPLEMENTATIONS:
            supported = ", ".join(k for k in IMPLEMENTATIONS if get_kind(k) is not None)
            problem(("kind",), f"kind '{kind_name}' is not supported yet (supported: {supported})")
        else:
            problem(("kind",), f"unknown kind '{kind_name}' (one of {', '.join(IMPLEMENTATIONS)})")
        raise CampaignError(problems)

    try:
        common = CommonKeys.model_validate(data)
    except ValidationError as exc:
        problems.extend(problems_from(exc, doc))
        raise CampaignError(problems) from None

    known = set(common.segments if segment_names is None else segment_names)
    for name in common.segments:
        if name not in known:
            problem(("segments",), f"unknown segment '{name}' (not in {SEGMENTS_FILE})")
    schedule = None
    if common.schedule is not None:
        try:
            schedule = parse_schedule(common.schedule, settings.tz)
        except ValueError as exc:
            problem(("schedule",), f"'schedule': {exc}")
    if common.local_time and (schedule is None or schedule.kind != "at"):
        problem(("local_time",), "'local_time': delivery in the recipient's local time needs an `at` schedule")
    if common.provider is not None:
        installed = available()
        if common.provider not in installed:
            problem(("provider",), f"unknown provider '{common.provider}' (installed: {', '.join(sorted(installed))})")
    template_problem = _check_template_name(common.template, settings.templates_dir)
    if template_problem:
        problem(("template",), template_problem)

    if section_raw is None:
        problem((), f"missing section [{section_key}] for kind '{kind_name}'")
        raise CampaignError(problems)
    if not isinstance(section_raw, dict):
        problem((section_key,), f"'{section_key}' must be a table")
        raise CampaignError(problems)
    section_raw = {"currency": settings.ltv.default_currency, **section_raw} if "currency" in kind.section_model.model_fields else section_raw
    base_section = _validate_section(kind, section_raw, doc, (section_key,), problems)
    if base_section is not None:
        message = kind.check_schedule(base_section, schedule)
        if message:
            problem(("schedule",), f"'schedule': {message}")
    if base_section is not None and today is not None:
        for key, message in kind.check(base_section, today=today):
            problem((section_key,) + key, f"'{section_key}.{'.'.join(map(str, key))}': {message}")

    if not isinstance(variants_raw, dict):
        problem(("variants",), "'variants' must be a table of per-segment overrides")
        variants_raw = {}
    variants: dict[str, Variant] = {}
    for segment in common.segments:
        override = variants_raw.get(segment, {})
        if not isinstance(override, dict):
            problem(("variants", segment), f"'variants.{segment}' must be a table")
            continue
        variants[segment] = _variant(segment, common, kind, section_key, section_raw, base_section, override,
                                     doc, problems, settings, today)
    for segment in variants_raw:
        if segment not in common.segments:
            problem(("variants", segment), f"variant '{segment}' is not one of this campaign's segments")

    if problems:
        raise CampaignError(problems)
    return CampaignDefinition(
        id=campaign_id, path=path, name=common.name, kind_name=kind_name, kind=kind,
        values=tuple(common.values), segments=tuple(common.segments), schedule=schedule, local_time=common.local_time,
        variants=variants, section=base_section, raw=doc.data, source=doc.text, provider=common.provider,
    )


def _variant(segment, common, kind, section_key, section_raw, base_section, override, doc, problems, settings, today):
    where = ("variants", segment)
    for key in override:
        if key not in _OVERRIDABLE and key != section_key:
            problems.append(Problem(str(doc.path), doc.line_of(where + (key,)),
                                    f"'variants.{segment}.{key}' cannot be overridden per segment "
                                    f"(allowed: {', '.join(_OVERRIDABLE + (section_key,))})"))
    for key in _OVERRIDABLE:
        if key in override and (not isinstance(override[key], str) or not override[key].strip()):
            problems.append(Problem(str(doc.path), doc.line_of(where + (key,)),
                                    f"'variants.{segment}.{key}': must be a non-empty string"))
    template = override.get("template", common.template)
    if "template" in override and isinstance(template, str):
        message = _check_template_name(template, settings.templates_dir)
        if message:
            problems.append(Problem(str(doc.path), doc.line_of(where + ("template",)), message))
    section = base_section
    if section_key in override and base_section is not None:  # else the base's errors say it all
        if not isinstance(override[section_key], dict):
            problems.append(Problem(str(doc.path), doc.line_of(where + (section_key,)),
                                    f"'variants.{segment}.{section_key}' must be a table"))
        else:
            merged = _deep_merge(_without_alternatives(kind, section_raw, override[section_key]), override[section_key])
            section = _validate_section(kind, merged, doc, where + (section_key,), problems,
                                        inherited=(section_key,), override=override[section_key])
            if section is not None and today is not None:
                for key, message in kind.check(section, today=today):
                    if key and key[0] not in override[section_key]:
                        continue  # inherited: already reported for the base section
                    problems.append(Problem(str(doc.path), doc.line_of(where + (section_key,) + key),
                                            f"'variants.{segment}.{section_key}': {message}"))
    return Variant(segment=segment, template=str(template), subject=str(override.get("subject", common.subject)),
                   preheader=str(override.get("preheader", common.preheader)), section=section)


def _validate_section(kind, raw, doc, prefix, problems, *, inherited=None, override=None):
    """Validate a kind's section; an error in a key the variant inherited points at the base line."""
    try:
        return kind.section_model.model_validate(raw)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err["loc"])
            located = prefix if override is None or (loc and loc[0] in override) else inherited
            problems.append(Problem(str(doc.path), doc.line_of(located + loc), describe(err, prefix)))
        return None


def _without_alternatives(kind, base: dict, override: dict) -> dict:
    """Drop base keys that an override replaces by an alternative (e.g. percent by amount)."""
    dropped = dict(base)
    for group in getattr(kind, "alternatives", ()):
        if any(key in override for key in group):
            for key in group:
                if key not in override:
                    dropped.pop(key, None)
    return dropped


def _deep_merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _check_template_name(name: str, templates_dir: Path) -> str | None:
    """A message when `name` is not a template file inside templates_dir."""
    candidate = Path(name)
    if candidate.is_absolute() or ".." in candidate.parts:
        return f"template '{name}' must be a file name inside {templates_dir}"
    if not (templates_dir / candidate).is_file():
        return f"template '{name}' not found in {templates_dir}"
    return None
