"""How many events per second the store appends, and how fast a command reaches its read model.

Run by hand (`make bench`, or `python -m bench.events`); not a test. It starts its own embedded NATS and
PostgreSQL in a temporary folder, so the figures do not depend on servers running elsewhere, and prints
one line per scenario. Figures and their reading: docs/decisions/0030-event-store-throughput.md.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from contracts.envelope import EventMeta
from contracts.events import JobPaused
from shared.embedded import EmbeddedNats, EmbeddedPostgres, ensure_database, start_nats, start_postgres
from shared.eventstore import NO_STREAM, EventStore
from shared.eventstore.store import create_pool, migrate

META = EventMeta(actor="bench", correlation_id="bench")
WRITERS = 8


@dataclass(frozen=True)
class Result:
    scenario: str
    events: int
    seconds: float

    def line(self) -> str:
        rate = self.events / self.seconds
        return f"{self.scenario:<58} {self.events:>7} events {self.seconds:>7.2f} s {rate:>9,.0f} events/s"


async def append_one_by_one(store: EventStore, appends: int, batch: int = 1) -> int:
    """One writer on its own stream, awaiting each append before the next, `batch` events per append."""
    job = uuid.uuid4()
    stream = f"job-{job}"
    version = NO_STREAM
    for _ in range(appends):
        events = [JobPaused(job_id=job) for _ in range(batch)]
        await store.append(stream, events, expected_version=version, meta=META)
        version += batch
    return appends * batch


async def timed(scenario: str, work: Callable[[], Awaitable[int]]) -> Result:
    started = time.perf_counter()
    events = await work()
    return Result(scenario, events, time.perf_counter() - started)


async def in_process_scenarios(dsn: str, appends: int) -> list[Result]:
    pool = await create_pool(dsn, size=WRITERS + 2)
    await migrate(pool)
    store = EventStore(pool)
    try:
        await append_one_by_one(store, 50)
        results = [
            await timed("(a) 1 writer, 1 event per append", lambda: append_one_by_one(store, appends)),
        ]

        async def concurrent(batch: int, per_writer: int) -> int:
            counts = await asyncio.gather(
                *(append_one_by_one(store, per_writer, batch) for _ in range(WRITERS))
            )
            return sum(counts)

        results.append(
            await timed(f"(b) {WRITERS} writer tasks, 1 event per append", lambda: concurrent(1, appends))
        )
        results.append(
            await timed(
                "(d) 1 writer, 100 events per append", lambda: append_one_by_one(store, appends // 10, 100)
            )
        )
        results.append(
            await timed(
                f"(d) {WRITERS} writer tasks, 100 events per append", lambda: concurrent(100, appends // 20)
            )
        )
        return results
    finally:
        await store.close()
        await pool.close()


def _writer_process(dsn: str, appends: int, start: multiprocessing.synchronize.Event) -> None:
    async def write() -> None:
        pool = await create_pool(dsn, size=2)
        store = EventStore(pool)
        await append_one_by_one(store, 10)
        start.wait()
        await append_one_by_one(store, appends)
        await store.close()
        await pool.close()

    asyncio.run(write())


def process_scenario(dsn: str, appends: int) -> Result:
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    processes = [context.Process(target=_writer_process, args=(dsn, appends, start)) for _ in range(WRITERS)]
    for process in processes:
        process.start()
    time.sleep(2.0)
    started = time.perf_counter()
    start.set()
    for process in processes:
        process.join()
    return Result(
        f"(c) {WRITERS} writer processes, 1 event per append",
        WRITERS * appends,
        time.perf_counter() - started,
    )


async def command_to_read_model_latency(nats: EmbeddedNats, dsn: str, commands: int = 400) -> None:
    """Issue 2's second figure: from an API command until its read model shows it, p50 and p99.

    Commands answer only once the read models include their events (read-your-writes, decision 0010), so
    the time from sending `POST /jobs/{id}/pause|resume` to its answer is that latency; a GET right after
    each answer checks that the read model really moved.
    """
    from aiohttp import ClientSession, web

    from services.api.app import create_app
    from shared.embedded import free_port
    from shared.settings import Settings

    port = free_port()
    settings = Settings(pg_dsn=dsn, nats_url=nats.url, bus_prefix="bench", api_port=port, instance="bench")
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base = f"http://127.0.0.1:{port}"
    template = "{command: ['true']}"
    try:
        async with ClientSession(base) as http:
            execution = {"driver": "local", "payload_template": template}
            defined = await http.put("/executions/bench", json=execution)
            if defined.status >= 400:
                raise RuntimeError(f"defining the execution failed: {await defined.text()}")
            created = await http.post("/jobs", json={"name": "bench", "execution": "bench"})
            job_id = (await created.json())["id"]
            latencies: list[float] = []
            for i in range(commands):
                action = "pause" if i % 2 == 0 else "resume"
                began = time.perf_counter()
                answer = await http.post(f"/jobs/{job_id}/{action}")
                latencies.append(time.perf_counter() - began)
                answer.raise_for_status()
                job = await (await http.get(f"/jobs/{job_id}")).json()
                if job["enabled"] != (action == "resume"):
                    raise RuntimeError(f"read model did not show {action} after the command answered")
    finally:
        await runner.cleanup()
    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1000
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
    print(f"API command to read model updated ({commands} commands): p50 {p50:.1f} ms, p99 {p99:.1f} ms")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--appends", type=int, default=2000, help="appends per writer and scenario")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="batchyard-bench-") as folder:
        nats = start_nats(Path(folder) / "nats")
        postgres: EmbeddedPostgres | None = None
        try:
            postgres = start_postgres(Path(folder) / "pg")
            ensure_database(postgres.dsn(), "bench")
            dsn = postgres.dsn("bench")
            results = asyncio.run(in_process_scenarios(dsn, args.appends))
            results.insert(2, process_scenario(dsn, args.appends))
            for result in results:
                print(result.line(), flush=True)
            ensure_database(postgres.dsn(), "bench_api")
            asyncio.run(command_to_read_model_latency(nats, postgres.dsn("bench_api")))
        finally:
            if postgres is not None:
                postgres.stop()
            nats.stop()


if __name__ == "__main__":
    main()
