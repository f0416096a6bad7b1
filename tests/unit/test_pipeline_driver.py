"""Local pipelines against real processes: data through OS pipes, each step's output in the log, the
first failure named, stops reaching every step."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path

import pytest

from contracts.base import Event, JsonObject
from contracts.events.runs import RunStepEnded, RunStepStarted
from contracts.logs import LogFd
from services.dispatcher.drivers.base import Outcome, StartFailed
from services.dispatcher.drivers.local import LocalProcessDriver
from services.dispatcher.drivers.pipeline import PipelineExecution


class StepSink:
    """Keeps every chunk with the step it came from, in arrival order."""

    def __init__(self) -> None:
        self.chunks: list[tuple[str | None, LogFd, bytes]] = []

    async def write(self, fd: LogFd, data: bytes, step: str | None = None) -> None:
        self.chunks.append((step, fd, data))

    def text(self, step: str, fd: LogFd | None = None) -> str:
        return b"".join(d for s, f, d in self.chunks if s == step and (fd is None or f == fd)).decode()


async def prepared(payload: JsonObject, sink: StepSink) -> tuple[PipelineExecution, list[Event]]:
    execution = await LocalProcessDriver().prepare(str(uuid.uuid4()), payload, sink)
    assert isinstance(execution, PipelineExecution)
    events: list[Event] = []
    execution.on_step = events.append
    return execution, events


async def run(payload: JsonObject, sink: StepSink) -> tuple[Outcome, list[Event]]:
    execution, events = await prepared(payload, sink)
    await execution.launch()
    return await execution.outcome(), events


def ended(events: list[Event]) -> dict[str, RunStepEnded]:
    return {event.step: event for event in events if isinstance(event, RunStepEnded)}


async def test_stdout_of_each_step_is_the_stdin_of_the_next_and_every_step_is_logged() -> None:
    sink = StepSink()
    payload: JsonObject = {
        "steps": [
            {"name": "extract", "command": "printf 'b\\na\\nc\\n'"},
            {"name": "transform", "command": ["sort"]},
            {"name": "load", "command": "tr a-z A-Z"},
        ]
    }
    outcome, events = await run(payload, sink)
    assert outcome.kind == "succeeded"
    assert sink.text("extract", "stdout") == "b\na\nc\n"
    assert sink.text("transform", "stdout") == "a\nb\nc\n"
    assert sink.text("load", "stdout") == "A\nB\nC\n"
    assert [e.step for e in events if isinstance(e, RunStepStarted)] == ["extract", "transform", "load"]
    assert {name: (e.outcome, e.exit_code) for name, e in ended(events).items()} == {
        "extract": ("succeeded", 0),
        "transform": ("succeeded", 0),
        "load": ("succeeded", 0),
    }


async def test_stderr_as_output_channel_feeds_the_next_step_and_stdout_goes_to_the_log() -> None:
    sink = StepSink()
    payload: JsonObject = {
        "steps": [
            {"name": "noisy", "command": "echo to-log; echo handed-on >&2", "output": "stderr"},
            {"name": "upper", "command": "tr a-z A-Z"},
        ]
    }
    outcome, _ = await run(payload, sink)
    assert outcome.kind == "succeeded"
    assert sink.text("noisy", "stdout") == "to-log\n"
    assert sink.text("noisy", "stderr") == "handed-on\n"
    assert sink.text("upper", "stdout") == "HANDED-ON\n"


async def test_a_file_output_is_the_next_steps_stdin_and_that_step_waits_for_it(tmp_path: Path) -> None:
    sink = StepSink()
    target = tmp_path / "out.txt"
    payload: JsonObject = {
        "steps": [
            {"name": "write", "command": f"sleep 0.2; echo written > {target}", "output": str(target)},
            {"name": "read", "command": ["cat"]},
        ]
    }
    outcome, events = await run(payload, sink)
    assert outcome.kind == "succeeded"
    assert sink.text("read", "stdout") == "written\n"
    steps = ended(events)
    assert steps["read"].started_at is not None and steps["write"].ended_at <= steps["read"].started_at


async def test_a_failing_middle_step_fails_the_run_naming_it_and_skips_what_follows(tmp_path: Path) -> None:
    sink = StepSink()
    payload: JsonObject = {
        "steps": [
            {"name": "extract", "command": "echo data"},
            {"name": "transform", "command": "cat >/dev/null; exit 3", "output": str(tmp_path / "x")},
            {"name": "load", "command": ["cat"]},
        ]
    }
    outcome, events = await run(payload, sink)
    assert (outcome.kind, outcome.exit.exit_code) == ("failed", 3)
    assert outcome.reason == "step 'transform' exited with code 3"
    steps = ended(events)
    assert steps["transform"].outcome == "failed" and steps["load"].outcome == "skipped"
    assert steps["load"].started_at is None


async def test_a_failing_step_stops_the_steps_still_streaming() -> None:
    sink = StepSink()
    payload: JsonObject = {
        "steps": [
            {"name": "forever", "command": "while :; do echo x; sleep 0.01; done"},
            {"name": "broken", "command": "read line; exit 4"},
            {"name": "tail", "command": ["cat"]},
        ]
    }
    outcome, events = await asyncio.wait_for(run(payload, sink), 10)
    assert outcome.reason == "step 'broken' exited with code 4"
    steps = ended(events)
    assert steps["broken"].outcome == "failed"
    assert steps["forever"].outcome in ("stopped", "succeeded")


async def test_stop_ends_every_step_of_a_streaming_pipeline() -> None:
    sink = StepSink()
    payload: JsonObject = {
        "steps": [
            {"name": "a", "command": "echo ready; exec sleep 60"},
            {"name": "b", "command": "exec sleep 60"},
            {"name": "c", "command": ["cat"]},
        ],
        "stop_grace_s": 5,
    }
    execution, events = await prepared(payload, sink)
    await execution.launch()
    deadline = time.monotonic() + 5
    while "ready" not in sink.text("a"):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    execution.request_stop("tester", "stop requested by tester")
    outcome = await asyncio.wait_for(execution.outcome(), 5)
    assert (outcome.kind, outcome.stopped_by) == ("stopped", "tester")
    assert {e.outcome for e in ended(events).values()} == {"stopped"}
    for step in execution.steps:
        with pytest.raises(ProcessLookupError):
            os.killpg(step.process.pid, 0)


async def test_a_producer_cut_off_by_its_consumer_is_not_a_failure() -> None:
    sink = StepSink()
    payload: JsonObject = {
        "steps": [{"name": "yes", "command": ["yes"]}, {"name": "head", "command": "head -n 2"}]
    }
    outcome, events = await asyncio.wait_for(run(payload, sink), 10)
    assert outcome.kind == "succeeded"
    assert sink.text("head") == "y\ny\n"
    assert ended(events)["yes"].outcome == "succeeded"


async def test_untee_d_data_flows_process_to_process_without_reaching_the_log() -> None:
    sink = StepSink()
    payload: JsonObject = {
        "steps": [
            {"name": "gen", "command": "seq 1 100000", "log": False},
            {"name": "count", "command": "wc -l"},
        ]
    }
    outcome, _ = await run(payload, sink)
    assert outcome.kind == "succeeded"
    assert sink.text("gen") == "" and sink.text("count").strip() == "100000"


async def test_a_step_whose_command_does_not_exist_fails_before_anything_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    payload: JsonObject = {
        "steps": [
            {"name": "first", "command": f"touch {marker}"},
            {"name": "second", "command": ["nope-xyz"]},
        ]
    }
    with pytest.raises(StartFailed, match="step 'second': command 'nope-xyz' not found"):
        await LocalProcessDriver().prepare("r", payload, StepSink())
    assert not marker.exists()


async def test_discarding_a_prepared_pipeline_runs_no_step(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    payload: JsonObject = {
        "steps": [{"name": "a", "command": f"touch {marker}"}, {"name": "b", "command": "cat"}]
    }
    execution, events = await prepared(payload, StepSink())
    await execution.discard()
    assert not marker.exists() and events == []


async def test_steps_get_their_own_env_on_top_of_the_runs() -> None:
    sink = StepSink()
    payload: JsonObject = {
        "env": {"WHO": "run"},
        "steps": [
            {"name": "one", "command": 'echo "$WHO $BATCHYARD_STEP"', "env": {"WHO": "step"}},
            {"name": "two", "command": 'cat; echo "$WHO $BATCHYARD_STEP"'},
        ],
    }
    outcome, _ = await run(payload, sink)
    assert outcome.kind == "succeeded"
    assert sink.text("two") == "step one\nrun two\n"


async def test_a_stop_before_a_file_fed_step_began_skips_it(tmp_path: Path) -> None:
    sink = StepSink()
    marker = tmp_path / "ran"
    payload: JsonObject = {
        "steps": [
            {"name": "slow", "command": "echo ready; exec sleep 60", "output": str(tmp_path / "out")},
            {"name": "later", "command": f"touch {marker}"},
        ],
        "stop_grace_s": 5,
    }
    execution, events = await prepared(payload, sink)
    await execution.launch()
    deadline = time.monotonic() + 5
    while "ready" not in sink.text("slow"):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    execution.request_stop("tester", "stop requested by tester")
    outcome = await asyncio.wait_for(execution.outcome(), 5)
    assert outcome.kind == "stopped"
    assert {name: e.outcome for name, e in ended(events).items()} == {"slow": "stopped", "later": "skipped"}
    assert not marker.exists()
