"""Pipeline payloads: steps checked by name and field before a run is ever rendered."""

from __future__ import annotations

import pytest

from contracts.payloads import PayloadError, validate_payload
from services.renderer.render import render_payload


def refused(driver: str, payload: object) -> PayloadError:
    with pytest.raises(PayloadError) as raised:
        validate_payload(driver, payload)
    return raised.value


def test_a_local_pipeline_gets_step_defaults_stdout_and_a_log_copy() -> None:
    payload = validate_payload("local", {"steps": [{"name": "a", "command": "echo"}], "state": True})
    assert payload["steps"] == [{"name": "a", "command": "echo", "env": {}, "output": "stdout", "log": True}]
    assert payload["state"] is True and payload["timeout_s"] is None


def test_a_step_output_is_stdout_stderr_or_an_absolute_path() -> None:
    error = refused("local", {"steps": [{"name": "a", "command": "x", "output": "out.txt"}]})
    assert (error.field, error.reason) == (
        "steps.0.output",
        "must be 'stdout', 'stderr' or an absolute file path",
    )


def test_step_names_are_unique_and_plain() -> None:
    twice = refused("local", {"steps": [{"name": "a", "command": "x"}, {"name": "a", "command": "y"}]})
    assert (twice.field, twice.reason) == ("steps", "step name 'a' is used twice")
    odd = refused("local", {"steps": [{"name": "a b", "command": "x"}]})
    assert odd.field == "steps.0.name"


def test_a_pipeline_has_at_least_one_step_and_each_step_a_command() -> None:
    assert refused("local", {"steps": []}).field == "steps"
    assert refused("local", {"steps": [{"name": "a"}]}).field == "steps.0.command"


def test_a_pipeline_payload_refuses_a_top_level_command() -> None:
    error = refused("local", {"steps": [{"name": "a", "command": "x"}], "command": "y"})
    assert (error.field, error.reason) == ("command", "unknown field, not allowed")


def test_a_docker_pipeline_names_an_image_per_step() -> None:
    payload = validate_payload("docker", {"steps": [{"name": "a", "image": "busybox", "command": "cat"}]})
    assert payload["steps"][0]["output"] == "stdout" and payload["pull_policy"] == "if-not-present"
    assert refused("docker", {"steps": [{"name": "a", "command": "cat"}]}).field == "steps.0.image"


def test_a_docker_step_cannot_hand_on_a_file() -> None:
    error = refused("docker", {"steps": [{"name": "a", "image": "b", "output": "/tmp/x"}]})
    assert error.field == "steps.0.output"


def test_a_template_renders_a_pipeline_with_its_params() -> None:
    template = """{
      state: true,
      steps: [
        {name: 'extract', command: ['cat', params.source]},
        {name: 'transform', command: 'tr a-z A-Z', output: '/tmp/' + params.name + '.out'},
        {name: 'load', command: 'wc -c', env: {TARGET: params.name}},
      ],
    }"""
    payload = render_payload("etl", "local", template, {"source": "/data/in.txt", "name": "etl"})
    assert [step["name"] for step in payload["steps"]] == ["extract", "transform", "load"]
    assert payload["steps"][1]["output"] == "/tmp/etl.out" and payload["steps"][2]["env"] == {"TARGET": "etl"}


def test_a_template_rendering_a_bad_step_names_the_field() -> None:
    with pytest.raises(PayloadError) as raised:
        render_payload("etl", "local", "{steps: [{name: 'a', command: 'x', output: 'rel'}]}", {})
    assert raised.value.field == "steps.0.output"
