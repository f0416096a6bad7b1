"""Specification of the job state users see: idle, queued, running, retrying, failed, paused."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from shared.domain.job_state import RunStatus, RunSummary, job_state

IDS = [uuid.UUID(int=n) for n in range(1, 10)]


def run(n: int, status: RunStatus, retry: int | None = None) -> RunSummary:
    return RunSummary(IDS[n], status, IDS[retry] if retry is not None else None)


def test_a_job_without_runs_is_idle() -> None:
    assert job_state([], paused=False) == "idle"


def test_a_job_whose_last_run_succeeded_is_idle() -> None:
    assert job_state([run(0, "failed"), run(1, "succeeded")], paused=False) == "idle"


def test_a_job_whose_last_run_failed_is_failed() -> None:
    assert job_state([run(0, "succeeded"), run(1, "failed")], paused=False) == "failed"


def test_timeouts_lost_runs_and_rejected_templates_count_as_failures() -> None:
    for status in ("timed_out", "lost", "rejected"):
        assert job_state([run(0, status)], paused=False) == "failed"


def test_a_stopped_run_leaves_the_job_idle() -> None:
    assert job_state([run(0, "failed"), run(1, "stopped")], paused=False) == "idle"


def test_skipped_ticks_do_not_hide_the_last_real_outcome() -> None:
    assert job_state([run(0, "failed"), run(1, "skipped"), run(2, "skipped")], paused=False) == "failed"


def test_a_run_in_progress_makes_the_job_running() -> None:
    assert job_state([run(0, "failed"), run(1, "running")], paused=False) == "running"


def test_running_wins_over_a_waiting_run() -> None:
    assert job_state([run(0, "running"), run(1, "queued")], paused=False) == "running"


def test_requested_rendered_and_queued_runs_make_the_job_queued() -> None:
    for status in ("queued", "requested", "rendered"):
        assert job_state([run(0, "succeeded"), run(1, status)], paused=False) == "queued"


def test_a_failed_run_with_a_pending_retry_makes_the_job_retrying() -> None:
    assert job_state([run(0, "failed", retry=1)], paused=False) == "retrying"


def test_once_the_retry_is_requested_the_job_follows_that_attempt() -> None:
    assert job_state([run(0, "failed", retry=1), run(1, "running")], paused=False) == "running"
    assert job_state([run(0, "failed", retry=1), run(1, "succeeded")], paused=False) == "idle"
    assert job_state([run(0, "failed", retry=1), run(1, "failed")], paused=False) == "failed"


def test_paused_wins_over_everything_because_it_is_about_scheduling() -> None:
    assert job_state([run(0, "running")], paused=True) == "paused"
    assert job_state([run(0, "failed", retry=1)], paused=True) == "paused"
    assert job_state([], paused=True) == "paused"


def test_a_run_staged_ahead_of_its_tick_leaves_the_job_as_it_was_until_its_time() -> None:
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    staged = RunSummary(IDS[1], "rendered", start_at=now + timedelta(seconds=5))
    assert job_state([run(0, "failed"), staged], paused=False, now=now) == "failed"
    assert job_state([run(0, "succeeded"), staged], paused=False, now=now) == "idle"
    assert job_state([run(0, "succeeded"), staged], paused=False, now=now + timedelta(seconds=5)) == "queued"
