"""Specification of retries: which outcomes retry, after how long, and under which run id."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from contracts.schedules import RetrySpec
from shared.domain.retry import RunOutcome, backoff_delay_s, next_retry, retry_key, retry_run_id

FIRST_RUN = uuid.UUID("3f1c8a52-9a3e-4f61-8a7b-0c2d4e6f8a10")
EXACT = RetrySpec(max_attempts=5, initial_delay_s=10, multiplier=2, max_delay_s=60, jitter=0)


def test_by_default_nothing_is_retried() -> None:
    assert next_retry(RetrySpec(), 1, "failed", "k") is None


def test_delays_grow_by_the_multiplier_up_to_the_cap() -> None:
    delays = [next_retry(EXACT, attempt, "failed", "k") for attempt in range(1, 5)]
    assert delays == [timedelta(seconds=s) for s in (10, 20, 40, 60)]


def test_no_attempt_beyond_max_attempts_which_counts_the_first_run() -> None:
    assert next_retry(EXACT, 4, "failed", "k") is not None
    assert next_retry(EXACT, 5, "failed", "k") is None
    assert next_retry(EXACT, 6, "failed", "k") is None


@pytest.mark.parametrize("outcome", ["succeeded", "stopped", "rejected"])
def test_success_a_deliberate_stop_and_a_rejected_template_are_never_retried(outcome: RunOutcome) -> None:
    assert next_retry(EXACT, 1, outcome, "k") is None


@pytest.mark.parametrize(
    ("flag", "outcome"), [("on_failure", "failed"), ("on_timeout", "timed_out"), ("on_lost", "lost")]
)
def test_each_retryable_outcome_can_be_switched_off(flag: str, outcome: RunOutcome) -> None:
    assert next_retry(EXACT, 1, outcome, "k") == timedelta(seconds=10)
    switched_off = EXACT.model_copy(update={flag: False})
    assert next_retry(switched_off, 1, outcome, "k") is None


def test_jitter_shortens_the_delay_by_at_most_its_fraction_and_is_deterministic() -> None:
    spec = EXACT.model_copy(update={"jitter": 0.5})
    delays = [next_retry(spec, 2, "failed", retry_key(uuid.UUID(int=n), 2)) for n in range(100)]
    assert all(d is not None and timedelta(seconds=10) < d <= timedelta(seconds=20) for d in delays)
    assert len(set(delays)) > 90
    assert delays == [next_retry(spec, 2, "failed", retry_key(uuid.UUID(int=n), 2)) for n in range(100)]


def test_full_jitter_spreads_over_zero_to_the_delay() -> None:
    spec = EXACT.model_copy(update={"jitter": 1.0})
    delays = [next_retry(spec, 1, "failed", f"key-{n}") for n in range(200)]
    assert min(d for d in delays if d is not None) < timedelta(seconds=1)
    assert all(d is not None and d <= timedelta(seconds=10) for d in delays)


def test_zero_initial_delay_retries_immediately() -> None:
    spec = RetrySpec(max_attempts=3, initial_delay_s=0, max_delay_s=0)
    assert next_retry(spec, 1, "lost", "k") == timedelta(0)


def test_a_huge_attempt_number_does_not_overflow() -> None:
    spec = RetrySpec(max_attempts=100, initial_delay_s=1, multiplier=100, max_delay_s=3600, jitter=0)
    assert backoff_delay_s(spec, 99) == 3600
    assert next_retry(spec, 99, "failed", "k") == timedelta(hours=1)


def test_a_multiplier_of_one_keeps_a_constant_delay() -> None:
    spec = RetrySpec(max_attempts=4, initial_delay_s=7, multiplier=1, jitter=0)
    assert [next_retry(spec, n, "failed", "k") for n in (1, 2, 3)] == [timedelta(seconds=7)] * 3


def test_attempts_count_from_one() -> None:
    with pytest.raises(ValueError, match="attempt counts from 1"):
        next_retry(EXACT, 0, "failed", "k")


def test_retry_run_ids_are_deterministic_per_first_run_and_attempt() -> None:
    assert retry_run_id(FIRST_RUN, 2) == retry_run_id(FIRST_RUN, 2)
    assert retry_run_id(FIRST_RUN, 2) != retry_run_id(FIRST_RUN, 3)
    assert retry_run_id(FIRST_RUN, 2) != retry_run_id(uuid.UUID(int=1), 2)
    assert retry_run_id(FIRST_RUN, 2) != FIRST_RUN


def test_the_first_run_is_not_a_retry() -> None:
    with pytest.raises(ValueError, match="attempt 2 or later"):
        retry_run_id(FIRST_RUN, 1)
