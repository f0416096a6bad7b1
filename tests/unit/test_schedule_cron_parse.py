"""Specification of the cron syntax batchyard accepts, and of the errors it gives for the rest."""

from __future__ import annotations

import time
from datetime import date

import pytest

from shared.domain.cron import CronSyntaxError, parse_cron


def test_five_fields_mean_minute_hour_day_of_month_month_day_of_week_at_second_zero() -> None:
    expression = parse_cron("5 4 3 2 1")
    assert expression.seconds == (0,)
    assert expression.minutes == (5,)
    assert expression.hours == (4,)
    assert expression.days_of_month == {3}
    assert expression.months == (2,)
    assert expression.days_of_week == {1}


def test_six_fields_put_seconds_first() -> None:
    expression = parse_cron("30 5 4 3 2 1")
    assert expression.seconds == (30,)
    assert expression.minutes == (5,)


def test_star_covers_the_whole_field() -> None:
    expression = parse_cron("* * * * *")
    assert expression.minutes == tuple(range(60))
    assert expression.hours == tuple(range(24))
    assert expression.days_of_month == set(range(1, 32))
    assert expression.months == tuple(range(1, 13))
    assert expression.days_of_week == set(range(7))


def test_steps_on_star_ranges_and_single_starts() -> None:
    assert parse_cron("*/15 * * * *").minutes == (0, 15, 30, 45)
    assert parse_cron("10-30/10 * * * *").minutes == (10, 20, 30)
    assert parse_cron("50/5 * * * *").minutes == (50, 55)
    assert parse_cron("0 */5 * * *").hours == (0, 5, 10, 15, 20)
    assert parse_cron("0 0 1-31/10 * *").days_of_month == {1, 11, 21, 31}
    assert parse_cron("0 0 * */4 *").months == (1, 5, 9)


def test_lists_mix_values_ranges_and_steps() -> None:
    assert parse_cron("1,5-7,50-59/4 * * * *").minutes == (1, 5, 6, 7, 50, 54, 58)


def test_month_and_weekday_names_are_case_insensitive() -> None:
    expression = parse_cron("0 0 * jan,Mar-MAY mon-fri")
    assert expression.months == (1, 3, 4, 5)
    assert expression.days_of_week == {1, 2, 3, 4, 5}


def test_weekday_seven_is_sunday() -> None:
    assert parse_cron("0 0 * * 7").days_of_week == {0}
    assert parse_cron("0 0 * * 5-7").days_of_week == {5, 6, 0}


def test_weekday_step_from_a_start_stops_at_saturday() -> None:
    assert parse_cron("0 0 * * 1/3").days_of_week == {1, 4}


@pytest.mark.parametrize(
    ("macro", "equivalent"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
        ("@HOURLY", "0 * * * *"),
    ],
)
def test_macros_expand_to_their_five_field_form(macro: str, equivalent: str) -> None:
    parsed, expected = parse_cron(macro), parse_cron(equivalent)
    assert parsed.source == macro
    assert (parsed.seconds, parsed.minutes, parsed.hours, parsed.months) == (
        expected.seconds,
        expected.minutes,
        expected.hours,
        expected.months,
    )
    assert (parsed.days_of_month, parsed.days_of_week) == (expected.days_of_month, expected.days_of_week)


def test_question_mark_is_a_star_in_day_fields() -> None:
    expression = parse_cron("0 0 ? * MON")
    assert not expression.day_of_month_restricted
    assert expression.matches_date(date(2026, 11, 23))
    assert not expression.matches_date(date(2026, 11, 24))


def test_day_fields_or_when_both_are_restricted() -> None:
    expression = parse_cron("0 0 13 * FRI")
    assert expression.matches_date(date(2026, 11, 13))  # Friday the 13th
    assert expression.matches_date(date(2026, 11, 20))  # a Friday
    assert expression.matches_date(date(2026, 12, 13))  # a Sunday the 13th
    assert not expression.matches_date(date(2026, 12, 14))


def test_day_fields_and_when_one_starts_with_star_as_in_vixie_cron() -> None:
    expression = parse_cron("0 0 */2 * FRI")
    assert expression.matches_date(date(2026, 11, 13))  # odd day, Friday
    assert not expression.matches_date(date(2026, 11, 20))  # Friday, even day
    assert not expression.matches_date(date(2026, 11, 15))  # odd day, Sunday


def test_l_in_day_of_month_is_the_last_day_of_each_month() -> None:
    expression = parse_cron("0 0 L * *")
    assert expression.matches_date(date(2026, 2, 28))
    assert expression.matches_date(date(2028, 2, 29))
    assert not expression.matches_date(date(2028, 2, 28))
    assert expression.matches_date(date(2026, 4, 30))
    assert expression.matches_date(date(2026, 12, 31))


def test_weekday_l_is_the_last_such_weekday_of_the_month() -> None:
    expression = parse_cron("0 0 * * FRIL")
    assert expression.matches_date(date(2026, 11, 27))
    assert not expression.matches_date(date(2026, 11, 20))
    assert parse_cron("0 0 * * 5L").last_weekdays == {5}


def test_weekday_hash_n_is_the_nth_such_weekday_of_the_month() -> None:
    expression = parse_cron("0 0 * * MON#2")
    assert expression.matches_date(date(2026, 11, 9))
    assert not expression.matches_date(date(2026, 11, 2))
    assert not expression.matches_date(date(2026, 11, 16))


@pytest.mark.parametrize(
    ("expression", "field", "message"),
    [
        ("61 * * * *", "minute", "minute field: 61 is out of range 0-59"),
        ("0 24 * * *", "hour", "hour field: 24 is out of range 0-23"),
        ("0 0 0 * *", "day-of-month", "day-of-month field: 0 is out of range 1-31"),
        ("0 0 32 * *", "day-of-month", "day-of-month field: 32 is out of range 1-31"),
        ("0 0 * 13 *", "month", "month field: 13 is out of range 1-12"),
        ("0 0 * * 8", "day-of-week", "day-of-week field: 8 is out of range 0-7"),
        ("60 * * * * *", "second", "second field: 60 is out of range 0-59"),
        ("*/0 * * * *", "minute", "minute field: step 0 is out of range 1-60"),
        ("*/61 * * * *", "minute", "minute field: step 61 is out of range 1-60"),
        ("30-10 * * * *", "minute", "minute field: range 30-10: start is after end"),
        ("1,,2 * * * *", "minute", "minute field: empty list item"),
        ("x * * * *", "minute", "minute field: 'x' is not a number"),
        ("-1 * * * *", "minute", "minute field: '' is not a number"),
        ("0 0 * * MON#6", "day-of-week", "day-of-week field: occurrence #6 is out of range 1-5"),
        ("? * * * *", "minute", "'?' is only allowed in the day-of-month and day-of-week fields"),
    ],
)
def test_an_invalid_field_is_named_with_the_reason(expression: str, field: str, message: str) -> None:
    with pytest.raises(CronSyntaxError) as caught:
        parse_cron(expression)
    assert caught.value.field == field
    assert message in str(caught.value)


def test_an_unknown_name_lists_the_names_that_exist() -> None:
    with pytest.raises(CronSyntaxError, match=r"month field: 'FOO' is not a number or a name \(JAN, FEB"):
        parse_cron("0 0 * FOO *")


@pytest.mark.parametrize("expression", ["* * * *", "* * * * * * *", "", "   "])
def test_a_wrong_number_of_fields_is_refused(expression: str) -> None:
    with pytest.raises(CronSyntaxError, match="expected 5 fields") as caught:
        parse_cron(expression)
    assert caught.value.field == "expression"


def test_unknown_macros_are_refused_with_the_supported_list() -> None:
    with pytest.raises(CronSyntaxError, match="unknown macro '@reboot'; supported: @annually"):
        parse_cron("@reboot")


@pytest.mark.parametrize("expression", ["0 0 30 2 *", "0 0 31 4,6,9,11 *", "0 0 */31 * MON#5"])
def test_an_expression_that_never_matches_any_day_is_refused(expression: str) -> None:
    with pytest.raises(CronSyntaxError, match="never matches") as caught:
        parse_cron(expression)
    assert caught.value.field == "day-of-month"


def test_february_29th_is_valid_because_leap_years_have_it() -> None:
    assert parse_cron("0 0 29 2 *").days_of_month == {29}


def test_refusing_a_never_matching_expression_is_cheap_so_bad_requests_cost_little() -> None:
    started = time.perf_counter()
    for _ in range(10):
        with pytest.raises(CronSyntaxError):
            parse_cron("0 0 */31 * MON#5")
    assert time.perf_counter() - started < 0.1
