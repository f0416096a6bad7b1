"""Docker pipelines against a real engine (podman serving the Docker API, tests/docker_engine.py): one
container per step, each fed the previous step's output through its stdin."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from contracts.base import Event, JsonObject
from contracts.events.runs import RunStepEnded
from contracts.logs import LogFd
from services.dispatcher.drivers.base import StartFailed
from services.dispatcher.drivers.docker import LABEL_RUN, DockerDriver
from services.dispatcher.drivers.docker_pipeline import DockerPipelineDriver, DockerPipelineExecution
from tests.docker_engine import DockerEngine
from tests.docker_engine import docker_engine as docker_engine


class StepLog:
    def __init__(self) -> None:
        self.chunks: list[tuple[str | None, LogFd, bytes]] = []

    async def write(self, fd: LogFd, data: bytes, step: str | None = None) -> None:
        self.chunks.append((step, fd, data))

    def text(self, step: str) -> str:
        return b"".join(d for s, _, d in self.chunks if s == step).decode()


@pytest.fixture
async def driver(docker_engine: DockerEngine) -> AsyncIterator[DockerPipelineDriver]:
    docker = DockerDriver(docker_engine.url, instance="test-dispatcher")
    yield DockerPipelineDriver(docker)
    await docker.close()


def pipeline(engine: DockerEngine, *steps: JsonObject, **fields: object) -> JsonObject:
    return {"steps": [{"image": engine.image, **step} for step in steps], "pull_policy": "never", **fields}


async def prepared(
    driver: DockerPipelineDriver, payload: JsonObject, log: StepLog
) -> tuple[DockerPipelineExecution, list[Event], str]:
    run_id = str(uuid.uuid4())
    execution = await driver.prepare(run_id, payload, log)
    assert isinstance(execution, DockerPipelineExecution)
    events: list[Event] = []
    execution.on_step = events.append
    return execution, events, run_id


async def test_each_containers_output_is_the_stdin_of_the_next(
    driver: DockerPipelineDriver, docker_engine: DockerEngine
) -> None:
    log = StepLog()
    payload = pipeline(
        docker_engine,
        {"name": "extract", "command": "printf 'b\\na\\nc\\n'"},
        {"name": "transform", "command": "sort >&2", "output": "stderr"},
        {"name": "load", "command": "tr a-z A-Z"},
    )
    execution, events, run_id = await prepared(driver, payload, log)
    await execution.launch()
    outcome = await asyncio.wait_for(execution.outcome(), 30)
    assert outcome.kind == "succeeded", outcome
    assert log.text("extract") == "b\na\nc\n"
    assert log.text("transform") == "a\nb\nc\n"
    assert log.text("load") == "A\nB\nC\n"
    assert [(e.step, e.outcome) for e in events if isinstance(e, RunStepEnded)] == [
        ("extract", "succeeded"),
        ("transform", "succeeded"),
        ("load", "succeeded"),
    ]
    docker = await driver.docker.client()
    left = await docker.containers.list(all=True, filters={"label": [f"{LABEL_RUN}={run_id}"]})
    assert left == []


async def test_a_failing_container_fails_the_pipeline_naming_its_step(
    driver: DockerPipelineDriver, docker_engine: DockerEngine
) -> None:
    payload = pipeline(
        docker_engine,
        {"name": "extract", "command": "echo data"},
        {"name": "transform", "command": "cat >/dev/null; exit 3"},
        {"name": "load", "command": "cat"},
    )
    execution, _, _ = await prepared(driver, payload, StepLog())
    await execution.launch()
    outcome = await asyncio.wait_for(execution.outcome(), 30)
    assert (outcome.kind, outcome.reason) == ("failed", "step 'transform' exited with code 3")


async def test_stopping_a_docker_pipeline_stops_every_container(
    driver: DockerPipelineDriver, docker_engine: DockerEngine
) -> None:
    log = StepLog()
    payload = pipeline(
        docker_engine,
        {"name": "a", "command": "echo ready; exec sleep 60"},
        {"name": "b", "command": "exec sleep 60"},
        stop_grace_s=1,
    )
    execution, events, _ = await prepared(driver, payload, log)
    await execution.launch()
    deadline = time.monotonic() + 15
    while "ready" not in log.text("a"):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    execution.request_stop("tester", "stop requested by tester")
    outcome = await asyncio.wait_for(execution.outcome(), 30)
    assert (outcome.kind, outcome.stopped_by) == ("stopped", "tester")
    assert {e.outcome for e in events if isinstance(e, RunStepEnded)} == {"stopped"}


async def test_a_step_with_a_missing_image_fails_before_any_container_runs(
    driver: DockerPipelineDriver, docker_engine: DockerEngine
) -> None:
    payload = pipeline(docker_engine, {"name": "ok", "command": "true"})
    payload["steps"].append({"name": "bad", "image": "localhost/no-such-image:1", "command": "true"})
    with pytest.raises(StartFailed, match="step 'bad'"):
        await driver.prepare(str(uuid.uuid4()), payload, StepLog())
