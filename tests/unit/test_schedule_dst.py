"""Specification of schedules across daylight-saving changes.

The rule: a wall-clock time that a spring-forward gap skips does not fire; a wall-clock time that a
fall-back repeats fires once, at its first occurrence. croniter 7.0 breaks both (it fires the skipped
02:30 at 03:00 and the repeated 02:30 twice), which is why batchyard evaluates cron itself.

Europe/Stockholm 2026: 29 March 02:00 CET -> 03:00 CEST; 25 October 03:00 CEST -> 02:00 CET.
America/New_York 2026: 8 March 02:00 EST -> 03:00 EDT; 1 November 02:00 EDT -> 01:00 EST.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import islice, pairwise
from zoneinfo import ZoneInfo

from shared.domain.schedule import CronSchedule, fire_times_after, fire_times_between, fire_times_through

STOCKHOLM = ZoneInfo("Europe/Stockholm")
NEW_YORK = ZoneInfo("America/New_York")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def local_day(schedule: CronSchedule, year: int, month: int, day: int) -> list[datetime]:
    """The ticks of one local calendar day, as local wall-clock datetimes."""
    start = datetime(year, month, day, tzinfo=schedule.zone)
    end = start + timedelta(days=1, hours=3)
    return [
        tick.astimezone(schedule.zone)
        for tick in fire_times_between(schedule, start.astimezone(UTC), end.astimezone(UTC))
        if tick.astimezone(schedule.zone).date() == start.date()
    ]


def test_stockholm_0230_does_not_fire_on_the_day_it_does_not_exist() -> None:
    schedule = CronSchedule.parse("30 2 * * *", "Europe/Stockholm")
    ticks = list(fire_times_between(schedule, utc(2026, 3, 27), utc(2026, 3, 31)))
    assert ticks == [utc(2026, 3, 27, 1, 30), utc(2026, 3, 28, 1, 30), utc(2026, 3, 30, 0, 30)]


def test_stockholm_0230_fires_once_on_the_day_it_happens_twice_at_the_first_occurrence() -> None:
    schedule = CronSchedule.parse("30 2 * * *", "Europe/Stockholm")
    ticks = list(fire_times_between(schedule, utc(2026, 10, 24), utc(2026, 10, 27)))
    assert ticks == [utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]
    assert ticks[1].astimezone(STOCKHOLM).utcoffset() == timedelta(hours=2)  # CEST, the first pass


def test_stockholm_hourly_fires_23_times_on_the_short_day_and_24_on_the_long_day() -> None:
    schedule = CronSchedule.parse("@hourly", "Europe/Stockholm")
    short_day = local_day(schedule, 2026, 3, 29)
    long_day = local_day(schedule, 2026, 10, 25)
    assert [t.hour for t in short_day] == [0, 1, *range(3, 24)]
    assert [t.hour for t in long_day] == list(range(24))


def test_stockholm_every_15_minutes_is_continuous_in_utc_across_spring_forward() -> None:
    schedule = CronSchedule.parse("*/15 * * * *", "Europe/Stockholm")
    ticks = list(fire_times_between(schedule, utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 1, 31)))
    assert [t.astimezone(STOCKHOLM).strftime("%H:%M") for t in ticks] == [
        "01:30",
        "01:45",
        "03:00",
        "03:15",
        "03:30",
    ]
    assert all(b - a == timedelta(minutes=15) for a, b in pairwise(ticks))


def test_stockholm_every_15_minutes_pauses_during_the_repeated_hour() -> None:
    schedule = CronSchedule.parse("*/15 * * * *", "Europe/Stockholm")
    ticks = list(fire_times_between(schedule, utc(2026, 10, 24, 23, 30), utc(2026, 10, 25, 2, 16)))
    assert ticks == [
        utc(2026, 10, 24, 23, 30),  # 01:30 CEST
        utc(2026, 10, 24, 23, 45),
        utc(2026, 10, 25, 0, 0),  # 02:00 CEST, first pass
        utc(2026, 10, 25, 0, 15),
        utc(2026, 10, 25, 0, 30),
        utc(2026, 10, 25, 0, 45),
        utc(2026, 10, 25, 2, 0),  # 03:00 CET; the second pass of 02:00-02:59 fired nothing
        utc(2026, 10, 25, 2, 15),
    ]
    assert len(local_day(schedule, 2026, 10, 25)) == 96  # each wall-clock quarter hour once


def test_a_start_inside_the_second_pass_of_the_repeated_hour_waits_for_03_00() -> None:
    schedule = CronSchedule.parse("*/15 * * * *", "Europe/Stockholm")
    after = utc(2026, 10, 25, 1, 10)  # 02:10 CET, second pass
    assert next(fire_times_after(schedule, after)) == utc(2026, 10, 25, 2, 0)


def test_walking_back_from_the_second_pass_finds_the_first_pass_ticks() -> None:
    schedule = CronSchedule.parse("*/15 * * * *", "Europe/Stockholm")
    through = utc(2026, 10, 25, 1, 30)  # 02:30 CET, second pass
    assert list(islice(fire_times_through(schedule, through), 3)) == [
        utc(2026, 10, 25, 0, 45),  # 02:45 CEST
        utc(2026, 10, 25, 0, 30),
        utc(2026, 10, 25, 0, 15),
    ]


def test_seconds_schedule_skips_the_gap_and_fires_each_wall_second_once_in_the_overlap() -> None:
    schedule = CronSchedule.parse("0/30 * * * * *", "Europe/Stockholm")
    spring = local_day(schedule, 2026, 3, 29)
    autumn = local_day(schedule, 2026, 10, 25)
    assert len(spring) == 23 * 120
    assert len(autumn) == 24 * 120
    assert len({t.replace(tzinfo=None) for t in autumn}) == len(autumn)


def test_new_york_0230_is_skipped_on_the_spring_forward_sunday() -> None:
    schedule = CronSchedule.parse("30 2 * * *", "America/New_York")
    days = [
        t.astimezone(NEW_YORK).day for t in fire_times_between(schedule, utc(2026, 3, 7), utc(2026, 3, 10))
    ]
    assert days == [7, 9]


def test_new_york_0130_fires_once_on_the_fall_back_sunday_in_daylight_time() -> None:
    schedule = CronSchedule.parse("30 1 * * *", "America/New_York")
    ticks = list(fire_times_between(schedule, utc(2026, 10, 31), utc(2026, 11, 3)))
    assert ticks == [utc(2026, 10, 31, 5, 30), utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]


def test_new_york_schedule_outside_the_changed_hours_keeps_its_local_time() -> None:
    schedule = CronSchedule.parse("0 9 * * MON-FRI", "America/New_York")
    ticks = list(fire_times_between(schedule, utc(2026, 3, 6), utc(2026, 3, 10)))
    assert ticks == [utc(2026, 3, 6, 14, 0), utc(2026, 3, 9, 13, 0)]


def test_lord_howe_half_hour_changes_follow_the_same_rule() -> None:
    repeated = CronSchedule.parse("45 1 * * *", "Australia/Lord_Howe")  # 01:30-01:59 repeats on 5 April
    skipped = CronSchedule.parse("15 2 * * *", "Australia/Lord_Howe")  # 02:00-02:29 is skipped on 4 October
    assert [t.hour for t in local_day(repeated, 2026, 4, 5)] == [1]
    assert local_day(repeated, 2026, 4, 5)[0].utcoffset() == timedelta(hours=11)
    assert local_day(skipped, 2026, 10, 4) == []
    assert len(local_day(skipped, 2026, 10, 5)) == 1


def test_a_daily_midnight_job_does_not_fire_where_midnight_itself_is_skipped() -> None:
    schedule = CronSchedule.parse("@daily", "America/Santiago")  # 6 September 2026 starts at 01:00
    days = [
        t.astimezone(schedule.zone).day
        for t in fire_times_between(schedule, utc(2026, 9, 4), utc(2026, 9, 8))
    ]
    assert days == [4, 5, 7]


def test_a_repeated_hour_before_midnight_fires_once_in_the_first_pass() -> None:
    schedule = CronSchedule.parse("30 23 * * *", "America/Santiago")  # 23:00-23:59 repeats on 4 April 2026
    ticks = list(fire_times_between(schedule, utc(2026, 4, 4, 12), utc(2026, 4, 6, 12)))
    assert ticks == [utc(2026, 4, 5, 2, 30), utc(2026, 4, 6, 3, 30)]
