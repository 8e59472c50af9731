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


def test_a_click_token_carries_delivery_and_link_for_its_purpose_only():
    signer = TokenSigner("k")
    token = signer.sign_ids("click", 5, 9)
    assert signer.unsign_ids("click", token, 2) == (5, 9)
    for other in ("open", "view", "unsubscribe"):
        with pytest.raises(BadToken):
            signer.unsign_ids(other, token, 2)
    with pytest.raises(BadToken):
        signer.unsign("click", token)  # a pair is not a delivery id
    with pytest.raises(BadToken):
        signer.unsign_ids("click", signer.sign("click", 5), 2)  # nor is an id a pair
    with pytest.raises(BadToken):
        signer.unsign_ids("click", token, 3)
    with pytest.raises(BadToken):
        TokenSigner("other key").unsign_ids("click", token, 2)


@pytest.mark.parametrize("ids", [(1, 2), (7, 12345), (2**40, 3), (MAX_ID, 1)])
def test_fast_signing_gives_what_itsdangerous_gives(ids):
    from itsdangerous import URLSafeSerializer

    serializer = URLSafeSerializer("k", salt="valuemail.click")
    assert TokenSigner("k").sign_ids("click", *ids) == serializer.dumps(list(ids))
    assert TokenSigner("k").sign("click", ids[0]) == serializer.dumps(ids[0])


def test_a_compressible_payload_still_round_trips():
    # itsdangerous would zlib-compress this one; uncompressed it reads back all the same.
    signer = TokenSigner("k")
    assert signer.unsign_ids("click", signer.sign_ids("click", MAX_ID, MAX_ID), 2) == (MAX_ID, MAX_ID)
    assert signer.unsign("view", signer.sign("view", 1111111111111111111)) == 1111111111111111111


@pytest.mark.parametrize("value", [[5], [5, 9, 1], [0, 9], [5, 0], [-1, 9], [True, 9], [5, False], [5, "9"],
                                   [5, 9.0], [5, None], [5, MAX_ID + 1], [[5], 9], {"d": 5, "l": 9}, 5, "5,9", None])
def test_a_correctly_signed_but_impossible_pair_is_refused(value):
    from itsdangerous import URLSafeSerializer

    forged_with_the_key = URLSafeSerializer("k", salt="valuemail.click").dumps(value)
    with pytest.raises(BadToken):
        TokenSigner("k").unsign_ids("click", forged_with_the_key, 2)


@pytest.mark.parametrize("ids", [(), (0, 1), (1, -2), (True, 1), (1, "2"), (1, MAX_ID + 1)])
def test_signing_refuses_what_no_id_column_holds(ids):
    with pytest.raises(ValueError):
        TokenSigner("k").sign_ids("click", *ids)
