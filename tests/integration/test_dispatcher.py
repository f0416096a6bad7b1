"""The dispatcher against real NATS and PostgreSQL: rendered runs become processes and their events."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from nats.js import JetStreamContext

from contracts.base import JsonObject
from contracts.envelope import CloudEvent, EventMeta, RecordedEvent
from contracts.events.runs import RunRendered, RunRequested, RunStopRequested
from contracts.logs import LOG_END, LOG_FD, LOG_OFFSET
from contracts.subjects import events_subject, logs_stream_name, logs_subject
from services.dispatcher.config import DispatcherSettings
from services.dispatcher.service import DispatcherService
from shared.domain.run_lifecycle import TERMINAL_EVENT_TYPES
from shared.eventstore.store import NO_STREAM, EventStore
from shared.service import open_runtime
from shared.settings import Settings

USER = EventMeta(actor="alice", correlation_id="req-1")
FAST = DispatcherSettings(lease_ttl_s=1.5, shutdown_grace_s=10)


@asynccontextmanager
async def dispatcher(
    settings: Settings, config: DispatcherSettings = FAST
) -> AsyncIterator[DispatcherService]:
    async with open_runtime(settings, "dispatcher") as runtime:
        service = DispatcherService(runtime, config)
        await service.start()
        try:
            yield service
        finally:
            await service.shutdown()


async def render(store: EventStore, payload: JsonObject, driver: str = "local") -> str:
    run_id = uuid.uuid4()
    stream = f"run-{run_id}"
    await store.append(
        stream,
        [
            RunRequested(run_id=run_id, execution="x"),
            RunRendered(run_id=run_id, driver=driver, payload=payload, execution_version=1),
        ],
        expected_version=NO_STREAM,
        meta=USER,
    )
    return stream


async def wait_for(
    store: EventStore, stream: str, done: Callable[[list[str]], bool], timeout_s: float = 10
) -> list[RecordedEvent]:
    deadline = time.monotonic() + timeout_s
    while True:
        events = await store.read_stream(stream)
        if done([e.type for e in events]):
            return events
        assert time.monotonic() < deadline, f"{stream} stuck at {[e.type for e in events]}"
        await asyncio.sleep(0.02)


def ended(types: list[str]) -> bool:
    return any(t in TERMINAL_EVENT_TYPES for t in types)


def has(event_type: str) -> Callable[[list[str]], bool]:
    return lambda types: event_type in types


async def read_log(
    js: JetStreamContext, prefix: str, stream: str
) -> list[tuple[int, str | None, bytes, bool]]:
    """Every chunk of a run's log as (offset, fd, data, end), up to the end marker."""
    run_id = stream.partition("-")[2]
    chunks: list[tuple[int, str | None, bytes, bool]] = []
    subscription = await js.subscribe(logs_subject(prefix, run_id), ordered_consumer=True)
    try:
        while True:
            message = await subscription.next_msg(timeout=5)
            headers = message.headers or {}
            end = LOG_END in headers
            chunks.append((int(headers[LOG_OFFSET]), headers.get(LOG_FD), message.data, end))
            if end:
                return chunks
    finally:
        await subscription.unsubscribe()


async def log_message_count(js: JetStreamContext, prefix: str) -> int:
    return (await js.stream_info(logs_stream_name(prefix))).state.messages


async def test_a_rendered_run_starts_succeeds_and_streams_its_log(
    settings: Settings, store: EventStore, js: JetStreamContext
) -> None:
    async with dispatcher(settings) as service:
        stream = await render(store, {"command": "echo hello; echo oops >&2; echo bye"})
        events = await wait_for(store, stream, ended)
    assert [e.type for e in events] == ["RunRequested", "RunRendered", "RunStarted", "RunSucceeded"]
    started = events[2]
    assert started.data["dispatcher"] == service.identity and isinstance(started.data["handle"]["pid"], int)
    assert started.causation_id == str(events[1].id) and started.correlation_id == "req-1"
    chunks = await read_log(js, settings.bus_prefix, stream)
    assert chunks[-1][3] and chunks[-1][0] == len(b"hello\noops\nbye\n")
    offset = 0
    for chunk_offset, _, data, _ in chunks:
        assert chunk_offset == offset
        offset += len(data)
    assert b"".join(d for _, fd, d, _ in chunks if fd == "stdout") == b"hello\nbye\n"
    assert b"".join(d for _, fd, d, _ in chunks if fd == "stderr") == b"oops\n"


async def test_a_failing_command_ends_as_failed_with_its_exit_code(
    settings: Settings, store: EventStore
) -> None:
    async with dispatcher(settings):
        stream = await render(store, {"command": "exit 7"})
        events = await wait_for(store, stream, ended)
    assert events[-1].type == "RunFailed"
    assert events[-1].data["exit_code"] == 7 and events[-1].data["reason"] == "exited with code 7"


async def test_a_command_that_does_not_exist_fails_without_starting(
    settings: Settings, store: EventStore, js: JetStreamContext
) -> None:
    async with dispatcher(settings):
        stream = await render(store, {"command": ["no-such-command-xyz"]})
        events = await wait_for(store, stream, ended)
    assert [e.type for e in events] == ["RunRequested", "RunRendered", "RunFailed"]
    assert events[-1].data["reason"] == "command 'no-such-command-xyz' not found in PATH"
    assert await read_log(js, settings.bus_prefix, stream) == [(0, None, b"", True)]


async def test_a_bad_payload_or_unknown_driver_fails_the_run_not_the_dispatcher(
    settings: Settings, store: EventStore
) -> None:
    async with dispatcher(settings):
        bad = await render(store, {"command": ["true"], "colour": "red"})
        alien = await render(store, {"image": "busybox"}, driver="martian")
        good = await render(store, {"command": ["true"]})
        bad_events = await wait_for(store, bad, ended)
        alien_events = await wait_for(store, alien, ended)
        good_events = await wait_for(store, good, ended)
    assert bad_events[-1].data["reason"].startswith("invalid local payload: colour: unknown field")
    assert alien_events[-1].type == "RunFailed" and "no 'martian' driver" in alien_events[-1].data["reason"]
    assert good_events[-1].type == "RunSucceeded"


async def test_a_timeout_ends_the_run_as_timed_out(settings: Settings, store: EventStore) -> None:
    async with dispatcher(settings):
        stream = await render(store, {"command": ["sleep", "30"], "timeout_s": 0.3, "stop_grace_s": 1})
        events = await wait_for(store, stream, ended)
    assert events[-1].type == "RunTimedOut" and events[-1].data["timeout_s"] == 0.3


async def test_a_stop_request_stops_the_run_and_names_who_asked(
    settings: Settings, store: EventStore
) -> None:
    async with dispatcher(settings):
        stream = await render(store, {"command": "trap '' TERM; sleep 30", "stop_grace_s": 0.3})
        events = await wait_for(store, stream, has("RunStarted"))
        run_id = uuid.UUID(events[0].data["run_id"])
        bob = EventMeta(actor="bob", correlation_id="req-2")
        await store.append(stream, [RunStopRequested(run_id=run_id)], expected_version=3, meta=bob)
        began = time.monotonic()
        events = await wait_for(store, stream, ended)
    assert [e.type for e in events][-2:] == ["RunStopRequested", "RunStopped"]
    assert events[-1].data == {"run_id": str(run_id), "stopped_by": "bob", "reason": "stop requested by bob"}
    assert events[-1].causation_id == str(events[3].id)
    assert time.monotonic() - began < 5


async def test_a_stop_request_before_the_start_ends_the_run_without_starting_it(
    settings: Settings, store: EventStore, js: JetStreamContext, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    stream = await render(store, {"command": ["touch", str(marker)]})
    run_id = uuid.UUID(stream.partition("-")[2])
    await store.append(stream, [RunStopRequested(run_id=run_id)], expected_version=2, meta=USER)
    async with dispatcher(settings):
        events = await wait_for(store, stream, ended)
    assert [e.type for e in events] == ["RunRequested", "RunRendered", "RunStopRequested", "RunStopped"]
    assert events[-1].data["stopped_by"] == "alice"
    assert events[-1].data["reason"] == "stopped by alice before it started"
    assert not marker.exists()
    assert await read_log(js, settings.bus_prefix, stream) == [(0, None, b"", True)]


async def test_a_redelivered_rendered_event_does_not_start_a_second_process(
    settings: Settings, store: EventStore, js: JetStreamContext, tmp_path: Path
) -> None:
    tally = tmp_path / "tally"
    async with dispatcher(settings):
        stream = await render(store, {"command": f"echo hello; echo ran >> {tally}; sleep 0.5"})
        events = await wait_for(store, stream, has("RunStarted"))
        rendered = CloudEvent.from_recorded(events[1], "test", 0).model_dump_json().encode()
        subject = events_subject(settings.bus_prefix, "run", "RunRendered")
        for copy in range(3):
            await js.publish(subject, rendered, headers={"Nats-Msg-Id": f"copy-{copy}"})
        events = await wait_for(store, stream, ended)
        for copy in range(3, 5):
            await js.publish(subject, rendered, headers={"Nats-Msg-Id": f"copy-{copy}"})
        await asyncio.sleep(0.5)
        assert [e.type for e in await store.read_stream(stream)] == [
            "RunRequested",
            "RunRendered",
            "RunStarted",
            "RunSucceeded",
        ]
    assert tally.read_text() == "ran\n"
    assert await log_message_count(js, settings.bus_prefix) == 2, "one chunk and one end marker, no more"


async def test_two_dispatchers_racing_for_one_run_start_it_once(
    settings: Settings, store: EventStore, js: JetStreamContext, tmp_path: Path
) -> None:
    tally = tmp_path / "tally"
    async with dispatcher(settings) as first, dispatcher(settings) as second:
        await first.intake.drain()
        await second.intake.drain()
        stream = await render(store, {"command": f"echo hello; echo ran >> {tally}"})
        rendered = (await store.read_stream(stream))[1]
        await asyncio.gather(first.dispatcher.on_rendered(rendered), second.dispatcher.on_rendered(rendered))
        events = await wait_for(store, stream, ended)
        await asyncio.sleep(0.3)
    assert [e.type for e in events] == ["RunRequested", "RunRendered", "RunStarted", "RunSucceeded"]
    assert tally.read_text() == "ran\n"
    assert await log_message_count(js, settings.bus_prefix) == 2, "one chunk and one end marker, no more"


async def test_a_slow_run_does_not_hold_up_others(settings: Settings, store: EventStore) -> None:
    async with dispatcher(settings):
        slow = await render(store, {"command": ["sleep", "30"]})
        await wait_for(store, slow, has("RunStarted"))
        quick = [await render(store, {"command": ["true"]}) for _ in range(5)]
        for stream in quick:
            assert (await wait_for(store, stream, ended))[-1].type == "RunSucceeded"
        assert not ended([e.type for e in await store.read_stream(slow)])


async def test_shutdown_stops_running_runs_and_records_why(settings: Settings, store: EventStore) -> None:
    async with dispatcher(settings) as service:
        stream = await render(store, {"command": "trap '' TERM; sleep 30", "stop_grace_s": 0.3})
        await wait_for(store, stream, has("RunStarted"))
    events = await store.read_stream(stream)
    assert events[-1].type == "RunStopped"
    assert events[-1].data["stopped_by"] == service.identity
    assert events[-1].data["reason"] == "dispatcher shutting down"
    assert sum(e.type in TERMINAL_EVENT_TYPES for e in events) == 1


async def test_log_chunks_of_a_large_output_are_contiguous_and_end_with_the_total(
    settings: Settings, store: EventStore, js: JetStreamContext
) -> None:
    async with dispatcher(settings):
        stream = await render(store, {"command": "head -c 5000000 /dev/urandom | od -x"})
        await wait_for(store, stream, ended)
    chunks = await read_log(js, settings.bus_prefix, stream)
    offset = 0
    for chunk_offset, _, data, _ in chunks:
        assert chunk_offset == offset
        offset += len(data)
    assert chunks[-1][3] and chunks[-1][0] == offset > 5_000_000


async def test_the_end_marker_is_stored_before_the_terminal_event_is_recorded(
    settings: Settings, store: EventStore, js: JetStreamContext
) -> None:
    async with dispatcher(settings):
        stream = await render(store, {"command": "echo done"})
        await wait_for(store, stream, ended, timeout_s=10)
        assert await log_message_count(js, settings.bus_prefix) == 2
