"""The write half both archives share: a partial log on local disk, sealed into the archive at the end.

Subclasses only say how a sealed log is published and found (`_seal`, `_find`). Finalized logs never
change, so what `archived` finds is cached; `delete` drops it from this process's cache.
"""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from collections import OrderedDict
from datetime import datetime

from shared.archive.base import Archive, ArchivedLog, ArchiveError, LogGap, check_run_id
from shared.archive.staging import Staging

ARCHIVED_CACHE_SIZE = 4096


class StagedArchive(Archive):
    def __init__(self, staging: Staging) -> None:
        self._staging = staging
        self._archived: OrderedDict[str, ArchivedLog] = OrderedDict()

    async def append(self, run_id: str, offset: int, data: bytes) -> int:
        check_run_id(run_id)
        if offset < 0:
            raise ValueError(f"offset: {offset} is negative")
        if not self._staging.has(run_id):
            # The cache is checked again after the await: a seal may have completed meanwhile.
            sealed = await self.archived(run_id) or self._archived.get(run_id)
            if sealed is not None:
                return sealed.bytes
        return self._staging.write(run_id, offset, data)

    async def written(self, run_id: str) -> int:
        check_run_id(run_id)
        if self._staging.has(run_id):
            return self._staging.end(run_id)
        sealed = await self.archived(run_id)
        return 0 if sealed is None else sealed.bytes

    async def finalize(self, run_id: str, size: int) -> ArchivedLog:
        check_run_id(run_id)
        sealed = await self.archived(run_id)
        if sealed is not None:
            self._staging.discard(run_id, delete=True)
            return sealed
        end = self._staging.end(run_id)
        if end < size:
            raise LogGap(run_id, end, size)
        if end > size:
            raise ArchiveError(f"run {run_id}: {end} bytes were written but its log ends at {size}")
        self._staging.ensure(run_id)
        digest = self._staging.running_digest(run_id, size)
        if digest is None:
            digest = await asyncio.to_thread(self._staging.file_digest, run_id, size)
        sealed = await self._seal(run_id, size, digest)
        self._staging.discard(run_id, delete=True)
        self._remember(sealed)
        return sealed

    async def archived(self, run_id: str) -> ArchivedLog | None:
        check_run_id(run_id)
        cached = self._archived.get(run_id)
        if cached is not None:
            self._archived.move_to_end(run_id)
            return cached
        found = await self._find(run_id)
        if found is not None:
            self._remember(found)
        return found

    async def delete(self, run_id: str) -> None:
        check_run_id(run_id)
        self._archived.pop(run_id, None)
        self._staging.discard(run_id, delete=True)
        await self._delete_sealed(run_id)

    async def prune_partials(self, older_than: datetime, *, only_archived: bool = False) -> list[str]:
        pruned = []
        for run_id in self._staging.stale(older_than):
            if not only_archived or await self.archived(run_id) is not None:
                self._staging.discard(run_id, delete=True)
                pruned.append(run_id)
        return pruned

    async def close(self) -> None:
        self._staging.close()

    def _forget(self, run_id: str) -> None:
        """A sealed log vanished under us (retention in another process): stop believing the cache."""
        self._archived.pop(run_id, None)

    def _remember(self, sealed: ArchivedLog) -> None:
        self._archived[sealed.run_id] = sealed
        while len(self._archived) > ARCHIVED_CACHE_SIZE:
            self._archived.popitem(last=False)

    @abstractmethod
    async def _seal(self, run_id: str, size: int, sha256: str) -> ArchivedLog:
        """Publish the complete partial log durably; the partial is deleted afterwards."""

    @abstractmethod
    async def _find(self, run_id: str) -> ArchivedLog | None: ...

    @abstractmethod
    async def _delete_sealed(self, run_id: str) -> None: ...
