"""Specification of missed ticks: which run, which are recorded as skipped, and that none is dropped."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from itertools import takewhile

import pytest

from contracts.schedules import MissedPolicy, MissedTicksSpec, ScheduleSpec
from shared.domain.missed import (
    SkippedTicks,
    TickPlan,
    TickSpan,
    plan_missed_ticks,
    plan_ticks,
    skipped_while_paused,
)
from shared.domain.schedule import CronSchedule, fire_times_after

HOURLY = CronSchedule.parse("@hourly")
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def plan(
    policy: MissedPolicy,
    handled_through: datetime,
    now: datetime,
    *,
    schedule: CronSchedule = HOURLY,
    window: timedelta = DAY,
    grace: timedelta = MINUTE,
) -> TickPlan:
    return plan_ticks(
        schedule, policy, handled_through=handled_through, now=now, catchup_window=window, grace=grace
    )


def runs(result: TickPlan, schedule: CronSchedule = HOURLY) -> list[datetime]:
    return [tick for span in result.run for tick in span.ticks(schedule)]


def skips(result: TickPlan, schedule: CronSchedule = HOURLY) -> list[tuple[datetime, str]]:
    return [(tick, item.reason) for item in result.skipped for tick in item.span.ticks(schedule)]


def every_tick(result: TickPlan, schedule: CronSchedule) -> list[datetime]:
    """Sorted, but with duplicates kept, so a tick both run and skipped would show up twice."""
    return sorted(runs(result, schedule) + [tick for tick, _ in skips(result, schedule)])


def test_on_time_tick_runs_under_every_policy() -> None:
    for policy in ("skip", "latest", "all"):
        result = plan(policy, utc(2026, 1, 1, 0, 30), utc(2026, 1, 1, 1, 0, 5))
        assert runs(result) == [utc(2026, 1, 1, 1)]
        assert result.skipped == ()


def test_nothing_to_do_when_no_tick_passed() -> None:
    result = plan("all", utc(2026, 1, 1, 1), utc(2026, 1, 1, 1, 30))
    assert result == TickPlan(run=(), skipped=(), handled_through=utc(2026, 1, 1, 1, 30))


def test_now_not_after_handled_through_changes_nothing() -> None:
    result = plan("all", utc(2026, 1, 1, 2), utc(2026, 1, 1, 1))
    assert result == TickPlan(run=(), skipped=(), handled_through=utc(2026, 1, 1, 2))


def test_the_tick_at_handled_through_was_already_handled() -> None:
    result = plan("all", utc(2026, 1, 1, 1), utc(2026, 1, 1, 2))
    assert runs(result) == [utc(2026, 1, 1, 2)]


def test_skip_policy_records_every_missed_tick_and_runs_none() -> None:
    result = plan("skip", utc(2026, 1, 1, 0, 30), utc(2026, 1, 1, 5, 30))
    assert runs(result) == []
    assert skips(result) == [(utc(2026, 1, 1, hour), "missed") for hour in range(1, 6)]


def test_a_tick_a_few_seconds_late_is_on_time_even_under_skip() -> None:
    result = plan("skip", utc(2026, 1, 1, 0, 30), utc(2026, 1, 1, 1, 0, 59))
    assert runs(result) == [utc(2026, 1, 1, 1)]


def test_a_tick_later_than_the_grace_is_missed() -> None:
    result = plan("skip", utc(2026, 1, 1, 0, 30), utc(2026, 1, 1, 1, 1, 1))
    assert skips(result) == [(utc(2026, 1, 1, 1), "missed")]


def test_all_policy_runs_every_missed_tick_within_the_window_in_order() -> None:
    result = plan("all", utc(2026, 1, 1, 0, 30), utc(2026, 1, 1, 5, 30))
    assert runs(result) == [utc(2026, 1, 1, hour) for hour in range(1, 6)]
    assert result.skipped == ()


def test_all_policy_skips_ticks_older_than_the_catchup_window() -> None:
    result = plan("all", utc(2026, 1, 1, 0, 30), utc(2026, 1, 1, 5, 30), window=2 * HOUR)
    assert runs(result) == [utc(2026, 1, 1, 4), utc(2026, 1, 1, 5)]
    assert skips(result) == [(utc(2026, 1, 1, hour), "outside_catchup_window") for hour in (1, 2, 3)]


def test_a_tick_exactly_at_the_window_edge_is_outside_it() -> None:
    result = plan("all", utc(2026, 1, 1, 0, 30), utc(2026, 1, 1, 3), window=2 * HOUR)
    assert skips(result) == [(utc(2026, 1, 1, 1), "outside_catchup_window")]
    assert runs(result) == [utc(2026, 1, 1, 2), utc(2026, 1, 1, 3)]


def test_latest_policy_runs_only_the_newest_missed_tick() -> None:
    result = plan("latest", utc(2026, 1, 1, 0, 30), utc(2026, 1, 1, 5, 30))
    assert runs(result) == [utc(2026, 1, 1, 5)]
    assert skips(result) == [(utc(2026, 1, 1, hour), "superseded") for hour in range(1, 5)]


def test_latest_policy_prefers_an_on_time_tick_over_a_missed_one() -> None:
    result = plan("latest", utc(2026, 1, 1, 0, 30), utc(2026, 1, 1, 5, 0, 10))
    assert runs(result) == [utc(2026, 1, 1, 5)]
    assert skips(result) == [(utc(2026, 1, 1, hour), "superseded") for hour in range(1, 5)]


def test_latest_policy_runs_nothing_when_every_missed_tick_is_outside_the_window() -> None:
    result = plan("latest", utc(2026, 1, 1, 0, 30), utc(2026, 1, 1, 5, 30), window=10 * MINUTE)
    assert runs(result) == []
    assert skips(result) == [(utc(2026, 1, 1, hour), "outside_catchup_window") for hour in range(1, 6)]


def test_latest_policy_splits_window_and_supersession_reasons() -> None:
    result = plan("latest", utc(2026, 1, 1, 0, 30), utc(2026, 1, 1, 5, 30), window=3 * HOUR)
    assert runs(result) == [utc(2026, 1, 1, 5)]
    assert skips(result) == [
        (utc(2026, 1, 1, 1), "outside_catchup_window"),
        (utc(2026, 1, 1, 2), "outside_catchup_window"),
        (utc(2026, 1, 1, 3), "superseded"),
        (utc(2026, 1, 1, 4), "superseded"),
    ]


@pytest.mark.parametrize("policy", ["skip", "latest", "all"])
@pytest.mark.parametrize("window", [timedelta(0), 30 * MINUTE, 3 * HOUR, 10 * DAY])
def test_every_pending_tick_is_either_run_or_skipped_exactly_once(
    policy: MissedPolicy, window: timedelta
) -> None:
    schedule = CronSchedule.parse("*/7 * * * *")
    previous, now = utc(2026, 1, 1, 0, 3), utc(2026, 1, 1, 9, 50, 30)
    result = plan(policy, previous, now, schedule=schedule, window=window, grace=5 * MINUTE)
    expected = list(takewhile(lambda tick: tick <= now, fire_times_after(schedule, previous)))
    assert every_tick(result, schedule) == expected
    assert result.handled_through == now


def test_spans_with_no_tick_are_left_out() -> None:
    result = plan("all", utc(2026, 1, 1, 0, 30), utc(2026, 1, 1, 5, 30), window=DAY)
    assert all(item.span.first(HOURLY) is not None for item in result.skipped)
    assert len(result.run) == 1


def test_a_year_of_every_second_ticks_is_planned_in_constant_time_and_counted_lazily() -> None:
    schedule = CronSchedule.parse("* * * * * *")
    started = time.perf_counter()
    result = plan("latest", utc(2025, 1, 1), utc(2026, 1, 1, 0, 0, 30), schedule=schedule, window=HOUR)
    assert time.perf_counter() - started < 0.1
    on_time = runs(result, schedule)  # the last minute (the grace) is on time, not missed
    assert (on_time[0], on_time[-1], len(on_time)) == (
        utc(2025, 12, 31, 23, 59, 31),
        utc(2026, 1, 1, 0, 0, 30),
        60,
    )
    [outside, superseded] = result.skipped
    assert outside.reason == "outside_catchup_window"
    assert outside.span.first(schedule) == utc(2025, 1, 1, 0, 0, 1)
    assert outside.span.last(schedule) == utc(2025, 12, 31, 23, 0, 30)
    assert superseded.reason == "superseded"
    assert superseded.span.first(schedule) == utc(2025, 12, 31, 23, 0, 31)
    assert superseded.span.count(schedule) == 3600 - 60


def test_span_count_first_and_last() -> None:
    span = TickSpan(utc(2026, 1, 1), utc(2026, 1, 2))
    assert span.first(HOURLY) == utc(2026, 1, 1, 1)
    assert span.last(HOURLY) == utc(2026, 1, 2)
    assert span.count(HOURLY) == 24
    assert TickSpan(utc(2026, 1, 1, 0, 10), utc(2026, 1, 1, 0, 50)).last(HOURLY) is None


def test_ticks_during_a_pause_are_recorded_as_skipped_not_caught_up() -> None:
    skipped = skipped_while_paused(HOURLY, utc(2026, 1, 1, 0, 30), utc(2026, 1, 1, 3, 30))
    assert skipped == SkippedTicks(TickSpan(utc(2026, 1, 1, 0, 30), utc(2026, 1, 1, 3, 30)), "paused")
    assert skipped is not None and skipped.span.count(HOURLY) == 3
    after_resume = plan("all", utc(2026, 1, 1, 3, 30), utc(2026, 1, 1, 4, 0, 1))
    assert runs(after_resume) == [utc(2026, 1, 1, 4)]


def test_a_pause_without_ticks_records_nothing() -> None:
    assert skipped_while_paused(HOURLY, utc(2026, 1, 1, 0, 10), utc(2026, 1, 1, 0, 50)) is None


def test_missed_ticks_across_a_dst_gap_are_only_those_that_exist() -> None:
    schedule = CronSchedule.parse("30 * * * *", "Europe/Stockholm")
    result = plan("skip", utc(2026, 3, 28, 23), utc(2026, 3, 29, 2), schedule=schedule)
    local_hours = [tick.astimezone(schedule.zone).hour for tick, _ in skips(result, schedule)]
    assert local_hours == [0, 1, 3]  # 02:30 did not exist that night


def test_a_job_spec_plans_with_its_own_policy_window_and_jitter_widened_grace() -> None:
    spec = ScheduleSpec(
        cron="@hourly", jitter_s=120, missed=MissedTicksSpec(policy="skip", catchup_window_s=3600, grace_s=60)
    )
    within = plan_missed_ticks(spec, handled_through=utc(2026, 1, 1, 0, 30), now=utc(2026, 1, 1, 1, 2, 59))
    assert runs(within) == [utc(2026, 1, 1, 1)]  # 179 s late: jitter (120 s) plus grace (60 s) cover it
    beyond = plan_missed_ticks(spec, handled_through=utc(2026, 1, 1, 0, 30), now=utc(2026, 1, 1, 1, 3, 1))
    assert skips(beyond) == [(utc(2026, 1, 1, 1), "missed")]
