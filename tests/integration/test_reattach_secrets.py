"""An adopted run whose payload holds secrets: the rest of its log is masked like the start was, and
resumes exactly where the dead dispatcher stopped although masking changed the byte counts. Real podman,
NATS and PostgreSQL."""

from __future__ import annotations

import signal
import uuid
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from contracts.envelope import EventMeta
from contracts.events.runs import RunRendered, RunRequested
from shared.eventstore.store import NO_STREAM, EventStore
from shared.secrets import load_public_key, seal_rendered
from shared.settings import Settings
from tests.docker_engine import DockerEngine
from tests.docker_engine import docker_engine as docker_engine
from tests.integration.api.secret_keys import key_file, public_key_file
from tests.integration.test_dispatcher import dispatcher, ended, has, read_log, wait_for
from tests.integration.test_dispatcher_crash import dispatcher_process, terminal_count
from tests.integration.test_reattach import contiguous_parts, some_output_published

__all__ = ["docker_engine", "key_file", "public_key_file"]

PASSWORD = "correct-horse-battery"
SCRIPT = (
    f"i=1; while [ $i -le 12 ]; do echo line $i {PASSWORD}; echo note $i {PASSWORD} >&2; "
    "i=$((i+1)); sleep 0.15; done"
)


async def test_an_adopted_container_s_log_stays_masked_and_continues_exactly(
    settings: Settings,
    store: EventStore,
    js: JetStreamContext,
    docker_engine: DockerEngine,
    key_file: Path,
    public_key_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BATCHYARD_DOCKER_URL", docker_engine.url)
    monkeypatch.setenv("BATCHYARD_SECRET_KEY_FILE", str(key_file))
    payload = {"image": docker_engine.image, "command": SCRIPT, "pull_policy": "never"}
    sealed = seal_rendered(payload, [PASSWORD], load_public_key(public_key_file))
    run_id = uuid.uuid4()
    stream = f"run-{run_id}"
    with dispatcher_process(settings) as process:
        await store.append(
            stream,
            [
                RunRequested(run_id=run_id, execution="x"),
                RunRendered(
                    run_id=run_id,
                    driver="docker",
                    payload={**payload, "command": "***"},
                    execution_version=1,
                    sealed=sealed,
                ),
            ],
            expected_version=NO_STREAM,
            meta=EventMeta(actor="alice", correlation_id="c"),
        )
        await wait_for(store, stream, has("RunStarted"), timeout_s=20)
        await some_output_published(js, settings.bus_prefix, stream)
        process.send_signal(signal.SIGKILL)
        process.wait()
    keyed = settings.model_copy(update={"docker_url": docker_engine.url, "secret_key_file": key_file})
    async with dispatcher(keyed):
        events = await wait_for(store, stream, ended, timeout_s=20)
    types = [e.type for e in events]
    assert types[-1] == "RunSucceeded" and "RunAdopted" in types and terminal_count(types) == 1
    parts = contiguous_parts(await read_log(js, settings.bus_prefix, stream))
    assert parts == {
        "stdout": b"".join(b"line %d ***\n" % i for i in range(1, 13)),
        "stderr": b"".join(b"note %d ***\n" % i for i in range(1, 13)),
    }
