"""The API's side of schedules and policies: next fire times and job state in the job view, manual
runs under the overlap policy (and `force`), reruns, backfills and run retention."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient

from contracts import streams
from contracts.envelope import EventMeta
from contracts.events import RunRejected, RunRendered, RunRequested
from shared.eventstore.store import EventStore
from tests.integration.api.conftest import create_job
from tests.polling import eventually

Client = TestClient[Any, Any]
TEST = EventMeta(actor="renderer-stand-in", correlation_id="test")


async def run_now(api: Client, job_id: str, **query: str) -> tuple[int, dict[str, Any]]:
    response = await api.post(f"/jobs/{job_id}/runs", params=query)
    return response.status, await response.json()


async def test_job_view_shows_next_fire_times_and_state(defined: Client) -> None:
    job = await create_job(defined, schedule={"cron": "0 30 9 * * MON-FRI", "timezone": "Europe/Stockholm"})
    assert job["state"] == "idle" and len(job["next_runs"]) == 5
    fires = [datetime.fromisoformat(t) for t in job["next_runs"]]
    assert fires == sorted(fires) and all(t > datetime.now(UTC) for t in fires)
    assert job["overlap"] == {"policy": "forbid", "concurrency_limit": None}
    paused = await (await defined.post(f"/jobs/{job['id']}/pause")).json()
    assert paused["state"] == "paused" and paused["next_runs"] == []


async def test_invalid_cron_is_a_422_naming_the_cron_field(defined: Client) -> None:
    response = await defined.post(
        "/jobs", json={"name": "n", "execution": "hello", "schedule": {"cron": "61 * * * *"}}
    )
    assert response.status == 422
    [error] = (await response.json())["errors"]
    assert error["field"] == "body.schedule.cron" and "minute field: 61 is out of range" in error["reason"]


async def test_a_manual_run_obeys_forbid_unless_forced(defined: Client) -> None:
    job = await create_job(defined)
    status, first = await run_now(defined, job["id"])
    assert status == 202 and first["status"] == "requested"
    status, problem = await run_now(defined, job["id"])
    assert status == 409 and problem["code"] == "overlap_forbidden" and first["id"] in problem["detail"]
    skipped = await (await defined.get(f"/runs/{problem['run_id']}")).json()
    assert skipped["status"] == "skipped" and first["id"] in skipped["reason"]
    status, forced = await run_now(defined, job["id"], force="true")
    assert status == 202 and forced["status"] == "requested"
    view = await (await defined.get(f"/jobs/{job['id']}")).json()
    assert view["state"] == "queued"
    bad = await defined.post(f"/jobs/{job['id']}/runs", params={"force": "maybe"})
    assert bad.status == 422 and (await bad.json())["errors"][0]["field"] == "query.force"


async def test_under_queue_a_second_manual_run_waits_and_a_third_is_skipped(defined: Client) -> None:
    job = await create_job(defined, overlap={"policy": "queue"})
    assert (await run_now(defined, job["id"]))[0] == 202
    status, waiting = await run_now(defined, job["id"])
    assert status == 202 and waiting["status"] == "queued"
    status, problem = await run_now(defined, job["id"])
    assert status == 409 and problem["code"] == "queue_full"


async def test_rerun_reuses_the_original_rendered_payload(defined: Client, store: EventStore) -> None:
    job = await create_job(defined, overlap={"policy": "allow"})
    _, original = await run_now(defined, job["id"])
    unrendered = await defined.post(f"/runs/{original['id']}/rerun")
    assert unrendered.status == 409
    payload = {"command": ["echo", "Luna"]}
    stream = streams.stream_id(streams.RUN, original["id"])
    rendered = RunRendered(
        run_id=uuid.UUID(original["id"]), driver="local", payload=payload, execution_version=1
    )
    await store.append(stream, [rendered], expected_version=1, meta=TEST)
    response = await defined.post(f"/runs/{original['id']}/rerun")
    assert response.status == 202, await response.text()
    again = await response.json()
    assert again["trigger"] == "rerun" and again["id"] != original["id"]
    events = await store.read_stream(streams.stream_id(streams.RUN, again["id"]))
    assert [e.type for e in events] == ["RunRequested", "RunRendered"]
    assert events[0].data["rerun_of"] == original["id"] and events[1].data["payload"] == payload
    missing = await defined.post(f"/runs/{uuid.uuid4()}/rerun")
    assert missing.status == 404


async def test_a_staged_run_shows_its_start_leaves_the_job_idle_and_reruns_start_at_once(
    defined: Client, store: EventStore
) -> None:
    job = await create_job(defined, overlap={"policy": "allow"}, schedule={"cron": "0 3 * * *"})
    run_id, tick = uuid.uuid4(), datetime.now(UTC) + timedelta(minutes=5)
    stream = streams.stream_id(streams.RUN, run_id)
    staged: list[Any] = [
        RunRequested(
            run_id=run_id,
            job_id=uuid.UUID(job["id"]),
            execution="hello",
            trigger="schedule",
            scheduled_at=tick,
            start_at=tick,
        ),
        RunRendered(
            run_id=run_id, driver="local", payload={"command": ["true"]}, execution_version=1, start_at=tick
        ),
    ]
    await store.append(stream, staged, expected_version=0, meta=TEST)

    async def rendered() -> dict[str, Any] | None:
        view: dict[str, Any] = await (await defined.get(f"/runs/{run_id}")).json()
        return view if view.get("status") == "rendered" else None

    view = await eventually(rendered)
    assert datetime.fromisoformat(view["start_at"]) == tick
    assert (await (await defined.get(f"/jobs/{job['id']}")).json())["state"] == "idle"
    response = await defined.post(f"/runs/{run_id}/rerun")
    assert response.status == 202, await response.text()
    again = (await response.json())["id"]
    events = await store.read_stream(streams.stream_id(streams.RUN, again))
    assert [e.data["start_at"] for e in events] == [None, None]


async def test_backfill_runs_each_tick_of_the_range_with_its_time_as_a_param(
    defined: Client, store: EventStore
) -> None:
    job = await create_job(defined, schedule={"cron": "@hourly"})
    response = await defined.post(
        f"/jobs/{job['id']}/backfill", json={"from": "2026-01-01T00:00:00Z", "to": "2026-01-01T03:00:00Z"}
    )
    assert response.status == 202, await response.text()
    result = await response.json()
    assert [datetime.fromisoformat(t).hour for t in result["scheduled_at"]] == [0, 1, 2]
    for run_id, tick in zip(result["runs"], result["scheduled_at"], strict=True):
        [event] = await store.read_stream(streams.stream_id(streams.RUN, run_id))
        assert event.data["trigger"] == "backfill"
        assert datetime.fromisoformat(event.data["overrides"]["scheduled_at"]) == datetime.fromisoformat(tick)
    reversed_range = await defined.post(
        f"/jobs/{job['id']}/backfill", json={"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}
    )
    assert reversed_range.status == 422
    too_long = await defined.post(
        f"/jobs/{job['id']}/backfill", json={"from": "2020-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}
    )
    assert too_long.status == 422 and (await too_long.json())["errors"][0]["field"] == "body.to"


async def test_retention_keeps_the_newest_finished_runs_of_a_job_and_the_events(
    defined: Client, store: EventStore
) -> None:
    job = await create_job(defined, overlap={"policy": "allow"}, keep_runs=2)
    run_ids = []
    for _ in range(4):
        _, run = await run_now(defined, job["id"])
        run_ids.append(run["id"])
    for run_id in run_ids:
        ended = RunRejected(run_id=uuid.UUID(run_id), reason="test")
        await store.append(streams.stream_id(streams.RUN, run_id), [ended], expected_version=1, meta=TEST)
    _, last = await run_now(defined, job["id"])
    page = await (await defined.get("/runs", params={"job_id": job["id"]})).json()
    assert [r["id"] for r in page["items"]] == [last["id"], run_ids[3], run_ids[2]]
    assert len(await store.read_stream(streams.stream_id(streams.RUN, run_ids[0]))) == 2
