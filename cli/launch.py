"""What `batchyard up` does: the whole system on this machine, in the foreground, until Ctrl-C.

Order of things: take the data dir's lock, check the API port, start (or find) NATS and PostgreSQL, start
the four services, say once when the API is ready; on SIGINT/SIGTERM/SIGHUP stop the services, then the
servers, and exit 0. A second signal while stopping kills the services at once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp

from cli.console import SUPERVISOR, Console
from cli.errors import CliError
from cli.local import Installation, UpLock, read_installation, remove_installation, write_installation
from cli.servers import BackingServers, start_backing_servers
from cli.supervisor import ServiceSpec, Supervisor
from shared.settings import Settings

SERVICES = ("api", "renderer", "dispatcher", "logarchiver")
READY_POLL_S = 0.1
SLOW_START_S = 60.0


async def up(settings: Settings, *, grace_s: float) -> int:
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = UpLock(data_dir)
    if not lock.acquire():
        raise CliError(f"another batchyard up (pid {lock.holder()}) is already running on {data_dir}")
    console = Console(data_dir / "logs")
    try:
        ensure_port_free(settings.api_host, settings.api_port)
        return await _run_locked(settings, data_dir, console, grace_s)
    finally:
        console.close()
        lock.release()


async def _run_locked(settings: Settings, data_dir: Path, console: Console, grace_s: float) -> int:
    stop = asyncio.Event()
    supervisor: Supervisor | None = None

    def on_signal() -> None:
        if stop.is_set() and supervisor is not None:
            console.line(SUPERVISOR, "second signal: killing the services now")
            supervisor.kill()
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, on_signal)

    def say(text: str) -> None:
        console.line(SUPERVISOR, text)

    say(f"data in {data_dir}")
    earlier = read_installation(data_dir)
    servers = await asyncio.to_thread(
        start_backing_servers,
        settings,
        data_dir,
        orphan_nats_pid=earlier.nats_pid if earlier else None,
        say=say,
    )
    api_url = f"http://{_client_host(settings.api_host)}:{settings.api_port}"
    try:
        write_installation(data_dir, _installation(servers, api_url))
        if not stop.is_set():
            supervisor = Supervisor(service_specs(settings, data_dir, servers), console)
            supervisor.start()
            announcer = asyncio.create_task(_announce_when_ready(api_url, supervisor, console, data_dir))
            await stop.wait()
            announcer.cancel()
            say("stopping the services")
            await supervisor.stop(grace_s)
        say("stopping the servers")
    finally:
        await asyncio.to_thread(servers.stop)
        remove_installation(data_dir)
    console.announce("batchyard stopped")
    return 0


def service_specs(settings: Settings, data_dir: Path, servers: BackingServers) -> list[ServiceSpec]:
    env = dict(os.environ)
    env.update(
        BATCHYARD_NATS_URL=servers.nats_url,
        BATCHYARD_PG_DSN=servers.pg_dsn,
        BATCHYARD_DATA_DIR=str(data_dir),
        BATCHYARD_API_HOST=settings.api_host,
        BATCHYARD_API_PORT=str(settings.api_port),
        PYTHONUNBUFFERED="1",
    )
    return [ServiceSpec(name, [sys.executable, "-m", f"services.{name}.main"], env) for name in SERVICES]


def ensure_port_free(host: str, port: int) -> None:
    """Fail before starting anything if the API could not listen; a later failure would be a crash loop."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise CliError(
                f"cannot listen on {host}:{port} ({exc.strerror}); free the port or set BATCHYARD_API_PORT"
            ) from None


async def _announce_when_ready(
    api_url: str, supervisor: Supervisor, console: Console, data_dir: Path
) -> None:
    """One line once the API answers and every service runs; a hint if that takes unusually long."""
    loop = asyncio.get_running_loop()
    slow_at = loop.time() + SLOW_START_S
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        while not (await _api_ready(http, api_url) and supervisor.all_running()):
            if loop.time() > slow_at:
                console.line(SUPERVISOR, f"still not ready after {SLOW_START_S:g}s; see {data_dir / 'logs'}")
                slow_at = float("inf")
            await asyncio.sleep(READY_POLL_S)
    console.announce(f"batchyard is ready: API on {api_url}, data in {data_dir} (Ctrl-C stops it)")


async def _api_ready(http: aiohttp.ClientSession, api_url: str) -> bool:
    """`/readyz` where the API reports readiness, `/healthz` where it does not (yet)."""
    try:
        async with http.get(f"{api_url}/readyz") as readyz:
            if readyz.status != 404:
                return readyz.status == 200
        async with http.get(f"{api_url}/healthz") as healthz:
            return healthz.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


def _installation(servers: BackingServers, api_url: str) -> Installation:
    return Installation(
        pid=os.getpid(),
        api_url=api_url,
        nats_url=servers.nats_url if servers.nats else None,
        nats_pid=servers.nats.process.pid if servers.nats else None,
        pg_dsn=servers.pg_dsn if servers.postgres else None,
    )


def _client_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host
