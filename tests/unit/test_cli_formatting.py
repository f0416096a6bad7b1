"""How the CLI reads options and writes for people: `KEY=VALUE` pairs, tables, SSE, jsonnet errors."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from cli import jsonnet_file, pairs
from cli.errors import CliError
from cli.job_history import describe_changes
from cli.jobs import job_body, schedule_text
from cli.jsonnet_file import describe_error, evaluate
from cli.main import build_parser, main
from cli.runlog import outcome_line
from cli.sse import SseEvent, parse_events
from cli.state import describe_result
from cli.table import cell, table, when
from cli.table import pairs as show_pairs


def test_a_param_is_a_string_unless_written_with_colon_equals() -> None:
    assert pairs.params(["zip=01234", "retries:=3", 'hosts:=["a","b"]', "empty="]) == {
        "zip": "01234",
        "retries": 3,
        "hosts": ["a", "b"],
        "empty": "",
    }


def test_params_json_comes_first_and_each_param_overrides_it() -> None:
    assert pairs.params(["a=flag"], '{"a": "json", "b": {"c": 1}}') == {"a": "flag", "b": {"c": 1}}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["oops"], "--param 'oops': expected KEY=VALUE, e.g. --param customer=acme"),
        (["=x"], "--param '=x': expected KEY=VALUE, e.g. --param customer=acme"),
        ([":=1"], "--param ':=1': expected KEY:=JSON, e.g. --param retries:=3"),
    ],
)
def test_a_malformed_param_is_refused_naming_it(argv: list[str], message: str) -> None:
    with pytest.raises(CliError) as refused:
        pairs.params(argv)
    assert str(refused.value) == message


def test_params_json_must_be_an_object() -> None:
    with pytest.raises(CliError, match="--params-json must be a JSON object"):
        pairs.params([], "[1]")


def test_dimension_pairs_refuse_an_empty_value_and_a_repeated_key() -> None:
    assert pairs.string_pairs(["customer=acme", "env=a=b"], "--where") == {"customer": "acme", "env": "a=b"}
    with pytest.raises(CliError, match="--where 'customer=': the value after '=' is empty"):
        pairs.string_pairs(["customer="], "--where")
    with pytest.raises(CliError, match="--where 'customer' is given twice"):
        pairs.string_pairs(["customer=a", "customer=b"], "--where")


def test_a_table_aligns_columns_and_shows_nothing_as_a_dash() -> None:
    assert table(["id", "state"], [["a", None], ["abcdef", True]]).splitlines() == [
        "ID      STATE",
        "a       -",
        "abcdef  yes",
    ]


def test_a_cell_is_one_short_line() -> None:
    assert cell({"b": 1, "a": [1, 2]}) == '{"a":[1,2],"b":1}'
    assert cell("two\nlines") == "two lines"
    assert len(cell(["x" * 500])) == 60 and cell(["x" * 500]).endswith("…")
    assert cell("x" * 500) == "x" * 500, "text is shown whole"


def test_pairs_are_sorted_and_quote_what_would_be_ambiguous() -> None:
    assert show_pairs({"env": "prod", "customer": "acme"}) == "customer=acme env=prod"
    assert show_pairs({"greeting": "hi there", "n": 3}) == 'greeting="hi there" n=3'
    assert show_pairs({}) == "-"


def test_times_are_shown_in_utc_to_the_second() -> None:
    assert when("2026-11-23T20:15:08.123456+01:00") == "2026-11-23 19:15:08Z"
    assert when(None) == "-"


def test_server_sent_events_are_parsed_across_comments_and_multiline_data() -> None:
    stream = [
        b"retry: 1000\n",
        b"\n",
        b": keepalive\n",
        b"\n",
        b"id: 12\n",
        b"event: log\n",
        b'data: {"offset": 0,\n',
        b'data: "next_offset": 12}\n',
        b"\n",
        b"event: end\r\n",
        b"data: {}\r\n",
        b"\r\n",
    ]
    assert list(parse_events(stream)) == [
        SseEvent("log", '{"offset": 0,\n"next_offset": 12}', "12"),
        SseEvent("end", "{}", "12"),
    ]


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            'STATIC ERROR: s.jsonnet:2:9: unexpected: "," while parsing terminal\n',
            's.jsonnet:2:9: unexpected: "," while parsing terminal',
        ),
        (
            's.jsonnet:2:9-10 Unexpected: "," while parsing terminal\n\n  a: 1 +,\n\n',
            's.jsonnet:2:9: Unexpected: "," while parsing terminal',
        ),
        (
            "RUNTIME ERROR: boom\n\tlib.libsonnet:4:6-18\tobject <anonymous>\n\ts.jsonnet:2:3\t\n",
            "lib.libsonnet:4:6: boom",
        ),
        ("RUNTIME ERROR: x\n\ts.jsonnet:(3:5)-(4:2)\tobject\n", "s.jsonnet:3:5: x"),
    ],
)
def test_a_jsonnet_error_reads_as_file_line_column_and_reason(message: str, expected: str) -> None:
    assert describe_error(message, "s.jsonnet") == expected


@pytest.mark.parametrize("engine", ["_gojsonnet", "_jsonnet"])
def test_both_jsonnet_engines_report_the_innermost_file_of_an_import(
    engine: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jsonnet_file, "ENGINES", (engine,))
    (tmp_path / "lib.libsonnet").write_text("{\n  a: error 'boom',\n}\n")
    state = tmp_path / "state.jsonnet"
    state.write_text("(import 'lib.libsonnet').a\n")
    with pytest.raises(CliError) as failed:
        evaluate(state)
    assert str(failed.value) == f"{tmp_path / 'lib.libsonnet'}:2:6: boom"


def test_a_state_result_reads_as_one_line_per_change() -> None:
    result = {
        "dry_run": False,
        "executions": {"added": ["hello"], "changed": ["build"], "removed": []},
        "dimensions": {"added": [], "changed": [], "removed": ["region"]},
    }
    assert describe_result(result, Path("s.jsonnet")).splitlines() == [
        "+ execution hello (added)",
        "~ execution build (changed)",
        "- dimension region (removed)",
        "applied 3 change(s) from s.jsonnet",
    ]


def test_a_run_outcome_names_status_exit_code_and_reason() -> None:
    assert (
        outcome_line({"id": "r", "status": "succeeded", "exit_code": 0, "reason": None}) == "run r succeeded"
    )
    assert outcome_line({"id": "r", "status": "failed", "exit_code": 3, "reason": "exited with 3"}) == (
        "run r failed with exit code 3: exited with 3"
    )
    assert outcome_line({"id": "r", "status": "timed_out", "exit_code": None, "reason": None}) == (
        "run r timed out"
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["jobs", "list", "--state", "sleeping"],
        ["jobs", "list", "--limit", "0"],
        ["runs", "list", "--status", "done"],
        ["events", "--after", "x"],
        ["encrypt-value", "--key", "a", "--public-key", "b"],
    ],
)
def test_a_usage_mistake_is_one_line_and_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_follow_and_json_do_not_combine_for_a_job_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["jobs", "run", "some-job", "--follow", "--json"]) == 2
    assert capsys.readouterr().err.strip() == (
        "batchyard jobs: --follow prints the log as text; leave out --json (or follow with `runs logs -f`)"
    )


def test_a_history_line_says_what_a_change_did_field_by_field() -> None:
    created = {
        "type": "JobCreated",
        "changes": [
            {"field": "execution", "before": None, "after": "e"},
            {"field": "params.db.pw", "before": None, "after": "***"},
        ],
    }
    updated = {
        "type": "JobUpdated",
        "changes": [
            {"field": "params.db.host", "before": "a", "after": "b"},
            {"field": "params.old", "before": 1, "after": None},
        ],
    }
    paused = {
        "type": "JobPaused",
        "changes": [{"field": "enabled", "before": True, "after": False}],
        "reason": "night",
    }
    assert describe_changes(created) == "execution=e params.db.pw=***"
    assert describe_changes(updated) == "params.db.host: a → b; params.old removed"
    assert describe_changes(paused) == "enabled: yes → no; reason: night"
    assert describe_changes({"type": "JobDeleted", "changes": []}) == ""


def test_secret_params_are_read_one_line_each_from_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("hunter2\ns3 cret\n"))
    assert pairs.secret_params(["db", "api"]) == {
        "db": {"type": "secret", "value": "hunter2"},
        "api": {"type": "secret", "value": "s3 cret"},
    }
    monkeypatch.setattr(sys, "stdin", io.StringIO("only one\n"))
    with pytest.raises(CliError, match=r"--secret: stdin holds 1 line\(s\) for 2 secret\(s\), one per line"):
        pairs.secret_params(["db", "api"])


def test_fired_by_nomad_goes_into_the_schedule_and_shows_beside_its_time_zone() -> None:
    argv = ["jobs", "create", "--name", "n", "--execution", "x", "--cron", "0 3 * * *", "--fired-by", "nomad"]
    body = job_body(build_parser().parse_args(argv))
    assert body["schedule"] == {"cron": "0 3 * * *", "timezone": "UTC", "fired_by": "nomad"}
    assert schedule_text(body["schedule"]) == "0 3 * * * (UTC, fired by Nomad)"
    assert schedule_text({"cron": "0 3 * * *", "timezone": "UTC"}) == "0 3 * * * (UTC)"
    with pytest.raises(CliError, match="--fired-by needs --cron"):
        job_body(build_parser().parse_args(["jobs", "create", "--fired-by", "nomad"]))
