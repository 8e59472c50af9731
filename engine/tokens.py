"""Signed tokens for every link a recipient can click, bound to one delivery and one purpose."""

from __future__ import annotations

import hashlib
import hmac
from binascii import b2a_base64

from itsdangerous import BadSignature, URLSafeSerializer

from .errors import ValuemailError

#: Purposes a token can be issued for; a token for one purpose is refused for any other.
PURPOSES = ("unsubscribe", "preferences", "view", "click", "open", "coupon", "survey", "contest")


#: The largest id a BIGINT column holds.
MAX_ID = 2**63 - 1

_URLSAFE = bytes.maketrans(b"+/", b"-_")


class BadToken(ValuemailError):
    """The token was altered, is for another purpose, or was signed with another key."""


class TokenSigner:
    """Issues and checks URL-safe signed tokens (itsdangerous compares signatures in constant time)."""

    def __init__(self, secret_key: str):
        if not secret_key:
            raise ValueError("a secret key is required to sign links")
        self._serializers = {p: URLSafeSerializer(secret_key, salt=f"valuemail.{p}") for p in PURPOSES}
        # A keyed HMAC per purpose, copied for each token: a mail carries one click token per link,
        # and itsdangerous derives the key and builds its objects again for every dumps().
        self._macs = {p: hmac.new(s.make_signer(s.salt).derive_key(), digestmod=hashlib.sha1)
                      for p, s in self._serializers.items()}

    def sign(self, purpose: str, delivery_id: int) -> str:
        """A token for `purpose` on `delivery_id`."""
        if _is_id(delivery_id):
            return self._fast(purpose, str(delivery_id))
        return self._serializers[purpose].dumps(delivery_id)

    def unsign(self, purpose: str, token: str) -> int:
        """The delivery id in `token`, or BadToken."""
        value = self._loads(purpose, token)
        # Only a signed id can get here, but an id no database column can hold is refused too.
        if not _is_id(value):
            raise BadToken("this link is not valid")
        return value

    def sign_ids(self, purpose: str, *ids: int) -> str:
        """A token for `purpose` on a list of ids (a click: [delivery_id, link_id])."""
        # The bytes URLSafeSerializer.dumps(list(ids)) gives, computed directly: a newsletter signs
        # one per link per recipient, and this is several times faster.
        if not all(_is_id(i) for i in ids) or not ids:
            raise ValueError(f"ids must be positive integers up to {MAX_ID}, not {ids!r}")
        return self._fast(purpose, f"[{ids[0]},{ids[1]}]" if len(ids) == 2 else "[" + ",".join(map(str, ids)) + "]")

    def _fast(self, purpose: str, json: str) -> str:
        """What `URLSafeSerializer.dumps` makes of the value whose compact JSON is `json`, never compressed."""
        # dumps would zlib-compress a payload that shrinks by it, which a few ids hardly ever do;
        # uncompressed, loads() reads it all the same.
        payload = _b64(json.encode("ascii"))
        mac = self._macs[purpose].copy()
        mac.update(payload)
        return (payload + b"." + _b64(mac.digest())).decode("ascii")

    def unsign_ids(self, purpose: str, token: str, count: int) -> tuple[int, ...]:
        """The `count` ids in a `sign_ids` token, or BadToken (wrong length or type, or an impossible id)."""
        value = self._loads(purpose, token)
        if not isinstance(value, list) or len(value) != count or not all(_is_id(v) for v in value):
            raise BadToken("this link is not valid")
        return tuple(value)

    def _loads(self, purpose: str, token: str):
        serializer = self._serializers.get(purpose)
        if serializer is None:
            raise BadToken(f"unknown link purpose {purpose!r}")
        try:
            return serializer.loads(token)
        except BadSignature:
            raise BadToken("this link is not valid") from None


def _b64(data: bytes) -> bytes:
    """URL-safe base64 without padding, as itsdangerous writes it."""
    return b2a_base64(data, newline=False).translate(_URLSAFE).rstrip(b"=")


def _is_id(value) -> bool:
    """True for an int a BIGINT id column can hold (bool is an int in Python, but not an id)."""
    return type(value) is int and 0 < value <= MAX_ID


def recipient_links(signer: TokenSigner, base_url: str, delivery_id: int) -> dict[str, str]:
    """The per-delivery URLs every message carries."""
    return {
        "unsubscribe": f"{base_url}/u/{signer.sign('unsubscribe', delivery_id)}",
        "preferences": f"{base_url}/p/{signer.sign('preferences', delivery_id)}",
        "view_in_browser": f"{base_url}/v/{signer.sign('view', delivery_id)}",
    }
