"""Secrets at the API's door: encrypted before they are recorded, `***` in every response, and never in
clear in the event store, the read models or the bus."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient, TestServer
from nats.js import JetStreamContext

from contracts.subjects import events_stream_name
from services.api.app import create_app
from services.api.context import CONTEXT
from shared.secrets import decrypt_value, encrypt_value, load_private_key, load_public_key
from shared.settings import Settings
from tests.integration.api.conftest import HELLO
from tests.integration.api.secret_keys import key_file, keyed_api, public_key_file

__all__ = ["key_file", "keyed_api", "public_key_file"]

Client = TestClient[Any, Any]

CLEARTEXTS = {
    "exec": "CLEAR-exec-default-4711",
    "config": "CLEAR-driver-config-0815",
    "dimension": "CLEAR-dimension-acme-9000",
    "job": "CLEAR-job-password-1234",
    "list": "CLEAR-list-token-5678",
    "patch": "CLEAR-patched-password-2222",
    "run": "CLEAR-run-override-3333",
}


def secret(name: str) -> dict[str, str]:
    return {"type": "secret", "value": CLEARTEXTS[name]}


async def _json(response: Any, status: int) -> Any:
    text = await response.text()
    assert response.status == status, text
    return json.loads(text) if text else None


async def _configure_everything(api: Client) -> tuple[dict[str, Any], list[str]]:
    """Sends a secret through every door that takes params; returns the job and every response text."""
    texts: list[str] = []
    execution = HELLO | {
        "default_params": {"greeting": "hi", "api_token": secret("exec")},
        "driver_config": {"auth": {"token": secret("config")}},
    }
    response = await api.put("/executions/hello", json=execution)
    texts.append(await response.text())
    await _json(response, 201)
    state = {
        "dimensions": {
            "customer": {
                "priority": 1,
                "values": {"acme": {"params": {"db": {"password": secret("dimension")}}}},
            }
        }
    }
    response = await api.post("/state", json=state)
    texts.append(await response.text())
    await _json(response, 200)
    job_body = {
        "name": "nightly",
        "execution": "hello",
        "dimensions": {"customer": "acme"},
        "params": {"db.password": secret("job"), "hosts": [{"token": secret("list")}]},
    }
    response = await api.post("/jobs", json=job_body)
    texts.append(await response.text())
    job = await _json(response, 201)
    response = await api.patch(f"/jobs/{job['id']}", json={"params": {"db.password": secret("patch")}})
    texts.append(await response.text())
    await _json(response, 200)
    response = await api.post(f"/jobs/{job['id']}/runs", json={"params": {"api_token": secret("run")}})
    texts.append(await response.text())
    await _json(response, 202)
    for path in (
        "/executions",
        "/executions/hello",
        "/dimensions",
        "/dimensions/customer",
        "/jobs",
        f"/jobs/{job['id']}",
        "/runs",
        "/events?limit=500",
        f"/jobs/{job['id']}/history",
    ):
        response = await api.get(path)
        texts.append(await response.text())
        assert response.status == 200, (path, texts[-1])
    return job, texts


def _assert_no_cleartext(where: str, text: str) -> None:
    for name, cleartext in CLEARTEXTS.items():
        assert cleartext not in text, f"the {name} secret is in clear in {where}"


async def _wait_for_bus(js: JetStreamContext, stream: str, count: int) -> None:
    deadline = time.monotonic() + 10
    while (await js.stream_info(stream)).state.messages < count:
        assert time.monotonic() < deadline, "the relay did not publish every event"
        await asyncio.sleep(0.05)


async def test_cleartext_secrets_never_reach_the_store_read_models_bus_or_responses(
    keyed_api: Client, pool: asyncpg.Pool, js: JetStreamContext, settings: Settings, key_file: Path
) -> None:
    job, responses = await _configure_everything(keyed_api)

    for text in responses:
        _assert_no_cleartext("an API response", text)
        assert '"encrypted"' not in text, "a response shows a ciphertext instead of ***"
    shown = await _json(await keyed_api.get(f"/jobs/{job['id']}"), 200)
    assert shown["params"] == {"db.password": "***"}
    execution = await _json(await keyed_api.get("/executions/hello"), 200)
    assert execution["spec"]["default_params"]["api_token"] == "***"
    assert execution["spec"]["driver_config"] == {"auth": {"token": "***"}}
    dimension = await _json(await keyed_api.get("/dimensions/customer"), 200)
    assert dimension["spec"]["values"]["acme"]["params"] == {"db": {"password": "***"}}
    [run] = (await _json(await keyed_api.get("/runs"), 200))["items"]
    assert run["overrides"] == {"api_token": "***"}

    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT row_to_json(e)::text AS row FROM events e ORDER BY position")
        for row in rows:
            _assert_no_cleartext("the events table", row["row"])
        tables = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'rm' ORDER BY 1"
        )
        assert {"executions", "dimensions", "jobs", "runs"} <= {t["table_name"] for t in tables}
        for table in tables:
            for row in await conn.fetch(
                f'SELECT row_to_json(t)::text AS row FROM rm."{table["table_name"]}" t'
            ):
                _assert_no_cleartext(f"read model rm.{table['table_name']}", row["row"])
        stored_job = json.loads(
            await conn.fetchval(
                "SELECT data::text FROM events WHERE type = 'JobUpdated' ORDER BY position DESC LIMIT 1"
            )
        )

    stream = events_stream_name(settings.bus_prefix)
    await _wait_for_bus(js, stream, len(rows))
    info = await js.stream_info(stream)
    for sequence in range(info.state.first_seq, info.state.last_seq + 1):
        message = await js.get_msg(stream, sequence)
        _assert_no_cleartext("the EVENTS stream", (message.data or b"").decode())

    stored = stored_job["spec"]["params"]["db.password"]
    assert set(stored) == {"type", "encrypted"}
    assert decrypt_value(load_private_key(key_file), stored["encrypted"]) == CLEARTEXTS["patch"]


async def test_the_live_event_tail_masks_secrets(keyed_api: Client) -> None:
    response = await keyed_api.put(
        "/executions/hello", json=HELLO | {"default_params": {"pw": secret("exec")}}
    )
    assert response.status == 201
    async with keyed_api.get("/events/stream", params={"after": 0}) as tail:
        data = ""
        while "data: " not in data:
            line = await asyncio.wait_for(tail.content.readline(), 5)
            data += line.decode()
    _assert_no_cleartext("the SSE tail", data)
    assert '"pw":"***"' in data.replace(" ", "")


async def test_an_encrypted_secret_is_kept_as_it_was_sent(keyed_api: Client, key_file: Path) -> None:
    ciphertext = encrypt_value(load_public_key(key_file), "made-by-encrypt-value")
    body = {"name": "j", "execution": "hello", "params": {"pw": {"type": "secret", "encrypted": ciphertext}}}
    assert (await keyed_api.put("/executions/hello", json=HELLO)).status == 201
    job = await _json(await keyed_api.post("/jobs", json=body), 201)
    assert job["params"] == {"pw": "***"}
    events = (await _json(await keyed_api.get("/events", params={"stream": f"job-{job['id']}"}), 200))[
        "items"
    ]
    assert events[0]["data"]["spec"]["params"]["pw"] == "***"


async def test_a_mangled_ciphertext_is_422_naming_the_param(keyed_api: Client) -> None:
    assert (await keyed_api.put("/executions/hello", json=HELLO)).status == 201
    body = {
        "name": "j",
        "execution": "hello",
        "params": {"db": {"pw": {"type": "secret", "encrypted": "bm9wZQ=="}}},
    }
    problem = await _json(await keyed_api.post("/jobs", json=body), 422)
    assert problem["errors"][0]["field"] == "body.params.db.pw"
    misshapen = {"name": "j", "execution": "hello", "params": {"pw": {"type": "secret", "value": 5}}}
    problem = await _json(await keyed_api.post("/jobs", json=misshapen), 422)
    assert problem["errors"] == [{"field": "body.params.pw", "reason": "a secret's value must be a string"}]


async def test_without_a_key_secrets_are_refused_with_how_to_configure_one(api: Client) -> None:
    response = await api.put("/executions/hello", json=HELLO | {"default_params": {"pw": secret("exec")}})
    problem = await _json(response, 422)
    assert problem["type"].endswith("/no-secret-key")
    assert "no secret key configured: set BATCHYARD_SECRET_KEY_FILE" in problem["detail"]
    assert problem["errors"][0]["field"] == "body.default_params.pw"
    state = {"dimensions": {"customer": {"values": {"acme": {"params": {"pw": secret("dimension")}}}}}}
    problem = await _json(await api.post("/state", json=state), 422)
    assert problem["errors"][0]["field"] == "body.dimensions.customer.values.acme.params.pw"
    assert (await api.get("/events")).status == 200
    assert (await _json(await api.get("/events"), 200))["items"] == []


async def test_the_private_key_file_works_too_and_only_its_public_half_is_kept(
    settings: Settings, key_file: Path
) -> None:
    app = create_app(settings.model_copy(update={"secret_key_file": key_file}))
    async with TestClient(TestServer(app)) as api:
        body = HELLO | {"default_params": {"pw": secret("exec")}}
        assert (await api.put("/executions/hello", json=body)).status == 201
        door = app[CONTEXT].door
        assert door.public_key is not None and not hasattr(door.public_key, "private_numbers")


async def test_sending_back_a_masked_value_is_refused_so_a_secret_is_never_overwritten_by_stars(
    keyed_api: Client,
) -> None:
    assert (await keyed_api.put("/executions/hello", json=HELLO)).status == 201
    body = {"name": "j", "execution": "hello", "params": {"db": {"pw": secret("job")}, "n": 1}}
    job = await _json(await keyed_api.post("/jobs", json=body), 201)
    edited = job["params"] | {"n": 2}
    problem = await _json(await keyed_api.patch(f"/jobs/{job['id']}", json={"params": edited}), 422)
    assert problem["errors"][0]["field"] == "body.params.db.pw"
    assert "send the secret itself" in problem["detail"]
    history = await _json(await keyed_api.get(f"/jobs/{job['id']}/history"), 200)
    assert len(history["items"]) == 1
