"""Partial logs on local disk: chunks land at their offsets, the digest grows as the bytes do.

Each run's partial log is `<root>/<run>/log.partial`. Writing is positional (`pwrite` at the chunk's
offset, only the bytes past the current end), so writing the same chunk twice, or two processes writing
the same bytes, leaves the file unchanged. The SHA-256 is fed with the new bytes as they are appended;
when that running digest is lost (a restart, an evicted entry, another writer) finalizing re-reads the
file instead. Nothing holds more than one chunk in memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections import OrderedDict
from datetime import datetime
from pathlib import Path
from typing import Any

from shared.archive.base import LogGap

PARTIAL_NAME = "log.partial"
HASH_READ_SIZE = 1024 * 1024


class Staging:
    def __init__(self, root: Path, *, max_open_files: int = 128, max_digests: int = 4096) -> None:
        self.root = root
        self._fds: OrderedDict[str, int] = OrderedDict()
        self._digests: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._max_open_files = max_open_files
        self._max_digests = max_digests

    def path(self, run_id: str) -> Path:
        return self.root / run_id / PARTIAL_NAME

    def has(self, run_id: str) -> bool:
        return run_id in self._fds or self.path(run_id).exists()

    def end(self, run_id: str) -> int:
        """Bytes written so far; 0 for a run with no partial log."""
        if run_id in self._fds:
            return os.fstat(self._fds[run_id]).st_size
        try:
            return self.path(run_id).stat().st_size
        except FileNotFoundError:
            return 0

    def write(self, run_id: str, offset: int, data: bytes) -> int:
        """Write the part of `data` past the current end; returns the new end. Raises LogGap."""
        fd = self._open(run_id)
        end = os.fstat(fd).st_size
        if offset > end:
            raise LogGap(run_id, end, offset)
        new = memoryview(data)[end - offset :]
        if not new:
            return end
        position = end
        while new:
            written = os.pwrite(fd, new, position)
            self._hash(run_id, new[:written], position)
            position += written
            new = new[written:]
        return position

    def ensure(self, run_id: str) -> None:
        self._open(run_id)

    def running_digest(self, run_id: str, size: int) -> str | None:
        """SHA-256 of the first `size` bytes if the running digest covers exactly them."""
        running = self._digests.get(run_id)
        if running is not None and running[1] == size:
            return str(running[0].hexdigest())
        return None

    def file_digest(self, run_id: str, size: int) -> str:
        """SHA-256 of the first `size` bytes read back from disk; blocking, and touches no shared state,
        so it may run in a thread."""
        sha = hashlib.sha256()
        with self.path(run_id).open("rb") as file:
            remaining = size
            while remaining > 0:
                block = file.read(min(HASH_READ_SIZE, remaining))
                if not block:
                    raise OSError(f"{self.path(run_id)} is shorter than {size} bytes")
                sha.update(block)
                remaining -= len(block)
        return sha.hexdigest()

    def fsync_file(self, run_id: str) -> None:
        """Flush the partial log to disk; blocking, touches no shared state (any descriptor will do)."""
        fd = os.open(self.path(run_id), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def discard(self, run_id: str, *, delete: bool) -> None:
        fd = self._fds.pop(run_id, None)
        if fd is not None:
            os.close(fd)
        self._digests.pop(run_id, None)
        if delete:
            self.path(run_id).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self.path(run_id).parent.rmdir()

    def stale(self, older_than: datetime) -> list[str]:
        """Runs whose partial log was last written before `older_than`."""
        cutoff = older_than.timestamp()
        runs = []
        for path in self.root.glob(f"*/{PARTIAL_NAME}"):
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < cutoff:
                    runs.append(path.parent.name)
        return runs

    def close(self) -> None:
        for run_id in list(self._fds):
            self.discard(run_id, delete=False)
        self._digests.clear()

    def _open(self, run_id: str) -> int:
        fd = self._fds.get(run_id)
        if fd is not None:
            self._fds.move_to_end(run_id)
            return fd
        path = self.path(run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        self._fds[run_id] = fd
        if os.fstat(fd).st_size == 0 and run_id not in self._digests:
            self._digests[run_id] = (hashlib.sha256(), 0)
        while len(self._fds) > self._max_open_files:
            _, oldest = self._fds.popitem(last=False)
            os.close(oldest)
        return fd

    def _hash(self, run_id: str, new: memoryview, position: int) -> None:
        running = self._digests.get(run_id)
        if running is None:
            return
        sha, hashed = running
        if hashed != position:
            del self._digests[run_id]
            return
        sha.update(new)
        self._digests[run_id] = (sha, hashed + len(new))
        self._digests.move_to_end(run_id)
        while len(self._digests) > self._max_digests:
            self._digests.popitem(last=False)
