"""Runs through the CLI against the whole system (`batchyard up`): follow a run's log to its outcome,
stop a run, read a log from an offset. The CLI runs as the subprocess an operator would start."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from shared.embedded import free_port
from tests.e2e.up_process import UpProcess, batchyard_command, clean_environment, no_leftovers, running_up

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("services.api.routes.logs") is None
    or importlib.util.find_spec("services.api.routes.preview") is None
    or importlib.util.find_spec("services.dispatcher.runs") is None,
    reason="the API's log and preview endpoints and the local-process dispatcher are not all merged yet",
)

TEMPLATE = "{command: ['sh', '-c', params.script], timeout_s: 5, stop_grace_s: 1}\n"
STATE = """{
  executions: {
    sh: {driver: 'local', payload_template: importstr 'sh.jsonnet', default_params: {script: 'true'}},
    broken: {driver: 'local', payload_template: '{command: params.nope.x}'},
  },
  dimensions: {},
}
"""


@dataclass
class Done:
    code: int
    out: str
    err: str


class Operator:
    def __init__(self, url: str) -> None:
        self.env = clean_environment(BATCHYARD_URL=url)

    def __call__(self, *argv: str, timeout: float = 30.0) -> Done:
        done = subprocess.run(
            [*batchyard_command(), *argv], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        return Done(done.returncode, done.stdout, done.stderr)

    def start(self, *argv: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*batchyard_command(), *argv],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def job(self, name: str, execution: str = "sh") -> str:
        done = self("jobs", "create", "--name", name, "--execution", execution)
        assert done.code == 0, done
        return done.out.split()[1]


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[UpProcess, Path]]:
    home = tmp_path_factory.mktemp("cli-runs")
    data_dir = home / "data"
    with no_leftovers(data_dir), running_up(data_dir, free_port()) as process:
        process.wait_until_ready(60)
        yield process, home
        process.stop()


@pytest.fixture(scope="module")
def operator(up: tuple[UpProcess, Path]) -> Operator:
    process, home = up
    (home / "sh.jsonnet").write_text(TEMPLATE)
    (home / "state.jsonnet").write_text(STATE)
    cli = Operator(f"http://127.0.0.1:{process.api_port}")
    loaded = cli("load-state", str(home / "state.jsonnet"))
    assert loaded.code == 0, loaded
    return cli


def test_run_follow_prints_the_log_and_exits_0_when_the_run_succeeds(operator: Operator) -> None:
    job = operator.job("greet")
    done = operator("jobs", "run", job, "-f", "--param", "script=echo hello; echo world >&2")
    assert done.code == 0, done
    assert done.out == "hello\nworld\n"
    run_id = done.err.split()[1]
    assert done.err.splitlines() == [f"run {run_id} requested", f"run {run_id} succeeded"]


def test_run_follow_exits_1_naming_the_exit_code_of_a_failed_run(operator: Operator) -> None:
    job = operator.job("fails")
    done = operator(
        "jobs", "run", job, "--follow", "--param", "script=for i in 1 2 3; do echo $i; done; exit 3"
    )
    assert done.code == 1, done
    assert done.out == "1\n2\n3\n"
    assert done.err.splitlines()[-1].endswith("failed with exit code 3: exited with code 3")


def test_run_follow_of_a_rejected_run_ends_at_once_with_the_template_error(operator: Operator) -> None:
    job = operator.job("broken", execution="broken")
    started = time.monotonic()
    done = operator("jobs", "run", job, "-f")
    assert done.code == 1, done
    assert done.out == ""
    assert "rejected: template of execution 'broken' at line 1, column 11" in done.err
    assert time.monotonic() - started < 10


def test_stop_ends_a_followed_run_and_its_log_reads_from_an_offset(operator: Operator) -> None:
    job = operator.job("sleeper")
    requested = operator("jobs", "run", job, "--param", "script=echo started; sleep 30")
    run_id = requested.out.strip()
    follower = operator.start("runs", "logs", run_id, "-f")
    assert follower.stdout is not None
    assert follower.stdout.readline() == "started\n"

    stopped = operator("runs", "stop", run_id, "--grace", "1")
    assert (stopped.code, stopped.out) == (0, f"stop requested for run {run_id}\n")
    assert follower.wait(timeout=15) == 0
    assert operator("runs", "show", run_id, "--json").out.count('"status": "stopped"') == 1
    assert operator("runs", "logs", run_id, "--offset", "2").out == "arted\n"
    beyond = operator("runs", "logs", run_id, "--offset", "99")
    assert beyond.code == 2 and beyond.err.startswith("batchyard runs: 416 Offset beyond the end")


def test_a_one_off_run_of_an_execution_follows_to_its_outcome(operator: Operator) -> None:
    done = operator("runs", "start", "--execution", "sh", "--param", "script=echo once", "-f")
    assert done.code == 0, done
    assert done.out == "once\n"
    run_id = done.err.split()[1]
    shown = operator("runs", "show", run_id)
    assert "job:       - (one-off)" in shown.out and "status:    succeeded" in shown.out


def test_a_followed_log_survives_an_api_restart_without_losing_or_repeating_a_line(
    up: tuple[UpProcess, Path], operator: Operator
) -> None:
    process, _ = up
    script = "for i in $(seq 1 15); do echo line $i; sleep 0.2; done"
    run_id = operator("runs", "start", "--execution", "sh", "--param", f"script={script}").out.strip()
    follower = operator.start("runs", "logs", run_id, "-f")
    assert follower.stdout is not None
    assert follower.stdout.readline() == "line 1\n"
    process.service_processes()["api"].kill()
    out = follower.stdout.read()  # the same buffered reader as readline: communicate() would skip its buffer
    assert follower.wait(timeout=30) == 0, follower.stderr.read() if follower.stderr else ""
    assert "line 1\n" + out == "".join(f"line {i}\n" for i in range(1, 16))


def test_preview_shows_the_payload_and_the_layer_of_each_param(operator: Operator) -> None:
    job = operator.job("previewed")
    assert operator("jobs", "run", job).code == 0
    before = operator("jobs", "show", job, "--json").out
    created_at = datetime.fromisoformat(json.loads(before)["created_at"]).isoformat()
    shown = operator("jobs", "preview", job)
    assert shown.code == 0, shown
    lines = shown.out.splitlines()
    assert lines[0] == f"job {job} version 1, driver local"
    assert '"sh",' in shown.out and '"true"' in shown.out
    assert lines[-2].split() == ["PARAM", "VALUE", "FROM"]
    assert lines[-1].split() == ["script", "true", "default"]
    assert before == operator("jobs", "show", job, "--json").out
    at = operator("jobs", "preview", job, "--at", "2000-01-01T00:00:00Z")
    assert at.code == 2
    assert at.err.strip() == (
        f"batchyard jobs: 422 Invalid request: query.at: job {job} did not exist yet then; "
        f"it was created at {created_at}"
    )
