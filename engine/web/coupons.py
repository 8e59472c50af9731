"""The coupon page of a delivery: the code large enough to read off a phone, its value and conditions."""

from __future__ import annotations

from flask import Blueprint, render_template

from .. import coupons
from ..models import Contact, Delivery
from .context import db_session, web_context
from .i18n import coupon_labels, page_language

bp = Blueprint("coupons", __name__)


@bp.get("/k/", defaults={"token": ""})
@bp.get("/k/<token>")
def page(token: str):
    """The discount a mail carried; a friendly page when it carried none."""
    ctx = web_context()
    delivery_id = ctx.signer.unsign("coupon", token)
    session = db_session()
    offer = coupons.coupon_for_delivery(session, delivery_id=delivery_id, settings=ctx.settings)
    delivery = session.get(Delivery, delivery_id)
    lang = page_language(session.get(Contact, delivery.contact_id))
    today = ctx.clock.now().astimezone(ctx.settings.tz).date()
    return render_template("public/coupon.html", offer=offer, lang=lang, t=coupon_labels(lang), today=today,
                           sender=ctx.settings.sender), 200 if offer is not None else 404
