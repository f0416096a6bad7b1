"""Fixtures for integration tests that need an S3 server beside NATS and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiobotocore.session import get_session
from nats.js import JetStreamContext
from pydantic import SecretStr

from contracts.logs import LOG_END, LOG_FD, LOG_OFFSET, log_msg_id
from contracts.subjects import logs_subject
from shared.archive import Archive, open_archive
from shared.settings import Settings
from tests.s3 import moto_server

_S3_SESSION = get_session()


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as url:
        yield url


@pytest.fixture
async def s3_bucket(s3_endpoint: str) -> AsyncIterator[str]:
    """A bucket of its own for one test."""
    name = f"t-{uuid.uuid4().hex[:20]}"
    async with _S3_SESSION.create_client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="test-key",
        aws_secret_access_key="test-secret",
    ) as client:
        await client.create_bucket(Bucket=name)
    yield name


@pytest.fixture(params=["file", "s3"])
def archive_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def base_settings(tmp_path: Path) -> Settings:
    """Settings for tests of the archive alone; a module that needs the bus and store overrides this."""
    return Settings(data_dir=tmp_path / "data")


def with_archive(settings: Settings, archive_kind: str, request: pytest.FixtureRequest) -> Settings:
    """`settings` with the archive of the kind under test (S3: the suite's local S3 server)."""
    if archive_kind == "file":
        return settings.model_copy(update={"archive_kind": "file"})
    return settings.model_copy(
        update={
            "archive_kind": "s3",
            "s3_bucket": request.getfixturevalue("s3_bucket"),
            "s3_prefix": "archive/test",
            "s3_endpoint_url": request.getfixturevalue("s3_endpoint"),
            "s3_region": "us-east-1",
            "s3_access_key_id": "test-key",
            "s3_secret_access_key": SecretStr("test-secret"),
        }
    )


@pytest.fixture
def archive_settings(base_settings: Settings, archive_kind: str, request: pytest.FixtureRequest) -> Settings:
    """The test's settings with the archive of the kind under test."""
    return with_archive(base_settings, archive_kind, request)


@pytest.fixture
async def archive(archive_settings: Settings) -> AsyncIterator[Archive]:
    async with await open_archive(archive_settings) as opened:
        yield opened


class LogPublisher:
    """Publishes a run's log the way the dispatcher does: chunks with offsets, then the end marker."""

    def __init__(self, js: JetStreamContext, prefix: str) -> None:
        self.js = js
        self.prefix = prefix

    async def chunk(self, run_id: str, offset: int, data: bytes, *, deduplicated: bool = True) -> int:
        """Publish one chunk; without deduplication a republished chunk is stored again."""
        headers = {LOG_OFFSET: str(offset), LOG_FD: "stdout"}
        if deduplicated:
            headers["Nats-Msg-Id"] = log_msg_id(run_id, offset)
        ack = await self.js.publish(logs_subject(self.prefix, run_id), data, headers=headers)
        return ack.seq

    async def chunk_async(self, run_id: str, offset: int, data: bytes) -> asyncio.Future[Any]:
        """Publish one chunk without waiting for its acknowledgement (await the returned future)."""
        headers = {LOG_OFFSET: str(offset), LOG_FD: "stdout", "Nats-Msg-Id": log_msg_id(run_id, offset)}
        return await self.js.publish_async(logs_subject(self.prefix, run_id), data, headers=headers)

    async def end(self, run_id: str, size: int, *, deduplicated: bool = True) -> int:
        headers = {LOG_OFFSET: str(size), LOG_END: "1"}
        if deduplicated:
            headers["Nats-Msg-Id"] = log_msg_id(run_id, size, end=True)
        ack = await self.js.publish(logs_subject(self.prefix, run_id), b"", headers=headers)
        return ack.seq

    async def log(self, run_id: str, data: bytes, chunk_size: int, *, end: bool = True) -> None:
        """The whole log in order, publishes pipelined in batches as a fast dispatcher would."""
        subject = logs_subject(self.prefix, run_id)
        pending = []
        for offset in range(0, len(data), chunk_size):
            headers = {
                LOG_OFFSET: str(offset),
                LOG_FD: "stdout",
                "Nats-Msg-Id": log_msg_id(run_id, offset),
            }
            pending.append(
                await self.js.publish_async(subject, data[offset : offset + chunk_size], headers=headers)
            )
            if len(pending) >= 256:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        if end:
            await self.end(run_id, len(data))


@pytest.fixture
def log_publisher(js: JetStreamContext, settings: Settings) -> LogPublisher:
    return LogPublisher(js, settings.bus_prefix)
