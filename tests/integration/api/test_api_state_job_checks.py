"""Jobs whose own params cannot render are refused at the door, when a renderer is there to ask."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from services.renderer.service import start as start_renderer
from shared.service import open_runtime
from shared.settings import Settings

Client = TestClient[Any, Any]

STRICT = {
    "driver": "local",
    "payload_template": "{command: ['psql', '-h', params.db.host, '-p', std.toString(params.db.port)]}",
    "default_params": {"db.port": 5432},
    "required_params": ["db.host", "region"],
}
BROKEN = {"driver": "local", "payload_template": "{command: ['echo', params.nope]}"}
STATE = {
    "executions": {"strict": STRICT, "broken": BROKEN},
    "dimensions": {"customer": {"priority": 1, "values": {"acme": {"params": {"region": "eu"}}, "bare": {}}}},
}


@pytest.fixture
async def renderer(settings: Settings) -> AsyncIterator[None]:
    async with open_runtime(settings, "renderer", relay=False) as runtime:
        stop = await start_renderer(runtime)
        await runtime.nc.flush()
        yield
        if stop is not None:
            await stop()


async def _jobs_recorded(api: Client) -> int:
    response = await api.get("/events", params={"type": "JobCreated"})
    return len((await response.json())["items"])


async def test_a_missing_required_param_is_422_naming_it_and_the_job(api: Client, renderer: None) -> None:
    assert (await api.post("/state", json=STATE)).status == 200
    body = {"name": "nightly", "execution": "strict", "dimensions": {"customer": "acme"}}
    response = await api.post("/jobs", json=body)
    problem = await response.json()
    assert response.status == 422 and problem["type"].endswith("/missing-params")
    assert "'db.host'" in problem["detail"] and "job 'nightly'" in problem["detail"]
    assert problem["errors"][0]["field"] == "body.params.db.host"
    assert await _jobs_recorded(api) == 0

    complete = body | {"params": {"db.host": "db.acme"}}
    created = await api.post("/jobs", json=complete)
    assert created.status == 201
    job = await created.json()
    moved = await api.patch(f"/jobs/{job['id']}", json={"dimensions": {"customer": "bare"}})
    problem = await moved.json()
    assert moved.status == 422 and "'region'" in problem["detail"] and job["id"] in problem["detail"]
    assert (await (await api.get(f"/jobs/{job['id']}")).json())["dimensions"] == {"customer": "acme"}


async def test_conflicting_dotted_keys_are_422_naming_the_key(api: Client, renderer: None) -> None:
    assert (await api.post("/state", json=STATE)).status == 200
    params = {"db": {"host": "a"}, "db.host": "b", "region": "eu"}
    response = await api.post("/jobs", json={"name": "j", "execution": "strict", "params": params})
    problem = await response.json()
    assert response.status == 422 and problem["type"].endswith("/params")
    assert "db.host" in problem["errors"][0]["field"]


async def test_a_template_error_is_left_to_render_time(api: Client, renderer: None) -> None:
    assert (await api.post("/state", json=STATE)).status == 200
    response = await api.post("/jobs", json={"name": "j", "execution": "broken"})
    assert response.status == 201


async def test_without_a_renderer_the_job_is_recorded_unchecked(api: Client) -> None:
    assert (await api.post("/state", json=STATE)).status == 200
    response = await api.post("/jobs", json={"name": "j", "execution": "strict"})
    assert response.status == 201
