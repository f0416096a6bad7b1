"""What every archive offers: a run's log built chunk by chunk, then read back by byte range.

A run's log is immutable once its run ended, and every byte has one fixed offset, so writing is
idempotent by construction: a chunk at an offset already written is skipped, and a chunk beyond the end
written so far is refused with `LogGap` so an archived log can never contain a hole. The same archive
also keeps a run's other files (artifacts), and retention deletes a run's log and files together.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Self

RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
MAX_FILE_NAME = 1024


class ArchiveError(Exception):
    """The archive cannot do what was asked; the message says which run and why."""


class LogGap(ArchiveError):
    """A chunk (or the end marker) lies beyond the bytes written so far: earlier bytes are missing."""

    def __init__(self, run_id: str, written: int, offset: int) -> None:
        super().__init__(f"run {run_id}: bytes {written}..{offset} missing before offset {offset}")
        self.run_id = run_id
        self.written = written
        self.offset = offset


@dataclass(frozen=True)
class ArchivedLog:
    """A finalized log: what `RunLogArchived` records."""

    run_id: str
    bytes: int
    sha256: str
    location: str


@dataclass(frozen=True)
class ArchiveEntry:
    """A finalized log as listed for retention."""

    run_id: str
    bytes: int
    archived_at: datetime


@dataclass(frozen=True)
class StoredFile:
    name: str
    bytes: int


def check_run_id(run_id: str) -> str:
    """Run ids become path segments and object keys, so only safe characters pass."""
    if not RUN_ID.match(run_id):
        raise ValueError(f"run_id: {run_id!r} is not a valid run id")
    return run_id


def check_file_name(name: str) -> str:
    """A file name is a relative path inside the run's file area; it can never climb out of it."""
    parts = name.split("/")
    if (
        not name
        or len(name) > MAX_FILE_NAME
        or "\0" in name
        or "\\" in name
        or any(part in ("", ".", "..") for part in parts)
    ):
        raise ValueError(f"name: {name!r} must be a relative path without '.', '..' or empty segments")
    return name


class Archive(ABC):
    """Where logs and run files outlive the live stream; one instance per process, safe to share."""

    @abstractmethod
    async def append(self, run_id: str, offset: int, data: bytes) -> int:
        """Write `data` at `offset` of the run's log and return how many bytes the log now holds.

        Bytes already written are skipped, so a redelivered chunk changes nothing; a chunk past the end
        raises `LogGap`. Once the log is finalized, every chunk is skipped.
        """

    @abstractmethod
    async def written(self, run_id: str) -> int:
        """Bytes of the run's log written so far (its size once finalized)."""

    @abstractmethod
    async def finalize(self, run_id: str, size: int) -> ArchivedLog:
        """Seal the log at `size` bytes and compute its digest; a second call returns the same result.

        Raises `LogGap` when fewer than `size` bytes were written.
        """

    @abstractmethod
    async def archived(self, run_id: str) -> ArchivedLog | None:
        """The finalized log of a run, or None while it is not (or no longer) archived."""

    async def exists(self, run_id: str) -> bool:
        return await self.archived(run_id) is not None

    async def size(self, run_id: str) -> int | None:
        log = await self.archived(run_id)
        return None if log is None else log.bytes

    @abstractmethod
    async def read(self, run_id: str, offset: int, limit: int) -> bytes:
        """Up to `limit` bytes of the finalized log from `offset` (fewer at its end)."""

    @abstractmethod
    def list_logs(self) -> AsyncIterator[ArchiveEntry]:
        """Every finalized log, in no particular order."""

    @abstractmethod
    async def delete(self, run_id: str) -> None:
        """Remove the run's log, its partial log and its files; deleting what is gone is no error."""

    @abstractmethod
    async def prune_partials(self, older_than: datetime, *, only_archived: bool = False) -> list[str]:
        """Delete partial logs nobody wrote to since `older_than` (runs whose end never came); with
        `only_archived`, only those whose log another process has archived meanwhile."""

    @abstractmethod
    async def put_file(self, run_id: str, name: str, source: Path) -> str:
        """Store a file of the run under `name`, streamed from `source`; returns its location."""

    @abstractmethod
    async def get_file(self, run_id: str, name: str, destination: Path) -> None:
        """Copy a stored file of the run to `destination`; FileNotFoundError when there is none."""

    @abstractmethod
    async def list_files(self, run_id: str) -> list[StoredFile]:
        """The run's stored files, sorted by name."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections and open files."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
