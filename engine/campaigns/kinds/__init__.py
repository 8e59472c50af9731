"""The registry of campaign kinds: one module per kind under this package."""

from __future__ import annotations

import importlib

from .base import BaseKind, Due, Kind, KindContext, Recipient, SectionModel

#: Kinds named by the product, and the class implementing each.
IMPLEMENTATIONS = {
    "loyalty_points": "loyalty_points:LoyaltyPoints",
    "seasonal_discount": "seasonal_discount:SeasonalDiscount",
    "demo_access": "demo_access:DemoAccess",
    "knowledge_sharing": "knowledge_sharing:KnowledgeSharing",
    "post_purchase_survey": "post_purchase_survey:PostPurchaseSurvey",
    "contest": "contest:Contest",
}


def get_kind(name: str) -> Kind | None:
    """The implementation of kind `name`, or None when it is unknown or not built yet."""
    target = IMPLEMENTATIONS.get(name)
    if target is None:
        return None
    module_name, class_name = target.split(":")
    # A bare name is a module of this package; a dotted one is absolute (e.g. a plug-in's).
    full_name = module_name if "." in module_name else f"{__name__}.{module_name}"
    try:
        module = importlib.import_module(full_name)
    except ModuleNotFoundError as exc:
        if exc.name != full_name:
            raise
        return None
    return getattr(module, class_name)()


__all__ = ["IMPLEMENTATIONS", "BaseKind", "Due", "Kind", "KindContext", "Recipient", "SectionModel", "get_kind"]
