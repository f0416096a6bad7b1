"""A run's local workspace: its artifact directory and its state file, kept in the archive after the run.

The dispatcher has the files on its own disk when the run ends, so it hands them to the archive itself
(`put_file`), before it records the terminal event: a run that reads as ended lists its artifacts. The
state file of a job lives in the archive under the pseudo-run `job-<job id>` and is copied into the
next run's workspace before it starts. See docs/decisions/0171-artifacts-and-run-state.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil
import tempfile
import uuid
from pathlib import Path

from contracts.base import JsonObject
from shared.archive.base import Archive

log = logging.getLogger(__name__)

ARTIFACTS_ENV = "BATCHYARD_ARTIFACTS"
STATE_ENV = "BATCHYARD_STATE"
STATE_FILE = "state"


def state_owner(job_id: uuid.UUID) -> str:
    """The archive area holding a job's state: a plain token, like a run id, so it passes the same
    checks and never collides with a run (whose ids are bare UUIDs)."""
    return f"job-{job_id}"


SPARES = 2
"""Workspaces made ahead of the runs that will take them. Under the store's steady fsyncs, two `mkdir`s
and a file creation on the journalled /tmp take 2-4 ms (0.1 ms on an idle disk), and they sat on every
local run's path to `RunStarted` (docs/decisions/0176)."""


def _make_private(root: Path) -> None:
    """Private to the run's user, and refused if the name exists: like `mkdtemp`."""
    root.mkdir(mode=0o700)
    (root / "artifacts").mkdir()
    (root / STATE_FILE).touch()


class _Spares:
    """Empty workspaces waiting for runs, made in a worker thread so a slow disk never holds the event
    loop or a run; a run that finds none makes its own, as before."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._ready: list[Path] = []
        self._making: asyncio.Task[None] | None = None

    def take(self) -> Path | None:
        return self._ready.pop() if self._ready else None

    def refill_soon(self) -> None:
        if len(self._ready) < self.size and (self._making is None or self._making.done()):
            self._making = asyncio.get_running_loop().create_task(self._refill(), name="workspace-spares")

    async def _refill(self) -> None:
        while len(self._ready) < self.size:
            root = Path(tempfile.gettempdir()) / f"batchyard-run-{secrets.token_hex(8)}"
            try:
                await asyncio.to_thread(_make_private, root)
            except OSError as exc:
                log.warning("could not make a spare run workspace (%s); runs make their own", exc)
                return
            self._ready.append(root)

    async def remove_all(self) -> None:
        """Remove the spares (on shutdown), waiting for one being made."""
        if self._making is not None:
            with contextlib.suppress(Exception):
                await self._making
        roots, self._ready = self._ready, []
        for root in roots:
            await asyncio.to_thread(shutil.rmtree, root, True)


spares = _Spares(SPARES)


class RunWorkspace:
    def __init__(
        self, run_id: str, root: Path, job_id: uuid.UUID | None, keeps_state: bool, made: bool = False
    ) -> None:
        self.run_id = run_id
        self.root = root
        self.made = made
        self.artifacts = root / "artifacts"
        self.state = root / STATE_FILE
        self.job_id = job_id
        self.keeps_state = keeps_state and job_id is not None

    @classmethod
    def plan(cls, run_id: str, job_id: uuid.UUID | None, keeps_state: bool) -> RunWorkspace:
        """A spare workspace made ahead (already on disk), else a name for one `create` makes, so the
        run's process can be prepared with its paths meanwhile: both sit before `RunStarted`."""
        spare = spares.take()
        if spare is not None:
            return cls(run_id, spare, job_id, keeps_state, made=True)
        root = Path(tempfile.gettempdir()) / f"batchyard-run-{run_id}-{secrets.token_hex(4)}"
        return cls(run_id, root, job_id, keeps_state)

    async def create(self, archive: Archive) -> None:
        if not self.made:
            await asyncio.to_thread(_make_private, self.root)
            self.made = True
        spares.refill_soon()
        if self.keeps_state and self.job_id is not None:
            with contextlib.suppress(FileNotFoundError):
                await archive.get_file(state_owner(self.job_id), STATE_FILE, self.state)

    def with_env(self, payload: JsonObject) -> JsonObject:
        """The payload with the workspace's paths in its env, which every step inherits."""
        env = dict(payload.get("env") or {})
        env[ARTIFACTS_ENV] = str(self.artifacts)
        env[STATE_ENV] = str(self.state)
        return {**payload, "env": env}

    async def keep(self, archive: Archive, succeeded: bool) -> None:
        """Store the artifacts, and the state when the run succeeded (a failed run's half-written state
        must not become the next run's input), then remove the workspace."""
        try:
            for path in sorted(self.artifacts.rglob("*")):
                if path.is_file() and not path.is_symlink():
                    name = path.relative_to(self.artifacts).as_posix()
                    try:
                        await archive.put_file(self.run_id, name, path)
                    except (OSError, ValueError) as exc:
                        log.warning("artifact %r of run %s not stored: %s", name, self.run_id, exc)
            if self.keeps_state and succeeded and self.job_id is not None:
                await archive.put_file(state_owner(self.job_id), STATE_FILE, self.state)
        finally:
            await self.remove()

    async def remove(self) -> None:
        await asyncio.to_thread(shutil.rmtree, self.root, True)
