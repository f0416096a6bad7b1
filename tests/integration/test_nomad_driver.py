"""The Nomad driver's flows, end to end over HTTP.

These tests run against a stub server (tests/nomad_stub.py) that replays the request and response shapes
of Nomad's documented HTTP API, because no Nomad binary can be installed here; its `raw_exec` tasks are
real local processes. With `NOMAD_ADDR` set they run against that real Nomad instead (docs/nomad.md);
the few that need the stub to fake a cluster event (a node going down, a refused registration) skip.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from contracts.base import JsonObject
from contracts.logs import LogFd
from services.dispatcher.drivers.base import StartFailed
from services.dispatcher.drivers.nomad import NomadDriver, NomadExecution
from services.dispatcher.drivers.nomad_api import NomadClient, NomadConnection
from tests.nomad_stub import CollectedLog, NomadStub, NomadTarget, shell_job, until
from tests.nomad_stub import client as client
from tests.nomad_stub import nomad as nomad


@pytest.fixture
async def driver(nomad: NomadTarget) -> AsyncIterator[NomadDriver]:
    nomad_driver = NomadDriver(nomad.connection, wait_s=2.0)
    yield nomad_driver
    await nomad_driver.close()


async def started(driver: NomadDriver, payload: JsonObject, log: CollectedLog) -> NomadExecution:
    execution = await driver.prepare(str(uuid.uuid4()), payload, log)
    await execution.launch()
    return execution


async def test_a_registered_job_runs_to_success_and_streams_stdout_and_stderr(
    nomad: NomadTarget, driver: NomadDriver, client: NomadClient
) -> None:
    """Runs against the stub replaying Nomad's documented API (or a real Nomad with NOMAD_ADDR)."""
    log = CollectedLog()
    run_id = str(uuid.uuid4())
    execution = await driver.prepare(
        run_id, shell_job("echo hello; echo oops >&2; sleep 0.2; echo bye", Meta={"team": "data"}), log
    )
    job_id = f"test-{run_id}"
    assert execution.handle["job_id"] == job_id and execution.handle["nomad_url"] == nomad.connection.address
    await execution.launch()
    outcome = await execution.outcome()
    assert (outcome.kind, outcome.exit.exit_code) == ("succeeded", 0)
    assert log.text("stdout") == "hello\nbye\n" and log.text("stderr") == "oops\n"
    job = await client.read_job(job_id)
    assert job is not None and job["Type"] == "batch" and job["Status"] == "dead"
    assert job["Meta"] == {"team": "data", "batchyard_run_id": run_id}
    if nomad.stub is not None:
        follows = [query for _, _, query, _ in nomad.stub.calls("GET", f"/v1/job/{job_id}/allocations")]
        assert follows[0].get("index") is None and all("index" in q and "wait" in q for q in follows[1:])


async def test_a_failing_task_fails_the_run_with_its_exit_code_and_name(driver: NomadDriver) -> None:
    """Runs against the stub replaying Nomad's documented API (or a real Nomad with NOMAD_ADDR)."""
    log = CollectedLog()
    execution = await started(driver, shell_job("echo working; echo broken >&2; exit 3"), log)
    outcome = await execution.outcome()
    assert (outcome.kind, outcome.exit.exit_code) == ("failed", 3)
    assert outcome.reason.startswith("task main (allocation ") and outcome.reason.endswith(
        "exited with code 3"
    )
    assert log.text("stdout") == "working\n" and log.text("stderr") == "broken\n"


async def test_a_stop_deregisters_the_job_and_the_task_gets_its_kill_signal_then_the_run_ends_stopped(
    nomad: NomadTarget, driver: NomadDriver, client: NomadClient
) -> None:
    """Runs against the stub replaying Nomad's documented API (or a real Nomad with NOMAD_ADDR)."""
    log = CollectedLog()
    script = "trap 'echo cleaning up; exit 0' INT TERM; echo ready; while true; do sleep 0.05; done"
    execution = await started(driver, shell_job(script), log)
    await until(lambda: "ready" in log.text("stdout"))
    begun = time.monotonic()
    execution.request_stop("alice", "stop requested by alice")
    outcome = await execution.outcome()
    assert (outcome.kind, outcome.stopped_by, outcome.reason) == (
        "stopped",
        "alice",
        "stop requested by alice",
    )
    assert time.monotonic() - begun < 5
    assert log.text("stdout") == "ready\ncleaning up\n"
    job = await client.read_job(str(execution.handle["job_id"]))
    assert job is not None and job["Stop"] is True
    if nomad.stub is not None:
        assert [path for _, path, _, _ in nomad.stub.calls("DELETE", "/v1/job/")] == [
            f"/v1/job/{execution.handle['job_id']}"
        ]


async def test_a_task_that_ignores_its_kill_signal_is_killed_after_its_kill_timeout(
    driver: NomadDriver,
) -> None:
    """Runs against the stub replaying Nomad's documented API (or a real Nomad with NOMAD_ADDR)."""
    log = CollectedLog()
    script = "trap 'echo ignoring' INT TERM; echo ready; while true; do sleep 0.05; done"
    execution = await started(driver, shell_job(script, kill_timeout_s=0.5), log)
    assert execution.limits.stop_grace_s == pytest.approx(0.5 + 5.0)
    await until(lambda: "ready" in log.text("stdout"))
    begun = time.monotonic()
    execution.request_stop("alice", "stop requested by alice")
    outcome = await execution.outcome()
    assert outcome.kind == "stopped" and (outcome.exit.signal == 9 or outcome.exit.exit_code == 137)
    assert 0.4 < time.monotonic() - begun < 5
    assert "ignoring" in log.text("stdout")


async def test_a_stop_with_a_shorter_grace_than_the_kill_timeout_kills_the_task_through_nomad(
    nomad: NomadTarget, driver: NomadDriver
) -> None:
    """Runs against the stub replaying Nomad's documented API (or a real Nomad with NOMAD_ADDR): after
    the stop's own grace the driver sends SIGKILL with Nomad's allocation signal endpoint."""
    log = CollectedLog()
    script = "trap 'echo ignoring' INT TERM; echo ready; while true; do sleep 0.05; done"
    execution = await started(driver, shell_job(script, kill_timeout_s=30), log)
    await until(lambda: "ready" in log.text("stdout"))
    begun = time.monotonic()
    execution.request_stop("alice", "stop requested by alice", grace_s=0.3)
    outcome = await execution.outcome()
    assert outcome.kind == "stopped" and (outcome.exit.signal == 9 or outcome.exit.exit_code == 137)
    assert time.monotonic() - begun < 5
    if nomad.stub is not None:
        ((_, _, _, body),) = nomad.stub.calls("POST", "/v1/client/allocation/")
        assert body == {"Signal": "SIGKILL", "Task": "main"}


async def test_a_run_rides_out_a_leader_election_and_a_dropped_log_stream_without_losing_a_byte(
    nomad: NomadTarget, driver: NomadDriver
) -> None:
    """Runs against the stub replaying Nomad's documented API: it answers 500 "No cluster leader" for a
    while and drops the open log streams, and the driver resumes both by index and by offset."""
    stub = nomad.require_stub("a leader election and dropped connections on demand")
    log = CollectedLog()
    script = "for i in 1 2 3 4 5 6 7 8; do echo line $i; echo err $i >&2; sleep 0.1; done"
    execution = await started(driver, shell_job(script), log)
    await until(lambda: "line 2" in log.text("stdout"))
    assert stub.cut_log_streams() == 2
    stub.lose_leader(0.4)
    outcome = await execution.outcome()
    assert outcome.kind == "succeeded"
    assert log.text("stdout") == "".join(f"line {i}\n" for i in range(1, 9))
    assert log.text("stderr") == "".join(f"err {i}\n" for i in range(1, 9))
    resumed = [query for _, _, query, _ in stub.calls("GET", "/v1/client/fs/logs/") if query["offset"] != "0"]
    assert resumed, "the log streams were reopened at the offsets they had reached"


async def test_stops_reach_nomad_while_many_runs_hold_their_follow_connections(driver: NomadDriver) -> None:
    """Runs against the stub replaying Nomad's documented API (or a real Nomad with NOMAD_ADDR): 40 runs
    hold 120 long-lived connections (a blocking query and two log streams each), more than aiohttp's
    default pool of 100, and every stop still gets through."""
    logs = [CollectedLog() for _ in range(40)]
    script = "trap 'exit 0' INT TERM; echo ready; sleep 30 & wait"
    executions = await asyncio.gather(*(started(driver, shell_job(script), log) for log in logs))
    await until(lambda: all("ready" in log.text("stdout") for log in logs), timeout_s=20)
    await asyncio.sleep(0.2)
    begun = time.monotonic()
    for execution in executions:
        execution.request_stop("alice", "stop requested by alice")
    outcomes = await asyncio.gather(*(execution.outcome() for execution in executions))
    assert {outcome.kind for outcome in outcomes} == {"stopped"}
    assert time.monotonic() - begun < 3


async def test_a_run_past_its_timeout_is_deregistered_and_ends_timed_out(
    nomad: NomadTarget, driver: NomadDriver, client: NomadClient
) -> None:
    """Runs against the stub replaying Nomad's documented API (or a real Nomad with NOMAD_ADDR)."""
    log = CollectedLog()
    execution = await started(driver, shell_job("echo started; sleep 30", timeout_s=0.5), log)
    begun = time.monotonic()
    outcome = await execution.outcome()
    assert (outcome.kind, outcome.timeout_s, outcome.reason) == ("timed_out", 0.5, "timed out after 0.5 s")
    assert time.monotonic() - begun < 5
    assert log.text("stdout") == "started\n"
    job = await client.read_job(str(execution.handle["job_id"]))
    assert job is not None and job["Stop"] is True


async def test_an_allocation_lost_with_its_node_ends_the_run_as_lost(
    nomad: NomadTarget, driver: NomadDriver
) -> None:
    """Runs against the stub replaying Nomad's documented API: the stub marks the allocation lost as
    Nomad's servers do when its node stops heartbeating."""
    stub = nomad.require_stub("a node going down")
    log = CollectedLog()
    execution = await started(driver, shell_job("echo ready; sleep 30"), log)
    await until(lambda: "ready" in log.text("stdout"))
    (alloc,) = stub.allocs_of(str(execution.handle["job_id"]))
    await stub.lose(alloc.id)
    outcome = await execution.outcome()
    assert outcome.kind == "lost"
    assert outcome.reason == f"allocation {alloc.id[:8]} was lost: alloc is lost since its node is down"
    assert log.text("stdout") == "ready\n"


async def test_a_task_nomad_cannot_start_fails_the_run_with_nomads_message(
    nomad: NomadTarget, driver: NomadDriver
) -> None:
    """Runs against the stub replaying Nomad's documented API: its node has no `docker` driver, so the
    task fails with a `Driver Failure` event as a Nomad client reports it."""
    nomad.require_stub("a node without the task's driver")
    payload = shell_job("unused")
    payload["TaskGroups"][0]["Tasks"][0].update({"Driver": "docker", "Config": {"image": "busybox"}})
    execution = await started(driver, payload, CollectedLog())
    outcome = await execution.outcome()
    assert outcome.kind == "failed" and outcome.exit.exit_code is None
    assert outcome.reason.endswith(
        'failed: Driver Failure: failed to start task: driver "docker" is not available on this node'
    )


async def test_a_job_nomad_cannot_place_waits_says_why_and_times_out(
    nomad: NomadTarget, driver: NomadDriver, caplog: pytest.LogCaptureFixture
) -> None:
    """Runs against the stub replaying Nomad's documented API: the evaluation completes with
    `FailedTGAllocs` and a blocked evaluation, as when no node has room."""
    stub = nomad.require_stub("a cluster without room")
    stub.hold_placement = True
    execution = await started(driver, shell_job("echo never", timeout_s=0.5), CollectedLog())
    outcome = await execution.outcome()
    assert outcome.kind == "timed_out"
    assert (
        f"Nomad job {execution.handle['job_id']} is waiting for resources in task groups ['work']"
        in caplog.text
    )
    assert stub.calls("DELETE", f"/v1/job/{execution.handle['job_id']}")


async def test_purge_removes_the_job_from_nomad_once_the_run_has_ended(
    nomad: NomadTarget, driver: NomadDriver, client: NomadClient
) -> None:
    """Runs against the stub replaying Nomad's documented API (or a real Nomad with NOMAD_ADDR)."""
    log = CollectedLog()
    execution = await started(driver, shell_job("echo done", purge=True), log)
    assert (await execution.outcome()).kind == "succeeded"
    assert log.text("stdout") == "done\n"
    assert await client.read_job(str(execution.handle["job_id"])) is None


async def test_a_new_driver_reattaches_by_job_id_and_resumes_the_log_where_it_was(
    nomad: NomadTarget, driver: NomadDriver
) -> None:
    """Runs against the stub replaying Nomad's documented API (or a real Nomad with NOMAD_ADDR)."""
    first_log = CollectedLog()
    script = "echo one; echo err >&2; sleep 0.6; echo two; sleep 0.3; echo three; exit 4"
    execution = await started(driver, shell_job(script), first_log)
    await until(lambda: "one" in first_log.text("stdout") and "err" in first_log.text("stderr"))
    await execution.detach()
    handle = execution.handle

    successor = NomadDriver(nomad.connection, wait_s=2.0)
    try:
        second_log = CollectedLog()
        offsets: dict[LogFd, int] = {
            "stdout": len(first_log.text("stdout")),
            "stderr": len(first_log.text("stderr")),
        }
        resumed = await successor.reattach(handle, second_log, elapsed_s=0.3, log_offsets=offsets)
        outcome = await resumed.outcome()
    finally:
        await successor.close()
    assert (outcome.kind, outcome.exit.exit_code) == ("failed", 4)
    assert first_log.text("stdout") + second_log.text("stdout") == "one\ntwo\nthree\n"
    assert first_log.text("stderr") + second_log.text("stderr") == "err\n"


async def test_reattaching_to_a_run_that_never_reached_nomad_ends_it_as_lost(driver: NomadDriver) -> None:
    """Runs against the stub replaying Nomad's documented API (or a real Nomad with NOMAD_ADDR): the
    dispatcher died between recording `RunStarted` and registering the job."""
    prepared = await driver.prepare(str(uuid.uuid4()), shell_job("echo never"), CollectedLog())
    resumed = await driver.reattach(prepared.handle, CollectedLog())
    outcome = await resumed.outcome()
    assert (outcome.kind, outcome.reason) == (
        "lost",
        "the run was recorded as started but never reached Nomad",
    )


async def test_end_orphan_deregisters_the_job_of_a_run_recorded_as_lost(
    nomad: NomadTarget, driver: NomadDriver, client: NomadClient
) -> None:
    """Runs against the stub replaying Nomad's documented API (or a real Nomad with NOMAD_ADDR)."""
    log = CollectedLog()
    execution = await started(driver, shell_job("echo ready; sleep 30"), log)
    await until(lambda: "ready" in log.text("stdout"))
    await execution.detach()
    await driver.end_orphan(execution.handle)
    job_id = str(execution.handle["job_id"])
    deadline = time.monotonic() + 10
    while (job := await client.read_job(job_id)) is not None and job["Status"] != "dead":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert job is not None and job["Stop"] is True


async def test_nomad_refusing_the_registration_fails_the_run_with_nomads_own_words(
    nomad: NomadTarget, driver: NomadDriver
) -> None:
    """Runs against the stub replaying Nomad's documented API: a 400 with a plain-text body, as Nomad
    answers a registration it refuses."""
    stub = nomad.require_stub("a registration refused after validation passed")
    stub.fail_next_register(
        400, "1 error occurred:\n\t* Task group work validation failed: quota exceeded\n\n"
    )
    execution = await started(driver, shell_job("echo never"), CollectedLog())
    outcome = await execution.outcome()
    assert outcome.kind == "failed" and outcome.exit.exit_code is None
    assert outcome.reason == (
        "Nomad did not take the job: Nomad answered 400 to POST /jobs: "
        "1 error occurred: * Task group work validation failed: quota exceeded"
    )


async def test_a_payload_nomad_would_not_run_fails_before_anything_reaches_nomad(
    nomad: NomadTarget, driver: NomadDriver
) -> None:
    """Runs against the stub replaying Nomad's documented API (or a real Nomad with NOMAD_ADDR)."""
    periodic = shell_job("echo x", Periodic={"Spec": "* * * * *"})
    with pytest.raises(StartFailed) as refused:
        await driver.prepare(str(uuid.uuid4()), periodic, CollectedLog())
    assert refused.value.reason.startswith("invalid nomad payload: 'Periodic' is not allowed in a run")
    service = shell_job("echo x", Type="service")
    with pytest.raises(StartFailed) as refused:
        await driver.prepare(str(uuid.uuid4()), service, CollectedLog())
    assert refused.value.reason == "invalid nomad payload field 'Type': Input should be 'batch' or 'sysbatch'"
    if nomad.stub is not None:
        assert nomad.stub.requests == []


async def test_an_unreachable_nomad_fails_the_start_with_the_address_it_tried() -> None:
    """No server at all: the driver's connection error, no stub needed."""
    unreachable = NomadDriver(NomadConnection("http://127.0.0.1:9"))
    try:
        with pytest.raises(StartFailed) as refused:
            await unreachable.prepare(str(uuid.uuid4()), shell_job("echo x"), CollectedLog())
    finally:
        await unreachable.close()
    assert refused.value.reason.startswith("cannot reach Nomad at http://127.0.0.1:9")


async def test_without_any_nomad_address_the_start_fails_saying_where_to_set_one() -> None:
    """No server needed: the driver refuses before any request."""
    nowhere = NomadDriver(None)
    with pytest.raises(StartFailed) as refused:
        await nowhere.prepare(str(uuid.uuid4()), shell_job("echo x"), CollectedLog())
    assert "driver_config.nomad_url" in refused.value.reason and "NOMAD_ADDR" in refused.value.reason


async def test_dispatch_runs_an_instance_of_a_parameterized_job_found_again_by_run_id_on_reattach(
    nomad: NomadTarget, driver: NomadDriver, client: NomadClient
) -> None:
    """Runs against the stub replaying Nomad's documented API (or a real Nomad with NOMAD_ADDR)."""
    parent_id = f"report-{uuid.uuid4().hex[:8]}"
    parent = shell_job('echo "report for $NOMAD_META_customer"', ID=parent_id)
    parent["ParameterizedJob"] = {"Payload": "optional", "MetaRequired": ["customer"]}
    await client.register_job(parent, only_if_new=False)
    log = CollectedLog()
    run_id = str(uuid.uuid4())
    payload: JsonObject = {"dispatch": {"job_id": parent_id, "meta": {"customer": "acme"}}}
    execution = await driver.prepare(run_id, payload, log)
    assert execution.handle["parameterized_job_id"] == parent_id and execution.handle["job_id"] is None
    await execution.launch()
    assert execution.job_id is not None and execution.job_id.startswith(f"{parent_id}/dispatch-")
    assert run_id in execution.job_id
    await execution.detach()
    resumed = await driver.reattach(execution.handle, log)
    outcome = await resumed.outcome()
    assert outcome.kind == "succeeded" and resumed.job_id == execution.job_id
    assert log.text("stdout") == "report for acme\n"
    await client.deregister_job(parent_id, purge=True)


async def test_dispatching_a_job_that_is_not_parameterized_fails_the_start(
    nomad: NomadTarget, driver: NomadDriver
) -> None:
    """Runs against the stub replaying Nomad's documented API (or a real Nomad with NOMAD_ADDR)."""
    with pytest.raises(StartFailed) as refused:
        await driver.prepare(str(uuid.uuid4()), {"dispatch": {"job_id": "no-such-job"}}, CollectedLog())
    assert refused.value.reason == "Nomad has no job 'no-such-job' to dispatch"


async def test_an_acl_token_is_sent_only_to_the_address_it_was_configured_for(tmp_path: Path) -> None:
    """Runs against two stubs replaying Nomad's documented API, both requiring the same ACL token."""
    trusted, other = NomadStub(tmp_path / "a", token="s3cret"), NomadStub(tmp_path / "b", token="s3cret")
    await trusted.start()
    await other.start()
    secured = NomadDriver(NomadConnection(trusted.url, token="s3cret"), wait_s=2.0)
    try:
        execution = await started(secured, shell_job("echo allowed"), CollectedLog())
        assert (await execution.outcome()).kind == "succeeded"
        with pytest.raises(StartFailed) as refused:
            await secured.prepare(str(uuid.uuid4()), shell_job("echo x", nomad_url=other.url), CollectedLog())
        assert refused.value.reason == "Nomad answered 403 to POST /validate/job: Permission denied"
    finally:
        await secured.close()
        await trusted.stop()
        await other.stop()
