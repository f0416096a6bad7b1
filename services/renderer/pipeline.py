"""From a request to a payload: load definitions, merge params, render, validate, seal.

The run consumer and the preview both go through `render_request`, so what the preview shows is what a
run would record. Every way a request can fail because of its inputs or the configuration becomes a
`Rejection` naming what to fix; only the store being unreachable escapes as another exception.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from contracts.base import JsonObject
from contracts.payloads import PayloadError
from contracts.preview import RejectionKind
from contracts.specs import DimensionSpec
from services.renderer.definitions import Definitions, ExecutionDefinition
from services.renderer.params import (
    DimensionParams,
    MergedParams,
    MissingRequiredParams,
    ParamsError,
    merge_params,
)
from services.renderer.render import RenderError, render_payload
from services.renderer.secrets import Revealed, SecretHandling, mask_reason
from shared.secrets import SecretError, format_path, mask_secrets

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RenderRequest:
    execution: str
    dimensions: dict[str, str] = field(default_factory=dict)
    params: JsonObject = field(default_factory=dict)
    overrides: JsonObject = field(default_factory=dict)
    job_id: uuid.UUID | None = None
    at: datetime | None = None
    position: int | None = None
    """Where the request was recorded in the store, for a run: what its definitions must be current for."""


@dataclass(frozen=True)
class Rendered:
    """`payload` is safe to record and show (secrets as `***`); `sealed` carries the real one when it
    holds secrets, encrypted for the dispatcher."""

    driver: str
    payload: JsonObject
    sealed: str | None
    params: MergedParams
    execution_version: int


class Rejection(Exception):
    def __init__(
        self,
        kind: RejectionKind,
        reason: str,
        *,
        line: int | None = None,
        column: int | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.kind: RejectionKind = kind
        self.reason = reason
        self.line = line
        self.column = column
        self.field = field


async def render_request(
    definitions: Definitions, secrets: SecretHandling, request: RenderRequest
) -> Rendered:
    at = request.at.replace(tzinfo=UTC) if request.at and request.at.tzinfo is None else request.at
    execution, specs = await definitions.load(
        request.execution, sorted(request.dimensions), at=at, position=request.position
    )
    if execution is None:
        raise Rejection("unknown_execution", f"unknown execution {request.execution!r}", field="execution")
    dimension_params = _dimension_params(request.dimensions, specs)
    try:
        return await _render(execution, dimension_params, request, secrets)
    except Rejection:
        raise
    except Exception as exc:
        log.exception("rendering execution %r failed unexpectedly", request.execution)
        raise Rejection("internal", f"renderer failed on execution {request.execution!r}: {exc}") from exc


def _dimension_params(
    chosen: dict[str, str], specs: dict[str, DimensionSpec | None]
) -> list[DimensionParams]:
    names = sorted(chosen)
    found: list[DimensionParams] = []
    problems: dict[str, str] = {}
    for name in names:
        value, spec = chosen[name], specs[name]
        if spec is None:
            problems[name] = f"unknown dimension {name!r}"
        elif value not in spec.values:
            problems[name] = f"dimension {name!r} has no value {value!r}"
        else:
            found.append(DimensionParams(name, spec.priority, value, spec.values[value].params))
    if problems:
        first_bad = next(iter(problems))
        raise Rejection("unknown_dimension", "; ".join(problems.values()), field=f"dimensions.{first_bad}")
    return found


async def _render(
    execution: ExecutionDefinition,
    dimension_params: list[DimensionParams],
    request: RenderRequest,
    secrets: SecretHandling,
) -> Rendered:
    spec = execution.spec
    try:
        merged = merge_params(
            defaults=spec.default_params,
            dimensions=dimension_params,
            job=request.params,
            overrides=request.overrides,
            required=spec.required_params,
            job_id=str(request.job_id) if request.job_id else None,
        )
    except MissingRequiredParams as exc:
        raise Rejection("missing_params", str(exc), field=f"params.{exc.missing[0]}") from None
    except ParamsError as exc:
        raise Rejection("params", str(exc), field=f"params.{exc.param}" if exc.param else None) from None
    try:
        revealed = secrets.reveal(merged.params)
    except SecretError as exc:
        path = getattr(exc, "path", None) or next(iter(getattr(exc, "paths", ())), None)
        raise Rejection("params", str(exc), field=f"params.{format_path(path)}" if path else None) from None
    try:
        payload, display = await _evaluate(execution, revealed, merged.params)
    except Rejection as rejection:
        rejection.reason = mask_reason(rejection.reason, revealed.secrets)
        raise
    except Exception as exc:
        reason = mask_reason(f"renderer failed on execution {execution.name!r}: {exc}", revealed.secrets)
        log.error("rendering failed unexpectedly: %s", reason, exc_info=not revealed.secrets)
        raise Rejection("internal", reason) from None
    sealed = secrets.seal(payload, display, revealed.secrets)
    return Rendered(spec.driver, sealed.display, sealed.sealed, merged, execution.version)


async def _evaluate(
    execution: ExecutionDefinition, revealed: Revealed, params: JsonObject
) -> tuple[JsonObject, JsonObject]:
    """The payload, and the payload rendered with `***` for each secret (for what is recorded). If the
    template cannot render with `***` (a secret parsed as a number), the real payload, masked later,
    stands in."""
    spec = execution.spec
    try:
        payload = await asyncio.to_thread(
            render_payload,
            execution.name,
            spec.driver,
            spec.payload_template,
            revealed.params,
            spec.driver_config,
        )
    except RenderError as exc:
        raise Rejection("template", exc.message, line=exc.line, column=exc.column) from None
    except PayloadError as exc:
        reason = f"execution {execution.name!r} rendered an invalid {exc}"
        raise Rejection("payload", reason, field=f"payload.{exc.field}" if exc.field else "payload") from None
    if not revealed.secrets:
        return payload, payload
    try:
        display = await asyncio.to_thread(
            render_payload,
            execution.name,
            spec.driver,
            spec.payload_template,
            mask_secrets(params),
            spec.driver_config,
        )
    except (RenderError, PayloadError):
        display = payload
    return payload, display
