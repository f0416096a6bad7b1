"""Wiring of the dispatcher: consumers, the stop subscription, the lease heartbeat and shutdown.

Rendered runs and stop requests come through the shared durable consumer, so replicas split the work.
Stop requests also reach every dispatcher through its own ordered consumer, because only the dispatcher
that holds a run's process can stop it, and the shared consumer may hand the request to another one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from contracts.envelope import RecordedEvent
from contracts.streams import RUN
from contracts.subjects import event_type_filter, events_subject
from services.dispatcher.config import DispatcherSettings
from services.dispatcher.drivers.base import Driver
from services.dispatcher.drivers.docker import DockerDriver
from services.dispatcher.drivers.docker_pipeline import DockerPipelineDriver
from services.dispatcher.drivers.local import LocalProcessDriver
from services.dispatcher.drivers.nomad import NomadDriver
from services.dispatcher.intake import Intake
from services.dispatcher.leases import Lease, Leases
from services.dispatcher.nomad_schedules import NomadSchedules
from services.dispatcher.runs import SHUTDOWN_REASON, RunDispatcher
from services.dispatcher.scheduling import Scheduling
from services.dispatcher.workspace import spares as workspace_spares
from shared.archive.factory import open_archive
from shared.bus.consumer import decode
from shared.secrets import load_keyring
from shared.service import Runtime

log = logging.getLogger(__name__)

DURABLE = "dispatcher"
LOCAL_GATE_POOL = 2
"""Gate shells forked ahead of local runs (drivers/gates.py): enough for runs that come one after another;
a burst past it forks its gates as runs start, as without a pool."""


class DispatcherService:
    def __init__(self, runtime: Runtime, config: DispatcherSettings | None = None) -> None:
        self.runtime = runtime
        self.config = config or DispatcherSettings()
        prefix = runtime.settings.bus_prefix
        self.identity = f"{runtime.settings.instance}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.leases = Leases(
            runtime.pool, Lease(self.identity, socket.gethostname(), os.getpid()), self.config.lease_ttl_s
        )
        local = LocalProcessDriver(chunk_bytes=self.config.log_chunk_bytes, gate_pool=LOCAL_GATE_POOL)
        self.local = local
        self.docker = DockerDriver(runtime.settings.docker_url, self.identity)
        self.nomad = NomadDriver.from_env()
        docker = DockerPipelineDriver(self.docker)
        drivers: dict[str, Driver] = {d.name: d for d in (local, docker, self.nomad)}
        self.dispatcher = RunDispatcher(
            runtime.store,
            runtime.js,
            prefix,
            self.identity,
            drivers,
            log_in_flight_per_run=self.config.log_in_flight_per_run,
            log_in_flight_total=self.config.log_in_flight_total,
            keyring=load_keyring(runtime.settings.secret_key_file),
        )
        self.intake = Intake(
            runtime.js,
            prefix,
            DURABLE,
            [event_type_filter(prefix, "RunRendered"), event_type_filter(prefix, "RunStopRequested")],
            self._route,
            concurrency=self.config.start_concurrency,
        )
        self.scheduling = Scheduling(
            runtime, f"scheduler:{self.identity}", self.config.schedule_poll_s, self.config.schedule_lead_s
        )
        self.dispatcher.withdrawal = self.scheduling.index.staged_withdrawal
        self.scheduling.handover = NomadSchedules(
            runtime, self.scheduling.index, self.dispatcher, resync_s=self.config.nomad_periodic_resync_s
        )
        self._heartbeat: asyncio.Task[None] | None = None
        self._stop_subscription: JetStreamContext.PushSubscription | None = None

    async def _route(self, event: RecordedEvent) -> None:
        if event.type == "RunRendered":
            await self.dispatcher.on_rendered(event)
        elif event.type == "RunStopRequested":
            await self.dispatcher.on_stop_requested(event)

    async def _stop_seen(self, message: Msg) -> None:
        try:
            self.dispatcher.stop_requested(decode(message.data))
        except Exception:
            log.exception("a stop request could not be handled")

    async def start(self) -> None:
        self.dispatcher.archive = await open_archive(self.runtime.settings)
        await self.leases.migrate()
        await self.leases.renew()
        subject = events_subject(self.runtime.settings.bus_prefix, RUN, "RunStopRequested")
        self._stop_subscription = await self.runtime.js.subscribe(
            subject, cb=self._stop_seen, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW
        )
        await self.sweep()
        await self.intake.start()
        await self.scheduling.start()
        self._heartbeat = self.runtime.spawn(self._beat(), "dispatcher-heartbeat")
        log.info("dispatcher %s ready", self.identity)

    async def sweep(self) -> None:
        """Take over the runs of every dispatcher whose lease lapsed (adopted on Docker and Nomad, lost
        when local), and record as lost our own runs that we do not hold."""
        await self.dispatcher.release_unheld(await self.leases.unfinished_runs(self.identity))
        for lease in await self.leases.expired():
            runs = await self.leases.unfinished_runs(lease.dispatcher)
            await self.dispatcher.sweep(lease.dispatcher, runs)
            if not await self.leases.unfinished_runs(lease.dispatcher):
                await self.leases.forget(lease.dispatcher)

    async def _beat(self) -> None:
        interval = self.config.lease_ttl_s / 3
        while True:
            await asyncio.sleep(interval)
            try:
                if not await self.leases.renew():
                    log.error(
                        "dispatcher %s found its lease lapsed; dropping runs recorded as lost", self.identity
                    )
                    await self.dispatcher.release_lost()
                await self.sweep()
            except Exception as exc:
                log.warning("lease heartbeat failed: %s", exc)

    async def shutdown(self) -> None:
        """Take no new runs, stop the ones held (SIGTERM, grace, SIGKILL) and record why they ended; or,
        with `detach_on_shutdown`, leave Docker and Nomad runs running for the next dispatcher."""
        await self.scheduling.stop()
        self.dispatcher.closing.set()
        await self.intake.drain()
        handed = await self.dispatcher.hand_over() if self.config.detach_on_shutdown else 0
        await self.dispatcher.stop_all(SHUTDOWN_REASON, self.config.shutdown_grace_s)
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        if self._stop_subscription is not None:
            with contextlib.suppress(Exception):
                await self._stop_subscription.unsubscribe()
        if handed:
            await self.leases.lapse()
        elif not self.dispatcher.active:
            await self.leases.release()
        if self.dispatcher.archive is not None:
            await self.dispatcher.archive.close()
        await self.local.close()
        await workspace_spares.remove_all()
        await self.docker.close()
        await self.nomad.close()
        log.info("dispatcher %s stopped (%d runs left for the next dispatcher)", self.identity, handed)


async def start(runtime: Runtime) -> Callable[[], Awaitable[None]]:
    service = DispatcherService(runtime)
    await service.start()
    return service.shutdown
