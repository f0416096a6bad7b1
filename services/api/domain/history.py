"""A job's configuration history: who changed what and when, computed by folding its stream.

Events carry the whole new spec (and `changed` names top-level fields), so before/after values come from
folding: each event is compared with the state just before it. Dict-valued fields (`params`,
`dimensions`) are compared leaf by leaf, so a history line says `params.db.host: a → b` rather than
repeating the whole params object. A secret is one leaf and is always shown as `***` — a changed secret
still shows up as a change (its ciphertext changed), never its value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from contracts.envelope import RecordedEvent
from contracts.events import JobPaused
from contracts.specs import JobSpec
from services.api.domain.jobs import JobState, evolve
from shared.secrets import MASK, is_secret

_LEAF_FIELDS = ("params", "dimensions")


@dataclass(frozen=True)
class Change:
    field: str
    before: Any
    after: Any


@dataclass(frozen=True)
class HistoryEntry:
    event: RecordedEvent
    changes: list[Change]
    reason: str | None


def _mask(value: Any) -> Any:
    if is_secret(value):
        return MASK
    if isinstance(value, Mapping):
        return {key: _mask(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_mask(item) for item in value]
    return value


def _leaves(value: Any, prefix: str) -> dict[str, Any]:
    """Dotted path → value; secrets, lists, scalars and empty objects are leaves."""
    if isinstance(value, Mapping) and value and not is_secret(value):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_leaves(item, f"{prefix}.{key}"))
        return flat
    return {prefix: value}


def _spec_fields(spec: JobSpec | None) -> dict[str, Any]:
    """The spec as dotted leaves; before creation, every field at its default, so a job's first entry
    names only what its creator chose (not, say, the default overlap and retry policies)."""
    if spec is None:
        defaults = {
            name: field.get_default(call_default_factory=True)
            for name, field in JobSpec.model_fields.items()
            if not field.is_required()
        }
        dumped = JobSpec.model_validate({"name": "x", "execution": "x", **defaults}).model_dump(mode="json")
        return {
            path: value
            for path, value in _flatten(dumped).items()
            if path.partition(".")[0] not in ("name", "execution")
        }
    return _flatten(spec.model_dump(mode="json"))


def _flatten(dumped: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name in JobSpec.model_fields:
        if name in _LEAF_FIELDS:
            for path, value in _leaves(dumped[name], name).items():
                if path != name or value != {}:
                    flat[path] = value
        else:
            flat[name] = dumped[name]
    return flat


def diff_specs(before: JobSpec | None, after: JobSpec | None) -> list[Change]:
    old, new = _spec_fields(before), _spec_fields(after)
    return [
        Change(path, _mask(old.get(path)), _mask(new.get(path)))
        for path in sorted(set(old) | set(new))
        if old.get(path) != new.get(path)
    ]


def job_history(job_id: Any, events: Sequence[RecordedEvent]) -> list[HistoryEntry]:
    state = JobState(job_id)
    entries: list[HistoryEntry] = []
    for recorded in events:
        payload = recorded.payload()
        after = evolve(state, payload)
        changes = [] if after.deleted and not state.deleted else diff_specs(state.spec, after.spec)
        reason = payload.reason if isinstance(payload, JobPaused) else None
        entries.append(HistoryEntry(recorded, changes, reason))
        state = after
    return entries
