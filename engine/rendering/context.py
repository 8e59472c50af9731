"""The template context contract, and a realistic sample recipient for `validate` and `preview`.

The sending code builds one such dict per recipient; templates are written against it:

    contact:  {email, first_name, last_name, country, language, timezone,
               attributes: dict, ltv: float, orders_count: int}
    campaign: {id, name, kind, values: list[str]}
    segment:  str
    offer:    (seasonal_discount) {percent: int|None, amount: float|None, currency: str,
               min_order: float|None, valid_from: str|None (ISO date), valid_until: str|None,
               code: str, tier: str|None, headline: str|None,
               products: [{name, url, image_url, price}]}
    sender:   {from_name, from_email, postal_address}
    links:    {unsubscribe, preferences, view_in_browser, shop}
    preheader: str (optional; test with `preheader is defined`)
    lang:     the recipient's language (ISO 639-1) where the strings have it, else "en"
    t:        translated strings for `lang` (templates/emails/strings/common.toml + <kind>.toml)
"""

from __future__ import annotations

import copy
from typing import Any, TypedDict


class ContactContext(TypedDict):
    email: str
    first_name: str
    last_name: str
    country: str | None
    language: str | None
    timezone: str | None
    attributes: dict
    ltv: float
    orders_count: int


class CampaignContext(TypedDict):
    id: str
    name: str
    kind: str
    values: list[str]


class ProductContext(TypedDict):
    name: str
    url: str
    image_url: str
    price: float | str


class OfferContext(TypedDict):
    percent: int | None
    amount: float | None
    currency: str
    min_order: float | None
    valid_from: str | None
    valid_until: str | None
    code: str
    tier: str | None
    headline: str | None
    products: list[ProductContext]


class SenderContext(TypedDict):
    from_name: str
    from_email: str
    postal_address: str


class LinksContext(TypedDict):
    unsubscribe: str
    preferences: str
    view_in_browser: str
    shop: str


_COMMON: dict[str, Any] = {
    "contact": {
        "email": "anneke.devries@example.nl",
        "first_name": "Anneke",
        "last_name": "de Vries",
        "country": "NL",
        "language": "nl",
        "timezone": "Europe/Amsterdam",
        "attributes": {"favourite_category": "tuin", "loyalty_number": "NL-204981"},
        "ltv": 612.4,
        "orders_count": 7,
    },
    "segment": "everyone",
    "sender": {
        "from_name": "Example Shop",
        "from_email": "news@example.com",
        "postal_address": "Example Shop, Keizersgracht 1, 1015 CJ Amsterdam, NL",
    },
    "links": {
        "unsubscribe": "http://127.0.0.1:8000/u/sample-unsubscribe-token",
        "preferences": "http://127.0.0.1:8000/p/sample-preferences-token",
        "view_in_browser": "http://127.0.0.1:8000/v/sample-view-token",
        "shop": "https://example.com/spring",
    },
    "preheader": "",
}

_KIND: dict[str, dict[str, Any]] = {
    "seasonal_discount": {
        "campaign": {"id": "spring-sale", "name": "Spring sale", "kind": "seasonal_discount", "values": ["economic"]},
        "preheader": "Your spring code inside: 15% off everything until 3 April.",
        "offer": {
            "percent": 15,
            "amount": None,
            "currency": "EUR",
            "min_order": 50.0,
            "valid_from": "2027-03-20",
            "valid_until": "2027-04-03",
            "code": "SPRING-7K3Q-M2XD",
            "tier": None,
            "headline": "Spring is here — and so is your discount",
            "products": [
                {"name": "Linen tea towel, set of 3", "url": "https://example.com/p/linen-tea-towels",
                 "image_url": "https://example.com/img/linen-tea-towels.jpg", "price": 24.95},
                {"name": "Ceramic herb planter", "url": "https://example.com/p/herb-planter",
                 "image_url": "https://example.com/img/herb-planter.jpg", "price": 34.5},
                {"name": "Organic seed starter kit", "url": "https://example.com/p/seed-kit",
                 "image_url": "https://example.com/img/seed-kit.jpg", "price": 19.0},
            ],
        },
    },
}


def sample_context(kind: str, *, templates_dir=None, language: str = "en") -> dict[str, Any]:
    """A realistic fake recipient's context for a campaign kind (a fresh copy each call).

    With `templates_dir`, `t` holds that project's strings for `language`; else it is empty.
    """
    from .strings import Strings

    context = copy.deepcopy(_COMMON)
    context["lang"] = language
    context["t"] = Strings(templates_dir).for_language((kind, kind), language) if templates_dir else {}
    context["campaign"] = {"id": "sample", "name": "Sample campaign", "kind": kind, "values": []}
    context.update(copy.deepcopy(_KIND.get(kind, {})))
    return context
