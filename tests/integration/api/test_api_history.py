"""`GET /jobs/{id}/history`: who changed what and when, folded from the job's events."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.integration.api.conftest import create_job
from tests.integration.api.secret_keys import key_file, keyed_api, public_key_file

__all__ = ["key_file", "keyed_api", "public_key_file"]

Client = TestClient[Any, Any]


async def _history(api: Client, job_id: str, **params: Any) -> dict[str, Any]:
    response = await api.get(f"/jobs/{job_id}/history", params=params)
    assert response.status == 200, await response.text()
    page: dict[str, Any] = await response.json()
    return page


def _changes(item: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {c["field"]: (c["before"], c["after"]) for c in item["changes"]}


async def test_history_shows_who_changed_what_and_when_with_before_and_after(defined: Client) -> None:
    job = await create_job(defined, params={"db": {"host": "a", "port": 1}})
    job_id = job["id"]
    patch = {"params": {"db": {"host": "b", "port": 1}, "extra": True}, "dimensions": {"audience": "sun"}}
    response = await defined.patch(
        f"/jobs/{job_id}", json=patch, headers={"X-Actor": "alice", "X-Correlation-Id": "change-42"}
    )
    assert response.status == 200
    await defined.post(
        f"/jobs/{job_id}/pause", json={"reason": "customer on holiday"}, headers={"X-Actor": "bob"}
    )
    await defined.post(f"/jobs/{job_id}/resume")
    await defined.delete(f"/jobs/{job_id}")

    page = await _history(defined, job_id)
    created, updated, paused, resumed, deleted = page["items"]
    assert [i["type"] for i in page["items"]] == [
        "JobCreated",
        "JobUpdated",
        "JobPaused",
        "JobResumed",
        "JobDeleted",
    ]
    assert [i["version"] for i in page["items"]] == [1, 2, 3, 4, 5]
    assert _changes(created)["params.db.host"] == (None, "a")
    assert _changes(created)["execution"] == (None, "hello")
    assert updated["actor"] == "alice" and updated["correlation_id"] == "change-42"
    assert _changes(updated) == {
        "params.db.host": ("a", "b"),
        "params.extra": (None, True),
        "dimensions.audience": ("moon", "sun"),
    }
    assert _changes(paused) == {"enabled": (True, False)}
    assert paused["actor"] == "bob" and paused["reason"] == "customer on holiday"
    assert _changes(resumed) == {"enabled": (False, True)}
    assert deleted["changes"] == [] and page["next_cursor"] is None
    assert updated["time"] <= paused["time"]


async def test_history_is_paged_oldest_first(defined: Client) -> None:
    job = await create_job(defined)
    for name in ("two", "three", "four"):
        assert (await defined.patch(f"/jobs/{job['id']}", json={"name": name})).status == 200
    first = await _history(defined, job["id"], limit=3)
    assert [i["version"] for i in first["items"]] == [1, 2, 3]
    rest = await _history(defined, job["id"], limit=3, cursor=first["next_cursor"])
    assert [i["version"] for i in rest["items"]] == [4] and rest["next_cursor"] is None
    assert _changes(rest["items"][0]) == {"name": ("three", "four")}


async def test_a_changed_secret_shows_as_changed_without_its_value(keyed_api: Client) -> None:
    hello = {"driver": "local", "payload_template": "{command: ['true']}"}
    assert (await keyed_api.put("/executions/hello", json=hello)).status == 201
    body = {"name": "j", "execution": "hello", "params": {"pw": {"type": "secret", "value": "first-pw"}}}
    job = (await (await keyed_api.post("/jobs", json=body)).json())["id"]
    new_secret = {"params": {"pw": {"type": "secret", "value": "second-pw"}}}
    assert (await keyed_api.patch(f"/jobs/{job}", json=new_secret)).status == 200
    response = await keyed_api.get(f"/jobs/{job}/history")
    text = await response.text()
    assert "first-pw" not in text and "second-pw" not in text and "encrypted" not in text
    _, updated = (await response.json())["items"]
    assert _changes(updated) == {"params.pw": ("***", "***")}


async def test_history_of_an_unknown_job_is_404_and_a_bad_cursor_422(defined: Client) -> None:
    assert (await defined.get("/jobs/00000000-0000-0000-0000-000000000000/history")).status == 404
    job = await create_job(defined)
    bad = await defined.get(f"/jobs/{job['id']}/history", params={"cursor": "nope"})
    assert bad.status == 422 and (await bad.json())["errors"][0]["field"] == "query.cursor"
