"""The archive as a directory: `<root>/<run>/log`, its `log.json` (size, digest, time) and `files/`.

Files are copied into `.incoming/` first and renamed into place, so a listed file is always whole.
The partial log is built in place (`<root>/<run>/log.partial`) and sealed by fsync, writing `log.json`
atomically, then renaming the partial to `log`: a log is archived exactly when `log` exists, and its
metadata is always there by then.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from shared.archive.base import (
    ArchivedLog,
    ArchiveEntry,
    StoredFile,
    check_file_name,
    check_run_id,
)
from shared.archive.staged import StagedArchive
from shared.archive.staging import Staging

LOG_NAME = "log"
META_NAME = "log.json"
FILES_DIR = "files"
INCOMING_DIR = ".incoming"


class FileArchive(StagedArchive):
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        super().__init__(Staging(self.root))

    def location(self, run_id: str) -> str:
        return (self.root / run_id / LOG_NAME).as_uri()

    async def _seal(self, run_id: str, size: int, sha256: str) -> ArchivedLog:
        sealed = ArchivedLog(run_id, size, sha256, self.location(run_id))
        await asyncio.to_thread(self._seal_files, sealed)
        return sealed

    def _seal_files(self, sealed: ArchivedLog) -> None:
        self._staging.fsync_file(sealed.run_id)
        run_dir = self.root / sealed.run_id
        meta = {"bytes": sealed.bytes, "sha256": sealed.sha256, "archived_at": datetime.now(UTC).isoformat()}
        _write_atomically(run_dir / META_NAME, json.dumps(meta).encode())
        os.replace(self._staging.path(sealed.run_id), run_dir / LOG_NAME)
        _fsync_dir(run_dir)

    async def _find(self, run_id: str) -> ArchivedLog | None:
        meta = _read_meta(self.root / run_id)
        if meta is None:
            return None
        return ArchivedLog(run_id, meta.bytes, meta.sha256, self.location(run_id))

    async def read(self, run_id: str, offset: int, limit: int) -> bytes:
        check_run_id(run_id)
        try:
            with (self.root / run_id / LOG_NAME).open("rb") as file:
                return os.pread(file.fileno(), limit, offset)
        except FileNotFoundError:
            self._forget(run_id)
            raise

    async def list_logs(self) -> AsyncIterator[ArchiveEntry]:
        for run_dir in sorted(self.root.iterdir()):
            meta = _read_meta(run_dir)
            if meta is not None:
                yield ArchiveEntry(run_dir.name, meta.bytes, meta.archived_at)

    async def _delete_sealed(self, run_id: str) -> None:
        await asyncio.to_thread(shutil.rmtree, self.root / run_id, True)

    async def put_file(self, run_id: str, name: str, source: Path) -> str:
        target = self._file_path(run_id, name)
        incoming = self.root / run_id / INCOMING_DIR

        def copy() -> None:
            target.parent.mkdir(parents=True, exist_ok=True)
            incoming.mkdir(exist_ok=True)
            temporary = incoming / uuid.uuid4().hex
            shutil.copyfile(source, temporary)
            os.replace(temporary, target)

        await asyncio.to_thread(copy)
        return target.as_uri()

    async def get_file(self, run_id: str, name: str, destination: Path) -> None:
        await asyncio.to_thread(shutil.copyfile, self._file_path(run_id, name), destination)

    async def list_files(self, run_id: str) -> list[StoredFile]:
        base = self.root / check_run_id(run_id) / FILES_DIR
        if not base.is_dir():
            return []
        return sorted(
            (
                StoredFile(path.relative_to(base).as_posix(), path.stat().st_size)
                for path in base.rglob("*")
                if path.is_file()
            ),
            key=lambda stored: stored.name,
        )

    def _file_path(self, run_id: str, name: str) -> Path:
        return self.root / check_run_id(run_id) / FILES_DIR / check_file_name(name)


@dataclass(frozen=True)
class _Meta:
    bytes: int
    sha256: str
    archived_at: datetime


def _read_meta(run_dir: Path) -> _Meta | None:
    """The sealed log's metadata; None unless both the log and its metadata are in place."""
    if not (run_dir / LOG_NAME).is_file():
        return None
    try:
        meta = json.loads((run_dir / META_NAME).read_bytes())
        return _Meta(int(meta["bytes"]), str(meta["sha256"]), datetime.fromisoformat(meta["archived_at"]))
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


def _write_atomically(path: Path, content: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("wb") as file:
        file.write(content)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    with contextlib.suppress(OSError):
        os.fsync(fd)
    os.close(fd)
