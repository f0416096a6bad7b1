"""When a schedule fires, in UTC, with the time zone's daylight-saving rules applied.

Evaluation walks wall-clock candidates in the schedule's zone and maps each to UTC: a wall-clock time
that a spring-forward gap skips does not exist, so it does not fire; one that a fall-back repeats fires
once, at its first occurrence. That mapping is strictly increasing, which is what lets every iterator
here be lazy and ordered over any range, with no cap on how many ticks a range holds (decision 0070).
"""

from __future__ import annotations

import bisect
import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from itertools import islice
from zoneinfo import ZoneInfo

from contracts.schedules import ScheduleSpec
from shared.domain.cron import CronExpression, parse_cron

# Fixed forever: changing it would give every future tick a new run id and break exactly-once.
TICK_NAMESPACE = uuid.UUID("5d0f4a3e-2b7c-5b8e-9c41-7a6f0d2e8b13")

_ONE_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class CronSchedule:
    expression: CronExpression
    zone: ZoneInfo

    @classmethod
    def parse(cls, cron: str, timezone: str = "UTC") -> CronSchedule:
        return cls(parse_cron(cron), ZoneInfo(timezone))

    @classmethod
    def from_spec(cls, spec: ScheduleSpec) -> CronSchedule:
        return cls.parse(spec.cron, spec.timezone)


def fire_times_after(schedule: CronSchedule, after: datetime) -> Iterator[datetime]:
    """Every tick strictly after `after`, ascending, as aware UTC datetimes; endless."""
    _require_aware(after, "after")
    start = after.astimezone(schedule.zone).replace(tzinfo=None)
    for wall in _walls_forward(schedule.expression, start):
        instant = _first_instant(wall, schedule.zone)
        if instant is not None and instant > after:
            yield instant


def fire_times_through(schedule: CronSchedule, through: datetime) -> Iterator[datetime]:
    """Every tick at or before `through`, newest first, as aware UTC datetimes."""
    _require_aware(through, "through")
    local = through.astimezone(schedule.zone)
    # In the second pass of a repeated hour, wall-clock times later than `local` still map (to their
    # first occurrence) before `through`, so the walk starts at the end of that repetition.
    start = local.replace(tzinfo=None) + _repeat_length(local)
    for wall in _walls_backward(schedule.expression, start):
        instant = _first_instant(wall, schedule.zone)
        if instant is not None and instant <= through:
            yield instant


def next_fire_times(schedule: CronSchedule, after: datetime, count: int) -> list[datetime]:
    return list(islice(fire_times_after(schedule, after), count))


def fire_times_between(schedule: CronSchedule, start: datetime, end: datetime) -> Iterator[datetime]:
    """Ticks in the half-open range [start, end), so adjacent ranges never count a tick twice."""
    _require_aware(end, "end")
    for instant in fire_times_after(schedule, start - _ONE_MICROSECOND):
        if instant >= end:
            return
        yield instant


def jitter_offset(job_id: uuid.UUID, scheduled_at: datetime, jitter_s: float) -> timedelta:
    """A delay in [0, jitter_s) that every replica computes alike, so they agree on when a tick is due."""
    _require_aware(scheduled_at, "scheduled_at")
    bound_us = int(jitter_s * 1_000_000)
    if bound_us <= 0:
        return timedelta(0)
    digest = hashlib.sha256(job_id.bytes + _canonical_instant(scheduled_at).encode()).digest()
    return timedelta(microseconds=(int.from_bytes(digest[:8], "big") * bound_us) >> 64)


def due_at(job_id: uuid.UUID, scheduled_at: datetime, jitter_s: float) -> datetime:
    return scheduled_at.astimezone(UTC) + jitter_offset(job_id, scheduled_at, jitter_s)


def staging_time(previous: datetime, due: datetime, lead_s: float) -> datetime | None:
    """When to stage a tick due at `due` (decision 0175): `lead_s` ahead, but never earlier than halfway
    from `previous` (the last tick, or when its loop began), so the run of the tick before has usually
    ended and an overlap policy decided then still holds at the tick. None when staging is off or there
    is no time left to gain."""
    if lead_s <= 0 or due <= previous:
        return None
    return max(due - timedelta(seconds=lead_s), previous + (due - previous) / 2)


def tick_run_id(job_id: uuid.UUID, scheduled_at: datetime) -> uuid.UUID:
    """The run id of a tick; replicas that fire the same tick collide on it and the store keeps one."""
    _require_aware(scheduled_at, "scheduled_at")
    return uuid.uuid5(TICK_NAMESPACE, f"{job_id}/{_canonical_instant(scheduled_at)}")


def _canonical_instant(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _require_aware(instant: datetime, name: str) -> None:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"{name} must be time-zone aware, got naive {instant.isoformat()}")


def _first_instant(wall: datetime, zone: ZoneInfo) -> datetime | None:
    """The first UTC instant showing `wall` in `zone`, or None when a gap skips it."""
    instant = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) != wall:
        return None
    return instant


def _repeat_length(local: datetime) -> timedelta:
    if local.fold == 0:
        return timedelta(0)
    first = local.replace(fold=0).utcoffset()
    second = local.utcoffset()
    if first is None or second is None:
        return timedelta(0)
    return max(first - second, timedelta(0))


def _walls_forward(expression: CronExpression, start: datetime) -> Iterator[datetime]:
    """Matching wall-clock times at or after `start`'s second, ascending."""
    for day in expression.dates_from(start.date()):
        floor = start.time() if day == start.date() else time.min
        for clock in _times_forward(expression, floor):
            yield datetime.combine(day, clock)


def _walls_backward(expression: CronExpression, start: datetime) -> Iterator[datetime]:
    """Matching wall-clock times at or before `start`, descending."""
    for day in expression.dates_until(start.date()):
        ceiling = start.time() if day == start.date() else time.max
        for clock in _times_backward(expression, ceiling):
            yield datetime.combine(day, clock)


def _times_forward(expression: CronExpression, floor: time) -> Iterator[time]:
    hours, minutes, seconds = expression.hours, expression.minutes, expression.seconds
    for hour in hours[bisect.bisect_left(hours, floor.hour) :]:
        minute_floor = floor.minute if hour == floor.hour else 0
        for minute in minutes[bisect.bisect_left(minutes, minute_floor) :]:
            second_floor = floor.second if (hour, minute) == (floor.hour, floor.minute) else 0
            for second in seconds[bisect.bisect_left(seconds, second_floor) :]:
                yield time(hour, minute, second)


def _times_backward(expression: CronExpression, ceiling: time) -> Iterator[time]:
    hours, minutes, seconds = expression.hours, expression.minutes, expression.seconds
    for hour in reversed(hours[: bisect.bisect_right(hours, ceiling.hour)]):
        minute_ceiling = ceiling.minute if hour == ceiling.hour else 59
        for minute in reversed(minutes[: bisect.bisect_right(minutes, minute_ceiling)]):
            second_ceiling = ceiling.second if (hour, minute) == (ceiling.hour, ceiling.minute) else 59
            for second in reversed(seconds[: bisect.bisect_right(seconds, second_ceiling)]):
                yield time(hour, minute, second)
