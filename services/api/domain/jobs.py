"""A job's life: created, updated, paused, resumed, deleted; and what a manual run snapshots of it.

Pausing and `enabled` are one flag: a paused job is a job whose spec says `enabled: false`, so a
scheduler, a PATCH and the pause endpoint can never disagree about whether the job runs on its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from contracts.base import Event, JsonObject
from contracts.commands import JobPatch
from contracts.events import JobCreated, JobDeleted, JobPaused, JobResumed, JobUpdated, RunRequested
from contracts.specs import JobSpec
from services.api.domain.errors import InvalidTransition, NotForNomad, NotFound, UnknownReferences
from shared.domain.nomad_schedule import native_schedule_problems


@dataclass(frozen=True)
class JobState:
    job_id: uuid.UUID
    version: int = 0
    spec: JobSpec | None = None
    deleted: bool = False

    @property
    def exists(self) -> bool:
        return self.spec is not None and not self.deleted


def fold_job(job_id: uuid.UUID, events: Sequence[Event]) -> JobState:
    state = JobState(job_id)
    for event in events:
        state = evolve(state, event)
    return state


def evolve(state: JobState, event: Event) -> JobState:
    version = state.version + 1
    match event:
        case JobCreated(spec=spec) | JobUpdated(spec=spec):
            return JobState(state.job_id, version, spec)
        case JobPaused():
            assert state.spec is not None
            return JobState(state.job_id, version, state.spec.model_copy(update={"enabled": False}))
        case JobResumed():
            assert state.spec is not None
            return JobState(state.job_id, version, state.spec.model_copy(update={"enabled": True}))
        case JobDeleted():
            return JobState(state.job_id, version, state.spec, deleted=True)
    return JobState(state.job_id, version, state.spec, state.deleted)


@dataclass(frozen=True)
class Catalog:
    """The definitions a job may refer to: execution names, and each dimension's value names; `drivers`
    maps execution names to their driver where known (a schedule is handed to Nomad only for `nomad`)."""

    executions: frozenset[str] = frozenset()
    dimensions: Mapping[str, frozenset[str]] = field(default_factory=dict)
    drivers: Mapping[str, str] = field(default_factory=dict)


def unknown_references(spec: JobSpec, catalog: Catalog) -> list[str]:
    return unknown_definitions(spec.execution, spec.dimensions, catalog)


def unknown_definitions(execution: str, dimensions: Mapping[str, str], catalog: Catalog) -> list[str]:
    """What a job or a one-off run names that is not defined: its execution, dimensions, values."""
    unknown: list[str] = []
    if execution not in catalog.executions:
        unknown.append(f"execution {execution!r}")
    for dimension, value in sorted(dimensions.items()):
        if dimension not in catalog.dimensions:
            unknown.append(f"dimension {dimension!r}")
        elif value not in catalog.dimensions[dimension]:
            unknown.append(f"value {value!r} of dimension {dimension!r}")
    return unknown


def _require_references(spec: JobSpec, catalog: Catalog) -> None:
    unknown = unknown_references(spec, catalog)
    if unknown:
        raise UnknownReferences("the job refers to undefined " + ", ".join(unknown), unknown=unknown)


# What a schedule handed to Nomad depends on: a change to any of these is checked again.
NATIVE_SCHEDULE_INPUTS = frozenset({"schedule", "overlap", "execution"})


def _require_schedule_fits_nomad(spec: JobSpec, catalog: Catalog) -> None:
    problems = native_schedule_problems(spec, catalog.drivers.get(spec.execution))
    if problems:
        errors = [{"field": f"body.{name}", "reason": reason} for name, reason in problems]
        detail = "; ".join(f"{e['field']}: {e['reason']}" for e in errors)
        raise NotForNomad(detail, errors=errors)


def _require_live(state: JobState) -> JobSpec:
    if state.spec is None:
        raise NotFound(f"no job {state.job_id}")
    if state.deleted:
        raise InvalidTransition(f"job {state.job_id} is deleted")
    return state.spec


def decide_create(job_id: uuid.UUID, spec: JobSpec, catalog: Catalog) -> list[Event]:
    _require_references(spec, catalog)
    _require_schedule_fits_nomad(spec, catalog)
    return [JobCreated(job_id=job_id, spec=spec)]


def decide_update(state: JobState, patch: JobPatch, catalog: Catalog) -> list[Event]:
    """Apply the fields present in the patch; an explicit null clears an optional field (schedule)."""
    current = _require_live(state)
    merged = current.model_dump() | {name: getattr(patch, name) for name in patch.model_fields_set}
    spec = JobSpec.model_validate(merged)
    changed = [name for name in JobSpec.model_fields if getattr(spec, name) != getattr(current, name)]
    if not changed:
        return []
    if {"execution", "dimensions"} & set(changed):
        _require_references(spec, catalog)
    if NATIVE_SCHEDULE_INPUTS & set(changed):
        _require_schedule_fits_nomad(spec, catalog)
    return [JobUpdated(job_id=state.job_id, spec=spec, changed=changed)]


def decide_pause(state: JobState, reason: str | None) -> list[Event]:
    spec = _require_live(state)
    if not spec.enabled:
        raise InvalidTransition(f"job {state.job_id} is already paused")
    return [JobPaused(job_id=state.job_id, reason=reason)]


def decide_resume(state: JobState) -> list[Event]:
    spec = _require_live(state)
    if spec.enabled:
        raise InvalidTransition(f"job {state.job_id} is not paused")
    return [JobResumed(job_id=state.job_id)]


def decide_delete(state: JobState) -> list[Event]:
    _require_live(state)
    return [JobDeleted(job_id=state.job_id)]


def decide_request_run(state: JobState, run_id: uuid.UUID, overrides: JsonObject) -> list[Event]:
    """A manual run is allowed on a paused job: pausing stops scheduling, not the operator."""
    spec = _require_live(state)
    return [
        RunRequested(
            run_id=run_id,
            job_id=state.job_id,
            job_version=state.version,
            execution=spec.execution,
            dimensions=spec.dimensions,
            params=spec.params,
            overrides=overrides,
            trigger="manual",
        )
    ]
