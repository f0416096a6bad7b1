"""`batchyard up`, run as a subprocess the way a user runs it: start, serve, stop, start again."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import nats
import psutil

from cli.local import read_installation
from contracts.envelope import EventMeta
from contracts.events import JobPaused
from contracts.subjects import events_stream_name
from shared.embedded import free_port
from shared.eventstore import NO_STREAM, EventStore
from shared.eventstore.store import create_pool
from shared.settings import Settings
from tests.e2e.up_process import (
    batchyard_command,
    clean_environment,
    no_leftovers,
    occupied,
    running_up,
    wait_gone,
)

SERVICES = {"api", "renderer", "dispatcher", "logarchiver"}
META = EventMeta(actor="e2e", correlation_id="up-test")


async def append_job_paused(dsn: str, job_id: uuid.UUID) -> None:
    pool = await create_pool(dsn, size=2)
    store = EventStore(pool)
    try:
        await store.append(
            f"job-{job_id}", [JobPaused(job_id=job_id, reason="e2e")], expected_version=NO_STREAM, meta=META
        )
    finally:
        await store.close()
        await pool.close()


async def stream_types(dsn: str, job_id: uuid.UUID) -> list[str]:
    pool = await create_pool(dsn, size=2)
    store = EventStore(pool)
    try:
        return [event.type for event in await store.read_stream(f"job-{job_id}")]
    finally:
        await store.close()
        await pool.close()


async def bus_event_count(nats_url: str, deadline_s: float = 10.0, at_least: int = 1) -> int:
    """Messages in the events stream, waiting (briefly) for the relay to have published `at_least`."""
    client = await nats.connect(nats_url)
    try:
        js = client.jetstream()
        loop = asyncio.get_running_loop()
        until = loop.time() + deadline_s
        while True:
            count = (await js.stream_info(events_stream_name("batchyard"))).state.messages
            if count >= at_least or loop.time() > until:
                return count
            await asyncio.sleep(0.05)
    finally:
        await client.close()


async def test_up_serves_beside_4222_and_5432_stops_cleanly_and_finds_its_data_again_even_after_a_kill(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    job_id = uuid.uuid4()
    with occupied(4222, 5432), no_leftovers(data_dir):
        with running_up(data_dir, free_port()) as first:
            first.wait_until_ready()
            services = first.service_processes()
            assert set(services) == SERVICES and all(p.is_running() for p in services.values())
            installation = read_installation(data_dir)
            assert installation is not None and installation.nats_url and installation.pg_dsn
            service_env = services["api"].environ()
            assert urlsplit(service_env["BATCHYARD_NATS_URL"]).port not in (None, 4222)
            assert parse_qs(urlsplit(service_env["BATCHYARD_PG_DSN"]).query)["host"][0].startswith(
                str(data_dir)
            )
            nats_server = psutil.Process(installation.nats_pid)
            postmaster = psutil.Process(int((data_dir / "pg" / "postmaster.pid").read_text().split()[0]))
            assert nats_server.is_running() and postmaster.is_running()

            await append_job_paused(installation.pg_dsn, job_id)
            assert await bus_event_count(installation.nats_url) == 1

            watched = [*first.descendants(), nats_server, postmaster]
            assert first.stop(signal.SIGINT) == 0
            assert wait_gone(watched) == []
            assert "batchyard stopped" in first.output
            assert read_installation(data_dir) is None

        with running_up(data_dir, free_port()) as killed:
            killed.wait_until_ready()
            installation = read_installation(data_dir)
            assert installation is not None and installation.nats_url and installation.pg_dsn
            assert await stream_types(installation.pg_dsn, job_id) == ["JobPaused"]
            assert await bus_event_count(installation.nats_url, deadline_s=0) == 1

            killed_services = list(killed.service_processes().values())
            leftover_nats = psutil.Process(installation.nats_pid)
            killed.process.kill()
            killed.process.wait()
            assert wait_gone(killed_services) == []
            assert leftover_nats.is_running()

        with running_up(data_dir, free_port()) as after_kill:
            after_kill.wait_until_ready()
            assert f"stopping the NATS server (pid {leftover_nats.pid}) left over" in after_kill.output
            assert wait_gone([leftover_nats], timeout=1) == []
            installation = read_installation(data_dir)
            assert installation is not None and installation.nats_url and installation.pg_dsn
            assert await stream_types(installation.pg_dsn, job_id) == ["JobPaused"]
            assert await bus_event_count(installation.nats_url, deadline_s=0) == 1
            watched = [*after_kill.descendants(), psutil.Process(installation.nats_pid)]
            assert after_kill.stop(signal.SIGINT) == 0
            assert wait_gone(watched) == []


async def test_up_with_named_servers_restarts_a_dead_service_refuses_a_twin_and_stops_on_sigterm(
    tmp_path: Path, settings: Settings
) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    named = {
        "BATCHYARD_PG_DSN": settings.pg_dsn,
        "BATCHYARD_NATS_URL": settings.nats_url,
        "BATCHYARD_BUS_PREFIX": settings.bus_prefix,
    }
    with running_up(data_dir, port, env=named) as up:
        up.wait_until_ready()
        assert not (data_dir / "nats").exists() and not (data_dir / "pg").exists()
        renderer = up.service_processes()["renderer"]
        assert renderer.environ()["BATCHYARD_PG_DSN"] == settings.pg_dsn

        renderer.kill()
        up.wait_for("renderer killed by SIGKILL", timeout=10)
        up.wait_for("restart 1 in 1s", timeout=1)
        up.wait_for("renderer started (instance", timeout=20, times=2)
        restarted = up.service_processes()["renderer"]
        assert restarted.pid != renderer.pid and restarted.is_running()

        second = await asyncio.to_thread(
            subprocess.run,
            [*batchyard_command(), "up"],
            env=clean_environment(BATCHYARD_DATA_DIR=str(data_dir), BATCHYARD_API_PORT=str(free_port())),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert second.returncode == 2
        assert second.stderr.strip().splitlines() == [
            f"batchyard up: another batchyard up (pid {up.process.pid}) is already running on {data_dir}"
        ]

        health = await asyncio.to_thread(
            subprocess.run,
            [*batchyard_command(), "health", "--url", f"http://127.0.0.1:{port}"],
            env=clean_environment(http_proxy=f"http://127.0.0.1:{free_port()}"),
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert health.returncode == 0 and "alive: yes" in health.stdout

        watched = up.descendants()
        assert up.stop(signal.SIGTERM) == 0
        assert wait_gone(watched) == []
    assert (data_dir / "logs" / "renderer.log").read_text().count("renderer started") == 2


def test_up_refuses_a_taken_api_port_with_one_line_and_exit_2(tmp_path: Path) -> None:
    port = free_port()
    data_dir = tmp_path / "data"
    with occupied(port):
        result = subprocess.run(
            [*batchyard_command(), "up"],
            env=clean_environment(BATCHYARD_DATA_DIR=str(data_dir), BATCHYARD_API_PORT=str(port)),
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"batchyard up: cannot listen on 127.0.0.1:{port} (Address already in use); "
        "free the port or set BATCHYARD_API_PORT"
    ]
    assert not (data_dir / "nats").exists() and not (data_dir / "pg").exists()
