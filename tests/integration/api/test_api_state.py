"""`POST /state` speaks striv's state format: striv's files and its `load-state` client work unchanged."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import requests
from aiohttp.test_utils import TestClient

from shared.secrets import encrypt_value, load_public_key
from tests.integration.api.conftest import AUDIENCE, HELLO, create_job
from tests.integration.api.secret_keys import key_file, keyed_api, public_key_file

__all__ = ["key_file", "keyed_api", "public_key_file"]

Client = TestClient[Any, Any]

# What `importstr 'nomad_template.jsonnet'` puts into a striv state file: the template's text.
NOMAD_TEMPLATE = """{
  Job: {
    ID: params.job_name,
    Type: 'batch',
    Datacenters: ['dc1'],
    TaskGroups: [{
      Name: 'main',
      Tasks: [{
        Name: 'main',
        Driver: 'docker',
        Config: { image: params.image, command: 'sh', args: ['-c', params.command] },
        Env: { DB_HOST: params.db.host, DEBUG: std.toString(params.debug) },
      }],
    }],
  },
}
"""
PERIODIC_TEMPLATE = NOMAD_TEMPLATE.replace(
    "Type: 'batch',", "Type: 'batch', Periodic: { Spec: params.cron },"
)


def striv_state(secret: dict[str, str] | None = None) -> dict[str, Any]:
    """The getting-started state of striv's repository, grown by dotted keys and (optionally) a secret."""
    defaults: dict[str, Any] = {"debug": True, "image": "alpine", "db.host": "db.local"}
    if secret is not None:
        defaults["db.password"] = secret
    return {
        "dimensions": {
            "maturity": {
                "priority": 1,
                "values": {
                    "accept": {"params": {"debug": True, "command": "echo Hello"}},
                    "operational": {"params": {"debug": False, "command": "echo Bye", "db.host": "db.prod"}},
                },
            },
            "period": {"priority": 1, "values": {"daily": {"params": {"debug": False}}}},
        },
        "executions": {
            "local_nomad": {
                "name": "Dev Nomad",
                "driver": "nomad",
                "logstore": "nomad",
                "driver_config": {"nomad_url": "http://nomad:4646"},
                "default_params": defaults,
                "payload_template": NOMAD_TEMPLATE,
            },
            "periodic_nomad": {
                "name": "Periodic Nomad",
                "driver": "nomad",
                "logstore": "nomad",
                "driver_config": {"nomad_url": "http://nomad:4646"},
                "default_params": {"env": {}, "cron": "@daily"},
                "payload_template": PERIODIC_TEMPLATE,
            },
        },
    }


def striv_load_state(url: str, payload: dict[str, Any]) -> tuple[int, Any]:
    """What striv's `cli.py load-state` does: `requests.post(f"{url}/state", json=payload)`, nothing else
    (the session only ignores proxy variables, so the test reaches its local server)."""
    with requests.Session() as session:
        session.trust_env = False
        response = session.post(f"{url}/state", json=payload)
        return response.status_code, response.json()


async def _events(api: Client, **params: Any) -> list[dict[str, Any]]:
    response = await api.get("/events", params={"limit": 500, **params})
    items: list[dict[str, Any]] = (await response.json())["items"]
    return items


async def test_striv_load_state_client_gets_200_and_the_changes(keyed_api: Client, key_file: Path) -> None:
    ciphertext = encrypt_value(load_public_key(key_file), "s3cr3t-db-pw")
    state = striv_state({"type": "secret", "encrypted": ciphertext})
    url = str(keyed_api.make_url("")).rstrip("/")
    status, answer = await asyncio.to_thread(striv_load_state, url, state)
    assert status == 200, answer
    assert answer["executions"]["added"] == ["local_nomad", "periodic_nomad"]
    assert answer["dimensions"]["added"] == ["maturity", "period"]
    execution = await (await keyed_api.get("/executions/local_nomad")).json()
    assert execution["spec"]["name"] == "Dev Nomad" and execution["spec"]["logstore"] == "nomad"
    assert execution["spec"]["default_params"]["db.host"] == "db.local"
    assert execution["spec"]["default_params"]["db.password"] == "***"
    [defined] = await _events(keyed_api, stream="execution-local_nomad")
    assert defined["data"]["spec"]["default_params"]["db.password"] == "***"


async def test_loading_the_same_striv_state_twice_records_nothing_the_second_time(
    keyed_api: Client, key_file: Path
) -> None:
    ciphertext = encrypt_value(load_public_key(key_file), "pw")
    state = striv_state({"type": "secret", "encrypted": ciphertext})
    first = await keyed_api.post("/state", json=state)
    assert first.status == 200 and (await first.json())["recorded"] is True
    before = await _events(keyed_api)
    second = await keyed_api.post("/state", json=state)
    answer = await second.json()
    assert second.status == 200 and answer["recorded"] is False
    assert answer["executions"] == {"added": [], "changed": [], "removed": []}
    assert await _events(keyed_api) == before


async def test_a_kind_absent_from_the_body_is_left_untouched(defined: Client) -> None:
    only_executions = await defined.post("/state", json={"executions": {"hello": HELLO, "bye": HELLO}})
    answer = await only_executions.json()
    assert only_executions.status == 200
    assert answer["executions"]["added"] == ["bye"]
    assert answer["dimensions"] == {"added": [], "changed": [], "removed": []}
    assert [d["name"] for d in (await (await defined.get("/dimensions")).json())["items"]] == ["audience"]

    only_dimensions = await defined.post("/state", json={"dimensions": {"color": {"priority": 2}}})
    answer = await only_dimensions.json()
    assert answer["dimensions"] == {"added": ["color"], "changed": [], "removed": ["audience"]}
    assert answer["executions"] == {"added": [], "changed": [], "removed": []}
    names = [e["name"] for e in (await (await defined.get("/executions")).json())["items"]]
    assert names == ["bye", "hello"]


async def test_an_empty_kind_replaces_the_whole_kind(defined: Client) -> None:
    response = await defined.post("/state", json={"executions": {}})
    assert response.status == 200
    assert (await response.json())["executions"]["removed"] == ["hello"]
    assert (await (await defined.get("/executions")).json())["items"] == []
    assert len((await (await defined.get("/dimensions")).json())["items"]) == 1


async def test_an_empty_body_object_changes_nothing(defined: Client) -> None:
    before = await _events(defined)
    response = await defined.post("/state", json={})
    assert response.status == 200 and (await response.json())["recorded"] is False
    assert await _events(defined) == before


async def test_dropping_a_used_dimension_value_in_a_state_lists_the_jobs_unless_forced(
    defined: Client,
) -> None:
    moon = await create_job(defined, dimensions={"audience": "moon"})
    await create_job(defined, name="sunny", dimensions={"audience": "sun"})
    only_sun = {"dimensions": {"audience": {"priority": 1, "values": {"sun": {}}}}}
    refused = await defined.post("/state", json=only_sun)
    problem = await refused.json()
    assert refused.status == 409 and problem["type"].endswith("/in-use")
    assert problem["jobs"] == [moon["id"]]
    assert problem["blocked"] == {"dimension audience": [moon["id"]]}
    assert "force=true" in problem["detail"]
    dry = await defined.post("/state", json=only_sun, params={"dry_run": "true", "force": "true"})
    assert (await dry.json())["dimensions"]["changed"] == ["audience"]
    forced = await defined.post("/state", json=only_sun, params={"force": "true"})
    assert forced.status == 200 and (await forced.json())["recorded"] is True


async def test_state_events_are_caused_by_state_loaded_under_one_correlation(api: Client) -> None:
    state = {"executions": {"hello": HELLO}, "dimensions": {"audience": AUDIENCE}}
    response = await api.post("/state", json=state, headers={"X-Correlation-Id": "load-1", "X-Actor": "ops"})
    assert response.headers["X-Correlation-Id"] == "load-1"
    events = await _events(api)
    [loaded] = [e for e in events if e["type"] == "StateLoaded"]
    caused = [e for e in events if e["type"] != "StateLoaded"]
    assert {e["type"] for e in caused} == {"ExecutionDefined", "DimensionDefined"}
    assert all(e["causation_id"] == loaded["id"] for e in caused)
    assert {e["correlation_id"] for e in events} == {"load-1"} and {e["actor"] for e in events} == {"ops"}


async def test_dotted_param_keys_are_accepted_wherever_params_appear(api: Client) -> None:
    dotted = {"db.host": "x", "db.port": 5432}
    state = {
        "executions": {"hello": HELLO | {"default_params": dotted}},
        "dimensions": {"customer": {"priority": 1, "values": {"acme": {"params": {"db.host": "acme"}}}}},
    }
    assert (await api.post("/state", json=state)).status == 200
    job = await create_job(api, dimensions={"customer": "acme"}, params={"db.name": "jobs"})
    assert job["params"] == {"db.name": "jobs"}
    patched = await api.patch(f"/jobs/{job['id']}", json={"params": {"db.name": "other"}})
    assert patched.status == 200
    run = await api.post(f"/jobs/{job['id']}/runs", json={"params": {"db.host": "override"}})
    assert run.status == 202 and (await run.json())["overrides"] == {"db.host": "override"}


async def test_unknown_dimension_and_value_are_422_naming_them(defined: Client) -> None:
    response = await defined.post(
        "/jobs", json={"name": "j", "execution": "hello", "dimensions": {"audience": "mars", "planet": "x"}}
    )
    problem = await response.json()
    assert response.status == 422
    assert problem["unknown"] == ["value 'mars' of dimension 'audience'", "dimension 'planet'"]
