"""Wiring of the logarchiver: the configured archive, the logs consumer, and retention."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from services.logarchiver.archiver import LogArchiver
from services.logarchiver.leadership import while_leader
from shared.archive import Archive, open_archive, prune_archive
from shared.service import Runtime

log = logging.getLogger(__name__)

PRUNE_INTERVAL_S = 3600.0
ABANDONED_PARTIAL_AGE = timedelta(hours=1)


async def start(runtime: Runtime) -> Callable[[], Awaitable[None]]:
    """Start archiving; the returned coroutine function stops the tasks and closes the archive."""
    settings = runtime.settings
    archive = await open_archive(settings)
    where = (
        f"s3 bucket {settings.s3_bucket!r} prefix {settings.s3_prefix!r}"
        if settings.archive_kind == "s3"
        else f"directory {settings.archive_path}"
    )
    log.info("archiving logs to %s", where)
    archiver = LogArchiver(runtime.js, settings.bus_prefix, runtime.store, archive)
    try:
        await archiver.prepare()
    except BaseException:
        await archive.close()
        raise
    leader_lock = f"logarchiver:{settings.bus_prefix}"
    tasks = [
        runtime.spawn(while_leader(settings.pg_dsn, leader_lock, archiver.run), "logarchiver-consumer"),
        runtime.spawn(_tidy_periodically(archive, settings.archive_retention_days), "logarchiver-tidying"),
    ]

    async def shutdown() -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await archive.close()

    return shutdown


async def _tidy_periodically(archive: Archive, retention_days: float) -> None:
    """Apply retention, and drop partial logs a former active replica left behind once they are archived."""
    while True:
        try:
            now = datetime.now(UTC)
            await prune_archive(archive, retention_days, now)
            await archive.prune_partials(now - ABANDONED_PARTIAL_AGE, only_archived=True)
        except Exception:
            log.exception("pruning the archive failed; trying again in %.0f s", PRUNE_INTERVAL_S)
        await asyncio.sleep(PRUNE_INTERVAL_S)
