"""Starting, watching, stopping and ending runs: the dispatcher's decisions against the event store.

Every append goes through `_append_decided`: read the run's stream, decide from its state (refusing
what the run lifecycle refuses), append at that version, and on a concurrency error read and decide
again. That is what makes every handler idempotent: a redelivered `RunRendered` finds the run started
and does nothing; a terminal event that races a stop request is re-decided, never duplicated. See
docs/decisions/0050-dispatcher-start-gate.md for why a run is prepared, recorded, then launched.

A run staged ahead of its tick (`start_at`, decision 0175) is prepared at once and held, its message
parked, until its time; then it starts, unless its job was paused, deleted or rescheduled meanwhile
(it is withdrawn: stopped before it started, with the reason) or a stop was requested.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg
from nats.js import JetStreamContext

from contracts import streams
from contracts.base import Event, JsonObject
from contracts.envelope import EventMeta, RecordedEvent
from contracts.events.runs import (
    RunAdopted,
    RunFailed,
    RunLost,
    RunRendered,
    RunRequested,
    RunStarted,
    RunStopped,
    RunStopRequested,
    RunSucceeded,
    RunTimedOut,
)
from contracts.streams import stream_key
from services.dispatcher.adoption import (
    PublishedLog,
    Reattach,
    ResumedMaskingLogPublisher,
    detach,
    published_log,
    reattacher,
)
from services.dispatcher.drivers.base import Driver, Execution, LogSink, Outcome, StartFailed
from services.dispatcher.drivers.pipeline import StepReporting
from services.dispatcher.intake import HandBack, parked
from services.dispatcher.logs import LogPublisher
from services.dispatcher.secrets import MaskingLogPublisher, mask_reason, open_payload
from services.dispatcher.steps import StepRecorder
from services.dispatcher.workspace import RunWorkspace
from shared.archive.base import Archive
from shared.bus.cancellation import raise_if_cancelling
from shared.domain.run_lifecycle import RunState, RunStatus, evolve, refusal, run_state
from shared.eventstore.errors import ConcurrencyError
from shared.eventstore.store import NO_STREAM, EventStore
from shared.secrets import Keyring

log = logging.getLogger(__name__)

STORE_RETRY_S = 0.5
SHUTDOWN_REASON = "dispatcher shutting down"


@dataclass
class ActiveRun:
    """A run this dispatcher holds, from the moment it starts preparing it until its end is recorded."""

    stream_id: str
    run_id: uuid.UUID
    correlation_id: str
    secrets: frozenset[str] = frozenset()
    execution: Execution | None = None
    started_id: uuid.UUID | None = None
    stop_cause: uuid.UUID | None = None
    supervisor: asyncio.Task[None] | None = None
    pending_stops: list[tuple[str, str, float | None]] = field(default_factory=list)
    workspace: RunWorkspace | None = None
    steps: StepRecorder | None = None
    stop_seen: asyncio.Event = field(default_factory=asyncio.Event)

    def stop(self, actor: str, reason: str, grace_s: float | None) -> None:
        if self.execution is None:
            self.pending_stops.append((actor, reason, grace_s))
            self.stop_seen.set()
        else:
            self.execution.request_stop(actor, reason, grace_s)


def terminal_event(run_id: uuid.UUID, outcome: Outcome) -> Event:
    if outcome.kind == "succeeded":
        return RunSucceeded(run_id=run_id)
    if outcome.kind == "timed_out":
        return RunTimedOut(run_id=run_id, timeout_s=outcome.timeout_s or 0.0)
    if outcome.kind == "lost":
        return RunLost(run_id=run_id, reason=outcome.reason)
    if outcome.kind == "stopped":
        return RunStopped(run_id=run_id, stopped_by=outcome.stopped_by or "unknown", reason=outcome.reason)
    return RunFailed(
        run_id=run_id, exit_code=outcome.exit.exit_code, signal=outcome.exit.signal, reason=outcome.reason
    )


class RunDispatcher:
    def __init__(
        self,
        store: EventStore,
        js: JetStreamContext,
        prefix: str,
        identity: str,
        drivers: dict[str, Driver],
        *,
        log_in_flight_per_run: int = 16,
        log_in_flight_total: int = 128,
        keyring: Keyring | None = None,
    ) -> None:
        self.store = store
        self.js = js
        self.prefix = prefix
        self.identity = identity
        self.drivers = drivers
        self.keyring = keyring
        self.log_in_flight_per_run = log_in_flight_per_run
        self._log_budget = asyncio.Semaphore(log_in_flight_total)
        self.active: dict[str, ActiveRun] = {}
        self.archive: Archive | None = None
        # Why a staged run must not start any more (its job changed), from the scheduler's job index.
        self.withdrawal: Callable[[uuid.UUID, datetime.datetime], str | None] = lambda _job, _at: None
        self.closing = asyncio.Event()

    def _meta(self, correlation_id: str, causation_id: uuid.UUID | None) -> EventMeta:
        return EventMeta(
            actor=self.identity,
            correlation_id=correlation_id,
            causation_id=str(causation_id) if causation_id else None,
        )

    def _log_publisher(
        self, run_id: uuid.UUID, secrets: frozenset[str] = frozenset(), start: int = 0
    ) -> LogPublisher:
        """`start` is the next offset of a log another dispatcher began, so offsets stay contiguous."""
        publisher = (
            MaskingLogPublisher(
                self.js,
                self.prefix,
                str(run_id),
                self._log_budget,
                secrets,
                max_in_flight=self.log_in_flight_per_run,
            )
            if secrets
            else LogPublisher(
                self.js, self.prefix, str(run_id), self._log_budget, max_in_flight=self.log_in_flight_per_run
            )
        )
        publisher.offset = start
        return publisher

    def _resumed_masking_publisher(
        self, run_id: uuid.UUID, secrets: frozenset[str], published: PublishedLog
    ) -> LogPublisher:
        publisher = ResumedMaskingLogPublisher(
            self.js,
            self.prefix,
            str(run_id),
            self._log_budget,
            secrets,
            max_in_flight=self.log_in_flight_per_run,
        )
        publisher.offset = published.size
        publisher.skip = dict(published.by_fd)
        return publisher

    async def state(self, stream_id: str) -> RunState:
        return run_state(await self.store.read_stream(stream_id))

    async def _append_decided(
        self,
        stream_id: str,
        decide: Callable[[RunState], Event | None],
        meta: EventMeta,
        known: RunState | None = None,
        before: Callable[[], Awaitable[object]] | None = None,
    ) -> RecordedEvent | None:
        """Append what `decide` makes of the run's current state, re-deciding if the stream moves first;
        None when there is nothing (any more) to record. `known` saves the first read when the caller
        already holds the state it expects (a stale one only costs a concurrency error and a re-read).
        `before` runs once something is to be recorded, just before the append: the log's end marker
        must be stored before the event that ends the run, and only for a run that ends here."""
        state = known
        while True:
            if state is None:
                state = await self.state(stream_id)
            event = decide(state)
            if event is None:
                return None
            reason = refusal(state, event)
            if reason is not None:
                log.info("%s for %s not recorded: %s", event.event_type(), stream_id, reason)
                return None
            if before is not None:
                await before()
                before = None
            try:
                recorded = await self.store.append(
                    stream_id, [event], expected_version=state.version, meta=meta
                )
            except ConcurrencyError:
                state = None
                continue
            return recorded[0]

    async def _append_persistently(
        self, stream_id: str, decide: Callable[[RunState], Event | None], meta: EventMeta, known: RunState
    ) -> RecordedEvent | None:
        """Like `_append_decided`, riding out a database outage: a run's end must not be forgotten."""
        while True:
            try:
                return await self._append_decided(stream_id, decide, meta, known)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                raise_if_cancelling()
                log.warning("recording the end of %s failed (%s); retrying", stream_id, exc)
            await asyncio.sleep(STORE_RETRY_S)

    async def on_rendered(self, event: RecordedEvent) -> None:
        """Start a rendered run; returns once `RunStarted` (or the reason it will not start) is recorded.
        A run Nomad's periodic block launched was recorded started with its rendering: nothing to do."""
        stream_id = event.stream_id
        if stream_id in self.active:
            return
        rendered = RunRendered.model_validate(event.data)
        if rendered.periodic_parent is not None:
            return
        run_id = rendered.run_id
        meta = self._meta(event.correlation_id, event.id)
        try:
            payload, secrets = open_payload(rendered, self.keyring)
        except StartFailed as exc:
            logs = self._log_publisher(run_id)
            await self._append_decided(
                stream_id, _fail_unstarted(run_id, exc.reason), meta, before=logs.finish
            )
            return
        state = RunState(
            version=event.stream_version,
            status=RunStatus.RENDERED,
            driver=rendered.driver,
            payload=payload,
        )
        driver = self.drivers.get(state.driver or "")
        if driver is None:
            reason = (
                f"no {state.driver!r} driver in this dispatcher (it has: {', '.join(sorted(self.drivers))})"
            )
            logs = self._log_publisher(run_id)
            await self._append_decided(stream_id, _fail_unstarted(run_id, reason), meta, before=logs.finish)
            return
        active = ActiveRun(stream_id, run_id, event.correlation_id, secrets)
        self.active[stream_id] = active
        try:
            await self._start(active, driver, state, meta, rendered.start_at)
        finally:
            if active.supervisor is None:
                self.active.pop(stream_id, None)

    async def _start(
        self,
        active: ActiveRun,
        driver: Driver,
        state: RunState,
        meta: EventMeta,
        start_at: datetime.datetime | None = None,
    ) -> None:
        logs = self._log_publisher(active.run_id, active.secrets)
        try:
            execution = await self._prepare(active, driver, state.payload or {}, logs)
        except StartFailed as exc:
            await self._drop_workspace(active)
            decide = _fail_unstarted(active.run_id, mask_reason(exc.reason, active.secrets))
            await self._append_decided(active.stream_id, decide, meta, before=logs.finish)
            return
        except Exception as exc:
            await self._drop_workspace(active)
            reason = mask_reason(f"the {driver.name} driver could not start the run: {exc}", active.secrets)
            log.error("%s: %s", active.stream_id, reason, exc_info=not active.secrets)
            decide = _fail_unstarted(active.run_id, reason)
            await self._append_decided(active.stream_id, decide, meta, before=logs.finish)
            return
        if start_at is not None:
            try:
                withdrawn = await self._hold_until(active, start_at)
            except BaseException:
                await execution.discard()
                await self._drop_workspace(active)
                raise
            if withdrawn is not None:
                await execution.discard()
                await self._drop_workspace(active)
                await self._withdraw(active, state, withdrawn, meta, logs)
                return
        started = RunStarted(run_id=active.run_id, dispatcher=self.identity, handle=execution.handle)
        try:
            recorded = await self.store.append(
                active.stream_id, [started], expected_version=state.version, meta=meta
            )
        except BaseException as exc:
            await execution.discard()
            await self._drop_workspace(active)
            if isinstance(exc, ConcurrencyError):
                await self._record_stopped_before_start(
                    active.stream_id, active.run_id, active.correlation_id
                )
                return
            raise
        active.execution = execution
        active.started_id = recorded[0].id
        for actor, reason, grace_s in active.pending_stops:
            execution.request_stop(actor, reason, grace_s)
        if isinstance(execution, StepReporting):
            active.steps = StepRecorder(
                self.store, active.stream_id, self._meta(active.correlation_id, active.started_id)
            )
            execution.on_step = active.steps.add
        await execution.launch()
        active.supervisor = asyncio.create_task(
            self._supervise(active, execution, logs, evolve(state, recorded[0])), name=f"run-{active.run_id}"
        )

    async def _prepare(
        self, active: ActiveRun, driver: Driver, payload: JsonObject, logs: LogSink
    ) -> Execution:
        """Local runs get an artifact directory and a state file (docs/decisions/0171), made while the
        process is prepared: each takes a few milliseconds of system calls before `RunStarted`."""
        if self.archive is None or driver.name != "local":
            return await driver.prepare(str(active.run_id), payload, logs)
        job_id = await self._job_of(active.stream_id) if payload.get("state") else None
        workspace = RunWorkspace.plan(str(active.run_id), job_id, bool(payload.get("state")))
        active.workspace = workspace
        prepared, made = await asyncio.gather(
            driver.prepare(str(active.run_id), workspace.with_env(payload), logs),
            workspace.create(self.archive),
            return_exceptions=True,
        )
        if isinstance(prepared, BaseException):
            raise prepared
        if isinstance(made, BaseException):
            await prepared.discard()
            raise made
        return prepared

    async def _hold_until(self, active: ActiveRun, start_at: datetime.datetime) -> str | None:
        """Wait, parked, until a staged run's time (or a stop request, which its start then meets);
        returns why it must not start, if its job changed meanwhile. A dispatcher shutting down hands
        the run back unstarted to another replica."""
        requested = await self._request_of(active.stream_id)
        delay = (start_at - datetime.datetime.now(datetime.UTC)).total_seconds()
        if delay > 0:
            async with parked():
                waits = [
                    asyncio.ensure_future(active.stop_seen.wait()),
                    asyncio.ensure_future(self.closing.wait()),
                ]
                try:
                    await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiting in waits:
                        waiting.cancel()
        if self.closing.is_set():
            raise HandBack
        if requested is None or requested[0] is None:
            return None
        return self.withdrawal(requested[0], requested[1])

    async def _withdraw(
        self, active: ActiveRun, state: RunState, reason: str, meta: EventMeta, logs: LogPublisher
    ) -> None:
        """A staged run whose job changed before its tick is stopped before it started, with the reason,
        in one append: the stop request and its outcome."""
        events: list[Event] = [
            RunStopRequested(run_id=active.run_id),
            RunStopped(run_id=active.run_id, stopped_by=self.identity, reason=reason),
        ]
        await logs.finish()
        try:
            await self.store.append(active.stream_id, events, expected_version=state.version, meta=meta)
        except ConcurrencyError:
            await self._record_stopped_before_start(active.stream_id, active.run_id, active.correlation_id)
            return
        log.info("%s withdrawn: %s", active.stream_id, reason)

    async def _request_of(self, stream_id: str) -> tuple[uuid.UUID | None, datetime.datetime] | None:
        """The job of a run and when it was requested."""
        for recorded in await self.store.read_stream(stream_id):
            if recorded.type == RunRequested.event_type():
                return RunRequested.model_validate(recorded.data).job_id, recorded.time
        return None

    async def _job_of(self, stream_id: str) -> uuid.UUID | None:
        requested = await self._request_of(stream_id)
        return requested[0] if requested is not None else None

    async def _drop_workspace(self, active: ActiveRun) -> None:
        if active.workspace is not None:
            await active.workspace.remove()

    async def _keep_workspace(self, active: ActiveRun, succeeded: bool) -> None:
        """Step events and artifacts are recorded before the terminal event, so a run that reads as
        ended shows all its steps and lists all its artifacts."""
        if active.steps is not None:
            await active.steps.flush()
        if active.workspace is not None and self.archive is not None:
            try:
                await active.workspace.keep(self.archive, succeeded)
            except Exception:
                log.exception("the files of %s could not be kept", active.stream_id)

    async def _record_stopped_before_start(
        self, stream_id: str, run_id: uuid.UUID, correlation_id: str
    ) -> None:
        """The stream moved on before the run started; if a stop request moved it, the run ends here."""

        def decide(state: RunState) -> Event | None:
            request = state.stop_request
            if state.status is not RunStatus.RENDERED or request is None:
                return None
            return RunStopped(
                run_id=run_id,
                stopped_by=request.actor,
                reason=f"stopped by {request.actor} before it started",
            )

        state = await self.state(stream_id)
        causation = state.stop_request.event_id if state.stop_request else None
        meta = self._meta(correlation_id, causation)
        logs = self._log_publisher(run_id)
        await self._append_decided(stream_id, decide, meta, known=state, before=logs.finish)

    async def _supervise(
        self, active: ActiveRun, execution: Execution, logs: LogPublisher, running: RunState
    ) -> None:
        try:
            try:
                outcome = await execution.outcome()
                await self._keep_workspace(active, outcome.kind == "succeeded")
                await logs.finish()
                ended = terminal_event(active.run_id, outcome)
                stopped = outcome.kind == "stopped" and active.stop_cause is not None
                cause = active.stop_cause if stopped else active.started_id
            except Exception as exc:
                reason = mask_reason(f"the dispatcher failed watching the run: {exc}", active.secrets)
                log.error("%s: %s; ending it as lost", active.stream_id, reason, exc_info=not active.secrets)
                await execution.force_end()
                ended = RunLost(run_id=active.run_id, reason=reason)
                cause = active.started_id

            def decide(state: RunState) -> Event | None:
                if state.terminal:
                    log.warning("%s already ended as %s; %s dropped", active.stream_id, state.status, ended)
                    return None
                if state.dispatcher != self.identity:
                    log.warning("%s was adopted by %s; %s dropped", active.stream_id, state.dispatcher, ended)
                    return None
                return ended

            meta = self._meta(active.correlation_id, cause)
            await self._append_persistently(active.stream_id, decide, meta, running)
        except Exception:
            log.exception("recording the end of %s failed", active.stream_id)
        finally:
            self.active.pop(active.stream_id, None)

    async def record_launch(
        self,
        requested: RunRequested,
        rendered: RunRendered,
        handle: JsonObject,
        secrets: frozenset[str],
        elapsed_s: float,
        correlation_id: str,
    ) -> bool:
        """Record a run that Nomad's periodic block launched, then follow it like an adopted run.

        Its request, the rendering its parent was registered from, and its start are appended together
        at version 0 of the run's stream (docs/decisions/0173): however many dispatchers see the launch,
        one records it, and no renderer or dispatcher ever acts on the request or the rendering alone.
        False when the run was already recorded. The run is in `active` before the append, so a stop
        request seen meanwhile is held, not lost."""
        run_id = requested.run_id
        stream_id = streams.stream_id(streams.RUN, run_id)
        driver = self.drivers.get(rendered.driver)
        follow = reattacher(driver) if driver is not None else None
        if stream_id in self.active or follow is None:
            return False
        active = ActiveRun(stream_id, run_id, correlation_id, secrets)
        self.active[stream_id] = active
        try:
            started = RunStarted(run_id=run_id, dispatcher=self.identity, handle=handle)
            try:
                recorded = await self.store.append(
                    stream_id,
                    [requested, rendered, started],
                    expected_version=NO_STREAM,
                    meta=self._meta(correlation_id, None),
                )
            except ConcurrencyError:
                return False
            logs = self._log_publisher(run_id, secrets)
            failure: str | None = None
            try:
                execution = await follow(str(run_id), handle, logs, PublishedLog(), elapsed_s)
            except Exception as exc:
                failure = mask_reason(str(exc), secrets)
                execution = None
            meta = self._meta(correlation_id, recorded[-1].id)
            if execution is None:
                reason = f"Nomad launched {handle.get('job_id')}, but it could not be followed: " + (
                    failure or "it no longer exists"
                )
                await self._append_decided(
                    stream_id, _lose(run_id, self.identity, reason), meta, before=logs.finish
                )
                return True
            active.execution = execution
            active.started_id = recorded[-1].id
            for actor, reason, grace_s in active.pending_stops:
                execution.request_stop(actor, reason, grace_s)
            active.supervisor = asyncio.create_task(
                self._supervise(active, execution, logs, run_state(recorded)), name=f"run-{run_id}"
            )
            return True
        finally:
            if active.supervisor is None:
                self.active.pop(stream_id, None)

    async def on_stop_requested(self, event: RecordedEvent) -> None:
        """A stop request from the shared consumer: end a run that never started, or stop our own."""
        stream_id = event.stream_id
        if stream_id in self.active:
            self.stop_requested(event)
            return
        state = await self.state(stream_id)
        if state.status is RunStatus.RENDERED:
            await self._record_stopped_before_start(
                stream_id, uuid.UUID(str(event.data["run_id"])), event.correlation_id
            )

    def stop_requested(self, event: RecordedEvent) -> bool:
        """A stop request seen by this dispatcher; acts only on a run it holds. True when it did."""
        active = self.active.get(event.stream_id)
        if active is None:
            return False
        request = RunStopRequested.model_validate(event.data)
        active.stop_cause = active.stop_cause or event.id
        active.stop(event.actor, f"stop requested by {event.actor}", request.grace_s)
        return True

    async def stop_all(self, reason: str, timeout_s: float) -> None:
        """Stop every run this dispatcher holds and wait until their ends are recorded."""
        for active in list(self.active.values()):
            active.stop(self.identity, reason, None)
        supervisors = [a.supervisor for a in self.active.values() if a.supervisor is not None]
        if supervisors:
            await asyncio.wait(supervisors, timeout=timeout_s)

    async def hand_over(self) -> int:
        """Stop following every run whose work outlives the dispatcher (Docker, Nomad) without touching
        the work: a dispatcher leaving on purpose lets its successor adopt them. Returns how many."""
        handed = 0
        for active in list(self.active.values()):
            if await self._let_go(active):
                handed += 1
        return handed

    async def _let_go(self, active: ActiveRun) -> bool:
        execution, supervisor = active.execution, active.supervisor
        if execution is None or supervisor is None or not hasattr(execution, "detach"):
            return False
        supervisor.cancel()
        await asyncio.gather(supervisor, return_exceptions=True)
        await detach(execution)
        self.active.pop(active.stream_id, None)
        return True

    async def release_lost(self) -> None:
        """Our lease lapsed and was swept: runs the store now says ended are not ours to run any more,
        and runs another dispatcher adopted are its to follow (we let go without touching the work)."""
        for active in list(self.active.values()):
            state = await self.state(active.stream_id)
            if state.terminal:
                active.stop(self.identity, "the run was recorded as lost", 0)
            elif state.dispatcher not in (None, self.identity):
                log.warning("%s was adopted by %s; letting go", active.stream_id, state.dispatcher)
                await self._let_go(active)

    async def release_unheld(self, stream_ids: list[str]) -> None:
        """Runs recorded as started by this dispatcher that it does not hold: a `RunStarted` whose
        commit was reported as failed although it went through. Nothing runs them, so they are lost."""
        for stream_id in stream_ids:
            if stream_id in self.active:
                continue
            reason = "the dispatcher does not hold this run: its start was never confirmed"
            decide = _lose(uuid.UUID(stream_key(stream_id)), self.identity, reason)
            if await self._append_decided(stream_id, decide, self._meta(f"sweep-{self.identity}", None)):
                log.warning("%s recorded as lost: %s", stream_id, reason)

    async def sweep(self, dispatcher: str, stream_ids: list[str]) -> None:
        """Take over the runs of a dispatcher whose lease lapsed: adopt those whose work outlives it
        (Docker, Nomad), end the others (local processes cannot be followed) as lost."""
        for stream_id in stream_ids:
            if stream_id in self.active:
                continue
            state = await self.state(stream_id)
            driver = self.drivers.get(state.driver or "")
            follow = reattacher(driver) if driver is not None else None
            try:
                if driver is not None and follow is not None:
                    await self._adopt(dispatcher, stream_id, driver, follow)
                else:
                    await self._lose_orphan(dispatcher, stream_id)
            except Exception:
                log.exception("taking over %s from %s failed", stream_id, dispatcher)

    async def _adopt(self, previous: str, stream_id: str, driver: Driver, follow: Reattach) -> None:
        """Record ourselves as the run's owner at its expected version (one sweeper wins), then follow
        the work from the handle, the log continuing at the offset the previous owner reached. The run
        is in `active` before the append, so a stop request seen meanwhile is held, not lost."""
        events = await self.store.read_stream(stream_id)
        state = run_state(events)
        run_id = uuid.UUID(stream_key(stream_id))
        started_at = next((e.time for e in reversed(events) if e.type == "RunStarted"), None)
        rendered = next((e for e in events if e.type == "RunRendered"), None)
        active = ActiveRun(stream_id, run_id, events[-1].correlation_id if events else f"sweep-{previous}")
        self.active[stream_id] = active
        try:

            def decide(current: RunState) -> Event | None:
                if current.status is not RunStatus.RUNNING or current.dispatcher != previous:
                    return None
                return RunAdopted(
                    run_id=run_id,
                    dispatcher=self.identity,
                    previous_dispatcher=previous,
                    handle=current.handle or {},
                )

            meta = self._meta(active.correlation_id, None)
            adopted = await self._append_decided(stream_id, decide, meta, known=state)
            if adopted is None:
                return
            log.warning("%s adopted from %s, whose lease lapsed", stream_id, previous)
            state = await self.state(stream_id)
            elapsed = (
                (datetime.datetime.now(datetime.UTC) - started_at).total_seconds() if started_at else 0.0
            )
            logs: LogPublisher | None = None
            failure: str | None = None
            try:
                if rendered is not None:
                    _, active.secrets = open_payload(RunRendered.model_validate(rendered.data), self.keyring)
                published = await published_log(self.js, self.prefix, str(run_id))
                if active.secrets:
                    logs = self._resumed_masking_publisher(run_id, active.secrets, published)
                    replay = PublishedLog()
                else:
                    logs, replay = self._log_publisher(run_id, start=published.size), published
                execution = await follow(str(run_id), state.handle or {}, logs, replay, elapsed)
            except Exception as exc:
                failure = mask_reason(f"re-attaching failed: {exc}", active.secrets)
                log.error("%s: %s", stream_id, failure, exc_info=not active.secrets)
                execution = None
            if execution is None or logs is None:
                reason = (
                    f"dispatcher {previous} went away while the run was running, and its {driver.name} "
                    f"work could not be followed: {failure or 'it no longer exists'}"
                )
                lost = _lose(run_id, self.identity, reason)
                finish = logs.finish if logs is not None else None
                await self._append_decided(stream_id, lost, meta, before=finish)
                if failure is not None and state.handle is not None:
                    await self._end_orphan(driver, stream_id, state.handle)
                return
            active.execution = execution
            active.started_id = adopted.id
            request = state.stop_request
            if request is not None:
                active.stop_cause = request.event_id
                execution.request_stop(request.actor, f"stop requested by {request.actor}", request.grace_s)
            for actor, reason, grace_s in active.pending_stops:
                execution.request_stop(actor, reason, grace_s)
            active.supervisor = asyncio.create_task(
                self._supervise(active, execution, logs, state), name=f"run-{run_id}"
            )
        finally:
            if active.supervisor is None:
                self.active.pop(stream_id, None)

    async def _end_orphan(self, driver: Driver, stream_id: str, handle: JsonObject) -> None:
        try:
            await driver.end_orphan(handle)
        except Exception:
            log.exception("could not end what is left of %s", stream_id)

    async def _lose_orphan(self, dispatcher: str, stream_id: str) -> None:
        """The loss is recorded before what is left of the process is killed, so a dispatcher that was
        only paused, not dead, finds the run ended and cannot record a second end."""
        run_id = uuid.UUID(stream_key(stream_id))
        reason = f"dispatcher {dispatcher} went away while the run was running (its lease lapsed)"
        meta = self._meta(f"sweep-{dispatcher}", None)
        recorded = await self._append_decided(stream_id, _lose(run_id, dispatcher, reason), meta)
        if recorded is None:
            return
        log.warning("%s recorded as lost: %s", stream_id, reason)
        state = await self.state(stream_id)
        driver = self.drivers.get(state.driver or "")
        if driver is not None and state.handle is not None:
            await self._end_orphan(driver, stream_id, state.handle)


def _fail_unstarted(run_id: uuid.UUID, reason: str) -> Callable[[RunState], Event | None]:
    def decide(state: RunState) -> Event | None:
        return RunFailed(run_id=run_id, reason=reason) if state.status is RunStatus.RENDERED else None

    return decide


def _lose(run_id: uuid.UUID, owner: str, reason: str) -> Callable[[RunState], Event | None]:
    def decide(state: RunState) -> Event | None:
        if state.status is not RunStatus.RUNNING or state.dispatcher != owner:
            return None
        return RunLost(run_id=run_id, reason=reason)

    return decide
