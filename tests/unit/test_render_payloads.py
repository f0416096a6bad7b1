"""The payload each driver accepts: defaults filled in, unknown fields and bad values refused by name."""

from __future__ import annotations

import pytest

from contracts.payloads import PayloadError, validate_payload


def refused(driver: str, payload: object) -> PayloadError:
    with pytest.raises(PayloadError) as raised:
        validate_payload(driver, payload)
    return raised.value


def test_a_local_payload_gets_its_defaults_no_timeout_and_ten_seconds_grace() -> None:
    assert validate_payload("local", {"command": ["sh", "-c", "echo hi"]}) == {
        "command": ["sh", "-c", "echo hi"],
        "env": {},
        "cwd": None,
        "timeout_s": None,
        "stop_grace_s": 10.0,
        "state": False,
    }


def test_a_local_command_may_be_a_shell_string() -> None:
    payload = validate_payload("local", {"command": "echo $HOME", "env": {"A": "1"}, "timeout_s": 30})
    assert payload["command"] == "echo $HOME" and payload["timeout_s"] == 30


def test_a_local_payload_without_command_is_refused() -> None:
    error = refused("local", {"env": {}})
    assert (error.field, error.reason) == ("command", "Field required")


@pytest.mark.parametrize("command", [[], ""])
def test_an_empty_command_is_refused(command: object) -> None:
    assert str(refused("local", {"command": command})) == "local payload field 'command': must not be empty"


def test_a_command_of_the_wrong_shape_is_refused() -> None:
    error = refused("local", {"command": 42})
    assert error.reason == "must be an argv list of strings or a shell command string"


def test_a_non_string_argv_item_is_refused_naming_its_index() -> None:
    error = refused("local", {"command": ["echo", 3]})
    assert (error.field, error.reason) == ("command.1", "Input should be a valid string")


def test_an_unknown_field_is_refused() -> None:
    assert str(refused("local", {"command": "true", "tiemout_s": 5})) == (
        "local payload field 'tiemout_s': unknown field, not allowed"
    )


def test_env_values_must_be_strings_and_names_must_not_hold_equals() -> None:
    assert refused("local", {"command": "true", "env": {"PORT": 5432}}).field == "env.PORT"
    assert "'A=B' is not a valid environment variable name" in str(
        refused("local", {"command": "true", "env": {"A=B": "x"}})
    )


def test_timeouts_must_be_positive_and_grace_not_negative() -> None:
    assert refused("local", {"command": "true", "timeout_s": 0}).field == "timeout_s"
    assert refused("local", {"command": "true", "stop_grace_s": -1}).field == "stop_grace_s"


def test_encrypted_secrets_are_accepted_where_a_string_may_be_secret() -> None:
    secret = {"type": "secret", "encrypted": "Y2lwaGVy"}
    payload = validate_payload("local", {"command": ["login", secret], "env": {"TOKEN": secret}})
    assert payload["command"][1] == secret and payload["env"]["TOKEN"] == secret


def test_a_docker_payload_needs_an_image_and_fills_in_the_issue_6_defaults() -> None:
    assert refused("docker", {"command": "true"}).field == "image"
    payload = validate_payload("docker", {"image": "busybox", "mounts": [{"source": "/a", "target": "/b"}]})
    assert payload["pull_policy"] == "if-not-present" and payload["keep"] is False
    assert payload["mounts"] == [{"source": "/a", "target": "/b", "read_only": False}]
    assert refused("docker", {"image": "busybox", "pull_policy": "missing"}).field == "pull_policy"
    assert refused("docker", {"image": "busybox", "x": 1}).field == "x"
    assert refused("docker", {"image": "busybox", "mounts": [{"source": "a", "target": "/b"}]}).field == (
        "mounts.0.source"
    )


def test_a_nomad_payload_is_a_job_spec_with_task_groups() -> None:
    assert refused("nomad", {"Name": "x"}).field == "TaskGroups"
    assert validate_payload("nomad", {"TaskGroups": [{"Name": "g"}], "Type": "batch"})["Type"] == "batch"


def test_an_unknown_driver_or_a_payload_that_is_not_an_object_is_refused() -> None:
    assert "unknown driver 'k8s'" in str(refused("k8s", {}))
    assert str(refused("local", ["echo"])) == "local payload: must be an object, not list"
