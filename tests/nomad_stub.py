"""A stand-in Nomad for tests: an aiohttp server answering the HTTP API endpoints the driver uses, with
the request and response shapes of Nomad's API documentation (developer.hashicorp.com/nomad/api-docs).

No Nomad binary can be installed here. The stub behaves like a one-node cluster: registering a job
creates an evaluation and one allocation per task group instance, and each task of driver `raw_exec`
(or `exec`) really runs its `Config.command` with `Config.args` as a local process whose stdout and
stderr go to `alloc/logs/<task>.stdout.0` / `.stderr.0`, served by `fs/logs` with offsets, framing and
`follow` as Nomad does. Deregistering sends the task's `KillSignal` (Nomad's default, SIGINT) to the
task's process group and SIGKILL after its `KillTimeout` (default 5 s). A registered job with an enabled
`Periodic` block launches a child job `<parent>/periodic-<unix time of the tick>` on each tick of its cron
`Spec` in its `TimeZone`, as Nomad's periodic dispatcher does: cron read as Nomad's `cronexpr` reads it
(seven fields from seconds to year; six fields mean minute to year; five get second 0 and any year), a
tick skipped while a child still runs under `ProhibitOverlap`, no launches once the parent is stopped,
and children that go on when it is. Tests reach the things a real cluster does on its own through
methods: `lose` (a node going down), `fail_next_register`, `hold_placement`, `launch_periodic` (a cron
tick on demand).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web

from contracts.logs import LogFd
from services.dispatcher.drivers.nomad_api import NomadClient, NomadConnection

JsonObject = dict[str, Any]

DEFAULT_KILL_TIMEOUT_NS = 5_000_000_000
MAX_WAIT_S = 300.0
FOLLOW_POLL_S = 0.02
HEARTBEAT_S = 1.0
RUNNABLE_DRIVERS = {"raw_exec", "exec"}
JSON_BODY = web.RequestKey("json_body", object)


def now_ns() -> int:
    return time.time_ns()


def rfc3339(ns: int) -> str:
    seconds, rest = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{rest:09d}Z"


def task_event(kind: str, **fields: Any) -> JsonObject:
    event: JsonObject = {
        "Type": kind,
        "Time": now_ns(),
        "FailsTask": False,
        "ExitCode": 0,
        "Signal": 0,
        "Message": "",
        "DisplayMessage": "",
        "DriverError": "",
        "SetupError": "",
        "KillTimeout": 0,
        "Details": {},
    }
    event.update(fields)
    return event


def plain_error(status: int, text: str) -> web.Response:
    """Nomad's HTTP errors are plain text bodies, not JSON."""
    return web.Response(status=status, text=text, content_type="text/plain")


def multierror(errors: list[str]) -> str:
    lines = "".join(f"\t* {error}\n" for error in errors)
    return f"{len(errors)} error{'s' if len(errors) > 1 else ''} occurred:\n{lines}\n"


CRON_MACROS = {
    "@yearly": "0 0 0 1 1 * *",
    "@annually": "0 0 0 1 1 * *",
    "@monthly": "0 0 0 1 * * *",
    "@weekly": "0 0 0 * * 0 *",
    "@daily": "0 0 0 * * * *",
    "@hourly": "0 0 * * * * *",
}
CRON_SEARCH_DAYS = 5 * 366


@dataclass(frozen=True)
class StubCron:
    """A cron expression as Nomad's `cronexpr` reads it, for the periodic launches of the stub: numbers,
    `*`, `?`, ranges, steps and lists; `L` in the day of month; `<day>L` and `<day>#<n>` in the day of
    week. A day field is restricted unless it is a bare `*` or `?`; with both restricted a day matching
    either runs, with one restricted only that one counts."""

    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    last_day: bool
    months: frozenset[int]
    weekdays: frozenset[int]
    last_weekdays: frozenset[int]
    nth_weekdays: frozenset[tuple[int, int]]
    years: frozenset[int]
    days_restricted: bool
    weekdays_restricted: bool

    @classmethod
    def parse(cls, spec: str) -> StubCron:
        fields = CRON_MACROS.get(spec.strip(), spec).split()
        if len(fields) == 5:
            fields = ["0", *fields, "*"]
        elif len(fields) == 6:
            fields = ["0", *fields]
        if len(fields) != 7:
            raise ValueError(f"expected 5 to 7 fields, got {len(fields)}")
        second, minute, hour, day, month, weekday, year = fields
        days: set[int] = set()
        last_day = False
        for item in day.split(","):
            if item.upper() == "L":
                last_day = True
            else:
                days |= _cron_values(item, 1, 31)
        weekdays: set[int] = set()
        last_weekdays: set[int] = set()
        nth: set[tuple[int, int]] = set()
        for item in weekday.split(","):
            if item.upper().endswith("L") and item[:-1].isdigit():
                last_weekdays.add(int(item[:-1]) % 7)
            elif "#" in item:
                number, _, occurrence = item.partition("#")
                nth.add((int(number) % 7, int(occurrence)))
            else:
                weekdays |= {value % 7 for value in _cron_values(item, 0, 6, top=7)}
        return cls(
            frozenset(_cron_field(second, 0, 59)),
            frozenset(_cron_field(minute, 0, 59)),
            frozenset(_cron_field(hour, 0, 23)),
            frozenset(days),
            last_day,
            frozenset(_cron_field(month, 1, 12)),
            frozenset(weekdays),
            frozenset(last_weekdays),
            frozenset(nth),
            frozenset(_cron_field(year, 1970, 2099)),
            day not in ("*", "?"),
            weekday not in ("*", "?"),
        )

    def _day_matches(self, when: datetime) -> bool:
        if when.month not in self.months or when.year not in self.years:
            return False
        last = ((when.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)).day
        weekday = (when.weekday() + 1) % 7
        by_day = when.day in self.days or (self.last_day and when.day == last)
        by_weekday = (
            weekday in self.weekdays
            or (weekday in self.last_weekdays and when.day + 7 > last)
            or (weekday, (when.day - 1) // 7 + 1) in self.nth_weekdays
        )
        if self.days_restricted and self.weekdays_restricted:
            return by_day or by_weekday
        if self.days_restricted:
            return by_day
        return by_weekday if self.weekdays_restricted else True

    def next_after(self, now: float, zone: ZoneInfo) -> float | None:
        """The first tick strictly after `now` (unix seconds), or None when there is none."""
        wall = datetime.fromtimestamp(int(now) + 1, zone).replace(tzinfo=None)
        end = wall + timedelta(days=CRON_SEARCH_DAYS)
        while wall < end:
            if not self._day_matches(wall):
                wall = (wall + timedelta(days=1)).replace(hour=0, minute=0, second=0)
            elif wall.hour not in self.hours:
                wall = (wall + timedelta(hours=1)).replace(minute=0, second=0)
            elif wall.minute not in self.minutes:
                wall = (wall + timedelta(minutes=1)).replace(second=0)
            elif wall.second not in self.seconds:
                wall += timedelta(seconds=1)
            else:
                return wall.replace(tzinfo=zone).timestamp()
        return None


def _cron_field(text: str, low: int, high: int) -> set[int]:
    values: set[int] = set()
    for item in text.split(","):
        values |= _cron_values(item, low, high)
    return values


def _cron_values(item: str, low: int, high: int, *, top: int | None = None) -> set[int]:
    """One list item; `top` is the highest number accepted (7 for Sunday in the day of week)."""
    body, _, step_text = item.partition("/")
    step = int(step_text) if step_text else 1
    if body in ("*", "?"):
        first, last = low, high
    elif "-" in body:
        start, _, stop = body.partition("-")
        first, last = int(start), int(stop)
    else:
        first = int(body)
        last = high if step_text else first
    if step < 1 or not low <= first <= last <= (top if top is not None else high):
        raise ValueError(f"{item!r} is out of range {low}-{high}")
    return set(range(first, last + 1, step))


@dataclass
class StubTask:
    name: str
    spec: JsonObject
    state: JsonObject = field(default_factory=dict)
    process: asyncio.subprocess.Process | None = None
    killing: bool = False


@dataclass
class StubAlloc:
    id: str
    eval_id: str
    name: str
    job: JsonObject
    group: str
    create_index: int
    tasks: dict[str, StubTask]
    log_dir: Path
    client_status: str = "pending"
    desired_status: str = "run"
    client_description: str = ""
    desired_description: str = ""
    modify_index: int = 0
    create_time: int = field(default_factory=now_ns)
    modify_time: int = field(default_factory=now_ns)
    runner: asyncio.Task[None] | None = None

    @property
    def terminal(self) -> bool:
        return self.client_status in {"complete", "failed", "lost"}

    def stub(self) -> JsonObject:
        return {
            "ID": self.id,
            "EvalID": self.eval_id,
            "Name": self.name,
            "Namespace": self.job.get("Namespace", "default"),
            "NodeID": "0d4ea2c8-7d9e-4c43-9b0e-5b1c1e0b7a11",
            "NodeName": "stub-node",
            "JobID": self.job["ID"],
            "JobType": self.job.get("Type", "batch"),
            "JobVersion": self.job.get("Version", 0),
            "TaskGroup": self.group,
            "DesiredStatus": self.desired_status,
            "DesiredDescription": self.desired_description,
            "ClientStatus": self.client_status,
            "ClientDescription": self.client_description,
            "TaskStates": {name: dict(task.state) for name, task in self.tasks.items()},
            "FollowupEvalID": "",
            "NextAllocation": "",
            "PreviousAllocation": "",
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
            "CreateTime": self.create_time,
            "ModifyTime": self.modify_time,
        }


class NomadStub:
    def __init__(self, work_dir: Path, token: str | None = None) -> None:
        self.work_dir = work_dir
        self.token = token
        self.index = 1
        self.jobs: dict[tuple[str, str], JsonObject] = {}
        self.evals: dict[str, JsonObject] = {}
        self.allocs: dict[str, StubAlloc] = {}
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        self.register_failures: list[tuple[int, str]] = []
        self.hold_placement = False
        self._periodic: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.leaderless_until = 0.0
        self._log_streams: dict[int, web.Request] = {}
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> str:
        app = web.Application(middlewares=[self._record])
        app.router.add_route("*", "/v1/{path:.*}", self._route)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        for ticker in self._periodic.values():
            ticker.cancel()
        await asyncio.gather(*self._periodic.values(), return_exceptions=True)
        for alloc in self.allocs.values():
            for task in alloc.tasks.values():
                self._signal(task, signal.SIGKILL)
            if alloc.runner is not None:
                alloc.runner.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await alloc.runner
        if self._runner is not None:
            await self._runner.cleanup()

    async def bump(self) -> None:
        async with self._changed:
            self.index += 1
            self._changed.notify_all()

    def calls(self, method: str, path_prefix: str) -> list[tuple[str, str, dict[str, str], Any]]:
        return [r for r in self.requests if r[0] == method and r[1].startswith(path_prefix)]

    # -- controls for what a cluster does on its own ------------------------------------------------

    def fail_next_register(self, status: int, text: str) -> None:
        self.register_failures.append((status, text))

    async def lose(self, alloc_id: str) -> None:
        """The allocation's node stops answering: the server marks it lost; its processes are gone."""
        alloc = self.allocs[alloc_id]
        alloc.client_status = "lost"
        alloc.desired_status = "stop"
        alloc.client_description = "alloc is lost since its node is down"
        for task in alloc.tasks.values():
            task.killing = True
            self._signal(task, signal.SIGKILL)
        await self._touch(alloc)
        await self._settle_job(alloc.job)

    async def launch_periodic(self, parent_id: str, namespace: str = "default") -> str:
        """What Nomad's periodic dispatcher does when the parent's cron spec fires."""
        parent = self.jobs[(namespace, parent_id)]
        return await self._launch_child(parent, "periodic")

    def lose_leader(self, seconds: float) -> None:
        """A leader election: every request fails with Nomad's 500 "No cluster leader" for a while."""
        self.leaderless_until = time.monotonic() + seconds

    def cut_log_streams(self) -> int:
        """Drop every open `fs/logs` connection, as a restarting client agent or a proxy would."""
        streams = [request for request in self._log_streams.values() if request.transport is not None]
        for request in streams:
            assert request.transport is not None
            request.transport.close()
        return len(streams)

    def allocs_of(self, job_id: str) -> list[StubAlloc]:
        return sorted(
            (a for a in self.allocs.values() if a.job["ID"] == job_id), key=lambda a: a.create_index
        )

    # -- HTTP -------------------------------------------------------------------------------------

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                return plain_error(400, "failed to parse JSON input: invalid character")
        request[JSON_BODY] = body
        self.requests.append((request.method, request.path, dict(request.query), body))
        if self.token is not None and request.headers.get("X-Nomad-Token") != self.token:
            return plain_error(403, "Permission denied")
        if time.monotonic() < self.leaderless_until:
            return plain_error(500, "No cluster leader")
        response: web.StreamResponse = await handler(request)
        return response

    async def _route(self, request: web.Request) -> web.StreamResponse:
        path = request.path.removeprefix("/v1")
        method = request.method
        body = request[JSON_BODY]
        ns = request.query.get("namespace", "default")
        if path == "/jobs" and method in {"POST", "PUT"}:
            return await self._register(body, ns)
        if path == "/jobs" and method == "GET":
            return await self._list_jobs(request, ns)
        if path == "/validate/job" and method in {"POST", "PUT"}:
            return self._validate(body)
        if path.startswith("/evaluation/") and method == "GET":
            evaluation = self.evals.get(path.removeprefix("/evaluation/"))
            return web.json_response(evaluation) if evaluation else plain_error(404, "eval not found")
        if path.startswith("/allocation/") and method == "GET":
            alloc = self.allocs.get(path.removeprefix("/allocation/"))
            return web.json_response(alloc.stub()) if alloc else plain_error(404, "alloc not found")
        if path.startswith("/client/fs/logs/") and method == "GET":
            return await self._logs(request, path.removeprefix("/client/fs/logs/"))
        if path.startswith("/client/allocation/") and path.endswith("/signal") and method in {"POST", "PUT"}:
            return self._signal_alloc(path.removeprefix("/client/allocation/").removesuffix("/signal"), body)
        if path.startswith("/job/"):
            return await self._job_route(request, path.removeprefix("/job/"), ns)
        return plain_error(404, f"Invalid URL path {request.path!r}")

    async def _job_route(self, request: web.Request, rest: str, ns: str) -> web.StreamResponse:
        method = request.method
        for suffix in ("/allocations", "/dispatch", "/periodic/force", "/evaluations", "/summary"):
            if rest.endswith(suffix):
                job_id = rest.removesuffix(suffix)
                if suffix == "/allocations" and method == "GET":
                    return await self._blocking(request, functools.partial(self._job_allocs, job_id, ns))
                if suffix == "/dispatch" and method in {"POST", "PUT"}:
                    return await self._dispatch(request, job_id, ns)
                if suffix == "/periodic/force" and method in {"POST", "PUT"}:
                    return await self._force(job_id, ns)
                return plain_error(405, "Invalid method")
        job_id = rest
        if method == "GET":
            job = self.jobs.get((ns, job_id))
            return web.json_response(job) if job else plain_error(404, "job not found")
        if method == "DELETE":
            return await self._deregister(job_id, ns, request.query.get("purge") == "true")
        if method in {"POST", "PUT"}:
            return await self._register(request[JSON_BODY], ns)
        return plain_error(405, "Invalid method")

    async def _blocking(self, request: web.Request, read: Any) -> web.Response:
        """Blocking query: wait while `index` is not behind, up to `wait` (Nomad caps it at 10 minutes)."""
        wanted = int(request.query.get("index", "0") or 0)
        wait_s = min(_parse_duration(request.query.get("wait", "300s")), MAX_WAIT_S)
        deadline = time.monotonic() + wait_s
        async with self._changed:
            while wanted and self.index <= wanted:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), remaining)
        return web.json_response(read(), headers={"X-Nomad-Index": str(self.index)})

    def _job_allocs(self, job_id: str, ns: str) -> list[JsonObject]:
        return [a.stub() for a in self.allocs_of(job_id) if a.job.get("Namespace", "default") == ns]

    # -- jobs -------------------------------------------------------------------------------------

    def _job_errors(self, job: Any) -> list[str]:
        if not isinstance(job, dict):
            return ["Job is required"]
        errors = []
        if not job.get("ID"):
            errors.append("Missing job ID")
        if job.get("Type", "service") not in {"service", "batch", "system", "sysbatch"}:
            errors.append(f"Invalid job type: {job.get('Type')!r}")
        groups = job.get("TaskGroups") or []
        if not groups and not job.get("ParameterizedJob") and not job.get("Periodic"):
            errors.append("Missing job task groups")
        periodic = job.get("Periodic") or {}
        if periodic.get("Enabled"):
            try:
                StubCron.parse(str(periodic.get("Spec") or ""))
                ZoneInfo(str(periodic.get("TimeZone") or "UTC"))
            except (ValueError, KeyError) as exc:
                errors.append(
                    f"Periodic validation failed: Invalid cron spec {periodic.get('Spec')!r}: {exc}"
                )
        for group in groups:
            if not group.get("Tasks"):
                errors.append(
                    f"Task group {group.get('Name')} validation failed: Missing tasks for task group"
                )
            for task in group.get("Tasks") or []:
                if not task.get("Driver"):
                    errors.append(f"Task {task.get('Name')} validation failed: Missing task driver")
        return errors

    def _validate(self, body: Any) -> web.Response:
        errors = self._job_errors((body or {}).get("Job"))
        return web.json_response(
            {
                "DriverConfigValidated": not errors,
                "ValidationErrors": errors,
                "Error": multierror(errors) if errors else "",
                "Warnings": "",
            }
        )

    async def _register(self, body: Any, ns: str) -> web.Response:
        if self.register_failures:
            status, text = self.register_failures.pop(0)
            return plain_error(status, text)
        job = dict((body or {}).get("Job") or {})
        errors = self._job_errors(job)
        if errors:
            return plain_error(400, multierror(errors))
        ns = job.get("Namespace") or ns
        key = (ns, job["ID"])
        existing = self.jobs.get(key)
        if body.get("EnforceIndex") and int(body.get("JobModifyIndex") or 0) != (
            existing["JobModifyIndex"] if existing else 0
        ):
            return plain_error(
                400,
                f"Enforcing job modify index {body.get('JobModifyIndex')}: job already exists with "
                f"modify index {existing['JobModifyIndex'] if existing else 0}",
            )
        await self.bump()
        job.update(
            {
                "Namespace": ns,
                "Region": job.get("Region") or "global",
                "Type": job.get("Type") or "service",
                "Status": "running" if job.get("Periodic") or job.get("ParameterizedJob") else "pending",
                "StatusDescription": "",
                "Stop": False,
                "ParentID": job.get("ParentID", ""),
                "CreateIndex": existing["CreateIndex"] if existing else self.index,
                "ModifyIndex": self.index,
                "JobModifyIndex": self.index,
                "SubmitTime": now_ns(),
                "Version": (existing["Version"] + 1) if existing else 0,
            }
        )
        self.jobs[key] = job
        self._tick(key)
        evaluation = self._new_eval(job, "job-register")
        if not job.get("Periodic") and not job.get("ParameterizedJob"):
            await self._place(job, evaluation)
        return web.json_response(
            {
                "EvalID": evaluation["ID"],
                "EvalCreateIndex": evaluation["CreateIndex"],
                "JobModifyIndex": job["JobModifyIndex"],
                "Warnings": "",
                "Index": self.index,
                "LastContact": 0,
                "KnownLeader": True,
            }
        )

    def _tick(self, key: tuple[str, str]) -> None:
        """(Re)start the periodic launches of the job at `key`, as registering it does in Nomad."""
        ticker = self._periodic.pop(key, None)
        if ticker is not None:
            ticker.cancel()
        job = self.jobs.get(key)
        if job is not None and not job["Stop"] and (job.get("Periodic") or {}).get("Enabled"):
            self._periodic[key] = asyncio.create_task(self._launch_on_schedule(job))

    async def _launch_on_schedule(self, parent: JsonObject) -> None:
        periodic = parent["Periodic"]
        cron = StubCron.parse(str(periodic["Spec"]))
        zone = ZoneInfo(str(periodic.get("TimeZone") or "UTC"))
        while (launch := cron.next_after(time.time(), zone)) is not None:
            await asyncio.sleep(max(launch - time.time(), 0.0))
            running = [
                job
                for job in self.jobs.values()
                if job.get("ParentID") == parent["ID"]
                and job["Namespace"] == parent["Namespace"]
                and job["Status"] != "dead"
            ]
            if periodic.get("ProhibitOverlap") and running:
                continue
            await self._launch_child(parent, "periodic", launched=int(launch))

    def _new_eval(self, job: JsonObject, trigger: str) -> JsonObject:
        evaluation = {
            "ID": str(uuid.uuid4()),
            "Namespace": job["Namespace"],
            "Priority": job.get("Priority", 50),
            "Type": job.get("Type", "batch"),
            "TriggeredBy": trigger,
            "JobID": job["ID"],
            "JobModifyIndex": job["JobModifyIndex"],
            "Status": "pending",
            "StatusDescription": "",
            "BlockedEval": "",
            "FailedTGAllocs": None,
            "QueuedAllocations": {},
            "CreateIndex": self.index,
            "ModifyIndex": self.index,
        }
        self.evals[evaluation["ID"]] = evaluation
        return evaluation

    async def _place(self, job: JsonObject, evaluation: JsonObject) -> None:
        if self.hold_placement:
            blocked = self._new_eval(job, "queued-allocs")
            blocked["Status"] = "blocked"
            evaluation.update(
                {
                    "Status": "complete",
                    "BlockedEval": blocked["ID"],
                    "FailedTGAllocs": {
                        group["Name"]: {
                            "NodesEvaluated": 1,
                            "NodesExhausted": 1,
                            "DimensionExhausted": {"cpu": 1},
                        }
                        for group in job["TaskGroups"]
                    },
                    "QueuedAllocations": {
                        group["Name"]: group.get("Count", 1) for group in job["TaskGroups"]
                    },
                }
            )
            await self.bump()
            return
        for group in job["TaskGroups"]:
            for instance in range(int(group.get("Count") or 1)):
                await self.bump()
                alloc_id = str(uuid.uuid4())
                alloc = StubAlloc(
                    id=alloc_id,
                    eval_id=evaluation["ID"],
                    name=f"{job['ID']}.{group['Name']}[{instance}]",
                    job=job,
                    group=group["Name"],
                    create_index=self.index,
                    modify_index=self.index,
                    tasks={
                        task["Name"]: StubTask(task["Name"], task, self._pending_state())
                        for task in group.get("Tasks") or []
                    },
                    log_dir=self.work_dir / alloc_id / "alloc" / "logs",
                )
                alloc.log_dir.mkdir(parents=True)
                self.allocs[alloc_id] = alloc
                alloc.runner = asyncio.create_task(self._run_alloc(alloc))
        evaluation.update({"Status": "complete", "ModifyIndex": self.index})

    def _pending_state(self) -> JsonObject:
        return {
            "State": "pending",
            "Failed": False,
            "Restarts": 0,
            "StartedAt": None,
            "FinishedAt": None,
            "Events": [task_event("Received", DisplayMessage="Task received by client")],
        }

    async def _touch(self, alloc: StubAlloc) -> None:
        await self.bump()
        alloc.modify_index = self.index
        alloc.modify_time = now_ns()

    async def _run_alloc(self, alloc: StubAlloc) -> None:
        await asyncio.gather(*(self._run_task(alloc, task) for task in alloc.tasks.values()))
        if alloc.client_status != "lost":
            failed = any(task.state["Failed"] for task in alloc.tasks.values())
            alloc.client_status = "failed" if failed else "complete"
            alloc.client_description = "Failed tasks" if failed else "All tasks have completed"
            await self._touch(alloc)
        await self._settle_job(alloc.job)

    async def _run_task(self, alloc: StubAlloc, task: StubTask) -> None:
        state = task.state
        state["Events"].append(task_event("Task Setup", Message="Building Task Directory"))
        if alloc.desired_status == "stop":
            state.update({"State": "dead", "FinishedAt": rfc3339(now_ns())})
            return
        driver = task.spec.get("Driver")
        config = task.spec.get("Config") or {}
        if driver not in RUNNABLE_DRIVERS or not config.get("command"):
            message = f'failed to start task: driver "{driver}" is not available on this node'
            state["Events"].append(
                task_event("Driver Failure", FailsTask=True, DriverError=message, DisplayMessage=message)
            )
            state.update({"State": "dead", "Failed": True, "FinishedAt": rfc3339(now_ns())})
            await self._touch(alloc)
            return
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        stdout = os.open(alloc.log_dir / f"{task.name}.stdout.0", flags, 0o644)
        stderr = os.open(alloc.log_dir / f"{task.name}.stderr.0", flags, 0o644)
        try:
            task.process = await asyncio.create_subprocess_exec(
                config["command"],
                *[str(arg) for arg in config.get("args") or []],
                stdin=asyncio.subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                env=self._task_env(alloc, task),
                cwd=alloc.log_dir.parent,
                start_new_session=True,
            )
        except OSError as exc:
            message = f"failed to launch command with executor: {exc}"
            state["Events"].append(task_event("Driver Failure", FailsTask=True, DriverError=message))
            state.update({"State": "dead", "Failed": True, "FinishedAt": rfc3339(now_ns())})
            await self._touch(alloc)
            return
        finally:
            os.close(stdout)
            os.close(stderr)
        state.update({"State": "running", "StartedAt": rfc3339(now_ns())})
        state["Events"].append(task_event("Started", DisplayMessage="Task started by client"))
        if alloc.desired_status == "stop":
            self._kill_task(alloc, task)
        alloc.client_status = "running"
        if alloc.job["Status"] == "pending":
            alloc.job["Status"] = "running"
        await self._touch(alloc)
        returncode = await task.process.wait()
        code, sig = (0, -returncode) if returncode < 0 else (returncode, 0)
        state["Events"].append(
            task_event(
                "Terminated",
                ExitCode=code,
                Signal=sig,
                DisplayMessage=f"Exit Code: {code}" + (f", Signal: {sig}" if sig else ""),
                Details={"exit_code": str(code), "signal": str(sig), "oom_killed": "false"},
            )
        )
        if task.killing:
            state["Events"].append(task_event("Killed", DisplayMessage="Task successfully killed"))
        failed = not task.killing and (code != 0 or sig != 0)
        if failed:
            state["Events"].append(
                task_event(
                    "Not Restarting",
                    FailsTask=True,
                    DisplayMessage="Error was unrecoverable",
                    Details={"fails_task": "true", "restart_reason": "Error was unrecoverable"},
                )
            )
        state.update({"State": "dead", "Failed": failed, "FinishedAt": rfc3339(now_ns())})
        await self._touch(alloc)

    def _task_env(self, alloc: StubAlloc, task: StubTask) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
        env.update({str(k): str(v) for k, v in (task.spec.get("Env") or {}).items()})
        for key, value in (alloc.job.get("Meta") or {}).items():
            env[f"NOMAD_META_{key}"] = str(value)
        env.update(
            {
                "NOMAD_ALLOC_ID": alloc.id,
                "NOMAD_JOB_ID": alloc.job["ID"],
                "NOMAD_JOB_NAME": str(alloc.job.get("Name") or alloc.job["ID"]),
                "NOMAD_TASK_NAME": task.name,
                "NOMAD_GROUP_NAME": alloc.group,
            }
        )
        return env

    async def _settle_job(self, job: JsonObject) -> None:
        allocs = self.allocs_of(job["ID"])
        if allocs and all(a.terminal for a in allocs) and job["Status"] != "dead":
            job["Status"] = "dead"
            await self.bump()
            job["ModifyIndex"] = self.index

    async def _deregister(self, job_id: str, ns: str, purge: bool) -> web.Response:
        job = self.jobs.get((ns, job_id))
        if job is None:
            return plain_error(404, "job not found")
        await self.bump()
        job.update({"Stop": True, "JobModifyIndex": self.index, "ModifyIndex": self.index})
        evaluation = self._new_eval(job, "job-deregister")
        evaluation["Status"] = "complete"
        for alloc in self.allocs_of(job_id):
            if alloc.terminal:
                continue
            alloc.desired_status = "stop"
            alloc.desired_description = "alloc is not needed since job was stopped"
            for task in alloc.tasks.values():
                self._kill_task(alloc, task)
            await self._touch(alloc)
        if not any(not a.terminal for a in self.allocs_of(job_id)):
            job["Status"] = "dead"
        self._tick((ns, job_id))
        if purge:
            del self.jobs[(ns, job_id)]
            await self.bump()
        return web.json_response(
            {
                "EvalID": evaluation["ID"],
                "EvalCreateIndex": evaluation["CreateIndex"],
                "JobModifyIndex": self.index,
            }
        )

    def _kill_task(self, alloc: StubAlloc, task: StubTask) -> None:
        if task.process is None or task.process.returncode is not None:
            return
        task.killing = True
        timeout_ns = int(task.spec.get("KillTimeout") or DEFAULT_KILL_TIMEOUT_NS)
        task.state["Events"].append(
            task_event("Killing", KillTimeout=timeout_ns, DisplayMessage="Sent interrupt")
        )
        self._signal(task, signal.Signals[task.spec.get("KillSignal") or "SIGINT"])
        asyncio.get_running_loop().call_later(timeout_ns / 1e9, self._signal, task, signal.SIGKILL)

    def _signal(self, task: StubTask, sig: signal.Signals) -> None:
        if task.process is not None and task.process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(task.process.pid, sig)

    def _signal_alloc(self, alloc_id: str, body: Any) -> web.Response:
        alloc = self.allocs.get(alloc_id)
        if alloc is None:
            return plain_error(404, "Unknown allocation")
        name = (body or {}).get("Signal") or "SIGKILL"
        tasks = (
            [alloc.tasks[body["Task"]]] if (body or {}).get("Task") in alloc.tasks else alloc.tasks.values()
        )
        for task in tasks:
            self._signal(task, signal.Signals[name])
        return web.json_response({})

    async def _list_jobs(self, request: web.Request, ns: str) -> web.Response:
        prefix = request.query.get("prefix", "")

        def read() -> list[JsonObject]:
            return [
                {
                    "ID": job["ID"],
                    "ParentID": job.get("ParentID", ""),
                    "Name": job.get("Name", job["ID"]),
                    "Namespace": job["Namespace"],
                    "Type": job.get("Type"),
                    "Priority": job.get("Priority", 50),
                    "Periodic": bool(job.get("Periodic")),
                    "ParameterizedJob": bool(job.get("ParameterizedJob")),
                    "Stop": job["Stop"],
                    "Status": job["Status"],
                    "StatusDescription": "",
                    "CreateIndex": job["CreateIndex"],
                    "ModifyIndex": job["ModifyIndex"],
                    "JobModifyIndex": job["JobModifyIndex"],
                    "SubmitTime": job["SubmitTime"],
                }
                for (job_ns, job_id), job in sorted(self.jobs.items())
                if job_ns == ns and job_id.startswith(prefix)
            ]

        return await self._blocking(request, read)

    async def _dispatch(self, request: web.Request, job_id: str, ns: str) -> web.Response:
        parent = self.jobs.get((ns, job_id))
        if parent is None:
            return plain_error(404, "job not found")
        if not parent.get("ParameterizedJob"):
            return plain_error(400, "Specified job is not a parameterized job")
        body: Any = request[JSON_BODY] or {}
        token = request.query.get("idempotency_token", "")
        if token:
            for child in self.jobs.values():
                if child.get("ParentID") == job_id and child.get("DispatchIdempotencyToken") == token:
                    return web.json_response(
                        {
                            "Index": self.index,
                            "EvalID": "",
                            "EvalCreateIndex": 0,
                            "DispatchedJobID": child["ID"],
                        }
                    )
        config = parent["ParameterizedJob"]
        meta = body.get("Meta") or {}
        allowed = set(config.get("MetaRequired") or []) | set(config.get("MetaOptional") or [])
        unpermitted = sorted(set(meta) - allowed)
        if unpermitted:
            return plain_error(400, f"Dispatch request included unpermitted metadata keys: {unpermitted}")
        prefix = body.get("IdPrefixTemplate") or ""
        child_id = await self._launch_child(
            parent, "dispatch", prefix=prefix, meta=meta, payload=body.get("Payload"), token=token
        )
        child = self.jobs[(ns, child_id)]
        evaluation = next(e for e in self.evals.values() if e["JobID"] == child_id)
        return web.json_response(
            {
                "Index": self.index,
                "JobCreateIndex": child["CreateIndex"],
                "EvalCreateIndex": evaluation["CreateIndex"],
                "EvalID": evaluation["ID"],
                "DispatchedJobID": child_id,
            }
        )

    async def _force(self, job_id: str, ns: str) -> web.Response:
        parent = self.jobs.get((ns, job_id))
        if parent is None:
            return plain_error(404, "job not found")
        if not parent.get("Periodic"):
            return plain_error(400, "Job is not periodic")
        child = await self._launch_child(parent, "periodic")
        evaluation = next(e for e in self.evals.values() if e["JobID"] == child)
        return web.json_response(
            {"EvalID": evaluation["ID"], "EvalCreateIndex": evaluation["CreateIndex"], "Index": self.index}
        )

    async def _launch_child(
        self,
        parent: JsonObject,
        kind: str,
        *,
        prefix: str = "",
        meta: dict[str, str] | None = None,
        payload: str | None = None,
        token: str = "",
        launched: int | None = None,
    ) -> str:
        launched = launched or int(time.time())
        if kind == "periodic":
            while (parent["Namespace"], f"{parent['ID']}/periodic-{launched}") in self.jobs:
                launched += 1
            child_id = f"{parent['ID']}/periodic-{launched}"
        else:
            infix = f"{prefix}-" if prefix else ""
            child_id = f"{parent['ID']}/dispatch-{infix}{launched}-{uuid.uuid4().hex[:8]}"
        child = json.loads(json.dumps(parent))
        for key in ("Periodic", "ParameterizedJob", "CreateIndex", "ModifyIndex", "JobModifyIndex"):
            child.pop(key, None)
        child.update(
            {
                "ID": child_id,
                "Name": child_id,
                "ParentID": parent["ID"],
                "Dispatched": kind == "dispatch",
                "DispatchIdempotencyToken": token,
                "Meta": {**(parent.get("Meta") or {}), **(meta or {})},
                "Payload": payload,
            }
        )
        if payload is not None:
            for group in child["TaskGroups"]:
                for task in group["Tasks"]:
                    file = (task.get("DispatchPayload") or {}).get("File")
                    if file:
                        task.setdefault("Env", {})["STUB_DISPATCH_PAYLOAD"] = base64.b64decode(
                            payload
                        ).decode()
        await self._register({"Job": child}, parent["Namespace"])
        return child_id

    # -- logs -------------------------------------------------------------------------------------

    async def _logs(self, request: web.Request, alloc_id: str) -> web.StreamResponse:
        alloc = self.allocs.get(alloc_id)
        if alloc is None:
            return plain_error(404, f"Unknown allocation {alloc_id!r}")
        if alloc.client_status == "lost":
            return plain_error(500, f"Unknown node {alloc.id}: no path to node")
        task_name = request.query.get("task", "")
        log_type = request.query.get("type", "")
        origin = request.query.get("origin", "start")
        if not task_name:
            return plain_error(400, "must provide task name")
        if log_type not in {"stdout", "stderr"}:
            return plain_error(400, "must provide log type (stdout/stderr)")
        if origin not in {"start", "end"}:
            return plain_error(400, 'origin must be "start" or "end"')
        task = alloc.tasks.get(task_name)
        if task is None:
            return plain_error(400, f"unknown task name {task_name!r}")
        if not task.state.get("StartedAt"):
            return plain_error(404, f"task {task_name!r} not started yet. No logs available")
        follow = request.query.get("follow") == "true"
        plain = request.query.get("plain") == "true"
        path = alloc.log_dir / f"{task_name}.{log_type}.0"
        offset = int(request.query.get("offset", "0") or 0)
        size = path.stat().st_size
        position = min(max(size - offset, 0) if origin == "end" else offset, size)
        response = web.StreamResponse(headers={"Content-Type": "text/plain" if plain else "application/json"})
        await response.prepare(request)
        fd = os.open(path, os.O_RDONLY)
        self._log_streams[id(request)] = request
        try:
            await self._send_log(request, response, fd, path, position, follow, plain)
            await response.write_eof()
        except ConnectionResetError:
            return response
        finally:
            self._log_streams.pop(id(request), None)
            os.close(fd)
        return response

    async def _send_log(
        self,
        request: web.Request,
        response: web.StreamResponse,
        fd: int,
        path: Path,
        position: int,
        follow: bool,
        plain: bool,
    ) -> None:
        """Send the file from `position`; when following, keep sending what is appended, with `{}`
        heartbeats in framed mode, until the client goes away (Nomad never ends a followed stream)."""
        last_write = time.monotonic()
        while True:
            data = os.pread(fd, 64 * 1024, position)
            if data:
                position += len(data)
                await response.write(data if plain else self._frame(path, position, data))
                last_write = time.monotonic()
                continue
            if not follow or request.transport is None or request.transport.is_closing():
                return
            if not plain and time.monotonic() - last_write > HEARTBEAT_S:
                await response.write(b"{}")
                last_write = time.monotonic()
            await asyncio.sleep(FOLLOW_POLL_S)

    def _frame(self, path: Path, offset: int, data: bytes) -> bytes:
        relative = path.relative_to(path.parents[2]).as_posix()
        return json.dumps(
            {"File": relative, "Offset": offset, "Data": base64.b64encode(data).decode("ascii")}
        ).encode()


def _parse_duration(text: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for unit in ("ms", "s", "m", "h"):
        if text.endswith(unit) and text[: -len(unit)].replace(".", "", 1).isdigit():
            return float(text[: -len(unit)]) * units[unit]
    return MAX_WAIT_S


@dataclass
class NomadTarget:
    """The Nomad a test runs against: the stub, or a real cluster when `NOMAD_ADDR` is set."""

    connection: NomadConnection
    stub: NomadStub | None

    def require_stub(self, why: str) -> NomadStub:
        if self.stub is None:
            pytest.skip(f"needs the stub Nomad ({why}); a real cluster cannot be made to do that on demand")
        return self.stub


@contextlib.asynccontextmanager
async def nomad_target(work_dir: Path) -> AsyncIterator[NomadTarget]:
    real = NomadConnection.from_env()
    if real is not None:
        yield NomadTarget(real, None)
        return
    stub = NomadStub(work_dir)
    await stub.start()
    try:
        yield NomadTarget(NomadConnection(stub.url), stub)
    finally:
        await stub.stop()


@pytest.fixture
async def nomad(tmp_path: Path) -> AsyncIterator[NomadTarget]:
    """The Nomad a test drives: the stub, or the real cluster NOMAD_ADDR names."""
    async with nomad_target(tmp_path) as target:
        yield target


@pytest.fixture
async def client(nomad: NomadTarget) -> AsyncIterator[NomadClient]:
    nomad_client = NomadClient(nomad.connection)
    yield nomad_client
    await nomad_client.close()


class CollectedLog:
    """The log sink as the driver sees it; the dispatcher test checks the real JetStream publisher."""

    def __init__(self) -> None:
        self.chunks: list[tuple[LogFd, bytes]] = []

    async def write(self, fd: LogFd, data: bytes) -> None:
        self.chunks.append((fd, data))

    def text(self, fd: LogFd) -> str:
        return b"".join(data for chunk_fd, data in self.chunks if chunk_fd == fd).decode()


def shell_job(script: str, *, kill_timeout_s: float = 2.0, **fields: object) -> JsonObject:
    """A batch job running `script` with raw_exec: one group, no restarts or reschedules, so a failure
    is final at once (Nomad's batch defaults would retry it), and small resources, so a dev agent places
    dozens at once."""
    return {
        "Name": "test",
        "Datacenters": ["dc1"],
        "Type": "batch",
        "TaskGroups": [
            {
                "Name": "work",
                "Count": 1,
                "RestartPolicy": {"Attempts": 0, "Mode": "fail"},
                "ReschedulePolicy": {"Attempts": 0, "Unlimited": False},
                "Tasks": [
                    {
                        "Name": "main",
                        "Driver": "raw_exec",
                        "KillTimeout": int(kill_timeout_s * 1e9),
                        "Config": {"command": "/bin/sh", "args": ["-c", script]},
                        "Resources": {"CPU": 50, "MemoryMB": 32},
                    }
                ],
            }
        ],
        **fields,
    }


async def until(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)
