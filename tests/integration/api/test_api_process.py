"""The API as the supervisor runs it: `python -m services.api.main` with BATCHYARD_* variables."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys

import aiohttp

from shared.settings import Settings


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_main_serves_until_sigterm_then_exits_cleanly(settings: Settings) -> None:
    port = _free_port()
    env = os.environ | {
        "BATCHYARD_PG_DSN": settings.pg_dsn,
        "BATCHYARD_NATS_URL": settings.nats_url,
        "BATCHYARD_BUS_PREFIX": settings.bus_prefix,
        "BATCHYARD_API_PORT": str(port),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.api.main", env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with aiohttp.ClientSession() as session:
            status = None
            async with asyncio.timeout(20):
                while status != 200:
                    try:
                        async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                            status = response.status
                    except aiohttp.ClientConnectionError:
                        await asyncio.sleep(0.1)
            async with session.get(f"http://127.0.0.1:{port}/events/stream") as tail:
                assert tail.status == 200
                process.send_signal(signal.SIGTERM)
                async with asyncio.timeout(10):
                    assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
