"""Fixtures shared by every test: real servers once per session, isolation per test."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import nats
import pytest
from nats.js import JetStreamContext

from shared.bus.streams import delete_streams, ensure_streams
from shared.eventstore.store import EventStore, create_pool, migrate
from shared.settings import Settings
from tests.servers import TestServers, test_servers


@pytest.fixture(scope="session")
def servers() -> Iterator[TestServers]:
    """In a folder of their own, not under pytest's temp root: that is private to root (mode 0700), but
    the embedded PostgreSQL runs as another user, and pytest prunes old roots other sessions still use."""
    folder = Path(tempfile.mkdtemp(prefix="batchyard-test-servers-"))
    folder.chmod(0o755)
    try:
        with test_servers(folder) as running:
            yield running
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
async def settings(servers: TestServers, tmp_path: Path) -> AsyncIterator[Settings]:
    """Settings for one test: a database and a bus prefix nobody else uses."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(servers.pg_admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    test_settings = Settings(
        data_dir=tmp_path / "data",
        pg_dsn=servers.pg_dsn(name),
        nats_url=servers.nats_url,
        bus_prefix=name,
        api_port=0,
        instance=f"test-{name}",
    )
    yield test_settings
    client = await nats.connect(servers.nats_url)
    try:
        await delete_streams(client.jetstream(), test_settings.bus_prefix)
    finally:
        await client.close()


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    created = await create_pool(settings.pg_dsn, size=10)
    await migrate(created)
    yield created
    await created.close()


@pytest.fixture
async def store(pool: asyncpg.Pool) -> AsyncIterator[EventStore]:
    event_store = EventStore(pool)
    yield event_store
    await event_store.close()


@pytest.fixture
async def js(settings: Settings) -> AsyncIterator[JetStreamContext]:
    client = await nats.connect(settings.nats_url)
    context = client.jetstream()
    await ensure_streams(context, settings.bus_prefix)
    yield context
    await client.close()
