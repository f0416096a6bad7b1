"""The payload preview over NATS request-reply on `render_preview_subject(prefix)`.

Only the renderer evaluates templates, so the API asks it what a job would render instead of doing it
itself; these models are the JSON both sides exchange. See docs/decisions/0043-render-preview.md.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import Field, TypeAdapter

from contracts.base import Contract, JsonObject

RejectionKind = Literal[
    "bad_request",
    "unknown_execution",
    "unknown_dimension",
    "params",
    "missing_params",
    "template",
    "payload",
    "internal",
]
"""Why a render failed, so the API can pick a status: `internal` is the renderer's fault (a 5xx), every
other kind is the caller's or the configuration's (a 422 naming `field`)."""


class PreviewRequest(Contract):
    """What to render: the same inputs a `RunRequested` carries.

    `at` renders with the executions and dimensions as they stood at that time (the job's own params and
    dimension choices as of then are the caller's to send); None means now.
    """

    execution: str = Field(min_length=1)
    dimensions: dict[str, str] = Field(default_factory=dict)
    params: JsonObject = Field(default_factory=dict)
    overrides: JsonObject = Field(default_factory=dict)
    job_id: uuid.UUID | None = None
    at: datetime | None = None
    # Also answer the payload sealed for the dispatcher (`PreviewRendered.sealed`) when it holds
    # secrets: the dispatcher registers a job's Nomad periodic parent from it. The API never asks.
    seal: bool = False


class PreviewError(Contract):
    kind: RejectionKind
    reason: str
    line: int | None = None
    column: int | None = None
    field: str | None = None


class PreviewRendered(Contract):
    """Secrets are shown as `***` in `payload` and `params`; `provenance` maps each leaf param's dotted
    path to its layer: `default`, `dimension:<name>=<value>`, `job` or `run`. `sealed` is the real
    payload encrypted for the dispatcher, only when the request asked (`seal`) and it holds secrets."""

    ok: Literal[True] = True
    driver: str
    payload: JsonObject
    params: JsonObject
    provenance: dict[str, str]
    execution_version: int
    sealed: str | None = None


class PreviewFailed(Contract):
    ok: Literal[False] = False
    error: PreviewError


PreviewReply = PreviewRendered | PreviewFailed

_REPLY: TypeAdapter[PreviewReply] = TypeAdapter(PreviewReply)


def parse_preview_reply(data: bytes | str) -> PreviewReply:
    return _REPLY.validate_json(data)
