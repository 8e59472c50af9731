"""Signed tokens for every link a recipient can click, bound to one delivery and one purpose."""

from __future__ import annotations

from itsdangerous import BadSignature, URLSafeSerializer

from .errors import ValuemailError

#: Purposes a token can be issued for; a token for one purpose is refused for any other.
PURPOSES = ("unsubscribe", "preferences", "view", "click", "open", "coupon", "survey", "contest")


#: The largest id a BIGINT column holds.
MAX_ID = 2**63 - 1


class BadToken(ValuemailError):
    """The token was altered, is for another purpose, or was signed with another key."""


class TokenSigner:
    """Issues and checks URL-safe signed tokens (itsdangerous compares signatures in constant time)."""

    def __init__(self, secret_key: str):
        if not secret_key:
            raise ValueError("a secret key is required to sign links")
        self._serializers = {p: URLSafeSerializer(secret_key, salt=f"valuemail.{p}") for p in PURPOSES}

    def sign(self, purpose: str, delivery_id: int) -> str:
        """A token for `purpose` on `delivery_id`."""
        return self._serializers[purpose].dumps(delivery_id)

    def unsign(self, purpose: str, token: str) -> int:
        """The delivery id in `token`, or BadToken."""
        serializer = self._serializers.get(purpose)
        if serializer is None:
            raise BadToken(f"unknown link purpose {purpose!r}")
        try:
            value = serializer.loads(token)
        except BadSignature:
            raise BadToken("this link is not valid") from None
        # Only a signed id can get here, but an id no database column can hold is refused too.
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= MAX_ID:
            raise BadToken("this link is not valid")
        return value


def recipient_links(signer: TokenSigner, base_url: str, delivery_id: int) -> dict[str, str]:
    """The per-delivery URLs every message carries."""
    return {
        "unsubscribe": f"{base_url}/u/{signer.sign('unsubscribe', delivery_id)}",
        "preferences": f"{base_url}/p/{signer.sign('preferences', delivery_id)}",
        "view_in_browser": f"{base_url}/v/{signer.sign('view', delivery_id)}",
    }
