"""`GET /jobs/{id}/preview`, answered by a renderer running in-process on the same store and bus."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from services.renderer import service as renderer_service
from shared.service import open_runtime
from shared.settings import Settings
from tests.integration.api.conftest import HELLO, create_job

Client = TestClient[Any, Any]


@pytest.fixture
async def renderer(settings: Settings) -> AsyncIterator[None]:
    async with open_runtime(settings, "renderer") as runtime:
        shutdown = await renderer_service.start(runtime)
        yield
        await shutdown()


async def _created_at(api: Client, job_id: str) -> str:
    [created] = (await (await api.get("/events", params={"stream": f"job-{job_id}"})).json())["items"]
    time_of: str = created["time"]
    return time_of


@pytest.mark.usefixtures("renderer")
async def test_preview_shows_the_payload_params_and_the_layer_each_param_came_from(defined: Client) -> None:
    job = await create_job(defined, params={"extra": 1})
    response = await defined.get(f"/jobs/{job['id']}/preview")
    assert response.status == 200, await response.text()
    preview = await response.json()
    assert preview["driver"] == "local" and preview["payload"]["command"] == ["echo", "Luna"]
    assert preview["params"] == {"greeting": "Luna", "extra": 1}
    assert preview["provenance"] == {"greeting": "dimension:audience=moon", "extra": "job"}
    assert preview["execution_version"] == 1 and preview["job_version"] == 1
    assert preview["job_id"] == job["id"] and preview["at"] is None


@pytest.mark.usefixtures("renderer")
async def test_preview_at_a_past_time_renders_the_job_and_definitions_as_they_stood(defined: Client) -> None:
    job = await create_job(defined)
    then = await _created_at(defined, job["id"])
    patched = await defined.patch(f"/jobs/{job['id']}", json={"dimensions": {"audience": "sun"}})
    assert patched.status == 200
    redefined = HELLO | {"payload_template": "{command: ['printf', params.greeting]}"}
    assert (await defined.put("/executions/hello", json=redefined)).status == 200

    now = await (await defined.get(f"/jobs/{job['id']}/preview")).json()
    assert now["payload"]["command"] == ["printf", "Sol"] and now["job_version"] == 2
    assert now["execution_version"] == 2

    past = await defined.get(f"/jobs/{job['id']}/preview", params={"at": then})
    assert past.status == 200, await past.text()
    body = await past.json()
    assert body["payload"]["command"] == ["echo", "Luna"] and body["job_version"] == 1
    assert body["execution_version"] == 1 and body["at"] is not None


@pytest.mark.usefixtures("renderer")
async def test_preview_at_a_time_before_the_job_existed_is_422_naming_at(defined: Client) -> None:
    job = await create_job(defined)
    response = await defined.get(f"/jobs/{job['id']}/preview", params={"at": "2001-01-01T00:00:00Z"})
    assert response.status == 422
    problem = await response.json()
    assert problem["errors"][0]["field"] == "query.at"
    assert "did not exist yet" in problem["detail"] and "created at" in problem["detail"]
    malformed = await defined.get(f"/jobs/{job['id']}/preview", params={"at": "yesterday"})
    assert malformed.status == 422 and (await malformed.json())["errors"][0]["field"] == "query.at"


@pytest.mark.usefixtures("renderer")
async def test_preview_accepts_an_offset_whose_plus_arrived_as_a_space(defined: Client) -> None:
    job = await create_job(defined)
    url = f"/jobs/{job['id']}/preview?at=2999-01-01T01:00:00+01:00"
    response = await defined.get(url)
    assert response.status == 200, await response.text()
    assert (await response.json())["at"].startswith("2999-01-01T01:00:00")


@pytest.mark.usefixtures("renderer")
async def test_preview_of_a_template_error_is_422_naming_execution_line_and_column(defined: Client) -> None:
    broken = HELLO | {"payload_template": "{\n  command: ['echo', params.greeting\n}"}
    assert (await defined.put("/executions/broken", json=broken)).status == 201
    job = await create_job(defined, execution="broken", dimensions={})
    response = await defined.get(f"/jobs/{job['id']}/preview")
    assert response.status == 422 and response.content_type == "application/problem+json"
    problem = await response.json()
    assert problem["kind"] == "template" and problem["execution"] == "broken"
    assert problem["line"] == 3 and isinstance(problem["column"], int)
    assert "execution 'broken', line 3" in problem["detail"]


@pytest.mark.usefixtures("renderer")
async def test_preview_of_a_payload_the_driver_refuses_is_422_naming_the_field(defined: Client) -> None:
    bad = HELLO | {"payload_template": "{command: ['echo'], colour: 'red'}"}
    assert (await defined.put("/executions/bad", json=bad)).status == 201
    job = await create_job(defined, execution="bad", dimensions={})
    problem = await (await defined.get(f"/jobs/{job['id']}/preview")).json()
    assert problem["status"] == 422 and problem["kind"] == "payload"
    assert problem["field"] and problem["errors"][0]["field"] == problem["field"]
    assert "colour" in problem["field"] or "colour" in problem["detail"]


@pytest.mark.usefixtures("renderer")
async def test_preview_of_an_unknown_or_deleted_job_is_404(defined: Client) -> None:
    assert (await defined.get(f"/jobs/{uuid.uuid4()}/preview")).status == 404
    job = await create_job(defined)
    then = await _created_at(defined, job["id"])
    assert (await defined.delete(f"/jobs/{job['id']}")).status == 204
    gone = await defined.get(f"/jobs/{job['id']}/preview")
    assert gone.status == 404 and "was deleted" in (await gone.json())["detail"]
    before_deletion = await defined.get(f"/jobs/{job['id']}/preview", params={"at": then})
    assert before_deletion.status == 200


async def test_preview_without_a_renderer_is_503_at_once(defined: Client) -> None:
    job = await create_job(defined)
    started = time.monotonic()
    response = await defined.get(f"/jobs/{job['id']}/preview")
    assert response.status == 503 and response.content_type == "application/problem+json"
    assert "no renderer is running" in (await response.json())["detail"]
    assert time.monotonic() - started < 2.0
