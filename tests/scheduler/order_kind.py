"""A test kind: seasonal_discount's offer, sent per order seven days after it was placed."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from engine.campaigns.kinds import Due
from engine.campaigns.kinds.seasonal_discount import SeasonalDiscount
from engine.models import Order, TriggerSend


class OrderFollowUp(SeasonalDiscount):
    name = "order_follow_up"

    def check_schedule(self, section, schedule):
        return None if schedule is not None and schedule.trigger == "order" else "needs trigger = order"

    def due(self, section, session, ctx, *, since):
        sent = select(TriggerSend.trigger_key).where(TriggerSend.campaign_id == ctx.campaign_id)
        for order in session.execute(select(Order)).scalars():
            due_at = order.placed_at + timedelta(days=7)
            key = f"order:{order.order_id}"
            if since < due_at <= ctx.now and key not in set(session.execute(sent).scalars()):
                yield Due(contact_id=order.contact_id, key=key, due_at=due_at, data={"order_id": order.order_id})
