"""The survey page /s/<token>: all questions on one page, prefilled, saved together, sent once."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import func, insert, select
from sqlmodel import Session

from engine import privacy, surveys
from engine.campaigns import load_campaign
from engine.db import session_scope
from engine.models import Campaign, Contact, Delivery, Run, SurveyAnswer
from tests.support.data import add_contacts, database_state

from .factories import T0


def _campaign(settings):
    return load_campaign(settings.campaigns_dir / "order-survey.toml", settings=settings, segment_names=None,
                         today=None)


def invite(db, settings, *, language: str = "en", start: int = 0, definition: dict | None = None) -> int:
    """One contact with a sent invitation of the example survey (order-survey.toml); its delivery id."""
    add_contacts(db, 1, start=start, language=language, country="GB" if language == "en" else "NL")
    with session_scope(db) as s:
        campaign_id = "order-survey" if definition is None else "other"
        if s.get(Campaign, campaign_id) is None:
            s.add(Campaign(id=campaign_id, name="Survey", kind="post_purchase_survey", values=[], definition={},
                           source_hash="x", synced_at=T0))
            s.flush()
        run_id = s.execute(insert(Run).values(
            campaign_id=campaign_id, occurrence_at=T0 + timedelta(seconds=start), status="finished", is_test=False,
            definition=_campaign(settings).as_json() if definition is None else definition, created_at=T0,
        ).returning(Run.id)).scalar_one()
        contact_id = s.execute(select(Contact.id).where(Contact.email == f"user{start}@example.com")).scalar_one()
        return s.execute(insert(Delivery).values(
            run_id=run_id, contact_id=contact_id, email=f"user{start}@example.com", segment="everyone",
            status="sent", attempts=1, data={}, created_at=T0, updated_at=T0).returning(Delivery.id)).scalar_one()


def answers(db, delivery_id):
    with Session(db) as s:
        state = surveys.response_state(s, delivery_id=delivery_id)
    return None if state is None else (state.answers, state.submitted)


def csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def checked(html: str, name: str) -> list[str]:
    return re.findall(rf'name="{name}" value="([^"]+)" checked', html)


def test_the_page_shows_every_question_prefilled_with_the_one_click_answer(client, signer, settings, db):
    delivery = invite(db, settings)
    token = signer.sign("survey", delivery)
    click = client.get(f"/s/{token}/recommend/8")
    assert click.status_code == 200 and f'href="/s/{token}"' in click.text  # the mail's click links on to the page
    page = client.get(f"/s/{token}")
    assert page.status_code == 200
    html = page.text
    for text in ("How likely are you to recommend Example Shop", "How would you rate the delivery",
                 "What mattered most to you", "Is there anything we could do better?"):
        assert text in html
    assert re.findall(r'name="recommend" value="(\d+)"', html) == [str(v) for v in range(11)]
    assert re.findall(r'name="delivery" value="(\d+)"', html) == [str(v) for v in range(1, 6)]
    assert re.findall(r'name="mattered_most" value="([^"]+)"', html) == [
        "price", "product-quality", "delivery-speed", "sustainability"]
    assert '<textarea name="improve"' in html
    assert checked(html, "recommend") == ["8"] and checked(html, "delivery") == []
    assert 'name="csrf_token"' in html and 'value="send"' in html


def test_a_dutch_contact_sees_the_questions_and_labels_in_dutch(client, signer, settings, db):
    delivery = invite(db, settings, language="nl")
    html = client.get(f"/s/{signer.sign('survey', delivery)}").text
    assert "Hoe waarschijnlijk is het dat je Example Shop aanbeveelt" in html
    assert "Kwaliteit van het product" in html and "Versturen" in html and 'lang="nl"' in html
    assert "How likely" not in html and "Product quality" not in html
    english = client.get(f"/s/{signer.sign('survey', invite(db, settings, start=1))}").text
    assert "How likely are you to recommend" in english and "Send" in english and "Versturen" not in english


def test_a_dutch_one_click_answer_is_confirmed_in_dutch(client, signer, settings, db):
    token = signer.sign("survey", invite(db, settings, language="nl"))
    html = client.get(f"/s/{token}/mattered_most/delivery-speed").text
    assert '<html lang="nl">' in html and "Bedankt — je antwoord is opgeslagen" in html
    assert "Wat vond je het belangrijkst" in html and "<strong>Snelle bezorging</strong>" in html
    assert "Beantwoord de andere vragen" in html and "your answer is saved" not in html


def test_a_post_without_a_csrf_token_is_refused(client, signer, settings, db):
    delivery = invite(db, settings)
    url = f"/s/{signer.sign('survey', delivery)}"
    for data in ({"recommend": "9", "action": "send"}, {"recommend": "9", "csrf_token": "forged"}):
        response = client.post(url, data=data)
        assert response.status_code == 400 and "Please try again" in response.text
    assert answers(db, delivery) is None


def test_an_invalid_value_is_shown_next_to_its_question_and_nothing_is_stored(client, signer, settings, db):
    delivery = invite(db, settings)
    url = f"/s/{signer.sign('survey', delivery)}"
    client.get(f"{url}/recommend/8")
    token = csrf(client.get(url).text)
    response = client.post(url, data={"csrf_token": token, "recommend": "10", "delivery": "6",
                                      "mattered_most": "price", "improve": "Faster", "action": "send"})
    assert response.status_code == 400
    assert re.search(r'id="q-delivery"[^>]*>\s*<legend>[^<]+</legend>\s*<p class="survey-error"[^>]*>'
                     r'Choose a number from 1 to 5\.', response.text)
    assert "nothing was changed" in response.text
    assert checked(response.text, "recommend") == ["10"]  # the form keeps what was typed
    assert answers(db, delivery) == ({"recommend": 8.0}, False)  # neither the good answers nor the submit
    response = client.post(url, data={"csrf_token": token, "mattered_most": "quality", "improve": "x" * 4001})
    assert response.status_code == 400 and "Choose one of the options." in response.text
    assert "under 4000 characters" in response.text
    assert answers(db, delivery) == ({"recommend": 8.0}, False)


def test_save_then_change_then_send_shows_the_thank_you_text(client, signer, settings, db):
    delivery = invite(db, settings, language="nl")
    url = f"/s/{signer.sign('survey', delivery)}"
    token = csrf(client.get(url).text)
    saved = client.post(url, data={"csrf_token": token, "recommend": "7", "mattered_most": "delivery-speed",
                                   "improve": "  Sneller  ", "action": "save"})
    assert saved.status_code == 303 and saved.headers["Location"].endswith(f"{url}?saved=1")
    assert answers(db, delivery) == ({"recommend": 7.0, "mattered_most": "Delivery speed", "improve": "Sneller"}, False)
    page = client.get(saved.headers["Location"]).text
    assert "Je antwoorden zijn opgeslagen" in page
    assert checked(page, "recommend") == ["7"] and checked(page, "mattered_most") == ["delivery-speed"]
    assert ">Sneller</textarea>" in page
    sent = client.post(url, data={"csrf_token": token, "recommend": "9", "delivery": "4", "mattered_most": "price",
                                  "improve": "", "action": "send"})
    assert sent.status_code == 200
    assert "Bedankt! Je antwoorden gaan rechtstreeks naar het team" in sent.text
    assert answers(db, delivery) == ({"recommend": 9.0, "delivery": 4.0, "mattered_most": "Price"}, True)


def test_send_with_nothing_answered_asks_for_an_answer(client, signer, settings, db):
    delivery = invite(db, settings)
    url = f"/s/{signer.sign('survey', delivery)}"
    response = client.post(url, data={"csrf_token": csrf(client.get(url).text), "action": "send"})
    assert response.status_code == 400 and "Answer at least one question first." in response.text
    assert answers(db, delivery) is None


def test_after_sending_the_answers_are_read_only_and_further_posts_change_nothing(client, signer, settings, db):
    delivery = invite(db, settings)
    url = f"/s/{signer.sign('survey', delivery)}"
    token = csrf(client.get(url).text)
    client.post(url, data={"csrf_token": token, "recommend": "10", "mattered_most": "sustainability",
                           "improve": "Nothing", "action": "send"})
    before = answers(db, delivery)
    assert before == ({"recommend": 10.0, "mattered_most": "Sustainability", "improve": "Nothing"}, True)
    page = client.get(url)
    assert page.status_code == 200 and "You already sent your answers" in page.text
    assert "<form" not in page.text and "Sustainability" in page.text and "Nothing" in page.text
    for action in ("save", "send"):
        again = client.post(url, data={"csrf_token": token, "recommend": "0", "improve": "Changed", "action": action})
        assert again.status_code == 200 and "You already sent your answers" in again.text
    assert client.get(f"{url}/recommend/3").status_code == 200  # the mail's links say so too
    assert answers(db, delivery) == before


def test_forged_tokens_and_non_survey_invitations_get_friendly_pages(client, signer, settings, db):
    delivery = invite(db, settings)
    token = signer.sign("survey", delivery)
    for url in (f"/s/x{token}", f"/s/{signer.sign('unsubscribe', delivery)}", "/s/garbage"):
        response = client.get(url)
        assert response.status_code == 400 and "Invalid link" in response.text
    assert client.get(f"/s/{signer.sign('survey', delivery + 1000)}").status_code == 404  # no such delivery
    other = invite(db, settings, start=1, definition={})  # a run that is not a readable survey campaign
    response = client.get(f"/s/{signer.sign('survey', other)}")
    assert response.status_code == 404 and "does not lead to a survey" in response.text
    with Session(db) as s:
        assert s.execute(select(func.count()).select_from(SurveyAnswer)).scalar() == 0


def test_a_signed_id_beyond_bigint_is_refused_as_a_bad_link(client, signer):
    huge = signer.sign("survey", 2**63)  # one past the largest id a table can hold: refused as a bad link
    assert client.get(f"/s/{huge}").status_code == 400


def test_head_and_options_with_a_filled_in_form_store_nothing(client, signer, settings, db):
    delivery = invite(db, settings)
    url = f"/s/{signer.sign('survey', delivery)}"
    form = {"recommend": "9", "delivery": "4", "mattered_most": "price", "action": "send"}
    before = database_state(db)
    assert client.head(url, data=form).status_code == 200
    assert client.options(url, data=form).status_code == 200
    assert database_state(db) == before and answers(db, delivery) is None


def test_answers_to_a_test_mail_are_never_the_contacts(client, signer, settings, db):
    """A --test-to survey mail shows a real contact's data; what the tester answers stays with the test."""
    real = invite(db, settings)
    test = invite(db, settings, start=1)
    with session_scope(db) as s:
        run_id = s.get(Delivery, test).run_id
        s.get(Run, run_id).is_test = True
        contact_id = s.get(Delivery, test).contact_id
    assert client.get(f"/s/{signer.sign('survey', test)}/recommend/2").status_code == 200
    assert client.get(f"/s/{signer.sign('survey', real)}/recommend/9").status_code == 200
    assert answers(db, test) == ({"recommend": 2.0}, False)  # the tester sees the survey work
    with Session(db) as s:
        exported = privacy.export(s, contact_id, now=T0)
    assert exported["surveys"] == []
    page = client.get(f"/p/{signer.sign('preferences', test)}")
    assert page.status_code == 200 and "How likely are you to recommend" not in page.text
