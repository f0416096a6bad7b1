"""A job's cron schedule handed to Nomad's periodic block, end to end through the API, with the renderer
and dispatcher running in-process against real NATS and PostgreSQL.

Nomad is the stub server (tests/nomad_stub.py), which replays the request and response shapes of Nomad's
documented HTTP API and launches a periodic parent's children `<parent>/periodic-<unix time>` on its cron
schedule as Nomad's periodic dispatcher does, because no Nomad binary can be installed here; with
`NOMAD_ADDR` set the same tests run against that real Nomad (docs/nomad.md).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from contracts import streams
from contracts.envelope import RecordedEvent
from services.dispatcher.config import DispatcherSettings
from services.dispatcher.drivers.nomad import NomadDriver
from services.dispatcher.drivers.nomad_api import NomadClient
from services.dispatcher.service import DispatcherService
from services.renderer import service as renderer_service
from shared.domain.nomad_schedule import periodic_run_id
from shared.domain.run_lifecycle import TERMINAL_EVENT_TYPES
from shared.eventstore.store import EventStore
from shared.service import open_runtime
from shared.settings import Settings
from tests.integration.api.secret_keys import key_file, keyed_api, public_key_file
from tests.nomad_stub import NomadTarget, shell_job
from tests.nomad_stub import nomad as nomad
from tests.polling import eventually

__all__ = ["key_file", "keyed_api", "public_key_file"]

Client = TestClient[Any, Any]
FAST = DispatcherSettings(
    lease_ttl_s=1.5, shutdown_grace_s=10, schedule_poll_s=0.05, nomad_periodic_resync_s=1
)
EVERY_SECOND = {"cron": "* * * * * *", "fired_by": "nomad"}


def nomad_execution(script: str = 'echo "$NOMAD_META_greeting from $NOMAD_JOB_ID"') -> dict[str, Any]:
    """A nomad execution whose job passes the `greeting` param to its task through the job's meta."""
    job = shell_job(script, Meta={"greeting": "@GREETING@"})
    return {
        "driver": "nomad",
        "payload_template": json.dumps(job).replace('"@GREETING@"', "params.greeting"),
        "default_params": {"greeting": "hello"},
    }


@pytest.fixture
async def client(nomad: NomadTarget) -> AsyncIterator[NomadClient]:
    """Purges the periodic jobs the test left registered, so a real cluster stops launching them."""
    nomad_client = NomadClient(nomad.connection)
    yield nomad_client
    jobs, _ = await nomad_client.list_jobs("test-")
    for job in jobs:
        if job.get("Periodic"):
            await nomad_client.deregister_job(str(job["ID"]), purge=True)
    await nomad_client.close()


@asynccontextmanager
async def renderer_running(settings: Settings) -> AsyncIterator[None]:
    async with open_runtime(settings, "renderer") as runtime:
        shutdown = await renderer_service.start(runtime)
        await runtime.nc.flush()
        yield
        await shutdown()


@pytest.fixture
async def renderer(settings: Settings) -> AsyncIterator[None]:
    async with renderer_running(settings):
        yield


@asynccontextmanager
async def dispatcher(settings: Settings, nomad: NomadTarget, name: str) -> AsyncIterator[DispatcherService]:
    """A dispatcher replica whose nomad driver talks to the test's Nomad."""
    driver = NomadDriver(nomad.connection, wait_s=2.0)
    replica = settings.model_copy(update={"instance": name})
    async with open_runtime(replica, "dispatcher") as runtime:
        service = DispatcherService(runtime, FAST)
        service.dispatcher.drivers[driver.name] = driver
        await service.start()
        try:
            yield service
        finally:
            await service.shutdown()
            await driver.close()


@pytest.fixture
async def running(settings: Settings, nomad: NomadTarget, renderer: None) -> AsyncIterator[DispatcherService]:
    async with dispatcher(settings, nomad, "d1") as service:
        yield service


async def define(api: Client, execution: dict[str, Any]) -> None:
    response = await api.post("/state", json={"executions": {"tick": execution}})
    assert response.status == 200, await response.text()


async def create_job(api: Client, **fields: Any) -> str:
    response = await api.post("/jobs", json={"name": "tick", "execution": "tick"} | fields)
    assert response.status == 201, await response.text()
    return str((await response.json())["id"])


async def schedule_events(store: EventStore, job_id: str) -> list[RecordedEvent]:
    return await store.read_stream(streams.stream_id(streams.SCHEDULE, job_id))


def handovers(events: list[RecordedEvent]) -> list[str]:
    return [e.type for e in events if e.type.startswith("Periodic")]


async def scheduled_runs(store: EventStore, job_id: str) -> list[list[RecordedEvent]]:
    """Each run of the job recorded from a schedule, as its stream, oldest tick first."""
    requests = await store.read_all(types=["RunRequested"], limit=100_000)
    mine = [e for e in requests if e.data.get("job_id") == job_id and e.data.get("trigger") == "schedule"]
    mine.sort(key=lambda e: str(e.data["scheduled_at"]))
    return [await store.read_stream(e.stream_id) for e in mine]


async def ended_runs(store: EventStore, job_id: str, at_least: int) -> list[list[RecordedEvent]]:
    async def ended() -> list[list[RecordedEvent]]:
        runs = await scheduled_runs(store, job_id)
        done = [run for run in runs if run[-1].type in TERMINAL_EVENT_TYPES]
        return done if len(done) >= at_least else []

    result: list[list[RecordedEvent]] = await eventually(ended)
    return result


async def children(client: NomadClient, parent_id: str) -> list[str]:
    jobs, _ = await client.list_jobs(f"{parent_id}/periodic-")
    return sorted(str(job["ID"]) for job in jobs)


async def test_a_one_second_cron_handed_to_nomad_records_each_launch_as_a_scheduled_run_to_its_end(
    api: Client, store: EventStore, client: NomadClient, running: DispatcherService
) -> None:
    """Runs against the stub replaying Nomad's documented API, which launches the parent's children on
    its cron schedule as Nomad does (or a real Nomad with NOMAD_ADDR)."""
    await define(api, nomad_execution())
    job_id = await create_job(api, schedule=EVERY_SECOND, params={"greeting": "tick"})
    parent_id = f"test-{job_id}"

    recorded = await eventually(lambda: schedule_events(store, job_id))
    assert handovers(recorded) == ["PeriodicParentRegistered"]
    assert recorded[0].data["parent_id"] == parent_id and recorded[0].data["cron"] == "* * * * * * *"
    parent = await client.read_job(parent_id)
    assert parent is not None and parent["Stop"] is False
    assert {k: parent["Periodic"][k] for k in ("Enabled", "Spec", "TimeZone", "ProhibitOverlap")} == {
        "Enabled": True,
        "Spec": "* * * * * * *",
        "TimeZone": "UTC",
        "ProhibitOverlap": True,
    }
    assert parent["Meta"]["batchyard_job_id"] == job_id

    runs = await ended_runs(store, job_id, at_least=2)
    for run in runs[:2]:
        assert [e.type for e in run] == ["RunRequested", "RunRendered", "RunStarted", "RunSucceeded"]
        requested, rendered, started = (e.data for e in run[:3])
        child = started["handle"]["job_id"]
        assert (
            child.startswith(f"{parent_id}/periodic-")
            and started["handle"]["periodic_parent_id"] == parent_id
        )
        assert run[0].stream_id == f"run-{periodic_run_id(uuid.UUID(job_id), child)}"
        launched = datetime.fromtimestamp(int(child.rpartition("-")[2]), UTC)
        assert datetime.fromisoformat(requested["scheduled_at"]) == launched
        assert rendered["periodic_parent"] == parent_id and rendered["driver"] == "nomad"
        view = await (await api.get(f"/runs/{requested['run_id']}")).json()
        assert (view["status"], view["trigger"], view["job_id"]) == ("succeeded", "schedule", job_id)
        page = await (await api.get(f"/runs/{requested['run_id']}/log")).json()
        assert page["data"] == f"tick from {child}\n"


async def test_pausing_deregisters_the_parent_and_resuming_registers_it_again(
    api: Client, store: EventStore, client: NomadClient, running: DispatcherService
) -> None:
    """Runs against the stub replaying Nomad's documented API (or a real Nomad with NOMAD_ADDR)."""
    await define(api, nomad_execution())
    job_id = await create_job(api, schedule=EVERY_SECOND)
    parent_id = f"test-{job_id}"
    await ended_runs(store, job_id, at_least=1)

    assert (await api.post(f"/jobs/{job_id}/pause", json={"reason": "maintenance"})).status == 200

    async def deregistered() -> bool:
        return handovers(await schedule_events(store, job_id))[-1:] == ["PeriodicParentDeregistered"]

    await eventually(deregistered)
    parent = await client.read_job(parent_id)
    assert parent is not None and parent["Stop"] is True
    assert (await schedule_events(store, job_id))[-1].data["reason"] == "the job was paused"
    launched = await children(client, parent_id)
    await asyncio.sleep(2.5)
    assert await children(client, parent_id) == launched, "Nomad launched runs of a paused job"
    runs = await scheduled_runs(store, job_id)
    assert len(runs) == len(launched), "every launch made before the pause is recorded"

    assert (await api.post(f"/jobs/{job_id}/resume")).status == 200

    async def registered_again() -> bool:
        return handovers(await schedule_events(store, job_id))[-1:] == ["PeriodicParentRegistered"]

    await eventually(registered_again)
    parent = await client.read_job(parent_id)
    assert parent is not None and parent["Stop"] is False
    await ended_runs(store, job_id, at_least=len(runs) + 1)

    assert (await api.delete(f"/jobs/{job_id}")).status == 204
    await eventually(deregistered)
    assert (await schedule_events(store, job_id))[-1].data["reason"] == "the job was deleted"


async def test_handing_the_schedule_back_to_batchyard_deregisters_the_parent_and_batchyard_fires(
    api: Client, store: EventStore, client: NomadClient, running: DispatcherService
) -> None:
    """Runs against the stub replaying Nomad's documented API (or a real Nomad with NOMAD_ADDR)."""
    await define(api, nomad_execution())
    job_id = await create_job(api, schedule=EVERY_SECOND)
    await eventually(lambda: schedule_events(store, job_id))

    response = await api.patch(f"/jobs/{job_id}", json={"schedule": {"cron": "* * * * * *"}})
    assert response.status == 200, await response.text()

    async def back_with_batchyard() -> list[RecordedEvent]:
        events = await schedule_events(store, job_id)
        return events if handovers(events)[-1:] == ["PeriodicParentDeregistered"] else []

    events = await eventually(back_with_batchyard)
    assert events[-1].data["reason"] == "the job's schedule is fired by batchyard again"

    async def fired_by_batchyard() -> bool:
        runs = await scheduled_runs(store, job_id)
        return any(
            run[1].type == "RunRendered" and run[1].actor == "renderer" for run in runs if len(run) > 1
        )

    await eventually(fired_by_batchyard)


async def test_an_execution_moved_to_another_driver_deregisters_the_parent_and_records_why(
    api: Client, store: EventStore, client: NomadClient, running: DispatcherService
) -> None:
    """Runs against the stub replaying Nomad's documented API (or a real Nomad with NOMAD_ADDR)."""
    await define(api, nomad_execution())
    job_id = await create_job(api, schedule=EVERY_SECOND)
    await eventually(lambda: schedule_events(store, job_id))

    local = {"driver": "local", "payload_template": "{command: ['true']}"}
    assert (await api.put("/executions/tick", json=local)).status in (200, 201)

    async def withdrawn() -> list[RecordedEvent]:
        events = await schedule_events(store, job_id)
        return (
            events
            if handovers(events)[-2:] == ["PeriodicHandoverFailed", "PeriodicParentDeregistered"]
            else []
        )

    failed, deregistered = (await eventually(withdrawn))[-2:]
    assert failed.data["reason"] == (
        "execution 'tick' renders for the local driver; "
        "only a nomad execution's schedule can be handed to Nomad"
    )
    assert deregistered.data["reason"].startswith("the schedule could not be handed to Nomad: execution")
    parent = await client.read_job(f"test-{job_id}")
    assert parent is not None and parent["Stop"] is True


async def test_a_stop_request_deregisters_only_the_child_and_the_parent_keeps_its_schedule(
    api: Client, store: EventStore, client: NomadClient, running: DispatcherService
) -> None:
    """Runs against the stub replaying Nomad's documented API (or a real Nomad with NOMAD_ADDR)."""
    await define(api, nomad_execution("trap 'exit 0' INT TERM; while true; do sleep 0.05; done"))
    job_id = await create_job(api, schedule=EVERY_SECOND)

    async def started() -> list[RecordedEvent]:
        runs = await scheduled_runs(store, job_id)
        return next((run for run in runs if run[-1].type == "RunStarted"), [])

    run = await eventually(started)
    run_id = run[0].data["run_id"]
    child = run[-1].data["handle"]["job_id"]
    response = await api.post(f"/runs/{run_id}/stop", headers={"X-Actor": "bob"})
    assert response.status == 202, await response.text()

    async def ended() -> list[RecordedEvent]:
        events = await store.read_stream(run[0].stream_id)
        return events if events[-1].type in TERMINAL_EVENT_TYPES else []

    events = await eventually(ended)
    assert events[-1].type == "RunStopped" and events[-1].data["stopped_by"] == "bob"
    stopped_child = await client.read_job(child)
    parent = await client.read_job(f"test-{job_id}")
    assert stopped_child is not None and stopped_child["Stop"] is True
    assert parent is not None and parent["Stop"] is False


async def test_launches_made_while_the_leading_dispatcher_is_away_are_recorded_once_by_the_next(
    api: Client,
    settings: Settings,
    store: EventStore,
    nomad: NomadTarget,
    client: NomadClient,
    renderer: None,
) -> None:
    """Runs against the stub replaying Nomad's documented API: Nomad keeps launching on its schedule
    while no dispatcher watches, as a real cluster does."""
    stub = nomad.require_stub("launches while no dispatcher runs")
    await define(api, nomad_execution())
    async with dispatcher(settings, nomad, "first"):
        job_id = await create_job(api, schedule=EVERY_SECOND)
        await ended_runs(store, job_id, at_least=1)
    parent_id = f"test-{job_id}"
    recorded_before = len(await scheduled_runs(store, job_id))
    await asyncio.sleep(2.5)
    launched = sorted(child for (_, child) in stub.jobs if child.startswith(f"{parent_id}/periodic-"))
    assert len(launched) > recorded_before, "Nomad launched nothing while no dispatcher ran"

    async with dispatcher(settings, nomad, "second"), dispatcher(settings, nomad, "third"):
        runs = await ended_runs(store, job_id, at_least=len(launched))
    children_recorded = [run[2].data["handle"]["job_id"] for run in runs]
    assert len(children_recorded) == len(set(children_recorded)), "a launch was recorded twice"
    assert set(launched) <= set(children_recorded)
    late = [run for run in runs if run[2].data["handle"]["job_id"] in launched[recorded_before:]]
    assert late and {run[2].data["dispatcher"].split(":")[0] for run in late} <= {"second", "third"}
    # Nomad started these runs: no replica took their `RunRendered` for a run to start itself.
    assert stub.calls("POST", "/v1/validate/job") == []


async def test_a_secret_param_reaches_nomads_parent_but_the_recorded_payload_and_log_mask_it(
    keyed_api: Client,
    settings: Settings,
    key_file: Path,
    store: EventStore,
    client: NomadClient,
    nomad: NomadTarget,
) -> None:
    """Runs against the stub replaying Nomad's documented API (or a real Nomad with NOMAD_ADDR): the
    renderer seals the payload for the dispatcher, which registers the parent with the cleartext."""
    keyed = settings.model_copy(update={"secret_key_file": key_file})
    await define(keyed_api, nomad_execution())
    async with renderer_running(keyed), dispatcher(keyed, nomad, "d1"):
        job_id = await create_job(
            keyed_api, schedule=EVERY_SECOND, params={"greeting": {"type": "secret", "value": "hunter2"}}
        )
        runs = await ended_runs(store, job_id, at_least=1)
    parent = await client.read_job(f"test-{job_id}")
    assert parent is not None and parent["Meta"]["greeting"] == "hunter2"
    rendered, started = runs[0][1].data, runs[0][2].data
    assert rendered["payload"]["Meta"]["greeting"] == "***" and rendered["sealed"]
    page = await (await keyed_api.get(f"/runs/{rendered['run_id']}/log")).json()
    assert page["data"] == f"*** from {started['handle']['job_id']}\n"
    everything = await store.read_all(limit=100_000)
    assert not [e.type for e in everything if "hunter2" in json.dumps(e.data)]


async def test_a_schedule_nomad_cannot_express_is_422_naming_the_field(defined: Client) -> None:
    """No Nomad needed: the API refuses at the door what Nomad's periodic block cannot honour."""
    await define(defined, nomad_execution())
    response = await defined.post(
        "/jobs",
        json={
            "name": "tick",
            "execution": "tick",
            "schedule": {"cron": "0 0 */2 * MON", "fired_by": "nomad", "jitter_s": 30},
            "overlap": {"policy": "replace"},
        },
    )
    assert response.status == 422, await response.text()
    assert response.content_type == "application/problem+json"
    problem = await response.json()
    fields = {error["field"]: error["reason"] for error in problem["errors"]}
    assert set(fields) == {"body.schedule.cron", "body.schedule.jitter_s", "body.overlap.policy"}
    assert "Nomad's cron runs when either matches" in fields["body.schedule.cron"]
    assert "overlap policy 'replace' cannot be handed to Nomad" in fields["body.overlap.policy"]
    jobs = await (await defined.get("/jobs")).json()
    assert jobs["items"] == []


async def test_handing_a_local_jobs_schedule_to_nomad_is_422_naming_fired_by(defined: Client) -> None:
    """No Nomad needed: only a nomad execution's schedule can be handed to Nomad."""
    response = await defined.post("/jobs", json={"name": "greet", "execution": "hello"})
    job = await response.json()
    patch = {"schedule": {"cron": "0 3 * * *", "fired_by": "nomad", "missed": {"policy": "all"}}}
    response = await defined.patch(f"/jobs/{job['id']}", json=patch)
    assert response.status == 422, await response.text()
    errors = {error["field"]: error["reason"] for error in (await response.json())["errors"]}
    assert set(errors) == {"body.schedule.fired_by", "body.schedule.missed.policy"}
    assert errors["body.schedule.fired_by"].startswith("execution 'hello' uses the local driver")
