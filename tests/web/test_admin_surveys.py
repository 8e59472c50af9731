"""Survey results per period as JSON for the admin UI, compared with the period before."""

from __future__ import annotations

from datetime import datetime, timezone

from engine.clock import FixedClock
from engine.web import create_app
from tests.test_surveys import NOW, record, setup_invitations

from .logins import log_in, make_admin

UTC = timezone.utc


def test_results_per_month_with_the_change_since_the_month_before(settings, db):
    ids = setup_invitations(db, 5)
    for delivery, nps in zip(ids[:2], ("10", "3")):
        record(db, delivery, "recommend", nps, at=datetime(2027, 2, 10, tzinfo=UTC))
    for delivery, nps in zip(ids[2:], ("10", "9", "8")):
        record(db, delivery, "recommend", nps, at=datetime(2027, 3, 5, tzinfo=UTC))
    record(db, ids[2], "delivery", "4", at=datetime(2027, 3, 5, tzinfo=UTC))
    client = _logged_in(settings, db)
    response = client.get("/admin/surveys/order-survey/results.json?periods=2")
    assert response.status_code == 200
    data = response.get_json()
    assert data["campaign"] == "order-survey" and data["period"] == "month"
    assert [q["key"] for q in data["questions"]] == ["recommend", "delivery", "mattered_most", "improve"]
    feb, mar = data["periods"]
    assert (feb["period"], feb["responses"], feb["nps"], feb["promoters"], feb["detractors"]) == ("2027-02", 2, 0.0, 1, 1)
    assert (mar["period"], mar["responses"], mar["nps"], mar["average_rating"]) == ("2027-03", 3, 66.7, 4.0)
    assert mar["change"] == {"responses": 1, "nps": 66.7, "average_rating": None}
    assert mar["start"] == "2027-02-28T23:00:00+00:00"  # March begins at midnight in Amsterdam


def test_bad_requests_get_a_json_error(settings, db):
    client = _logged_in(settings, db)
    assert client.get("/admin/surveys/order-survey/results.json?period=week").status_code == 400
    assert client.get("/admin/surveys/order-survey/results.json?periods=0").status_code == 400
    assert client.get("/admin/surveys/nope/results.json").status_code == 404
    response = client.get("/admin/surveys/spring-sale/results.json")
    assert response.status_code == 404 and "not a survey" in response.get_json()["error"]


def test_an_invalid_survey_file_is_named_from_the_project_not_the_server(settings, db):
    path = settings.campaigns_dir / "order-survey.toml"
    path.write_text(path.read_text().replace('kind = "post_purchase_survey"', 'kind = "post_purchase_survey"\nbogus = 1'))
    response = _logged_in(settings, db).get("/admin/surveys/order-survey/results.json")
    error = response.get_json()["error"]
    assert response.status_code == 409 and error.startswith("campaigns/order-survey.toml:")
    assert str(settings.root) not in error and "bogus" in error


def _logged_in(settings, db):
    # An app on the survey tests' clock, with a viewer logged in: reading results needs no more.
    client = create_app(settings=settings, engine=db, clock=FixedClock(NOW), testing=True).test_client()
    make_admin(db, "viewer@example.com", role="viewer")
    assert log_in(client, "viewer@example.com").status_code == 302
    return client
