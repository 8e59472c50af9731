"""Signed link tokens: bound to one delivery and one purpose; anything else is refused."""

import pytest

from engine.tokens import MAX_ID, BadToken, TokenSigner, recipient_links


def test_a_token_round_trips_for_its_own_purpose_only():
    signer = TokenSigner("k")
    token = signer.sign("unsubscribe", 42)
    assert signer.unsign("unsubscribe", token) == 42
    with pytest.raises(BadToken):
        signer.unsign("view", token)
    with pytest.raises(BadToken):
        TokenSigner("other key").unsign("unsubscribe", token)
    with pytest.raises(BadToken):
        signer.unsign("no-such-purpose", token)


@pytest.mark.parametrize("index", range(0, 30, 3))
def test_a_changed_character_is_refused(index):
    signer = TokenSigner("k")
    token = signer.sign("preferences", 7)
    index %= len(token)
    changed = token[:index] + ("A" if token[index] != "A" else "B") + token[index + 1:]
    with pytest.raises(BadToken):
        signer.unsign("preferences", changed)


@pytest.mark.parametrize("value", [0, -1, True, MAX_ID + 1, "1", 1.5, None, [1]])
def test_a_correctly_signed_but_impossible_id_is_refused(value):
    from itsdangerous import URLSafeSerializer

    forged_with_the_key = URLSafeSerializer("k", salt="valuemail.view").dumps(value)
    with pytest.raises(BadToken):
        TokenSigner("k").unsign("view", forged_with_the_key)


def test_every_message_link_is_signed_for_its_purpose():
    signer = TokenSigner("k")
    links = recipient_links(signer, "https://mail.example.com", 5)
    assert signer.unsign("unsubscribe", links["unsubscribe"].rsplit("/", 1)[1]) == 5
    assert signer.unsign("preferences", links["preferences"].rsplit("/", 1)[1]) == 5
    assert signer.unsign("view", links["view_in_browser"].rsplit("/", 1)[1]) == 5
