"""One-off runs (`POST /runs`) and stop requests (`POST /runs/{id}/stop`)."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from contracts.envelope import EventMeta
from contracts.events import RunRendered, RunStarted, RunStopped, RunSucceeded
from services.api.context import CONTEXT
from shared.secrets import decrypt_value, load_private_key
from tests.integration.api.conftest import HELLO, create_job
from tests.integration.api.secret_keys import key_file, keyed_api, public_key_file

__all__ = ["key_file", "keyed_api", "public_key_file"]

Client = TestClient[Any, Any]
DISPATCHER = EventMeta(actor="dispatcher", correlation_id="test")


async def _events(api: Client, run_id: str) -> list[dict[str, Any]]:
    page = await (await api.get("/events", params={"stream": f"run-{run_id}"})).json()
    items: list[dict[str, Any]] = page["items"]
    return items


async def _record(api: Client, run_id: str, *events: Any, at_version: int) -> None:
    await api.app[CONTEXT].append(f"run-{run_id}", list(events), expected_version=at_version, meta=DISPATCHER)


async def _running(api: Client) -> str:
    """A job's run that the renderer rendered and a dispatcher started (events recorded directly)."""
    job = await create_job(api)
    run_id: str = (await (await api.post(f"/jobs/{job['id']}/runs")).json())["id"]
    rid = uuid.UUID(run_id)
    await _record(
        api,
        run_id,
        RunRendered(run_id=rid, driver="local", payload={"command": ["sleep", "60"]}, execution_version=1),
        RunStarted(run_id=rid, dispatcher="d1", handle={"pid": 4242}),
        at_version=1,
    )
    return run_id


async def test_one_off_run_records_a_request_without_a_job_and_answers_202(defined: Client) -> None:
    response = await defined.post(
        "/runs",
        json={"execution": "hello", "dimensions": {"audience": "sun"}, "params": {"greeting": "hi"}},
        headers={"X-Actor": "carol"},
    )
    assert response.status == 202, await response.text()
    run = await response.json()
    assert response.headers["Location"] == f"/runs/{run['id']}"
    assert run["status"] == "requested" and run["job_id"] is None and run["job_version"] is None
    assert run["trigger"] == "oneoff" and run["execution"] == "hello" and run["requested_by"] == "carol"
    assert run["overrides"] == {"greeting": "hi"}

    [requested] = await _events(defined, run["id"])
    assert requested["type"] == "RunRequested" and requested["actor"] == "carol"
    assert requested["data"]["job_id"] is None and requested["data"]["trigger"] == "oneoff"
    assert requested["data"]["dimensions"] == {"audience": "sun"}
    assert requested["data"]["overrides"] == {"greeting": "hi"}


async def test_one_off_run_of_undefined_execution_or_dimension_value_is_422_naming_them(
    defined: Client,
) -> None:
    response = await defined.post(
        "/runs", json={"execution": "nope", "dimensions": {"audience": "mars", "tier": "gold"}}
    )
    assert response.status == 422 and response.content_type == "application/problem+json"
    problem = await response.json()
    assert problem["type"].endswith("/unknown-references")
    assert problem["unknown"] == [
        "execution 'nope'",
        "value 'mars' of dimension 'audience'",
        "dimension 'tier'",
    ]
    assert (await (await defined.get("/runs")).json())["items"] == []


async def test_one_off_run_body_is_validated_field_by_field(defined: Client) -> None:
    missing = await defined.post("/runs", json={"params": {}})
    assert missing.status == 422
    assert [e["field"] for e in (await missing.json())["errors"]] == ["body.execution"]
    unknown_field = await defined.post("/runs", json={"execution": "hello", "steps": []})
    assert unknown_field.status == 422
    assert [e["field"] for e in (await unknown_field.json())["errors"]] == ["body.steps"]
    not_json = await defined.post("/runs", data=b"{", headers={"Content-Type": "application/json"})
    assert not_json.status == 400 and (await not_json.json())["type"].endswith("/invalid-json")


async def test_stop_records_the_request_with_its_actor_and_grace(defined: Client) -> None:
    run_id = await _running(defined)
    response = await defined.post(f"/runs/{run_id}/stop", json={"grace_s": 2.5}, headers={"X-Actor": "alice"})
    assert response.status == 202, await response.text()
    run = await response.json()
    assert run["status"] == "running" and run["stop_requested_at"] is not None
    assert run["stop_requested_by"] == "alice" and run["stopped_by"] is None

    stop = (await _events(defined, run_id))[-1]
    assert stop["type"] == "RunStopRequested" and stop["actor"] == "alice"
    assert stop["data"]["grace_s"] == 2.5


async def test_stop_without_a_body_leaves_the_grace_to_the_payload(defined: Client) -> None:
    run_id = await _running(defined)
    assert (await defined.post(f"/runs/{run_id}/stop")).status == 202
    assert (await _events(defined, run_id))[-1]["data"]["grace_s"] is None


async def test_a_second_stop_while_one_is_pending_answers_202_and_records_nothing(defined: Client) -> None:
    run_id = await _running(defined)
    first = await defined.post(f"/runs/{run_id}/stop", headers={"X-Actor": "alice"})
    second = await defined.post(f"/runs/{run_id}/stop", json={"grace_s": 0}, headers={"X-Actor": "bob"})
    assert first.status == second.status == 202
    assert (await second.json())["stop_requested_by"] == "alice"
    stops = [e for e in await _events(defined, run_id) if e["type"] == "RunStopRequested"]
    assert len(stops) == 1 and stops[0]["data"]["grace_s"] is None


async def test_concurrent_stops_record_one_request(defined: Client) -> None:
    run_id = await _running(defined)
    responses = await asyncio.gather(*(defined.post(f"/runs/{run_id}/stop") for _ in range(8)))
    assert [r.status for r in responses] == [202] * 8
    stops = [e for e in await _events(defined, run_id) if e["type"] == "RunStopRequested"]
    assert len(stops) == 1


async def test_stopping_a_run_that_ended_is_409_naming_how_it_ended(defined: Client) -> None:
    run_id = await _running(defined)
    await _record(defined, run_id, RunSucceeded(run_id=uuid.UUID(run_id)), at_version=3)
    response = await defined.post(f"/runs/{run_id}/stop")
    assert response.status == 409 and response.content_type == "application/problem+json"
    problem = await response.json()
    assert problem["type"].endswith("/invalid-transition") and problem["run_status"] == "succeeded"
    assert "already ended (succeeded)" in problem["detail"]
    assert [e["type"] for e in await _events(defined, run_id)][-1] == "RunSucceeded"


async def test_stop_of_an_unknown_run_is_404_and_a_bad_grace_is_422(defined: Client) -> None:
    assert (await defined.post(f"/runs/{uuid.uuid4()}/stop")).status == 404
    assert (await defined.post("/runs/not-a-uuid/stop")).status == 404
    run_id = await _running(defined)
    response = await defined.post(f"/runs/{run_id}/stop", json={"grace_s": -1})
    assert response.status == 422
    assert [e["field"] for e in (await response.json())["errors"]] == ["body.grace_s"]


async def test_the_run_view_shows_who_stopped_the_run_and_why_it_ended(defined: Client) -> None:
    run_id = await _running(defined)
    await defined.post(f"/runs/{run_id}/stop", headers={"X-Actor": "alice"})
    stopped = RunStopped(run_id=uuid.UUID(run_id), stopped_by="alice", reason="stop requested by alice")
    await _record(defined, run_id, stopped, at_version=4)
    run = await (await defined.get(f"/runs/{run_id}")).json()
    assert run["status"] == "stopped" and run["stopped_by"] == "alice"
    assert run["reason"] == "stop requested by alice"
    assert run["requested_at"] and run["started_at"] and run["ended_at"] and run["exit_code"] is None


async def test_a_requested_run_may_be_stopped_before_it_starts(defined: Client) -> None:
    job = await create_job(defined)
    run_id = (await (await defined.post(f"/jobs/{job['id']}/runs")).json())["id"]
    response = await defined.post(f"/runs/{run_id}/stop")
    assert response.status == 202 and (await response.json())["status"] == "requested"
    assert [e["type"] for e in await _events(defined, run_id)] == ["RunRequested", "RunStopRequested"]


async def test_one_off_run_secrets_are_encrypted_at_the_door_and_shown_masked(
    keyed_api: Client, pool: asyncpg.Pool, key_file: Path
) -> None:
    assert (await keyed_api.put("/executions/hello", json=HELLO)).status == 201
    secret = {"type": "secret", "value": "hunter2-one-off"}
    response = await keyed_api.post(
        "/runs", json={"execution": "hello", "params": {"db": {"password": secret}}}
    )
    assert response.status == 202, await response.text()
    run = await response.json()
    assert run["overrides"] == {"db": {"password": "***"}}
    async with pool.acquire() as conn:
        stored = await conn.fetchval("SELECT data::text FROM events WHERE stream_id = $1", f"run-{run['id']}")
    assert "hunter2-one-off" not in stored
    encrypted = json.loads(stored)["overrides"]["db"]["password"]
    assert encrypted["type"] == "secret"
    assert decrypt_value(load_private_key(key_file), encrypted["encrypted"]) == "hunter2-one-off"


async def test_one_off_run_with_a_secret_and_no_key_is_422_naming_the_param(defined: Client) -> None:
    secret = {"type": "secret", "value": "x"}
    response = await defined.post("/runs", json={"execution": "hello", "params": {"token": secret}})
    assert response.status == 422
    assert [e["field"] for e in (await response.json())["errors"]] == ["body.params.token"]
