"""Retention: archived runs older than the configured age are deleted with their files."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from shared.archive.base import Archive

log = logging.getLogger(__name__)


async def prune_archive(archive: Archive, retention_days: float, now: datetime) -> list[str]:
    """Delete logs archived, and partial logs last written, more than `retention_days` before `now`.

    Returns the run ids deleted. A retention of 0 keeps everything.
    """
    if retention_days <= 0:
        return []
    cutoff = now - timedelta(days=retention_days)
    expired = [entry.run_id async for entry in archive.list_logs() if entry.archived_at < cutoff]
    for run_id in expired:
        await archive.delete(run_id)
    abandoned = await archive.prune_partials(cutoff)
    if expired or abandoned:
        log.info("retention deleted %d archived and %d abandoned partial logs", len(expired), len(abandoned))
    return expired + abandoned
