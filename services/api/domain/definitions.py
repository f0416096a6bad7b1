"""Executions and dimensions: defining, redefining and removing them, one by one or as a state file.

A state file is the whole desired set: definitions it leaves out are removed. Removing something jobs
still use (an execution, a dimension, or one value of a dimension) is refused unless forced, because
those jobs would no longer render.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from contracts import streams
from contracts.base import Event
from contracts.commands import StateFile
from contracts.events import (
    DimensionDefined,
    DimensionRedefined,
    DimensionRemoved,
    ExecutionDefined,
    ExecutionRedefined,
    ExecutionRemoved,
    StateLoaded,
)
from contracts.events.definitions import StateChanges
from contracts.specs import DimensionSpec, ExecutionSpec
from services.api.domain.errors import InUse, NotFound

SpecT = TypeVar("SpecT", ExecutionSpec, DimensionSpec)


@dataclass(frozen=True)
class Definition(Generic[SpecT]):
    """The current state of one execution or dimension stream; `spec` is None when absent or removed."""

    name: str
    version: int = 0
    spec: SpecT | None = None


def fold_execution(name: str, events: Sequence[Event]) -> Definition[ExecutionSpec]:
    spec: ExecutionSpec | None = None
    for event in events:
        if isinstance(event, ExecutionDefined | ExecutionRedefined):
            spec = event.spec
        elif isinstance(event, ExecutionRemoved):
            spec = None
    return Definition(name, len(events), spec)


def fold_dimension(name: str, events: Sequence[Event]) -> Definition[DimensionSpec]:
    spec: DimensionSpec | None = None
    for event in events:
        if isinstance(event, DimensionDefined | DimensionRedefined):
            spec = event.spec
        elif isinstance(event, DimensionRemoved):
            spec = None
    return Definition(name, len(events), spec)


@dataclass(frozen=True)
class JobRef:
    """What the usage checks need to know about a live job."""

    id: uuid.UUID
    execution: str
    dimensions: Mapping[str, str]


def changed_fields(old: ExecutionSpec | DimensionSpec, new: ExecutionSpec | DimensionSpec) -> list[str]:
    return [name for name in type(new).model_fields if getattr(old, name) != getattr(new, name)]


def execution_users(name: str, jobs: Sequence[JobRef]) -> list[uuid.UUID]:
    return sorted(job.id for job in jobs if job.execution == name)


def dimension_users(name: str, spec: DimensionSpec | None, jobs: Sequence[JobRef]) -> list[uuid.UUID]:
    """Jobs that would lose their value if dimension `name` became `spec` (None: removed)."""
    kept = set(spec.values) if spec is not None else set()
    return sorted(job.id for job in jobs if name in job.dimensions and job.dimensions[name] not in kept)


def _refuse_if_used(kind: str, name: str, users: list[uuid.UUID]) -> None:
    if users:
        raise InUse(
            f"{kind} {name!r} is used by {len(users)} job(s); pass force=true to remove it anyway",
            jobs=[str(u) for u in users],
        )


def decide_define_execution(current: Definition[ExecutionSpec], spec: ExecutionSpec) -> list[Event]:
    if current.spec is None:
        return [ExecutionDefined(name=current.name, spec=spec)]
    changed = changed_fields(current.spec, spec)
    return [ExecutionRedefined(name=current.name, spec=spec, changed=changed)] if changed else []


def decide_remove_execution(
    current: Definition[ExecutionSpec], jobs: Sequence[JobRef], *, force: bool
) -> list[Event]:
    if current.spec is None:
        raise NotFound(f"no execution {current.name!r}")
    if not force:
        _refuse_if_used("execution", current.name, execution_users(current.name, jobs))
    return [ExecutionRemoved(name=current.name)]


def decide_define_dimension(
    current: Definition[DimensionSpec], spec: DimensionSpec, jobs: Sequence[JobRef], *, force: bool
) -> list[Event]:
    if current.spec is None:
        return [DimensionDefined(name=current.name, spec=spec)]
    changed = changed_fields(current.spec, spec)
    if not changed:
        return []
    if not force:
        _refuse_if_used("a value of dimension", current.name, dimension_users(current.name, spec, jobs))
    return [DimensionRedefined(name=current.name, spec=spec, changed=changed)]


def decide_remove_dimension(
    current: Definition[DimensionSpec], jobs: Sequence[JobRef], *, force: bool
) -> list[Event]:
    if current.spec is None:
        raise NotFound(f"no dimension {current.name!r}")
    if not force:
        _refuse_if_used("dimension", current.name, dimension_users(current.name, None, jobs))
    return [DimensionRemoved(name=current.name)]


def replaced_kinds(state: StateFile) -> frozenset[str]:
    """The kinds a state file replaces: those its body carries, even empty. striv's rule: a kind left
    out of the body is left as it is, so a file holding only executions never removes a dimension."""
    return frozenset(kind for kind in ("executions", "dimensions") if kind in state.model_fields_set)


def state_digest(state: StateFile) -> str:
    """Over the kinds present only, so `{"executions": {}}` and `{}` (which change different things)
    differ, and the same file always digests the same."""
    dumped = state.model_dump(mode="json")
    present = {kind: dumped[kind] for kind in sorted(replaced_kinds(state))}
    canonical = json.dumps(present, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class StreamAppend:
    """Events for one definition stream, appended at the version the plan was made against."""

    stream_id: str
    expected_version: int
    events: list[Event]


@dataclass(frozen=True)
class StatePlan:
    digest: str
    executions: StateChanges
    dimensions: StateChanges
    appends: list[StreamAppend] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.appends

    def loaded_event(self) -> StateLoaded:
        return StateLoaded(digest=self.digest, executions=self.executions, dimensions=self.dimensions)


def plan_state(
    desired: StateFile,
    executions: Mapping[str, Definition[ExecutionSpec]],
    dimensions: Mapping[str, Definition[DimensionSpec]],
    jobs: Sequence[JobRef],
    *,
    force: bool,
) -> StatePlan:
    """Diff a state file against the current definitions (keyed by name; absent ones have spec None).

    Only the kinds the file carries are diffed (see `replaced_kinds`). Every removal that would strand
    a job is collected before refusing, so the answer lists all of them.
    """
    exec_changes = StateChanges()
    dim_changes = StateChanges()
    appends: list[StreamAppend] = []
    blocked: dict[str, list[str]] = {}
    kinds = replaced_kinds(desired)
    exec_names = set(executions) | set(desired.executions) if "executions" in kinds else set()
    dim_names = set(dimensions) | set(desired.dimensions) if "dimensions" in kinds else set()

    for name in sorted(exec_names):
        current = executions.get(name, Definition[ExecutionSpec](name))
        wanted = desired.executions.get(name)
        if wanted is not None:
            events = decide_define_execution(current, wanted)
        elif current.spec is not None:
            users = execution_users(name, jobs)
            if users and not force:
                blocked[f"execution {name}"] = [str(u) for u in users]
            events = [ExecutionRemoved(name=name)]
        else:
            events = []
        _record(exec_changes, name, events)
        if events:
            appends.append(StreamAppend(streams.stream_id(streams.EXECUTION, name), current.version, events))

    for name in sorted(dim_names):
        current_dim = dimensions.get(name, Definition[DimensionSpec](name))
        wanted_dim = desired.dimensions.get(name)
        if current_dim.spec is None and wanted_dim is None:
            continue
        users = dimension_users(name, wanted_dim, jobs) if current_dim.spec is not None else []
        if wanted_dim is not None:
            events = decide_define_dimension(current_dim, wanted_dim, jobs, force=True)
        else:
            events = [DimensionRemoved(name=name)]
        if events and users and not force:
            blocked[f"dimension {name}"] = [str(u) for u in users]
        _record(dim_changes, name, events)
        if events:
            appends.append(
                StreamAppend(streams.stream_id(streams.DIMENSION, name), current_dim.version, events)
            )

    if blocked:
        jobs_in_use = sorted({job for ids in blocked.values() for job in ids})
        raise InUse(
            "the state would remove definitions jobs still use ("
            + "; ".join(sorted(blocked))
            + "); pass force=true to apply it anyway",
            jobs=jobs_in_use,
            blocked=blocked,
        )
    return StatePlan(state_digest(desired), exec_changes, dim_changes, appends)


def _record(changes: StateChanges, name: str, events: list[Event]) -> None:
    for event in events:
        if isinstance(event, ExecutionDefined | DimensionDefined):
            changes.added.append(name)
        elif isinstance(event, ExecutionRedefined | DimensionRedefined):
            changes.changed.append(name)
        elif isinstance(event, ExecutionRemoved | DimensionRemoved):
            changes.removed.append(name)
