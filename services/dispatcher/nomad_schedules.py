"""Handing job schedules to Nomad's periodic block, and recording the runs Nomad launches from them.

A job whose schedule says `fired_by: nomad` is not fired by batchyard's scheduler: its payload is rendered
(by the renderer, over the preview request path, sealed for this dispatcher when it holds secrets), made
into a periodic parent job (`periodic_parent`) and registered in Nomad, which launches the runs on its own.
A `PeriodicWatcher` per parent finds each launch, and `RunDispatcher.record_launch` records it as a run
of the job (`RunRequested` with trigger `schedule`, `RunRendered`, `RunStarted`, in one append at the run's
first version, the run id derived from the job and the child's Nomad ID) and follows it like an adopted
run. Pausing or deleting the job, removing its schedule or handing it back to batchyard deregisters the
parent; runs already launched go on to their end.

One replica at a time does this work, elected by a PostgreSQL advisory lock per installation: registering
is a side effect outside the store, and several replicas that each follow the store at their own pace
would register and deregister the same parent out of order. Correctness does not rest on the lock: the
derived run id makes the store refuse a second recording of a launch, so two leaders overlapping during
a takeover record every launch once. The store says which parents are registered
(`PeriodicParentRegistered`/`Deregistered` on the job's schedule stream), so a new leader finds parents
whose job was deleted meanwhile. See docs/decisions/0173-nomad-periodic-wiring.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from pydantic import ValidationError

from contracts import streams
from contracts.base import Event, JsonObject
from contracts.envelope import EventMeta
from contracts.events import (
    PeriodicHandoverFailed,
    PeriodicParentDeregistered,
    PeriodicParentRegistered,
    RunRendered,
)
from contracts.payloads import NomadPayload
from contracts.preview import PreviewFailed, PreviewRendered, PreviewRequest, parse_preview_reply
from contracts.subjects import render_preview_subject
from services.dispatcher.drivers.base import StartFailed
from services.dispatcher.drivers.nomad import NomadDriver, parse_payload
from services.dispatcher.drivers.nomad_api import NomadClient, NomadError, NomadUnreachable
from services.dispatcher.drivers.nomad_periodic import (
    PeriodicLaunch,
    PeriodicWatcher,
    periodic_parent,
    prohibit_overlap,
    register_periodic,
)
from services.dispatcher.job_index import IndexedJob, JobIndex
from services.dispatcher.runs import RunDispatcher
from services.dispatcher.schedules import run_request
from services.dispatcher.secrets import mask_reason, open_sealed
from shared.bus.leader import lead_when_elected, leader_lock_key
from shared.domain.nomad_schedule import NOMAD_DRIVER, NotExpressible, nomad_cron, periodic_run_id
from shared.eventstore.store import ANY_VERSION, EventStore
from shared.service import Runtime

log = logging.getLogger(__name__)

DIGEST_META = "batchyard_digest"
"""The parent's meta holds a digest of what was registered, so an unchanged job registers nothing."""
RENDER_TIMEOUT_S = 5.0
LEADER_CHECK_S = 2.0
WATCH_RETRY_S = 1.0
HANDOVER_TYPES = (PeriodicParentRegistered.event_type(), PeriodicParentDeregistered.event_type())
_RECORDED = "SELECT DISTINCT stream_id FROM events WHERE stream_id = ANY($1::text[])"


class Postponed(Exception):
    """The hand-over cannot be decided now (no renderer answers, Nomad unreachable): try again later."""


class CannotHandOver(Exception):
    """The job's schedule cannot be handed to Nomad as it is configured; recorded, tried on change."""


@dataclass(frozen=True)
class Parent:
    """Where a periodic parent is registered: what to deregister when its job no longer wants it."""

    parent_id: str
    nomad_url: str
    namespace: str | None


@dataclass(frozen=True)
class Handover:
    """What is registered for a job now, and what each run Nomad launches from it records."""

    job: IndexedJob
    parent: JsonObject
    where: Parent
    rendered: PreviewRendered
    payload: NomadPayload
    secrets: frozenset[str]
    client: NomadClient


def _digest(job: JsonObject) -> str:
    return hashlib.sha256(json.dumps(job, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _why_withdrawn(job: IndexedJob | None) -> str:
    if job is None:
        return "the job was deleted"
    if not job.spec.enabled:
        return "the job was paused"
    if job.spec.schedule is None:
        return "the job's schedule was removed"
    return "the job's schedule is fired by batchyard again"


class NomadSchedules:
    def __init__(self, runtime: Runtime, index: JobIndex, dispatcher: RunDispatcher, *, resync_s: float):
        self.runtime = runtime
        self.store: EventStore = runtime.store
        self.pool: asyncpg.Pool = runtime.pool
        self.index = index
        self.dispatcher = dispatcher
        self.resync_s = resync_s
        self.actor = f"scheduler:{dispatcher.identity}"
        self.handed: dict[uuid.UUID, Parent] = {}
        self.handovers: dict[uuid.UUID, Handover] = {}
        self._watchers: dict[uuid.UUID, tuple[Parent, asyncio.Task[None]]] = {}
        self._dirty: set[uuid.UUID] = set()
        self._wake = asyncio.Event()

    @property
    def nomad(self) -> NomadDriver | None:
        driver = self.dispatcher.drivers.get(NOMAD_DRIVER)
        return driver if isinstance(driver, NomadDriver) else None

    def changed(self, job_id: uuid.UUID | None) -> None:
        """A job (None: every job, after an execution or dimension changed) may need its parent
        registered, registered again or deregistered."""
        if job_id is None:
            self._dirty |= self._concerned()
        else:
            self._dirty.add(job_id)
        self._wake.set()

    def _concerned(self) -> set[uuid.UUID]:
        wanted = {job.job_id for job in self.index.jobs.values() if job.fired_by_nomad}
        return wanted | set(self.handed)

    async def run(self) -> None:
        key = leader_lock_key("nomad-periodic", self.runtime.settings.bus_prefix)
        await lead_when_elected(
            self.runtime.settings.pg_dsn, key, self._lead, role="handing schedules to Nomad"
        )

    async def _lead(self, leader: asyncpg.Connection) -> None:
        self.handed = await self._load_handed()
        resync_at = 0.0
        try:
            while True:
                self._wake.clear()
                if time.monotonic() >= resync_at:
                    self._dirty |= self._concerned()
                    resync_at = time.monotonic() + self.resync_s
                dirty, self._dirty = self._dirty, set()
                for job_id in sorted(dirty):
                    try:
                        await self._reconcile(job_id)
                    except Exception:
                        log.exception("handing the schedule of job %s to Nomad failed", job_id)
                with contextlib.suppress(TimeoutError):
                    remaining = max(resync_at - time.monotonic(), 0.0)
                    await asyncio.wait_for(self._wake.wait(), min(LEADER_CHECK_S, remaining))
                await leader.fetchval("SELECT 1")
        finally:
            await self._stop_watchers()
            self.handovers.clear()

    async def _load_handed(self) -> dict[uuid.UUID, Parent]:
        handed: dict[uuid.UUID, Parent] = {}
        after = 0
        while True:
            page = await self.store.read_all(after=after, types=HANDOVER_TYPES, limit=1000)
            for recorded in page:
                event = recorded.payload()
                if isinstance(event, PeriodicParentRegistered):
                    handed[event.job_id] = Parent(event.parent_id, event.nomad_url, event.namespace)
                elif isinstance(event, PeriodicParentDeregistered) and handed.get(event.job_id) == Parent(
                    event.parent_id, event.nomad_url, event.namespace
                ):
                    del handed[event.job_id]
            if len(page) < 1000:
                return handed
            after = page[-1].position

    async def _reconcile(self, job_id: uuid.UUID) -> None:
        job = self.index.jobs.get(job_id)
        handed = self.handed.get(job_id)
        if job is None or not job.fired_by_nomad:
            if handed is not None:
                await self._withdraw(job_id, handed, _why_withdrawn(job))
            return
        try:
            handover = await self._prepare(job)
            if handed is not None and handed != handover.where:
                await self._withdraw(job_id, handed, f"replaced by parent {handover.where.parent_id}")
                handed = self.handed.get(job_id)
            await self._register(handover, handed)
        except Postponed as exc:
            log.warning("the schedule of job %s is handed to Nomad later: %s", job_id, exc)
            return
        except CannotHandOver as exc:
            await self._refused(job, str(exc))
            if handed is not None:
                await self._withdraw(job_id, handed, f"the schedule could not be handed to Nomad: {exc}")
            return
        self._watch(job_id, handover.where)

    async def _render(self, job: IndexedJob) -> PreviewRendered:
        spec = job.spec
        request = PreviewRequest(
            execution=spec.execution,
            dimensions=spec.dimensions,
            params=spec.params,
            job_id=job.job_id,
            seal=True,
        )
        subject = render_preview_subject(self.runtime.settings.bus_prefix)
        try:
            message = await self.runtime.nc.request(
                subject, request.model_dump_json().encode(), timeout=RENDER_TIMEOUT_S
            )
            reply = parse_preview_reply(message.data)
        except NoRespondersError:
            raise Postponed("no renderer is running") from None
        except (NatsTimeoutError, NatsError, TimeoutError, ValidationError) as exc:
            raise Postponed(f"the renderer did not answer ({type(exc).__name__})") from None
        if isinstance(reply, PreviewFailed):
            if reply.error.kind == "internal":
                raise Postponed(reply.error.reason)
            raise CannotHandOver(f"the job does not render: {reply.error.reason}")
        if reply.driver != NOMAD_DRIVER:
            raise CannotHandOver(
                f"execution {spec.execution!r} renders for the {reply.driver} driver; only a nomad "
                "execution's schedule can be handed to Nomad"
            )
        return reply

    async def _prepare(self, job: IndexedJob) -> Handover:
        """The parent to register for the job as it is configured and renders now."""
        nomad = self.nomad
        schedule = job.spec.schedule
        if nomad is None or schedule is None:
            raise CannotHandOver("this dispatcher has no nomad driver")
        rendered = await self._render(job)
        secrets: frozenset[str] = frozenset()
        try:
            payload, secrets = open_sealed(rendered.payload, rendered.sealed, self.dispatcher.keyring)
            spec = parse_payload(payload)
            parent = periodic_parent(
                payload,
                batchyard_job_id=str(job.job_id),
                cron=nomad_cron(schedule.cron),
                timezone=schedule.timezone,
                prohibit_overlap=prohibit_overlap(job.spec.overlap.policy),
            )
            client = nomad.client_for(spec)
        except (StartFailed, NotExpressible) as exc:
            raise CannotHandOver(mask_reason(getattr(exc, "reason", str(exc)), secrets)) from None
        namespace = client.connection.namespace
        if namespace and not parent.get("Namespace"):
            parent["Namespace"] = namespace
        parent["Meta"] = {**parent["Meta"], DIGEST_META: _digest(parent)}
        where = Parent(str(parent["ID"]), client.connection.address, namespace)
        return Handover(job, parent, where, rendered, spec, secrets, client)

    async def _register(self, handover: Handover, handed: Parent | None) -> None:
        """Register the parent unless Nomad already holds exactly it, and record what was registered."""
        job, parent, where = handover.job, handover.parent, handover.where
        client = handover.client
        try:
            current = await client.read_job(where.parent_id, where.namespace)
            unchanged = (
                current is not None
                and not current.get("Stop")
                and (current.get("Meta") or {}).get(DIGEST_META) == parent["Meta"][DIGEST_META]
            )
            if not unchanged:
                await register_periodic(client, parent)
        except NomadUnreachable as exc:
            raise Postponed(str(exc)) from None
        except NomadError as exc:
            if exc.status >= 500:
                raise Postponed(str(exc)) from None
            raise CannotHandOver(
                mask_reason(f"Nomad refused the periodic parent: {exc}", handover.secrets)
            ) from None
        self.handovers[job.job_id] = handover
        if unchanged and handed == where:
            return
        schedule = job.spec.schedule
        assert schedule is not None
        periodic = parent["Periodic"]
        await self._record(
            job.job_id,
            PeriodicParentRegistered(
                job_id=job.job_id,
                job_version=job.version,
                execution_version=handover.rendered.execution_version,
                parent_id=where.parent_id,
                nomad_url=where.nomad_url,
                namespace=where.namespace,
                cron=str(periodic["Spec"]),
                timezone=schedule.timezone,
                prohibit_overlap=bool(periodic["ProhibitOverlap"]),
            ),
        )
        self.handed[job.job_id] = where
        log.info("job %s: schedule handed to Nomad as periodic job %s", job.job_id, where.parent_id)

    async def _withdraw(self, job_id: uuid.UUID, where: Parent, reason: str) -> None:
        """Deregister the parent (Nomad launches no more runs from it), then record the launches it made
        before that; runs it launched go on and are followed to their end."""
        nomad = self.nomad
        if nomad is None:
            return
        client = nomad.client_at(where.nomad_url, where.namespace)
        try:
            await client.deregister_job(where.parent_id, namespace=where.namespace)
        except (NomadError, NomadUnreachable) as exc:
            log.warning("deregistering periodic job %s failed (%s); trying again later", where.parent_id, exc)
            return
        await self._unwatch(job_id)
        handover = self.handovers.get(job_id)
        if handover is not None and handover.where == where:
            with contextlib.suppress(NomadError, NomadUnreachable):
                await self._record_launches(
                    job_id,
                    await PeriodicWatcher(client, where.parent_id, namespace=where.namespace).next_launches(),
                )
        self.handovers.pop(job_id, None)
        await self._record(
            job_id,
            PeriodicParentDeregistered(
                job_id=job_id,
                parent_id=where.parent_id,
                nomad_url=where.nomad_url,
                namespace=where.namespace,
                reason=reason,
            ),
        )
        if self.handed.get(job_id) == where:
            del self.handed[job_id]
        log.info("job %s: periodic job %s deregistered: %s", job_id, where.parent_id, reason)

    async def _refused(self, job: IndexedJob, reason: str) -> None:
        """Record why the schedule cannot be handed over, once per job version and reason."""
        stream = await self.store.read_stream(streams.stream_id(streams.SCHEDULE, job.job_id))
        for recorded in reversed(stream):
            event = recorded.payload()
            if isinstance(event, PeriodicHandoverFailed):
                if (event.job_version, event.reason) == (job.version, reason):
                    return
                break
            if isinstance(event, PeriodicParentRegistered | PeriodicParentDeregistered):
                break
        log.warning("the schedule of job %s cannot be handed to Nomad: %s", job.job_id, reason)
        await self._record(
            job.job_id, PeriodicHandoverFailed(job_id=job.job_id, job_version=job.version, reason=reason)
        )

    async def _record(self, job_id: uuid.UUID, event: Event) -> None:
        meta = EventMeta(actor=self.actor, correlation_id=f"schedule-{job_id}")
        await self.store.append(
            streams.stream_id(streams.SCHEDULE, job_id), [event], expected_version=ANY_VERSION, meta=meta
        )

    def _watch(self, job_id: uuid.UUID, where: Parent) -> None:
        current = self._watchers.get(job_id)
        if current is not None and current[0] == where and not current[1].done():
            return
        if current is not None:
            current[1].cancel()
        task = asyncio.create_task(self._follow_launches(job_id, where), name=f"nomad-periodic-{job_id}")
        self._watchers[job_id] = (where, task)

    async def _unwatch(self, job_id: uuid.UUID) -> None:
        current = self._watchers.pop(job_id, None)
        if current is not None:
            current[1].cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await current[1]

    async def _stop_watchers(self) -> None:
        for job_id in list(self._watchers):
            await self._unwatch(job_id)

    async def _follow_launches(self, job_id: uuid.UUID, where: Parent) -> None:
        """Find each child Nomad launches from the parent and record it; after any failure, list the
        children again from the start (those already recorded are recognised in the store)."""
        nomad = self.nomad
        assert nomad is not None
        client = nomad.client_at(where.nomad_url, where.namespace)
        while True:
            watcher = PeriodicWatcher(client, where.parent_id, namespace=where.namespace)
            try:
                while True:
                    await self._record_launches(job_id, await watcher.next_launches(nomad.wait_s))
            except asyncio.CancelledError:
                raise
            except (NomadError, NomadUnreachable) as exc:
                log.warning("listing the runs of periodic job %s failed: %s", where.parent_id, exc)
            except Exception:
                log.exception("recording the runs of periodic job %s failed", where.parent_id)
            await asyncio.sleep(WATCH_RETRY_S)

    async def _record_launches(self, job_id: uuid.UUID, launches: list[PeriodicLaunch]) -> None:
        handover = self.handovers.get(job_id)
        runs = {launch.job_id: periodic_run_id(job_id, launch.job_id) for launch in launches}
        if handover is None or not runs:
            return
        stream_ids = [streams.stream_id(streams.RUN, run_id) for run_id in runs.values()]
        async with self.pool.acquire() as conn:
            recorded = {row["stream_id"] for row in await conn.fetch(_RECORDED, stream_ids)}
        for launch in launches:
            run_id = runs[launch.job_id]
            if streams.stream_id(streams.RUN, run_id) not in recorded:
                await self._record_launch(handover, launch, run_id)

    async def _record_launch(self, handover: Handover, launch: PeriodicLaunch, run_id: uuid.UUID) -> None:
        requested = run_request(handover.job, run_id, trigger="schedule", scheduled_at=launch.launched_at)
        rendered = RunRendered(
            run_id=run_id,
            driver=NOMAD_DRIVER,
            payload=handover.rendered.payload,
            execution_version=handover.rendered.execution_version,
            sealed=handover.rendered.sealed,
            periodic_parent=launch.parent_id,
        )
        handle = launch.handle(
            handover.client,
            str(run_id),
            handover.parent,
            handover.payload.timeout_s,
            purge=handover.payload.purge,
        )
        elapsed_s = max((datetime.now(UTC) - launch.launched_at).total_seconds(), 0.0)
        if await self.dispatcher.record_launch(
            requested, rendered, handle, handover.secrets, elapsed_s, f"nomad-{launch.job_id}"
        ):
            log.info(
                "job %s: run %s recorded for Nomad's launch %s", handover.job.job_id, run_id, launch.job_id
            )
