"""The local-process driver against real processes."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import tracemalloc
import uuid
from pathlib import Path

import pytest

from contracts.base import JsonObject
from contracts.logs import LogFd
from services.dispatcher.drivers.base import Outcome, StartFailed
from services.dispatcher.drivers.local import LocalExecution, LocalProcessDriver


class RecordingSink:
    """Keeps every chunk in arrival order, as the log publisher would number them."""

    def __init__(self, keep: bool = True, delay_s: float = 0.0) -> None:
        self.chunks: list[tuple[LogFd, bytes]] = []
        self.size = 0
        self.keep = keep
        self.delay_s = delay_s

    async def write(self, fd: LogFd, data: bytes) -> None:
        self.size += len(data)
        if self.keep:
            self.chunks.append((fd, data))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)

    def text(self, fd: LogFd | None = None) -> str:
        return b"".join(d for f, d in self.chunks if fd is None or f == fd).decode()


async def run(payload: JsonObject, sink: RecordingSink | None = None) -> Outcome:
    execution = await LocalProcessDriver().prepare(str(uuid.uuid4()), payload, sink or RecordingSink())
    await execution.launch()
    return await execution.outcome()


async def started(payload: JsonObject, sink: RecordingSink, ready: str) -> LocalExecution:
    execution = await LocalProcessDriver().prepare(str(uuid.uuid4()), payload, sink)
    assert isinstance(execution, LocalExecution)
    await execution.launch()
    deadline = time.monotonic() + 5
    while ready not in sink.text():
        assert time.monotonic() < deadline, "the process never became ready"
        await asyncio.sleep(0.01)
    return execution


async def test_exit_zero_succeeds_and_its_output_reaches_the_sink() -> None:
    sink = RecordingSink()
    outcome = await run({"command": ["echo", "hello"]}, sink)
    assert outcome.kind == "succeeded" and outcome.exit.exit_code == 0
    assert sink.chunks == [("stdout", b"hello\n")]


async def test_a_shell_string_runs_under_sh() -> None:
    sink = RecordingSink()
    outcome = await run({"command": "echo $((6 * 7)) | tr 4 X"}, sink)
    assert outcome.kind == "succeeded" and sink.text() == "X2\n"


async def test_non_zero_exit_fails_with_the_exit_code() -> None:
    outcome = await run({"command": "exit 3"})
    assert outcome.kind == "failed"
    assert outcome.exit.exit_code == 3 and outcome.exit.signal is None
    assert outcome.reason == "exited with code 3"


async def test_a_process_killed_by_a_signal_fails_with_the_signal() -> None:
    outcome = await run({"command": "kill -SEGV $$"})
    assert outcome.kind == "failed"
    assert outcome.exit.signal == signal.SIGSEGV and outcome.exit.exit_code is None
    assert outcome.reason == "killed by signal SIGSEGV"


async def test_stop_sends_sigterm_to_the_group_and_a_cooperative_process_ends() -> None:
    sink = RecordingSink()
    execution = await started({"command": "echo ready; sleep 30"}, sink, "ready")
    began = time.monotonic()
    execution.request_stop("alice", "stop requested by alice", grace_s=10)
    outcome = await execution.outcome()
    assert outcome.kind == "stopped" and outcome.stopped_by == "alice"
    assert outcome.exit.signal == signal.SIGTERM
    assert time.monotonic() - began < 5


async def test_stop_sends_sigterm_then_sigkill_after_grace() -> None:
    sink = RecordingSink()
    execution = await started({"command": "trap '' TERM; echo ready; sleep 30"}, sink, "ready")
    began = time.monotonic()
    execution.request_stop("alice", "stop requested by alice", grace_s=0.5)
    outcome = await execution.outcome()
    elapsed = time.monotonic() - began
    assert outcome.kind == "stopped" and outcome.exit.signal == signal.SIGKILL
    assert 0.5 <= elapsed < 5


async def test_stop_grace_defaults_to_the_payload_stop_grace() -> None:
    sink = RecordingSink()
    payload = {"command": "trap '' TERM; echo ready; sleep 30", "stop_grace_s": 0.3}
    execution = await started(payload, sink, "ready")
    began = time.monotonic()
    execution.request_stop("d1", "dispatcher shutting down")
    outcome = await execution.outcome()
    assert outcome.kind == "stopped" and outcome.reason == "dispatcher shutting down"
    assert 0.3 <= time.monotonic() - began < 5


async def test_timeout_terminates_the_group_and_reports_timed_out() -> None:
    began = time.monotonic()
    outcome = await run({"command": ["sleep", "30"], "timeout_s": 0.3, "stop_grace_s": 5})
    assert outcome.kind == "timed_out" and outcome.timeout_s == 0.3
    assert outcome.exit.signal == signal.SIGTERM
    assert time.monotonic() - began < 5


async def test_timeout_kills_a_process_that_ignores_sigterm_after_the_grace() -> None:
    outcome = await run({"command": "trap '' TERM; sleep 30", "timeout_s": 0.2, "stop_grace_s": 0.2})
    assert outcome.kind == "timed_out" and outcome.exit.signal == signal.SIGKILL


async def test_a_command_that_does_not_exist_fails_to_start_with_a_clear_reason() -> None:
    with pytest.raises(StartFailed) as failed:
        await LocalProcessDriver().prepare("r", {"command": ["no-such-command-xyz"]}, RecordingSink())
    assert failed.value.reason == "command 'no-such-command-xyz' not found in PATH"
    with pytest.raises(StartFailed, match="not found or not executable"):
        await LocalProcessDriver().prepare("r", {"command": ["./missing.sh"]}, RecordingSink())


async def test_a_missing_working_directory_fails_to_start(tmp_path: Path) -> None:
    with pytest.raises(StartFailed) as failed:
        await LocalProcessDriver().prepare(
            "r", {"command": ["true"], "cwd": str(tmp_path / "no")}, RecordingSink()
        )
    assert failed.value.reason == f"working directory {str(tmp_path / 'no')!r} does not exist"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({}, "invalid local payload: command: Field required"),
        ({"command": ["true"], "colour": "red"}, "invalid local payload: colour: unknown field"),
        ({"command": []}, "invalid local payload: command"),
        ({"command": ["true"], "timeout_s": -1}, "invalid local payload: timeout_s"),
    ],
)
async def test_a_bad_payload_fails_to_start_naming_the_field(payload: JsonObject, reason: str) -> None:
    with pytest.raises(StartFailed) as failed:
        await LocalProcessDriver().prepare("r", payload, RecordingSink())
    assert failed.value.reason.startswith(reason)


async def test_stdout_and_stderr_are_captured_apart_and_in_order() -> None:
    sink = RecordingSink()
    script = "echo out1; sleep 0.05; echo err1 >&2; sleep 0.05; echo out2; sleep 0.05; echo err2 >&2"
    outcome = await run({"command": script}, sink)
    assert outcome.kind == "succeeded"
    assert sink.chunks == [
        ("stdout", b"out1\n"),
        ("stderr", b"err1\n"),
        ("stdout", b"out2\n"),
        ("stderr", b"err2\n"),
    ]


async def test_env_is_added_to_a_small_base_env_and_the_dispatchers_env_does_not_leak(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BATCHYARD_PG_DSN", "postgresql://secret@db/x")
    sink = RecordingSink()
    outcome = await run({"command": ["env"], "env": {"GREETING": "hej"}, "cwd": str(tmp_path)}, sink)
    assert outcome.kind == "succeeded"
    env = dict(line.split("=", 1) for line in sink.text().splitlines())
    assert env["GREETING"] == "hej" and env["PWD"] == str(tmp_path)
    assert "PATH" in env and "BATCHYARD_RUN_ID" in env
    assert "BATCHYARD_PG_DSN" not in env


async def test_each_run_gets_its_own_process_group_and_the_handle_names_it() -> None:
    sink = RecordingSink()
    execution = await LocalProcessDriver().prepare("r", {"command": "ps -o pgid= -p $$"}, sink)
    assert execution.handle["pgid"] == execution.handle["pid"] != os.getpgid(0)
    await execution.launch()
    await execution.outcome()
    assert int(sink.text()) == execution.handle["pid"]


async def test_nothing_runs_before_launch_and_a_discarded_run_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    execution = await LocalProcessDriver().prepare("r", {"command": ["touch", str(marker)]}, RecordingSink())
    await asyncio.sleep(0.2)
    assert not marker.exists()
    await execution.discard()
    await asyncio.sleep(0.1)
    assert not marker.exists()


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_processes_left_behind_in_the_group_are_killed_when_the_leader_exits(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    began = time.monotonic()
    outcome = await run({"command": f"sleep 30 & echo $! > {pidfile}"})
    assert outcome.kind == "succeeded" and time.monotonic() - began < 5
    orphan = int(pidfile.read_text())
    deadline = time.monotonic() + 2
    while alive(orphan):
        assert time.monotonic() < deadline, "the background sleep outlived its run"
        await asyncio.sleep(0.01)


async def test_large_output_streams_through_bounded_memory() -> None:
    sink = RecordingSink(keep=False)
    tracemalloc.start()
    try:
        outcome = await run({"command": "head -c 200000000 /dev/zero"}, sink)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert outcome.kind == "succeeded" and sink.size == 200_000_000
    assert peak < 8 * 1024 * 1024


async def test_a_slow_sink_holds_the_process_back_instead_of_buffering() -> None:
    sink = RecordingSink(keep=False, delay_s=0.002)
    tracemalloc.start()
    try:
        outcome = await run({"command": "head -c 20000000 /dev/zero"}, sink)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert outcome.kind == "succeeded" and sink.size == 20_000_000
    assert peak < 4 * 1024 * 1024
