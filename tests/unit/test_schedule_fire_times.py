"""Specification of when schedules fire; daylight-saving changes are in test_schedule_dst."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta, timezone
from itertools import islice

import pytest

from contracts.schedules import ScheduleSpec
from shared.domain.schedule import (
    CronSchedule,
    due_at,
    fire_times_between,
    fire_times_through,
    jitter_offset,
    next_fire_times,
    tick_run_id,
)

JOB = uuid.UUID("8f0b1d0e-6a55-4a43-9c3a-2a4d7b0f1e01")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def test_next_fire_times_are_strictly_after_the_given_instant() -> None:
    schedule = CronSchedule.parse("*/5 * * * *")
    assert next_fire_times(schedule, utc(2026, 1, 1, 0, 5), 3) == [
        utc(2026, 1, 1, 0, 10),
        utc(2026, 1, 1, 0, 15),
        utc(2026, 1, 1, 0, 20),
    ]


def test_an_instant_between_seconds_rounds_up_to_the_next_tick() -> None:
    schedule = CronSchedule.parse("* * * * *")
    after = utc(2026, 1, 1, 0, 0, 59) + timedelta(microseconds=999_999)
    assert next_fire_times(schedule, after, 1) == [utc(2026, 1, 1, 0, 1)]


def test_fire_times_are_returned_in_utc_for_a_zoned_schedule() -> None:
    schedule = CronSchedule.parse("0 9 * * *", "Asia/Tokyo")
    [first] = next_fire_times(schedule, utc(2026, 5, 31, 12), 1)
    assert first == utc(2026, 6, 1, 0, 0)
    assert first.tzinfo is UTC


def test_after_may_be_given_in_any_zone() -> None:
    schedule = CronSchedule.parse("0 12 * * *")
    after = datetime(2026, 6, 1, 13, 0, tzinfo=timezone(timedelta(hours=2)))
    assert next_fire_times(schedule, after, 1) == [utc(2026, 6, 1, 12, 0)]


def test_naive_datetimes_are_refused_because_their_instant_is_unknown() -> None:
    schedule = CronSchedule.parse("* * * * *")
    with pytest.raises(ValueError, match="after must be time-zone aware"):
        next_fire_times(schedule, datetime(2026, 1, 1), 1)


def test_seconds_field_fires_within_the_minute() -> None:
    schedule = CronSchedule.parse("*/20 * * * * *")
    assert next_fire_times(schedule, utc(2026, 1, 1, 0, 0, 0), 4) == [
        utc(2026, 1, 1, 0, 0, 20),
        utc(2026, 1, 1, 0, 0, 40),
        utc(2026, 1, 1, 0, 1, 0),
        utc(2026, 1, 1, 0, 1, 20),
    ]


def test_the_31st_skips_months_without_it() -> None:
    schedule = CronSchedule.parse("0 0 31 * *")
    assert next_fire_times(schedule, utc(2026, 1, 31), 4) == [
        utc(2026, 3, 31),
        utc(2026, 5, 31),
        utc(2026, 7, 31),
        utc(2026, 8, 31),
    ]


def test_february_29th_fires_only_in_leap_years() -> None:
    schedule = CronSchedule.parse("0 0 29 2 *")
    assert next_fire_times(schedule, utc(2026, 1, 1), 3) == [
        utc(2028, 2, 29),
        utc(2032, 2, 29),
        utc(2036, 2, 29),
    ]


def test_february_29th_skips_century_years_that_are_not_leap_years() -> None:
    schedule = CronSchedule.parse("0 0 29 2 *")
    assert next_fire_times(schedule, utc(2096, 3, 1), 1) == [utc(2104, 2, 29)]


def test_last_day_of_month_follows_month_lengths_and_leap_years() -> None:
    schedule = CronSchedule.parse("0 23 L * *")
    assert next_fire_times(schedule, utc(2028, 1, 31, 23), 3) == [
        utc(2028, 2, 29, 23),
        utc(2028, 3, 31, 23),
        utc(2028, 4, 30, 23),
    ]


def test_year_end_rolls_into_the_next_year() -> None:
    schedule = CronSchedule.parse("59 23 31 12 *")
    assert next_fire_times(schedule, utc(2026, 12, 31, 23, 59), 1) == [utc(2027, 12, 31, 23, 59)]


def test_weekday_and_day_of_month_or_semantics_over_a_month() -> None:
    schedule = CronSchedule.parse("0 0 1,15 * MON")
    days = [t.day for t in fire_times_between(schedule, utc(2026, 6, 1), utc(2026, 7, 1))]
    assert days == [1, 8, 15, 22, 29]  # the 1st, the 15th, and every Monday (1 June 2026 is a Monday)


def test_weekdays_only_during_office_hours() -> None:
    schedule = CronSchedule.parse("0 9-17/4 * * MON-FRI")
    ticks = list(fire_times_between(schedule, utc(2026, 11, 20), utc(2026, 11, 24)))
    assert ticks == [
        utc(2026, 11, 20, 9),
        utc(2026, 11, 20, 13),
        utc(2026, 11, 20, 17),
        utc(2026, 11, 23, 9),
        utc(2026, 11, 23, 13),
        utc(2026, 11, 23, 17),
    ]


def test_third_friday_and_last_friday_of_a_month() -> None:
    third = CronSchedule.parse("0 0 * * FRI#3")
    last = CronSchedule.parse("0 0 * * 5L")
    assert next_fire_times(third, utc(2026, 11, 1), 2) == [utc(2026, 11, 20), utc(2026, 12, 18)]
    assert next_fire_times(last, utc(2026, 11, 1), 2) == [utc(2026, 11, 27), utc(2026, 12, 25)]


def test_fire_times_between_is_half_open() -> None:
    schedule = CronSchedule.parse("0 * * * *")
    ticks = list(fire_times_between(schedule, utc(2026, 1, 1, 0), utc(2026, 1, 1, 3)))
    assert ticks == [utc(2026, 1, 1, 0), utc(2026, 1, 1, 1), utc(2026, 1, 1, 2)]


def test_adjacent_ranges_cover_every_tick_exactly_once() -> None:
    schedule = CronSchedule.parse("*/7 * * * *")
    whole = list(fire_times_between(schedule, utc(2026, 1, 1), utc(2026, 1, 2)))
    halves = [
        *fire_times_between(schedule, utc(2026, 1, 1), utc(2026, 1, 1, 12, 7)),
        *fire_times_between(schedule, utc(2026, 1, 1, 12, 7), utc(2026, 1, 2)),
    ]
    assert halves == whole
    assert len(whole) == 24 * 9


def test_fire_times_through_walks_backwards_including_the_instant() -> None:
    schedule = CronSchedule.parse("0 0 * * *")
    assert list(islice(fire_times_through(schedule, utc(2026, 3, 2)), 3)) == [
        utc(2026, 3, 2),
        utc(2026, 3, 1),
        utc(2026, 2, 28),
    ]


def test_backward_and_forward_walks_agree() -> None:
    schedule = CronSchedule.parse("13 */3 * * 1-5", "America/New_York")
    forward = list(fire_times_between(schedule, utc(2026, 2, 20), utc(2026, 4, 10)))
    backward = [
        t for t in islice(fire_times_through(schedule, utc(2026, 4, 10)), 400) if t >= utc(2026, 2, 20)
    ]
    assert list(reversed(backward)) == forward


def test_a_huge_range_is_streamed_lazily_without_a_cap() -> None:
    schedule = CronSchedule.parse("* * * * * *")
    ticks = fire_times_between(schedule, utc(2026, 1, 1), utc(2126, 1, 1))
    started = time.perf_counter()
    first = list(islice(ticks, 1000))
    assert time.perf_counter() - started < 0.5
    assert first[0] == utc(2026, 1, 1) and first[-1] == utc(2026, 1, 1, 0, 16, 39)


def test_more_than_kubernetes_hundred_ticks_are_produced() -> None:
    schedule = CronSchedule.parse("* * * * *")
    assert sum(1 for _ in fire_times_between(schedule, utc(2026, 1, 1), utc(2026, 1, 8))) == 7 * 24 * 60


def test_the_month_field_still_restricts_the_or_of_the_day_fields() -> None:
    schedule = CronSchedule.parse("0 0 29 2 MON")  # every Monday in February, and 29 February
    assert next_fire_times(schedule, utc(2026, 11, 23), 5) == [
        utc(2027, 2, 1),
        utc(2027, 2, 8),
        utc(2027, 2, 15),
        utc(2027, 2, 22),
        utc(2028, 2, 7),
    ]


def test_a_leap_day_three_years_away_is_found_quickly() -> None:
    started = time.perf_counter()
    assert next_fire_times(CronSchedule.parse("0 0 29 2 *"), utc(2029, 3, 1), 1) == [utc(2032, 2, 29)]
    assert time.perf_counter() - started < 0.1


def test_tick_run_id_depends_only_on_job_and_instant() -> None:
    instant = utc(2026, 3, 29, 1, 30)
    same_instant_elsewhere = instant.astimezone(timezone(timedelta(hours=-5)))
    assert tick_run_id(JOB, instant) == tick_run_id(JOB, same_instant_elsewhere)
    assert tick_run_id(JOB, instant) != tick_run_id(JOB, instant + timedelta(seconds=1))
    assert tick_run_id(JOB, instant) != tick_run_id(uuid.uuid4(), instant)
    assert tick_run_id(JOB, instant).version == 5


def test_tick_run_id_is_stable_across_releases() -> None:
    assert tick_run_id(JOB, utc(2026, 1, 1)) == uuid.UUID("32c1fe5b-46da-5b38-b168-342c4c3fcc56")


def test_jitter_is_deterministic_and_within_bounds() -> None:
    offsets = [jitter_offset(JOB, utc(2026, 1, 1, 0, minute), 30) for minute in range(60)]
    assert offsets == [jitter_offset(JOB, utc(2026, 1, 1, 0, minute), 30) for minute in range(60)]
    assert all(timedelta(0) <= offset < timedelta(seconds=30) for offset in offsets)
    assert len(set(offsets)) > 50  # spread, not one constant delay


def test_no_jitter_means_due_exactly_at_the_scheduled_time() -> None:
    assert jitter_offset(JOB, utc(2026, 1, 1), 0) == timedelta(0)
    assert due_at(JOB, utc(2026, 1, 1), 0) == utc(2026, 1, 1)


def test_due_at_adds_the_jitter_to_the_scheduled_time() -> None:
    scheduled = utc(2026, 1, 1)
    assert due_at(JOB, scheduled, 10) == scheduled + jitter_offset(JOB, scheduled, 10)
    assert scheduled <= due_at(JOB, scheduled, 10) < scheduled + timedelta(seconds=10)


def test_jitter_of_a_fraction_of_a_second_stays_below_it() -> None:
    offsets = {jitter_offset(JOB, utc(2026, 1, 1, 0, 0, second), 0.001) for second in range(60)}
    assert all(offset < timedelta(milliseconds=1) for offset in offsets)


def test_a_fifth_monday_in_february_waits_for_a_leap_year_starting_on_monday() -> None:
    schedule = CronSchedule.parse("0 0 * FEB MON#5")
    assert next_fire_times(schedule, utc(2026, 1, 1), 2) == [utc(2044, 2, 29), utc(2072, 2, 29)]


def test_a_schedule_is_built_from_the_job_spec() -> None:
    schedule = CronSchedule.from_spec(ScheduleSpec(cron="0 9 * * *", timezone="Asia/Tokyo"))
    assert next_fire_times(schedule, utc(2026, 5, 31, 12), 1) == [utc(2026, 6, 1, 0, 0)]
