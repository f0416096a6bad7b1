"""Pooled gate shells (drivers/gates.py) against real processes: a run through a pooled gate is the run
the plain gate would start, and a pooled gate never runs anything it was not released to run."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from contracts.base import JsonObject
from services.dispatcher.drivers.base import Outcome
from services.dispatcher.drivers.gates import Gate, GatePool, encode_spec
from services.dispatcher.drivers.local import LocalExecution, LocalProcessDriver, process_start_ticks
from tests.unit.test_local_driver import RecordingSink, alive


@pytest.fixture
async def pooled() -> AsyncIterator[LocalProcessDriver]:
    driver = LocalProcessDriver(gate_pool=2)
    await driver.gates.fill()
    yield driver
    await driver.close()


async def run_with(driver: LocalProcessDriver, payload: JsonObject) -> tuple[LocalExecution, Outcome, str]:
    sink = RecordingSink()
    execution = await driver.prepare(str(uuid.uuid4()), payload, sink)
    assert isinstance(execution, LocalExecution)
    await execution.launch()
    outcome = await execution.outcome()
    return execution, outcome, sink.text()


def without_run_id(output: str) -> list[str]:
    return [line for line in output.splitlines() if not line.startswith("BATCHYARD_RUN_ID=")]


TRICKY: JsonObject = {
    "command": [
        "sh",
        "-c",
        'printf "%s|" "$@"; printf "\\n"; env | sort',
        "arg0",
        "two\nlines",
        " spaced ",
        "a\\b",
    ],
    "env": {"MULTI": "line one\nline two\n", "EMPTY": "", "QUOTES": "'\"$HOME`x`", "UNICODE": "grüße 日本"},
}


async def test_a_pooled_gate_runs_the_same_argv_env_and_cwd_as_a_plain_gate(
    pooled: LocalProcessDriver, tmp_path: Path
) -> None:
    payload: JsonObject = {**TRICKY, "cwd": str(tmp_path)}
    waiting = list(pooled.gates._ready)
    execution, outcome, pooled_output = await run_with(pooled, payload)
    assert execution.process in [gate.process for gate in waiting], "the run did not take a pooled gate"
    _, plain_outcome, plain_output = await run_with(LocalProcessDriver(), payload)
    assert outcome.kind == plain_outcome.kind == "succeeded"
    assert without_run_id(pooled_output) == without_run_id(plain_output)
    assert "two\nlines| spaced |a\\b|" in pooled_output
    assert f"PWD={tmp_path}" in pooled_output and "OLDPWD" not in pooled_output


async def test_the_handle_of_a_pooled_run_names_its_process_group_and_start_time(
    pooled: LocalProcessDriver,
) -> None:
    sink = RecordingSink()
    execution = await pooled.prepare("r", {"command": "ps -o pgid= -p $$"}, sink)
    handle = execution.handle
    assert handle["pgid"] == handle["pid"] != os.getpgid(0)
    assert handle["proc_start"] == process_start_ticks(int(str(handle["pid"])))
    await execution.launch()
    await execution.outcome()
    assert int(sink.text()) == handle["pid"]


async def test_a_pooled_gate_runs_nothing_before_launch_and_a_discarded_one_never_runs(
    pooled: LocalProcessDriver, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    execution = await pooled.prepare("r", {"command": ["touch", str(marker)]}, RecordingSink())
    assert isinstance(execution, LocalExecution)
    await asyncio.sleep(0.2)
    assert not marker.exists()
    await execution.discard()
    await asyncio.sleep(0.1)
    assert not marker.exists() and not alive(execution.process.pid)
    released = await pooled.prepare("r", {"command": ["touch", str(marker)]}, RecordingSink())
    await released.launch()
    assert (await released.outcome()).kind == "succeeded" and marker.exists()


async def test_gates_waiting_in_the_pool_exit_without_running_anything_when_it_closes() -> None:
    driver = LocalProcessDriver(gate_pool=2)
    await driver.gates.fill()
    processes = [gate.process for gate in driver.gates._ready]
    assert len(processes) == 2 and all(process.poll() is None for process in processes)
    await driver.close()
    assert [process.returncode for process in processes] == [125, 125]


async def test_a_gate_that_died_in_the_pool_is_passed_over(pooled: LocalProcessDriver) -> None:
    for gate in pooled.gates._ready:
        os.kill(gate.process.pid, signal.SIGKILL)
        gate.process.wait()
    _, outcome, output = await run_with(pooled, {"command": ["echo", "still runs"]})
    assert outcome.kind == "succeeded" and output == "still runs\n"


@pytest.mark.parametrize(
    "env",
    [{"MY.VAR": "1"}, {"PWD": "/elsewhere"}, {"_by_v": "1"}, {"IFS": "x"}, {"BIG": "x" * 20000}],
)
async def test_runs_the_pooled_gate_cannot_carry_exactly_take_a_plain_gate(
    pooled: LocalProcessDriver, env: dict[str, str]
) -> None:
    assert encode_spec(["env"], env, None) is None
    waiting = [gate.process for gate in pooled.gates._ready]
    payload: JsonObject = {"command": ["env"], "env": dict(env)}
    execution, outcome, output = await run_with(pooled, payload)
    assert outcome.kind == "succeeded" and execution.process not in waiting
    _, _, plain_output = await run_with(LocalProcessDriver(), payload)
    assert without_run_id(output) == without_run_id(plain_output)


def failing_spawn() -> Gate:
    raise OSError("no forks today")


async def test_a_pool_that_cannot_fork_hands_out_nothing_and_runs_fork_their_own_gates() -> None:
    pool = GatePool(1, failing_spawn, LocalProcessDriver()._connect)
    assert pool.take(b"1\n\n") is None
    await pool.fill()
    assert pool.take(b"1\n\n") is None
    await pool.close()


async def test_a_taken_gate_is_replaced_only_after_its_run_is_launched(pooled: LocalProcessDriver) -> None:
    """Forking the replacement waits until the run no longer waits on anything, so it is never on the
    run's path to `RunStarted`."""
    execution = await pooled.prepare("r", {"command": ["true"]}, RecordingSink())
    await asyncio.sleep(0.05)
    assert len(pooled.gates._ready) == 1
    await execution.launch()
    await asyncio.sleep(0.05)
    assert len(pooled.gates._ready) == 2
    assert (await execution.outcome()).kind == "succeeded"


async def test_a_pooled_gate_waits_with_its_output_already_followed_by_the_loop(
    pooled: LocalProcessDriver,
) -> None:
    """So the run that takes it does not wait on the loop to connect its pipes before `RunStarted`."""
    assert all(set(gate.readers) == {"stdout", "stderr"} for gate in pooled.gates._ready)
    _, outcome, output = await run_with(pooled, {"command": "echo out; echo err >&2"})
    assert outcome.kind == "succeeded" and sorted(output.splitlines()) == ["err", "out"]
