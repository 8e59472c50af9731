"""Token forgery on every public route: a forged, foreign or cut-off token changes nothing and reveals nothing."""

from __future__ import annotations

import pytest
from itsdangerous import URLSafeSerializer

from engine.tokens import TokenSigner
from tests.support.data import database_state

#: Values for the other parts of a URL, so that only the token is wrong.
OTHER_ARGUMENTS = {"question": "recommend", "value": "9"}


def forged_tokens(signer: TokenSigner) -> dict[str, str]:
    """Tokens an attacker can make: garbage, a valid shape with a bad signature, another site's key, a cut-off one."""
    real = signer.sign("preferences", 1)
    return {
        "garbage": "not-a-token",
        "bad signature": real[:-4] + ("AAAA" if not real.endswith("AAAA") else "BBBB"),
        "another key": TokenSigner("somebody-else's-key").sign("preferences", 1),
        "cut off": real[: len(real) // 2],
        "unsigned payload": URLSafeSerializer("k", salt="x").dumps(1).split(".")[0],
        "huge id": signer.sign("preferences", 10**30),
    }


def public_token_routes(app) -> list:
    return sorted((r for r in app.url_map.iter_rules() if "token" in r.arguments and not r.rule.startswith(
        ("/admin", "/api"))), key=lambda r: r.rule)


def test_the_walk_covers_every_kind_of_recipient_link(app):
    prefixes = {rule.rule.split("/")[1] for rule in public_token_routes(app)}
    assert {"u", "p", "v", "k", "s", "c", "r", "o"} <= prefixes


@pytest.mark.parametrize("kind", ["garbage", "bad signature", "another key", "cut off", "unsigned payload", "huge id"])
def test_every_public_route_refuses_a_forged_token_and_changes_nothing(app, client, signer, db, kind):
    token = forged_tokens(signer)[kind]
    before = database_state(db)
    answered = {}
    for rule in public_token_routes(app):
        arguments = {name: OTHER_ARGUMENTS.get(name, token) for name in rule.arguments}
        path = rule.rule
        for name, value in arguments.items():
            path = path.replace(f"<{name}>", value)
        for method in sorted(rule.methods & {"GET", "POST"}):
            response = client.open(path, method=method, data={"email": "attacker@example.org", "recommend": "0",
                                                              "action": "send"})
            answered[(method, rule.rule)] = response.status_code
            body = response.get_data()
            assert b"Traceback" not in body and token.encode() not in body  # nothing echoed back
    # The open pixel answers its GIF whatever the token (a mail client must not see an error); every
    # other page, the click redirect included (no open redirect), is the friendly 400.
    for (method, rule), status in answered.items():
        assert status == (200 if rule.startswith("/o/") else 400), (method, rule, status)
    assert database_state(db) == before
