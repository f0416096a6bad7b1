"""Specification of overlap policies and the concurrency limit: what a new trigger does."""

from __future__ import annotations

import uuid

import pytest

from contracts.schedules import OverlapPolicy, OverlapSpec
from shared.domain.policies import (
    Enqueue,
    Skip,
    Start,
    StopThenStart,
    decide_overlap,
    effective_limit,
    next_to_dequeue,
)

FIRST, SECOND, THIRD, WAITING = (uuid.UUID(int=n) for n in (1, 2, 3, 9))
POLICIES: list[OverlapPolicy] = ["allow", "forbid", "replace", "queue"]


def spec(policy: OverlapPolicy, limit: int | None = None) -> OverlapSpec:
    return OverlapSpec(policy=policy, concurrency_limit=limit)


@pytest.mark.parametrize("policy", POLICIES)
def test_a_trigger_starts_when_nothing_is_active(policy: OverlapPolicy) -> None:
    assert decide_overlap(spec(policy), active=[]) == Start()


def test_allow_starts_alongside_active_runs_without_a_limit() -> None:
    assert decide_overlap(spec("allow"), active=[FIRST, SECOND, THIRD]) == Start()


def test_allow_with_a_limit_skips_once_the_limit_is_reached() -> None:
    assert decide_overlap(spec("allow", 3), active=[FIRST, SECOND]) == Start()
    decision = decide_overlap(spec("allow", 2), active=[FIRST, SECOND])
    assert decision == Skip("concurrency_limit_reached", "2 runs are active, the limit is 2")


def test_forbid_skips_while_a_run_is_active_and_says_which() -> None:
    decision = decide_overlap(spec("forbid"), active=[FIRST])
    assert isinstance(decision, Skip)
    assert decision.code == "overlap_forbidden"
    assert str(FIRST) in decision.reason


def test_forbid_with_a_higher_limit_allows_that_many_then_skips() -> None:
    assert decide_overlap(spec("forbid", 2), active=[FIRST]) == Start()
    decision = decide_overlap(spec("forbid", 2), active=[FIRST, SECOND])
    assert isinstance(decision, Skip) and decision.code == "concurrency_limit_reached"


def test_replace_stops_the_active_run_then_starts() -> None:
    assert decide_overlap(spec("replace"), active=[FIRST]) == StopThenStart(stop=(FIRST,))


def test_replace_with_a_limit_stops_only_the_oldest_runs_needed_to_make_room() -> None:
    assert decide_overlap(spec("replace", 2), active=[FIRST, SECOND]) == StopThenStart(stop=(FIRST,))
    assert decide_overlap(spec("replace", 2), active=[FIRST]) == Start()


def test_replace_over_the_limit_stops_enough_runs_to_get_back_under_it() -> None:
    decision = decide_overlap(spec("replace", 1), active=[FIRST, SECOND, THIRD])
    assert decision == StopThenStart(stop=(FIRST, SECOND, THIRD))


def test_queue_lets_one_run_wait_behind_an_active_one() -> None:
    assert decide_overlap(spec("queue"), active=[FIRST], queued=[]) == Enqueue()


def test_queue_skips_a_second_waiter_keeping_the_one_already_waiting() -> None:
    decision = decide_overlap(spec("queue"), active=[FIRST], queued=[WAITING])
    assert isinstance(decision, Skip)
    assert decision.code == "queue_full"
    assert str(WAITING) in decision.reason


def test_queue_with_a_limit_starts_until_the_limit_then_queues() -> None:
    assert decide_overlap(spec("queue", 2), active=[FIRST]) == Start()
    assert decide_overlap(spec("queue", 2), active=[FIRST, SECOND]) == Enqueue()


@pytest.mark.parametrize("policy", POLICIES)
def test_a_forced_manual_run_starts_whatever_the_policy(policy: OverlapPolicy) -> None:
    assert decide_overlap(spec(policy, 1), active=[FIRST], queued=[WAITING], force=True) == Start()


@pytest.mark.parametrize("policy", ["forbid", "replace", "queue"])
def test_an_unforced_manual_run_obeys_the_policy_like_a_tick(policy: OverlapPolicy) -> None:
    assert decide_overlap(spec(policy), active=[FIRST], force=False) != Start()


def test_effective_limit_defaults_to_unbounded_for_allow_and_one_otherwise() -> None:
    assert effective_limit("allow", None) is None
    assert [effective_limit(policy, None) for policy in ("forbid", "replace", "queue")] == [1, 1, 1]
    assert effective_limit("allow", 4) == 4


def test_a_waiting_run_starts_when_the_active_run_ends() -> None:
    assert next_to_dequeue(spec("queue"), active=[], queued=[WAITING]) == WAITING


def test_a_waiting_run_keeps_waiting_while_the_limit_is_reached() -> None:
    assert next_to_dequeue(spec("queue"), active=[FIRST], queued=[WAITING]) is None


def test_nothing_to_dequeue_when_nothing_waits() -> None:
    assert next_to_dequeue(spec("queue"), active=[], queued=[]) is None


def test_waiters_start_oldest_first() -> None:
    assert next_to_dequeue(spec("queue", 3), active=[FIRST], queued=[WAITING, THIRD]) == WAITING


def test_a_new_trigger_never_overtakes_a_waiting_run_even_when_the_limit_has_room() -> None:
    decision = decide_overlap(spec("queue"), active=[], queued=[WAITING])
    assert isinstance(decision, Skip) and decision.code == "queue_full"
    assert next_to_dequeue(spec("queue"), active=[], queued=[WAITING]) == WAITING
