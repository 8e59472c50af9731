"""The data model: contacts, orders, events, campaigns, runs, the delivery ledger, suppressions."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, Optional

from sqlalchemy import JSON, BigInteger, Boolean, Column, ForeignKey, Index, Integer, String, UniqueConstraint, false
from sqlmodel import Field, SQLModel

from .db import UTCDateTime

# Integer primary keys that are BIGINT on PostgreSQL and the rowid alias on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def _ts(nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable, index=index))


class ContactStatus(str, enum.Enum):
    subscribed = "subscribed"
    unsubscribed = "unsubscribed"


#: The status of a contact who never subscribed to marketing (a friend who entered a contest through
#: a share link): segments never include them, only transactional runs (mail they asked for) reach them.
#: Not a ContactStatus member, so imports cannot set it: an import states consent or opt-out.
TRANSACTIONAL_ONLY = "transactional"
#: Contact statuses a transactional run may still go to.
TRANSACTIONAL_STATUSES = (ContactStatus.subscribed.value, TRANSACTIONAL_ONLY)


class OrderStatus(str, enum.Enum):
    placed = "placed"
    paid = "paid"
    shipped = "shipped"
    delivered = "delivered"
    returned = "returned"
    cancelled = "cancelled"


#: Orders in these states do not count towards spend or LTV.
VOID_ORDER_STATUSES = (OrderStatus.returned.value, OrderStatus.cancelled.value)


class RunStatus(str, enum.Enum):
    populating = "populating"  # the ledger is being filled from the segments
    sending = "sending"
    paused = "paused"
    finished = "finished"
    cancelled = "cancelled"


#: Runs whose deliveries workers may still claim or that may still be resumed.
OPEN_RUN_STATUSES = (RunStatus.populating.value, RunStatus.sending.value)


class DeliveryStatus(str, enum.Enum):
    queued = "queued"  # waiting to be claimed (again, after a temporary failure)
    claimed = "claimed"  # a worker holds it; sent at most once unless that worker dies
    sent = "sent"  # the provider accepted it
    failed = "failed"  # permanent failure, or temporary failures past max_attempts
    skipped = "skipped"  # not sent: unsubscribed or suppressed after the run began
    uncertain = "uncertain"  # the connection failed after the message data went out: it may have
    # been delivered, so it is never resent automatically (`valuemail uncertain` decides)


class SuppressionReason(str, enum.Enum):
    unsubscribe = "unsubscribe"
    hard_bounce = "hard_bounce"
    soft_bounce = "soft_bounce"  # three soft bounces within 30 days
    complaint = "complaint"
    manual = "manual"
    erased = "erased"


class Contact(SQLModel, table=True):
    __tablename__ = "contacts"

    id: Optional[int] = Field(default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True))
    email: str = Field(sa_column=Column(String(320), nullable=False))
    email_key: str = Field(sa_column=Column(String(320), nullable=False, unique=True))  # lower-cased
    first_name: str = Field(default="", sa_column=Column(String(200), nullable=False, server_default=""))
    last_name: str = Field(default="", sa_column=Column(String(200), nullable=False, server_default=""))
    country: Optional[str] = Field(default=None, sa_column=Column(String(2), index=True))
    language: Optional[str] = Field(default=None, sa_column=Column(String(2), index=True))
    timezone: Optional[str] = Field(default=None, sa_column=Column(String(64)))
    status: str = Field(default=ContactStatus.subscribed.value, sa_column=Column(String(16), nullable=False))
    attributes: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: Optional[datetime] = _ts(nullable=False)
    updated_at: Optional[datetime] = _ts(nullable=False)
    erased_at: Optional[datetime] = _ts()  # "erase me": personal data wiped, never mailed again


class ContactTag(SQLModel, table=True):
    __tablename__ = "contact_tags"

    contact_id: int = Field(sa_column=Column(BigId, ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True))
    tag: str = Field(sa_column=Column(String(100), primary_key=True))

    __table_args__ = (Index("ix_contact_tags_tag", "tag"),)


class Order(SQLModel, table=True):
    __tablename__ = "orders"

    id: Optional[int] = Field(default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True))
    order_id: str = Field(sa_column=Column(String(100), nullable=False, unique=True))
    contact_id: int = Field(sa_column=Column(BigId, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False))
    placed_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    total_cents: int = Field(sa_column=Column(BigInteger, nullable=False))
    currency: str = Field(sa_column=Column(String(3), nullable=False))
    margin: Optional[float] = Field(default=None)
    status: str = Field(default=OrderStatus.placed.value, sa_column=Column(String(16), nullable=False))
    updated_at: Optional[datetime] = _ts(nullable=False)

    __table_args__ = (Index("ix_orders_contact_placed", "contact_id", "placed_at"),)


class Event(SQLModel, table=True):
    __tablename__ = "events"

    id: Optional[int] = Field(default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True))
    contact_id: int = Field(sa_column=Column(BigId, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False))
    type: str = Field(sa_column=Column(String(100), nullable=False))
    occurred_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    data: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))

    __table_args__ = (
        UniqueConstraint("contact_id", "type", "occurred_at", name="uq_events_natural"),
        Index("ix_events_type_occurred", "type", "occurred_at"),
    )


class Campaign(SQLModel, table=True):
    __tablename__ = "campaigns"

    id: str = Field(sa_column=Column(String(200), primary_key=True))  # the file stem
    name: str = Field(sa_column=Column(String(300), nullable=False))
    kind: str = Field(sa_column=Column(String(40), nullable=False))
    values: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    definition: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    source_hash: str = Field(sa_column=Column(String(64), nullable=False))
    synced_at: Optional[datetime] = _ts(nullable=False)
    first_seen_at: Optional[datetime] = _ts()  # when the scheduler first saw the file: no catch-up before it


class Run(SQLModel, table=True):
    __tablename__ = "runs"

    id: Optional[int] = Field(default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True))
    campaign_id: str = Field(sa_column=Column(String(200), ForeignKey("campaigns.id"), nullable=False))
    occurrence_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    status: str = Field(default=RunStatus.populating.value, sa_column=Column(String(16), nullable=False, index=True))
    is_test: bool = Field(default=False)
    transactional: bool = Field(default=False, sa_column=Column(Boolean, nullable=False, server_default=false()))  # replies a recipient asked for: exempt from the frequency cap
    definition: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))  # campaign as sent
    populate_cursor: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default="0"))
    total: int = Field(default=0)
    pause_reason: str = Field(default="", sa_column=Column(String(500), nullable=False, server_default=""))
    created_at: Optional[datetime] = _ts(nullable=False)
    started_at: Optional[datetime] = _ts()
    finished_at: Optional[datetime] = _ts()

    __table_args__ = (UniqueConstraint("campaign_id", "occurrence_at", name="uq_runs_occurrence"),)


class Delivery(SQLModel, table=True):
    """The ledger: one row per run and contact, claimed by workers, every outcome recorded."""

    __tablename__ = "deliveries"

    id: Optional[int] = Field(default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True))
    run_id: int = Field(sa_column=Column(BigId, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False))
    contact_id: int = Field(sa_column=Column(BigId, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False))
    email: str = Field(sa_column=Column(String(320), nullable=False))  # the address it went to
    segment: str = Field(sa_column=Column(String(100), nullable=False))
    status: str = Field(default=DeliveryStatus.queued.value, sa_column=Column(String(16), nullable=False))
    attempts: int = Field(default=0)
    claimed_by: Optional[str] = Field(default=None, sa_column=Column(String(64)))
    claimed_at: Optional[datetime] = _ts()
    next_attempt_at: Optional[datetime] = _ts()
    message_id: Optional[str] = Field(default=None, sa_column=Column(String(255)))
    provider: Optional[str] = Field(default=None, sa_column=Column(String(40)))
    provider_message_id: Optional[str] = Field(default=None, sa_column=Column(String(255)))
    last_error: Optional[str] = Field(default=None, sa_column=Column(String(1000)))
    data: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False, server_default="{}"))  # trigger context
    created_at: Optional[datetime] = _ts(nullable=False)
    sent_at: Optional[datetime] = _ts()
    updated_at: Optional[datetime] = _ts(nullable=False)
    opened_at: Optional[datetime] = _ts()  # first open (pixel), when open tracking is on
    open_count: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    clicked_at: Optional[datetime] = _ts()  # first tracked click
    click_count: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))

    __table_args__ = (
        UniqueConstraint("run_id", "contact_id", name="uq_deliveries_run_contact"),
        Index("ix_deliveries_run_status_id", "run_id", "status", "id"),
        Index("ix_deliveries_contact", "contact_id"),
        Index("ix_deliveries_claimed_by", "claimed_by"),
        Index("ix_deliveries_status_id", "status", "id"),  # the send log filtered by status
        Index("ix_deliveries_created", "created_at"),  # the send log's date filter, as an id range
        Index("ix_deliveries_provider_message", "provider_message_id"),  # webhooks name the provider's id
        Index("ix_deliveries_message_id", "message_id"),  # ... or our Message-ID
    )


class Suppression(SQLModel, table=True):
    __tablename__ = "suppressions"

    id: Optional[int] = Field(default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True))
    email_key: str = Field(sa_column=Column(String(320), nullable=False, unique=True))
    reason: str = Field(sa_column=Column(String(20), nullable=False))
    note: str = Field(default="", sa_column=Column(String(500), nullable=False, server_default=""))
    created_at: Optional[datetime] = _ts(nullable=False)


class Coupon(SQLModel, table=True):
    """A unique discount code issued to one contact for one campaign."""

    __tablename__ = "coupons"

    id: Optional[int] = Field(default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True))
    code: str = Field(sa_column=Column(String(40), nullable=False, unique=True))
    campaign_id: str = Field(sa_column=Column(String(200), ForeignKey("campaigns.id"), nullable=False))
    contact_id: int = Field(sa_column=Column(BigId, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False))
    created_at: Optional[datetime] = _ts(nullable=False)
    redeemed_at: Optional[datetime] = _ts()
    order_id: Optional[int] = Field(default=None, sa_column=Column(BigId, ForeignKey("orders.id", ondelete="SET NULL")))

    __table_args__ = (UniqueConstraint("campaign_id", "contact_id", name="uq_coupons_campaign_contact"),)


class Worker(SQLModel, table=True):
    """A sending worker's heartbeat, so that claims of a dead worker can be taken back."""

    __tablename__ = "workers"

    id: str = Field(sa_column=Column(String(64), primary_key=True))
    hostname: str = Field(sa_column=Column(String(255), nullable=False))
    pid: int = Field(default=0)
    started_at: Optional[datetime] = _ts(nullable=False)
    heartbeat_at: Optional[datetime] = _ts(nullable=False)


# -- issue 3: the scheduler, triggers and the campaign kinds' own data ------------------------------

class Lease(SQLModel, table=True):
    """A named lease held by one process at a time (e.g. the active scheduler)."""

    __tablename__ = "leases"

    name: str = Field(sa_column=Column(String(100), primary_key=True))
    holder: str = Field(sa_column=Column(String(100), nullable=False))
    expires_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class TriggerSend(SQLModel, table=True):
    """One triggered occurrence for one contact (an order's survey, a trial's drip step): never twice."""

    __tablename__ = "trigger_sends"

    id: Optional[int] = Field(default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True))
    campaign_id: str = Field(sa_column=Column(String(200), ForeignKey("campaigns.id"), nullable=False))
    trigger_key: str = Field(sa_column=Column(String(200), nullable=False))
    contact_id: int = Field(sa_column=Column(BigId, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False))
    run_id: int = Field(sa_column=Column(BigId, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False))
    due_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    created_at: Optional[datetime] = _ts(nullable=False)

    __table_args__ = (
        UniqueConstraint("campaign_id", "trigger_key", name="uq_trigger_sends_key"),
        Index("ix_trigger_sends_contact", "contact_id"),
    )


class PointsEntry(SQLModel, table=True):
    """The loyalty points ledger: signed entries, each unique by its source, so nothing doubles."""

    __tablename__ = "points_ledger"

    id: Optional[int] = Field(default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True))
    contact_id: int = Field(sa_column=Column(BigId, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False))
    kind: str = Field(sa_column=Column(String(16), nullable=False))  # earn welcome redeem expire reverse adjust
    points: int = Field(sa_column=Column(BigInteger, nullable=False))
    order_id: Optional[int] = Field(default=None, sa_column=Column(BigId, ForeignKey("orders.id", ondelete="SET NULL")))
    source_key: str = Field(sa_column=Column(String(200), nullable=False, unique=True))
    occurred_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    expires_at: Optional[datetime] = _ts()
    note: str = Field(default="", sa_column=Column(String(500), nullable=False, server_default=""))
    created_at: Optional[datetime] = _ts(nullable=False)

    __table_args__ = (Index("ix_points_contact_occurred", "contact_id", "occurred_at"),)


class ContentItem(SQLModel, table=True):
    """A knowledge_sharing item (course, forum, blog, tip) from the campaign file or a feed."""

    __tablename__ = "content_items"

    id: Optional[int] = Field(default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True))
    campaign_id: str = Field(sa_column=Column(String(200), ForeignKey("campaigns.id"), nullable=False))
    item_key: str = Field(sa_column=Column(String(500), nullable=False))  # feed guid or url
    type: str = Field(sa_column=Column(String(20), nullable=False))
    title: str = Field(sa_column=Column(String(500), nullable=False))
    url: str = Field(sa_column=Column(String(2000), nullable=False))
    summary: str = Field(default="", sa_column=Column(String(4000), nullable=False, server_default=""))
    image_url: str = Field(default="", sa_column=Column(String(2000), nullable=False, server_default=""))
    source: str = Field(sa_column=Column(String(20), nullable=False))  # file | feed
    published_at: Optional[datetime] = _ts()
    fetched_at: Optional[datetime] = _ts(nullable=False)

    __table_args__ = (UniqueConstraint("campaign_id", "item_key", name="uq_content_items_key"),)


class ItemSend(SQLModel, table=True):
    """An item chosen for a contact's digest: the unique key is what keeps it from repeating."""

    __tablename__ = "item_sends"

    id: Optional[int] = Field(default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True))
    contact_id: int = Field(sa_column=Column(BigId, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False))
    item_id: int = Field(sa_column=Column(BigId, ForeignKey("content_items.id", ondelete="CASCADE"), nullable=False))
    delivery_id: int = Field(sa_column=Column(BigId, ForeignKey("deliveries.id", ondelete="CASCADE"), nullable=False))
    created_at: Optional[datetime] = _ts(nullable=False)

    __table_args__ = (
        UniqueConstraint("contact_id", "item_id", name="uq_item_sends_contact_item"),
        Index("ix_item_sends_delivery", "delivery_id"),
    )


class SurveyResponse(SQLModel, table=True):
    """One response per survey invitation (delivery); answers also stored one row per question."""

    __tablename__ = "survey_responses"

    id: Optional[int] = Field(default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True))
    delivery_id: int = Field(sa_column=Column(BigId, ForeignKey("deliveries.id", ondelete="CASCADE"), nullable=False, unique=True))
    campaign_id: str = Field(sa_column=Column(String(200), ForeignKey("campaigns.id"), nullable=False))
    contact_id: int = Field(sa_column=Column(BigId, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False))
    order_id: Optional[int] = Field(default=None, sa_column=Column(BigId, ForeignKey("orders.id", ondelete="SET NULL")))
    first_answered_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    submitted_at: Optional[datetime] = _ts()
    updated_at: Optional[datetime] = _ts(nullable=False)

    __table_args__ = (Index("ix_survey_responses_campaign_answered", "campaign_id", "first_answered_at"),)


class SurveyAnswer(SQLModel, table=True):
    __tablename__ = "survey_answers"

    response_id: int = Field(sa_column=Column(BigId, ForeignKey("survey_responses.id", ondelete="CASCADE"), primary_key=True))
    question: str = Field(sa_column=Column(String(100), primary_key=True))
    value_number: Optional[float] = Field(default=None)
    value_text: Optional[str] = Field(default=None, sa_column=Column(String(4000)))


class Contest(SQLModel, table=True):
    """A contest's draw commitment (fixed when it opens), the revealed seed and the winners."""

    __tablename__ = "contests"

    campaign_id: str = Field(sa_column=Column(String(200), ForeignKey("campaigns.id"), primary_key=True))
    seed_hash: str = Field(sa_column=Column(String(64), nullable=False))
    seed: Optional[str] = Field(default=None, sa_column=Column(String(128)))  # secret until the draw
    opened_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    drawn_at: Optional[datetime] = _ts()
    winners: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))


class ContestEntry(SQLModel, table=True):
    __tablename__ = "contest_entries"

    id: Optional[int] = Field(default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True))
    campaign_id: str = Field(sa_column=Column(String(200), ForeignKey("campaigns.id"), nullable=False))
    contact_id: int = Field(sa_column=Column(BigId, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False))
    referred_by: Optional[int] = Field(default=None, sa_column=Column(BigId, ForeignKey("contacts.id", ondelete="SET NULL")))
    entered_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))

    __table_args__ = (
        UniqueConstraint("campaign_id", "contact_id", name="uq_contest_entries_contact"),
        Index("ix_contest_entries_referred_by", "campaign_id", "referred_by"),
    )


# -- issue 4: recipient pages: preferences, tracking, the delivery timeline -------------------------

class KindOptOut(SQLModel, table=True):
    """A contact who no longer wants one campaign kind (set in the preference centre)."""

    __tablename__ = "contact_kind_optouts"

    contact_id: int = Field(sa_column=Column(BigId, ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True))
    kind: str = Field(sa_column=Column(String(40), primary_key=True))
    created_at: Optional[datetime] = _ts(nullable=False)

    __table_args__ = (Index("ix_contact_kind_optouts_kind", "kind", "contact_id"),)


class Link(SQLModel, table=True):
    """A URL a run's mails contain: a click token names one of these, so redirects go nowhere else."""

    __tablename__ = "links"

    id: Optional[int] = Field(default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True))
    run_id: int = Field(sa_column=Column(BigId, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False))
    url: str = Field(sa_column=Column(String(2048), nullable=False))
    created_at: Optional[datetime] = _ts(nullable=False)

    __table_args__ = (UniqueConstraint("run_id", "url", name="uq_links_run_url"),)


class LinkClick(SQLModel, table=True):
    """Clicks of one link in one delivery: the first, the last and how many."""

    __tablename__ = "link_clicks"

    delivery_id: int = Field(sa_column=Column(BigId, ForeignKey("deliveries.id", ondelete="CASCADE"), primary_key=True))
    link_id: int = Field(sa_column=Column(BigId, ForeignKey("links.id", ondelete="CASCADE"), primary_key=True))
    first_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    last_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    count: int = Field(default=1, sa_column=Column(Integer, nullable=False, server_default="1"))

    __table_args__ = (Index("ix_link_clicks_link", "link_id"),)


class DeliveryEventType(str, enum.Enum):
    """What can happen to a delivery after it was sent; our vocabulary, whatever the provider says."""

    delivered = "delivered"
    opened = "opened"
    clicked = "clicked"
    bounced = "bounced"
    complained = "complained"
    unsubscribed = "unsubscribed"


class DeliveryEvent(SQLModel, table=True):
    """One entry in a delivery's timeline (its sending is the delivery row itself)."""

    __tablename__ = "delivery_events"

    id: Optional[int] = Field(default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True))
    delivery_id: int = Field(sa_column=Column(BigId, ForeignKey("deliveries.id", ondelete="CASCADE"), nullable=False))
    type: str = Field(sa_column=Column(String(20), nullable=False))
    occurred_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    data: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))

    __table_args__ = (
        Index("ix_delivery_events_delivery", "delivery_id", "occurred_at"),
        Index("ix_delivery_events_type_occurred", "type", "occurred_at"),
    )


# -- issue 5: admin accounts and API keys -----------------------------------------------------------

class AdminRole(str, enum.Enum):
    admin = "admin"  # everything, including sending, pausing and drawing
    viewer = "viewer"  # reads every page; changes nothing


class AdminUser(SQLModel, table=True):
    """A person who may log in to the admin area."""

    __tablename__ = "admin_users"

    id: Optional[int] = Field(default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True))
    email: str = Field(sa_column=Column(String(320), nullable=False))
    email_key: str = Field(sa_column=Column(String(320), nullable=False, unique=True))
    password_hash: str = Field(sa_column=Column(String(500), nullable=False))
    role: str = Field(default=AdminRole.viewer.value, sa_column=Column(String(16), nullable=False))
    session_version: int = Field(default=1, sa_column=Column(Integer, nullable=False, server_default="1"))  # bumped: every session ends
    disabled_at: Optional[datetime] = _ts()
    created_at: Optional[datetime] = _ts(nullable=False)
    updated_at: Optional[datetime] = _ts(nullable=False)
    last_login_at: Optional[datetime] = _ts()


class LoginFailure(SQLModel, table=True):
    """A failed admin login, counted per address and per client for the rate limit."""

    __tablename__ = "login_failures"

    id: Optional[int] = Field(default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True))
    email_key: str = Field(sa_column=Column(String(320), nullable=False))
    client: str = Field(sa_column=Column(String(100), nullable=False))
    at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))

    __table_args__ = (
        Index("ix_login_failures_email_at", "email_key", "at"),
        Index("ix_login_failures_client_at", "client", "at"),
    )


class ApiKey(SQLModel, table=True):
    """A REST API key: only its SHA-256 is stored; the prefix identifies it in lists and logs."""

    __tablename__ = "api_keys"

    id: Optional[int] = Field(default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True))
    name: str = Field(sa_column=Column(String(200), nullable=False))
    prefix: str = Field(sa_column=Column(String(16), nullable=False, unique=True))
    key_hash: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    created_at: Optional[datetime] = _ts(nullable=False)
    last_used_at: Optional[datetime] = _ts()
    revoked_at: Optional[datetime] = _ts()


# -- issue 6: providers, rate limits and webhooks ---------------------------------------------------

class ProviderThrottle(SQLModel, table=True):
    """A provider told us to wait (429 Retry-After, 421): every process waits until `blocked_until`."""

    __tablename__ = "provider_throttle"

    provider: str = Field(sa_column=Column(String(40), primary_key=True))
    blocked_until: Optional[datetime] = _ts()
    reason: str = Field(default="", sa_column=Column(String(500), nullable=False, server_default=""))
    updated_at: Optional[datetime] = _ts(nullable=False)


class ProviderUsage(SQLModel, table=True):
    """Messages handed to a provider per minute, so hourly and daily limits survive a restart."""

    __tablename__ = "provider_usage"

    provider: str = Field(sa_column=Column(String(40), primary_key=True))
    minute: datetime = Field(sa_column=Column(UTCDateTime(), primary_key=True))
    count: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))


class WebhookNonce(SQLModel, table=True):
    """A webhook token or message id already accepted: a replay of it is refused."""

    __tablename__ = "webhook_nonces"

    provider: str = Field(sa_column=Column(String(40), primary_key=True))
    nonce: str = Field(sa_column=Column(String(200), primary_key=True))
    seen_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False, index=True))


class WebhookLog(SQLModel, table=True):
    """Every webhook request: accepted, ignored or refused with why (never the body: it names people)."""

    __tablename__ = "webhook_log"

    id: Optional[int] = Field(default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True))
    provider: str = Field(sa_column=Column(String(40), nullable=False))
    received_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False, index=True))
    status: str = Field(sa_column=Column(String(16), nullable=False))  # accepted | ignored | refused
    detail: str = Field(default="", sa_column=Column(String(500), nullable=False, server_default=""))
    remote: str = Field(default="", sa_column=Column(String(64), nullable=False, server_default=""))
