"""The CLI's promise for mistakes and failures: exit code 2 and one readable line, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.client import Response, describe_problem
from cli.main import main
from shared.embedded import free_port


def test_health_of_an_unreachable_api_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["health", "--url", url]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith(f"batchyard health: cannot reach the batchyard API at {url}: ")


def test_health_takes_its_address_from_batchyard_url(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("BATCHYARD_URL", url)
    assert main(["health"]) == 2
    assert f"cannot reach the batchyard API at {url}" in capsys.readouterr().err


def test_a_url_that_is_not_http_is_refused_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["health", "--url", "localhost:8080"]) == 2
    assert capsys.readouterr().err.strip() == (
        "batchyard health: --url 'localhost:8080' is not an http(s) address like http://127.0.0.1:8080"
    )


def test_an_unknown_command_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["frobnicate"])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "invalid choice: 'frobnicate'" in err[0]


def test_replay_without_a_running_up_or_a_named_database_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BATCHYARD_PG_DSN", raising=False)
    monkeypatch.setenv("BATCHYARD_DATA_DIR", str(tmp_path))
    assert main(["replay"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"batchyard replay: no `batchyard up` is running on data dir {tmp_path}: start it (make run) "
        "or set BATCHYARD_PG_DSN to the database"
    )


def test_a_problem_answer_reads_as_one_line_naming_the_field_and_reason() -> None:
    problem = {
        "type": "about:blank",
        "title": "Invalid job",
        "status": 422,
        "detail": "the job does not validate",
        "errors": [{"field": "schedule.cron", "reason": "not a cron expression"}],
    }
    assert describe_problem(Response(422, problem)) == (
        "422 Invalid job: the job does not validate (schedule.cron: not a cron expression)"
    )


def test_a_non_json_error_answer_reads_as_its_first_line() -> None:
    assert describe_problem(Response(502, "Bad Gateway\n<html>")) == "the API answered 502: Bad Gateway"
