"""Survey answers (one-click, editable until submitted) and satisfaction per period with its change."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, insert, select
from sqlmodel import Session

from engine import surveys
from engine.campaigns.kinds.post_purchase_survey import Survey
from engine.db import session_scope
from engine.models import Campaign, Contact, Delivery, Order, Run, SurveyAnswer, SurveyResponse
from engine.surveys import InvalidAnswer, SurveyClosed, SurveyError
from engine.tokens import TokenSigner
from tests.support.data import add_contacts

UTC = timezone.utc
NOW = datetime(2027, 3, 15, 12, 0, tzinfo=UTC)
CAMPAIGN = "order-survey"

SURVEY = Survey.model_validate({
    "thank_you": "Thanks!",
    "questions": [
        {"key": "recommend", "type": "nps", "text": "Would you recommend us?"},
        {"key": "delivery", "type": "rating", "text": "How was the delivery?"},
        {"key": "packaging", "type": "rating", "text": "And the packaging?"},
        {"key": "why", "type": "choice", "text": "What mattered most?", "options": ["Price", "Delivery speed", "Eco-friendly"]},
        {"key": "improve", "type": "text", "text": "What could be better?"},
    ],
})


def setup_invitations(db, n: int, *, campaign_id: str = CAMPAIGN, is_test: bool = False, start: int = 0) -> list[int]:
    """`n` contacts, each with one survey delivery (about order O-<i>); the delivery ids."""
    add_contacts(db, n, start=start)
    with session_scope(db) as s:
        if s.get(Campaign, campaign_id) is None:
            s.add(Campaign(id=campaign_id, name="Survey", kind="post_purchase_survey", values=[], definition={},
                           source_hash="x", synced_at=NOW))
            s.flush()
        run_id = s.execute(insert(Run).values(campaign_id=campaign_id, occurrence_at=NOW + timedelta(seconds=start),
                                              status="finished", is_test=is_test, definition={}, created_at=NOW)
                           .returning(Run.id)).scalar_one()
        ids = []
        contacts = s.execute(select(Contact.id, Contact.email).where(Contact.email.in_(
            [f"user{i}@example.com" for i in range(start, start + n)])).order_by(Contact.id)).all()
        for i, (contact_id, email) in enumerate(contacts, start):
            s.execute(insert(Order).values(order_id=f"O-{i}", contact_id=contact_id, placed_at=NOW - timedelta(days=8),
                                           total_cents=4990, currency="EUR", status="delivered", updated_at=NOW))
            ids.append(s.execute(insert(Delivery).values(
                run_id=run_id, contact_id=contact_id, email=email, segment="everyone", status="sent", attempts=1,
                data={"order_id": f"O-{i}"}, created_at=NOW, updated_at=NOW).returning(Delivery.id)).scalar_one())
    return ids


def record(db, delivery_id, question, value, at=NOW):
    with session_scope(db) as s:
        return surveys.record_answer(s, survey=SURVEY, delivery_id=delivery_id, question=question, value=value, now=at)


def count(db, model) -> int:
    with Session(db) as s:
        return s.execute(select(func.count()).select_from(model)).scalar()


# -- values and links -----------------------------------------------------------------------------

@pytest.mark.parametrize("key, raw, stored", [
    ("recommend", "0", (0.0, None)), ("recommend", "10", (10.0, None)), ("recommend", " 7 ", (7.0, None)),
    ("delivery", "1", (1.0, None)), ("delivery", "5", (5.0, None)),
    ("why", "delivery-speed", (None, "Delivery speed")), ("why", "Eco-friendly", (None, "Eco-friendly")),
    ("improve", "  Faster please ", (None, "Faster please")), ("improve", "   ", (None, None)),
    ("improve", "a\x00b\x1bc\nd\te", (None, "abc\nd\te")), ("improve", "\x00", (None, None)),
    ("improve", "good\u202e \u200bservice\x85", (None, "good service")),
])
def test_answers_are_parsed_by_question_type(key, raw, stored):
    assert surveys.parse_answer(surveys.find_question(SURVEY, key), raw) == stored


@pytest.mark.parametrize("key, raw", [
    ("recommend", "11"), ("recommend", "-1"), ("recommend", "7.5"), ("recommend", "seven"), ("recommend", ""),
    ("recommend", "010"), ("delivery", "0"), ("delivery", "6"), ("why", "quality"), ("improve", "x" * 4001),
])
def test_values_a_question_does_not_accept_are_refused(key, raw):
    with pytest.raises(InvalidAnswer):
        surveys.parse_answer(surveys.find_question(SURVEY, key), raw)


def test_an_unknown_question_is_refused():
    with pytest.raises(InvalidAnswer, match="no question 'colour'"):
        surveys.find_question(SURVEY, "colour")


def test_answer_links_carry_a_survey_token_for_the_delivery():
    signer = TokenSigner("secret")
    links = surveys.answer_links(signer, "https://mail.example.com/", 42, SURVEY.questions[0])
    assert [link["value"] for link in links] == [str(v) for v in range(11)]
    for link in links:
        prefix, token, question, value = link["url"].rsplit("/", 3)
        assert prefix == "https://mail.example.com/s" and question == "recommend" and value == link["value"]
        assert signer.unsign("survey", token) == 42
    choice = surveys.answer_links(signer, "https://x.example", 1, SURVEY.questions[3])
    assert [link["value"] for link in choice] == ["price", "delivery-speed", "eco-friendly"]
    assert surveys.answer_links(signer, "https://x.example", 1, SURVEY.questions[4]) == []


# -- recording ------------------------------------------------------------------------------------

def test_recording_the_same_answer_twice_changes_nothing(db):
    (delivery,) = setup_invitations(db, 1)
    first = record(db, delivery, "recommend", "9")
    second = record(db, delivery, "recommend", "9", at=NOW + timedelta(minutes=1))
    assert first.changed and not second.changed
    assert second.answers == {"recommend": 9.0} and second.first_answered_at == NOW
    assert count(db, SurveyResponse) == 1 and count(db, SurveyAnswer) == 1
    with Session(db) as s:
        response = s.execute(select(SurveyResponse)).scalar_one()
        order_pk = s.execute(select(Order.id).where(Order.order_id == "O-0")).scalar()
    assert response.campaign_id == CAMPAIGN and response.order_id == order_pk and response.updated_at == NOW


def test_answers_can_change_until_the_response_is_submitted(db):
    (delivery,) = setup_invitations(db, 1)
    record(db, delivery, "recommend", "6")
    changed = record(db, delivery, "recommend", "8", at=NOW + timedelta(minutes=2))
    record(db, delivery, "why", "price")
    record(db, delivery, "improve", "Bigger boxes")
    state = record(db, delivery, "improve", "", at=NOW + timedelta(minutes=3))  # emptied: removed
    assert changed.changed and state.answers == {"recommend": 8.0, "why": "Price"}
    with session_scope(db) as s:
        done = surveys.submit(s, delivery_id=delivery, now=NOW + timedelta(minutes=5))
    with session_scope(db) as s:
        again = surveys.submit(s, delivery_id=delivery, now=NOW + timedelta(hours=1))
    assert done.changed and done.submitted_at == NOW + timedelta(minutes=5)
    assert not again.changed and again.submitted_at == NOW + timedelta(minutes=5)  # the first time stays
    with pytest.raises(SurveyClosed):
        record(db, delivery, "recommend", "10")
    with pytest.raises(SurveyClosed):
        record(db, delivery, "recommend", "8")  # even the same value: the page says it is closed
    with Session(db) as s:
        assert surveys.response_state(s, delivery_id=delivery).answers == {"recommend": 8.0, "why": "Price"}


def test_bad_answers_and_unknown_invitations_store_nothing(db):
    (delivery,) = setup_invitations(db, 1)
    with pytest.raises(InvalidAnswer):
        record(db, delivery, "recommend", "12")
    with pytest.raises(InvalidAnswer):
        record(db, delivery, "improve", "")  # nothing to remove
    with pytest.raises(SurveyError, match="does not exist"):
        record(db, delivery + 100, "recommend", "5")
    with pytest.raises(SurveyError, match="nothing to submit"):
        with session_scope(db) as s:
            surveys.submit(s, delivery_id=delivery, now=NOW)
    assert count(db, SurveyResponse) == 0 and count(db, SurveyAnswer) == 0


def test_each_invitation_has_its_own_response(db):
    first, second = setup_invitations(db, 2)
    record(db, first, "recommend", "10")
    record(db, second, "recommend", "3")
    with Session(db) as s:
        assert surveys.response_state(s, delivery_id=first).answers == {"recommend": 10.0}
        assert surveys.response_state(s, delivery_id=second).answers == {"recommend": 3.0}
        assert surveys.response_state(s, delivery_id=second + 50) is None


# -- satisfaction ---------------------------------------------------------------------------------

def test_period_bounds_follow_calendar_months_and_quarters_in_the_timezone():
    ams = ZoneInfo("Europe/Amsterdam")
    months = surveys.period_bounds(datetime(2027, 3, 31, 23, 30, tzinfo=UTC), period="month", count=2, tz=ams)
    # 23:30 UTC on 31 March is already 1 April in Amsterdam (summer time, UTC+2).
    assert months == [datetime(2027, 2, 28, 23, tzinfo=UTC), datetime(2027, 3, 31, 22, tzinfo=UTC),
                      datetime(2027, 4, 30, 22, tzinfo=UTC)]
    quarters = surveys.period_bounds(datetime(2027, 1, 10, tzinfo=UTC), period="quarter", count=2)
    assert quarters == [datetime(2026, 10, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC),
                        datetime(2027, 4, 1, tzinfo=UTC)]
    with pytest.raises(ValueError):
        surveys.period_bounds(NOW, period="week", count=1)


def test_nps_of_hand_computed_examples():
    assert surveys.nps_of([10, 9, 8, 7, 6, 0]) == 0.0  # 2 promoters, 2 detractors of 6
    assert surveys.nps_of([10, 10, 9, 8]) == 75.0  # 3 promoters of 4
    assert surveys.nps_of([0, 5, 6]) == -100.0
    assert surveys.nps_of([9, 7, 3]) == 0.0
    assert surveys.nps_of([10, 9, 8]) == 66.7
    assert surveys.nps_of([]) is None


def test_satisfaction_per_month_with_the_change_since_the_previous_month(db):
    feb, mar = datetime(2027, 2, 10, tzinfo=UTC), datetime(2027, 3, 5, tzinfo=UTC)
    ids = setup_invitations(db, 9)
    # February: nps 10, 9, 6, 3 -> (2 - 2) / 4 = 0; delivery ratings 4, 2 -> 3.0
    for delivery, nps, rating in zip(ids[:4], ("10", "9", "6", "3"), ("4", "2", None, None)):
        record(db, delivery, "recommend", nps, at=feb)
        if rating:
            record(db, delivery, "delivery", rating, at=feb)
    # March: nps 10, 10, 9, 8, 2 -> (3 - 1) / 5 = 40; ratings 5, 4 (delivery) and 3 (packaging) -> 4.0
    for delivery, nps in zip(ids[4:], ("10", "10", "9", "8", "2")):
        record(db, delivery, "recommend", nps, at=mar)
    record(db, ids[4], "delivery", "5", at=mar)
    record(db, ids[5], "delivery", "4", at=mar)
    record(db, ids[6], "packaging", "3", at=mar)
    # A later change keeps the response in the month of its first answer.
    record(db, ids[0], "recommend", "9", at=mar)  # February: 10, 9, 6, 3 -> 9, 9, 6, 3: still 0
    # Test sends and other campaigns do not count.
    (test_delivery,) = setup_invitations(db, 1, is_test=True, start=50)
    record(db, test_delivery, "recommend", "0", at=mar)
    (other,) = setup_invitations(db, 1, campaign_id="other-survey", start=60)
    record(db, other, "recommend", "0", at=mar)

    with Session(db) as s:
        feb_score, mar_score = surveys.satisfaction(s, CAMPAIGN, survey=SURVEY, now=NOW, period="month", periods=2)
    assert (feb_score.label, feb_score.responses, feb_score.nps_answers) == ("2027-02", 4, 4)
    assert (feb_score.promoters, feb_score.passives, feb_score.detractors) == (2, 0, 2)
    assert feb_score.nps == 0.0 and feb_score.average_rating == 3.0 and feb_score.ratings == 2
    assert feb_score.delta_nps is None  # January had no answers
    assert (mar_score.label, mar_score.responses) == ("2027-03", 5)
    assert (mar_score.promoters, mar_score.passives, mar_score.detractors) == (3, 1, 1)
    assert mar_score.nps == 40.0 and mar_score.average_rating == 4.0 and mar_score.ratings == 3
    assert mar_score.delta_nps == 40.0 and mar_score.delta_rating == 1.0 and mar_score.delta_responses == 1


def test_satisfaction_per_quarter_and_empty_periods(db):
    ids = setup_invitations(db, 3)
    record(db, ids[0], "recommend", "10", at=datetime(2026, 11, 20, tzinfo=UTC))
    record(db, ids[1], "recommend", "4", at=datetime(2027, 1, 2, tzinfo=UTC))
    record(db, ids[2], "delivery", "5", at=datetime(2027, 3, 31, 23, tzinfo=UTC))
    with Session(db) as s:
        scores = surveys.satisfaction(s, CAMPAIGN, survey=SURVEY, now=NOW, period="quarter", periods=3)
    assert [x.label for x in scores] == ["2026-Q3", "2026-Q4", "2027-Q1"]
    empty, q4, q1 = scores
    assert empty.responses == 0 and empty.nps is None and empty.average_rating is None
    assert q4.nps == 100.0 and q4.delta_nps is None
    assert q1.responses == 2 and q1.nps == -100.0 and q1.delta_nps == -200.0 and q1.average_rating == 5.0


def test_a_survey_without_rating_questions_has_no_average(db):
    only_nps = Survey.model_validate({"thank_you": "Thanks", "questions": [
        {"key": "recommend", "type": "nps", "text": "Would you recommend us?"}]})
    (delivery,) = setup_invitations(db, 1)
    with session_scope(db) as s:
        surveys.record_answer(s, survey=only_nps, delivery_id=delivery, question="recommend", value="7", now=NOW)
    with Session(db) as s:
        (score,) = surveys.satisfaction(s, CAMPAIGN, survey=only_nps, now=NOW, periods=1)
        (no_nps,) = surveys.satisfaction(s, CAMPAIGN, survey=Survey.model_validate({"thank_you": "x", "questions": [
            {"key": "delivery", "type": "rating", "text": "How was it?"}]}), now=NOW, periods=1)
    assert (score.responses, score.passives, score.nps, score.average_rating) == (1, 1, 0.0, None)
    assert (no_nps.responses, no_nps.nps, no_nps.average_rating) == (1, None, None)


def test_survey_for_delivery_reads_the_campaign_as_it_was_sent(project, settings, db):
    from engine.campaigns import load_campaign

    campaign = load_campaign(settings.campaigns_dir / "order-survey.toml", settings=settings, segment_names=None,
                             today=None)
    (delivery,) = setup_invitations(db, 1)
    with session_scope(db) as s:
        s.execute(Run.__table__.update().values(definition=campaign.as_json()))
    with Session(db) as s:
        loaded = surveys.survey_for_delivery(s, delivery_id=delivery, settings=settings)
        with pytest.raises(SurveyError):
            surveys.survey_for_delivery(s, delivery_id=delivery + 1, settings=settings)
    assert loaded.id == CAMPAIGN and loaded.section.questions[0].key == "recommend"
    with session_scope(db) as s:
        state = surveys.record_answer(s, survey=loaded.section, delivery_id=delivery, question="recommend", value="9",
                                      now=NOW)
    assert state.answers == {"recommend": 9.0}
