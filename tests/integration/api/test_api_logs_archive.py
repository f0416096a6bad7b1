"""Log endpoints answer from the archive (a directory or S3) once the live stream no longer holds a log."""

from __future__ import annotations

import os
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from nats.js import JetStreamContext

from contracts.subjects import logs_stream_name, logs_subject
from shared.archive import Archive
from shared.settings import Settings
from tests.integration.api.test_api_logs import new_run, page, read_events, text_of
from tests.integration.conftest import LogPublisher, with_archive

Client = TestClient[Any, Any]


@pytest.fixture
def settings(settings: Settings, archive_kind: str, request: pytest.FixtureRequest) -> Settings:
    """The API's own settings name the archive under test, so it reads where the archive was written."""
    return with_archive(settings, archive_kind, request)


@pytest.fixture
def base_settings(settings: Settings) -> Settings:
    return settings


async def archive_log(archive: Archive, run_id: str, data: bytes) -> None:
    for offset in range(0, len(data), 4096):
        await archive.append(run_id, offset, data[offset : offset + 4096])
    await archive.finalize(run_id, len(data))


async def test_pages_and_the_stream_read_the_same_from_the_archive_as_from_the_live_stream(
    defined: Client, archive: Archive, js: JetStreamContext, settings: Settings, log_publisher: LogPublisher
) -> None:
    data = ("line of log ✓\n" * 2000).encode() + os.urandom(8).hex().encode()
    run_id = await new_run(defined)
    await log_publisher.log(run_id, data, 1000)
    await archive_log(archive, run_id, data)
    requests = [(0, 1), (0, 5000), (13, 3), (len(data) - 5, 100), (len(data), 10)]
    live = [await page(defined, run_id, offset=offset, limit=limit) for offset, limit in requests]

    await js.purge_stream(
        logs_stream_name(settings.bus_prefix), subject=logs_subject(settings.bus_prefix, run_id)
    )

    archived = [await page(defined, run_id, offset=offset, limit=limit) for offset, limit in requests]
    assert archived == live
    assert [p["complete"] for p in archived] == [False, False, False, True, True]
    beyond = await defined.get(f"/runs/{run_id}/log", params={"offset": len(data) + 1})
    assert beyond.status == 416 and (await beyond.json())["size"] == len(data)
    events = await read_events(await defined.get(f"/runs/{run_id}/log/stream"))
    assert text_of(events).encode() == data
    assert events[-1]["data"] == {"offset": len(data), "complete": True}
