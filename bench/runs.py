"""Issue 3's figures: run latency, sustained runs per second, log throughput and service memory.

Run by hand (`make bench`); not a test. It starts embedded NATS and PostgreSQL in a temporary folder and
the four services as separate processes (as `batchyard up` does), then drives the HTTP API as a user:
(a) latency from `POST /jobs/{id}/runs` to `RunStarted` and to the terminal event for `true`;
(b) runs per second over many runs of `true`, beside a plain asyncio script spawning `true` in the same
    benchmark run (same concurrency), and their ratio;
(c) MB/s for a run printing 1 GiB (`--log-mib`), and every service's peak memory (VmHWM).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import asyncpg
from aiohttp import ClientSession

from shared.embedded import ensure_database, free_port, start_nats, start_postgres

SERVICES = ("api", "renderer", "dispatcher", "logarchiver")
HOPS = ("RunRequested", "RunRendered", "RunStarted")
TERMINAL = ("RunSucceeded", "RunFailed", "RunTimedOut", "RunStopped", "RunLost", "RunRejected")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(p * len(ordered)) - 1))]


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (from /proc, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU time all cores spent outside idle and iowait since boot (first line of /proc/stat)."""
    ticks = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def peak_memory_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class System:
    """The four services as processes against embedded servers, the way `batchyard up` runs them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.nats = start_nats(folder / "nats")
        self.postgres = start_postgres(folder / "pg")
        ensure_database(self.postgres.dsn(), "batchyard")
        self.dsn = self.postgres.dsn("batchyard")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "BATCHYARD_PG_DSN": self.dsn,
            "BATCHYARD_NATS_URL": self.nats.url,
            "BATCHYARD_API_PORT": str(self.port),
            "BATCHYARD_DATA_DIR": str(folder / "data"),
            "BATCHYARD_LOG_LEVEL": "WARNING",
        }
        self.processes = {
            name: subprocess.Popen(
                [sys.executable, "-m", f"services.{name}.main"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=(folder / f"{name}.log").open("wb"),
            )
            for name in SERVICES
        }

    async def ready(self, http: ClientSession) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                async with http.get("/readyz") as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            await asyncio.sleep(0.2)
        raise RuntimeError(f"the API did not become ready; see {self.folder}/api.log")

    def cpu(self) -> dict[str, float]:
        used = {name: cpu_seconds(p.pid) for name, p in self.processes.items()}
        return {**used, "nats": cpu_seconds(self.nats.process.pid), "machine": machine_busy_seconds()}

    def peaks(self) -> str:
        return ", ".join(f"{name} {peak_memory_mib(p.pid):.0f} MiB" for name, p in self.processes.items())

    def stop(self) -> None:
        for process in self.processes.values():
            process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        self.postgres.stop()
        self.nats.stop()


async def define_job(http: ClientSession, name: str, command: str) -> str:
    template = "{command: params.command}"
    execution = {"driver": "local", "payload_template": template, "default_params": {"command": command}}
    async with http.put(f"/executions/{name}", json=execution) as answer:
        answer.raise_for_status()
    job = {"name": name, "execution": name, "overlap": {"policy": "allow"}}
    async with http.post("/jobs", json=job) as answer:
        answer.raise_for_status()
        return str((await answer.json())["id"])


async def request_run(http: ClientSession, job_id: str) -> tuple[str, datetime]:
    sent = datetime.now().astimezone()
    async with http.post(f"/jobs/{job_id}/runs") as answer:
        answer.raise_for_status()
        return str((await answer.json())["id"]), sent


async def wait_ended(
    db: asyncpg.Connection, run_ids: list[str], deadline_s: float
) -> dict[str, dict[str, datetime]]:
    """Times of RunStarted and the terminal event per run, read from the store once every run ended."""
    streams = [f"run-{run_id}" for run_id in run_ids]
    deadline = time.monotonic() + deadline_s
    while True:
        ended = await db.fetchval(
            "SELECT count(*) FROM events WHERE stream_id = ANY($1::text[]) AND type = ANY($2::text[])",
            streams,
            list(TERMINAL),
        )
        if ended >= len(streams):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {ended} of {len(streams)} runs ended in time")
        await asyncio.sleep(0.05)
    rows = await db.fetch(
        "SELECT stream_id, type, recorded_at FROM events WHERE stream_id = ANY($1::text[])", streams
    )
    times: dict[str, dict[str, datetime]] = {}
    for row in rows:
        kind = "end" if row["type"] in TERMINAL else row["type"]
        times.setdefault(row["stream_id"][4:], {})[kind] = row["recorded_at"]
    return times


async def spawn_rate(runs: int, concurrency: int) -> float:
    """The yardstick: a plain asyncio script spawning `true`, `concurrency` at a time."""
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            process = await asyncio.create_subprocess_exec("true")
            await process.wait()

    began = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(runs)))
    return runs / (time.perf_counter() - began)


async def measure(
    system: System, latency_runs: int, sustained_runs: int, concurrency: int, log_mib: int
) -> None:
    db = await asyncpg.connect(system.dsn)
    async with ClientSession(system.url) as http:
        await system.ready(http)
        true_job = await define_job(http, "bench-true", "true")
        await wait_ended(db, [(await request_run(http, true_job))[0]], 30)

        started: list[float] = []
        ended: list[float] = []
        hops: dict[str, list[float]] = {hop: [] for hop in HOPS}
        for _ in range(latency_runs):
            run_id, sent = await request_run(http, true_job)
            times = (await wait_ended(db, [run_id], 30))[run_id]
            started.append((times["RunStarted"] - sent).total_seconds() * 1000)
            ended.append((times["end"] - sent).total_seconds() * 1000)
            previous = sent
            for hop in HOPS:
                hops[hop].append((times[hop] - previous).total_seconds() * 1000)
                previous = times[hop]
        print(
            f"(a) POST /jobs/{{id}}/runs -> RunStarted: p50 {percentile(started, 0.5):.1f} ms, "
            f"p99 {percentile(started, 0.99):.1f} ms; -> terminal: p50 {percentile(ended, 0.5):.1f} ms, "
            f"p99 {percentile(ended, 0.99):.1f} ms ({latency_runs} runs, one at a time)",
            flush=True,
        )
        print(
            "    p50 of each step: "
            + ", ".join(f"-> {hop} {percentile(values, 0.5):.1f} ms" for hop, values in hops.items()),
            flush=True,
        )

        gate = asyncio.Semaphore(concurrency)

        async def submit() -> str:
            async with gate:
                return (await request_run(http, true_job))[0]

        cpu_before = system.cpu()
        began = time.perf_counter()
        run_ids = await asyncio.gather(*(submit() for _ in range(sustained_runs)))
        await wait_ended(db, run_ids, 600)
        elapsed = time.perf_counter() - began
        batchyard_rate = sustained_runs / elapsed
        cpu_used = {name: seconds - cpu_before[name] for name, seconds in system.cpu().items()}
        plain_rate = await spawn_rate(sustained_runs, concurrency)
        print(
            f"(b) {sustained_runs} runs of true, {concurrency} in flight: {batchyard_rate:.0f} runs/s; "
            f"plain asyncio spawning true: {plain_rate:.0f}/s; ratio {batchyard_rate / plain_rate:.2f}",
            flush=True,
        )
        print(
            f"    CPU seconds per 1,000 runs over {elapsed:.1f} s: "
            + ", ".join(f"{name} {1000 * used / sustained_runs:.1f}" for name, used in cpu_used.items()),
            flush=True,
        )

        log_job = await define_job(http, "bench-log", f"head -c {log_mib * 1024 * 1024} /dev/zero")
        run_id, _ = await request_run(http, log_job)
        times = (await wait_ended(db, [run_id], 1200))[run_id]
        seconds = (times["end"] - times["RunStarted"]).total_seconds()
        archived_by = time.monotonic() + 600
        while not await db.fetchval(
            "SELECT 1 FROM events WHERE stream_id = $1 AND type = 'RunLogArchived'", f"run-{run_id}"
        ):
            if time.monotonic() > archived_by:
                raise RuntimeError("the log was not archived in time")
            await asyncio.sleep(0.2)
        print(
            f"(c) a run printing {log_mib} MiB: {log_mib * 1.048576 / seconds:.0f} MB/s from start to end; "
            f"peak memory: {system.peaks()}",
            flush=True,
        )
    await db.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--latency-runs", type=int, default=200)
    parser.add_argument("--runs", type=int, default=1000, help="runs of true for the sustained rate")
    parser.add_argument("--concurrency", type=int, default=16, help="run requests in flight")
    parser.add_argument("--log-mib", type=int, default=1024, help="size of the log of run (c)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="batchyard-bench-runs-") as folder:
        system = System(Path(folder))
        try:
            asyncio.run(measure(system, args.latency_runs, args.runs, args.concurrency, args.log_mib))
        finally:
            system.stop()


if __name__ == "__main__":
    main()
