"""What a Nomad payload may be: a striv job spec, or a dispatch, with batchyard's options in lower case."""

from __future__ import annotations

import pytest

from contracts.payloads import PayloadError, validate_payload
from services.dispatcher.drivers.nomad import NomadDriver, build_job, kill_timeout_s, run_job_id
from services.dispatcher.drivers.nomad import parse_payload as parse_nomad

STRIV_JOB = {
    "Name": "example",
    "Datacenters": ["dc1"],
    "TaskGroups": [
        {
            "Count": 1,
            "Name": "testi",
            "Tasks": [
                {
                    "Config": {"image": "alpine:latest", "command": "echo Hello"},
                    "Driver": "docker",
                    "Name": "testo",
                    "Resources": {"CPU": 500, "MemoryMB": 256},
                }
            ],
        }
    ],
    "Type": "batch",
}


def refusal(payload: dict[str, object]) -> PayloadError:
    with pytest.raises(PayloadError) as refused:
        validate_payload("nomad", payload)
    return refused.value


def test_a_striv_job_spec_passes_through_exactly_as_written() -> None:
    assert validate_payload("nomad", STRIV_JOB) == STRIV_JOB


def test_the_job_nomad_receives_has_a_run_derived_id_batch_type_and_the_run_in_its_meta() -> None:
    spec = parse_nomad({**STRIV_JOB, "Type": None, "Meta": {"team": "data"}, "timeout_s": 60})
    job = build_job(spec, "6f1c", namespace="apps")
    assert (job["ID"], job["Name"], job["Type"], job["Namespace"]) == (
        "example-6f1c",
        "example",
        "batch",
        "apps",
    )
    assert job["Meta"] == {"team": "data", "batchyard_run_id": "6f1c"}
    assert "timeout_s" not in job and job["Datacenters"] == ["dc1"]
    assert (
        run_job_id("6f1c", "my job/nightly") == "my-job-nightly-6f1c"
        and run_job_id("6f1c", None) == "batchyard-6f1c"
    )


def test_the_grace_of_a_stop_is_the_longest_kill_timeout_with_nomads_default_of_five_seconds() -> None:
    assert kill_timeout_s(STRIV_JOB) == 5.0
    groups = [{"Tasks": [{"KillTimeout": 2_000_000_000}, {"KillTimeout": 12_000_000_000}]}]
    assert kill_timeout_s({"TaskGroups": groups}) == 12.0


def test_batchyard_options_are_lower_case_and_a_mistyped_one_is_named() -> None:
    error = refusal({**STRIV_JOB, "timeout": 5})
    assert "unknown field 'timeout'" in str(error)
    assert refusal({**STRIV_JOB, "nomad_url": "nomad:4646"}).field == "nomad_url"


def test_a_dispatch_stands_alone_and_a_run_is_never_periodic_or_parameterized() -> None:
    assert validate_payload("nomad", {"dispatch": {"job_id": "report", "meta": {"day": "mon"}}})["dispatch"][
        "meta"
    ] == {"day": "mon"}
    assert "remove the job fields Datacenters" in str(
        refusal({"dispatch": {"job_id": "r"}, "Datacenters": ["a"]})
    )
    assert refusal({"Name": "x"}).field == "TaskGroups"
    assert "'ParameterizedJob' is not allowed in a run" in str(refusal({**STRIV_JOB, "ParameterizedJob": {}}))
    assert refusal({**STRIV_JOB, "Type": "service"}).field == "Type"


def test_the_default_cluster_comes_from_nomads_own_environment_variables() -> None:
    driver = NomadDriver.from_env(
        {"NOMAD_ADDR": "https://nomad.acme:4646/", "NOMAD_TOKEN": "t0k", "NOMAD_REGION": "eu"}
    )
    assert driver.default is not None and driver.default.address == "https://nomad.acme:4646"
    assert (driver.default.region, driver.default.namespace) == ("eu", None)
    assert driver.tokens == {"https://nomad.acme:4646": "t0k"} and "t0k" not in repr(driver.default)
    assert NomadDriver.from_env({}).default is None
