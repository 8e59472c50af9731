"""Admin survey pages: NPS and ratings with their distributions, period over period, free text, CSV export.

Test sends never count, as in `surveys.satisfaction`.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Response, abort, render_template, request, stream_with_context
from sqlalchemy import func
from sqlmodel import Session, select

from ..campaigns import CampaignDefinition, campaign_files, load_campaign, load_campaign_id
from ..csvexport import rows_as_csv
from ..db import read_only
from ..errors import InvalidFile
from ..models import Contact, SurveyAnswer, SurveyResponse
from ..surveys import PERIODS, nps_of, real_responses, satisfaction
from .admin import _int_arg, bp
from .context import db_session, web_context

SURVEY_KIND = "post_purchase_survey"
TEXTS_PER_PAGE = 25
CSV_BATCH = 1000
SCALES = {"nps": range(0, 11), "rating": range(1, 6)}


@dataclass
class Distribution:
    """How often each value of one nps, rating or choice question was answered."""

    key: str
    type: str
    text: str
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def peak(self) -> int:
        return max(self.counts.values(), default=0) or 1

    @property
    def score(self) -> str:
        """NPS for an nps question, the average for a rating one."""
        if not self.total:
            return "-"
        if self.type == "nps":
            return f"NPS {nps_of(v for k, n in self.counts.items() for v in [int(k)] * n)}"
        if self.type == "rating":
            return f"average {sum(int(k) * n for k, n in self.counts.items()) / self.total:.2f}"
        return ""


@bp.get("/surveys")
def surveys():
    """Every survey campaign with its response count and this month's NPS and average rating (with the change)."""
    ctx = web_context()
    session = db_session()
    now = ctx.clock.now()
    rows = []
    for campaign, problems in _survey_files():
        if campaign is None:
            rows.append((campaign, problems, 0, None))
            continue
        (current,) = satisfaction(session, campaign.id, survey=campaign.section, now=now, period="month", periods=1,
                                  tz=ctx.settings.tz)
        rows.append((campaign, problems, _responses(session, campaign.id), current))
    return render_template("admin/surveys.html", rows=rows)


@bp.get("/surveys/<campaign_id>")
def survey_detail(campaign_id: str):
    """One survey: distributions, NPS and rating per period with the change, latest free-text answers."""
    ctx = web_context()
    campaign = _survey(campaign_id)
    session = db_session()
    period = request.args.get("period", "month")
    if period not in PERIODS:
        abort(400)
    scores = satisfaction(session, campaign.id, survey=campaign.section, now=ctx.clock.now(), period=period,
                          periods=6, tz=ctx.settings.tz)
    before = _int_arg("before")
    texts, next_before = _free_text(session, campaign, before=before)
    return render_template("admin/survey_detail.html", campaign=campaign, period=period, periods=PERIODS,
                           scores=list(reversed(scores)), distributions=_distributions(session, campaign),
                           texts=texts, next_before=next_before, first_page=before is None,
                           responses=_responses(session, campaign.id))


@bp.get("/surveys/<campaign_id>/answers.csv")
def survey_answers_csv(campaign_id: str):
    """Every response as one CSV row (first answered, submitted, address, one column per question)."""
    campaign = _survey(campaign_id)
    keys = [q.key for q in campaign.section.questions]
    engine = read_only(web_context().engine)

    def rows():
        # Keyset batches on their own session: the response streams after the view has returned.
        after = 0
        with Session(engine) as session:
            while True:
                batch = session.exec(_responses_query(campaign.id).where(SurveyResponse.id > after)
                                     .order_by(SurveyResponse.id).limit(CSV_BATCH)).all()
                if not batch:
                    return
                answers = _answers(session, [r.id for r, _ in batch])
                for response, email in batch:
                    given = answers.get(response.id, {})
                    yield [response.id, _iso(response.first_answered_at), _iso(response.submitted_at), email,
                           *(given.get(k, "") for k in keys)]
                after = batch[-1][0].id

    header = ["response_id", "first_answered_at", "submitted_at", "email", *keys]
    return Response(stream_with_context(rows_as_csv(header, rows())), mimetype="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{campaign.id}-answers.csv"'})


# -- queries ---------------------------------------------------------------------------------------

def _survey_files() -> list[tuple[CampaignDefinition | None, list]]:
    ctx = web_context()
    found = []
    for path in campaign_files(ctx.settings.campaigns_dir):
        try:
            campaign = load_campaign(path, settings=ctx.settings, segment_names=None, today=None)
        except InvalidFile as exc:
            # An invalid file may be a survey; show it with its problems rather than hide it.
            if f'"{SURVEY_KIND}"' in path.read_text(errors="replace"):
                found.append((None, [p.relative_to(ctx.settings.root) for p in exc.problems]))
            continue
        if campaign.kind_name == SURVEY_KIND:
            found.append((campaign, []))
    return found


def _survey(campaign_id: str) -> CampaignDefinition:
    campaign = load_campaign_id(campaign_id, settings=web_context().settings, kind=SURVEY_KIND)
    if campaign is None:
        abort(404)
    return campaign


def _responses_query(campaign_id: str):
    return real_responses(select(SurveyResponse, Contact.email).join(Contact, Contact.id == SurveyResponse.contact_id)
                 .where(SurveyResponse.campaign_id == campaign_id))


def _responses(session, campaign_id: str) -> int:
    return session.exec(real_responses(select(func.count()).select_from(SurveyResponse))
                        .where(SurveyResponse.campaign_id == campaign_id)).one()


def _distributions(session, campaign: CampaignDefinition) -> list[Distribution]:
    """Counts per value of every nps, rating and choice question, in one GROUP BY."""
    rows = session.exec(real_responses(select(SurveyAnswer.question, SurveyAnswer.value_number, SurveyAnswer.value_text,
                                     func.count()).join(SurveyResponse, SurveyResponse.id == SurveyAnswer.response_id))
                        .where(SurveyResponse.campaign_id == campaign.id)
                        .group_by(SurveyAnswer.question, SurveyAnswer.value_number, SurveyAnswer.value_text)).all()
    result = []
    for q in campaign.section.questions:
        if q.type == "text":
            continue
        counts = {str(v): 0 for v in SCALES[q.type]} if q.type in SCALES else {o: 0 for o in q.options or []}
        for key, number, text, n in rows:
            if key != q.key:
                continue
            value = str(int(number)) if number is not None else text
            counts[value] = counts.get(value, 0) + n
        result.append(Distribution(q.key, q.type, q.text, counts))
    return result


def _free_text(session, campaign: CampaignDefinition, *, before: int | None):
    """Free-text answers, newest response first, keyset-paged by response id."""
    keys = [q.key for q in campaign.section.questions if q.type == "text"]
    if not keys:
        return [], None
    query = real_responses(select(SurveyResponse.id, SurveyResponse.first_answered_at, Contact.email, SurveyAnswer.question,
                         SurveyAnswer.value_text)
                  .join(SurveyResponse, SurveyResponse.id == SurveyAnswer.response_id)
                  .join(Contact, Contact.id == SurveyResponse.contact_id)).where(
        SurveyResponse.campaign_id == campaign.id, SurveyAnswer.question.in_(keys),
        SurveyAnswer.value_text.is_not(None))
    if before is not None:
        query = query.where(SurveyResponse.id < before)
    rows = session.exec(query.order_by(SurveyResponse.id.desc(), SurveyAnswer.question)
                        .limit(TEXTS_PER_PAGE + 1)).all()
    if len(rows) <= TEXTS_PER_PAGE:
        return rows, None
    # A response's answers stay on one page: the cursor is a response id, not a row.
    cut = rows[TEXTS_PER_PAGE][0]
    rows = [r for r in rows[:TEXTS_PER_PAGE] if r[0] != cut] or rows[:TEXTS_PER_PAGE]
    return rows, rows[-1][0]


def _answers(session, response_ids: list[int]) -> dict[int, dict[str, object]]:
    answers: dict[int, dict[str, object]] = {}
    for a in session.exec(select(SurveyAnswer).where(SurveyAnswer.response_id.in_(response_ids))).all():
        value = a.value_text if a.value_text is not None else a.value_number
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        answers.setdefault(a.response_id, {})[a.question] = value
    return answers


def _iso(value) -> str:
    return value.isoformat() if value else ""
