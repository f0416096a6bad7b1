"""Which ticks to run and which to record as skipped after the dispatcher fell behind a schedule.

Ticks are handed out as spans of the schedule rather than lists: a job firing every second that was
down for a year has 31 million skipped ticks, and each must be reported (no cap like Kubernetes' 100),
so the plan stays constant-size and whoever records or runs the ticks walks them lazily (decision 0071).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from contracts.schedules import MissedPolicy, ScheduleSpec
from shared.domain.schedule import CronSchedule, fire_times_after, fire_times_through

SkipReason = Literal["missed", "outside_catchup_window", "superseded", "paused"]

_ONE_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class TickSpan:
    """Every tick of the schedule in the half-open range (after, through]."""

    after: datetime
    through: datetime

    def ticks(self, schedule: CronSchedule) -> Iterator[datetime]:
        for instant in fire_times_after(schedule, self.after):
            if instant > self.through:
                return
            yield instant

    def first(self, schedule: CronSchedule) -> datetime | None:
        return next(self.ticks(schedule), None)

    def last(self, schedule: CronSchedule) -> datetime | None:
        instant = next(fire_times_through(schedule, self.through), None)
        return instant if instant is not None and instant > self.after else None

    def count(self, schedule: CronSchedule) -> int:
        """Walks the span: linear in its ticks, for reports, not for deciding."""
        return sum(1 for _ in self.ticks(schedule))


@dataclass(frozen=True)
class SkippedTicks:
    span: TickSpan
    reason: SkipReason


@dataclass(frozen=True)
class TickPlan:
    """`run` and `skipped` hold only spans with at least one tick, oldest first; together they cover
    (previous handled_through, handled_through] exactly once."""

    run: tuple[TickSpan, ...]
    skipped: tuple[SkippedTicks, ...]
    handled_through: datetime


def plan_ticks(
    schedule: CronSchedule,
    policy: MissedPolicy,
    *,
    handled_through: datetime,
    now: datetime,
    catchup_window: timedelta,
    grace: timedelta,
) -> TickPlan:
    """Decide the fate of every tick in (handled_through, now].

    `handled_through` is the last tick already handled, or when the job was created or resumed. Ticks
    at most `grace` old are on time and always run. Older ones are missed: `skip` records them all as
    skipped; `all` runs those within `catchup_window` of now; `latest` runs only the newest of those,
    and none when an on-time tick exists. Missed ticks beyond the window are skipped under every policy.
    """
    if now <= handled_through:
        return TickPlan(run=(), skipped=(), handled_through=handled_through)
    on_time_from = max(handled_through, now - grace)
    window_from = max(handled_through, min(now - catchup_window, on_time_from))
    on_time = TickSpan(on_time_from, now)
    run: list[TickSpan] = []
    skipped: list[SkippedTicks] = []
    if policy == "skip":
        skipped.append(SkippedTicks(TickSpan(handled_through, on_time_from), "missed"))
        run.append(on_time)
    elif policy == "all":
        skipped.append(SkippedTicks(TickSpan(handled_through, window_from), "outside_catchup_window"))
        run.append(TickSpan(window_from, now))
    else:
        skipped.append(SkippedTicks(TickSpan(handled_through, window_from), "outside_catchup_window"))
        catchable = TickSpan(window_from, on_time_from)
        latest = catchable.last(schedule) if on_time.first(schedule) is None else None
        if latest is None:
            skipped.append(SkippedTicks(catchable, "superseded"))
            run.append(on_time)
        else:
            skipped.append(SkippedTicks(TickSpan(window_from, latest - _ONE_MICROSECOND), "superseded"))
            run.append(TickSpan(latest - _ONE_MICROSECOND, latest))
    return TickPlan(
        run=tuple(span for span in run if span.first(schedule) is not None),
        skipped=tuple(item for item in skipped if item.span.first(schedule) is not None),
        handled_through=now,
    )


def plan_missed_ticks(spec: ScheduleSpec, *, handled_through: datetime, now: datetime) -> TickPlan:
    """`plan_ticks` with the job's own settings; the jitter widens the grace because a tick that waits
    for its jitter is late by design, not missed."""
    return plan_ticks(
        CronSchedule.from_spec(spec),
        spec.missed.policy,
        handled_through=handled_through,
        now=now,
        catchup_window=timedelta(seconds=spec.missed.catchup_window_s),
        grace=timedelta(seconds=spec.missed.grace_s + spec.jitter_s),
    )


def skipped_while_paused(
    schedule: CronSchedule, paused_after: datetime, resumed_at: datetime
) -> SkippedTicks | None:
    """Ticks that fell in a pause are recorded as skipped, never caught up: resuming a job must not
    start a run the user did not schedule for now. Plan from `resumed_at` afterwards."""
    skipped = SkippedTicks(TickSpan(paused_after, resumed_at), "paused")
    return skipped if skipped.span.first(schedule) is not None else None
