"""The dispatcher service as `batchyard up` starts it (`start(runtime)`) runs all three drivers: local
processes, containers on a Docker Engine API (a real podman here) and Nomad jobs (the stub replaying
Nomad's documented API, or a real Nomad with `NOMAD_ADDR`), with real NATS and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from contracts.payloads import validate_payload
from services.dispatcher.service import start
from shared.eventstore.store import EventStore
from shared.service import open_runtime
from shared.settings import Settings
from tests.docker_engine import DockerEngine
from tests.docker_engine import docker_engine as docker_engine
from tests.integration.test_dispatcher import ended, read_log, render, wait_for
from tests.nomad_stub import NomadTarget, nomad_target, shell_job, until


@pytest.fixture
async def nomad(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[NomadTarget]:
    """The stub (or real) Nomad, announced to the dispatcher the way an operator does: `NOMAD_ADDR`."""
    async with nomad_target(tmp_path) as target:
        monkeypatch.setenv("NOMAD_ADDR", target.connection.address)
        yield target


@asynccontextmanager
async def service(settings: Settings) -> AsyncIterator[None]:
    async with open_runtime(settings, "dispatcher") as runtime:
        shutdown = await start(runtime)
        try:
            yield
        finally:
            await shutdown()


def stdout_and_stderr(chunks: list[tuple[int, str | None, bytes, bool]]) -> dict[str, bytes]:
    parts = {"stdout": b"", "stderr": b""}
    offset = 0
    for chunk_offset, fd, data, end in chunks:
        assert chunk_offset == offset, "log offsets are contiguous"
        if not end:
            parts[str(fd)] += data
            offset += len(data)
    return parts


async def test_the_service_runs_local_docker_and_nomad_runs_side_by_side(
    settings: Settings,
    store: EventStore,
    js: JetStreamContext,
    docker_engine: DockerEngine,
    nomad: NomadTarget,
) -> None:
    settings = settings.model_copy(update={"docker_url": docker_engine.url})
    container = {"image": docker_engine.image, "command": "echo box; echo grr >&2", "pull_policy": "never"}
    async with service(settings):
        local = await render(store, {"command": "echo here"})
        docker = await render(store, container, driver="docker")
        job = await render(store, validate_payload("nomad", shell_job("echo far; echo ugh >&2")), "nomad")
        runs = {
            name: await wait_for(store, s, ended, timeout_s=20)
            for name, s in [("local", local), ("docker", docker), ("nomad", job)]
        }
    for name, events in runs.items():
        assert [e.type for e in events] == ["RunRequested", "RunRendered", "RunStarted", "RunSucceeded"], name
    assert runs["docker"][2].data["handle"]["engine"] == docker_engine.url
    assert runs["nomad"][2].data["handle"]["nomad_url"] == nomad.connection.address
    prefix = settings.bus_prefix
    assert stdout_and_stderr(await read_log(js, prefix, local)) == {"stdout": b"here\n", "stderr": b""}
    assert stdout_and_stderr(await read_log(js, prefix, docker)) == {"stdout": b"box\n", "stderr": b"grr\n"}
    assert stdout_and_stderr(await read_log(js, prefix, job)) == {"stdout": b"far\n", "stderr": b"ugh\n"}


async def test_without_a_docker_engine_or_nomad_the_service_starts_and_their_runs_fail_saying_why(
    settings: Settings, store: EventStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOMAD_ADDR", raising=False)
    settings = settings.model_copy(update={"docker_url": f"unix://{tmp_path}/no-engine.sock"})
    async with service(settings):
        docker = await render(store, {"image": "localhost/any:1", "command": ["true"]}, driver="docker")
        job = await render(store, validate_payload("nomad", shell_job("true")), "nomad")
        local = await render(store, {"command": ["true"]})
        docker_events = await wait_for(store, docker, ended)
        job_events = await wait_for(store, job, ended)
        local_events = await wait_for(store, local, ended)
    assert [e.type for e in docker_events] == ["RunRequested", "RunRendered", "RunFailed"]
    assert (
        docker_events[-1]
        .data["reason"]
        .startswith(f"the Docker engine at unix://{tmp_path}/no-engine.sock is not reachable")
    )
    assert [e.type for e in job_events] == ["RunRequested", "RunRendered", "RunFailed"]
    assert job_events[-1].data["reason"].startswith("no Nomad address")
    assert local_events[-1].type == "RunSucceeded"


async def test_a_lost_nomad_allocation_ends_the_run_as_lost(
    settings: Settings, store: EventStore, nomad: NomadTarget
) -> None:
    """The stub marks the allocation lost as Nomad does when its node goes down."""
    stub = nomad.require_stub("a node going down")
    async with service(settings):
        job = await render(store, validate_payload("nomad", shell_job("sleep 30")), "nomad")
        started = await wait_for(store, job, lambda types: "RunStarted" in types)
        job_id = started[-1].data["handle"]["job_id"]
        await until(lambda: any(t.process for a in stub.allocs_of(job_id) for t in a.tasks.values()))
        await stub.lose(stub.allocs_of(job_id)[0].id)
        events = await wait_for(store, job, ended, timeout_s=20)
    assert events[-1].type == "RunLost"
    assert "was lost" in events[-1].data["reason"] and "node is down" in events[-1].data["reason"]


async def test_the_service_runs_a_docker_pipeline_feeding_one_container_into_the_next(
    settings: Settings, store: EventStore, js: JetStreamContext, docker_engine: DockerEngine
) -> None:
    settings = settings.model_copy(update={"docker_url": docker_engine.url})
    payload = {
        "steps": [
            {"name": "make", "image": docker_engine.image, "command": "printf 'b\\na\\n'"},
            {"name": "sort", "image": docker_engine.image, "command": "sort"},
        ],
        "pull_policy": "never",
    }
    async with service(settings):
        stream = await render(store, payload, driver="docker")
        events = await wait_for(store, stream, ended, timeout_s=20)
    assert events[-1].type == "RunSucceeded"
    assert [e.data["step"] for e in events if e.type == "RunStepEnded"] == ["make", "sort"]
    log = stdout_and_stderr(await read_log(js, settings.bus_prefix, stream))
    assert log["stdout"].endswith(b"a\nb\n")
