"""Wiring of the renderer: requested runs in, rendered or rejected runs out; previews on request.

Idempotence comes from the run stream: the outcome is appended at the version of the `RunRequested`
it answers, so a redelivered request, or a replica racing this one, meets a ConcurrencyError and
records nothing. Previews use a queue group, so replicas share them as they share the consumer.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg
from pydantic import ValidationError

from contracts.envelope import EventMeta, RecordedEvent
from contracts.events import RunRejected, RunRendered, RunRequested
from contracts.preview import PreviewError, PreviewFailed, PreviewRendered, PreviewReply, PreviewRequest
from contracts.subjects import event_type_filter, render_preview_subject
from services.renderer.definition_cache import DefinitionCache
from services.renderer.definitions import Definitions
from services.renderer.pipeline import Rejection, RenderRequest, render_request
from services.renderer.secrets import SecretHandling, secret_handling
from shared.bus.consumer import consume
from shared.eventstore.errors import ConcurrencyError
from shared.eventstore.store import EventStore
from shared.secrets import mask_secrets
from shared.service import Runtime

log = logging.getLogger(__name__)

ACTOR = "renderer"
DURABLE = "renderer"
QUEUE_GROUP = "renderer"
CONSUMER_LOOPS = 8
"""Pull loops sharing the durable consumer in one process. Runs are independent of each other, and
appends from concurrent loops share group commits, so this multiplies throughput (0044)."""


class RunRenderer:
    def __init__(
        self, store: EventStore, secrets: SecretHandling, cache: DefinitionCache | None = None
    ) -> None:
        self.store = store
        self.definitions = Definitions(store, cache)
        self.secrets = secrets

    async def handle(self, event: RecordedEvent) -> None:
        if event.type != RunRequested.event_type():
            return
        requested = RunRequested.model_validate(event.data)
        request = RenderRequest(
            execution=requested.execution,
            dimensions=requested.dimensions,
            params=requested.params,
            overrides=requested.overrides,
            job_id=requested.job_id,
            position=event.position,
        )
        outcome: RunRendered | RunRejected
        try:
            rendered = await render_request(self.definitions, self.secrets, request)
        except Rejection as rejection:
            outcome = RunRejected(
                run_id=requested.run_id, reason=rejection.reason, line=rejection.line, column=rejection.column
            )
        else:
            outcome = RunRendered(
                run_id=requested.run_id,
                driver=rendered.driver,
                payload=rendered.payload,
                execution_version=rendered.execution_version,
                sealed=rendered.sealed,
                start_at=requested.start_at,
            )
        meta = EventMeta(actor=ACTOR, correlation_id=event.correlation_id, causation_id=str(event.id))
        try:
            await self.store.append(
                event.stream_id, [outcome], expected_version=event.stream_version, meta=meta
            )
        except ConcurrencyError:
            log.debug("run %s was already handled; redelivery ignored", requested.run_id)
            return
        log.info("run %s: %s", requested.run_id, outcome.event_type())

    async def preview(self, data: bytes) -> PreviewReply:
        try:
            request = PreviewRequest.model_validate_json(data)
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            field = ".".join(str(part) for part in error["loc"]) or None
            return PreviewFailed(error=PreviewError(kind="bad_request", reason=error["msg"], field=field))
        try:
            rendered = await render_request(
                self.definitions,
                self.secrets,
                RenderRequest(
                    execution=request.execution,
                    dimensions=request.dimensions,
                    params=request.params,
                    overrides=request.overrides,
                    job_id=request.job_id,
                    at=request.at,
                ),
            )
        except Rejection as rejection:
            return PreviewFailed(
                error=PreviewError(
                    kind=rejection.kind,
                    reason=rejection.reason,
                    line=rejection.line,
                    column=rejection.column,
                    field=rejection.field,
                )
            )
        return PreviewRendered(
            driver=rendered.driver,
            payload=mask_secrets(rendered.payload),
            params=mask_secrets(rendered.params.params),
            provenance=rendered.params.provenance,
            execution_version=rendered.execution_version,
            sealed=rendered.sealed if request.seal else None,
        )


async def start(runtime: Runtime) -> Callable[[], Awaitable[None]]:
    """Take the durable consumer on requested runs and answer previews; returns the shutdown step."""
    secrets = secret_handling(runtime.settings.secret_key_file)
    cache = DefinitionCache(runtime.settings.pg_dsn)
    runtime.spawn(cache.run(), "renderer-definition-cache")
    renderer = RunRenderer(runtime.store, secrets, cache)
    prefix = runtime.settings.bus_prefix

    async def answer_preview(message: Msg) -> None:
        try:
            reply = await renderer.preview(message.data)
        except Exception:
            log.exception("preview failed")
            reply = PreviewFailed(error=PreviewError(kind="internal", reason="the renderer could not answer"))
        await message.respond(reply.model_dump_json().encode())

    previews = await runtime.nc.subscribe(
        render_preview_subject(prefix), queue=QUEUE_GROUP, cb=answer_preview
    )
    filters = [event_type_filter(prefix, "RunRequested")]
    for loop in range(CONSUMER_LOOPS):
        runtime.spawn(
            consume(runtime.js, prefix, DURABLE, filters, renderer.handle), f"renderer-consumer-{loop}"
        )

    async def stop_previews() -> None:
        with contextlib.suppress(Exception):
            await previews.unsubscribe()

    return stop_previews
