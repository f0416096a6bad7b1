"""The renderer service against real NATS and PostgreSQL: requested runs in, one outcome out."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from nats.js import JetStreamContext

from contracts.envelope import CloudEvent, EventMeta, RecordedEvent
from contracts.events import (
    DimensionDefined,
    ExecutionDefined,
    ExecutionRedefined,
    ExecutionRemoved,
    RunRequested,
)
from contracts.preview import (
    PreviewFailed,
    PreviewRendered,
    PreviewReply,
    PreviewRequest,
    parse_preview_reply,
)
from contracts.specs import DimensionSpec, DimensionValue, ExecutionSpec
from contracts.subjects import events_stream_name, events_subject, render_preview_subject
from services.renderer.secrets import WithoutSecretKey
from services.renderer.service import DURABLE, RunRenderer, start
from shared.eventstore import NO_STREAM, EventStore
from shared.service import Runtime, open_runtime
from shared.settings import Settings

ADMIN = EventMeta(actor="admin", correlation_id="setup")
HELLO_TEMPLATE = """{
  command: ['echo', params.greeting + ', ' + params.audience],
  env: {DB_HOST: params.db.host},
  timeout_s: params.timeout,
}"""
HELLO = ExecutionSpec(
    driver="local",
    payload_template=HELLO_TEMPLATE,
    default_params={"greeting": "hello", "audience": "world", "db": {"host": "localhost"}, "timeout": 30},
    required_params=["audience"],
)
CUSTOMER = DimensionSpec(
    priority=1,
    values={"acme": DimensionValue(params={"audience": "Acme", "db.host": "db.acme"})},
)
ENV = DimensionSpec(priority=10, values={"prod": DimensionValue(params={"db.host": "db.prod"})})


async def define_execution(store: EventStore, name: str, spec: ExecutionSpec) -> RecordedEvent:
    [recorded] = await store.append(
        f"execution-{name}", [ExecutionDefined(name=name, spec=spec)], expected_version=NO_STREAM, meta=ADMIN
    )
    return recorded


async def define_dimension(store: EventStore, name: str, spec: DimensionSpec) -> None:
    await store.append(
        f"dimension-{name}", [DimensionDefined(name=name, spec=spec)], expected_version=NO_STREAM, meta=ADMIN
    )


async def request_run(store: EventStore, execution: str, **fields: Any) -> RecordedEvent:
    run_id = uuid.uuid4()
    [recorded] = await store.append(
        f"run-{run_id}",
        [RunRequested(run_id=run_id, execution=execution, **fields)],
        expected_version=NO_STREAM,
        meta=EventMeta(actor="alice", correlation_id=f"req-{run_id}"),
    )
    return recorded


async def run_stream_once_settled(store: EventStore, requested: RecordedEvent) -> list[RecordedEvent]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        events = await store.read_stream(requested.stream_id)
        if len(events) >= 2:
            return events
        await asyncio.sleep(0.02)
    raise AssertionError(f"no outcome for {requested.stream_id} within 10 s")


@pytest.fixture
async def renderer(settings: Settings) -> AsyncIterator[Runtime]:
    async with open_runtime(settings, "renderer") as runtime:
        shutdown = await start(runtime)
        yield runtime
        await shutdown()


async def preview(runtime: Runtime, request: PreviewRequest) -> PreviewReply:
    subject = render_preview_subject(runtime.settings.bus_prefix)
    client = await nats.connect(runtime.settings.nats_url)
    try:
        reply = await client.request(subject, request.model_dump_json().encode(), timeout=5)
    finally:
        await client.close()
    return parse_preview_reply(reply.data)


async def test_a_requested_run_is_rendered_with_every_layer_merged(
    renderer: Runtime, store: EventStore
) -> None:
    await define_execution(store, "hello", HELLO)
    await define_dimension(store, "customer", CUSTOMER)
    await define_dimension(store, "env", ENV)
    job_id = uuid.uuid4()
    requested = await request_run(
        store,
        "hello",
        job_id=job_id,
        dimensions={"customer": "acme", "env": "prod"},
        params={"greeting": "hi"},
        overrides={"timeout": 5},
    )

    events = await run_stream_once_settled(store, requested)

    assert [e.type for e in events] == ["RunRequested", "RunRendered"]
    rendered = events[1]
    assert rendered.data["driver"] == "local" and rendered.data["execution_version"] == 1
    assert rendered.data["payload"] == {
        "command": ["echo", "hi, Acme"],
        "env": {"DB_HOST": "db.prod"},
        "cwd": None,
        "timeout_s": 5,
        "stop_grace_s": 10.0,
        "state": False,
    }
    assert rendered.actor == "renderer"
    assert rendered.causation_id == str(requested.id)
    assert rendered.correlation_id == requested.correlation_id


async def test_a_run_renders_with_the_latest_definition_and_records_its_version(
    renderer: Runtime, store: EventStore
) -> None:
    await define_execution(store, "hello", HELLO)
    newer = HELLO.model_copy(update={"default_params": {**HELLO.default_params, "greeting": "howdy"}})
    await store.append(
        "execution-hello",
        [ExecutionRedefined(name="hello", spec=newer, changed=["default_params"])],
        expected_version=1,
        meta=ADMIN,
    )
    events = await run_stream_once_settled(store, await request_run(store, "hello"))
    assert events[1].data["payload"]["command"] == ["echo", "howdy, world"]
    assert events[1].data["execution_version"] == 2


async def test_a_template_error_is_rejected_with_line_and_column(
    renderer: Runtime, store: EventStore
) -> None:
    broken = HELLO.model_copy(update={"payload_template": "{\n  command: params.nope,\n}"})
    await define_execution(store, "broken", broken)
    events = await run_stream_once_settled(store, await request_run(store, "broken"))
    rejected = events[1]
    assert rejected.type == "RunRejected"
    assert (rejected.data["line"], rejected.data["column"]) == (2, 12)
    assert rejected.data["reason"].lower() == (
        "template of execution 'broken' at line 2, column 12: field does not exist: nope"
    )


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"execution": "nowhere"}, "unknown execution 'nowhere'"),
        ({"execution": "hello", "dimensions": {"planet": "mars"}}, "unknown dimension 'planet'"),
        (
            {"execution": "hello", "dimensions": {"customer": "globex"}},
            "dimension 'customer' has no value 'globex'",
        ),
    ],
)
async def test_a_missing_definition_is_rejected_naming_it(
    renderer: Runtime, store: EventStore, fields: dict[str, Any], reason: str
) -> None:
    await define_execution(store, "hello", HELLO)
    await define_dimension(store, "customer", CUSTOMER)
    events = await run_stream_once_settled(store, await request_run(store, **fields))
    assert events[1].type == "RunRejected"
    assert events[1].data["reason"] == reason


async def test_a_removed_execution_is_unknown(renderer: Runtime, store: EventStore) -> None:
    await define_execution(store, "hello", HELLO)
    await store.append("execution-hello", [ExecutionRemoved(name="hello")], expected_version=1, meta=ADMIN)
    events = await run_stream_once_settled(store, await request_run(store, "hello"))
    assert events[1].data["reason"] == "unknown execution 'hello'"


async def test_a_missing_required_param_is_rejected_naming_the_param_and_the_job(
    renderer: Runtime, store: EventStore
) -> None:
    spec = HELLO.model_copy(update={"required_params": ["db.password"]})
    await define_execution(store, "hello", spec)
    job_id = uuid.uuid4()
    events = await run_stream_once_settled(store, await request_run(store, "hello", job_id=job_id))
    assert events[1].data["reason"] == f"required param 'db.password' missing for job {job_id}"


async def test_an_invalid_payload_is_rejected_naming_the_field(renderer: Runtime, store: EventStore) -> None:
    await define_execution(
        store, "sloppy", HELLO.model_copy(update={"payload_template": "{command: 'true', cmd: 1}"})
    )
    events = await run_stream_once_settled(store, await request_run(store, "sloppy"))
    assert events[1].type == "RunRejected"
    assert events[1].data["reason"] == (
        "execution 'sloppy' rendered an invalid local payload field 'cmd': unknown field, not allowed"
    )


async def test_a_run_with_a_secret_is_rejected_when_no_key_is_configured(
    renderer: Runtime, store: EventStore
) -> None:
    secret = {"type": "secret", "encrypted": "Y2lwaGVydGV4dA=="}
    await define_execution(store, "hello", HELLO)
    events = await run_stream_once_settled(
        store, await request_run(store, "hello", params={"db.host": secret})
    )
    assert events[1].type == "RunRejected"
    assert events[1].data["reason"] == (
        "no secret key configured: set BATCHYARD_SECRET_KEY_FILE (secret at db.host)"
    )


async def test_a_request_delivered_twice_is_rendered_exactly_once(
    renderer: Runtime, store: EventStore, js: JetStreamContext
) -> None:
    await define_execution(store, "hello", HELLO)
    requested = await request_run(store, "hello")
    await run_stream_once_settled(store, requested)

    prefix = renderer.settings.bus_prefix
    duplicate = CloudEvent.from_recorded(requested, source="test", prev_position=0)
    ack = await js.publish(
        events_subject(prefix, "run", "RunRequested"),
        duplicate.model_dump_json().encode(),
        headers={"Nats-Msg-Id": f"redelivery-{requested.id}"},
    )
    deadline = time.monotonic() + 10
    while (await js.consumer_info(events_stream_name(prefix), DURABLE)).ack_floor.stream_seq < ack.seq:
        assert time.monotonic() < deadline, "the duplicate was never acknowledged"
        await asyncio.sleep(0.02)

    assert [e.type for e in await store.read_stream(requested.stream_id)] == ["RunRequested", "RunRendered"]


async def test_replicas_handling_the_same_request_at_once_record_one_outcome(store: EventStore) -> None:
    await define_execution(store, "hello", HELLO)
    requested = await request_run(store, "hello")
    replicas = [RunRenderer(EventStore(store.pool), WithoutSecretKey()) for _ in range(5)]
    try:
        await asyncio.gather(*(replica.handle(requested) for replica in replicas))
    finally:
        for replica in replicas:
            await replica.store.close()
    assert [e.type for e in await store.read_stream(requested.stream_id)] == ["RunRequested", "RunRendered"]


async def test_preview_returns_payload_merged_params_and_where_each_came_from(
    renderer: Runtime, store: EventStore
) -> None:
    await define_execution(store, "hello", HELLO)
    await define_dimension(store, "customer", CUSTOMER)
    await define_dimension(store, "env", ENV)

    reply = await preview(
        renderer,
        PreviewRequest(
            execution="hello",
            dimensions={"customer": "acme", "env": "prod"},
            params={"greeting": "hi"},
            overrides={"timeout": 5},
        ),
    )

    assert isinstance(reply, PreviewRendered)
    assert reply.driver == "local" and reply.execution_version == 1
    assert reply.payload["command"] == ["echo", "hi, Acme"]
    assert reply.params == {"greeting": "hi", "audience": "Acme", "db": {"host": "db.prod"}, "timeout": 5}
    assert reply.provenance == {
        "audience": "dimension:customer=acme",
        "db.host": "dimension:env=prod",
        "greeting": "job",
        "timeout": "run",
    }


async def test_preview_of_a_secret_without_a_key_fails_naming_the_setting(
    renderer: Runtime, store: EventStore
) -> None:
    await define_execution(store, "hello", HELLO)
    secret = {"type": "secret", "encrypted": "Y2lwaGVydGV4dA=="}
    reply = await preview(renderer, PreviewRequest(execution="hello", params={"db": {"host": secret}}))
    assert isinstance(reply, PreviewFailed)
    assert reply.error.kind == "params" and reply.error.field == "params.db.host"
    assert "no secret key configured: set BATCHYARD_SECRET_KEY_FILE" in reply.error.reason
    assert "Y2lwaGVydGV4dA" not in reply.model_dump_json()


async def test_preview_of_a_broken_template_answers_the_error_with_its_position(
    renderer: Runtime, store: EventStore
) -> None:
    await define_execution(
        store, "broken", HELLO.model_copy(update={"payload_template": "{\n command: nope }"})
    )
    reply = await preview(renderer, PreviewRequest(execution="broken"))
    assert isinstance(reply, PreviewFailed)
    assert reply.error.kind == "template"
    assert (reply.error.line, reply.error.column) == (2, 11)


async def test_preview_of_an_unknown_dimension_value_names_the_field(
    renderer: Runtime, store: EventStore
) -> None:
    await define_execution(store, "hello", HELLO)
    await define_dimension(store, "customer", CUSTOMER)
    reply = await preview(renderer, PreviewRequest(execution="hello", dimensions={"customer": "globex"}))
    assert isinstance(reply, PreviewFailed)
    assert reply.error.kind == "unknown_dimension" and reply.error.field == "dimensions.customer"
    assert reply.error.reason == "dimension 'customer' has no value 'globex'"


async def test_preview_of_a_malformed_request_answers_bad_request(renderer: Runtime) -> None:
    client = await nats.connect(renderer.settings.nats_url)
    try:
        subject = render_preview_subject(renderer.settings.bus_prefix)
        answer = await client.request(subject, b'{"dimensions": {}}', timeout=5)
    finally:
        await client.close()
    reply = parse_preview_reply(answer.data)
    assert isinstance(reply, PreviewFailed)
    assert reply.error.kind == "bad_request" and reply.error.field == "execution"


async def test_preview_at_a_past_time_renders_the_execution_as_it_stood_then(
    renderer: Runtime, store: EventStore
) -> None:
    first = await define_execution(store, "hello", HELLO)
    newer = HELLO.model_copy(update={"default_params": {**HELLO.default_params, "greeting": "howdy"}})
    await store.append(
        "execution-hello",
        [ExecutionRedefined(name="hello", spec=newer, changed=["default_params"])],
        expected_version=1,
        meta=ADMIN,
    )
    then = await preview(renderer, PreviewRequest(execution="hello", at=first.time))
    now = await preview(renderer, PreviewRequest(execution="hello"))
    assert isinstance(then, PreviewRendered) and isinstance(now, PreviewRendered)
    assert (then.payload["command"], then.execution_version) == (["echo", "hello, world"], 1)
    assert (now.payload["command"], now.execution_version) == (["echo", "howdy, world"], 2)
