"""The contracts: the rules every event follows, and the generated schema files kept in step with them."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pydantic
import pytest

from contracts import generate
from contracts.base import EVENT_TYPES, Event
from contracts.envelope import CloudEvent, RecordedEvent
from contracts.events import JobPaused, RunRequested

IRREGULAR_PAST_PARTICIPLES = {"Lost", "Sent", "Built", "Begun", "Done", "Held", "Kept", "Made", "Shut"}


def _files_under(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): path.read_text(encoding="utf-8")
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_committed_schema_and_asyncapi_files_are_up_to_date(tmp_path: Path) -> None:
    generate.main(["--out", str(tmp_path)])
    fresh = _files_under(tmp_path)
    committed = {
        name: text
        for name, text in _files_under(generate.CONTRACTS_DIR).items()
        if name.startswith(f"{generate.SCHEMA_DIR_NAME}/") or name == generate.ASYNCAPI_NAME
    }
    stale = sorted(name for name in fresh.keys() | committed.keys() if fresh.get(name) != committed.get(name))
    assert not stale, f"generated contracts are stale ({', '.join(stale)}): run make contracts"


def test_generation_is_deterministic() -> None:
    assert generate.generated_files() == generate.generated_files()


def test_every_event_and_command_has_a_schema_file_and_every_event_a_channel() -> None:
    files = generate.generated_files()
    document = generate.asyncapi()
    for name, cls in EVENT_TYPES.items():
        assert generate.event_schema_path(name) in files
        channel = document["channels"][f"event-{name}"]
        assert channel["address"] == f"{{prefix}}.events.{cls.stream_type}.{name}"
        assert channel["parameters"]["prefix"]["default"] == "batchyard"
    for command in generate.command_classes():
        assert generate.command_schema_path(command.__name__) in files
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert {"{prefix}.logs.{run}", "{prefix}.render.preview"} <= addresses


def test_asyncapi_message_payloads_reference_existing_schema_files() -> None:
    files = generate.generated_files()
    for message in generate.asyncapi()["components"]["messages"].values():
        ref = message["payload"].get("$ref")
        if ref is not None:
            assert ref.removeprefix("./") in files


def test_event_schema_pins_type_and_schema_version_inside_the_cloudevents_envelope() -> None:
    schema = generate.event_schema(RunRequested)
    properties = schema["properties"]
    assert properties["type"]["const"] == "RunRequested"
    assert properties["schemaversion"]["const"] == RunRequested.schema_version
    assert properties["specversion"]["const"] == "1.0"
    assert properties["data"] == {"$ref": "#/$defs/RunRequested"}
    assert {"id", "source", "type", "subject", "time"} <= set(schema["required"])
    assert schema["$defs"]["RunRequested"]["x-schema-version"] == RunRequested.schema_version


def test_yaml_emitter_round_trips_through_a_yaml_parser() -> None:
    yaml = pytest.importorskip("yaml")
    document = generate.asyncapi()
    assert yaml.safe_load(generate.render_yaml(document)) == document


@pytest.mark.parametrize(
    "event", [EVENT_TYPES[name] for name in sorted(EVENT_TYPES)], ids=sorted(EVENT_TYPES)
)
def test_every_event_is_frozen_strict_versioned_and_named_in_the_past_tense(event: type[Event]) -> None:
    assert event.model_config.get("frozen") is True
    assert event.model_config.get("extra") == "forbid"
    assert isinstance(event.schema_version, int) and event.schema_version >= 1
    words = re.findall(r"[A-Z][a-z]*", event.__name__)
    assert any(w.endswith("ed") or w in IRREGULAR_PAST_PARTICIPLES for w in words[1:]), event.__name__


def test_an_event_refuses_unknown_fields_and_mutation() -> None:
    job = uuid.uuid4()
    with pytest.raises(pydantic.ValidationError):
        JobPaused.model_validate({"job_id": str(job), "reason": None, "typo": 1})
    paused = JobPaused(job_id=job)
    with pytest.raises(pydantic.ValidationError):
        paused.reason = "changed"  # type: ignore[misc]


def test_cloudevent_round_trips_a_recorded_event_through_json() -> None:
    job = uuid.uuid4()
    recorded = RecordedEvent(
        id=uuid.uuid4(),
        stream_id=f"job-{job}",
        stream_version=3,
        position=42,
        type="JobPaused",
        schema_version=1,
        time=datetime(2026, 11, 23, 18, 0, tzinfo=UTC),
        actor="alice",
        correlation_id="req-1",
        causation_id="cause-1",
        data={"job_id": str(job), "reason": "maintenance"},
    )
    wire = CloudEvent.from_recorded(recorded, "batchyard/test", prev_position=40).model_dump_json()
    envelope = CloudEvent.model_validate_json(wire)
    assert envelope.specversion == "1.0" and envelope.prevposition == 40
    assert envelope.to_recorded() == recorded
    assert envelope.to_recorded().payload() == JobPaused(job_id=job, reason="maintenance")
