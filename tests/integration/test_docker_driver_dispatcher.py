"""The Docker driver inside the real dispatcher: a `RunRendered` for `docker` becomes a container, its
events and its log on JetStream, with real PostgreSQL, NATS and podman.

The dispatcher's service does not build a Docker driver yet (the lead wires it, see docs/docker.md), so
these tests hand one to the dispatcher before it starts.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from nats.js import JetStreamContext

from contracts.envelope import RecordedEvent
from contracts.events.runs import RunStopRequested
from services.dispatcher.drivers.docker import DockerDriver
from services.dispatcher.service import DispatcherService
from shared.eventstore.store import EventStore
from shared.service import open_runtime
from shared.settings import Settings
from tests.docker_engine import DockerEngine
from tests.docker_engine import docker_engine as docker_engine
from tests.integration.test_dispatcher import FAST, USER, ended, has, read_log, render, wait_for


@asynccontextmanager
async def docker_dispatcher(settings: Settings, engine: DockerEngine) -> AsyncIterator[DispatcherService]:
    async with open_runtime(settings, "dispatcher") as runtime:
        service = DispatcherService(runtime, FAST)
        driver = DockerDriver(engine.url, service.identity)
        service.dispatcher.drivers[driver.name] = driver
        await service.start()
        try:
            yield service
        finally:
            await service.shutdown()
            await driver.close()


def by_type(events: list[RecordedEvent]) -> dict[str, RecordedEvent]:
    return {event.type: event for event in events}


async def test_a_docker_run_starts_a_container_succeeds_and_streams_its_log(
    settings: Settings, store: EventStore, js: JetStreamContext, docker_engine: DockerEngine
) -> None:
    payload = {"image": docker_engine.image, "command": "echo out; echo err >&2", "pull_policy": "never"}
    async with docker_dispatcher(settings, docker_engine):
        stream = await render(store, payload, driver="docker")
        events = by_type(await wait_for(store, stream, ended))
    assert "RunSucceeded" in events
    handle = events["RunStarted"].data["handle"]
    assert handle["image"] == docker_engine.image and handle["container_id"]
    chunks = await read_log(js, settings.bus_prefix, stream)
    assert [(fd, data) for _, fd, data, end in chunks if not end] == [
        ("stdout", b"out\n"),
        ("stderr", b"err\n"),
    ]


async def test_a_docker_run_whose_image_is_missing_fails_naming_the_image(
    settings: Settings, store: EventStore, docker_engine: DockerEngine
) -> None:
    payload = {"image": "localhost/absent:1", "command": ["true"], "pull_policy": "never"}
    async with docker_dispatcher(settings, docker_engine):
        stream = await render(store, payload, driver="docker")
        events = by_type(await wait_for(store, stream, ended))
    assert "RunStarted" not in events
    assert "localhost/absent:1" in events["RunFailed"].data["reason"]


async def test_a_stop_request_stops_the_container_and_names_who_asked(
    settings: Settings, store: EventStore, docker_engine: DockerEngine
) -> None:
    payload = {
        "image": docker_engine.image,
        "command": "trap 'exit 3' TERM; while true; do sleep 0.05; done",
        "pull_policy": "never",
    }
    async with docker_dispatcher(settings, docker_engine):
        stream = await render(store, payload, driver="docker")
        await wait_for(store, stream, has("RunStarted"))
        run_id = uuid.UUID(stream.partition("-")[2])
        await store.append(
            stream, [RunStopRequested(run_id=run_id, grace_s=5)], expected_version=3, meta=USER
        )
        events = by_type(await wait_for(store, stream, ended))
    assert events["RunStopped"].data["stopped_by"] == "alice"
