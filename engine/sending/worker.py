"""Sending workers: threads that claim ledger batches, compose, send and record every outcome."""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from .. import ltv
from ..campaigns import load_campaign
from ..campaigns.kinds import KindContext, Recipient
from ..clock import Clock
from ..config import Settings
from ..db import read_only
from ..errors import InvalidFile, RenderError
from ..models import TRANSACTIONAL_STATUSES, Contact, ContactStatus, Delivery, KindOptOut, Run, RunStatus, Suppression
from ..providers import Outcome, OutgoingMessage, SendResult, provider_factory as build_factory
from ..tokens import TokenSigner
from . import frequency, ledger
from .compose import Composer, ContactData
from .ratelimit import RateLimiter, Throttles, UsageMeter
from .routing import ProviderFactory, Route, Router, ThreadProviders

log = logging.getLogger(__name__)

OutcomeCallback = Callable[[int, str], None]

SKIP_UNSUBSCRIBED = "unsubscribed or suppressed"
SKIP_CAPPED = "frequency cap"
SKIP_OPTED_OUT = "opted out of this kind of mail"


@dataclass(frozen=True)
class _Hold:
    """A provider may not take messages until `until` (throttled or out of budget): defer, do not fail."""

    until: datetime
    reason: str


@dataclass
class _RunState:
    composer: Composer
    definition: object
    route: Route
    transactional: bool = False
    error_streak: int = 0
    paused: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class Sender:
    """Drains the ledger of given runs with `settings.sending.concurrency` threads in this process."""

    def __init__(self, *, engine: Engine, settings: Settings, clock: Clock, provider_factory: ProviderFactory,
                 renderer, on_outcome: OutcomeCallback | None = None, worker_id: str | None = None,
                 factory_for: Callable[[str], ProviderFactory] | None = None):
        """`provider_factory` makes the configured provider; `factory_for(name)` the others (fallback, campaigns')."""
        self.engine = engine
        self._reader = read_only(engine)
        self.settings = settings
        self.clock = clock
        self.router = Router(settings=settings.provider,
                             factory_for=factory_for or (lambda name: build_factory(settings, name=name)),
                             factories={settings.provider.name: provider_factory})
        self.router.prepare(self.router.route(None))
        self.meter = UsageMeter(engine=engine, settings=settings.provider, clock=clock)
        self.throttles = Throttles(engine=engine, clock=clock)
        self.renderer = renderer
        self.on_outcome = on_outcome or (lambda run_id, status: None)
        self.worker_id = worker_id or f"w-{uuid.uuid4().hex[:16]}"
        self.signer = TokenSigner(settings.secret_key)
        self.limiter = RateLimiter(settings.sending.rate_per_second)
        self.stop = threading.Event()
        self._runs: dict[int, _RunState] = {}
        self._runs_lock = threading.Lock()
        self._errors: list[BaseException] = []

    # -- the public loop ------------------------------------------------------------------------

    def drain(self, run_ids: list[int] | None = None, *, wait_for_retries: bool = True) -> None:
        """Send every due delivery of `run_ids` (None: every sending run) until none is left or due."""
        s = self.settings.sending
        ledger.register_worker(self.engine, self.worker_id, now=self.clock.now())
        self.stop.clear()
        self._errors = []
        beat_stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(beat_stop,), name="valuemail-heartbeat", daemon=True)
        beat.start()
        try:
            ledger.reclaim_dead_workers(self.engine, now=self.clock.now(), lease_seconds=s.lease_seconds,
                                        self_id=self.worker_id)
            while not self.stop.is_set():
                targets = self._targets(run_ids)
                if not targets:
                    return
                threads = [threading.Thread(target=self._thread_main, args=(targets,), name=f"valuemail-send-{i}")
                           for i in range(s.concurrency)]
                for t in threads:
                    t.start()
                try:
                    for t in threads:
                        t.join()
                except BaseException:
                    # Ctrl-C: let each thread finish and record the message it has in flight first.
                    self.stop.set()
                    for t in threads:
                        t.join()
                    raise
                if self._errors:
                    raise self._errors[0]
                for run_id in targets:
                    ledger.finish_if_done(self.engine, run_id, now=self.clock.now())
                if not wait_for_retries or not self._wait_for_retry(run_ids):
                    return
        finally:
            beat_stop.set()
            self.meter.flush()
            released = ledger.unregister_worker(self.engine, self.worker_id)
            if released:
                log.info("released %d claimed deliveries back to the queue", released)

    def _targets(self, run_ids: list[int] | None) -> list[int]:
        with Session(self.engine) as session:
            sending = ledger.sending_runs(session)
        return [r for r in sending if run_ids is None or r in run_ids]

    def _wait_for_retry(self, run_ids: list[int] | None) -> bool:
        """Sleep until the earliest deferred delivery is due; False when nothing is waiting."""
        with Session(self.engine) as session:
            due = [ledger.next_retry_at(session, r) for r in self._targets(run_ids)]
        due = [d for d in due if d is not None]
        if not due:
            return False
        delay = (min(due) - self.clock.now()).total_seconds()
        if delay > 0:
            log.info("waiting %.0f s for deferred deliveries to become due", delay)
            self.stop.wait(delay)
        return not self.stop.is_set()

    def _heartbeat(self, stop: threading.Event) -> None:
        interval = max(1.0, self.settings.sending.lease_seconds / 4)
        while not stop.wait(interval):
            try:
                ledger.heartbeat(self.engine, self.worker_id, now=self.clock.now())
            except Exception:  # a missed beat is harmless; the next one may succeed
                log.exception("heartbeat failed")

    # -- one thread -----------------------------------------------------------------------------

    def _thread_main(self, run_ids: list[int]) -> None:
        providers = ThreadProviders(self.router)
        try:
            for run_id in run_ids:
                while not self.stop.is_set():
                    ids = ledger.claim(self.engine, run_id=run_id, worker_id=self.worker_id,
                                       limit=self.settings.sending.batch_size, now=self.clock.now())
                    if not ids:
                        break
                    self._send_batch(run_id, ids, providers)
        except BaseException as exc:  # surface in drain(); the claims go back to the queue there
            self._errors.append(exc)
            self.stop.set()
        finally:
            providers.close()

    def _state(self, run_id: int) -> _RunState:
        with self._runs_lock:
            state = self._runs.get(run_id)
            if state is None:
                with Session(self.engine) as session:
                    run = session.get(Run, run_id)
                    definition, is_test, transactional = dict(run.definition), run.is_test, run.transactional
                try:
                    campaign = load_campaign(self.settings.campaigns_dir / definition["file"], settings=self.settings,
                                             segment_names=None, today=None, source=definition["source"])
                except InvalidFile as exc:
                    raise RenderError(f"run {run_id}: its campaign no longer loads: {exc}") from exc
                composer = Composer(campaign=campaign, run_id=run_id, settings=self.settings, renderer=self.renderer,
                                    signer=self.signer, test=is_test, engine=self.engine)
                route = self.router.route(campaign.provider)
                self.router.prepare(route)
                state = self._runs[run_id] = _RunState(composer=composer, definition=campaign, route=route,
                                                         transactional=transactional)
            return state

    def _send_batch(self, run_id: int, ids: list[int], providers: ThreadProviders) -> None:
        state = self._state(run_id)
        with state.lock:
            if state.paused:  # the claim succeeded, so someone resumed the run since it paused
                state.paused, state.error_streak = False, 0
        campaign = state.definition
        now = self.clock.now()
        with Session(self.engine, expire_on_commit=False) as session:
            rows = session.execute(
                select(Delivery.id, Delivery.email, Delivery.segment, Delivery.data, Contact, Run.is_test, Run.transactional)
                .join(Contact, Contact.id == Delivery.contact_id).join(Run, Run.id == Delivery.run_id)
                .where(Delivery.id.in_(ids)).order_by(Delivery.id)
            ).all()
            skips = self._unsendable(session, rows, now, kind=campaign.kind_name)
            rows = [r for r in rows if r[0] not in skips]
            contact_ids = [r[4].id for r in rows]
            stats = ltv.stats_for_contacts(session, contact_ids, now=now, settings=self.settings)
            recipients = {}
            for delivery_id, email, segment, data, contact, _, _ in rows:
                stat = stats.get(contact.id)
                recipients[delivery_id] = Recipient(
                    contact_id=contact.id, email=email, segment=segment, delivery_id=delivery_id,
                    language=contact.language, data=dict(data or {}),
                    ltv=float(stat.ltv) if stat else 0.0, orders_count=int(stat.orders_count) if stat else 0,
                )
            ctx = KindContext(campaign_id=campaign.id, now=now, settings=self.settings, run_id=run_id)
            for segment in {r.segment for r in recipients.values()}:
                group = [r for r in recipients.values() if r.segment == segment]
                skips.update(campaign.kind.prepare(campaign.variant(segment).section, session, ctx, group))
            session.commit()
        for reason in set(skips.values()):
            chosen = [d for d, why in skips.items() if why == reason]
            ledger.mark_skipped(self.engine, chosen, worker_id=self.worker_id, reason=reason, now=now)
            for _ in chosen:
                self.on_outcome(run_id, "skipped")
        rows = [r for r in rows if r[0] not in skips]
        for position, (delivery_id, email, _, _, contact, _, _) in enumerate(rows):
            if self.stop.is_set() or state.paused:
                ledger.release(self.engine, self.worker_id, [r[0] for r in rows[position:]])
                return
            hold = self._send_one(run_id, state, delivery_id, email, _contact_data(contact), recipients[delivery_id],
                                  providers)
            if hold is not None:  # the provider takes nothing until then: the rest of the batch waits too
                self._defer(run_id, [r[0] for r in rows[position + 1:]], hold)
                return

    def _unsendable(self, session, rows, now, *, kind: str) -> dict[int, str]:
        """Deliveries of the batch that must not go out, with the reason: suppressed, unsubscribed, opted out, capped."""
        keys = {email.lower() for _, email, *_ in rows}
        suppressed = set(session.execute(select(Suppression.email_key).where(Suppression.email_key.in_(keys))).scalars())
        skips = {}
        for delivery_id, email, _, _, contact, is_test, transactional in rows:
            if email.lower() in suppressed or (not is_test and contact.status not in _mailable(transactional)):
                skips[delivery_id] = SKIP_UNSUBSCRIBED
        marketing = [r for r in rows if r[0] not in skips and not r[5] and not r[6]]
        if marketing:
            # The preference centre may have said "not this kind" after the ledger was filled.
            opted_out = set(session.execute(select(KindOptOut.contact_id).where(
                KindOptOut.kind == kind, KindOptOut.contact_id.in_([r[4].id for r in marketing]))).scalars())
            skips.update({r[0]: SKIP_OPTED_OUT for r in marketing if r[4].id in opted_out})
            marketing = [r for r in marketing if r[0] not in skips]
        if marketing:
            capped = frequency.over_cap(session, [r[4].id for r in marketing], now=now, settings=self.settings)
            skips.update({r[0]: SKIP_CAPPED for r in marketing if r[4].id in capped})
        return skips

    def _send_one(self, run_id: int, state: _RunState, delivery_id: int, email: str, contact: ContactData,
                  recipient: Recipient, providers: ThreadProviders) -> _Hold | None:
        """Send one message and record its outcome; returns a hold when its provider must be left alone."""
        s = self.settings.sending
        route = state.route
        now = self.clock.now()
        if self._unsubscribed_since_claim(email, recipient.contact_id, state.composer.test,
                                          state.transactional):
            ledger.mark_skipped(self.engine, [delivery_id], worker_id=self.worker_id, reason=SKIP_UNSUBSCRIBED, now=now)
            self.on_outcome(run_id, "skipped")
            return None
        message_id = state.composer.message_id(delivery_id)
        try:
            message = state.composer.compose(delivery_id, email, contact, recipient, now=now)
        except RenderError as exc:
            status = ledger.record_failure(self.engine, delivery_id, worker_id=self.worker_id, provider=route.primary,
                                           error=f"render: {exc}", now=now, retry_at=None, max_attempts=s.max_attempts)
            self._after(run_id, state, status, str(exc))
            return None
        skipped = bool(route.fallback) and not self.router.breaker(route.primary).allow(now)
        used = route.fallback if skipped else route.primary
        hold = self._gate(used)
        if hold is not None:
            if used == route.primary and route.fallback:
                self.router.breaker(used).release()
            self._defer(run_id, [delivery_id], hold)
            return hold
        result = self._attempt(used, message, providers)
        if skipped and _down(result):
            result = _both_down(route.primary, "skipped after repeated unavailability", used, result)
        elif used == route.primary and route.fallback:
            self.router.breaker(used).record(unavailable=_down(result), now=self.clock.now())
            if _down(result):
                log.warning("delivery %s: provider %s is unavailable (%s); sending through fallback %s",
                            delivery_id, used, result.error, route.fallback)
                hold = self._gate(route.fallback)
                if hold is not None:
                    result = _both_down(used, result.error, route.fallback, SendResult.temporary(
                        hold.reason, retry_after=(hold.until - self.clock.now()).total_seconds()))
                else:
                    second = self._attempt(route.fallback, message, providers)
                    result = _both_down(used, result.error, route.fallback, second) if _down(second) else second
                    used = route.fallback
        return self._record(run_id, state, delivery_id, message_id, used, result)

    def _attempt(self, name: str, message: OutgoingMessage, providers: ThreadProviders) -> SendResult:
        self.limiter.wait()
        return providers.get(name).send(message)

    def _gate(self, name: str) -> _Hold | None:
        """Wait for the provider's per-second slot and take one message of its budget, unless it is held."""
        throttle = self.throttles.active(name)
        if throttle is not None:
            return _Hold(throttle.until, f"{name} asked us to wait until {throttle.until:%Y-%m-%d %H:%M:%S} UTC"
                                         f" ({throttle.reason})")
        until = self.meter.take(name)
        if until is not None:
            return _Hold(until, f"{name}: its limit ([provider.limits.{name}]) is used up until "
                                f"{until:%Y-%m-%d %H:%M} UTC")
        return None

    def _defer(self, run_id: int, delivery_ids: list[int], hold: _Hold) -> None:
        """Claimed deliveries wait for their provider: requeued for `hold.until`, no attempt counted."""
        deferred = ledger.defer(self.engine, self.worker_id, delivery_ids, until=hold.until, reason=hold.reason,
                                now=self.clock.now())
        for _ in range(deferred):
            self.on_outcome(run_id, "deferred")

    def _record(self, run_id: int, state: _RunState, delivery_id: int, message_id: str, used: str,
                result: SendResult) -> _Hold | None:
        s = self.settings.sending
        now = self.clock.now()
        if result.outcome is Outcome.sent:
            ledger.record_sent(self.engine, delivery_id, worker_id=self.worker_id, provider=used,
                               provider_message_id=result.provider_message_id, message_id=message_id, now=now)
            self._after(run_id, state, "sent", None)
            return None
        if result.outcome is Outcome.uncertain:
            ledger.record_uncertain(self.engine, delivery_id, worker_id=self.worker_id, provider=used,
                                    error=result.error or "outcome unknown", message_id=message_id, now=now)
            log.warning("delivery %s: %s; not resent automatically (see `valuemail uncertain`)", delivery_id,
                        result.error)
            self._after(run_id, state, "uncertain", result.error)
            return None
        if result.outcome is Outcome.temporary and result.throttled:
            # Not this message's fault, nor a sign the run is broken: no attempt, no error streak.
            throttle = self.throttles.block(used, seconds=result.retry_after, reason=result.error or "throttled")
            hold = _Hold(throttle.until, f"{used} asked us to wait until {throttle.until:%Y-%m-%d %H:%M:%S} UTC"
                                         f" ({result.error or 'throttled'})")
            self._defer(run_id, [delivery_id], hold)
            return hold
        retry_at = None
        if result.outcome is Outcome.temporary:
            with Session(self.engine) as session:
                attempts = session.get(Delivery, delivery_id).attempts
            backoff = min(s.retry_max_seconds, s.retry_base_seconds * (2 ** attempts))
            retry_at = now + timedelta(seconds=max(backoff, result.retry_after or 0))
        status = ledger.record_failure(self.engine, delivery_id, worker_id=self.worker_id, provider=used,
                                       error=result.error or result.outcome.value, now=now, retry_at=retry_at,
                                       max_attempts=s.max_attempts, message_id=message_id)
        self._after(run_id, state, status if status == "failed" else "deferred", result.error)
        return None

    def _unsubscribed_since_claim(self, email: str, contact_id: int, test: bool, transactional: bool = False) -> bool:
        """One indexed lookup per message, so an unsubscribe stops the very next send."""
        suppressed = select(Suppression.id).where(Suppression.email_key == email.lower()).exists()
        with self._reader.connect() as conn:
            if conn.execute(select(suppressed)).scalar():
                return True
            if test:
                return False
            return conn.execute(select(Contact.status).where(Contact.id == contact_id)).scalar() not in \
                _mailable(transactional)

    def _after(self, run_id: int, state: _RunState, status: str, error: str | None) -> None:
        """Count the outcome; past the error threshold, pause the run for every worker."""
        threshold = self.settings.sending.pause_after_errors
        with state.lock:
            state.error_streak = 0 if status == "sent" else state.error_streak + 1
            if threshold and state.error_streak >= threshold and not state.paused:
                state.paused = True
                reason = f"paused after {state.error_streak} consecutive failures; last: {error}"
                ledger.pause(self.engine, run_id, reason=reason)
                log.warning("run %s %s", run_id, reason)
        self.on_outcome(run_id, status)


def _down(result: SendResult) -> bool:
    """The provider itself is down: another may take the message (never when it may be out, or throttled)."""
    return result.outcome is Outcome.temporary and result.unavailable and not result.throttled


def _both_down(primary: str, primary_error: str | None, fallback: str, result: SendResult) -> SendResult:
    """A temporary failure naming both providers' errors; the message is retried with the usual backoff."""
    return SendResult.temporary(f"{primary}: {primary_error}; {fallback}: {result.error}", code=result.code,
                                retry_after=result.retry_after, unavailable=True)


def _mailable(transactional: bool) -> tuple[str, ...]:
    """Contact statuses a run may mail: a transactional run also reaches contacts who never subscribed."""
    return TRANSACTIONAL_STATUSES if transactional else (ContactStatus.subscribed.value,)


def _contact_data(contact: Contact) -> ContactData:
    return ContactData(id=contact.id, email=contact.email, first_name=contact.first_name or "",
                       last_name=contact.last_name or "", country=contact.country, language=contact.language,
                       timezone=contact.timezone, attributes=contact.attributes or {})
