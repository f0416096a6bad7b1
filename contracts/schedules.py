"""How a job is scheduled, what happens when its runs overlap, and how failed runs are retried.

Defaults are chosen for batch jobs (decision 0073): runs do not overlap, a missed tick runs once late
(within a day), and nothing is retried until the user asks for retries.
"""

from __future__ import annotations

import zoneinfo
from typing import Literal

from pydantic import Field, field_validator, model_validator

from contracts.base import Contract
from shared.domain.cron import parse_cron

MissedPolicy = Literal["skip", "latest", "all"]
OverlapPolicy = Literal["allow", "forbid", "replace", "queue"]
FiredBy = Literal["batchyard", "nomad"]

CENTURY_S = 100 * 365.25 * 86_400
MONTH_S = 31 * 86_400


class MissedTicksSpec(Contract):
    """What to do with ticks that passed while no dispatcher could fire them."""

    policy: MissedPolicy = "latest"
    # Bounded (a century) only so that `now - window` stays a valid datetime.
    catchup_window_s: float = Field(default=86_400, ge=0, le=CENTURY_S)
    # A tick fired at most this late (after its jitter) is on time, not missed: a busy dispatcher that
    # fires a few seconds late must not make `skip` drop the tick.
    grace_s: float = Field(default=60, ge=0, le=86_400)


class ScheduleSpec(Contract):
    cron: str = Field(min_length=1, max_length=200)
    timezone: str = "UTC"
    jitter_s: float = Field(default=0, ge=0, le=86_400)
    missed: MissedTicksSpec = Field(default_factory=MissedTicksSpec)
    # Who fires the ticks: batchyard's own scheduler, or Nomad's `periodic` block for a job whose
    # execution uses the nomad driver (decision 0173); the API refuses what Nomad cannot honour.
    fired_by: FiredBy = "batchyard"

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        parse_cron(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {value!r}") from None
        return value


class OverlapSpec(Contract):
    """`concurrency_limit` is how many runs may be active; the policy says what a trigger beyond it does.

    Unset, the limit is unbounded under `allow` and one under every other policy.
    """

    policy: OverlapPolicy = "forbid"
    concurrency_limit: int | None = Field(default=None, ge=1, le=10_000)


class RetrySpec(Contract):
    """`max_attempts` counts the first run, so the default of 1 means no retry."""

    max_attempts: int = Field(default=1, ge=1, le=100)
    initial_delay_s: float = Field(default=10, ge=0, le=MONTH_S)
    multiplier: float = Field(default=2.0, ge=1, le=100)
    max_delay_s: float = Field(default=3_600, ge=0, le=MONTH_S)
    # The fraction of each delay that is randomised away (deterministically per run): 0 keeps exact
    # delays, 1 spreads a delay over [0, delay].
    jitter: float = Field(default=0.1, ge=0, le=1)
    on_failure: bool = True
    on_timeout: bool = True
    on_lost: bool = True

    @model_validator(mode="after")
    def _max_delay_not_below_initial(self) -> RetrySpec:
        if self.max_delay_s < self.initial_delay_s:
            raise ValueError(
                f"max_delay_s ({self.max_delay_s}) is below initial_delay_s ({self.initial_delay_s})"
            )
        return self
