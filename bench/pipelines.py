"""Throughput of a local pipeline beside the same shell pipeline, in the same run.

`cat BIGFILE | tr a-z A-Z | wc -c` over a generated file (1 GiB by default), several ways:
- `shell`: `/bin/sh -c` with the pipeline, the reference;
- `direct`: a 3-step batchyard pipeline whose steps hand data on with `log: false` (one OS pipe between
  two processes, the dispatcher never touches the bytes);
- `tee`: the same with the default `log: true`: the dispatcher reads each hand-over pipe and writes it
  both to the next step and to the run's log on a real (embedded) JetStream, as a run would;
- `tee-null`: the same copy into a log that discards it: the dispatcher's own cost of the copy;
- `log-only`: no processes, only the log copy `tee` makes (twice the file) published to JetStream: the
  bound the log store sets on `tee`.
Prints bytes per second, the ratio to the shell's, and the peak RSS of this process (which plays the
dispatcher). Usage: `.venv/bin/python -m bench.pipelines [--gib 1] [--skip-tee]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

from contracts.base import JsonObject
from services.dispatcher.drivers.base import LogSink
from services.dispatcher.drivers.local import CHUNK_BYTES, LocalProcessDriver
from services.dispatcher.logs import LogPublisher
from shared.bus.streams import connect, ensure_streams
from shared.embedded import start_nats

BLOCK = 8 * 1024 * 1024


def generate(path: Path, size: int) -> None:
    block = (b"the quick brown fox jumps over the lazy dog\n" * (BLOCK // 44 + 1))[:BLOCK]
    with path.open("wb") as out:
        for _ in range(size // BLOCK):
            out.write(block)


def shell(path: Path) -> float:
    started = time.perf_counter()
    result = subprocess.run(
        ["/bin/sh", "-c", f"cat {path} | tr a-z A-Z | wc -c"], capture_output=True, check=True
    )
    assert int(result.stdout) == path.stat().st_size
    return time.perf_counter() - started


class NullSink:
    async def write(self, fd: str, data: bytes, step: str | None = None) -> None:
        return None


async def pipeline(path: Path, logs: LogSink, *, log_hand_over: bool) -> float:
    payload: JsonObject = {
        "steps": [
            {"name": "cat", "command": ["cat", str(path)], "log": log_hand_over},
            {"name": "upper", "command": ["tr", "a-z", "A-Z"], "log": log_hand_over},
            {"name": "count", "command": ["wc", "-c"]},
        ]
    }
    execution = await LocalProcessDriver().prepare(str(uuid.uuid4()), payload, logs)
    started = time.perf_counter()
    await execution.launch()
    outcome = await execution.outcome()
    assert outcome.kind == "succeeded", outcome
    return time.perf_counter() - started


async def on_jetstream(workdir: Path, work: Callable[[LogPublisher], Awaitable[float]]) -> float:
    """Seconds `work` takes writing a run's log to a real (embedded) JetStream, until every chunk and
    the end marker are stored."""
    nats_server = start_nats(workdir / "nats")
    try:
        client = await connect(nats_server.url, "bench-pipelines")
        js = client.jetstream()
        prefix = f"bench{uuid.uuid4().hex[:6]}"
        await ensure_streams(js, prefix)
        publisher = LogPublisher(js, prefix, uuid.uuid4().hex, asyncio.Semaphore(128))
        started = time.perf_counter()
        await work(publisher)
        await publisher.finish()
        seconds = time.perf_counter() - started
        await client.close()
        return seconds
    finally:
        nats_server.stop()


async def log_only(publisher: LogPublisher, size: int) -> float:
    """The log copy alone: what the tee pipeline puts on JetStream (both hand-overs), no processes."""
    chunk = b"x" * CHUNK_BYTES
    started = time.perf_counter()
    for _ in range(2 * size // CHUNK_BYTES):
        await publisher.write("stdout", chunk)
    return time.perf_counter() - started


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--skip-tee", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="batchyard-bench-") as tmp:
        workdir = Path(tmp)
        big = workdir / "big"
        generate(big, int(args.gib * 1024**3))
        size = big.stat().st_size
        print(f"file: {size / 1e6:.0f} MB, load average {os.getloadavg()[0]:.1f}")
        shell(big)
        rows = [("shell", shell(big))]
        rows.append(("direct", await pipeline(big, NullSink(), log_hand_over=False)))
        rows.append(("shell", shell(big)))
        rows.append(("tee-null", await pipeline(big, NullSink(), log_hand_over=True)))
        if not args.skip_tee:
            rows.append(("tee", await on_jetstream(workdir, partial(pipeline, big, log_hand_over=True))))
            rows.append(("log-only", await on_jetstream(workdir, partial(log_only, size=size))))
        reference = min(seconds for name, seconds in rows if name == "shell")
        for name, seconds in rows:
            print(f"{name:8s} {size / seconds / 1e6:8.0f} MB/s  ratio {reference / seconds:.2f}")
        print(f"peak RSS of the dispatcher process: {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    asyncio.run(main())
