"""The Docker driver against a real Docker Engine API: podman serving it on a unix socket, with a busybox
image built by the test session (see tests/docker_engine.py)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from contracts.base import JsonObject
from contracts.logs import LogFd
from services.dispatcher.drivers.base import Outcome, StartFailed
from services.dispatcher.drivers.docker import LABEL_INSTANCE, LABEL_RUN, LABEL_STEP, DockerDriver
from tests.docker_engine import DockerEngine
from tests.docker_engine import docker_engine as docker_engine

DEADLINE_S = 10.0


class CollectedLog:
    """A log sink that keeps what it was given, in order, and lets a test wait for some text."""

    def __init__(self) -> None:
        self.chunks: list[tuple[LogFd, bytes]] = []
        self._changed = asyncio.Event()

    async def write(self, fd: LogFd, data: bytes) -> None:
        self.chunks.append((fd, data))
        self._changed.set()

    def text(self, fd: LogFd | None = None) -> str:
        return b"".join(data for kind, data in self.chunks if fd in (None, kind)).decode()

    async def wait_for(self, text: str) -> None:
        deadline = time.monotonic() + DEADLINE_S
        while text not in self.text():
            self._changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{text!r} never appeared in the log: {self.text()!r}")
            await asyncio.wait_for(self._changed.wait(), remaining)


@pytest.fixture
async def driver(docker_engine: DockerEngine) -> AsyncIterator[DockerDriver]:
    created = DockerDriver(docker_engine.url, instance="test-dispatcher")
    yield created
    await created.close()


def payload(engine: DockerEngine, command: list[str] | str, **fields: Any) -> JsonObject:
    return {"image": engine.image, "command": command, "pull_policy": "never", **fields}


async def run(driver: DockerDriver, spec: JsonObject) -> tuple[Outcome, CollectedLog]:
    log = CollectedLog()
    execution = await driver.prepare(str(uuid.uuid4()), spec, log)
    await execution.launch()
    return await execution.outcome(), log


async def containers_of(driver: DockerDriver, run_id: str) -> list[dict[str, Any]]:
    docker = await driver.client()
    found = await docker.containers.list(all=True, filters={"label": [f"{LABEL_RUN}={run_id}"]})
    return [container._container for container in found]


async def test_a_command_that_exits_zero_succeeds_and_a_nonzero_exit_fails_with_its_code(
    driver: DockerDriver, docker_engine: DockerEngine
) -> None:
    succeeded, _ = await run(driver, payload(docker_engine, ["true"]))
    failed, _ = await run(driver, payload(docker_engine, "exit 3"))
    assert (succeeded.kind, succeeded.exit.exit_code) == ("succeeded", 0)
    assert (failed.kind, failed.exit.exit_code, failed.reason) == ("failed", 3, "exited with code 3")


async def test_stdout_and_stderr_reach_the_log_apart_and_in_order(
    driver: DockerDriver, docker_engine: DockerEngine
) -> None:
    command = "echo one; echo two >&2; sleep 0.05; echo three; echo four >&2"
    outcome, log = await run(driver, payload(docker_engine, command))
    assert outcome.kind == "succeeded"
    assert log.text("stdout") == "one\nthree\n"
    assert log.text("stderr") == "two\nfour\n"
    assert log.text() == "one\ntwo\nthree\nfour\n"


async def test_env_working_dir_and_the_run_id_reach_the_container(
    driver: DockerDriver, docker_engine: DockerEngine
) -> None:
    log = CollectedLog()
    run_id = str(uuid.uuid4())
    spec = payload(
        docker_engine,
        ["sh", "-c", 'echo "$GREETING $BATCHYARD_RUN_ID"; pwd'],
        env={"GREETING": "hello world"},
        working_dir="/tmp",
    )
    execution = await driver.prepare(run_id, spec, log)
    await execution.launch()
    assert (await execution.outcome()).kind == "succeeded"
    assert log.text("stdout") == f"hello world {run_id}\n/tmp\n"


async def test_stop_sends_sigterm_and_a_command_that_traps_it_ends_on_its_own_terms(
    driver: DockerDriver, docker_engine: DockerEngine
) -> None:
    log = CollectedLog()
    command = "trap 'echo got TERM; exit 7' TERM; echo ready; while true; do sleep 0.05; done"
    execution = await driver.prepare(str(uuid.uuid4()), payload(docker_engine, command), log)
    await execution.launch()
    await log.wait_for("ready")
    execution.request_stop("alice", "stop requested by alice", grace_s=5)
    outcome = await execution.outcome()
    assert (outcome.kind, outcome.stopped_by, outcome.exit.exit_code) == ("stopped", "alice", 7)
    assert "got TERM" in log.text("stdout")


async def test_stop_sends_sigkill_after_the_grace_when_sigterm_is_ignored(
    driver: DockerDriver, docker_engine: DockerEngine
) -> None:
    log = CollectedLog()
    command = "trap '' TERM; echo ready; while true; do sleep 0.05; done"
    execution = await driver.prepare(str(uuid.uuid4()), payload(docker_engine, command), log)
    await execution.launch()
    await log.wait_for("ready")
    asked = time.monotonic()
    execution.request_stop("alice", "stop requested by alice", grace_s=0.5)
    outcome = await execution.outcome()
    assert outcome.kind == "stopped" and outcome.exit.exit_code == 137
    assert time.monotonic() - asked >= 0.5


async def test_a_run_longer_than_its_timeout_ends_as_timed_out(
    driver: DockerDriver, docker_engine: DockerEngine
) -> None:
    started = time.monotonic()
    outcome, _ = await run(driver, payload(docker_engine, ["sleep", "30"], timeout_s=0.5, stop_grace_s=0.2))
    assert (outcome.kind, outcome.reason) == ("timed_out", "timed out after 0.5 s")
    assert time.monotonic() - started < 5


async def test_memory_and_cpu_limits_are_applied_to_the_container(
    driver: DockerDriver, docker_engine: DockerEngine
) -> None:
    log = CollectedLog()
    run_id = str(uuid.uuid4())
    command = "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max"
    spec = payload(docker_engine, command, memory_limit_mb=64, cpu_limit=0.5, keep=True)
    execution = await driver.prepare(run_id, spec, log)
    await execution.launch()
    assert (await execution.outcome()).kind == "succeeded"
    assert log.text("stdout").strip() == str(64 * 1024 * 1024)
    [container] = await containers_of(driver, run_id)
    inspected = await (await driver.client()).containers.container(container["Id"]).show()
    assert inspected["HostConfig"]["Memory"] == 64 * 1024 * 1024
    assert inspected["HostConfig"]["NanoCpus"] == 500_000_000
    await (await driver.client()).containers.container(container["Id"]).delete(force=True)


async def test_a_container_that_exceeds_its_memory_limit_is_killed(
    driver: DockerDriver, docker_engine: DockerEngine
) -> None:
    """Docker also reports `OOMKilled`, which the driver notes in the log; podman 4.3 on cgroup v1 does
    not, so only the kill itself is asserted here."""
    command = r"x=$(head -c 100000000 /dev/zero | tr '\0' a); echo survived ${#x}"
    outcome, log = await run(driver, payload(docker_engine, command, memory_limit_mb=16))
    assert (outcome.kind, outcome.exit.exit_code) == ("failed", 137)
    assert "survived" not in log.text("stdout")


async def test_pull_policy_never_with_a_missing_image_fails_before_anything_runs(
    driver: DockerDriver, docker_engine: DockerEngine
) -> None:
    run_id = str(uuid.uuid4())
    spec = {"image": "localhost/no-such-image:1", "command": ["true"], "pull_policy": "never"}
    with pytest.raises(StartFailed) as failed:
        await driver.prepare(run_id, spec, CollectedLog())
    assert failed.value.reason == (
        "image 'localhost/no-such-image:1' is not on the engine and the pull policy is 'never'"
    )
    assert await containers_of(driver, run_id) == []


async def test_a_missing_image_that_cannot_be_pulled_fails_the_start_with_the_engines_reason(
    driver: DockerDriver,
) -> None:
    spec = {"image": "127.0.0.1:9/nothing:latest", "command": ["true"]}
    with pytest.raises(StartFailed) as failed:
        await driver.prepare(str(uuid.uuid4()), spec, CollectedLog())
    assert failed.value.reason.startswith("could not pull image '127.0.0.1:9/nothing:latest': ")


async def test_pull_policy_always_pulls_even_an_image_the_engine_has(
    driver: DockerDriver, docker_engine: DockerEngine
) -> None:
    """The test image exists only on the engine (no registry serves it), so a pull can only fail."""
    spec = {"image": docker_engine.image, "command": ["true"], "pull_policy": "always"}
    with pytest.raises(StartFailed) as failed:
        await driver.prepare(str(uuid.uuid4()), spec, CollectedLog())
    assert failed.value.reason.startswith(f"could not pull image '{docker_engine.image}': ")


async def test_an_invalid_payload_or_a_sealed_secret_fails_the_start_naming_the_field(
    driver: DockerDriver,
) -> None:
    with pytest.raises(StartFailed) as failed:
        await driver.prepare(str(uuid.uuid4()), {"image": "x", "pull_policy": "missing"}, CollectedLog())
    assert failed.value.reason.startswith("invalid docker payload field 'pull_policy': ")
    sealed = {"image": "x", "env": {"TOKEN": {"type": "secret", "encrypted": "Y2lwaGVy"}}}
    with pytest.raises(StartFailed) as failed:
        await driver.prepare(str(uuid.uuid4()), sealed, CollectedLog())
    assert failed.value.reason == "env.TOKEN holds a secret that was not decrypted"


async def test_a_command_missing_from_the_image_fails_the_run_and_says_why(
    driver: DockerDriver, docker_engine: DockerEngine
) -> None:
    """podman creates the container's process when attaching, so it refuses already at `prepare`;
    Docker refuses at `launch`, and the driver writes the engine's reason into the run's log."""
    log = CollectedLog()
    try:
        execution = await driver.prepare(str(uuid.uuid4()), payload(docker_engine, ["/no/such/program"]), log)
    except StartFailed as failed:
        assert "/no/such/program" in failed.reason and "not found" in failed.reason
        return
    await execution.launch()
    outcome = await execution.outcome()
    assert outcome.kind == "failed" and outcome.exit.exit_code not in (None, 0)
    assert "/no/such/program" in log.text("stderr")


async def test_the_container_is_removed_after_the_run_unless_it_is_kept(
    driver: DockerDriver, docker_engine: DockerEngine
) -> None:
    removed_run, kept_run = str(uuid.uuid4()), str(uuid.uuid4())
    for run_id, keep in ((removed_run, False), (kept_run, True)):
        execution = await driver.prepare(run_id, payload(docker_engine, "exit 2", keep=keep), CollectedLog())
        await execution.launch()
        assert (await execution.outcome()).exit.exit_code == 2
    assert await containers_of(driver, removed_run) == []
    [kept] = await containers_of(driver, kept_run)
    assert kept["State"] in ("exited", "stopped")  # podman says stopped until its cleanup has run
    await (await driver.client()).containers.container(kept["Id"]).delete(force=True)


async def test_a_discarded_preparation_removes_the_container_that_never_ran(
    driver: DockerDriver, docker_engine: DockerEngine
) -> None:
    run_id = str(uuid.uuid4())
    execution = await driver.prepare(run_id, payload(docker_engine, "echo never"), CollectedLog())
    assert len(await containers_of(driver, run_id)) == 1
    await execution.discard()
    assert await containers_of(driver, run_id) == []


async def test_labels_tie_the_container_to_its_run_step_and_dispatcher(
    driver: DockerDriver, docker_engine: DockerEngine
) -> None:
    run_id = str(uuid.uuid4())
    execution = await driver.prepare(run_id, payload(docker_engine, "true"), CollectedLog(), step="extract")
    [container] = await containers_of(driver, run_id)
    assert container["Id"] == execution.handle["container_id"]
    assert container["Labels"][LABEL_RUN] == run_id
    assert container["Labels"][LABEL_INSTANCE] == "test-dispatcher"
    assert container["Labels"][LABEL_STEP] == "extract"
    assert execution.handle["run_id"] == run_id and execution.handle["image"] == docker_engine.image
    await execution.discard()


async def test_bind_mounts_share_host_directories_and_read_only_ones_refuse_writes(
    driver: DockerDriver, docker_engine: DockerEngine, tmp_path: Path
) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "in" / "data.txt").write_text("from the host\n")
    mounts = [
        {"source": str(tmp_path / "in"), "target": "/in", "read_only": True},
        {"source": str(tmp_path / "out"), "target": "/out"},
    ]
    command = "cat /in/data.txt; echo written > /out/result.txt; touch /in/nope 2>/dev/null || echo ro"
    outcome, log = await run(driver, payload(docker_engine, command, mounts=mounts))
    assert outcome.kind == "succeeded"
    assert log.text("stdout") == "from the host\nro\n"
    assert (tmp_path / "out" / "result.txt").read_text() == "written\n"


async def test_network_mode_none_leaves_only_the_loopback_interface(
    driver: DockerDriver, docker_engine: DockerEngine
) -> None:
    outcome, log = await run(driver, payload(docker_engine, "ls /sys/class/net", network_mode="none"))
    assert outcome.kind == "succeeded" and log.text("stdout").split() == ["lo"]


async def test_stdin_is_fed_to_the_container_and_it_sees_end_of_input(
    driver: DockerDriver, docker_engine: DockerEngine
) -> None:
    counted, upper = CollectedLog(), CollectedLog()
    wc = await driver.prepare(str(uuid.uuid4()), payload(docker_engine, ["wc", "-c"]), counted, stdin=True)
    tr = await driver.prepare(
        str(uuid.uuid4()), payload(docker_engine, ["tr", "a-z", "A-Z"]), upper, stdin=True
    )
    for execution in (wc, tr):
        await execution.launch()
    data = b"batch yard\n" * 20_000
    for offset in range(0, len(data), 64 * 1024):
        assert await wc.write_stdin(data[offset : offset + 64 * 1024])
    await wc.close_stdin()
    assert await tr.write_stdin(b"shout this\n")
    await tr.close_stdin()
    assert (await wc.outcome()).kind == "succeeded" and (await tr.outcome()).kind == "succeeded"
    assert counted.text("stdout").strip() == str(len(data))
    assert upper.text("stdout") == "SHOUT THIS\n"


class StdoutInto:
    """A step's log sink that also feeds its stdout into the next step's stdin, as a pipeline does."""

    def __init__(self, log: CollectedLog, feed: Callable[[bytes], Any]) -> None:
        self.log = log
        self.feed = feed

    async def write(self, fd: LogFd, data: bytes) -> None:
        await self.log.write(fd, data)
        if fd == "stdout":
            await self.feed(data)


async def test_a_docker_pipeline_chains_one_steps_stdout_into_the_next_steps_stdin(
    driver: DockerDriver, docker_engine: DockerEngine
) -> None:
    run_id = str(uuid.uuid4())
    first_log, second_log = CollectedLog(), CollectedLog()
    second = await driver.prepare(
        run_id, payload(docker_engine, "tr a-z A-Z | sort | uniq -c"), second_log, stdin=True, step="count"
    )
    first = await driver.prepare(
        run_id,
        payload(docker_engine, "for i in $(seq 1 500); do echo apple; echo pear; done; echo note >&2"),
        StdoutInto(first_log, second.write_stdin),
        step="emit",
    )
    await second.launch()
    await first.launch()
    first_outcome = await first.outcome()
    await second.close_stdin()
    second_outcome = await second.outcome()
    assert first_outcome.kind == "succeeded" and second_outcome.kind == "succeeded"
    assert second_log.text("stdout").split() == ["500", "APPLE", "500", "PEAR"]
    assert first_log.text("stderr") == "note\n"


def wait_for_file(name: str) -> str:
    return f"while [ ! -f /signals/{name} ]; do sleep 0.02; done"


def signals_mount(directory: Path) -> list[JsonObject]:
    return [{"source": str(directory), "target": "/signals", "read_only": True}]


async def test_a_new_driver_reattaches_to_a_running_container_and_records_how_it_ends(
    driver: DockerDriver, docker_engine: DockerEngine, tmp_path: Path
) -> None:
    run_id = str(uuid.uuid4())
    before = CollectedLog()
    command = f"echo started; {wait_for_file('go')}; echo finished; exit 4"
    spec = payload(docker_engine, command, mounts=signals_mount(tmp_path))
    execution = await driver.prepare(run_id, spec, before)
    await execution.launch()
    await before.wait_for("started")
    await execution.detach()
    await driver.close()

    successor = DockerDriver(docker_engine.url, instance="test-dispatcher-2")
    try:
        after = CollectedLog()
        reattached = await successor.reattach(run_id, execution.handle, after)
        assert reattached is not None
        await reattached.launch()
        (tmp_path / "go").touch()
        outcome = await reattached.outcome()
        assert (outcome.kind, outcome.exit.exit_code) == ("failed", 4)
        assert after.text("stdout") == "finished\n"
        assert await containers_of(successor, run_id) == []
    finally:
        await successor.close()


async def test_reattaching_with_the_recorded_log_size_resumes_the_log_without_loss_or_repeat(
    driver: DockerDriver, docker_engine: DockerEngine, tmp_path: Path
) -> None:
    run_id = str(uuid.uuid4())
    before = CollectedLog()
    command = (
        f"echo started; echo warming up >&2; {wait_for_file('one')}; echo while nobody listened; "
        f"echo and on stderr >&2; touch /tmp/wrote; {wait_for_file('two')}; echo after the takeover"
    )
    spec = payload(docker_engine, command, mounts=signals_mount(tmp_path))
    execution = await driver.prepare(run_id, spec, before)
    await execution.launch()
    await before.wait_for("warming up")
    await execution.detach()
    (tmp_path / "one").touch()
    docker = await driver.client()
    container = docker.containers.container(execution.handle["container_id"])
    deadline = time.monotonic() + DEADLINE_S
    while "and on stderr" not in "".join(await container.log(stderr=True)):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)

    after = CollectedLog()
    recorded = len(before.text().encode())
    reattached = await driver.reattach(run_id, execution.handle, after, resume_from=recorded)
    assert reattached is not None
    await reattached.launch()
    (tmp_path / "two").touch()
    assert (await reattached.outcome()).kind == "succeeded"
    assert after.text("stdout") == "while nobody listened\nafter the takeover\n"
    assert after.text("stderr") == "and on stderr\n"
    assert before.text() + after.text() == (
        "started\nwarming up\nwhile nobody listened\nand on stderr\nafter the takeover\n"
    )


async def test_reattaching_to_a_container_that_ended_meanwhile_records_its_exit_and_the_rest_of_its_log(
    driver: DockerDriver, docker_engine: DockerEngine
) -> None:
    run_id = str(uuid.uuid4())
    log = CollectedLog()
    command = "echo started; sleep 0.2; echo last words; exit 5"
    execution = await driver.prepare(run_id, payload(docker_engine, command), log)
    await execution.launch()
    await log.wait_for("started")
    await execution.detach()
    docker = await driver.client()
    await docker.containers.container(execution.handle["container_id"]).wait()

    rest = CollectedLog()
    reattached = await driver.reattach(run_id, execution.handle, rest, resume_from=len(b"started\n"))
    assert reattached is not None
    await reattached.launch()
    assert (await reattached.outcome()).exit.exit_code == 5
    assert rest.text() == "last words\n"
    assert await containers_of(driver, run_id) == []


async def test_reattaching_starts_a_container_recorded_as_started_but_never_launched(
    driver: DockerDriver, docker_engine: DockerEngine
) -> None:
    run_id = str(uuid.uuid4())
    execution = await driver.prepare(run_id, payload(docker_engine, "echo late start"), CollectedLog())
    await execution.detach()

    log = CollectedLog()
    reattached = await driver.reattach(run_id, execution.handle, log)
    assert reattached is not None
    await reattached.launch()
    assert (await reattached.outcome()).kind == "succeeded"
    assert log.text("stdout") == "late start\n"


async def test_reattaching_finds_nothing_when_the_container_is_gone_or_belongs_to_another_run(
    driver: DockerDriver, docker_engine: DockerEngine
) -> None:
    run_id = str(uuid.uuid4())
    execution = await driver.prepare(run_id, payload(docker_engine, "true"), CollectedLog())
    assert await driver.reattach(str(uuid.uuid4()), execution.handle, CollectedLog()) is None
    await execution.discard()
    assert await driver.reattach(run_id, execution.handle, CollectedLog()) is None


async def test_ending_an_orphan_kills_and_removes_its_container(
    driver: DockerDriver, docker_engine: DockerEngine
) -> None:
    run_id = str(uuid.uuid4())
    log = CollectedLog()
    execution = await driver.prepare(run_id, payload(docker_engine, "echo up; sleep 30"), log)
    await execution.launch()
    await log.wait_for("up")
    await execution.detach()
    await driver.end_orphan(execution.handle)
    assert await containers_of(driver, run_id) == []


async def test_feeding_a_container_that_stopped_reading_reports_it_like_a_broken_pipe(
    driver: DockerDriver, docker_engine: DockerEngine
) -> None:
    log = CollectedLog()
    execution = await driver.prepare(
        str(uuid.uuid4()), payload(docker_engine, ["head", "-c", "5"]), log, stdin=True
    )
    await execution.launch()
    accepted = [await execution.write_stdin(b"hello world\n" * 5000) for _ in range(400)]
    await execution.close_stdin()
    assert (await execution.outcome()).kind == "succeeded"
    assert log.text("stdout") == "hello"
    assert accepted[0] and not accepted[-1]


async def test_a_container_removed_behind_the_drivers_back_fails_the_run_and_the_log_says_so(
    driver: DockerDriver, docker_engine: DockerEngine
) -> None:
    log = CollectedLog()
    execution = await driver.prepare(str(uuid.uuid4()), payload(docker_engine, "echo up; sleep 30"), log)
    await execution.launch()
    await log.wait_for("up")
    docker = await driver.client()
    await docker.containers.container(execution.handle["container_id"]).delete(force=True)
    outcome = await execution.outcome()
    assert outcome.kind == "failed" and outcome.exit.exit_code == 125
    assert "removed by someone else" in log.text("stderr")


async def test_an_unreachable_engine_fails_the_start_naming_the_engine(tmp_path: Path) -> None:
    url = f"unix://{tmp_path}/no-engine.sock"
    unreachable = DockerDriver(url, instance="test-dispatcher")
    with pytest.raises(StartFailed) as failed:
        await unreachable.prepare(str(uuid.uuid4()), {"image": "busybox", "command": "true"}, CollectedLog())
    assert failed.value.reason.startswith(f"the Docker engine at {url} is not reachable: ")
    await unreachable.close()
