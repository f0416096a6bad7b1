"""The outbox relay against real PostgreSQL and NATS: what it publishes, and who publishes it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import pytest
from nats.js import JetStreamContext

from contracts.envelope import CloudEvent, EventMeta, RecordedEvent
from contracts.events import JobPaused, JobResumed, RunRequested
from contracts.subjects import events_stream_name, events_wildcard
from shared.bus import relay as relay_module
from shared.bus.relay import Relay
from shared.eventstore import NO_STREAM, EventStore
from shared.settings import Settings
from tests.polling import eventually

META = EventMeta(actor="tester", correlation_id="corr-relay")


@dataclass(frozen=True)
class BusMessage:
    subject: str
    msg_id: str
    envelope: CloudEvent


async def bus_messages(js: JetStreamContext, prefix: str) -> list[BusMessage]:
    """Every message the events stream holds, in stream order."""
    stream = events_stream_name(prefix)
    total = (await js.stream_info(stream)).state.messages
    subscription = await js.pull_subscribe(events_wildcard(prefix), stream=stream)
    found: list[BusMessage] = []
    try:
        while len(found) < total:
            for message in await subscription.fetch(min(1000, total - len(found)), timeout=5):
                headers = message.headers or {}
                envelope = CloudEvent.model_validate_json(message.data)
                found.append(BusMessage(message.subject, headers.get("Nats-Msg-Id", ""), envelope))
                await message.ack()
    finally:
        await subscription.unsubscribe()
    return found


async def wait_for_bus_count(js: JetStreamContext, prefix: str, count: int, within_s: float = 20.0) -> None:
    deadline = time.monotonic() + within_s
    held = 0
    while time.monotonic() < deadline:
        held = (await js.stream_info(events_stream_name(prefix))).state.messages
        if held >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the bus holds {held} events, expected {count}")


def assert_in_order_per_stream_and_globally(messages: list[BusMessage]) -> None:
    positions = [m.envelope.position for m in messages]
    assert positions == sorted(positions), "global order broken"
    last_version: dict[str, int] = {}
    for message in messages:
        stream = message.envelope.subject
        assert message.envelope.streamversion == last_version.get(stream, 0) + 1, f"order broken in {stream}"
        last_version[stream] = message.envelope.streamversion


@contextlib.asynccontextmanager
async def running_relay(store: EventStore, js: JetStreamContext, settings: Settings) -> AsyncIterator[Relay]:
    relay = Relay(store, js, settings.pg_dsn, settings.bus_prefix, "batchyard/test")
    task = asyncio.create_task(relay.run())
    try:
        yield relay
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def relay_environment(settings: Settings, instance: str) -> dict[str, str]:
    return {
        **os.environ,
        "BATCHYARD_PG_DSN": settings.pg_dsn,
        "BATCHYARD_NATS_URL": settings.nats_url,
        "BATCHYARD_BUS_PREFIX": settings.bus_prefix,
        "BATCHYARD_INSTANCE": instance,
        "BATCHYARD_LOG_LEVEL": "WARNING",
    }


async def start_relay_process(settings: Settings, instance: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shared.bus.relay_main", env=relay_environment(settings, instance)
    )


async def sigkill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGKILL)
    await process.wait()


async def append_jobs(store: EventStore, jobs: int, events_per_job: int) -> list[RecordedEvent]:
    recorded: list[RecordedEvent] = []
    for _ in range(jobs):
        job = uuid.uuid4()
        events = [
            JobPaused(job_id=job) if n % 2 == 0 else JobResumed(job_id=job) for n in range(events_per_job)
        ]
        recorded += await store.append(f"job-{job}", events, expected_version=NO_STREAM, meta=META)
    return recorded


async def test_every_committed_event_is_published_as_a_cloudevent_on_its_subject_with_its_id_as_msg_id(
    store: EventStore, js: JetStreamContext, settings: Settings
) -> None:
    run = uuid.uuid4()
    recorded = await append_jobs(store, jobs=3, events_per_job=4)
    recorded += await store.append(
        f"run-{run}", [RunRequested(run_id=run, execution="hello")], expected_version=NO_STREAM, meta=META
    )
    async with running_relay(store, js, settings):
        await wait_for_bus_count(js, settings.bus_prefix, len(recorded))
    messages = await bus_messages(js, settings.bus_prefix)
    assert [m.envelope.to_recorded() for m in messages] == recorded
    for message, event in zip(messages, recorded, strict=True):
        assert message.subject == f"{settings.bus_prefix}.events.{event.stream_type}.{event.type}"
        assert message.msg_id == str(event.id)
        assert message.envelope.specversion == "1.0"
        assert message.envelope.source == "batchyard/test"
        assert message.envelope.subject == event.stream_id
    assert [m.envelope.prevposition for m in messages] == [0] + [e.position for e in recorded[:-1]]
    assert_in_order_per_stream_and_globally(messages)


async def test_relay_restarted_resumes_after_its_tracking_position_without_republishing(
    store: EventStore, js: JetStreamContext, settings: Settings
) -> None:
    first = await append_jobs(store, jobs=2, events_per_job=3)
    async with running_relay(store, js, settings):
        await wait_for_bus_count(js, settings.bus_prefix, len(first))
    second = await append_jobs(store, jobs=2, events_per_job=3)
    async with running_relay(store, js, settings):
        await wait_for_bus_count(js, settings.bus_prefix, len(first) + len(second))
    messages = await bus_messages(js, settings.bus_prefix)
    assert [m.envelope.id for m in messages] == [e.id for e in first + second]
    assert messages[len(first)].envelope.prevposition == first[-1].position


async def test_only_one_of_two_relay_candidates_publishes_and_the_other_takes_over_when_it_dies(
    store: EventStore, js: JetStreamContext, settings: Settings
) -> None:
    candidates = {name: await start_relay_process(settings, name) for name in ("candidate-a", "candidate-b")}
    try:
        before = await append_jobs(store, jobs=5, events_per_job=2)
        await wait_for_bus_count(js, settings.bus_prefix, len(before))
        sources = {m.envelope.source for m in await bus_messages(js, settings.bus_prefix)}
        assert len(sources) == 1, f"more than one relay published: {sources}"
        leader = sources.pop().removeprefix("batchyard/relay@")
        standby = next(name for name in candidates if name != leader)

        await sigkill(candidates[leader])
        after = await append_jobs(store, jobs=5, events_per_job=2)
        await wait_for_bus_count(js, settings.bus_prefix, len(before) + len(after))
        messages = await bus_messages(js, settings.bus_prefix)
        assert [m.envelope.id for m in messages] == [e.id for e in before + after]
        assert {m.envelope.source for m in messages[len(before) :]} == {f"batchyard/relay@{standby}"}
    finally:
        for process in candidates.values():
            await sigkill(process)


@pytest.mark.slow
async def test_relay_sigkilled_at_random_moments_still_publishes_every_event_exactly_once_in_order(
    store: EventStore, js: JetStreamContext, settings: Settings
) -> None:
    """A writer appends thousands of events over many streams while the relay process is killed and
    restarted again and again; the bus ends up with each event once, in per-stream and global order."""
    rng = random.Random(20261123)
    writers, streams_per_writer, rounds = 8, 8, 40
    written: list[RecordedEvent] = []

    async def writer() -> None:
        versions = {f"job-{uuid.uuid4()}": 0 for _ in range(streams_per_writer)}
        for _ in range(rounds):
            stream = rng.choice(list(versions))
            job = uuid.UUID(stream.removeprefix("job-"))
            events = [JobPaused(job_id=job) for _ in range(rng.randint(1, 20))]
            written.extend(await store.append(stream, events, expected_version=versions[stream], meta=META))
            versions[stream] += len(events)
            await asyncio.sleep(rng.uniform(0, 0.12))

    async def held() -> int:
        return (await js.stream_info(events_stream_name(settings.bus_prefix))).state.messages

    writing = asyncio.gather(*(writer() for _ in range(writers)))
    kills = 0
    while not writing.done() or kills < 4:
        before = await held()
        relay = await start_relay_process(settings, f"victim-{kills}")
        # On a loaded machine a relay may take longer to start than a fixed pause: kill it at a random
        # moment after it began publishing, so every kill can interrupt a batch.
        for _ in range(750):
            if writing.done() or await held() > before:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(rng.uniform(0, 0.8))
        await sigkill(relay)
        kills += 1
    await writing
    assert len(written) > 2000

    survivor = await start_relay_process(settings, "survivor")
    try:
        await wait_for_bus_count(js, settings.bus_prefix, len(written), within_s=30)
        await asyncio.sleep(0.2)
        messages = await bus_messages(js, settings.bus_prefix)
    finally:
        await sigkill(survivor)
    assert len(messages) == len(written)
    assert sorted(m.msg_id for m in messages) == sorted(str(e.id) for e in written)
    assert {m.msg_id for m in messages} == {str(m.envelope.id) for m in messages}
    assert_in_order_per_stream_and_globally(messages)
    published_by_victims = {m.envelope.source for m in messages} - {"batchyard/relay@survivor"}
    assert published_by_victims, "the kills never hit a relay that had started publishing"


class WatchedWakeup(asyncio.Event):
    """The relay's wakeup, telling the test when the relay waits for a notification: it has read the
    store to its end and has nothing left to publish."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = False

    async def wait(self) -> Literal[True]:
        self.waiting = True
        try:
            return await super().wait()
        finally:
            self.waiting = False


async def test_relay_publishes_announced_events_that_follow_its_position_and_reads_the_store_past_a_hole(
    store: EventStore, js: JetStreamContext, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Announced events stand in for a read only when they continue the relay's position; an
    announcement after a hole (here: a batch too big to announce, so one that never arrives whole) makes
    it read the store, and the bus still holds every event once, in order, with its `prevposition` chain.
    The idle poll is lengthened and the relay seen waiting before each commit, so no read can find a
    commit whose notification is still on its way."""
    monkeypatch.setattr(relay_module, "IDLE_POLL_S", 60.0)
    async with running_relay(store, js, settings) as relay:
        wakeup = relay._wakeup = WatchedWakeup()
        first = await append_jobs(store, jobs=2, events_per_job=2)
        await wait_for_bus_count(js, settings.bus_prefix, len(first))
        await eventually(lambda: asyncio.sleep(0, wakeup.waiting))
        reads = 0
        read_all = store.read_all

        async def counting_read_all(**kwargs: Any) -> list[RecordedEvent]:
            """Counts the reads that found events: a read finding none is not a read instead of an
            announcement."""
            nonlocal reads
            found = await read_all(**kwargs)
            reads += bool(found)
            return found

        store.read_all = counting_read_all  # type: ignore[method-assign]
        try:
            small = await append_jobs(store, jobs=1, events_per_job=3)
            await wait_for_bus_count(js, settings.bus_prefix, len(first) + len(small))
            reads_for_small = reads
            await eventually(lambda: asyncio.sleep(0, wakeup.waiting))
            job = uuid.uuid4()
            too_big = JobPaused(job_id=job, reason="x" * 7000)
            big = await store.append(f"job-{job}", [too_big], expected_version=NO_STREAM, meta=META)
            after = await append_jobs(store, jobs=1, events_per_job=1)
            recorded = first + small + big + after
            await wait_for_bus_count(js, settings.bus_prefix, len(recorded))
        finally:
            store.read_all = read_all  # type: ignore[method-assign]
    assert reads_for_small == 0
    assert reads >= 1
    messages = await bus_messages(js, settings.bus_prefix)
    assert [m.envelope.to_recorded() for m in messages] == recorded
    assert [m.envelope.prevposition for m in messages] == [0] + [e.position for e in recorded[:-1]]
