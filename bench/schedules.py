"""How late scheduled runs are: 1,000 jobs on an every-minute (or, `--period 5`, a 5-second) schedule,
delay from each tick's scheduled time to its `RunRequested` (negative when it was staged ahead, decision
0175) and to its `RunStarted`.

Run by hand (`make bench`, or `python -m bench.schedules`); not a test. It starts its own embedded NATS
and PostgreSQL in a temporary folder and the renderer and dispatcher as processes (as `batchyard up`
does); every job runs `true`. Figures and their reading: docs/decisions/0164-schedule-latency.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

from contracts import streams
from contracts.envelope import EventMeta, RecordedEvent
from contracts.events import ExecutionDefined, JobCreated
from contracts.specs import ExecutionSpec, JobSpec
from shared.bus.streams import connect, ensure_streams
from shared.embedded import ensure_database, start_nats, start_postgres
from shared.eventstore import NO_STREAM, EventStore
from shared.eventstore.store import create_pool, migrate

META = EventMeta(actor="bench", correlation_id="bench")
PREFIX = "bench"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


async def define(store: EventStore, jobs: int, cron: str) -> None:
    execution = ExecutionSpec(driver="local", payload_template="{command: ['true']}")
    await store.append(
        streams.stream_id(streams.EXECUTION, "bench"),
        [ExecutionDefined(name="bench", spec=execution)],
        expected_version=NO_STREAM,
        meta=META,
    )
    spec = JobSpec.model_validate({"name": "bench", "execution": "bench", "schedule": {"cron": cron}})

    async def create() -> None:
        job_id = uuid.uuid4()
        stream = streams.stream_id(streams.JOB, job_id)
        await store.append(
            stream, [JobCreated(job_id=job_id, spec=spec)], expected_version=NO_STREAM, meta=META
        )

    await asyncio.gather(*(create() for _ in range(jobs)))


def service(name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", f"services.{name}.main"], env=env)


def cron_every(period_s: int) -> str:
    if period_s >= 60:
        return "0 * * * * *"
    return f"*/{period_s} * * * * *"


async def measure(
    dsn: str, nats_url: str, data_dir: Path, jobs: int, rounds: int, period_s: int, lead_s: float | None
) -> None:
    client = await connect(nats_url, "bench")
    await ensure_streams(client.jetstream(), PREFIX)
    await client.close()
    pool = await create_pool(dsn, size=10)
    await migrate(pool)
    store = EventStore(pool)
    env = os.environ | {
        "BATCHYARD_PG_DSN": dsn,
        "BATCHYARD_NATS_URL": nats_url,
        "BATCHYARD_BUS_PREFIX": PREFIX,
        "BATCHYARD_DATA_DIR": str(data_dir),
        "BATCHYARD_LOG_LEVEL": "WARNING",
        "BATCHYARD_PG_POOL_SIZE": "20",
    }
    if lead_s is not None:
        env["BATCHYARD_DISPATCHER_SCHEDULE_LEAD_S"] = str(lead_s)
    processes = [service("renderer", env | {"BATCHYARD_INSTANCE": "renderer"})]
    processes.append(service("dispatcher", env | {"BATCHYARD_INSTANCE": "dispatcher"}))
    try:
        await define(store, jobs, cron_every(period_s))
        # The first round may meet services still starting; measure the rounds after it.
        first = time.time() + period_s
        begin = datetime.fromtimestamp((int(first) // period_s + 1) * period_s).astimezone()
        end = begin + timedelta(seconds=rounds * period_s)
        await asyncio.sleep(max(end.timestamp() - time.time(), 0))
        events = await settled(store, begin, end)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=60)
        await store.close()
        await pool.close()
    report(events, begin, end, jobs, period_s)


async def settled(store: EventStore, begin: datetime, end: datetime) -> list[RecordedEvent]:
    """The events once every run of a measured tick started (or after a minute), so slow starts count."""
    deadline = time.monotonic() + 60
    while True:
        events = [e async for e in store.iterate_all()]
        measured = {e.stream_id for e in events if e.type == "RunRequested" and _tick_in(e, begin, end)}
        started = {e.stream_id for e in events if e.type == "RunStarted"} & measured
        if len(started) == len(measured) or time.monotonic() > deadline:
            return events
        await asyncio.sleep(0.5)


def _tick_in(event: RecordedEvent, begin: datetime, end: datetime) -> bool:
    tick = event.data.get("scheduled_at")
    return tick is not None and begin <= datetime.fromisoformat(str(tick)) < end


def report(events: list[RecordedEvent], begin: datetime, end: datetime, jobs: int, period_s: int) -> None:
    scheduled: dict[str, datetime] = {}
    to_requested: list[float] = []
    to_started: list[float] = []
    to_rendered: list[float] = []
    requested_at: dict[str, datetime] = {}
    skipped = 0
    for event in events:
        if event.type == "RunSkipped":
            skipped += 1
        if event.type == "RunRequested" and _tick_in(event, begin, end):
            tick = datetime.fromisoformat(str(event.data["scheduled_at"]))
            scheduled[event.stream_id] = tick
            requested_at[event.stream_id] = event.time
            to_requested.append((event.time - tick).total_seconds())
        elif event.type == "RunRendered" and event.stream_id in scheduled:
            to_rendered.append((event.time - requested_at[event.stream_id]).total_seconds())
        elif event.type == "RunStarted" and event.stream_id in scheduled:
            to_started.append((event.time - scheduled[event.stream_id]).total_seconds())
    print(
        f"scheduled runs: {jobs} jobs every {period_s} s, {len(to_requested)} ticks measured "
        f"(of {jobs * round((end - begin).total_seconds() / period_s)}), {len(to_started)} started, "
        f"{skipped} skipped"
    )
    figures = (
        ("scheduled time -> RunRequested", to_requested),
        ("RunRequested -> RunRendered", to_rendered),
        ("scheduled time -> RunStarted", to_started),
    )
    for label, values in figures:
        if values:
            print(
                f"delay {label:<32}: p50 {percentile(values, 0.5) * 1000:7.1f} ms, "
                f"p99 {percentile(values, 0.99) * 1000:7.1f} ms, max {max(values) * 1000:7.1f} ms"
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--period",
        type=int,
        default=60,
        choices=(1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60),
        help="seconds between ticks",
    )
    parser.add_argument(
        "--lead", type=float, default=None, help="BATCHYARD_DISPATCHER_SCHEDULE_LEAD_S (default: its default)"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="batchyard-bench-") as folder:
        nats = start_nats(Path(folder) / "nats")
        try:
            postgres = start_postgres(Path(folder) / "pg")
            ensure_database(postgres.dsn(), "bench")
            dsn = postgres.dsn("bench")
            asyncio.run(
                measure(dsn, nats.url, Path(folder) / "data", args.jobs, args.rounds, args.period, args.lead)
            )
        finally:
            nats.process.terminate()


if __name__ == "__main__":
    main()
