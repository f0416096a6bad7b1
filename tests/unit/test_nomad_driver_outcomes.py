"""How the Nomad driver reads allocation shapes (as Nomad's API documentation shows them) into a run's end."""

from __future__ import annotations

from typing import Any

from services.dispatcher.drivers.base import ExitStatus
from services.dispatcher.drivers.nomad_allocs import judge, task_exit, task_started

JOB = {"ID": "nightly-1", "Status": "dead", "Stop": False}


def alloc(
    alloc_id: str,
    status: str,
    tasks: dict[str, dict[str, Any]],
    *,
    name: str = "nightly-1.work[0]",
    index: int = 10,
) -> dict[str, Any]:
    return {
        "ID": alloc_id,
        "Name": name,
        "ClientStatus": status,
        "ClientDescription": "",
        "TaskStates": tasks,
        "CreateIndex": index,
    }


def dead(
    exit_code: int = 0, signal: int = 0, failed: bool = False, *events: dict[str, Any]
) -> dict[str, Any]:
    terminated = {"Type": "Terminated", "ExitCode": exit_code, "Signal": signal}
    return {"State": "dead", "Failed": failed, "Events": [{"Type": "Started"}, terminated, *events]}


def test_every_task_exiting_zero_is_a_success() -> None:
    verdict = judge("nightly-1", [alloc("a1", "complete", {"main": dead()})], JOB, stopped_by_us=False)
    assert (verdict.kind, verdict.exit) == ("succeeded", ExitStatus(exit_code=0))


def test_a_task_killed_by_a_signal_names_the_signal() -> None:
    verdict = judge("nightly-1", [alloc("a1b2c3d4e5", "failed", {"main": dead(0, 9, True)})], JOB, False)
    assert verdict.kind == "failed" and verdict.exit == ExitStatus(signal=9)
    assert verdict.reason == "task main (allocation a1b2c3d4) was killed by signal SIGKILL"


def test_only_the_newest_allocation_of_a_rescheduled_slot_speaks_for_the_run() -> None:
    first = alloc("old", "failed", {"main": dead(1, 0, True)}, index=10)
    replacement = alloc("new", "complete", {"main": dead()}, index=20)
    assert judge("nightly-1", [replacement, first], JOB, False).kind == "succeeded"


def test_a_failure_in_one_of_several_groups_fails_the_run_even_beside_a_lost_one() -> None:
    ok = alloc("a", "complete", {"main": dead()}, name="nightly-1.a[0]")
    lost = alloc("b", "lost", {"main": {"State": "running", "Events": []}}, name="nightly-1.b[0]")
    failed = alloc("c", "failed", {"side": dead(2, 0, True)}, name="nightly-1.c[0]")
    verdict = judge("nightly-1", [ok, lost, failed], JOB, False)
    assert (verdict.kind, verdict.exit.exit_code) == ("failed", 2)
    assert judge("nightly-1", [ok, lost], JOB, False).kind == "lost"


def test_a_failure_without_exit_code_quotes_nomads_event() -> None:
    state = {
        "State": "dead",
        "Failed": True,
        "Events": [
            {"Type": "Received"},
            {"Type": "Driver Failure", "FailsTask": True, "DriverError": "failed to pull image busybox:nope"},
        ],
    }
    verdict = judge("nightly-1", [alloc("a1", "failed", {"main": state})], JOB, False)
    assert verdict.exit == ExitStatus()
    assert verdict.reason.endswith("failed: Driver Failure: failed to pull image busybox:nope")


def test_a_job_stopped_outside_batchyard_is_a_stop_by_nomad_and_one_gone_is_lost() -> None:
    stopped = judge("nightly-1", [alloc("a", "complete", {"main": dead(130)})], {**JOB, "Stop": True}, False)
    assert (stopped.kind, stopped.stopped_by) == ("stopped", "nomad")
    gone = judge("nightly-1", [], None, False)
    assert gone.kind == "lost" and "disappeared" in gone.reason


def test_exit_codes_come_from_the_last_terminated_event_and_logs_wait_for_a_start() -> None:
    restarted = {"Events": [{"Type": "Terminated", "ExitCode": 1}, {"Type": "Terminated", "ExitCode": 0}]}
    assert task_exit(restarted) == ExitStatus(exit_code=0)
    assert not task_started({"State": "pending", "StartedAt": "0001-01-01T00:00:00Z", "Events": []})
    assert task_started({"State": "running", "StartedAt": "2017-05-25T23:41:23.240184101Z"})
