"""The logarchiver service against real NATS, PostgreSQL and S3 (moto): chunks in, one archived log out."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from pydantic import SecretStr

from contracts.envelope import EventMeta, RecordedEvent
from contracts.events import RunRequested, RunStarted
from contracts.subjects import logs_stream_name, logs_subject
from services.logarchiver import archiver as archiver_module
from services.logarchiver.archiver import DURABLE
from services.logarchiver.recording import record_archived
from services.logarchiver.service import start
from shared.archive import ArchivedLog, FileArchive, open_archive
from shared.eventstore import NO_STREAM, EventStore
from shared.service import open_runtime
from shared.settings import Settings
from tests.integration.conftest import LogPublisher

META = EventMeta(actor="tester", correlation_id="corr-archiver")
DEADLINE_S = 30.0


@pytest.fixture
def base_settings(settings: Settings) -> Settings:
    return settings


async def requested_run(store: EventStore) -> str:
    """A run stream as the API and dispatcher leave it while the run prints."""
    run = uuid.uuid4()
    await store.append(
        f"run-{run}",
        [
            RunRequested(run_id=run, execution="hello"),
            RunStarted(run_id=run, dispatcher="d1", handle={"pid": 1}),
        ],
        expected_version=NO_STREAM,
        meta=META,
    )
    return str(run)


@contextlib.asynccontextmanager
async def running_archiver(settings: Settings) -> AsyncIterator[None]:
    async with open_runtime(settings, "logarchiver", relay=False) as runtime:
        shutdown = await start(runtime)
        try:
            yield
        finally:
            await shutdown()


async def archived_events(store: EventStore, run_id: str) -> list[RecordedEvent]:
    return [event for event in await store.read_stream(f"run-{run_id}") if event.type == "RunLogArchived"]


async def wait_archived(store: EventStore, *run_ids: str) -> None:
    deadline = asyncio.get_running_loop().time() + DEADLINE_S
    for run_id in run_ids:
        while not await archived_events(store, run_id):
            assert asyncio.get_running_loop().time() < deadline, f"run {run_id} was not archived in time"
            await asyncio.sleep(0.05)


async def wait_consumer_idle(js: JetStreamContext, settings: Settings) -> None:
    """Until every log message was delivered and acknowledged: nothing more can happen after this."""
    deadline = asyncio.get_running_loop().time() + DEADLINE_S
    while True:
        info = await js.consumer_info(logs_stream_name(settings.bus_prefix), DURABLE)
        if info.num_pending == 0 and info.num_ack_pending == 0:
            return
        assert asyncio.get_running_loop().time() < deadline, "the archiver did not finish in time"
        await asyncio.sleep(0.05)


def expect_archived(event: RecordedEvent, data: bytes) -> None:
    assert event.data["bytes"] == len(data)
    assert event.data["sha256"] == hashlib.sha256(data).hexdigest()
    assert event.actor == "logarchiver" and event.correlation_id == META.correlation_id


async def test_chunks_delivered_twice_and_out_of_order_are_archived_once_with_size_and_sha256(
    archive_settings: Settings,
    store: EventStore,
    js: JetStreamContext,
    log_publisher: LogPublisher,
    caplog: pytest.LogCaptureFixture,
) -> None:
    run = await requested_run(store)
    chunks = [b"line one\n", b"line two\n", b"line three\n", b"last line\n"]
    offsets = [0, 9, 18, 29]
    for index in (0, 2, 1, 1, 3, 0):
        await log_publisher.chunk(run, offsets[index], chunks[index], deduplicated=False)
    await log_publisher.end(run, 39, deduplicated=False)
    await log_publisher.end(run, 39, deduplicated=False)
    data = b"".join(chunks)

    async with running_archiver(archive_settings):
        await wait_archived(store, run)
        await wait_consumer_idle(js, archive_settings)

    [event] = await archived_events(store, run)
    expect_archived(event, data)
    async with await open_archive(archive_settings) as archive:
        assert await archive.read(run, 0, 1000) == data
        sealed = await archive.archived(run)
        assert sealed is not None and event.data["location"] == sealed.location
    assert "test-secret" not in caplog.text


async def test_chunks_are_written_as_they_arrive_and_sealed_at_the_end_marker(
    archive_settings: Settings, store: EventStore, log_publisher: LogPublisher
) -> None:
    run = await requested_run(store)
    async with running_archiver(archive_settings), await open_archive(archive_settings) as archive:
        await log_publisher.chunk(run, 0, b"started\n")
        if archive_settings.archive_kind == "file":
            deadline = asyncio.get_running_loop().time() + DEADLINE_S
            while await archive.written(run) < 8:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.05)
        await log_publisher.chunk(run, 8, b"done\n")
        assert not await archived_events(store, run)
        await log_publisher.end(run, 13)
        await wait_archived(store, run)
        assert await archive.read(run, 0, 100) == b"started\ndone\n"


async def test_an_empty_log_is_archived_too(
    archive_settings: Settings, store: EventStore, log_publisher: LogPublisher
) -> None:
    run = await requested_run(store)
    await log_publisher.end(run, 0)
    async with running_archiver(archive_settings):
        await wait_archived(store, run)
    [event] = await archived_events(store, run)
    expect_archived(event, b"")


async def test_a_restarted_archiver_neither_loses_chunks_nor_records_a_log_twice(
    archive_settings: Settings, store: EventStore, js: JetStreamContext, log_publisher: LogPublisher
) -> None:
    run = await requested_run(store)
    first_half, second_half = os.urandom(30_000), os.urandom(30_000)
    await log_publisher.log(run, first_half, 1000, end=False)
    async with running_archiver(archive_settings):
        await wait_consumer_idle(js, archive_settings)

    for offset in range(0, len(second_half), 1000):
        await log_publisher.chunk(run, 30_000 + offset, second_half[offset : offset + 1000])
    await log_publisher.end(run, 60_000)
    async with running_archiver(archive_settings):
        await wait_archived(store, run)
        await wait_consumer_idle(js, archive_settings)

    await log_publisher.chunk(run, 0, first_half[:1000], deduplicated=False)
    await log_publisher.end(run, 60_000, deduplicated=False)
    async with running_archiver(archive_settings):
        await wait_consumer_idle(js, archive_settings)

    [event] = await archived_events(store, run)
    expect_archived(event, first_half + second_half)


async def test_chunks_acknowledged_but_lost_from_staging_are_refetched_from_the_live_stream(
    archive_settings: Settings, store: EventStore, js: JetStreamContext, log_publisher: LogPublisher
) -> None:
    """A replica that lost its local partial log (another disk, a wiped volume) still archives it all."""
    run = await requested_run(store)
    data = os.urandom(50_000)
    await log_publisher.log(run, data[:20_000], 1000, end=False)
    async with running_archiver(archive_settings):
        await wait_consumer_idle(js, archive_settings)
    async with await open_archive(archive_settings) as archive:
        await archive.delete(run)

    for offset in range(20_000, len(data), 1000):
        await log_publisher.chunk(run, offset, data[offset : offset + 1000])
    await log_publisher.end(run, len(data))
    async with running_archiver(archive_settings):
        await wait_archived(store, run)

    [event] = await archived_events(store, run)
    expect_archived(event, data)


async def test_a_standby_replica_takes_over_and_every_log_is_archived_exactly_once(
    archive_settings: Settings, store: EventStore, js: JetStreamContext, log_publisher: LogPublisher
) -> None:
    """The standby has its own disk: for S3 it has none of the first half staged and must refetch it."""
    runs = [await requested_run(store) for _ in range(3)]
    logs = {run: os.urandom(20_000 + index * 3_000) for index, run in enumerate(runs)}
    standby = archive_settings.model_copy(
        update={"data_dir": archive_settings.data_dir.parent / "replica-2", "instance": "replica-2"}
    )
    if archive_settings.archive_kind == "file":
        standby = standby.model_copy(update={"archive_dir": archive_settings.archive_path})

    async def publish(start: int, stop: int) -> None:
        for offset in range(start, stop, 500):
            for run in runs:
                if offset < len(logs[run]):
                    await log_publisher.chunk(run, offset, logs[run][offset : offset + 500])

    async with contextlib.AsyncExitStack() as active:
        await active.enter_async_context(running_archiver(archive_settings))
        await publish(0, 10_000)
        await wait_consumer_idle(js, archive_settings)
        async with running_archiver(standby):
            await active.aclose()
            await publish(10_000, 30_000)
            for run in runs:
                await log_publisher.end(run, len(logs[run]))
            await wait_archived(store, *runs)
            await wait_consumer_idle(js, archive_settings)

    async with await open_archive(standby) as archive:
        for run in runs:
            [event] = await archived_events(store, run)
            expect_archived(event, logs[run])
            assert await archive.read(run, 0, 100_000) == logs[run]


async def test_concurrent_recordings_of_one_archived_log_append_exactly_one_event(store: EventStore) -> None:
    run = await requested_run(store)
    sealed = ArchivedLog(run, 3, hashlib.sha256(b"abc").hexdigest(), f"file:///archive/{run}/log")
    appended = await asyncio.gather(*(record_archived(store, sealed) for _ in range(10)))
    assert appended.count(True) == 1
    assert len(await archived_events(store, run)) == 1


@pytest.mark.parametrize("archive_kind", ["file"])
async def test_retention_prunes_archives_older_than_the_setting_when_the_service_runs(
    archive_settings: Settings, store: EventStore
) -> None:
    old, recent = str(uuid.uuid4()), str(uuid.uuid4())
    async with await open_archive(archive_settings) as archive:
        for run in (old, recent):
            await archive.append(run, 0, b"log")
            await archive.finalize(run, 3)
    meta_path = archive_settings.archive_path / old / "log.json"
    meta = json.loads(meta_path.read_text())
    meta["archived_at"] = (datetime.now(UTC) - timedelta(days=30)).isoformat()
    meta_path.write_text(json.dumps(meta))

    async with running_archiver(archive_settings.model_copy(update={"archive_retention_days": 7})):
        deadline = asyncio.get_running_loop().time() + DEADLINE_S
        while (archive_settings.archive_path / old).exists():
            assert asyncio.get_running_loop().time() < deadline, "the old archive was not pruned"
            await asyncio.sleep(0.05)
    assert await FileArchive(archive_settings.archive_path).exists(recent)


def service_environment(settings: Settings) -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("BATCHYARD_")}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        environment[f"BATCHYARD_{name.upper()}"] = str(value)
    return environment


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    kilobytes = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    return kilobytes / 1024


@pytest.mark.slow
async def test_a_100_mb_log_is_archived_by_the_service_process_with_bounded_memory(
    archive_settings: Settings, store: EventStore, js: JetStreamContext, log_publisher: LogPublisher
) -> None:
    run = await requested_run(store)
    chunk_size, chunks = 64 * 1024, 1600
    sha = hashlib.sha256()
    output = archive_settings.data_dir.parent / "logarchiver.out"
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.logarchiver.main",
            env=service_environment(archive_settings),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        await wait_consumer_exists(js, archive_settings)
        started_mb = peak_rss_mb(process.pid)
        block = os.urandom(chunk_size)
        pending = []
        for index in range(chunks):
            data = index.to_bytes(4, "big") + block[4:]
            sha.update(data)
            pending.append(await log_publisher.chunk_async(run, index * chunk_size, data))
            if len(pending) >= 128:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        await log_publisher.end(run, chunk_size * chunks)
        await wait_archived(store, run)
        peak_mb = peak_rss_mb(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 20)

    [event] = await archived_events(store, run)
    assert event.data["bytes"] == chunk_size * chunks == 104_857_600
    assert event.data["sha256"] == sha.hexdigest()
    kind = archive_settings.archive_kind
    print(f"logarchiver ({kind}) peak RSS {peak_mb:.0f} MB, {started_mb:.0f} MB at start")
    assert peak_mb - started_mb < 60, f"memory grew by {peak_mb - started_mb:.0f} MB for a 100 MB log"
    assert peak_mb < 200
    assert "test-secret" not in output.read_text()


async def wait_consumer_exists(js: JetStreamContext, settings: Settings) -> None:
    deadline = asyncio.get_running_loop().time() + DEADLINE_S
    while True:
        with contextlib.suppress(NotFoundError):
            await js.consumer_info(logs_stream_name(settings.bus_prefix), DURABLE)
            return
        assert asyncio.get_running_loop().time() < deadline, "the service did not start in time"
        await asyncio.sleep(0.1)


async def test_a_log_whose_beginning_left_the_stream_unarchived_is_given_up_loudly_without_blocking_others(
    archive_settings: Settings,
    store: EventStore,
    js: JetStreamContext,
    log_publisher: LogPublisher,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(archiver_module, "LOST_BYTES_DELIVERIES", 2)
    lost, healthy = await requested_run(store), await requested_run(store)
    await log_publisher.log(lost, b"x" * 5000, 1000)
    await js.purge_stream(
        logs_stream_name(archive_settings.bus_prefix),
        subject=logs_subject(archive_settings.bus_prefix, lost),
        keep=3,
    )
    await log_publisher.log(healthy, b"fine\n", 5)

    async with running_archiver(archive_settings):
        await wait_archived(store, healthy)
        await wait_consumer_idle(js, archive_settings)

    assert await archived_events(store, lost) == []
    assert f"log of run {lost} cannot be archived" in caplog.text
