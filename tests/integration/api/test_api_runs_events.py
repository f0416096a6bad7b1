"""Requesting runs, the run read model, the event history and its live SSE tail."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from contracts.envelope import EventMeta
from contracts.events import (
    RunFailed,
    RunLogArchived,
    RunLost,
    RunRejected,
    RunRendered,
    RunRetryScheduled,
    RunStarted,
    RunStopped,
    RunStopRequested,
    RunSucceeded,
    RunTimedOut,
)
from services.api.context import CONTEXT
from tests.integration.api.conftest import create_job

Client = TestClient[Any, Any]


async def test_run_request_snapshots_the_job_and_answers_202_with_the_run(defined: Client) -> None:
    job = await create_job(defined, params={"a": 1})
    response = await defined.post(
        f"/jobs/{job['id']}/runs", json={"params": {"a": 2}}, headers={"X-Actor": "bob"}
    )
    assert response.status == 202
    run = await response.json()
    assert response.headers["Location"] == f"/runs/{run['id']}"
    assert run["status"] == "requested" and run["job_id"] == job["id"] and run["requested_by"] == "bob"
    assert run["overrides"] == {"a": 2} and run["job_version"] == 1

    [requested] = (await (await defined.get("/events", params={"stream": f"run-{run['id']}"})).json())[
        "items"
    ]
    assert requested["type"] == "RunRequested"
    assert requested["data"]["params"] == {"a": 1} and requested["data"]["dimensions"] == {"audience": "moon"}
    assert requested["data"]["execution"] == "hello"


async def test_run_read_model_follows_the_lifecycle(defined: Client) -> None:
    job = await create_job(defined)
    run = await (await defined.post(f"/jobs/{job['id']}/runs")).json()
    run_id = uuid.UUID(run["id"])
    ctx = defined.app[CONTEXT]
    events = [
        RunRendered(run_id=run_id, driver="local", payload={}, execution_version=1),
        RunStarted(run_id=run_id, dispatcher="d", handle={"pid": 7}),
        RunFailed(run_id=run_id, exit_code=3, reason="exit status 3"),
    ]
    await ctx.append(
        f"run-{run_id}", events, expected_version=1, meta=EventMeta(actor="d", correlation_id="c")
    )
    body = await (await defined.get(f"/runs/{run_id}")).json()
    assert body["status"] == "failed" and body["exit_code"] == 3 and body["reason"] == "exit status 3"
    assert body["started_at"] is not None and body["ended_at"] is not None
    listed = await (await defined.get("/runs", params={"job_id": job["id"], "status": "failed"})).json()
    assert [r["id"] for r in listed["items"]] == [run["id"]]
    assert (await defined.get(f"/runs/{uuid.uuid4()}")).status == 404


async def test_runs_page_newest_first(defined: Client) -> None:
    job = await create_job(defined, overlap={"policy": "allow"})
    ids = [(await (await defined.post(f"/jobs/{job['id']}/runs")).json())["id"] for _ in range(5)]
    first = await (await defined.get("/runs", params={"limit": 3})).json()
    second = await (await defined.get("/runs", params={"limit": 3, "cursor": first["next_cursor"]})).json()
    assert [r["id"] for r in first["items"] + second["items"]] == ids[::-1]
    assert second["next_cursor"] is None


async def test_events_page_by_cursor_and_filter_by_type_and_position(defined: Client) -> None:
    for _ in range(3):
        await create_job(defined)
    everything = (await (await defined.get("/events")).json())["items"]
    positions = [e["position"] for e in everything]
    assert positions == sorted(positions) and len(positions) == 6

    collected: list[int] = []
    params: dict[str, Any] = {"limit": 4}
    while True:
        page = await (await defined.get("/events", params=params)).json()
        collected += [e["position"] for e in page["items"]]
        if not page["next_cursor"]:
            break
        params["cursor"] = page["next_cursor"]
    assert collected == positions

    created = (await (await defined.get("/events", params={"type": "JobCreated"})).json())["items"]
    assert len(created) == 3 and {e["type"] for e in created} == {"JobCreated"}
    later = (await (await defined.get("/events", params={"after": positions[3]})).json())["items"]
    assert [e["position"] for e in later] == positions[4:]
    assert (await defined.get("/events", params={"after": "-1"})).status == 422


async def _read_sse(response: ClientResponse, count: int) -> list[dict[str, str]]:
    messages: list[dict[str, str]] = []
    current: dict[str, str] = {}
    async with asyncio.timeout(10):
        while len(messages) < count:
            line = (await response.content.readline()).decode().rstrip("\n")
            if not line:
                if "data" in current:
                    messages.append(current)
                current = {}
            elif not line.startswith(":"):
                key, _, value = line.partition(": ")
                current[key] = value
    return messages


async def test_sse_tails_live_events_and_resumes_from_last_event_id(defined: Client) -> None:
    response = await defined.get("/events/stream", params={"type": "JobCreated"})
    assert response.status == 200 and response.headers["Content-Type"].startswith("text/event-stream")
    jobs = [await create_job(defined, name=f"j{i}") for i in range(3)]
    messages = await _read_sse(response, 3)
    response.close()
    assert [m["event"] for m in messages] == ["JobCreated"] * 3
    assert [json.loads(m["data"])["data"]["job_id"] for m in messages] == [j["id"] for j in jobs]
    assert [json.loads(m["data"])["position"] for m in messages] == [int(m["id"]) for m in messages]

    resumed = await defined.get(
        "/events/stream", headers={"Last-Event-ID": messages[0]["id"]}, params={"type": "JobCreated"}
    )
    again = await _read_sse(resumed, 2)
    resumed.close()
    assert [m["id"] for m in again] == [m["id"] for m in messages[1:]]


async def test_sse_refuses_a_malformed_last_event_id(defined: Client) -> None:
    response = await defined.get("/events/stream", headers={"Last-Event-ID": "abc"})
    assert response.status == 400 and response.content_type == "application/problem+json"


async def test_every_run_event_type_projects_to_the_run_view(defined: Client) -> None:
    job = await create_job(defined, overlap={"policy": "allow"})
    ctx = defined.app[CONTEXT]
    meta = EventMeta(actor="dispatcher", correlation_id="c")

    async def run_with(*events_of: Any) -> dict[str, Any]:
        run = await (await defined.post(f"/jobs/{job['id']}/runs")).json()
        run_id = uuid.UUID(run["id"])
        version = 1
        for make in events_of:
            await ctx.append(f"run-{run_id}", [make(run_id)], expected_version=version, meta=meta)
            version += 1
        view: dict[str, Any] = await (await defined.get(f"/runs/{run_id}")).json()
        return view

    def rendered(r: uuid.UUID) -> RunRendered:
        return RunRendered(run_id=r, driver="local", payload={}, execution_version=1)

    def started(r: uuid.UUID) -> RunStarted:
        return RunStarted(run_id=r, dispatcher="d", handle={})

    assert (await run_with(rendered))["status"] == "rendered"
    running = await run_with(rendered, started)
    assert running["status"] == "running" and running["started_at"] and running["ended_at"] is None
    rejected = await run_with(lambda r: RunRejected(run_id=r, reason="syntax error", line=1, column=2))
    assert rejected["status"] == "rejected" and rejected["reason"] == "syntax error" and rejected["ended_at"]
    succeeded = await run_with(rendered, started, lambda r: RunSucceeded(run_id=r))
    assert succeeded["status"] == "succeeded" and succeeded["exit_code"] == 0
    timed_out = await run_with(rendered, started, lambda r: RunTimedOut(run_id=r, timeout_s=30))
    assert timed_out["status"] == "timed_out" and timed_out["reason"] == "timed out after 30 s"
    stopping = await run_with(rendered, started, lambda r: RunStopRequested(run_id=r))
    assert stopping["status"] == "running" and stopping["stop_requested_at"]
    stopped = await run_with(
        rendered,
        started,
        lambda r: RunStopRequested(run_id=r),
        lambda r: RunStopped(run_id=r, stopped_by="a", reason="asked"),
    )
    assert stopped["status"] == "stopped" and stopped["reason"] == "asked"
    lost = await run_with(rendered, started, lambda r: RunLost(run_id=r, reason="lease expired"))
    assert lost["status"] == "lost" and lost["reason"] == "lease expired"
    next_run = uuid.uuid4()
    retried = await run_with(
        rendered,
        started,
        lambda r: RunFailed(run_id=r, exit_code=1, reason="exit status 1"),
        lambda r: RunRetryScheduled(run_id=r, next_run_id=next_run, attempt=1, due_at="2026-01-01T00:00:00Z"),
        lambda r: RunLogArchived(run_id=r, bytes=5, sha256="a" * 64, location="file:///l"),
    )
    assert (
        retried["status"] == "failed"
        and retried["exit_code"] == 1
        and retried["next_run_id"] == str(next_run)
    )
    assert retried["log"] == {"bytes": 5, "sha256": "a" * 64, "location": "file:///l"}
