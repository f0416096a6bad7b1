"""A command whose events are recorded but not yet visible in the read models answers 202, not an error."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from services.api.problems import ReadModelsBehind, problem_middleware


async def test_a_recorded_command_the_read_models_do_not_show_yet_answers_202_with_its_position() -> None:
    async def command(_: web.Request) -> web.Response:
        raise ReadModelsBehind(position=42, waited_s=2.0)

    app = web.Application(middlewares=[problem_middleware])
    app.router.add_post("/jobs", command)
    async with TestClient(TestServer(app)) as client:
        answer = await client.post("/jobs", headers={"X-Correlation-Id": "c-1"})
        body = await answer.json()
    assert answer.status == 202
    assert body["recorded"] is True and body["position"] == 42
    assert "read the resource again shortly" in body["detail"]
    assert answer.headers["X-Correlation-Id"] == "c-1"
