"""A dispatcher that dies while a container or a Nomad job runs: the next dispatcher adopts the run and
follows it to its end, with exactly one terminal event and a log whose offsets continue where the dead
dispatcher stopped. Real podman (tests/docker_engine.py), the Nomad stub replaying Nomad's documented API
(tests/nomad_stub.py; a real Nomad with `NOMAD_ADDR`), real NATS and PostgreSQL."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from contracts.base import JsonObject
from contracts.envelope import RecordedEvent
from contracts.events.runs import RunStopRequested
from contracts.payloads import validate_payload
from contracts.subjects import logs_stream_name, logs_subject
from services.dispatcher.config import DispatcherSettings
from services.dispatcher.service import DispatcherService
from shared.eventstore.store import ANY_VERSION, EventStore
from shared.service import open_runtime
from shared.settings import Settings
from tests.docker_engine import DockerEngine
from tests.docker_engine import docker_engine as docker_engine
from tests.integration.test_dispatcher import FAST, USER, dispatcher, ended, has, read_log, render, wait_for
from tests.integration.test_dispatcher_crash import dispatcher_process, terminal_count
from tests.nomad_stub import NomadTarget, nomad_target, shell_job

COUNTING = "i=1; while [ $i -le 12 ]; do echo line $i; echo note $i >&2; i=$((i+1)); sleep 0.15; done"
EXPECTED_STDOUT = b"".join(b"line %d\n" % i for i in range(1, 13))
EXPECTED_STDERR = b"".join(b"note %d\n" % i for i in range(1, 13))


@pytest.fixture
async def nomad(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[NomadTarget]:
    async with nomad_target(tmp_path) as target:
        monkeypatch.setenv("NOMAD_ADDR", target.connection.address)
        yield target


async def some_output_published(js: JetStreamContext, prefix: str, stream: str) -> None:
    """Wait until the first dispatcher has published part of the log, so the successor must resume it."""
    deadline = time.monotonic() + 10
    while True:
        try:
            await js.get_last_msg(logs_stream_name(prefix), logs_subject(prefix, stream.partition("-")[2]))
            return
        except NotFoundError:
            assert time.monotonic() < deadline, "no output published"
            await asyncio.sleep(0.02)


def contiguous_parts(chunks: list[tuple[int, str | None, bytes, bool]]) -> dict[str, bytes]:
    parts = {"stdout": b"", "stderr": b""}
    offset = 0
    for chunk_offset, fd, data, end in sorted(chunks, key=lambda chunk: (chunk[0], chunk[3])):
        assert chunk_offset == offset, f"a gap or an overlap at offset {offset}"
        if not end:
            parts[str(fd)] += data
            offset += len(data)
    return parts


def adoption_of(events: list[RecordedEvent]) -> RecordedEvent:
    adopted = [e for e in events if e.type == "RunAdopted"]
    assert len(adopted) == 1, [e.type for e in events]
    return adopted[0]


async def kill_mid_run(
    settings: Settings, store: EventStore, js: JetStreamContext, payload: JsonObject, driver: str
) -> str:
    """Start the run on a dispatcher process, wait for some output, SIGKILL the dispatcher."""
    with dispatcher_process(settings) as process:
        stream = await render(store, payload, driver=driver)
        await wait_for(store, stream, has("RunStarted"), timeout_s=20)
        await some_output_published(js, settings.bus_prefix, stream)
        process.send_signal(signal.SIGKILL)
        process.wait()
    return stream


async def test_a_container_outlives_its_killed_dispatcher_and_the_next_one_follows_it_to_success(
    settings: Settings,
    store: EventStore,
    js: JetStreamContext,
    docker_engine: DockerEngine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BATCHYARD_DOCKER_URL", docker_engine.url)
    payload = {"image": docker_engine.image, "command": COUNTING, "pull_policy": "never"}
    stream = await kill_mid_run(settings, store, js, payload, "docker")
    async with dispatcher(settings.model_copy(update={"docker_url": docker_engine.url})) as successor:
        events = await wait_for(store, stream, ended, timeout_s=20)
    types = [e.type for e in events]
    assert types[-1] == "RunSucceeded" and terminal_count(types) == 1
    adopted = adoption_of(events)
    assert adopted.data["dispatcher"] == successor.identity
    assert adopted.data["previous_dispatcher"].startswith("crashy:")
    assert adopted.data["handle"] == events[2].data["handle"]
    parts = contiguous_parts(await read_log(js, settings.bus_prefix, stream))
    assert parts == {"stdout": EXPECTED_STDOUT, "stderr": EXPECTED_STDERR}


async def test_a_nomad_job_outlives_its_killed_dispatcher_and_the_next_one_follows_it_to_success(
    settings: Settings, store: EventStore, js: JetStreamContext, nomad: NomadTarget
) -> None:
    """Runs against the stub replaying Nomad's documented API (or a real Nomad with NOMAD_ADDR)."""
    payload = validate_payload("nomad", shell_job(COUNTING))
    stream = await kill_mid_run(settings, store, js, payload, "nomad")
    async with dispatcher(settings) as successor:
        events = await wait_for(store, stream, ended, timeout_s=20)
    types = [e.type for e in events]
    assert types[-1] == "RunSucceeded" and terminal_count(types) == 1
    assert adoption_of(events).data["dispatcher"] == successor.identity
    parts = contiguous_parts(await read_log(js, settings.bus_prefix, stream))
    assert parts == {"stdout": EXPECTED_STDOUT, "stderr": EXPECTED_STDERR}


async def test_two_dispatchers_sweeping_at_once_adopt_a_run_exactly_once(
    settings: Settings, store: EventStore, js: JetStreamContext, nomad: NomadTarget
) -> None:
    payload = validate_payload("nomad", shell_job(COUNTING))
    stream = await kill_mid_run(settings, store, js, payload, "nomad")
    async with open_runtime(settings, "dispatcher") as runtime:
        first, second = DispatcherService(runtime, FAST), DispatcherService(runtime, FAST)
        await asyncio.gather(first.start(), second.start())
        try:
            events = await wait_for(store, stream, ended, timeout_s=20)
        finally:
            await asyncio.gather(first.shutdown(), second.shutdown())
    types = [e.type for e in events]
    assert types[-1] == "RunSucceeded" and terminal_count(types) == 1
    assert adoption_of(events).data["dispatcher"] in (first.identity, second.identity)
    parts = contiguous_parts(await read_log(js, settings.bus_prefix, stream))
    assert parts == {"stdout": EXPECTED_STDOUT, "stderr": EXPECTED_STDERR}


async def test_a_dispatcher_set_to_detach_leaves_its_container_running_for_the_next_one(
    settings: Settings, store: EventStore, js: JetStreamContext, docker_engine: DockerEngine
) -> None:
    settings = settings.model_copy(update={"docker_url": docker_engine.url})
    payload = {"image": docker_engine.image, "command": COUNTING, "pull_policy": "never"}
    leaving = DispatcherSettings(lease_ttl_s=30, shutdown_grace_s=10, detach_on_shutdown=True)
    async with dispatcher(settings, leaving) as first:
        stream = await render(store, payload, driver="docker")
        await wait_for(store, stream, has("RunStarted"))
        await some_output_published(js, settings.bus_prefix, stream)
    assert (await store.read_stream(stream))[-1].type == "RunStarted", "left running, not stopped"
    async with dispatcher(settings) as successor:
        events = await wait_for(store, stream, ended, timeout_s=20)
    types = [e.type for e in events]
    assert types[-1] == "RunSucceeded" and terminal_count(types) == 1
    adopted = adoption_of(events)
    assert (adopted.data["previous_dispatcher"], adopted.data["dispatcher"]) == (
        first.identity,
        successor.identity,
    )
    parts = contiguous_parts(await read_log(js, settings.bus_prefix, stream))
    assert parts == {"stdout": EXPECTED_STDOUT, "stderr": EXPECTED_STDERR}


async def test_by_default_a_dispatcher_shutting_down_stops_its_container_and_records_why(
    settings: Settings, store: EventStore, docker_engine: DockerEngine
) -> None:
    settings = settings.model_copy(update={"docker_url": docker_engine.url})
    payload = {"image": docker_engine.image, "command": "sleep 30", "pull_policy": "never", "stop_grace_s": 1}
    async with dispatcher(settings, FAST):
        stream = await render(store, payload, driver="docker")
        await wait_for(store, stream, has("RunStarted"))
    events = await store.read_stream(stream)
    assert events[-1].type == "RunStopped" and events[-1].data["reason"] == "dispatcher shutting down"


async def test_a_local_run_of_a_killed_dispatcher_is_still_lost_not_adopted(
    settings: Settings, store: EventStore, js: JetStreamContext
) -> None:
    stream = await kill_mid_run(settings, store, js, {"command": COUNTING}, "local")
    async with dispatcher(settings):
        events = await wait_for(store, stream, ended)
    types = [e.type for e in events]
    assert types[-1] == "RunLost" and "RunAdopted" not in types and terminal_count(types) == 1


async def test_a_stop_requested_while_nobody_followed_the_container_is_carried_out_by_the_adopter(
    settings: Settings,
    store: EventStore,
    js: JetStreamContext,
    docker_engine: DockerEngine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BATCHYARD_DOCKER_URL", docker_engine.url)
    command = "echo ready; trap 'exit 3' TERM; while true; do sleep 0.05; done"
    payload = {"image": docker_engine.image, "command": command, "pull_policy": "never", "stop_grace_s": 5}
    stream = await kill_mid_run(settings, store, js, payload, "docker")
    run_id = uuid.UUID(stream.partition("-")[2])
    await store.append(stream, [RunStopRequested(run_id=run_id)], expected_version=ANY_VERSION, meta=USER)
    async with dispatcher(settings.model_copy(update={"docker_url": docker_engine.url})):
        events = await wait_for(store, stream, ended, timeout_s=20)
    types = [e.type for e in events]
    assert types[-1] == "RunStopped" and terminal_count(types) == 1 and "RunAdopted" in types
    assert events[-1].data["stopped_by"] == "alice"
