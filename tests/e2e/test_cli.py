"""The `batchyard` CLI against the real API (its own PostgreSQL database), as an operator uses it.

Each command runs in-process through `cli.main.main` in a worker thread (the API serves on the test's
event loop), so exit codes, stdout and stderr are the ones a shell would see.
"""

from __future__ import annotations

import asyncio
import importlib.util
import io
import json
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from cli import client as cli_client
from cli.main import main
from services.api.app import create_app
from shared.embedded import free_port
from shared.settings import Settings

TEMPLATE = "{command: ['echo', params.greeting]}\n"
STATE = """
local audience = import 'audience.libsonnet';
{
  executions: {
    hello: {
      driver: 'local',
      payload_template: importstr 'hello.jsonnet',
      default_params: { greeting: 'hello' },
    },
  },
  dimensions: { audience: audience },
}
"""
AUDIENCE = "{priority: 1, values: {moon: {params: {greeting: 'Luna'}}, sun: {params: {greeting: 'Sol'}}}}\n"


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)


class Cli:
    def __init__(self, url: str, capsys: pytest.CaptureFixture[str]) -> None:
        self.url = url
        self.capsys = capsys

    async def __call__(self, *argv: str, url: bool = True) -> Result:
        self.capsys.readouterr()
        args = [*argv, "--url", self.url] if url else list(argv)
        code = await asyncio.to_thread(main, args)
        captured = self.capsys.readouterr()
        return Result(code, captured.out, captured.err)

    async def ok(self, *argv: str) -> Result:
        result = await self(*argv)
        assert result.code == 0, result
        return result

    async def fails(self, *argv: str) -> str:
        """The one line an operator sees for a refused command (exit code 2)."""
        result = await self(*argv)
        assert result.code == 2, result
        lines = result.err.strip().splitlines()
        assert len(lines) == 1, result.err
        return lines[0]


@pytest.fixture
async def api_url(settings: Settings) -> AsyncIterator[str]:
    server = TestServer(create_app(settings), host="127.0.0.1", port=free_port())
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        await server.close()


@pytest.fixture
def state_file(tmp_path: Path) -> Path:
    (tmp_path / "hello.jsonnet").write_text(TEMPLATE)
    (tmp_path / "audience.libsonnet").write_text(AUDIENCE)
    path = tmp_path / "state.jsonnet"
    path.write_text(STATE)
    return path


@pytest.fixture
async def cli(api_url: str, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(api_url, capsys)


@pytest.fixture
async def defined(cli: Cli, state_file: Path) -> Cli:
    """An API holding execution `hello` and dimension `audience` (moon, sun), loaded by the CLI."""
    await cli.ok("load-state", str(state_file))
    return cli


async def create(cli: Cli, name: str, *options: str) -> dict[str, Any]:
    job: dict[str, Any] = (
        await cli.ok("jobs", "create", "--name", name, "--execution", "hello", *options, "--json")
    ).json
    return job


async def test_load_state_resolves_imports_next_to_the_file_and_prints_the_changes(
    cli: Cli, state_file: Path
) -> None:
    dry = await cli.ok("load-state", str(state_file), "--dry-run")
    assert dry.out.splitlines() == [
        "+ execution hello (added)",
        "+ dimension audience (added)",
        "dry run: nothing applied; 2 change(s) would be made",
    ]
    assert (await cli.ok("jobs", "list")).out.strip() == "no jobs"

    applied = await cli.ok("load-state", str(state_file))
    assert applied.out.splitlines()[-1] == f"applied 2 change(s) from {state_file}"
    again = await cli.ok("load-state", str(state_file))
    assert again.out.strip() == f"no changes: the API already holds the state of {state_file}"

    defined = (await cli.ok("events", "--stream", "execution-hello", "--json")).json
    assert [e["type"] for e in defined] == ["ExecutionDefined"]
    assert defined[0]["data"]["spec"]["payload_template"] == TEMPLATE


async def test_load_state_that_removes_what_a_job_uses_is_refused_naming_the_job(
    defined: Cli, tmp_path: Path
) -> None:
    job = await create(defined, "nightly", "--dimension", "audience=moon")
    empty = tmp_path / "empty.jsonnet"
    empty.write_text("{executions: {}, dimensions: {}}")

    line = await defined.fails("load-state", str(empty))
    assert line.startswith("batchyard load-state: refused: the state would remove what jobs still use: ")
    assert f"dimension audience is used by job 'nightly' ({job['id']})" in line
    assert f"execution hello is used by job 'nightly' ({job['id']})" in line
    assert line.endswith("(change those jobs, or pass --force)")

    forced = await defined.ok("load-state", str(empty), "--force")
    assert "- execution hello (removed)" in forced.out.splitlines()


async def test_a_jsonnet_error_is_one_line_with_file_line_and_column(cli: Cli, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jsonnet"
    broken.write_text("{\n  executions: {},\n  dimensions: std.nope(1),\n}\n")
    line = await cli.fails("load-state", str(broken))
    assert line.startswith(f"batchyard load-state: {broken}:3:15: ")
    assert "field does not exist: nope" in line.lower()

    missing = await cli.fails("load-state", str(tmp_path / "absent.jsonnet"))
    assert missing == f"batchyard load-state: {tmp_path / 'absent.jsonnet'}: no such file"


async def test_jobs_create_show_and_list_with_filters(defined: Cli) -> None:
    created = await defined.ok(
        "jobs",
        "create",
        "--name",
        "nightly-moon",
        "--execution",
        "hello",
        "--dimension",
        "audience=moon",
        "--param",
        "greeting=hi there",
        "--param",
        "retries:=3",
        "--cron",
        "0 3 * * *",
        "--timezone",
        "Europe/Stockholm",
    )
    assert "name:       nightly-moon" in created.out
    assert 'params:     greeting="hi there" retries=3' in created.out
    assert "schedule:   0 3 * * * (Europe/Stockholm)" in created.out
    sun = await create(defined, "sun-job", "--dimension", "audience=sun", "--disabled")

    listed = (await defined.ok("jobs", "list")).out.splitlines()
    assert listed[0].split() == ["ID", "NAME", "EXECUTION", "DIMENSIONS", "STATE", "SCHEDULE"]
    assert [line.split()[1] for line in listed[1:]] == ["nightly-moon", "sun-job"]

    moon = (await defined.ok("jobs", "list", "--dimension", "audience=moon", "--json")).json
    assert [job["name"] for job in moon] == ["nightly-moon"]
    assert moon[0]["params"] == {"greeting": "hi there", "retries": 3}
    paused = (await defined.ok("jobs", "list", "--state", "paused", "--json")).json
    assert [job["id"] for job in paused] == [sun["id"]]
    shown = (await defined.ok("jobs", "show", sun["id"], "--json")).json
    assert shown["enabled"] is False and shown["dimensions"] == {"audience": "sun"}


async def test_jobs_list_follows_the_cursor_across_pages(
    defined: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_client, "PAGE_MAX", 2)
    names = [f"job-{i}" for i in range(5)]
    for name in names:
        await create(defined, name)
    assert [job["name"] for job in (await defined.ok("jobs", "list", "--json")).json] == names
    assert [
        job["name"] for job in (await defined.ok("jobs", "list", "--limit", "3", "--json")).json
    ] == names[:3]


async def test_jobs_create_from_a_file_with_options_overriding_it(defined: Cli, tmp_path: Path) -> None:
    job_file = tmp_path / "job.jsonnet"
    job_file.write_text("{name: 'from-file', execution: 'hello', params: {greeting: 'file', keep: true}}")
    job = (
        await defined.ok("jobs", "create", "--file", str(job_file), "--param", "greeting=flag", "--json")
    ).json
    assert job["name"] == "from-file"
    assert job["params"] == {"greeting": "flag", "keep": True}


async def test_pause_resume_delete_and_the_history_of_who_did_it(
    defined: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("USER", "support-anna")
    job = await create(defined, "nightly")
    assert (await defined.ok("jobs", "pause", job["id"], "--reason", "customer asked")).out.strip() == (
        f"paused job {job['id']}"
    )
    again = await defined.fails("jobs", "pause", job["id"])
    assert again == f"batchyard jobs: 409 Invalid transition: job {job['id']} is already paused"
    assert (await defined.ok("jobs", "resume", job["id"])).out.strip() == f"resumed job {job['id']}"
    assert (await defined.ok("jobs", "delete", job["id"])).out.strip() == f"deleted job {job['id']}"
    gone = await defined.fails("jobs", "show", job["id"])
    assert gone == f"batchyard jobs: 404 Not Found: no job {job['id']}"

    history = (await defined.ok("jobs", "history", job["id"])).out.splitlines()
    assert history[0].split() == ["WHEN", "VERSION", "CHANGE", "BY", "CORRELATION", "WHAT"]
    rows = [line.split(maxsplit=6) for line in history[1:]]
    assert [row[3] for row in rows] == ["created", "paused", "resumed", "deleted"]
    assert {row[4] for row in rows} == {"support-anna"}
    assert [row[6] if len(row) > 6 else "" for row in rows] == [
        "execution=hello name=nightly",
        "enabled: yes → no; reason: customer asked",
        "enabled: no → yes",
        "-",
    ]


async def test_bulk_pause_by_dimension_acts_on_every_match_under_one_correlation_id(defined: Cli) -> None:
    moon = [await create(defined, f"moon-{i}", "--dimension", "audience=moon") for i in range(3)]
    sun = await create(defined, "sun", "--dimension", "audience=sun")
    await defined.ok("jobs", "pause", moon[0]["id"])

    result = await defined.ok("jobs", "pause", "--where", "audience=moon", "--reason", "maintenance")
    lines = result.out.splitlines()
    assert lines[0].split() == ["JOB", "NAME", "RESULT"]
    assert [line.split(maxsplit=2)[1:] for line in lines[1:4]] == [
        ["moon-0", f"job {moon[0]['id']} is already paused"],
        ["moon-1", "paused"],
        ["moon-2", "paused"],
    ]
    correlation = lines[4].rsplit(" ", 1)[1]
    assert lines[4].startswith(
        "pause: 2 changed, 1 unchanged, 0 failed of 3 jobs matching audience=moon; correlation id "
    )

    paused = (await defined.ok("events", "--type", "JobPaused", "--json")).json
    bulk = [e for e in paused if e["correlation_id"] == correlation]
    assert sorted(e["stream_id"] for e in bulk) == sorted(f"job-{job['id']}" for job in moon[1:])
    assert {e["data"]["reason"] for e in bulk} == {"maintenance"}
    still = (await defined.ok("jobs", "show", sun["id"], "--json")).json
    assert still["enabled"] is True

    runs = (await defined.ok("jobs", "run", "--where", "audience=moon", "--json")).json
    assert [item["outcome"] for item in runs["items"]] == ["changed", "changed", "changed"]
    requested = (await defined.ok("events", "--type", "RunRequested", "--json")).json
    assert {e["correlation_id"] for e in requested} == {runs["correlation_id"]}
    assert sorted(e["data"]["job_id"] for e in requested) == sorted(job["id"] for job in moon)


async def test_bulk_action_matching_no_job_is_one_line(defined: Cli) -> None:
    assert await defined.fails("jobs", "resume", "--where", "audience=sun") == (
        "batchyard jobs: no job matches audience=sun"
    )
    assert await defined.fails("jobs", "pause") == (
        "batchyard jobs: which job? `jobs pause ID`, or every job matching `--where DIMENSION=VALUE`"
    )


async def test_jobs_run_prints_the_run_id_and_runs_list_and_show_find_it(defined: Cli) -> None:
    job = await create(defined, "nightly", "--dimension", "audience=sun")
    result = await defined.ok("jobs", "run", job["id"], "--param", "greeting=now")
    run_id = result.out.strip()
    assert uuid.UUID(run_id)

    shown = (await defined.ok("runs", "show", run_id, "--json")).json
    assert shown["job_id"] == job["id"] and shown["overrides"] == {"greeting": "now"}
    text = (await defined.ok("runs", "show", run_id)).out
    assert f"id:        {run_id}" in text and "overrides: greeting=now" in text

    listed = (await defined.ok("runs", "list", "--job", job["id"])).out.splitlines()
    assert listed[0].split()[:4] == ["ID", "JOB", "EXECUTION", "STATUS"]
    assert listed[1].split()[:3] == [run_id, job["id"], "hello"]
    assert (await defined.ok("runs", "list", "--status", "succeeded")).out.strip() == "no runs"


async def test_events_lists_history_as_a_table(defined: Cli) -> None:
    job = await create(defined, "nightly")
    out = (await defined.ok("events", "--stream", f"job-{job['id']}")).out.splitlines()
    assert out[0].split() == ["POSITION", "TIME", "STREAM", "TYPE", "ACTOR", "DATA"]
    assert f"job-{job['id']}" in out[1] and "JobCreated" in out[1]


async def test_events_follow_prints_new_events_as_they_happen(defined: Cli, api_url: str) -> None:
    job = await create(defined, "nightly")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli.main",
        "events",
        "-f",
        "--json",
        "--stream",
        f"job-{job['id']}",
        "--url",
        api_url,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        first = json.loads(await asyncio.wait_for(process.stdout.readline(), 10))
        assert first["type"] == "JobCreated"
        await defined.ok("jobs", "pause", job["id"])
        second = json.loads(await asyncio.wait_for(process.stdout.readline(), 10))
        assert (second["type"], second["stream_id"]) == ("JobPaused", f"job-{job['id']}")
    finally:
        process.terminate()
        await process.wait()


async def test_errors_are_one_line_with_exit_code_2(defined: Cli) -> None:
    unknown = str(uuid.uuid4())
    assert await defined.fails("jobs", "show", unknown) == f"batchyard jobs: 404 Not Found: no job {unknown}"
    assert await defined.fails("runs", "show", unknown) == f"batchyard runs: 404 Not Found: no run {unknown}"
    assert await defined.fails(
        "jobs", "create", "--name", "x", "--execution", "hello", "--param", "oops"
    ) == ("batchyard jobs: --param 'oops': expected KEY=VALUE, e.g. --param customer=acme")
    assert await defined.fails("jobs", "run", unknown, "--param", "n:=[1,") == (
        "batchyard jobs: --param n:= is not JSON: Expecting value: line 1 column 4 (char 3)"
    )
    bad_reference = await defined.fails("jobs", "create", "--name", "x", "--execution", "nope")
    assert bad_reference.startswith("batchyard jobs: 422 Unknown references")
    assert "nope" in bad_reference
    bad_cron = await defined.fails(
        "jobs", "create", "--name", "x", "--execution", "hello", "--cron", "every day"
    )
    assert bad_cron.startswith("batchyard jobs: 422 ")
    assert "body.schedule.cron" in bad_cron
    assert await defined.fails("jobs", "history", "nope") == (
        "batchyard jobs: 'nope' is not a job id (a UUID such as `jobs list` shows)"
    )


async def test_an_unreachable_api_is_one_line_with_exit_code_2(cli: Cli, state_file: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for argv in (["jobs", "list"], ["runs", "list"], ["events", "-f"], ["load-state", str(state_file)]):
        result = await cli(*argv, "--url", url, url=False)
        lines = result.err.strip().splitlines()
        assert result.code == 2 and len(lines) == 1
        assert lines[0].startswith(f"batchyard {argv[0]}: cannot reach the batchyard API at {url}: ")


@pytest.mark.skipif(
    importlib.util.find_spec("services.api.secrets") is None,
    reason="the API does not encrypt cleartext secrets at the door yet",
)
async def test_a_secret_param_is_read_from_stdin_encrypted_by_the_api_and_never_shown(
    settings: Settings,
    pool: asyncpg.Pool,
    state_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = tmp_path / "secret.pem"
    assert main(["generate-key", "--bits", "2048", "--out", str(key)]) == 0
    server = TestServer(create_app(settings.model_copy(update={"secret_key_file": key})), port=free_port())
    await server.start_server()
    try:
        cli = Cli(f"http://127.0.0.1:{server.port}", capsys)
        await cli.ok("load-state", str(state_file))
        monkeypatch.setattr(sys, "stdin", io.StringIO("hunter2\n"))
        job = (
            await cli.ok(
                "jobs", "create", "--name", "db", "--execution", "hello", "--secret", "password", "--json"
            )
        ).json
        assert job["params"]["password"] == "***"
        assert "hunter2" not in (await cli.ok("events", "--json", "--limit", "500")).out
        async with pool.acquire() as conn:
            data = await conn.fetchval(
                "SELECT data::text FROM events WHERE stream_id = $1 AND type = 'JobCreated'",
                f"job-{job['id']}",
            )
        stored = json.loads(data)["spec"]["params"]["password"]
        assert stored["type"] == "secret" and "hunter2" not in data
        monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(stored)))
        decrypted = await cli("decrypt-value", "--key", str(key), url=False)
        assert (decrypted.code, decrypted.out) == (0, "hunter2\n")
    finally:
        await server.close()


async def test_jobs_run_obeys_the_overlap_policy_unless_forced(defined: Cli) -> None:
    """No dispatcher runs here, so the first run stays active and `forbid` (the default) refuses a second."""
    job = await create(defined, "nightly")
    first = (await defined.ok("jobs", "run", job["id"])).out.strip()
    refused = await defined.fails("jobs", "run", job["id"])
    assert refused.startswith("batchyard jobs: ") and "\n" not in refused
    forced = (await defined.ok("jobs", "run", job["id"], "--force")).out.strip()
    assert uuid.UUID(forced) and forced != first
