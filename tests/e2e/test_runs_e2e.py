"""Runs end to end, driven through the HTTP API as a user drives them.

The API, renderer, dispatcher and logarchiver run in this process, each through its own
`open_runtime(settings, name)` and `start(runtime)` exactly as `run_service` wires them, on the test's
own database and bus prefix; runs are real local processes. Only the dispatcher that is killed
outright runs in a process of its own, as `batchyard up` runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from types import ModuleType
from typing import Any

import psutil
import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.api.app import create_app
from services.dispatcher import service as dispatcher_service
from services.logarchiver import service as logarchiver_service
from services.renderer import service as renderer_service
from shared.domain.run_lifecycle import TERMINAL_EVENT_TYPES
from shared.service import Runtime, open_runtime
from shared.settings import Settings
from tests.integration.test_dispatcher_crash import dispatcher_process

Client = TestClient[Any, Any]
TERMINAL = {"rejected", "succeeded", "failed", "timed_out", "stopped", "lost"}
SHELL: dict[str, Any] = {
    "driver": "local",
    "payload_template": "{command: params.cmd, timeout_s: params.timeout_s, stop_grace_s: params.grace_s}",
    "default_params": {"cmd": "true", "timeout_s": None, "grace_s": 2},
}
SERVICES: dict[str, ModuleType] = {
    "renderer": renderer_service,
    "dispatcher": dispatcher_service,
    "logarchiver": logarchiver_service,
}
LEASE_TTL_S = 1.5


class Stack:
    """The four services on one installation; each can be stopped and started again on its own."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._api: Client | None = None
        self._running: dict[
            str, tuple[contextlib.AbstractAsyncContextManager[Runtime], Callable[[], Awaitable[None]]]
        ] = {}

    @property
    def api(self) -> Client:
        assert self._api is not None, "the API is not running"
        return self._api

    async def start(self, name: str) -> None:
        if name == "api":
            self._api = TestClient(TestServer(create_app(self.settings)))
            await self._api.start_server()
            return
        opened = open_runtime(self.settings, name)
        runtime = await opened.__aenter__()
        shutdown = await SERVICES[name].start(runtime)
        assert shutdown is not None
        self._running[name] = (opened, shutdown)

    async def stop(self, name: str) -> None:
        if name == "api":
            if self._api is not None:
                await self._api.close()
                self._api = None
            return
        opened, shutdown = self._running.pop(name)
        try:
            await shutdown()
        finally:
            await opened.__aexit__(None, None, None)

    async def restart(self, name: str) -> None:
        await self.stop(name)
        await self.start(name)

    async def close(self) -> None:
        for name in [*self._running, "api"]:
            with contextlib.suppress(Exception):
                await self.stop(name)


@pytest.fixture
async def stack(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Stack]:
    monkeypatch.setenv("BATCHYARD_DISPATCHER_LEASE_TTL_S", str(LEASE_TTL_S))
    monkeypatch.setenv("BATCHYARD_DISPATCHER_SHUTDOWN_GRACE_S", "10")
    running = Stack(settings)
    try:
        for name in ("api", "renderer", "dispatcher", "logarchiver"):
            await running.start(name)
        response = await running.api.put("/executions/shell", json=SHELL)
        assert response.status == 201, await response.text()
        yield running
    finally:
        await running.close()


async def run_job(api: Client, **params: Any) -> str:
    """A job of execution `shell` with these params, run now; returns the run's id."""
    job = await api.post("/jobs", json={"name": "e2e", "execution": "shell", "params": params})
    assert job.status == 201, await job.text()
    run = await api.post(f"/jobs/{(await job.json())['id']}/runs")
    assert run.status == 202, await run.text()
    run_id: str = (await run.json())["id"]
    return run_id


async def wait_for_run(
    api: Client, run_id: str, done: Callable[[dict[str, Any]], bool], timeout_s: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        run: dict[str, Any] = await (await api.get(f"/runs/{run_id}")).json()
        if done(run):
            return run
        assert time.monotonic() < deadline, f"run never got there: {run}"
        await asyncio.sleep(0.05)


def ended(run: dict[str, Any]) -> bool:
    return run["status"] in TERMINAL


def archived(run: dict[str, Any]) -> bool:
    return run["log"] is not None


async def whole_log(api: Client, run_id: str) -> str:
    offset, text = 0, []
    while True:
        page = await (await api.get(f"/runs/{run_id}/log", params={"offset": offset})).json()
        text.append(page["data"])
        offset = page["next_offset"]
        if page["complete"]:
            return "".join(text)
        await asyncio.sleep(0.02)


async def event_types(api: Client, run_id: str) -> list[str]:
    page = await (await api.get("/events", params={"stream": f"run-{run_id}", "limit": 500})).json()
    return [event["type"] for event in page["items"]]


def terminal_events(types: list[str]) -> list[str]:
    return [t for t in types if t in TERMINAL_EVENT_TYPES]


async def test_a_job_that_succeeds_records_its_output_and_archives_its_log(stack: Stack) -> None:
    run_id = await run_job(stack.api, cmd="echo hello; echo oops >&2")
    run = await wait_for_run(stack.api, run_id, ended)
    assert run["status"] == "succeeded" and run["exit_code"] == 0 and run["reason"] is None
    assert run["requested_at"] <= run["started_at"] <= run["ended_at"]
    assert await whole_log(stack.api, run_id) == "hello\noops\n"
    run = await wait_for_run(stack.api, run_id, archived)
    assert run["log"]["bytes"] == 11 and run["log"]["sha256"] == hashlib.sha256(b"hello\noops\n").hexdigest()
    assert terminal_events(await event_types(stack.api, run_id)) == ["RunSucceeded"]


async def test_a_one_off_run_runs_without_a_job(stack: Stack) -> None:
    response = await stack.api.post(
        "/runs", json={"execution": "shell", "params": {"cmd": ["echo", "one-off"]}}
    )
    assert response.status == 202, await response.text()
    run = await wait_for_run(stack.api, (await response.json())["id"], ended)
    assert run["status"] == "succeeded" and run["job_id"] is None and run["trigger"] == "oneoff"
    assert await whole_log(stack.api, run["id"]) == "one-off\n"


async def test_a_failing_command_ends_failed_with_its_exit_code(stack: Stack) -> None:
    run_id = await run_job(stack.api, cmd="echo about to fail; exit 3")
    run = await wait_for_run(stack.api, run_id, ended)
    assert run["status"] == "failed" and run["exit_code"] == 3 and "3" in run["reason"]
    assert await whole_log(stack.api, run_id) == "about to fail\n"


async def test_a_command_that_does_not_exist_fails_naming_it_without_starting(stack: Stack) -> None:
    run_id = await run_job(stack.api, cmd=["no-such-command-batchyard"])
    run = await wait_for_run(stack.api, run_id, ended)
    assert run["status"] == "failed" and run["exit_code"] is None and run["started_at"] is None
    assert "no-such-command-batchyard" in run["reason"]
    assert await whole_log(stack.api, run_id) == ""
    assert terminal_events(await event_types(stack.api, run_id)) == ["RunFailed"]


async def test_stopping_a_running_sleep_ends_it_stopped_by_the_asker(stack: Stack) -> None:
    run_id = await run_job(stack.api, cmd=["sleep", "60"])
    await wait_for_run(stack.api, run_id, lambda run: run["status"] == "running")
    asked = time.monotonic()
    response = await stack.api.post(f"/runs/{run_id}/stop", json={"grace_s": 5}, headers={"X-Actor": "alice"})
    assert response.status == 202
    run = await wait_for_run(stack.api, run_id, ended, timeout_s=10)
    assert time.monotonic() - asked < 3, "sleep exits on SIGTERM; it must not wait for the grace"
    assert run["status"] == "stopped" and run["stopped_by"] == "alice" and run["stop_requested_by"] == "alice"
    assert "alice" in run["reason"]
    again = await stack.api.post(f"/runs/{run_id}/stop")
    assert again.status == 409
    assert terminal_events(await event_types(stack.api, run_id)) == ["RunStopped"]


async def test_a_command_that_ignores_sigterm_is_killed_after_the_grace(stack: Stack) -> None:
    run_id = await run_job(stack.api, cmd="trap '' TERM; echo trapped; sleep 60", grace_s=0.5)
    await wait_for_run(stack.api, run_id, lambda run: run["status"] == "running")
    assert (await stack.api.post(f"/runs/{run_id}/stop")).status == 202
    run = await wait_for_run(stack.api, run_id, ended, timeout_s=10)
    assert run["status"] == "stopped"


async def test_a_run_past_its_timeout_ends_timed_out(stack: Stack) -> None:
    run_id = await run_job(stack.api, cmd=["sleep", "60"], timeout_s=0.5)
    run = await wait_for_run(stack.api, run_id, ended, timeout_s=15)
    assert run["status"] == "timed_out" and run["reason"] == "timed out after 0.5 s"
    assert terminal_events(await event_types(stack.api, run_id)) == ["RunTimedOut"]


async def test_a_run_printing_100_mb_is_followed_and_archived_whole_with_bounded_memory(stack: Stack) -> None:
    size = 100_000_000
    process = psutil.Process()
    baseline = process.memory_info().rss
    peak = baseline
    sampling = True

    async def sample() -> None:
        nonlocal peak
        while sampling:
            peak = max(peak, process.memory_info().rss)
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    started = time.monotonic()
    run_id = await run_job(stack.api, cmd=f"head -c {size} /dev/zero | tr '\\0' a")
    response = await stack.api.get(f"/runs/{run_id}/log/stream")
    assert response.status == 200
    received, event, end = 0, b"", None
    async with asyncio.timeout(120):
        async for line in response.content:
            if line.startswith(b"event: "):
                event = line[7:].strip()
            elif line.startswith(b"data: "):
                body = json.loads(line[6:])
                if event == b"end":
                    end = body
                    break
                assert body["offset"] == received and set(body["data"]) <= {"a"}
                received += len(body["data"])
    followed_s = time.monotonic() - started
    response.close()
    run = await wait_for_run(stack.api, run_id, archived, timeout_s=60)
    sampling = False
    await sampler
    growth_mb = (peak - baseline) / 1e6
    print(f"100 MB followed over SSE in {followed_s:.1f} s; process RSS grew {growth_mb:.0f} MB")

    assert end == {"offset": size, "complete": True} and received == size
    assert run["status"] == "succeeded" and run["log"]["bytes"] == size
    expected = hashlib.sha256()
    for _ in range(size // 1_000_000):
        expected.update(b"a" * 1_000_000)
    assert run["log"]["sha256"] == expected.hexdigest()
    assert growth_mb < 200, f"all four services together grew by {growth_mb:.0f} MB for a 100 MB log"


async def test_api_renderer_and_archiver_restarted_mid_run_leave_one_end_and_a_whole_log(
    stack: Stack,
) -> None:
    run_id = await run_job(stack.api, cmd="echo before; sleep 1.5; echo after")
    await wait_for_run(stack.api, run_id, lambda run: run["status"] == "running")
    for name in ("api", "logarchiver", "renderer"):
        await stack.restart(name)
    run = await wait_for_run(stack.api, run_id, ended)
    assert run["status"] == "succeeded"
    run = await wait_for_run(stack.api, run_id, archived)
    assert await whole_log(stack.api, run_id) == "before\nafter\n" and run["log"]["bytes"] == 13
    assert terminal_events(await event_types(stack.api, run_id)) == ["RunSucceeded"]


async def test_a_dispatcher_restarted_mid_run_stops_it_once_and_says_why(stack: Stack) -> None:
    run_id = await run_job(stack.api, cmd=["sleep", "60"])
    await wait_for_run(stack.api, run_id, lambda run: run["status"] == "running")
    await stack.restart("dispatcher")
    run = await wait_for_run(stack.api, run_id, ended)
    assert run["status"] == "stopped" and "shutting down" in run["reason"]
    await asyncio.sleep(LEASE_TTL_S * 2)
    assert terminal_events(await event_types(stack.api, run_id)) == ["RunStopped"]
    after = await run_job(stack.api, cmd=["echo", "still dispatching"])
    assert (await wait_for_run(stack.api, after, ended))["status"] == "succeeded"


async def test_a_dispatcher_killed_mid_run_leaves_the_run_lost_exactly_once(stack: Stack) -> None:
    await stack.stop("dispatcher")
    with dispatcher_process(stack.settings, lease_ttl_s=LEASE_TTL_S, instance="doomed") as process:
        run_id = await run_job(stack.api, cmd="echo started; sleep 60")
        run = await wait_for_run(stack.api, run_id, lambda run: run["status"] == "running")
        process.send_signal(signal.SIGKILL)
        process.wait()
    await stack.start("dispatcher")
    run = await wait_for_run(stack.api, run_id, ended, timeout_s=30)
    assert run["status"] == "lost" and "doomed" in run["reason"]
    await asyncio.sleep(LEASE_TTL_S * 2)
    assert terminal_events(await event_types(stack.api, run_id)) == ["RunLost"]
    page = await (await stack.api.get(f"/runs/{run_id}/log")).json()
    assert page["data"] == "started\n"
