"""The registry of campaign kinds."""

from __future__ import annotations

from .base import Kind, Recipient, SectionModel
from .seasonal_discount import SeasonalDiscount

#: Kinds named by the product; those without an implementation yet are refused clearly.
ALL_KINDS = ("loyalty_points", "seasonal_discount", "demo_access", "knowledge_sharing",
             "post_purchase_survey", "contest")


def get_kind(name: str) -> Kind | None:
    """The implementation of kind `name`, or None when it is not supported yet."""
    return {"seasonal_discount": SeasonalDiscount}.get(name, lambda: None)()


__all__ = ["ALL_KINDS", "Kind", "Recipient", "SectionModel", "get_kind"]
