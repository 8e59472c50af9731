"""The scheduler: what is due at an instant, for `valuemail tick --at` and `valuemail run` alike.

Every occurrence has a unique key, so a restart, a second process or a clock jump never sends
one twice: an `at` or `cron` occurrence is a run keyed on (campaign, instant); a triggered one
(an order's survey, a trial's drip step) is a `trigger_sends` row keyed on (campaign, key).

Catch-up policy (documented in the README):
- `at` and `cron`: an occurrence missed by at most `[scheduler] catch_up_hours` is sent late,
  once; an older one is skipped and reported. For cron only the latest missed fire time counts.
- triggers: occurrences whose due time is within `[scheduler] trigger_window_days` are sent;
  older ones are never sent (a survey about a half-year-old order helps nobody).

Every tick also erases one batch of contest contacts never confirmed within
`[scheduler] purge_unconfirmed_after_days` (engine.contests.purge_unconfirmed).
It also deletes webhook log rows older than `[webhooks] log_days` (a batch per tick) and
webhook nonces older than their retention (engine.webhook_log.purge, engine.bounces.forget_nonces).
"""

from .occurrences import DueReport, run_due

__all__ = ["DueReport", "run_due"]
