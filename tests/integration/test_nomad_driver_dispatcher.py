"""The Nomad driver inside the dispatcher, against real NATS and PostgreSQL.

Nomad itself is the stub server (tests/nomad_stub.py) replaying the request and response shapes of
Nomad's documented HTTP API, because no Nomad binary can be installed here; with `NOMAD_ADDR` set the
same tests use that real Nomad (docs/nomad.md).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from nats.js import JetStreamContext

from contracts.base import JsonObject
from contracts.envelope import EventMeta, RecordedEvent
from contracts.events.runs import RunRendered, RunRequested, RunStopRequested
from contracts.logs import LOG_END, LOG_FD, LOG_OFFSET
from contracts.payloads import validate_payload
from contracts.subjects import logs_subject
from services.dispatcher.config import DispatcherSettings
from services.dispatcher.drivers.nomad import NomadDriver
from services.dispatcher.service import DispatcherService
from shared.domain.run_lifecycle import TERMINAL_EVENT_TYPES
from shared.eventstore.store import ANY_VERSION, NO_STREAM, EventStore
from shared.service import open_runtime
from shared.settings import Settings
from tests.nomad_stub import NomadTarget, shell_job
from tests.nomad_stub import nomad as nomad

USER = EventMeta(actor="alice", correlation_id="req-nomad")


@pytest.fixture
async def service(settings: Settings, nomad: NomadTarget) -> AsyncIterator[DispatcherService]:
    """The dispatcher with a Nomad driver beside its local one, as the service wiring will add it."""
    driver = NomadDriver(nomad.connection, wait_s=2.0)
    async with open_runtime(settings, "dispatcher") as runtime:
        dispatcher = DispatcherService(runtime, DispatcherSettings(lease_ttl_s=1.5, shutdown_grace_s=10))
        dispatcher.dispatcher.drivers[driver.name] = driver
        await dispatcher.start()
        try:
            yield dispatcher
        finally:
            await dispatcher.shutdown()
            await driver.close()


async def render(store: EventStore, payload: JsonObject) -> str:
    run_id = uuid.uuid4()
    stream = f"run-{run_id}"
    rendered = RunRendered(
        run_id=run_id, driver="nomad", payload=validate_payload("nomad", payload), execution_version=1
    )
    await store.append(
        stream,
        [RunRequested(run_id=run_id, execution="nightly"), rendered],
        expected_version=NO_STREAM,
        meta=USER,
    )
    return stream


async def events_until(
    store: EventStore, stream: str, last: set[str], timeout_s: float = 15
) -> list[RecordedEvent]:
    deadline = time.monotonic() + timeout_s
    while True:
        events = await store.read_stream(stream)
        if any(event.type in last for event in events):
            return events
        assert time.monotonic() < deadline, f"{stream} stuck at {[e.type for e in events]}"
        await asyncio.sleep(0.02)


async def log_of(js: JetStreamContext, prefix: str, stream: str) -> dict[str, bytes]:
    """The run's published log per stream name, read up to the end marker, with offsets checked."""
    subscription = await js.subscribe(logs_subject(prefix, stream.partition("-")[2]), ordered_consumer=True)
    parts: dict[str, bytes] = {"stdout": b"", "stderr": b""}
    offset = 0
    try:
        while True:
            message = await subscription.next_msg(timeout=5)
            headers = message.headers or {}
            assert int(headers[LOG_OFFSET]) == offset
            if LOG_END in headers:
                return parts
            parts[headers[LOG_FD]] += message.data
            offset += len(message.data)
    finally:
        await subscription.unsubscribe()


async def test_a_nomad_run_is_recorded_started_with_its_job_and_succeeds_with_its_log_published(
    settings: Settings, store: EventStore, js: JetStreamContext, service: DispatcherService
) -> None:
    """Runs against the stub replaying Nomad's documented API (or a real Nomad with NOMAD_ADDR)."""
    stream = await render(store, shell_job("echo from nomad; echo warning >&2"))
    events = await events_until(store, stream, set(TERMINAL_EVENT_TYPES))
    assert [e.type for e in events] == ["RunRequested", "RunRendered", "RunStarted", "RunSucceeded"]
    handle = events[2].data["handle"]
    assert handle["job_id"] == f"test-{stream.partition('-')[2]}" and handle["kill_timeout_s"] == 2.0
    log = await log_of(js, settings.bus_prefix, stream)
    assert log == {"stdout": b"from nomad\n", "stderr": b"warning\n"}


async def test_a_stop_request_deregisters_the_nomad_job_and_records_the_run_stopped(
    store: EventStore, service: DispatcherService
) -> None:
    """Runs against the stub replaying Nomad's documented API (or a real Nomad with NOMAD_ADDR)."""
    stream = await render(store, shell_job("trap 'exit 0' INT TERM; while true; do sleep 0.05; done"))
    await events_until(store, stream, {"RunStarted"})
    run_id = uuid.UUID(stream.partition("-")[2])
    await store.append(
        stream,
        [RunStopRequested(run_id=run_id)],
        expected_version=ANY_VERSION,
        meta=EventMeta(actor="bob", correlation_id="c"),
    )
    events = await events_until(store, stream, set(TERMINAL_EVENT_TYPES))
    assert events[-1].type == "RunStopped" and events[-1].data["stopped_by"] == "bob"


async def test_a_payload_nomad_refuses_ends_the_run_failed_without_starting_it(
    nomad: NomadTarget, store: EventStore, service: DispatcherService
) -> None:
    """Runs against the stub replaying Nomad's documented API (or a real Nomad with NOMAD_ADDR)."""
    stream = await render(store, {"dispatch": {"job_id": "nothing-here"}})
    events = await events_until(store, stream, set(TERMINAL_EVENT_TYPES))
    assert [e.type for e in events] == ["RunRequested", "RunRendered", "RunFailed"]
    assert events[-1].data["reason"] == "Nomad has no job 'nothing-here' to dispatch"
