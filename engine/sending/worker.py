"""Sending workers: ledger batches flow through a pipeline of stages, each stage a thread.

    claim + check  ->  render  ->  send  ->  record
    (prepare)         (compose)   (wire)    (group commits, `recorder.Recorder`)

A batch is `[sending] batch_size` claimed deliveries. The prepare stage checks the whole batch
at once (suppressed, unsubscribed, opted out, over the frequency cap), loads what the kind
needs, and hands it on; the render stage composes every message; the send stage checks once
more, for the whole batch, who unsubscribed or was suppressed since (so an unsubscribe stops
that contact's mail within one batch: the window is the batch in flight at the provider), then
hands the batch to the provider, which keeps many messages in flight (pipelined SMTP
connections, batch API requests, concurrent requests). Outcomes go to the recorder, which
commits them in groups; the send stage waits before handing over the next batch while
`commit_every` outcomes are uncommitted, which bounds what a crash can send twice
(`bounds.duplicate_bound`). While one batch is on the wire the next is rendered and the one
after that claimed.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable, Sequence

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.engine import Engine
from sqlmodel import Session

from .. import ltv
from ..campaigns import load_campaign
from ..campaigns.kinds import KindContext, Recipient
from ..clock import Clock
from ..config import Settings
from ..db import among, read_only
from ..errors import InvalidFile, RenderError
from ..models import TRANSACTIONAL_STATUSES, Contact, ContactStatus, Delivery, KindOptOut, Run, Suppression
from ..providers import Outcome, OutgoingMessage, SendResult, provider_factory as build_factory, send_batch
from ..tokens import TokenSigner
from . import frequency, ledger
from .compose import Composer, ContactData
from .ledger import Change
from .ratelimit import RateLimiter, Throttles, UsageMeter
from .recorder import Recorder, reported_status
from .routing import ProviderFactory, Route, Router, ThreadProviders

log = logging.getLogger(__name__)

OutcomeCallback = Callable[[int, str], None]

SKIP_UNSUBSCRIBED = "unsubscribed or suppressed"
SKIP_CAPPED = "frequency cap"
SKIP_OPTED_OUT = "opted out of this kind of mail"
#: Seconds a thread may hold the GIL while another waits for it (see `Sender.drain`).
_SWITCH_INTERVAL = 0.0005
#: Chunks per second when a per-second limit applies, so a batch goes out smoothly, not in one burst.
_RATE_CHUNKS_PER_SECOND = 5


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
    mime: bool = True  # what the route's providers read: the built MIME, the fields, or both
    fields: bool = True
    error_streak: int = 0
    paused: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class _Item:
    """One claimed delivery on its way through the stages."""

    delivery_id: int
    contact_id: int
    email: str
    attempts: int  # before this attempt: the retry backoff grows with it
    contact: ContactData
    recipient: Recipient
    message: OutgoingMessage | None = None


@dataclass
class _Batch:
    run_id: int
    state: _RunState
    items: list[_Item]


class Sender:
    """Drains the ledger of given runs through one pipeline of sending stages in this process."""

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
        self._recorder: Recorder | None = None

    # -- the public loop ------------------------------------------------------------------------

    def drain(self, run_ids: list[int] | None = None, *, wait_for_retries: bool = True) -> None:
        """Send every due delivery of `run_ids` (None: every sending run) until none is left or due."""
        s = self.settings.sending
        # The render stage keeps the GIL busy; every socket and SQLite call of the other stages
        # gives it up and then waits for it for up to the switch interval (5 ms by default).
        sys.setswitchinterval(min(sys.getswitchinterval(), _SWITCH_INTERVAL))
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
                self._pipeline(targets)
                if self._errors:
                    raise self._errors[0]
                for run_id in targets:
                    ledger.finish_if_done(self.engine, run_id, now=self.clock.now())
                if not wait_for_retries or not self._wait_for_retry(run_ids):
                    return
        finally:
            beat_stop.set()
            self.meter.flush()
            # Only after every outcome is committed (the pipeline closed its recorder): the rest of
            # this worker's claims were never handed to the provider.
            released = ledger.unregister_worker(self.engine, self.worker_id)
            if released:
                log.info("released %d claimed deliveries back to the queue", released)

    def _pipeline(self, run_ids: list[int]) -> None:
        """Run the stages over `run_ids` until nothing is left to claim; returns when all are done."""
        s = self.settings.sending
        self._recorder = recorder = Recorder(engine=self.engine, worker_id=self.worker_id, every=s.commit_every,
                                             seconds=s.commit_ms / 1000, on_commit=self._committed)
        to_render: queue.Queue = queue.Queue(maxsize=1)
        to_send: queue.Queue = queue.Queue(maxsize=1)
        providers = ThreadProviders(self.router)
        stages = [
            threading.Thread(target=self._feed, args=(run_ids, to_render), name="valuemail-prepare"),
            threading.Thread(target=self._stage, args=(to_render, to_send, self._render), name="valuemail-render"),
            threading.Thread(target=self._stage, args=(to_send, None, lambda b: self._send(b, providers)),
                             name="valuemail-send"),
        ]
        try:
            for t in stages:
                t.start()
            try:
                for t in stages:
                    t.join()
            except BaseException:
                # Ctrl-C: let the send stage finish the batch it has with the provider and record it.
                self.stop.set()
                for t in stages:
                    t.join()
                raise
        finally:
            providers.close()
            try:
                recorder.close()
            except BaseException as exc:
                self._errors.append(exc)
            self._recorder = None

    def _committed(self, outcomes) -> None:
        for run_id, outcome in outcomes:
            status = reported_status(outcome)
            if status is not None:
                self.on_outcome(run_id, status)

    def _fail(self, exc: BaseException) -> None:
        self._errors.append(exc)
        self.stop.set()

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

    # -- the stages -----------------------------------------------------------------------------

    def _feed(self, run_ids: list[int], outbox: queue.Queue) -> None:
        """The first stage: claim batches run by run, check and prepare them."""
        try:
            for run_id in run_ids:
                if not self._loads(run_id):
                    continue
                while not self.stop.is_set():
                    ids = ledger.claim(self.engine, run_id=run_id, worker_id=self.worker_id,
                                       limit=self.settings.sending.batch_size, now=self.clock.now())
                    if not ids:
                        break
                    batch = self._prepare(run_id, ids)
                    if batch.items:
                        outbox.put(batch)
        except BaseException as exc:  # surface in drain(); the claims go back to the queue there
            self._fail(exc)
        finally:
            outbox.put(None)

    def _loads(self, run_id: int) -> bool:
        """Whether the run's campaign still loads; if not, the run is paused with the reason and the others go on."""
        try:
            self._state(run_id)
        except RenderError as exc:
            ledger.pause(self.engine, run_id, reason=str(exc))
            log.error("%s: the run is paused", exc)
            return False
        return True

    def _stage(self, inbox: queue.Queue, outbox: queue.Queue | None, work: Callable[[_Batch], _Batch | None]) -> None:
        """A middle or last stage: `work` on each batch until the end marker; on failure keep draining."""
        failed = False
        try:
            while (batch := inbox.get()) is not None:
                if failed or self.stop.is_set():
                    continue  # its claims go back to the queue when the worker unregisters
                try:
                    done = work(batch)
                except BaseException as exc:
                    failed = True
                    self._fail(exc)
                    continue
                if done is not None and outbox is not None:
                    outbox.put(done)
        finally:
            if outbox is not None:
                outbox.put(None)

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
                mime, fields = self.router.message_parts(route)
                state = self._runs[run_id] = _RunState(composer=composer, definition=campaign, route=route,
                                                         transactional=transactional, mime=mime, fields=fields)
            return state

    def _prepare(self, run_id: int, ids: list[int]) -> _Batch:
        """Load a claimed batch, skip who must not get it (one query per check), let the kind prepare."""
        state = self._state(run_id)
        with state.lock:
            if state.paused:  # the claim succeeded, so someone resumed the run since it paused
                state.paused, state.error_streak = False, 0
        campaign = state.definition
        now = self.clock.now()
        # Reads in a deferred transaction: on SQLite the write lock is every process's, and the
        # group commits of the others must not wait for this batch's queries.
        with Session(self._reader, expire_on_commit=False) as session:
            rows = session.execute(
                select(Delivery.id, Delivery.email, Delivery.segment, Delivery.data, *_CONTACT_COLUMNS, Run.is_test,
                       Run.transactional, Delivery.attempts)
                .join(Contact, Contact.id == Delivery.contact_id).join(Run, Run.id == Delivery.run_id)
                .where(among(Delivery.id, ids)).order_by(Delivery.id)
            ).all()
            # Plain rows, not ORM objects: 500 of them per batch is measurable.
            rows = [(r[0], r[1], r[2], r[3], _ContactRow(*r[4:4 + len(_CONTACT_COLUMNS)]), *r[4 + len(_CONTACT_COLUMNS):])
                    for r in rows]
            skips = self._unsendable(session, rows, now, kind=campaign.kind_name)
            rows = [r for r in rows if r[0] not in skips]
            # LTV is one aggregate query over every order of the batch's contacts: only when shown.
            stats = {}
            if any(state.composer.reads_contact_stats(segment) for segment in {r[2] for r in rows}):
                stats = ltv.stats_for_contacts(session, [r[4].id for r in rows], now=now, settings=self.settings)
            items = []
            for delivery_id, email, segment, data, contact, _, _, attempts in rows:
                stat = stats.get(contact.id)
                recipient = Recipient(
                    contact_id=contact.id, email=email, segment=segment, delivery_id=delivery_id,
                    language=contact.language, data=dict(data or {}),
                    ltv=float(stat.ltv) if stat else 0.0, orders_count=int(stat.orders_count) if stat else 0,
                )
                items.append(_Item(delivery_id, contact.id, email, attempts, _contact_data(contact), recipient))
        ctx = KindContext(campaign_id=campaign.id, now=now, settings=self.settings, run_id=run_id,
                          test=state.composer.test)
        with Session(self.engine, expire_on_commit=False) as session:  # the kind may write (coupon codes, items)
            for segment in {i.recipient.segment for i in items}:
                group = [i.recipient for i in items if i.recipient.segment == segment]
                skips.update(campaign.kind.prepare(campaign.variant(segment).section, session, ctx, group))
            session.commit()
        self._recorder.add(run_id, [ledger.Outcome(d, Change.skipped, now, error=why) for d, why in skips.items()])
        return _Batch(run_id, state, [i for i in items if i.delivery_id not in skips])

    def _unsendable(self, session, rows, now, *, kind: str) -> dict[int, str]:
        """Deliveries of the batch that must not go out, with the reason: suppressed, unsubscribed, opted out, capped."""
        keys = {r[1].lower() for r in rows}
        suppressed = set(session.execute(select(Suppression.email_key).where(among(Suppression.email_key, keys))).scalars())
        skips = {}
        for delivery_id, email, _, _, contact, is_test, transactional, _ in rows:
            if email.lower() in suppressed or (not is_test and contact.status not in _mailable(transactional)):
                skips[delivery_id] = SKIP_UNSUBSCRIBED
        marketing = [r for r in rows if r[0] not in skips and not r[5] and not r[6]]
        if marketing:
            # The preference centre may have said "not this kind" after the ledger was filled.
            opted_out = set(session.execute(select(KindOptOut.contact_id).where(
                KindOptOut.kind == kind, among(KindOptOut.contact_id, [r[4].id for r in marketing]))).scalars())
            skips.update({r[0]: SKIP_OPTED_OUT for r in marketing if r[4].id in opted_out})
            marketing = [r for r in marketing if r[0] not in skips]
        if marketing:
            capped = frequency.over_cap(session, [r[4].id for r in marketing], now=now, settings=self.settings)
            skips.update({r[0]: SKIP_CAPPED for r in marketing if r[4].id in capped})
        return skips

    def _render(self, batch: _Batch) -> _Batch:
        """Compose every message of the batch; one that cannot be rendered fails alone."""
        state, now = batch.state, self.clock.now()
        failures, ready = [], []
        for item in batch.items:
            try:
                item.message = state.composer.compose(item.delivery_id, item.email, item.contact, item.recipient,
                                                      now=now, mime=state.mime, fields=state.fields)
            except SQLAlchemyError:
                raise  # the database, not this message: the run stops and its claims go back
            except Exception as exc:  # noqa: BLE001 - this contact's data, not the run: the others go on
                failed = ledger.failed_attempt(
                    item.delivery_id, attempts=item.attempts, max_attempts=self.settings.sending.max_attempts,
                    error=f"render: {exc}", retry_at=None, at=now, provider=state.route.primary)
                failures.append(self._unless_paused(batch.run_id, state, failed))
                continue
            ready.append(item)
        self._recorder.add(batch.run_id, failures)
        batch.items = ready
        return batch

    def _send(self, batch: _Batch, providers: ThreadProviders) -> None:
        """Check the batch once more, then hand it to the provider in as few calls as its limits allow."""
        state, run_id = batch.state, batch.run_id
        items = self._still_mailable(batch)
        size = self._chunk_size(state.route)
        for start in range(0, len(items), size):
            rest = items[start:]
            if self.stop.is_set() or state.paused:
                self._recorder.add(run_id, [ledger.Outcome(i.delivery_id, Change.released, self.clock.now())
                                            for i in rest])
                return
            self._recorder.wait_for_room(self.stop)
            hold = self._send_chunk(run_id, state, rest[:size], providers)
            if hold is not None:  # the provider takes nothing until then: the rest of the batch waits too
                self._defer(run_id, rest[size:], hold)
                return

    def _still_mailable(self, batch: _Batch) -> list[_Item]:
        """The batch without contacts who unsubscribed or were suppressed since it was claimed (two queries)."""
        items, state = batch.items, batch.state
        if not items:
            return items
        with self._reader.connect() as conn:
            keys = {i.email.lower() for i in items}
            gone = set(conn.execute(select(Suppression.email_key).where(among(Suppression.email_key, keys))).scalars())
            unsubscribed: set[int] = set()
            if not state.composer.test:
                allowed = _mailable(state.transactional)
                unsubscribed = {cid for cid, status in conn.execute(
                    select(Contact.id, Contact.status).where(among(Contact.id, {i.contact_id for i in items})))
                    if status not in allowed}
        skipped = [i for i in items if i.email.lower() in gone or i.contact_id in unsubscribed]
        if skipped:
            now = self.clock.now()
            self._recorder.add(batch.run_id, [ledger.Outcome(i.delivery_id, Change.skipped, now,
                                                             error=SKIP_UNSUBSCRIBED) for i in skipped])
            left = {i.delivery_id for i in skipped}
            items = [i for i in items if i.delivery_id not in left]
        return items

    def _chunk_size(self, route: Route) -> int:
        """The batch in one provider call, or smaller pieces when a per-second limit spaces them out."""
        rates = [r for r in (self.settings.sending.rate_per_second,
                             self.settings.provider.limits_for(route.primary).per_second) if r]
        if not rates:
            return self.settings.sending.batch_size
        return max(1, int(min(rates) / _RATE_CHUNKS_PER_SECOND))

    def _send_chunk(self, run_id: int, state: _RunState, items: list[_Item], providers: ThreadProviders) -> _Hold | None:
        """Send one chunk through the run's route (failing over what the primary could not take); record it."""
        route = state.route
        if route.fallback and len(items) > 1 and self.router.breaker(route.primary).probe_due(self.clock.now()):
            # The probe is one message; the rest follow it to the primary only if it is back.
            hold = self._send_chunk(run_id, state, items[:1], providers)
            if hold is not None:
                self._defer(run_id, items[1:], hold)
                return hold
            return self._send_chunk(run_id, state, items[1:], providers)
        skipped = bool(route.fallback) and not self.router.breaker(route.primary).allow(self.clock.now())
        used = route.fallback if skipped else route.primary
        granted, hold = self._gate(used, len(items))
        if not granted:
            if used == route.primary and route.fallback:
                self.router.breaker(used).release()
            self._defer(run_id, items, hold)
            return hold
        going, waiting = items[:granted], items[granted:]
        self.limiter.wait(len(going))
        results = self._attempt(used, going, providers)
        via = [used] * len(going)
        if skipped:
            results = [_both_down(route.primary, "skipped after repeated unavailability", used, r) if _down(r) else r
                       for r in results]
        elif used == route.primary and route.fallback:
            breaker = self.router.breaker(used)
            for result in results:
                breaker.record(unavailable=_down(result), now=self.clock.now())
            down = [k for k, r in enumerate(results) if _down(r)]
            if down:
                log.warning("provider %s is unavailable for %d message(s) (%s); sending them through fallback %s",
                            used, len(down), results[down[0]].error, route.fallback)
                self._failover(route, going, results, via, down, providers)
        throttled = self._record(run_id, state, going, results, via)
        if waiting:
            self._defer(run_id, waiting, hold)
        return throttled or (hold if waiting else None)

    def _failover(self, route: Route, going: list[_Item], results: list[SendResult], via: list[str],
                  down: list[int], providers: ThreadProviders) -> None:
        """Send the messages the primary could not take through the fallback; results updated in place."""
        granted, hold = self._gate(route.fallback, len(down))
        second = self._attempt(route.fallback, [going[k] for k in down[:granted]], providers) if granted else []
        for k, result in zip(down[:granted], second):
            if _down(result):
                results[k] = _both_down(route.primary, results[k].error, route.fallback, result)
            else:
                results[k], via[k] = result, route.fallback
        for k in down[granted:]:
            results[k] = _both_down(route.primary, results[k].error, route.fallback, SendResult.temporary(
                hold.reason, retry_after=(hold.until - self.clock.now()).total_seconds()))

    def _attempt(self, name: str, items: Sequence[_Item], providers: ThreadProviders) -> list[SendResult]:
        return send_batch(providers.get(name), [i.message for i in items])

    def _gate(self, name: str, count: int) -> tuple[int, _Hold | None]:
        """How many of `count` messages the provider takes now (its budget, its per-second slots), and why not more."""
        throttle = self.throttles.active(name)
        if throttle is not None:
            return 0, _Hold(throttle.until, f"{name} asked us to wait until {throttle.until:%Y-%m-%d %H:%M:%S} UTC"
                                            f" ({throttle.reason})")
        granted, until = self.meter.take_many(name, count)
        if granted < count:
            return granted, _Hold(until, f"{name}: its limit ([provider.limits.{name}]) is used up until "
                                         f"{until:%Y-%m-%d %H:%M} UTC")
        return granted, None

    def _defer(self, run_id: int, items: Sequence[_Item], hold: _Hold) -> None:
        """Claimed deliveries wait for their provider: requeued for `hold.until`, no attempt counted."""
        now = self.clock.now()
        self._recorder.add(run_id, [ledger.Outcome(i.delivery_id, Change.deferred, now, retry_at=hold.until,
                                                   error=hold.reason) for i in items])

    def _record(self, run_id: int, state: _RunState, items: list[_Item], results: list[SendResult],
                via: list[str]) -> _Hold | None:
        """Turn one chunk's results into outcomes for the recorder; a hold when the provider throttled us."""
        s = self.settings.sending
        now = self.clock.now()
        outcomes, throttled = [], []
        for item, result, used in zip(items, results, via):
            message_id = item.message.message_id
            if result.outcome is Outcome.sent:
                outcomes.append(ledger.Outcome(item.delivery_id, Change.sent, now, provider=used,
                                               provider_message_id=result.provider_message_id, message_id=message_id))
                with state.lock:
                    state.error_streak = 0
            elif result.outcome is Outcome.uncertain:
                log.warning("delivery %s: %s; not resent automatically (see `valuemail uncertain`)",
                            item.delivery_id, result.error)
                outcome = ledger.Outcome(item.delivery_id, Change.uncertain, now, provider=used,
                                         message_id=message_id, error=result.error or "outcome unknown")
                outcomes.append(outcome)
                self._unless_paused(run_id, state, outcome)
            elif result.outcome is Outcome.temporary and result.throttled:
                # Not this message's fault, nor a sign the run is broken: no attempt, no error streak.
                throttled.append((item, result, used))
            else:
                retry_at = None
                if result.outcome is Outcome.temporary:
                    backoff = min(s.retry_max_seconds, s.retry_base_seconds * (2 ** item.attempts))
                    retry_at = now + timedelta(seconds=max(backoff, result.retry_after or 0))
                outcome = ledger.failed_attempt(item.delivery_id, attempts=item.attempts, max_attempts=s.max_attempts,
                                                error=result.error or result.outcome.value, retry_at=retry_at,
                                                at=now, provider=used, message_id=message_id)
                outcomes.append(self._unless_paused(run_id, state, outcome))
        hold = None
        for name in dict.fromkeys(used for _, _, used in throttled):
            mine = [(i, r) for i, r, u in throttled if u == name]
            waits = [r.retry_after for _, r in mine if r.retry_after is not None]
            reason = mine[0][1].error or "throttled"
            throttle = self.throttles.block(name, seconds=max(waits) if waits else None, reason=reason)
            hold = _Hold(throttle.until, f"{name} asked us to wait until {throttle.until:%Y-%m-%d %H:%M:%S} UTC"
                                         f" ({reason})")
            outcomes.extend(ledger.Outcome(i.delivery_id, Change.deferred, now, retry_at=hold.until, error=hold.reason)
                            for i, _ in mine)
        self._recorder.add(run_id, outcomes)
        return hold

    def _unless_paused(self, run_id: int, state: _RunState, outcome: ledger.Outcome) -> ledger.Outcome:
        """Count a failure towards the run's streak; past `pause_after_errors` the run pauses.

        A failure that comes back after the run paused (the rest of a batch in flight) is put back
        in the queue untouched, so a broken relay costs the threshold's failures, not the batch's.
        An uncertain message is recorded as such either way: it may have gone out.
        """
        threshold = self.settings.sending.pause_after_errors
        with state.lock:
            if state.paused and outcome.change is not Change.uncertain:
                return ledger.Outcome(outcome.delivery_id, Change.released, outcome.at)
            state.error_streak += 1
            if threshold and state.error_streak >= threshold and not state.paused:
                state.paused = True
                reason = f"paused after {state.error_streak} consecutive failures; last: {outcome.error}"
                ledger.pause(self.engine, run_id, reason=reason)
                log.warning("run %s %s", run_id, reason)
        return outcome


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


_CONTACT_COLUMNS = (Contact.id, Contact.email, Contact.first_name, Contact.last_name, Contact.country,
                    Contact.language, Contact.timezone, Contact.attributes, Contact.status)


@dataclass(frozen=True)
class _ContactRow:
    """The contact columns a batch reads (see `_CONTACT_COLUMNS`)."""

    id: int
    email: str
    first_name: str | None
    last_name: str | None
    country: str | None
    language: str | None
    timezone: str | None
    attributes: dict | None
    status: str


def _contact_data(contact: _ContactRow) -> ContactData:
    return ContactData(id=contact.id, email=contact.email, first_name=contact.first_name or "",
                       last_name=contact.last_name or "", country=contact.country, language=contact.language,
                       timezone=contact.timezone, attributes=contact.attributes or {})
