"""What the mail achieved, per campaign kind or per value dimension, per calendar period.

For every delivery sent in a period (test runs excluded): sent, delivered, opened, clicked,
converted, revenue, unsubscribed, bounced and complained, with their rates over sent.

- *Delivered* is sent minus bounced until a provider reports deliveries (issue 6's webhooks
  add `delivered` events; a delivery with one counts as delivered whatever else happened).
- *Converted* and *revenue* use last-click attribution: each order (not returned or cancelled)
  is credited to the latest clicked delivery of its contact at most `[tracking]
  attribution_days` before the order; a delivery converts when at least one order is credited
  to it. An order is therefore never counted twice, however many mails were clicked.
- A campaign with several value dimensions counts in each of them (the dimensions overlap by
  design); the "kind" grouping partitions the deliveries.

The heavy part is one grouped query per call over the deliveries of the periods (per campaign
and period), plus one over the clicked deliveries and their contacts' orders for attribution.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Iterable

from sqlalchemy import and_, case, exists, func, select
from sqlmodel import Session

from .campaigns.definition import VALUE_DIMENSIONS
from .models import VOID_ORDER_STATUSES, Campaign, Delivery, DeliveryEvent, DeliveryStatus, Order, Run
from .surveys import period_bounds

GROUPINGS = ("kind", "value")
PERIODS = ("day", "week", "month", "quarter")
_CHUNK = 1000


@dataclass
class Figures:
    """Counts for one group and period; rates are over sent (None when nothing was sent)."""

    sent: int = 0
    delivered: int = 0
    opened: int = 0
    clicked: int = 0
    converted: int = 0
    revenue_cents: dict[str, int] = field(default_factory=dict)  # per currency: amounts are never converted
    unsubscribed: int = 0
    bounced: int = 0
    complained: int = 0

    def add(self, other: "Figures") -> None:
        """Add `other`'s counts to these."""
        for name in ("sent", "delivered", "opened", "clicked", "converted", "unsubscribed", "bounced", "complained"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for currency, cents in other.revenue_cents.items():
            self.revenue_cents[currency] = self.revenue_cents.get(currency, 0) + cents

    def rate(self, name: str) -> float | None:
        """`name` as a percentage of sent, one decimal."""
        return round(getattr(self, name) * 100 / self.sent, 1) if self.sent else None

    def as_json(self) -> dict[str, Any]:
        """Counts, revenue per currency (in major units, as strings) and rates."""
        counts = ("sent", "delivered", "opened", "clicked", "converted", "unsubscribed", "bounced", "complained")
        return {
            **{name: getattr(self, name) for name in counts},
            "revenue": {c: f"{v / 100:.2f}" for c, v in sorted(self.revenue_cents.items())},
            "rates": {name: self.rate(name) for name in counts[1:]},
        }


@dataclass(frozen=True)
class Period:
    """One calendar period: its label and UTC bounds (end exclusive)."""

    label: str
    start: datetime
    end: datetime


@dataclass(frozen=True)
class Dashboard:
    """Figures per group (kind or value dimension) and period, plus each group's total."""

    grouping: str
    periods: list[Period]
    groups: dict[str, list[Figures]]  # group -> one Figures per period

    def total(self, group: str) -> Figures:
        """The group's figures over every period."""
        total = Figures()
        for figures in self.groups.get(group, []):
            total.add(figures)
        return total

    def as_json(self) -> dict[str, Any]:
        """Everything, JSON-ready (for the admin UI's charts)."""
        return {
            "grouping": self.grouping,
            "periods": [{"label": p.label, "start": p.start.isoformat(), "end": p.end.isoformat()} for p in self.periods],
            "groups": {g: {"periods": [f.as_json() for f in figures], "total": self.total(g).as_json()}
                       for g, figures in self.groups.items()},
        }


def dashboard(session: Session, *, grouping: str, period: str, periods: int, now: datetime, tz,
              attribution_days: int) -> Dashboard:
    """The figures of the last `periods` calendar periods (oldest first; the last holds `now`)."""
    if grouping not in GROUPINGS:
        raise ValueError(f"grouping must be one of {', '.join(GROUPINGS)}")
    if period not in PERIODS:
        raise ValueError(f"period must be one of {', '.join(PERIODS)}")
    if not 1 <= periods <= 366:
        raise ValueError("periods must be between 1 and 366")
    bounds = _bounds(now, period=period, count=periods, tz=tz)
    spans = [Period(label=_label(start, period, tz), start=start, end=end) for start, end in zip(bounds, bounds[1:])]
    campaigns = {c.id: (c.kind, list(c.values or [])) for c in session.execute(select(Campaign)).scalars()}
    per_campaign = _counts(session, bounds)
    _attribute(session, per_campaign, bounds, window=timedelta(days=attribution_days))

    def groups_of(campaign_id: str) -> list[str]:
        kind, values = campaigns.get(campaign_id, ("unknown", []))
        return [kind] if grouping == "kind" else [v for v in values if v in VALUE_DIMENSIONS]

    names = list(VALUE_DIMENSIONS) if grouping == "value" else sorted({k for k, _ in campaigns.values()})
    groups: dict[str, list[Figures]] = {name: [Figures() for _ in spans] for name in names}
    for (campaign_id, bucket), figures in per_campaign.items():
        for name in groups_of(campaign_id):
            groups.setdefault(name, [Figures() for _ in spans])[bucket].add(figures)
    return Dashboard(grouping=grouping, periods=spans, groups=groups)


def _bounds(now: datetime, *, period: str, count: int, tz) -> list[datetime]:
    if period in ("month", "quarter"):
        return period_bounds(now, period=period, count=count, tz=tz)
    step = 1 if period == "day" else 7
    local = now.astimezone(tz)
    start = datetime(local.year, local.month, local.day, tzinfo=tz)
    if period == "week":
        start -= timedelta(days=local.weekday())  # weeks start on Monday
    # Day arithmetic on local dates, so a DST change keeps periods on local midnight.
    starts = [start - timedelta(days=step * k) for k in range(count - 1, -2, -1)]
    return [datetime(s.year, s.month, s.day, tzinfo=tz).astimezone(now.tzinfo) for s in starts]


def _label(start: datetime, period: str, tz) -> str:
    local = start.astimezone(tz)
    if period == "month":
        return f"{local:%Y-%m}"
    if period == "quarter":
        return f"{local.year}-Q{(local.month - 1) // 3 + 1}"
    if period == "week":
        year, week, _ = local.isocalendar()
        return f"{year}-W{week:02d}"
    return f"{local:%Y-%m-%d}"


def _bucket(bounds: list[datetime]):
    return case(*[(Delivery.sent_at < end, i) for i, end in enumerate(bounds[1:])]).label("bucket")


def _in_range(bounds: list[datetime]):
    return and_(Delivery.status == DeliveryStatus.sent.value, Run.is_test.is_(False),
                Delivery.sent_at >= bounds[0], Delivery.sent_at < bounds[-1])


def _counts(session: Session, bounds: list[datetime]) -> dict[tuple[str, int], Figures]:
    def event(kind: str):
        return exists().where(DeliveryEvent.delivery_id == Delivery.id, DeliveryEvent.type == kind)

    def has(kind: str):
        return func.sum(case((event(kind), 1), else_=0))

    bucket = _bucket(bounds)
    rows = session.execute(
        select(Run.campaign_id, bucket, func.count(),
               func.sum(case((Delivery.opened_at.is_not(None), 1), else_=0)),
               func.sum(case((Delivery.clicked_at.is_not(None), 1), else_=0)),
               has("unsubscribed"), has("bounced"), has("complained"),
               # Delivered: reported so, or (until a provider reports) sent and not bounced.
               func.sum(case((event("delivered"), 1), (event("bounced"), 0), else_=1)))
        .join(Run, Run.id == Delivery.run_id).where(_in_range(bounds))
        .group_by(Run.campaign_id, bucket)
    ).all()
    result = {}
    for campaign_id, b, sent, opened, clicked, unsub, bounced, complained, delivered in rows:
        result[(campaign_id, int(b))] = Figures(sent=sent, opened=int(opened or 0), clicked=int(clicked or 0),
                                                unsubscribed=int(unsub or 0), bounced=int(bounced or 0),
                                                complained=int(complained or 0), delivered=int(delivered or 0))
    return result


def _attribute(session: Session, per_campaign: dict[tuple[str, int], Figures], bounds: list[datetime], *,
               window: timedelta) -> None:
    """Credit each order to the latest clicked delivery of its contact within `window` before it."""
    bucket = _bucket(bounds)
    clicks = session.execute(
        select(Delivery.id, Delivery.contact_id, Delivery.clicked_at, Run.campaign_id, bucket)
        .join(Run, Run.id == Delivery.run_id)
        .where(_in_range(bounds), Delivery.clicked_at.is_not(None))
    ).all()
    if not clicks:
        return
    by_contact: dict[int, list[tuple[datetime, int, str, int]]] = defaultdict(list)
    for delivery_id, contact_id, clicked_at, campaign_id, b in clicks:
        by_contact[contact_id].append((clicked_at, delivery_id, campaign_id, int(b)))
    for timeline in by_contact.values():
        timeline.sort()
    first = min(c[2] for c in clicks)
    last = max(c[2] for c in clicks) + window
    converted: set[int] = set()
    for chunk in _chunks(list(by_contact)):
        orders = session.execute(
            select(Order.contact_id, Order.placed_at, Order.total_cents, Order.currency)
            .where(Order.contact_id.in_(chunk), Order.placed_at >= first, Order.placed_at <= last,
                   Order.status.not_in(VOID_ORDER_STATUSES)))
        for contact_id, placed_at, cents, currency in orders:
            timeline = by_contact[contact_id]
            i = bisect_right(timeline, (placed_at, float("inf"))) - 1
            if i < 0 or placed_at - timeline[i][0] > window:
                continue
            _, delivery_id, campaign_id, b = timeline[i]
            figures = per_campaign[(campaign_id, b)]
            figures.revenue_cents[currency] = figures.revenue_cents.get(currency, 0) + int(cents)
            if delivery_id not in converted:
                converted.add(delivery_id)
                figures.converted += 1


def _chunks(items: list, size: int = _CHUNK) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
