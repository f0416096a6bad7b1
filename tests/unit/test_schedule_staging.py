"""When a tick is staged ahead of its time (decision 0175): the lead, but never before halfway from the
previous tick, so the policy decided at staging still holds when the tick comes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.domain.schedule import staging_time

T = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def test_a_tick_far_from_the_previous_one_is_staged_the_lead_ahead() -> None:
    assert staging_time(T - timedelta(hours=1), T, 10) == T - timedelta(seconds=10)


def test_a_tick_close_to_the_previous_one_is_staged_halfway_between_them() -> None:
    assert staging_time(T - timedelta(seconds=4), T, 10) == T - timedelta(seconds=2)


def test_no_lead_or_no_time_left_means_no_staging() -> None:
    assert staging_time(T - timedelta(hours=1), T, 0) is None
    assert staging_time(T, T, 10) is None
    assert staging_time(T + timedelta(seconds=1), T, 10) is None
