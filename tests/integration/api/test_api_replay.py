"""Replay rebuilds every read model from the event store and finds exactly what the live projector made."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import uuid
from collections import Counter
from typing import Any

from aiohttp.test_utils import TestClient

from contracts.base import Event
from contracts.envelope import EventMeta
from contracts.events import (
    RunFailed,
    RunLogArchived,
    RunLost,
    RunRejected,
    RunRendered,
    RunRetryScheduled,
    RunStarted,
    RunStopped,
    RunStopRequested,
    RunSucceeded,
    RunTimedOut,
)
from services.api.context import CONTEXT
from services.api.replay import replay
from shared.settings import Settings
from tests.integration.api.conftest import AUDIENCE, HELLO

Client = TestClient[Any, Any]
WORKERS = 8
COMMANDS = 1000


class RandomOperator:
    """Issues random commands, many of them invalid on purpose; none may answer 500."""

    def __init__(self, api: Client, seed: int) -> None:
        self.api = api
        self.rng = random.Random(seed)
        self.jobs: list[str] = []
        self.runs: list[str] = []
        self.statuses: list[int] = []
        self.failures: list[str] = []

    def _job(self) -> str:
        return self.rng.choice(self.jobs) if self.jobs else str(uuid.uuid4())

    def _job_body(self) -> dict[str, Any]:
        rng = self.rng
        return {
            "name": f"job-{rng.randrange(1000)}",
            "execution": rng.choice(["hello", "hello", "bye", "ghost"]),
            "dimensions": rng.choice([{}, {"audience": "moon"}, {"audience": "sun"}, {"audience": "mars"}]),
            "params": {"n": rng.randrange(10)},
            "schedule": rng.choice([None, {"cron": "*/5 * * * *", "timezone": "Europe/Stockholm"}]),
            "enabled": rng.random() < 0.8,
            "overlap": {"policy": "allow"},
        }

    async def step(self) -> None:
        rng = self.rng
        roll = rng.random()
        headers = {"X-Actor": f"user-{rng.randrange(3)}"}
        if roll < 0.30:
            response = await self.api.post("/jobs", json=self._job_body(), headers=headers)
            if response.status == 201:
                self.jobs.append((await response.json())["id"])
        elif roll < 0.45:
            patch = rng.choice(
                [
                    {"name": f"renamed-{rng.randrange(99)}"},
                    {"params": {"p": rng.random()}},
                    {"dimensions": {"audience": rng.choice(["moon", "sun"])}},
                    {"schedule": None},
                ]
            )
            response = await self.api.patch(f"/jobs/{self._job()}", json=patch, headers=headers)
        elif roll < 0.55:
            response = await self.api.post(
                f"/jobs/{self._job()}/pause", json={"reason": "r"}, headers=headers
            )
        elif roll < 0.65:
            response = await self.api.post(f"/jobs/{self._job()}/resume", headers=headers)
        elif roll < 0.70:
            response = await self.api.delete(f"/jobs/{self._job()}", headers=headers)
        elif roll < 0.85:
            overrides = {"params": {"o": rng.randrange(5)}}
            response = await self.api.post(f"/jobs/{self._job()}/runs", json=overrides, headers=headers)
            if response.status == 202:
                self.runs.append((await response.json())["id"])
        elif roll < 0.91:
            spec = HELLO | {"default_params": {"greeting": rng.choice(["hi", "hey", "yo"])}}
            response = await self.api.put(f"/executions/{rng.choice(['hello', 'bye'])}", json=spec)
        elif roll < 0.96:
            values = rng.choice([["moon", "sun"], ["moon", "sun", "mars"], ["moon"]])
            spec = {"priority": rng.randrange(3), "values": {v: {"params": {"v": v}} for v in values}}
            response = await self.api.put("/dimensions/audience", json=spec, params={"force": "true"})
        else:
            executions = {"hello": HELLO} | ({"bye": HELLO} if rng.random() < 0.5 else {})
            state = {"executions": executions, "dimensions": {"audience": AUDIENCE}}
            response = await self.api.post("/state", json=state, params={"force": "true"})
        self.statuses.append(response.status)
        if response.status >= 500:
            self.failures.append(f"{response.method} {response.url.path}: {await response.text()}")


async def _run_lifecycles(api: Client, runs: list[str]) -> None:
    """Stand in for the renderer and dispatcher, so every run event type reaches the projection."""
    ctx = api.app[CONTEXT]
    meta = EventMeta(actor="dispatcher", correlation_id="lifecycle")
    endings: list[list[type[Event]]] = [
        [RunRendered, RunStarted, RunSucceeded],
        [RunRendered, RunStarted, RunFailed],
        [RunRendered, RunStarted, RunTimedOut],
        [RunRendered, RunStarted, RunStopRequested, RunStopped],
        [RunRendered, RunStarted, RunLost],
        [RunRejected],
        [RunRendered, RunStarted, RunFailed, RunRetryScheduled, RunLogArchived],
    ]
    for index, run in enumerate(runs):
        run_id = uuid.UUID(run)
        kinds = endings[index % len(endings)]
        events = [_run_event(kind, run_id) for kind in kinds]
        await ctx.store.append(f"run-{run_id}", events, expected_version=1, meta=meta)


def _run_event(kind: type[Event], run_id: uuid.UUID) -> Event:
    fields: dict[str, Any] = RUN_EVENT_FIELDS[kind]
    return kind.model_validate({"run_id": run_id, **fields})


RUN_EVENT_FIELDS: dict[type[Event], dict[str, Any]] = {
    RunRendered: {"driver": "local", "payload": {"command": "true"}, "execution_version": 1},
    RunRejected: {"reason": "bad template", "line": 1, "column": 2},
    RunStarted: {"dispatcher": "d1", "handle": {"pid": 1}},
    RunStopRequested: {"grace_s": 1.0},
    RunSucceeded: {},
    RunFailed: {"exit_code": 3, "reason": "exit status 3"},
    RunTimedOut: {"timeout_s": 30.0},
    RunStopped: {"stopped_by": "alice", "reason": "asked to stop"},
    RunLost: {"reason": "dispatcher lease expired"},
    RunRetryScheduled: {"next_run_id": uuid.uuid4(), "attempt": 1, "due_at": "2026-01-01T00:00:00Z"},
    RunLogArchived: {"bytes": 10, "sha256": "0" * 64, "location": "file:///x"},
}


async def test_a_thousand_random_commands_replay_to_identical_read_models(
    defined: Client, settings: Settings
) -> None:
    operators = [RandomOperator(defined, seed) for seed in range(WORKERS)]

    async def drive(operator: RandomOperator) -> None:
        for _ in range(COMMANDS // WORKERS):
            await operator.step()

    await asyncio.gather(*(drive(o) for o in operators))
    statuses = [s for o in operators for s in o.statuses]
    assert len(statuses) == COMMANDS
    assert not [f for o in operators for f in o.failures], sorted(Counter(statuses).items())
    assert {200, 201, 202, 204} <= set(statuses)
    runs = [r for o in operators for r in o.runs]
    await _run_lifecycles(defined, runs)
    ctx = defined.app[CONTEXT]
    assert await ctx.watcher.wait_for(await ctx.store.head_position(), 10.0)

    report = await replay(settings)

    assert report.identical, report.render()
    assert report.events > COMMANDS // 2
    assert report.rows["runs"] == len(runs) and report.rows["jobs"] > 0
    page = await (await defined.get("/runs", params={"limit": 500})).json()
    assert {r["status"] for r in page["items"]} >= {"succeeded", "failed", "timed_out", "stopped", "lost"}


async def test_replay_reports_a_tampered_live_row(defined: Client, settings: Settings) -> None:
    response = await defined.post("/jobs", json={"name": "honest", "execution": "hello"})
    job_id = (await response.json())["id"]
    async with defined.app[CONTEXT].pool.acquire() as conn:
        await conn.execute("UPDATE rm.jobs SET name = 'tampered' WHERE id = $1", uuid.UUID(job_id))

    report = await replay(settings)

    assert not report.identical
    [difference] = report.differences["jobs"]
    assert difference.key == job_id
    assert difference.live is not None and difference.live["name"] == "tampered"
    assert difference.replayed is not None and difference.replayed["name"] == "honest"
    assert "name live='tampered' replayed='honest'" in report.render()
    assert not any(report.differences[t] for t in ("executions", "dimensions", "runs", "state"))


def _replay_cli(settings: Settings) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"BATCHYARD_PG_DSN": settings.pg_dsn, "BATCHYARD_BUS_PREFIX": settings.bus_prefix}
    code = "import sys; from services.api.replay import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30)


async def test_replay_command_exits_0_when_identical_and_1_after_tampering(
    defined: Client, settings: Settings
) -> None:
    response = await defined.post("/jobs", json={"name": "honest", "execution": "hello"})
    job_id = uuid.UUID((await response.json())["id"])
    identical = await asyncio.to_thread(_replay_cli, settings)
    assert identical.returncode == 0, identical.stdout + identical.stderr
    assert "read models match the event store" in identical.stdout
    async with defined.app[CONTEXT].pool.acquire() as conn:
        await conn.execute("DELETE FROM rm.jobs WHERE id = $1", job_id)
    differs = await asyncio.to_thread(_replay_cli, settings)
    assert differs.returncode == 1
    assert f"{job_id}: missing from the live read model" in differs.stdout
