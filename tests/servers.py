"""Servers for the test suite: testcontainers when a Docker engine answers, embedded ones otherwise.

Each test then isolates itself inside them with its own database and its own bus prefix.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from shared.embedded import start_nats, start_postgres


@dataclass(frozen=True)
class TestServers:
    nats_url: str
    pg_admin_dsn: str

    def pg_dsn(self, database: str) -> str:
        return urlunsplit(urlsplit(self.pg_admin_dsn)._replace(path=f"/{database}"))


def _docker_reachable() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=2)
        client.ping()
        images = {tag for image in client.images.list() for tag in image.tags}
        return {"postgres:16-alpine", "nats:2.10-alpine"} <= images
    except Exception:
        return False


@contextlib.contextmanager
def _containers() -> Iterator[TestServers]:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs
    from testcontainers.postgres import PostgresContainer

    with (
        PostgresContainer(
            "postgres:16-alpine", username="postgres", password="postgres", dbname="postgres"
        ) as pg,
        DockerContainer("nats:2.10-alpine").with_command("-js").with_exposed_ports(4222) as nats,
    ):
        wait_for_logs(nats, "Server is ready")
        url = f"nats://{nats.get_container_host_ip()}:{nats.get_exposed_port(4222)}"
        yield TestServers(url, pg.get_connection_url(driver=None))


@contextlib.contextmanager
def _embedded(directory: Path) -> Iterator[TestServers]:
    nats = start_nats(directory / "nats")
    try:
        pg = start_postgres(directory / "pg")
        try:
            yield TestServers(nats.url, pg.dsn())
        finally:
            pg.stop()
    finally:
        nats.stop()


@contextlib.contextmanager
def test_servers(directory: Path) -> Iterator[TestServers]:
    if os.environ.get("BATCHYARD_TEST_CONTAINERS") == "1" or _docker_reachable():
        with _containers() as servers:
            yield servers
    else:
        with _embedded(directory) as servers:
            yield servers
