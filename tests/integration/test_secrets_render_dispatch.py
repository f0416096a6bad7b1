"""Secrets in the renderer and the dispatcher against real NATS and PostgreSQL (0140).

The renderer records a masked payload and a sealed one; the dispatcher opens the sealed one just before
the driver prepares the run, and refuses clearly when it cannot.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from contracts.envelope import EventMeta
from contracts.events.runs import RunRendered, RunRequested
from contracts.preview import PreviewRendered, PreviewRequest
from contracts.specs import ExecutionSpec
from services.dispatcher.secrets import MaskingLogPublisher
from services.renderer.service import start as start_renderer
from shared.eventstore import NO_STREAM, EventStore
from shared.secrets import (
    encrypt_value,
    generate_key,
    load_keyring,
    load_public_key,
    open_rendered,
    seal_rendered,
)
from shared.service import Runtime, open_runtime
from shared.settings import Settings
from tests.integration.api.secret_keys import key_file, public_key_file
from tests.integration.test_dispatcher import dispatcher, read_log, wait_for
from tests.integration.test_renderer import (
    define_execution,
    preview,
    request_run,
    run_stream_once_settled,
)

__all__ = ["key_file", "public_key_file"]

PASSWORD = "correct-horse-battery"
META = EventMeta(actor="alice", correlation_id="req-secrets")
DB_TEMPLATE = """{
  command: ['connect', 'postgres://app:' + params.db.password + '@db'],
  env: {PW_B64: std.base64(params.db.password)},
}"""
FAILING_TEMPLATE = "error 'cannot use ' + params.db.password"


@pytest.fixture
async def keyed_renderer(settings: Settings, key_file: Path) -> AsyncIterator[Runtime]:
    keyed = settings.model_copy(update={"secret_key_file": key_file})
    async with open_runtime(keyed, "renderer") as runtime:
        shutdown = await start_renderer(runtime)
        yield runtime
        await shutdown()


def secret_param(public_key_file: Path, cleartext: str = PASSWORD) -> dict[str, str]:
    return {"type": "secret", "encrypted": encrypt_value(load_public_key(public_key_file), cleartext)}


async def test_a_rendered_run_records_secrets_as_stars_and_seals_the_real_payload_for_the_dispatcher(
    keyed_renderer: Runtime, store: EventStore, key_file: Path, public_key_file: Path
) -> None:
    await define_execution(store, "db", ExecutionSpec(driver="local", payload_template=DB_TEMPLATE))
    requested = await request_run(store, "db", params={"db.password": secret_param(public_key_file)})

    rendered = (await run_stream_once_settled(store, requested))[1]

    assert rendered.type == "RunRendered"
    assert rendered.data["payload"]["command"] == ["connect", "postgres://app:***@db"]
    assert rendered.data["payload"]["env"] == {"PW_B64": base64.b64encode(b"***").decode()}
    encoded = base64.b64encode(PASSWORD.encode()).decode()
    assert PASSWORD not in str(rendered.data["payload"]) and encoded not in str(rendered.data["payload"])
    keyring = load_keyring(key_file)
    assert keyring is not None
    opened = open_rendered(rendered.data["sealed"], keyring)
    assert opened.secrets == {PASSWORD}
    assert isinstance(opened.payload, dict)
    assert opened.payload["command"] == ["connect", f"postgres://app:{PASSWORD}@db"]
    assert opened.payload["env"] == {"PW_B64": encoded}


async def test_a_template_error_quoting_a_secret_is_recorded_masked(
    keyed_renderer: Runtime, store: EventStore, public_key_file: Path
) -> None:
    await define_execution(store, "db", ExecutionSpec(driver="local", payload_template=FAILING_TEMPLATE))
    requested = await request_run(store, "db", params={"db.password": secret_param(public_key_file)})

    rejected = (await run_stream_once_settled(store, requested))[1]

    assert rejected.type == "RunRejected"
    assert rejected.data["reason"] == "template of execution 'db' at line 1, column 1: cannot use ***"


async def test_a_secret_that_does_not_decrypt_rejects_the_run_naming_where_it_is(
    keyed_renderer: Runtime, store: EventStore
) -> None:
    other = load_public_key(generate_key(2048))
    wrong = {"type": "secret", "encrypted": encrypt_value(other, PASSWORD)}
    await define_execution(store, "db", ExecutionSpec(driver="local", payload_template=DB_TEMPLATE))
    requested = await request_run(store, "db", params={"db.password": wrong})

    rejected = (await run_stream_once_settled(store, requested))[1]

    assert rejected.type == "RunRejected"
    assert rejected.data["reason"].startswith("db.password: ")
    assert "another key" in rejected.data["reason"]


async def test_the_keyed_preview_shows_secrets_as_stars(
    keyed_renderer: Runtime, store: EventStore, public_key_file: Path
) -> None:
    await define_execution(store, "db", ExecutionSpec(driver="local", payload_template=DB_TEMPLATE))
    request = PreviewRequest(execution="db", params={"db": {"password": secret_param(public_key_file)}})

    reply = await preview(keyed_renderer, request)

    assert isinstance(reply, PreviewRendered)
    assert reply.params == {"db": {"password": "***"}}
    assert reply.payload["command"] == ["connect", "postgres://app:***@db"]
    assert PASSWORD not in reply.model_dump_json()


async def sealed_run(store: EventStore, sealed: str) -> str:
    """A rendered run as the renderer records it when its payload holds secrets."""
    run_id = uuid.uuid4()
    stream = f"run-{run_id}"
    masked = {"command": ["***"]}
    await store.append(
        stream,
        [
            RunRequested(run_id=run_id, execution="x"),
            RunRendered(run_id=run_id, driver="local", payload=masked, execution_version=1, sealed=sealed),
        ],
        expected_version=NO_STREAM,
        meta=META,
    )
    return stream


async def test_a_dispatcher_without_a_key_fails_a_sealed_run_with_the_setting_to_fix(
    settings: Settings, store: EventStore, public_key_file: Path
) -> None:
    payload = {"command": ["echo", PASSWORD]}
    sealed = seal_rendered(payload, [PASSWORD], load_public_key(public_key_file))
    async with dispatcher(settings):
        stream = await sealed_run(store, sealed)
        events = await wait_for(store, stream, lambda types: "RunFailed" in types)
    assert events[-1].data["reason"] == (
        "the run's payload holds secrets and cannot be opened: "
        "no secret key configured: set BATCHYARD_SECRET_KEY_FILE"
    )


async def test_a_dispatcher_with_another_key_fails_a_sealed_run_clearly(
    settings: Settings, store: EventStore, key_file: Path
) -> None:
    other = load_public_key(generate_key(2048))
    payload = {"command": ["echo", PASSWORD]}
    keyed = settings.model_copy(update={"secret_key_file": key_file})
    async with dispatcher(keyed):
        stream = await sealed_run(store, seal_rendered(payload, [PASSWORD], other))
        events = await wait_for(store, stream, lambda types: "RunFailed" in types)
    reason = events[-1].data["reason"]
    assert reason.startswith("the run's payload holds secrets and cannot be opened: ")
    assert "another key" in reason


async def test_a_start_failure_quoting_a_secret_is_recorded_masked(
    settings: Settings, store: EventStore, key_file: Path, public_key_file: Path
) -> None:
    payload = {"command": [f"/no/such/{PASSWORD}"]}
    sealed = seal_rendered(payload, [PASSWORD], load_public_key(public_key_file))
    keyed = settings.model_copy(update={"secret_key_file": key_file})
    async with dispatcher(keyed):
        stream = await sealed_run(store, sealed)
        events = await wait_for(store, stream, lambda types: "RunFailed" in types)
    reason = events[-1].data["reason"]
    assert "/no/such/***" in reason and PASSWORD not in reason


async def test_a_secret_the_template_turns_into_a_number_is_recorded_as_stars(
    keyed_renderer: Runtime, store: EventStore, key_file: Path, public_key_file: Path
) -> None:
    template = "{command: ['unlock'], timeout_s: std.parseInt(params.pin)}"
    await define_execution(store, "vault", ExecutionSpec(driver="local", payload_template=template))
    requested = await request_run(store, "vault", params={"pin": secret_param(public_key_file, "48151")})

    rendered = (await run_stream_once_settled(store, requested))[1]

    assert rendered.type == "RunRendered"
    assert rendered.data["payload"]["timeout_s"] == "***"
    keyring = load_keyring(key_file)
    assert keyring is not None
    opened = open_rendered(rendered.data["sealed"], keyring)
    assert isinstance(opened.payload, dict) and opened.payload["timeout_s"] == 48151


async def test_the_masking_publisher_masks_a_secret_fed_byte_by_byte_between_two_streams_at_masked_offsets(
    settings: Settings, js: JetStreamContext
) -> None:
    run_id = str(uuid.uuid4())
    publisher = MaskingLogPublisher(
        js, settings.bus_prefix, run_id, asyncio.Semaphore(64), frozenset({PASSWORD})
    )
    for byte in f"out {PASSWORD} end\n".encode():
        await publisher.write("stdout", bytes([byte]))
        await publisher.write("stderr", b"e")
    await publisher.write("stderr", f" {PASSWORD[:5]}".encode())
    await publisher.write("stderr", f"{PASSWORD[5:]}\n".encode())
    size = await publisher.finish()

    chunks = await read_log(js, settings.bus_prefix, f"run-{run_id}")
    data = [chunk for chunk in chunks if not chunk[3]]
    offsets = [offset for offset, _, _, _ in data]
    assert offsets == sorted(offsets) and offsets[0] == 0
    assert all(a[0] + len(a[2]) == b[0] for a, b in itertools.pairwise(data))
    assert chunks[-1][3] and chunks[-1][0] == size
    stdout = b"".join(chunk for _, fd, chunk, _ in data if fd == "stdout")
    stderr = b"".join(chunk for _, fd, chunk, _ in data if fd == "stderr")
    assert stdout == b"out *** end\n"
    assert stderr == b"e" * len(f"out {PASSWORD} end\n") + b" ***\n"
    assert size == len(stdout) + len(stderr)
