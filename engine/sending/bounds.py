"""What a crash can cost: the documented bound on messages sent twice after a kill -9."""

from __future__ import annotations

from ..config import SendingSettings


def duplicate_bound(sending: SendingSettings, *, processes: int = 1) -> int:
    """Most messages that can reach a recipient twice when `processes` sending processes are killed at once.

    A process has at most one batch with the provider (`batch_size` messages) and keeps fewer than
    `commit_every` outcomes uncommitted before it hands over the next batch; a message the provider
    accepted whose outcome was not committed is sent again after the restart (same Message-ID).
    """
    return processes * (sending.batch_size + sending.commit_every - 1)
