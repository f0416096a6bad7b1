"""Following one task's stdout or stderr through Nomad's `fs/logs`, resuming by byte offset.

A followed log stream never ends by itself in Nomad, not even when the task dies, so the follower is
told when the task is over; it then stops following and reads once more without `follow` from the
offset it reached, which returns exactly the bytes it had not seen and then ends. A broken stream is
reopened at that same offset, so nothing is read twice. Offsets count bytes across Nomad's rotated log
files (`<task>.stdout.0`, `.1`, ...) as long as Nomad still keeps them (`LogConfig.MaxFiles`).
See docs/decisions/0105-nomad-log-streaming.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable

from services.dispatcher.drivers.base import LogSink
from services.dispatcher.drivers.nomad_api import LogFrame, LogType, NomadClient, NomadError, NomadUnreachable

log = logging.getLogger(__name__)

RETRY_FIRST_S = 0.1
RETRY_MAX_S = 2.0
FINAL_READ_ATTEMPTS = 3
FINAL_READ_TIMEOUT_S = 30.0


class TaskLogFollower:
    def __init__(
        self,
        client: NomadClient,
        alloc_id: str,
        task: str,
        log_type: LogType,
        sink: LogSink,
        *,
        offset: int = 0,
        namespace: str | None = None,
    ) -> None:
        self.client = client
        self.alloc_id = alloc_id
        self.task = task
        self.log_type = log_type
        self.sink = sink
        self.offset = offset
        self.namespace = namespace
        self._over = asyncio.Event()
        self.runner: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.runner = asyncio.create_task(self._run(), name=f"nomad-log-{self.alloc_id[:8]}-{self.task}")

    def task_over(self) -> None:
        self._over.set()

    async def finished(self) -> None:
        if self.runner is not None:
            await asyncio.shield(self.runner)

    async def _run(self) -> None:
        delay = RETRY_FIRST_S
        while not self._over.is_set():
            try:
                await self._stream(follow=True)
            except (NomadError, NomadUnreachable) as exc:
                log.debug("log stream of %s/%s %s broke: %s", self.alloc_id, self.task, self.log_type, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._over.wait(), delay)
            delay = min(delay * 2, RETRY_MAX_S)
        for attempt in range(FINAL_READ_ATTEMPTS):
            try:
                await asyncio.wait_for(self._stream(follow=False), FINAL_READ_TIMEOUT_S)
                return
            except (NomadError, NomadUnreachable, TimeoutError) as exc:
                if isinstance(exc, NomadError) and exc.status == 404:
                    return
                log.debug("final log read of %s/%s failed: %s", self.alloc_id, self.task, exc)
                await asyncio.sleep(RETRY_FIRST_S * 2**attempt)
        log.warning(
            "the rest of the %s of task %s in allocation %s could not be read from Nomad",
            self.log_type,
            self.task,
            self.alloc_id,
        )

    async def _stream(self, follow: bool) -> None:
        async with self.client.log_frames(
            self.alloc_id,
            self.task,
            self.log_type,
            offset=self.offset,
            follow=follow,
            namespace=self.namespace,
        ) as reader:
            while True:
                frames = await (self._unless_over(reader.next_frames()) if follow else reader.next_frames())
                if frames is None:
                    return
                await self._write(frames)

    async def _write(self, frames: list[LogFrame]) -> None:
        for frame in frames:
            if frame.data:
                await self.sink.write(self.log_type, frame.data)
                self.offset += len(frame.data)

    async def _unless_over(self, read: Awaitable[list[LogFrame] | None]) -> list[LogFrame] | None:
        """The next frames, or None as soon as the task is over (only the read is cancelled, never a
        write to the sink, so the offset always matches what the log received)."""
        reading = asyncio.ensure_future(read)
        over = asyncio.ensure_future(self._over.wait())
        try:
            await asyncio.wait({reading, over}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            reading.cancel()
            raise
        finally:
            over.cancel()
        if reading.done():
            return reading.result()
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading
        if reading.done() and not reading.cancelled():
            return reading.result()
        return None
