"""Reading Nomad allocations: which are over, which tasks have output, and how a job's run ended.

Nomad reports an allocation's fate in `ClientStatus` (`pending`, `running`, `complete`, `failed`, `lost`,
`unknown`) and each task's in `TaskStates` (`State` `pending`/`running`/`dead`, `Failed`, and `Events`
whose `Terminated` entries carry `ExitCode` and `Signal`). A replacement allocation (a reschedule) keeps
the name of the one it replaces, so only the newest allocation of each name speaks for the run.
See docs/decisions/0102-nomad-outcomes.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from contracts.base import JsonObject
from services.dispatcher.drivers.base import ExitStatus, OutcomeKind, signal_name

TERMINAL_CLIENT_STATUSES = frozenset({"complete", "failed", "lost"})
NEVER = "0001-01-01T00:00:00Z"
FAILURE_EVENT_FIELDS = (
    "DisplayMessage",
    "DriverError",
    "SetupError",
    "ValidationError",
    "KillError",
    "Message",
)


@dataclass(frozen=True)
class Verdict:
    """How the job ended in Nomad's words, ready to become an `Outcome`."""

    kind: OutcomeKind
    exit: ExitStatus
    reason: str
    stopped_by: str | None = None


def short(alloc_id: str) -> str:
    return alloc_id[:8]


def is_terminal(alloc: JsonObject) -> bool:
    return alloc.get("ClientStatus") in TERMINAL_CLIENT_STATUSES


def task_states(alloc: JsonObject) -> dict[str, JsonObject]:
    states = alloc.get("TaskStates") or {}
    return {name: state for name, state in states.items() if isinstance(state, dict)}


def task_started(state: JsonObject) -> bool:
    """Nomad serves a task's logs only once it has started; `StartedAt` says so, or a `Started` event."""
    started_at = state.get("StartedAt")
    if started_at and started_at != NEVER:
        return True
    return any(event.get("Type") == "Started" for event in _events(state))


def task_over(alloc: JsonObject, state: JsonObject) -> bool:
    return state.get("State") == "dead" or is_terminal(alloc)


def newest_per_name(allocs: Iterable[JsonObject]) -> list[JsonObject]:
    newest: dict[str, JsonObject] = {}
    for alloc in allocs:
        name = str(alloc.get("Name") or alloc.get("ID"))
        kept = newest.get(name)
        if kept is None or int(alloc.get("CreateIndex") or 0) > int(kept.get("CreateIndex") or 0):
            newest[name] = alloc
    return sorted(newest.values(), key=lambda a: (int(a.get("CreateIndex") or 0), str(a.get("ID"))))


def in_start_order(allocs: Iterable[JsonObject]) -> list[JsonObject]:
    return sorted(allocs, key=lambda a: (int(a.get("CreateIndex") or 0), str(a.get("ID"))))


def _events(state: JsonObject) -> list[JsonObject]:
    return [event for event in state.get("Events") or [] if isinstance(event, dict)]


def task_exit(state: JsonObject) -> ExitStatus:
    """The last `Terminated` event's exit code and signal (0 meaning none, as Nomad writes them)."""
    for event in reversed(_events(state)):
        if event.get("Type") == "Terminated":
            code = _int(event.get("ExitCode"))
            sig = _int(event.get("Signal"))
            if sig:
                return ExitStatus(exit_code=code if code else None, signal=sig)
            return ExitStatus(exit_code=code)
    return ExitStatus()


def _int(value: Any) -> int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    return None


def task_failure_message(state: JsonObject) -> str:
    """Nomad's own words for why a task failed, from the newest event that says anything."""
    for event in reversed(_events(state)):
        if event.get("FailsTask") or event.get("Type") in {
            "Driver Failure",
            "Setup Failure",
            "Failed Validation",
        }:
            for field in FAILURE_EVENT_FIELDS:
                if event.get(field):
                    return f"{event.get('Type')}: {event[field]}"
            return str(event.get("Type"))
    for event in reversed(_events(state)):
        if event.get("DisplayMessage"):
            return str(event["DisplayMessage"])
    return "no reason given"


def _failed_task(alloc: JsonObject) -> Verdict:
    where = f"allocation {short(str(alloc.get('ID')))}"
    for name, state in sorted(task_states(alloc).items()):
        if not state.get("Failed"):
            continue
        status = task_exit(state)
        if status.signal is not None:
            reason = f"task {name} ({where}) was killed by signal {signal_name(status.signal)}"
        elif status.exit_code not in (None, 0):
            reason = f"task {name} ({where}) exited with code {status.exit_code}"
        else:
            reason = f"task {name} ({where}) failed: {task_failure_message(state)}"
        return Verdict("failed", status, reason)
    description = alloc.get("ClientDescription") or "no reason given"
    return Verdict("failed", ExitStatus(), f"{where} failed: {description}")


def _main_exit(alloc: JsonObject) -> ExitStatus:
    states = task_states(alloc)
    for _, state in sorted(states.items()):
        status = task_exit(state)
        if status.exit_code or status.signal:
            return status
    return ExitStatus(exit_code=0)


def judge(job_id: str, allocs: list[JsonObject], job: JsonObject | None, stopped_by_us: bool) -> Verdict:
    """The run's end from the job's final allocations: a failure names its task and exit code, a lost
    allocation makes a lost run, and a job stopped by someone other than batchyard a stopped one."""
    if job is None and not stopped_by_us:
        return Verdict("lost", ExitStatus(), f"the Nomad job {job_id} disappeared (purged outside batchyard)")
    final = newest_per_name(allocs)
    failed = [alloc for alloc in final if alloc.get("ClientStatus") == "failed"]
    if failed:
        return _failed_task(failed[0])
    lost = [alloc for alloc in final if alloc.get("ClientStatus") == "lost"]
    if lost:
        alloc = lost[0]
        description = alloc.get("ClientDescription") or "its node stopped answering"
        return Verdict(
            "lost", ExitStatus(), f"allocation {short(str(alloc.get('ID')))} was lost: {description}"
        )
    if job is not None and job.get("Stop") and not stopped_by_us:
        status = _main_exit(final[0]) if final else ExitStatus()
        return Verdict(
            "stopped", status, f"the Nomad job {job_id} was stopped outside batchyard", stopped_by="nomad"
        )
    if not final:
        description = (job or {}).get("StatusDescription") or "no allocation was placed"
        return Verdict("failed", ExitStatus(), f"Nomad ended job {job_id} without running it: {description}")
    status = _main_exit(final[0])
    for alloc in final[1:]:
        other = _main_exit(alloc)
        if other.exit_code or other.signal:
            status = other
    if status.exit_code or status.signal:
        return Verdict("failed", status, f"job {job_id} ended with exit code {status.exit_code}")
    return Verdict("succeeded", ExitStatus(exit_code=0), "every task of the job exited with code 0")
