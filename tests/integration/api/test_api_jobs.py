"""Jobs through the HTTP API: create, read, list with filters, update with If-Match, pause, resume, delete."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient

from tests.integration.api.conftest import create_job

Client = TestClient[Any, Any]


async def test_created_job_is_readable_right_away_with_its_version_as_etag(defined: Client) -> None:
    job = await create_job(defined, params={"x": 1})
    response = await defined.get(f"/jobs/{job['id']}")
    assert response.status == 200
    assert response.headers["ETag"] == '"1"'
    body = await response.json()
    assert body["execution"] == "hello" and body["params"] == {"x": 1} and body["enabled"] is True
    assert body["created_by"] == "anonymous"


async def test_create_records_actor_and_echoes_correlation_id(defined: Client) -> None:
    response = await defined.post(
        "/jobs",
        json={"name": "n", "execution": "hello"},
        headers={"X-Actor": "alice", "X-Correlation-Id": "req-42"},
    )
    assert response.status == 201 and response.headers["X-Correlation-Id"] == "req-42"
    job = await response.json()
    events = await (await defined.get("/events", params={"stream": f"job-{job['id']}"})).json()
    [created] = events["items"]
    assert created["type"] == "JobCreated" and created["actor"] == "alice"
    assert created["correlation_id"] == "req-42"


async def test_create_with_unknown_references_is_422_naming_them(defined: Client) -> None:
    response = await defined.post(
        "/jobs", json={"name": "n", "execution": "nope", "dimensions": {"audience": "mars", "planet": "x"}}
    )
    assert response.status == 422
    assert response.content_type == "application/problem+json"
    problem = await response.json()
    assert problem["unknown"] == [
        "execution 'nope'",
        "value 'mars' of dimension 'audience'",
        "dimension 'planet'",
    ]


async def test_invalid_body_names_field_and_reason(defined: Client) -> None:
    response = await defined.post(
        "/jobs", json={"name": "n", "execution": "hello", "schedule": {"cron": "every tuesday"}}
    )
    assert response.status == 422
    problem = await response.json()
    [error] = problem["errors"]
    assert error["field"] == "body.schedule.cron" and "expected 5 fields" in error["reason"]


async def test_list_filters_by_execution_state_and_dimension_with_cursor_paging(defined: Client) -> None:
    moon = [await create_job(defined, name=f"m{i}") for i in range(3)]
    sun = await create_job(defined, name="s", dimensions={"audience": "sun"})
    await defined.post(f"/jobs/{moon[1]['id']}/pause", json={"reason": "maintenance"})

    async def ids(**params: Any) -> list[str]:
        response = await defined.get("/jobs", params=params)
        assert response.status == 200, await response.text()
        return [j["id"] for j in (await response.json())["items"]]

    assert await ids(dimension="audience:sun") == [sun["id"]]
    assert await ids(dimension="audience:moon", state="paused") == [moon[1]["id"]]
    assert await ids(state="enabled", execution="hello") == [moon[0]["id"], moon[2]["id"], sun["id"]]
    assert await ids(execution="other") == []

    seen: list[str] = []
    params: dict[str, Any] = {"limit": 3}
    while True:
        page = await (await defined.get("/jobs", params=params)).json()
        seen += [j["id"] for j in page["items"]]
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert seen == [*(j["id"] for j in moon), sun["id"]]


async def test_bad_list_parameters_are_422(defined: Client) -> None:
    for params in ({"limit": "0"}, {"state": "sleeping"}, {"cursor": "garbage"}, {"dimension": "nocolon"}):
        response = await defined.get("/jobs", params=params)
        assert response.status == 422, params
        assert (await response.json())["errors"][0]["field"].startswith("query.")


async def test_patch_changes_fields_and_bumps_version(defined: Client) -> None:
    job = await create_job(defined)
    response = await defined.patch(
        f"/jobs/{job['id']}",
        json={"params": {"a": 1}, "schedule": {"cron": "*/5 * * * *"}},
        headers={"If-Match": '"1"'},
    )
    assert response.status == 200, await response.text()
    assert response.headers["ETag"] == '"2"'
    body = await response.json()
    assert body["params"] == {"a": 1} and body["schedule"]["cron"] == "*/5 * * * *"
    cleared = await defined.patch(f"/jobs/{job['id']}", json={"schedule": None})
    assert (await cleared.json())["schedule"] is None


async def test_fifty_concurrent_patches_with_one_if_match_exactly_one_wins(defined: Client) -> None:
    job = await create_job(defined)
    responses = await asyncio.gather(
        *(
            defined.patch(f"/jobs/{job['id']}", json={"name": f"name-{i}"}, headers={"If-Match": '"1"'})
            for i in range(50)
        )
    )
    statuses = sorted(r.status for r in responses)
    assert statuses == [200] + [409] * 49
    conflict = next(r for r in responses if r.status == 409)
    assert conflict.content_type == "application/problem+json"
    assert (await conflict.json())["type"].endswith("/concurrency")


async def test_stale_if_match_is_409_and_malformed_if_match_is_400(defined: Client) -> None:
    job = await create_job(defined)
    await defined.post(f"/jobs/{job['id']}/pause")
    stale = await defined.post(f"/jobs/{job['id']}/resume", headers={"If-Match": '"1"'})
    assert stale.status == 409
    malformed = await defined.delete(f"/jobs/{job['id']}", headers={"If-Match": "yesterday"})
    assert malformed.status == 400
    assert (await malformed.json())["errors"][0]["field"] == "header.If-Match"


async def test_pause_resume_refuse_invalid_transitions(defined: Client) -> None:
    job = await create_job(defined)
    resumed = await defined.post(f"/jobs/{job['id']}/resume")
    assert resumed.status == 409 and "not paused" in (await resumed.json())["detail"]
    paused = await defined.post(f"/jobs/{job['id']}/pause", json={"reason": "holiday"})
    assert paused.status == 200
    assert (await paused.json())["enabled"] is False and (await paused.json())["pause_reason"] == "holiday"
    assert (await defined.post(f"/jobs/{job['id']}/pause")).status == 409
    resumed = await defined.post(f"/jobs/{job['id']}/resume")
    assert resumed.status == 200 and (await resumed.json())["enabled"] is True


async def test_deleted_job_is_gone_and_refuses_commands(defined: Client) -> None:
    job = await create_job(defined)
    assert (await defined.delete(f"/jobs/{job['id']}")).status == 204
    assert (await defined.get(f"/jobs/{job['id']}")).status == 404
    again = await defined.post(f"/jobs/{job['id']}/pause")
    assert again.status == 409 and "deleted" in (await again.json())["detail"]
    assert (await defined.post(f"/jobs/{job['id']}/runs")).status == 409


async def test_unknown_job_ids_are_404(defined: Client) -> None:
    for path in ("/jobs/00000000-0000-0000-0000-000000000000", "/jobs/not-a-uuid"):
        response = await defined.get(path)
        assert response.status == 404 and response.content_type == "application/problem+json"
    assert (await defined.post("/jobs/00000000-0000-0000-0000-000000000000/pause")).status == 404


async def test_conflicting_dimension_filters_match_nothing(defined: Client) -> None:
    await create_job(defined)
    response = await defined.get(
        "/jobs", params=[("dimension", "audience:moon"), ("dimension", "audience:sun")]
    )
    assert response.status == 200 and (await response.json())["items"] == []


async def test_an_overlong_actor_header_is_422_naming_the_header(defined: Client) -> None:
    response = await defined.post(
        "/jobs", json={"name": "n", "execution": "hello"}, headers={"X-Actor": "a" * 201}
    )
    assert response.status == 422
    assert (await response.json())["errors"][0]["field"] == "header.X-Actor"


async def test_non_object_bodies_are_422_and_broken_json_is_400(defined: Client) -> None:
    listed = await defined.post("/jobs", json=[1, 2])
    assert listed.status == 422 and (await listed.json())["errors"][0]["field"] == "body"
    broken = await defined.post("/jobs", data=b'{"name": ', headers={"Content-Type": "application/json"})
    assert broken.status == 400 and "line 1" in (await broken.json())["detail"]
    missing = await defined.post("/jobs")
    assert missing.status == 400
    latin = await defined.post(
        "/jobs", data=b'{"name": "\xff"}', headers={"Content-Type": "application/json"}
    )
    assert latin.status == 400 and (await latin.json())["detail"] == "the body is not UTF-8"
