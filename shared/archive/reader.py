"""One way to read a run's log by offset, whether its bytes are still on the live stream or archived.

The live stream is asked first: it has every byte as soon as it is printed, and it is what a follower
of a running run needs. When it no longer holds the offset (discarded by age or size, or the stream was
rebuilt), the archive answers with the same offsets. A page is `complete` when it reaches the log's
end: the end marker on the stream, or the size of the finalized archive.
"""

from __future__ import annotations

from dataclasses import dataclass

from nats.js import JetStreamContext

from shared.archive.base import Archive, check_run_id
from shared.archive.live import LiveLog

DEFAULT_LIMIT = 1024 * 1024
MAX_LIMIT = 16 * 1024 * 1024


class OffsetBeyondEnd(ValueError):
    def __init__(self, offset: int, size: int) -> None:
        super().__init__(f"offset: {offset} is past the end of the log ({size} bytes)")
        self.offset = offset
        self.size = size


@dataclass(frozen=True)
class LogPage:
    offset: int
    next_offset: int
    data: bytes
    complete: bool


class LogReader:
    """Keep one per process: it remembers where recent readers stopped, so following a log is cheap."""

    def __init__(self, archive: Archive, js: JetStreamContext, prefix: str) -> None:
        self._archive = archive
        self._live = LiveLog(js, prefix)

    async def read(self, run_id: str, offset: int = 0, limit: int = DEFAULT_LIMIT) -> LogPage:
        """Bytes from `offset`, at most `limit` of them.

        Raises ValueError naming the field for a bad run id, offset or limit, and OffsetBeyondEnd for an
        offset past the end of a finished log. An empty, incomplete page means "nothing more yet".
        """
        check_run_id(run_id)
        if offset < 0:
            raise ValueError(f"offset: {offset} is negative")
        if not 0 < limit <= MAX_LIMIT:
            raise ValueError(f"limit: {limit} is not between 1 and {MAX_LIMIT}")
        live = await self._live.read(run_id, offset, limit)
        if live is not None:
            if live.total is not None and offset > live.total:
                raise OffsetBeyondEnd(offset, live.total)
            complete = live.total is not None and live.next_offset == live.total
            return LogPage(offset, live.next_offset, live.data, complete)
        return await self._read_archive(run_id, offset, limit)

    async def _read_archive(self, run_id: str, offset: int, limit: int) -> LogPage:
        sealed = await self._archive.archived(run_id)
        if sealed is None:
            return LogPage(offset, offset, b"", False)
        if offset > sealed.bytes:
            raise OffsetBeyondEnd(offset, sealed.bytes)
        try:
            data = await self._archive.read(run_id, offset, limit)
        except FileNotFoundError:
            return LogPage(offset, offset, b"", False)
        next_offset = offset + len(data)
        return LogPage(offset, next_offset, data, next_offset == sealed.bytes)


async def read_log(
    archive: Archive, js: JetStreamContext, prefix: str, run_id: str, offset: int, limit: int = DEFAULT_LIMIT
) -> LogPage:
    """A one-off read; a server should keep a `LogReader` instead, which remembers resume points."""
    return await LogReader(archive, js, prefix).read(run_id, offset, limit)
