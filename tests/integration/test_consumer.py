"""Durable consumers against real NATS and PostgreSQL: at-least-once delivery, outcome recorded once.

The handler under test behaves like batchyard's services do: it appends its outcome to a stream derived
from the event it handles, at the version it expects, so a second delivery meets a ConcurrencyError.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

from nats.js import JetStreamContext

from contracts.envelope import CloudEvent, EventMeta, RecordedEvent
from contracts.events import JobPaused, RunRequested
from contracts.subjects import event_type_filter, events_subject
from shared.bus.consumer import consume
from shared.bus.relay import Relay
from shared.eventstore import NO_STREAM, EventStore
from shared.settings import Settings

META = EventMeta(actor="tester", correlation_id="corr-consumer")
OUTCOMES = uuid.UUID("0b7c4000-0000-4000-8000-000000000001")


def outcome_stream(event: RecordedEvent) -> str:
    return f"run-{uuid.uuid5(OUTCOMES, str(event.id))}"


async def record_outcome(store: EventStore, event: RecordedEvent) -> None:
    """The idempotent part of a handler: one outcome stream per handled event, created at NO_STREAM."""
    run = uuid.UUID(outcome_stream(event).removeprefix("run-"))
    meta = EventMeta(actor="test-consumer", correlation_id=event.correlation_id, causation_id=str(event.id))
    await store.append(
        outcome_stream(event),
        [RunRequested(run_id=run, execution="x")],
        expected_version=NO_STREAM,
        meta=meta,
    )


async def outcomes(store: EventStore) -> Counter[str]:
    recorded = await store.read_all(types=["RunRequested"], limit=100_000)
    return Counter(e.causation_id or "" for e in recorded)


async def append_paused(store: EventStore, count: int) -> list[RecordedEvent]:
    recorded: list[RecordedEvent] = []
    for _ in range(count):
        job = uuid.uuid4()
        recorded += await store.append(
            f"job-{job}", [JobPaused(job_id=job)], expected_version=NO_STREAM, meta=META
        )
    return recorded


async def publish_by_hand(js: JetStreamContext, prefix: str, event: RecordedEvent, msg_id: str) -> None:
    envelope = CloudEvent.from_recorded(event, "batchyard/test", prev_position=event.position - 1)
    await js.publish(
        events_subject(prefix, event.stream_type, event.type),
        envelope.model_dump_json().encode(),
        headers={"Nats-Msg-Id": msg_id},
    )


async def eventually(check: Callable[[], bool], within_s: float = 15.0) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")


@contextlib.asynccontextmanager
async def consuming(
    js: JetStreamContext,
    prefix: str,
    handler: Callable[[RecordedEvent], Awaitable[None]],
    *,
    batch: int = 100,
    ack_wait_s: float = 30.0,
) -> AsyncIterator[None]:
    task = asyncio.create_task(
        consume(
            js,
            prefix,
            "tester",
            [event_type_filter(prefix, "JobPaused")],
            handler,
            batch=batch,
            ack_wait_s=ack_wait_s,
        )
    )
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def relaying(store: EventStore, js: JetStreamContext, settings: Settings) -> AsyncIterator[None]:
    task = asyncio.create_task(Relay(store, js, settings.pg_dsn, settings.bus_prefix, "batchyard/test").run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_republished_event_is_handled_again_but_its_outcome_is_recorded_once(
    store: EventStore, js: JetStreamContext, settings: Settings
) -> None:
    (event,) = await append_paused(store, 1)
    calls: list[uuid.UUID] = []

    async def handler(received: RecordedEvent) -> None:
        calls.append(received.id)
        await record_outcome(store, received)

    await publish_by_hand(js, settings.bus_prefix, event, str(event.id))
    await publish_by_hand(js, settings.bus_prefix, event, str(event.id))
    await publish_by_hand(js, settings.bus_prefix, event, f"{event.id}-beyond-the-duplicate-window")
    async with consuming(js, settings.bus_prefix, handler):
        await eventually(lambda: len(calls) == 2)
        await asyncio.sleep(0.2)
    assert calls == [event.id, event.id], "the same Nats-Msg-Id must be dropped by JetStream"
    assert await outcomes(store) == {str(event.id): 1}


async def test_a_handler_that_fails_after_appending_is_redelivered_and_the_outcome_stays_single(
    store: EventStore, js: JetStreamContext, settings: Settings
) -> None:
    events = await append_paused(store, 5)
    calls: Counter[uuid.UUID] = Counter()

    async def crashes_before_ack_the_first_time(received: RecordedEvent) -> None:
        calls[received.id] += 1
        await record_outcome(store, received)
        if calls[received.id] == 1:
            raise RuntimeError("lost the connection before acknowledging")

    async with (
        relaying(store, js, settings),
        consuming(js, settings.bus_prefix, crashes_before_ack_the_first_time),
    ):
        await eventually(lambda: all(calls[e.id] >= 2 for e in events))
    assert await outcomes(store) == {str(e.id): 1 for e in events}


async def test_a_consumer_restarted_before_acknowledging_gets_redeliveries_and_records_nothing_twice(
    store: EventStore, js: JetStreamContext, settings: Settings
) -> None:
    events = await append_paused(store, 10)
    handled_first: list[uuid.UUID] = []
    handled_second: list[uuid.UUID] = []
    stuck = asyncio.Event()

    async def hangs_after_recording_the_third(received: RecordedEvent) -> None:
        handled_first.append(received.id)
        await record_outcome(store, received)
        if len(handled_first) == 3:
            stuck.set()
            await asyncio.Event().wait()

    async def healthy(received: RecordedEvent) -> None:
        handled_second.append(received.id)
        await record_outcome(store, received)

    async with relaying(store, js, settings):
        async with consuming(js, settings.bus_prefix, hangs_after_recording_the_third, ack_wait_s=1.0):
            await asyncio.wait_for(stuck.wait(), 10)
        async with consuming(js, settings.bus_prefix, healthy, ack_wait_s=1.0):
            await eventually(lambda: set(handled_second) >= {e.id for e in events[2:]})
    assert events[2].id in handled_first and events[2].id in handled_second, "the unacked one came back"
    assert await outcomes(store) == {str(e.id): 1 for e in events}


async def test_replicas_sharing_the_durable_consumer_split_the_work_without_handling_twice(
    store: EventStore, js: JetStreamContext, settings: Settings
) -> None:
    events = await append_paused(store, 120)
    handled_by: dict[str, list[uuid.UUID]] = {"replica-1": [], "replica-2": []}

    def replica(name: str) -> Callable[[RecordedEvent], Awaitable[None]]:
        async def handler(received: RecordedEvent) -> None:
            handled_by[name].append(received.id)
            await record_outcome(store, received)

        return handler

    async with (
        consuming(js, settings.bus_prefix, replica("replica-1"), batch=5),
        consuming(js, settings.bus_prefix, replica("replica-2"), batch=5),
    ):
        await asyncio.sleep(0.3)
        async with relaying(store, js, settings):
            await eventually(lambda: sum(map(len, handled_by.values())) >= len(events))
        await asyncio.sleep(0.2)
    first, second = handled_by["replica-1"], handled_by["replica-2"]
    assert first and second, "one replica did all the work"
    assert not set(first) & set(second), "a message was handled by both replicas"
    assert sorted(first + second) == sorted(e.id for e in events)
    assert await outcomes(store) == {str(e.id): 1 for e in events}
