"""A dispatcher that dies or restarts in the middle of a run: the run still ends exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from contracts.envelope import EventMeta
from contracts.events.runs import RunLost, RunStarted
from services.dispatcher.config import DispatcherSettings
from services.dispatcher.service import DispatcherService
from shared.domain.run_lifecycle import TERMINAL_EVENT_TYPES
from shared.eventstore.store import EventStore
from shared.service import open_runtime
from shared.settings import Settings
from tests.integration.test_dispatcher import FAST, dispatcher, ended, has, render, wait_for

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def dispatcher_process(
    settings: Settings, lease_ttl_s: float = 60, instance: str = "crashy"
) -> Iterator[subprocess.Popen[bytes]]:
    """The dispatcher as the supervisor runs it: its own process, configured by environment."""
    env = {
        **os.environ,
        "BATCHYARD_PG_DSN": settings.pg_dsn,
        "BATCHYARD_NATS_URL": settings.nats_url,
        "BATCHYARD_BUS_PREFIX": settings.bus_prefix,
        "BATCHYARD_DATA_DIR": str(settings.data_dir),
        "BATCHYARD_INSTANCE": instance,
        "BATCHYARD_DISPATCHER_LEASE_TTL_S": str(lease_ttl_s),
    }
    process = subprocess.Popen([sys.executable, "-m", "services.dispatcher.main"], env=env, cwd=ROOT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def launched(pid: int, program: bytes) -> None:
    """Wait until the gate has exec'd the command: `RunStarted` is committed just before the launch."""
    deadline = time.monotonic() + 5
    while not command_line(pid).startswith(program):
        assert time.monotonic() < deadline, f"process {pid} never became {program!r}"
        await asyncio.sleep(0.01)


def command_line(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return b""


def terminal_count(types: list[str]) -> int:
    return sum(t in TERMINAL_EVENT_TYPES for t in types)


async def test_a_killed_dispatcher_s_run_ends_as_lost_once_another_dispatcher_starts(
    settings: Settings, store: EventStore
) -> None:
    with dispatcher_process(settings) as process:
        stream = await render(store, {"command": ["sleep", "30"]})
        events = await wait_for(store, stream, has("RunStarted"), timeout_s=20)
        pid = events[-1].data["handle"]["pid"]
        await launched(pid, b"sleep")
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert alive(pid), "a local run outlives a SIGKILLed dispatcher until someone ends it"
    async with dispatcher(settings):
        events = await wait_for(store, stream, ended)
    assert events[-1].type == "RunLost" and "crashy" in events[-1].data["reason"]
    assert terminal_count([e.type for e in events]) == 1
    await asyncio.sleep(0.1)
    assert not alive(pid), "the orphaned process of a lost run is killed on its host"


async def test_a_dispatcher_restarted_with_sigterm_stops_its_run_and_records_why(
    settings: Settings, store: EventStore
) -> None:
    with dispatcher_process(settings) as process:
        stream = await render(store, {"command": ["sleep", "30"]})
        events = await wait_for(store, stream, has("RunStarted"), timeout_s=20)
        process.send_signal(signal.SIGTERM)
        events = await wait_for(store, stream, ended)
    assert events[-1].type == "RunStopped" and events[-1].data["reason"] == "dispatcher shutting down"
    assert events[-1].data["stopped_by"].startswith("crashy:")
    async with dispatcher(settings):
        again = await render(store, {"command": ["true"]})
        await wait_for(store, again, ended)
    assert terminal_count([e.type for e in await store.read_stream(stream)]) == 1


async def test_runs_of_a_dispatcher_whose_lease_lapsed_end_as_lost_exactly_once(
    settings: Settings, store: EventStore
) -> None:
    """Two dispatchers in one process: the silent one's pid is alive, so only its lease expiry tells."""
    async with open_runtime(settings, "dispatcher") as runtime:
        silent = DispatcherService(runtime, DispatcherSettings(lease_ttl_s=1.0))
        await silent.start()
        stream = await render(store, {"command": ["sleep", "30"]})
        events = await wait_for(store, stream, has("RunStarted"))
        assert events[-1].data["dispatcher"] == silent.identity
        assert silent._heartbeat is not None
        silent._heartbeat.cancel()
        await silent.intake.drain()
        began = time.monotonic()
        async with dispatcher(settings, FAST):
            events = await wait_for(store, stream, ended)
            assert time.monotonic() - began >= 0.5
            await asyncio.sleep(0.5)
        assert not silent.dispatcher.active, "the silent dispatcher saw its process killed and let go"
    events = await store.read_stream(stream)
    assert events[-1].type == "RunLost" and silent.identity in events[-1].data["reason"]
    assert terminal_count([e.type for e in events]) == 1


async def test_a_run_recorded_as_ours_that_we_do_not_hold_ends_as_lost(
    settings: Settings, store: EventStore
) -> None:
    """A `RunStarted` whose commit was reported as failed although it went through: no process runs it."""
    async with dispatcher(settings) as service:
        await service.intake.drain()
        stream = await render(store, {"command": ["true"]})
        run_id = uuid.UUID(stream.partition("-")[2])
        started = RunStarted(run_id=run_id, dispatcher=service.identity, handle={"pid": 0})
        await store.append(
            stream, [started], expected_version=2, meta=EventMeta(actor="x", correlation_id="c")
        )
        events = await wait_for(store, stream, ended)
    assert events[-1].type == "RunLost" and "never confirmed" in events[-1].data["reason"]


async def test_a_dispatcher_that_finds_its_lease_swept_stops_runs_recorded_as_lost(
    settings: Settings, store: EventStore
) -> None:
    """A paused dispatcher whose runs another one declared lost must not keep them running."""
    async with dispatcher(settings) as service:
        stream = await render(store, {"command": ["sleep", "30"]})
        events = await wait_for(store, stream, has("RunStarted"))
        pid = events[-1].data["handle"]["pid"]
        async with service.runtime.pool.acquire() as conn:
            await conn.execute("DELETE FROM dispatcher_leases WHERE dispatcher = $1", service.identity)
        lost = RunLost(run_id=uuid.UUID(stream.partition("-")[2]), reason="swept by another dispatcher")
        await store.append(
            stream, [lost], expected_version=3, meta=EventMeta(actor="other", correlation_id="c")
        )
        deadline = time.monotonic() + 5
        while alive(pid) or service.dispatcher.active:
            assert time.monotonic() < deadline, "the run recorded as lost is still running"
            await asyncio.sleep(0.05)
    events = await store.read_stream(stream)
    assert [e.type for e in events][-1] == "RunLost" and terminal_count([e.type for e in events]) == 1
