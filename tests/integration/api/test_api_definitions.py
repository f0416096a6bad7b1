"""Executions, dimensions and whole state files through the HTTP API."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.integration.api.conftest import AUDIENCE, HELLO, create_job

Client = TestClient[Any, Any]


async def _events(api: Client, **params: Any) -> list[dict[str, Any]]:
    response = await api.get("/events", params={"limit": 500, **params})
    items: list[dict[str, Any]] = (await response.json())["items"]
    return items


async def test_put_defines_then_redefines_and_identical_put_records_nothing(api: Client) -> None:
    created = await api.put("/executions/hello", json=HELLO)
    assert created.status == 201
    body = await created.json()
    assert body["name"] == "hello" and body["version"] == 1 and body["spec"]["driver"] == "local"
    assert (await api.put("/executions/hello", json=HELLO)).status == 200
    changed = await api.put("/executions/hello", json=HELLO | {"default_params": {}})
    assert changed.status == 200 and (await changed.json())["version"] == 2
    types = [e["type"] for e in await _events(api, stream="execution-hello")]
    assert types == ["ExecutionDefined", "ExecutionRedefined"]
    listing = await (await api.get("/executions")).json()
    assert [e["name"] for e in listing["items"]] == ["hello"]


async def test_striv_execution_fields_are_accepted(api: Client) -> None:
    striv = HELLO | {"name": "Hello world", "logstore": "default", "default_params": {"db.host": "x"}}
    response = await api.put("/executions/striv", json=striv)
    assert response.status == 201
    assert (await response.json())["spec"]["logstore"] == "default"


async def test_definition_errors_are_problems(api: Client) -> None:
    bad = await api.put("/executions/hello", json={"driver": "kubernetes", "payload_template": "{}"})
    assert bad.status == 422
    assert (await bad.json())["errors"][0]["field"] == "body.driver"
    assert (await api.put("/executions/bad name!", json=HELLO)).status == 422
    assert (await api.get("/executions/nope")).status == 404
    assert (await api.delete("/executions/nope")).status == 404
    assert (await api.get("/dimensions/nope")).status == 404
    malformed = await api.put("/dimensions/d", data="{not json", headers={"Content-Type": "application/json"})
    assert malformed.status == 400 and (await malformed.json())["type"].endswith("/invalid-json")


async def test_removing_a_used_execution_is_409_listing_jobs_unless_forced(defined: Client) -> None:
    job = await create_job(defined)
    refused = await defined.delete("/executions/hello")
    assert refused.status == 409
    assert (await refused.json())["jobs"] == [job["id"]]
    assert (await defined.delete("/executions/hello", params={"force": "true"})).status == 204
    assert (await defined.get("/executions/hello")).status == 404


async def test_dropping_a_used_dimension_value_is_409_unless_forced(defined: Client) -> None:
    job = await create_job(defined, dimensions={"audience": "moon"})
    only_sun = {"priority": 1, "values": {"sun": {}}}
    refused = await defined.put("/dimensions/audience", json=only_sun)
    assert refused.status == 409 and (await refused.json())["jobs"] == [job["id"]]
    assert (await defined.delete("/dimensions/audience")).status == 409
    forced = await defined.put("/dimensions/audience", json=only_sun, params={"force": "true"})
    assert forced.status == 200 and list((await forced.json())["spec"]["values"]) == ["sun"]


async def test_state_applies_as_one_state_loaded_causing_each_definition_event(api: Client) -> None:
    state = {"executions": {"hello": HELLO, "bye": HELLO}, "dimensions": {"audience": AUDIENCE}}
    response = await api.post("/state", json=state, headers={"X-Actor": "ci"})
    assert response.status == 200
    result = await response.json()
    assert result["recorded"] is True and result["dry_run"] is False
    assert result["executions"] == {"added": ["bye", "hello"], "changed": [], "removed": []}
    assert result["dimensions"]["added"] == ["audience"]

    [loaded] = await _events(api, stream="state-main")
    assert loaded["type"] == "StateLoaded" and loaded["actor"] == "ci"
    definitions = [e for e in await _events(api) if e["stream_id"] != "state-main"]
    assert len(definitions) == 3
    assert {e["causation_id"] for e in definitions} == {loaded["id"]}
    assert {e["correlation_id"] for e in definitions} == {loaded["correlation_id"]}

    again = await (await api.post("/state", json=state)).json()
    assert again["recorded"] is False
    assert len(await _events(api)) == 4


async def test_state_dry_run_answers_the_diff_and_records_nothing(defined: Client) -> None:
    before = len(await _events(defined))
    new_state = {"executions": {"bye": HELLO}, "dimensions": {"audience": AUDIENCE | {"priority": 5}}}
    response = await defined.post("/state", json=new_state, params={"dry_run": "true"})
    result = await response.json()
    assert response.status == 200 and result["recorded"] is False
    assert result["executions"] == {"added": ["bye"], "changed": [], "removed": ["hello"]}
    assert result["dimensions"] == {"added": [], "changed": ["audience"], "removed": []}
    assert len(await _events(defined)) == before


async def test_state_removing_used_definitions_is_409_listing_jobs_unless_forced(defined: Client) -> None:
    job = await create_job(defined)
    empty: dict[str, Any] = {"executions": {}, "dimensions": {}}
    refused = await defined.post("/state", json=empty)
    assert refused.status == 409
    problem = await refused.json()
    assert problem["jobs"] == [job["id"]]
    assert set(problem["blocked"]) == {"execution hello", "dimension audience"}
    forced = await defined.post("/state", json=empty, params={"force": "true"})
    assert forced.status == 200
    assert (await forced.json())["executions"]["removed"] == ["hello"]
    assert (await (await defined.get("/executions")).json())["items"] == []
