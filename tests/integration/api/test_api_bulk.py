"""Bulk pause, resume and run along dimension values: one event per job, one correlation id."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.integration.api.conftest import HELLO, create_job

Client = TestClient[Any, Any]

CUSTOMER = {"priority": 2, "values": {"acme": {}, "globex": {}}}


async def _setup(api: Client) -> dict[str, dict[str, Any]]:
    state = {
        "executions": {"hello": HELLO, "bye": HELLO},
        "dimensions": {"customer": CUSTOMER, "env": {"priority": 1, "values": {"prod": {}, "test": {}}}},
    }
    assert (await api.post("/state", json=state)).status == 200
    jobs = {}
    for name, execution, customer, env in [
        ("acme-prod", "hello", "acme", "prod"),
        ("acme-test", "hello", "acme", "test"),
        ("acme-bye", "bye", "acme", "prod"),
        ("globex-prod", "hello", "globex", "prod"),
    ]:
        jobs[name] = await create_job(
            api, name=name, execution=execution, dimensions={"customer": customer, "env": env}
        )
    return jobs


async def _bulk(
    api: Client, action: str, body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> Any:
    response = await api.post(f"/jobs/{action}", json=body, headers=headers or {})
    assert response.status == status, await response.text()
    return await response.json()


async def _events(api: Client, **params: Any) -> list[dict[str, Any]]:
    response = await api.get("/events", params={"limit": 500, **params})
    items: list[dict[str, Any]] = (await response.json())["items"]
    return items


def _outcomes(result: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["outcome"] for item in result["items"]}


async def test_bulk_pause_records_one_event_per_job_under_one_correlation_id(api: Client) -> None:
    jobs = await _setup(api)
    result = await _bulk(
        api,
        "pause",
        {"dimensions": {"customer": "acme"}, "reason": "invoice unpaid"},
        headers={"X-Actor": "support"},
    )
    assert result["action"] == "pause" and result["matched"] == 3 and result["changed"] == 3
    assert _outcomes(result) == {"acme-prod": "changed", "acme-test": "changed", "acme-bye": "changed"}
    paused = [e for e in await _events(api, type="JobPaused")]
    assert len(paused) == 3
    assert {e["correlation_id"] for e in paused} == {result["correlation_id"]}
    assert {e["actor"] for e in paused} == {"support"}
    assert {e["stream_id"] for e in paused} == {
        f"job-{jobs[n]['id']}" for n in ("acme-prod", "acme-test", "acme-bye")
    }
    listed = await (await api.get("/jobs", params={"state": "paused"})).json()
    assert sorted(j["name"] for j in listed["items"]) == ["acme-bye", "acme-prod", "acme-test"]
    assert {j["pause_reason"] for j in listed["items"]} == {"invoice unpaid"}
    globex = await (await api.get(f"/jobs/{jobs['globex-prod']['id']}")).json()
    assert globex["enabled"] is True


async def test_bulk_selects_like_the_job_list_and_reports_jobs_already_in_that_state(api: Client) -> None:
    jobs = await _setup(api)
    assert (await api.post(f"/jobs/{jobs['acme-prod']['id']}/pause")).status == 200
    result = await _bulk(
        api, "pause", {"dimensions": {"customer": "acme", "env": "prod"}, "execution": "hello"}
    )
    assert _outcomes(result) == {"acme-prod": "unchanged"}
    assert "already paused" in result["items"][0]["reason"]
    resumed = await _bulk(
        api, "resume", {"dimensions": {"env": "prod"}}, headers={"X-Correlation-Id": "ticket-17"}
    )
    assert resumed["correlation_id"] == "ticket-17"
    assert _outcomes(resumed) == {"acme-prod": "changed", "acme-bye": "unchanged", "globex-prod": "unchanged"}
    [event] = await _events(api, type="JobResumed")
    assert event["correlation_id"] == "ticket-17"


async def test_bulk_run_requests_one_run_per_job_with_overrides(api: Client) -> None:
    await _setup(api)
    result = await _bulk(
        api,
        "runs",
        {"dimensions": {"customer": "acme"}, "state": "enabled", "params": {"db.host": "replica"}},
    )
    assert result["changed"] == 3 and all(item["run_id"] for item in result["items"])
    runs = (await (await api.get("/runs")).json())["items"]
    assert {r["id"] for r in runs} == {item["run_id"] for item in result["items"]}
    assert all(r["overrides"] == {"db.host": "replica"} and r["trigger"] == "manual" for r in runs)
    requested = await _events(api, type="RunRequested")
    assert {e["correlation_id"] for e in requested} == {result["correlation_id"]}


async def test_a_selector_matching_nothing_answers_an_empty_result(api: Client) -> None:
    await _setup(api)
    result = await _bulk(api, "pause", {"dimensions": {"customer": "globex", "env": "test"}})
    assert result["matched"] == 0 and result["items"] == []


async def test_bulk_refuses_an_empty_or_unknown_selector(api: Client) -> None:
    await _setup(api)
    empty = await _bulk(api, "pause", {}, status=422)
    assert "select jobs by" in empty["detail"]
    unknown = await _bulk(api, "resume", {"dimensions": {"customer": "initech", "region": "eu"}}, status=422)
    assert unknown["unknown"] == ["value 'initech' of dimension 'customer'", "dimension 'region'"]
    typo = await _bulk(api, "runs", {"dimensions": {"customer": "acme"}, "paramz": {}}, status=422)
    assert typo["errors"][0]["field"] == "body.paramz"
    assert await _events(api, type="JobPaused") == []


async def test_get_on_a_bulk_path_is_still_a_job_lookup(api: Client) -> None:
    response = await api.get("/jobs/pause")
    assert response.status == 404
