"""Specification of the schedule, overlap and retry configuration a job carries, and its validation."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from contracts.schedules import MissedTicksSpec, OverlapSpec, RetrySpec, ScheduleSpec


def errors_of(model: type[Any], data: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    return [(error["loc"], error["msg"]) for error in caught.value.errors()]


def test_a_schedule_needs_only_a_cron_expression() -> None:
    spec = ScheduleSpec.model_validate({"cron": "*/5 * * * *"})
    assert spec.timezone == "UTC"
    assert spec.jitter_s == 0
    assert spec.missed == MissedTicksSpec(policy="latest", catchup_window_s=86_400, grace_s=60)


def test_a_full_schedule_round_trips_through_json() -> None:
    data = {
        "cron": "0 30 2 * * MON-FRI",
        "timezone": "Europe/Stockholm",
        "jitter_s": 15,
        "missed": {"policy": "all", "catchup_window_s": 3600, "grace_s": 5},
    }
    spec = ScheduleSpec.model_validate(data)
    assert ScheduleSpec.model_validate_json(spec.model_dump_json()) == spec


def test_an_invalid_cron_fails_on_the_cron_field_naming_the_cron_field_inside_it() -> None:
    [(location, message)] = errors_of(ScheduleSpec, {"cron": "61 * * * *"})
    assert location == ("cron",)
    assert "minute field: 61 is out of range 0-59" in message


def test_an_unknown_time_zone_fails_on_the_timezone_field() -> None:
    [(location, message)] = errors_of(ScheduleSpec, {"cron": "@daily", "timezone": "Mars/Olympus"})
    assert location == ("timezone",)
    assert "unknown IANA time zone 'Mars/Olympus'" in message


@pytest.mark.parametrize("zone", ["../../etc/passwd", "", "Europe/"])
def test_malformed_time_zone_keys_are_refused(zone: str) -> None:
    [(location, _)] = errors_of(ScheduleSpec, {"cron": "@daily", "timezone": zone})
    assert location == ("timezone",)


def test_unknown_fields_are_refused_so_typos_do_not_vanish() -> None:
    [(location, _)] = errors_of(ScheduleSpec, {"cron": "@daily", "timzone": "UTC"})
    assert location == ("timzone",)


def test_negative_jitter_and_unknown_missed_policy_are_refused_by_field() -> None:
    errors = errors_of(ScheduleSpec, {"cron": "@daily", "jitter_s": -1, "missed": {"policy": "some"}})
    assert sorted(location for location, _ in errors) == [("jitter_s",), ("missed", "policy")]


def test_the_catchup_window_is_bounded_so_it_stays_a_valid_date_range() -> None:
    [(location, _)] = errors_of(MissedTicksSpec, {"catchup_window_s": 1e12})
    assert location == ("catchup_window_s",)


def test_schedule_specs_are_frozen() -> None:
    spec = ScheduleSpec(cron="@daily")
    with pytest.raises(ValidationError):
        spec.cron = "@hourly"  # type: ignore[misc]


def test_overlap_defaults_to_forbid_without_an_explicit_limit() -> None:
    assert OverlapSpec() == OverlapSpec(policy="forbid", concurrency_limit=None)


def test_overlap_limit_must_be_positive() -> None:
    [(location, _)] = errors_of(OverlapSpec, {"policy": "allow", "concurrency_limit": 0})
    assert location == ("concurrency_limit",)


def test_retry_defaults_to_a_single_attempt_with_every_outcome_retryable_once_enabled() -> None:
    spec = RetrySpec()
    assert spec.max_attempts == 1
    assert (spec.on_failure, spec.on_timeout, spec.on_lost) == (True, True, True)
    assert (spec.initial_delay_s, spec.multiplier, spec.max_delay_s, spec.jitter) == (10, 2.0, 3600, 0.1)


def test_retry_max_delay_below_initial_delay_is_refused() -> None:
    [(_, message)] = errors_of(RetrySpec, {"initial_delay_s": 60, "max_delay_s": 10})
    assert "max_delay_s (10.0) is below initial_delay_s (60.0)" in message


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_attempts", 0), ("multiplier", 0.5), ("jitter", 1.5), ("initial_delay_s", float("inf"))],
)
def test_retry_values_out_of_range_are_named(field: str, value: float) -> None:
    errors = errors_of(RetrySpec, {field: value})
    assert (field,) in [location for location, _ in errors]
