"""A secret from the API's door to a run's log: cleartext only in the renderer's and dispatcher's memory.

The API, renderer, dispatcher and log archiver run in this process against real PostgreSQL and NATS.
The job echoes its secrets to stdout and stderr, once whole and once split across two writes (the log
interleaves stdout and stderr in the order the dispatcher read them, so checks take stderr's lines out
first); afterwards every place a byte can rest (every table, both JetStream streams, the archive
files, the services' logs) is searched for the cleartexts.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from nats.js import JetStreamContext

from contracts.envelope import EventMeta
from contracts.events.runs import RunRequested
from contracts.logs import LOG_END, LOG_OFFSET
from contracts.subjects import events_stream_name, logs_stream_name
from services.api.app import create_app
from services.dispatcher.config import DispatcherSettings
from services.dispatcher.service import DispatcherService
from services.logarchiver.service import start as start_archiver
from services.renderer.service import start as start_renderer
from shared.archive import open_archive
from shared.eventstore import NO_STREAM, EventStore
from shared.secrets import load_public_key
from shared.service import open_runtime
from shared.settings import Settings
from tests.integration.api.secret_keys import key_file, public_key_file
from tests.unit.test_secrets_striv_compat import striv_encrypt

__all__ = ["key_file", "public_key_file"]

API_SECRET = "api-door-s3cret-value"
STRIV_SECRET = "striv-made-token-42"
SECRETS = (API_SECRET, STRIV_SECRET)
DEADLINE_S = 30.0

ECHO_SECRETS = """
import os, sys, time
out, err = sys.stdout.buffer, sys.stderr.buffer
for name in ("API_SECRET", "STRIV_SECRET"):
    secret = os.environ[name].encode()
    out.write(b"stdout " + secret + b"\\n"); out.flush()
    err.write(b"stderr " + secret + b"\\n"); err.flush()
    half = len(secret) // 2
    out.write(b"split " + secret[:half]); out.flush()
    time.sleep(0.2)
    out.write(secret[half:] + b" done\\n"); out.flush()
"""

TEMPLATE = """{
  command: [params.python, '-c', params.script],
  env: {API_SECRET: params.api_secret, STRIV_SECRET: params.db.token},
}"""


@asynccontextmanager
async def services(settings: Settings) -> AsyncIterator[None]:
    """Renderer, dispatcher and log archiver, each with its own runtime, as `batchyard up` runs them."""
    async with AsyncExitStack() as stack:
        renderer = await stack.enter_async_context(open_runtime(settings, "renderer"))
        stack.push_async_callback(await start_renderer(renderer))
        dispatcher_runtime = await stack.enter_async_context(open_runtime(settings, "dispatcher"))
        dispatcher = DispatcherService(dispatcher_runtime, DispatcherSettings(lease_ttl_s=3))
        await dispatcher.start()
        stack.push_async_callback(dispatcher.shutdown)
        archiver = await stack.enter_async_context(open_runtime(settings, "logarchiver", relay=False))
        stack.push_async_callback(await start_archiver(archiver))
        yield


@asynccontextmanager
async def api_client(settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    client: TestClient[Any, Any] = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


async def run_events(store: EventStore, run_id: str, last: str) -> list[str]:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        types = [event.type for event in await store.read_stream(f"run-{run_id}")]
        if last in types:
            return types
        assert time.monotonic() < deadline, f"run {run_id} stuck at {types}"
        await asyncio.sleep(0.05)


async def database_text(pool: asyncpg.Pool) -> str:
    """Every row of every table of the database (events, tracking, `rm`, the dispatcher's), as JSON."""
    async with pool.acquire() as conn:
        tables = await conn.fetch(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema')"
        )
        rows: list[str] = []
        for table in tables:
            name = f'"{table["table_schema"]}"."{table["table_name"]}"'
            rows += [row[0] for row in await conn.fetch(f"SELECT row_to_json(t)::text FROM {name} t")]
    assert any('"RunRendered"' in row for row in rows), "the search must see the events table"
    return "\n".join(rows)


async def stream_bytes(js: JetStreamContext, stream: str) -> bytes:
    """Every stored message of a JetStream stream, headers and data, as raw bytes."""
    state = (await js.stream_info(stream)).state
    found = b""
    for seq in range(state.first_seq, state.last_seq + 1):
        message = await js.get_msg(stream, seq)
        found += repr(message.headers).encode() + (message.data or b"") + b"\n"
    return found


def files_bytes(*roots: Path) -> bytes:
    return b"".join(
        path.read_bytes() for root in roots if root.exists() for path in root.rglob("*") if path.is_file()
    )


def assert_no_cleartext(where: str, data: bytes | str) -> None:
    raw = data.encode() if isinstance(data, str) else data
    for secret in SECRETS:
        assert secret.encode() not in raw, f"{where} holds a secret in cleartext"


async def live_log(js: JetStreamContext, settings: Settings, run_id: str) -> bytes:
    """The run's log as live readers see it: its chunks on the LOGS stream, placed by offset."""
    stream = logs_stream_name(settings.bus_prefix)
    state = (await js.stream_info(stream)).state
    chunks: dict[int, bytes] = {}
    for seq in range(state.first_seq, state.last_seq + 1):
        message = await js.get_msg(stream, seq)
        headers = message.headers or {}
        if (message.subject or "").endswith(run_id) and LOG_END not in headers:
            chunks[int(headers[LOG_OFFSET])] = message.data or b""
    return b"".join(chunks[offset] for offset in sorted(chunks))


async def test_secrets_reach_the_run_but_no_table_stream_archive_or_log_in_cleartext(
    settings: Settings,
    key_file: Path,
    public_key_file: Path,
    pool: asyncpg.Pool,
    store: EventStore,
    js: JetStreamContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    keyed = settings.model_copy(update={"secret_key_file": key_file})
    striv_ciphertext = striv_encrypt(load_public_key(public_key_file), STRIV_SECRET)
    state = {
        "executions": {
            "echo-secrets": {
                "driver": "local",
                "payload_template": TEMPLATE,
                "default_params": {
                    "python": sys.executable,
                    "script": ECHO_SECRETS,
                    "db.token": {"type": "secret", "encrypted": striv_ciphertext},
                },
            }
        }
    }
    api_settings = settings.model_copy(update={"secret_key_file": public_key_file})
    async with services(keyed), api_client(api_settings) as api:
        assert (await api.post("/state", json=state)).status == 200
        job_body = {
            "name": "echo",
            "execution": "echo-secrets",
            "params": {"api_secret": {"type": "secret", "value": API_SECRET}},
        }
        created = await api.post("/jobs", json=job_body)
        assert created.status == 201, await created.text()
        job_id = (await created.json())["id"]
        requested = await api.post(f"/jobs/{job_id}/runs")
        assert requested.status == 202, await requested.text()
        run_id = (await requested.json())["id"]

        types = await run_events(store, run_id, "RunLogArchived")
        assert "RunSucceeded" in types, types
        rendered = next(e for e in await store.read_stream(f"run-{run_id}") if e.type == "RunRendered")
        assert rendered.data["payload"]["env"] == {"API_SECRET": "***", "STRIV_SECRET": "***"}
        assert rendered.data["sealed"]

        archived = next(e for e in await store.read_stream(f"run-{run_id}") if e.type == "RunLogArchived")
        async with await open_archive(keyed) as archive:
            archived_log = await archive.read(run_id, 0, archived.data["bytes"])
        live = await live_log(js, keyed, run_id)

        run_view = await (await api.get(f"/runs/{run_id}")).text()
        api_log = await (await api.get(f"/runs/{run_id}/log")).json()

    assert api_log["complete"] and api_log["data"].encode() == archived_log

    for log_text in (archived_log, live):
        assert log_text.count(b"***") == 6
        assert log_text.count(b"stderr ***\n") == 2
        stdout_only = log_text.replace(b"stderr ***\n", b"")
        assert stdout_only.count(b"stdout ***\n") == 2 and stdout_only.count(b"split *** done\n") == 2
        assert_no_cleartext("the log", log_text)
    assert archived_log == live
    assert_no_cleartext("the run's API view", run_view)
    assert_no_cleartext("the database", await database_text(pool))
    events_stream = await stream_bytes(js, events_stream_name(settings.bus_prefix))
    logs_stream = await stream_bytes(js, logs_stream_name(settings.bus_prefix))
    archive_files = files_bytes(keyed.archive_path, keyed.archive_staging_path)
    assert b"RunRendered" in events_stream and b"stdout ***" in logs_stream and b"stdout ***" in archive_files
    assert_no_cleartext("the EVENTS stream", events_stream)
    assert_no_cleartext("the LOGS stream", logs_stream)
    assert_no_cleartext("the archive", archive_files)
    assert_no_cleartext("the services' logs", caplog.text)


async def test_without_a_key_the_api_refuses_secrets_and_the_renderer_rejects_encrypted_ones(
    settings: Settings, public_key_file: Path, store: EventStore
) -> None:
    ciphertext = striv_encrypt(load_public_key(public_key_file), STRIV_SECRET)
    execution = {"driver": "local", "payload_template": "{command: ['true'], env: {T: params.t}}"}
    async with services(settings), api_client(settings) as api:
        assert (await api.put("/executions/plain", json=execution)).status in (200, 201)
        refused = await api.post(
            "/jobs",
            json={"name": "j", "execution": "plain", "params": {"t": {"type": "secret", "value": "x"}}},
        )
        assert refused.status == 422
        assert "no secret key configured: set BATCHYARD_SECRET_KEY_FILE" in await refused.text()

        run_id = uuid.uuid4()
        await store.append(
            f"run-{run_id}",
            [
                RunRequested(
                    run_id=run_id,
                    execution="plain",
                    params={"t": {"type": "secret", "encrypted": ciphertext}},
                )
            ],
            expected_version=NO_STREAM,
            meta=EventMeta(actor="striv-import", correlation_id="no-key"),
        )
        await run_events(store, str(run_id), "RunRejected")
        rejected = (await store.read_stream(f"run-{run_id}"))[-1]
    assert rejected.data["reason"] == "no secret key configured: set BATCHYARD_SECRET_KEY_FILE (secret at t)"
