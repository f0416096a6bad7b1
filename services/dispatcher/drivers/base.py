"""What every driver offers the dispatcher: local processes today, Docker and Nomad next.

A start has two phases so that a redelivered `RunRendered` can never run the work twice: `prepare`
creates the work without letting it run (a process held at a gate, a created but unstarted container, a
computed Nomad job id) and yields the handle `RunStarted` records; only after that event is committed does
the dispatcher `launch` it, and when the append loses a race it `discard`s it instead. Timeouts and
stops are the same for every orchestrator (ask politely, wait the grace period, then force), so they live
here and drivers only supply the primitives.
"""

from __future__ import annotations

import asyncio
import signal
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal, Protocol

from contracts.base import JsonObject
from contracts.logs import LogFd


class StartFailed(Exception):
    """The work could not be created (bad payload, command not found, missing directory): the run fails
    with `reason`, and nothing ever ran."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LogSink(Protocol):
    """Where a driver writes a run's output, in the order it reads it; awaiting is the backpressure."""

    async def write(self, fd: LogFd, data: bytes) -> None: ...


@dataclass(frozen=True)
class ExitStatus:
    """How the work ended on its own terms: an exit code, or the signal that killed it."""

    exit_code: int | None = None
    signal: int | None = None


@dataclass(frozen=True)
class Limits:
    timeout_s: float | None
    stop_grace_s: float


OutcomeKind = Literal["succeeded", "failed", "timed_out", "stopped", "lost"]


@dataclass(frozen=True)
class Outcome:
    """How a run ended, ready to become its terminal event."""

    kind: OutcomeKind
    exit: ExitStatus
    reason: str
    stopped_by: str | None = None
    timeout_s: float | None = None


@dataclass(frozen=True)
class _Stop:
    actor: str
    reason: str
    grace_s: float | None


class Execution(ABC):
    """One run's work on an orchestrator, from prepared to ended."""

    def __init__(self, handle: JsonObject, limits: Limits) -> None:
        self.handle = handle
        self.limits = limits
        self._stop: _Stop | None = None
        self._stop_asked = asyncio.Event()

    @abstractmethod
    async def _release(self) -> None:
        """Let the prepared work begin."""

    @abstractmethod
    async def _abort(self) -> None:
        """Remove prepared work that never began."""

    @abstractmethod
    async def _terminate(self) -> None:
        """Ask the work to end (SIGTERM or the orchestrator's equivalent)."""

    @abstractmethod
    async def _kill(self) -> None:
        """Force the work to end now."""

    @abstractmethod
    async def _exited(self) -> ExitStatus:
        """Wait until the work has ended and all its output has reached the log sink."""

    async def launch(self) -> None:
        await self._release()

    async def discard(self) -> None:
        await self._abort()

    async def force_end(self) -> None:
        """End the work now, without grace: for when the dispatcher itself can no longer watch it."""
        await self._kill()

    def request_stop(self, actor: str, reason: str, grace_s: float | None = None) -> None:
        """Ask the run to stop; the first request wins, later ones are ignored."""
        if self._stop is None:
            self._stop = _Stop(actor, reason, grace_s)
            self._stop_asked.set()

    async def outcome(self) -> Outcome:
        """Watch the launched work until it ends: exit, timeout or stop, whichever comes first."""
        exited = asyncio.ensure_future(self._exited())
        stop_asked = asyncio.ensure_future(self._stop_asked.wait())
        try:
            await asyncio.wait(
                {exited, stop_asked}, timeout=self.limits.timeout_s, return_when="FIRST_COMPLETED"
            )
        finally:
            stop_asked.cancel()
        if exited.done() and self._stop is None:
            return _natural(exited.result())
        stop = self._stop
        grace = self.limits.stop_grace_s if stop is None or stop.grace_s is None else stop.grace_s
        status = await self._end(exited, grace)
        if stop is None:
            timeout = self.limits.timeout_s
            return Outcome("timed_out", status, f"timed out after {timeout:g} s", timeout_s=timeout)
        return Outcome("stopped", status, stop.reason, stopped_by=stop.actor)

    async def _end(self, exited: asyncio.Future[ExitStatus], grace_s: float) -> ExitStatus:
        if not exited.done():
            await self._terminate()
            await asyncio.wait({exited}, timeout=grace_s)
        if not exited.done():
            await self._kill()
        return await exited


def _natural(status: ExitStatus) -> Outcome:
    if status.signal is not None:
        return Outcome("failed", status, f"killed by signal {signal_name(status.signal)}")
    if status.exit_code == 0:
        return Outcome("succeeded", status, "exited with code 0")
    return Outcome("failed", status, f"exited with code {status.exit_code}")


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


class Driver(Protocol):
    """An orchestrator as the dispatcher sees it; `name` is the `driver` of `RunRendered`."""

    name: str

    async def prepare(self, run_id: str, payload: JsonObject, logs: LogSink) -> Execution:
        """Create the run's work without letting it begin; raises StartFailed when it cannot exist."""
        ...

    async def end_orphan(self, handle: JsonObject) -> None:
        """The dispatcher that launched this work died: end whatever is left of it that this dispatcher
        can reach, so a run recorded as lost is not still running. A driver whose orchestrator keeps
        work alive on its own (Docker, Nomad) will instead offer to re-attach; see
        docs/decisions/0051-dispatcher-leases-and-lost-runs.md."""
        ...
