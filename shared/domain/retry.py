"""Whether and when a finished run is attempted again (decision 0074).

Delays grow exponentially up to a cap; jitter shortens each delay by a fraction derived from a key (the
first run's id and the attempt), so every replica computes the same due time and a retry is scheduled
once, while many jobs failing together still spread out.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta
from typing import Literal

from contracts.schedules import RetrySpec

RunOutcome = Literal["succeeded", "failed", "timed_out", "stopped", "lost", "rejected"]

# Fixed forever: changing it would give a pending retry a new run id after an upgrade.
RETRY_NAMESPACE = uuid.UUID("0b6f7c2a-93d4-5e1f-8a20-4c5d6e7f8a91")


def is_retryable(spec: RetrySpec, outcome: RunOutcome) -> bool:
    """A success needs no retry, a stop was someone's decision, and a rejected template fails again."""
    return (
        (outcome == "failed" and spec.on_failure)
        or (outcome == "timed_out" and spec.on_timeout)
        or (outcome == "lost" and spec.on_lost)
    )


def next_retry(spec: RetrySpec, attempt: int, outcome: RunOutcome, key: str) -> timedelta | None:
    """The delay before the next attempt after attempt number `attempt` (1 = the first run) ended with
    `outcome`, or None when no further attempt is due."""
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, got {attempt}")
    if attempt >= spec.max_attempts or not is_retryable(spec, outcome):
        return None
    return timedelta(seconds=backoff_delay_s(spec, attempt) * (1 - spec.jitter * _unit_fraction(key)))


def backoff_delay_s(spec: RetrySpec, attempt: int) -> float:
    """The delay before jitter; it stops growing at the cap, so no attempt number overflows it."""
    delay = spec.initial_delay_s
    for _ in range(attempt - 1):
        if delay >= spec.max_delay_s:
            break
        delay *= spec.multiplier
    return min(delay, spec.max_delay_s)


def retry_key(first_run_id: uuid.UUID, attempt: int) -> str:
    return f"{first_run_id}/{attempt}"


def retry_run_id(first_run_id: uuid.UUID, attempt: int) -> uuid.UUID:
    """The run id of attempt `attempt` (2 = first retry): replicas scheduling the same retry collide."""
    if attempt < 2:
        raise ValueError(f"a retry is attempt 2 or later, got {attempt}")
    return uuid.uuid5(RETRY_NAMESPACE, retry_key(first_run_id, attempt))


def _unit_fraction(key: str) -> float:
    """A number in [0, 1) from the key, identical on every replica."""
    digest = hashlib.sha256(key.encode()).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) / float(1 << 53)
