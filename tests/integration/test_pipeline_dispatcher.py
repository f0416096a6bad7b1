"""Pipelines through the real dispatcher, NATS, PostgreSQL and archive (directory and S3), read back
through the API: step events, the step view, artifacts, and state handed from run to run."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from nats.js import JetStreamContext

from contracts.base import JsonObject
from contracts.events.runs import RunRendered, RunRequested, RunStopRequested
from contracts.logs import LOG_STEP
from contracts.subjects import logs_subject
from services.api.app import create_app
from shared.archive.factory import open_archive
from shared.eventstore.store import NO_STREAM, EventStore
from shared.settings import Settings
from tests.integration.test_dispatcher import USER, dispatcher, ended, has, render, wait_for


@pytest.fixture
def base_settings(settings: Settings, tmp_path: Path) -> Settings:
    """The bus and store of the test, with its own data directory (the archive's default home)."""
    return settings.model_copy(update={"data_dir": tmp_path / "data"})


async def step_headers(js: JetStreamContext, prefix: str, stream: str) -> list[str]:
    """The step named by each chunk of a run's log, in log order."""
    subscription = await js.subscribe(logs_subject(prefix, stream.partition("-")[2]), ordered_consumer=True)
    steps: list[str] = []
    try:
        while True:
            message = await subscription.next_msg(timeout=5)
            headers = message.headers or {}
            if not message.data:
                return steps
            steps.append(headers.get(LOG_STEP, ""))
    finally:
        await subscription.unsubscribe()


async def run_of_job(store: EventStore, job_id: uuid.UUID, payload: JsonObject) -> str:
    run_id = uuid.uuid4()
    stream = f"run-{run_id}"
    await store.append(
        stream,
        [
            RunRequested(run_id=run_id, execution="x", job_id=job_id, job_version=1),
            RunRendered(run_id=run_id, driver="local", payload=payload, execution_version=1),
        ],
        expected_version=NO_STREAM,
        meta=USER,
    )
    return stream


async def api_get(client: TestClient[Any, Any], path: str, until: Any, timeout_s: float = 10) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        response = await client.get(path)
        body = await response.json() if response.content_type == "application/json" else None
        if response.status == 200 and until(body):
            return body
        assert time.monotonic() < deadline, f"{path}: {response.status} {body}"
        await asyncio.sleep(0.05)


async def test_a_three_step_pipeline_records_each_step_and_the_api_shows_them(
    archive_settings: Settings, store: EventStore, js: JetStreamContext
) -> None:
    payload: JsonObject = {
        "steps": [
            {"name": "extract", "command": "printf 'b\\na\\n'"},
            {"name": "transform", "command": "sort >&2", "output": "stderr"},
            {"name": "load", "command": "cat >&2; tr a-z A-Z"},
        ]
    }
    async with dispatcher(archive_settings):
        stream = await render(store, payload)
        events = await wait_for(store, stream, ended)
    types = [e.type for e in events]
    assert types[-1] == "RunSucceeded"
    assert types.count("RunStepStarted") == 3 and types.count("RunStepEnded") == 3
    assert types.index("RunStepEnded") < types.index("RunSucceeded")
    steps = await step_headers(js, archive_settings.bus_prefix, stream)
    assert {"extract", "transform", "load"} <= set(steps)
    client: TestClient[Any, Any] = TestClient(TestServer(create_app(archive_settings)))
    await client.start_server()
    try:
        view = await api_get(client, f"/runs/{stream[4:]}", lambda body: body["status"] == "succeeded")
    finally:
        await client.close()
    assert [(s["name"], s["status"], s["exit_code"]) for s in view["steps"]] == [
        ("extract", "succeeded", 0),
        ("transform", "succeeded", 0),
        ("load", "succeeded", 0),
    ]
    assert all(s["started_at"] <= s["ended_at"] for s in view["steps"])


async def test_a_failing_middle_step_fails_the_run_naming_the_step(
    archive_settings: Settings, store: EventStore
) -> None:
    payload: JsonObject = {
        "steps": [
            {"name": "extract", "command": "echo data"},
            {"name": "transform", "command": "cat >/dev/null; exit 3"},
            {"name": "load", "command": "cat"},
        ]
    }
    async with dispatcher(archive_settings):
        stream = await render(store, payload)
        events = await wait_for(store, stream, ended)
    assert events[-1].type == "RunFailed"
    assert events[-1].data["reason"] == "step 'transform' exited with code 3"
    assert events[-1].data["exit_code"] == 3


async def test_stopping_a_pipeline_stops_every_step(archive_settings: Settings, store: EventStore) -> None:
    payload: JsonObject = {
        "steps": [
            {"name": "a", "command": "exec sleep 60"},
            {"name": "b", "command": "exec sleep 60"},
            {"name": "c", "command": "cat"},
        ],
        "stop_grace_s": 5,
    }
    async with dispatcher(archive_settings):
        stream = await render(store, payload)
        await wait_for(store, stream, lambda types: types.count("RunStepStarted") == 3)
        run_id = uuid.UUID(stream[4:])
        version = await store.stream_version(stream)
        await store.append(stream, [RunStopRequested(run_id=run_id)], expected_version=version, meta=USER)
        events = await wait_for(store, stream, ended)
    assert events[-1].type == "RunStopped"
    outcomes = [e.data["outcome"] for e in events if e.type == "RunStepEnded"]
    assert outcomes == ["stopped", "stopped", "stopped"]


async def test_artifacts_are_archived_listed_and_downloadable(
    archive_settings: Settings, store: EventStore
) -> None:
    payload: JsonObject = {
        "steps": [
            {"name": "make", "command": 'echo report > "$BATCHYARD_ARTIFACTS/report.txt"; echo ok'},
            {
                "name": "more",
                "command": 'mkdir -p "$BATCHYARD_ARTIFACTS/sub"; cat > "$BATCHYARD_ARTIFACTS/sub/copy.txt"',
            },
        ]
    }
    async with dispatcher(archive_settings):
        stream = await render(store, payload)
        await wait_for(store, stream, has("RunSucceeded"))
    run_id = stream[4:]
    client: TestClient[Any, Any] = TestClient(TestServer(create_app(archive_settings)))
    await client.start_server()
    try:
        listing = await api_get(client, f"/runs/{run_id}/artifacts", lambda body: True)
        assert listing["items"] == [{"name": "report.txt", "bytes": 7}, {"name": "sub/copy.txt", "bytes": 3}]
        download = await client.get(f"/runs/{run_id}/artifacts/sub/copy.txt")
        assert download.status == 200 and await download.read() == b"ok\n"
        missing = await client.get(f"/runs/{run_id}/artifacts/nope.txt")
        assert missing.status == 404 and missing.content_type == "application/problem+json"
    finally:
        await client.close()


async def test_the_state_a_run_writes_is_handed_to_the_next_run_of_the_same_job(
    archive_settings: Settings, store: EventStore, tmp_path: Path
) -> None:
    job_id = uuid.uuid4()
    payload: JsonObject = {
        "state": True,
        "steps": [
            {"name": "read", "command": 'n=$(cat "$BATCHYARD_STATE"); echo "${n:-0}"'},
            {"name": "bump", "command": 'read n; echo $((n + 1)) > "$BATCHYARD_STATE"; echo "$n"'},
        ],
    }
    async with dispatcher(archive_settings):
        for _ in range(3):
            stream = await run_of_job(store, job_id, payload)
            events = await wait_for(store, stream, ended)
            assert events[-1].type == "RunSucceeded"
        other = await run_of_job(store, uuid.uuid4(), payload)
        await wait_for(store, other, ended)
    async with await open_archive(archive_settings) as archive:
        target = tmp_path / "state-check"
        await archive.get_file(f"job-{job_id}", "state", target)
    assert target.read_text() == "3\n"
