"""Write the machine-readable contracts: JSON Schema per event and command, and an AsyncAPI document.

Run by `make contracts` (`python -m contracts.generate`). The output is a pure function of the models, with
sorted keys and a stable order, so a unit test can regenerate it and fail when the committed files are
stale. Other languages and tools read the bus through these files instead of through Python.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

import contracts.commands  # registers every command class
import contracts.events  # noqa: F401  (registers every event class)
from contracts.base import EVENT_TYPES, Command, Event
from contracts.envelope import CloudEvent
from contracts.logs import LOG_END, LOG_FD, LOG_OFFSET, LOG_STEP
from contracts.preview import PreviewReply, PreviewRequest
from contracts.subjects import DEFAULT_PREFIX

CONTRACTS_DIR = Path(__file__).resolve().parent
SCHEMA_DIR_NAME = "schema"
ASYNCAPI_NAME = "asyncapi.yaml"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
CLOUDEVENTS_CONTENT_TYPE = "application/cloudevents+json"

Json = dict[str, Any]


def event_schema_path(event_type: str) -> str:
    return f"{SCHEMA_DIR_NAME}/events/{event_type}.json"


def command_schema_path(command: str) -> str:
    return f"{SCHEMA_DIR_NAME}/commands/{command}.json"


PREVIEW_REQUEST_SCHEMA = f"{SCHEMA_DIR_NAME}/preview/PreviewRequest.json"
PREVIEW_REPLY_SCHEMA = f"{SCHEMA_DIR_NAME}/preview/PreviewReply.json"


def preview_schemas() -> dict[str, Json]:
    """The request-reply pair on `<prefix>.render.preview`; the reply is rendered or failed (`ok`)."""
    reply: Json = TypeAdapter(PreviewReply).json_schema()
    return {
        PREVIEW_REQUEST_SCHEMA: {
            "$schema": JSON_SCHEMA_DIALECT,
            "$id": "urn:batchyard:preview:PreviewRequest",
            **PreviewRequest.model_json_schema(),
        },
        PREVIEW_REPLY_SCHEMA: {
            "$schema": JSON_SCHEMA_DIALECT,
            "$id": "urn:batchyard:preview:PreviewReply",
            "title": "PreviewReply",
            **reply,
        },
    }


def command_classes() -> list[type[Command]]:
    def walk(cls: type[Command]) -> Iterator[type[Command]]:
        for sub in cls.__subclasses__():
            yield sub
            yield from walk(sub)

    found = {cls for cls in walk(Command) if cls.__module__.startswith("contracts.")}
    return sorted(found, key=lambda cls: cls.__name__)


def event_classes() -> list[type[Event]]:
    return [EVENT_TYPES[name] for name in sorted(EVENT_TYPES)]


def _hoist_defs(schema: Json, into: Json) -> Json:
    """Move a model schema's `$defs` into a shared table, so several schemas can live in one document."""
    into.update(schema.pop("$defs", {}))
    return schema


def event_schema(event: type[Event]) -> Json:
    """The CloudEvents envelope of one event type, with its `data` pinned to the event's own schema."""
    defs: Json = {}
    envelope = _hoist_defs(CloudEvent.model_json_schema(), defs)
    data = _hoist_defs(event.model_json_schema(), defs)
    data["x-schema-version"] = event.schema_version
    data["x-stream-type"] = event.stream_type
    defs[event.event_type()] = data
    properties = envelope["properties"]
    properties["type"] = {"const": event.event_type(), "title": "Type", "type": "string"}
    properties["schemaversion"] = {
        "const": event.schema_version,
        "title": "Schemaversion",
        "type": "integer",
    }
    properties["data"] = {"$ref": f"#/$defs/{event.event_type()}"}
    properties["subject"]["pattern"] = f"^{re.escape(event.stream_type)}-"
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": f"urn:batchyard:event:{event.event_type()}:{event.schema_version}",
        **envelope,
        "title": event.event_type(),
        "description": (event.__doc__ or f"The {event.event_type()} event.").strip(),
        "x-schema-version": event.schema_version,
        "x-stream-type": event.stream_type,
        "$defs": defs,
    }


def command_schema(command: type[Command]) -> Json:
    schema = command.model_json_schema()
    return {"$schema": JSON_SCHEMA_DIALECT, "$id": f"urn:batchyard:command:{command.__name__}", **schema}


def _prefix_parameter() -> Json:
    return {
        "default": DEFAULT_PREFIX,
        "description": "Installation prefix (BATCHYARD_BUS_PREFIX); several installations share one NATS.",
    }


def asyncapi() -> Json:
    channels: Json = {}
    operations: Json = {}
    messages: Json = {}
    for event in event_classes():
        name = event.event_type()
        channel_id = f"event-{name}"
        messages[name] = {
            "name": name,
            "title": name,
            "summary": (event.__doc__ or f"The {name} event.").strip().splitlines()[0],
            "contentType": CLOUDEVENTS_CONTENT_TYPE,
            "headers": {
                "type": "object",
                "required": ["Nats-Msg-Id"],
                "properties": {
                    "Nats-Msg-Id": {
                        "type": "string",
                        "format": "uuid",
                        "description": "The event id: JetStream drops a republished event.",
                    }
                },
            },
            "payload": {"$ref": f"./{event_schema_path(name)}"},
        }
        channels[channel_id] = {
            "address": f"{{prefix}}.events.{event.stream_type}.{name}",
            "title": name,
            "description": f"Every committed {name} event, in store order per stream (JetStream stream "
            "`<PREFIX>_EVENTS`).",
            "parameters": {"prefix": _prefix_parameter()},
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
        }
        operations[f"relay-{name}"] = {
            "action": "send",
            "title": f"Relay publishes {name}",
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "messages": [{"$ref": f"#/channels/{channel_id}/messages/{name}"}],
        }
    messages["LogChunk"] = {
        "name": "LogChunk",
        "title": "Log chunk",
        "summary": "Raw bytes of a run's combined log; the last message of a run is empty and ends it.",
        "contentType": "application/octet-stream",
        "headers": {
            "type": "object",
            "required": ["Nats-Msg-Id", LOG_OFFSET],
            "properties": {
                "Nats-Msg-Id": {
                    "type": "string",
                    "description": "`<run>:<offset>`, or `<run>:<offset>:end`.",
                },
                LOG_OFFSET: {
                    "type": "string",
                    "pattern": "^[0-9]+$",
                    "description": "Byte offset of the chunk.",
                },
                LOG_FD: {"type": "string", "enum": ["stdout", "stderr"]},
                LOG_STEP: {"type": "string", "description": "The pipeline step that wrote the chunk."},
                LOG_END: {"type": "string", "description": "Present on the last message of the run."},
            },
        },
        "payload": {"type": "string", "format": "binary"},
    }
    channels["run-log"] = {
        "address": "{prefix}.logs.{run}",
        "title": "Run log",
        "description": "Live log chunks of one run (JetStream stream `<PREFIX>_LOGS`), in order.",
        "parameters": {"prefix": _prefix_parameter(), "run": {"description": "The run id (UUID)."}},
        "messages": {"LogChunk": {"$ref": "#/components/messages/LogChunk"}},
    }
    operations["dispatcher-publishes-log"] = {
        "action": "send",
        "title": "The dispatcher streams a run's log",
        "channel": {"$ref": "#/channels/run-log"},
        "messages": [{"$ref": "#/channels/run-log/messages/LogChunk"}],
    }
    messages["RenderPreviewRequest"] = {
        "name": "RenderPreviewRequest",
        "title": "Render preview request",
        "summary": "What the API asks the renderer to render now (core NATS request, not stored).",
        "contentType": "application/json",
        "payload": {"$ref": f"./{PREVIEW_REQUEST_SCHEMA}"},
    }
    messages["RenderPreviewReply"] = {
        "name": "RenderPreviewReply",
        "title": "Render preview reply",
        "summary": "The rendered payload with secrets masked, or the template error.",
        "contentType": "application/json",
        "payload": {"$ref": f"./{PREVIEW_REPLY_SCHEMA}"},
    }
    channels["render-preview"] = {
        "address": "{prefix}.render.preview",
        "title": "Render preview",
        "description": "Request-reply: only the renderer evaluates templates, so the API asks it here.",
        "parameters": {"prefix": _prefix_parameter()},
        "messages": {"RenderPreviewRequest": {"$ref": "#/components/messages/RenderPreviewRequest"}},
    }
    channels["render-preview-reply"] = {
        "address": None,
        "title": "Render preview reply inbox",
        "description": "The requester's NATS inbox, chosen per request.",
        "messages": {"RenderPreviewReply": {"$ref": "#/components/messages/RenderPreviewReply"}},
    }
    operations["renderer-answers-preview"] = {
        "action": "receive",
        "title": "The renderer answers a preview request",
        "channel": {"$ref": "#/channels/render-preview"},
        "messages": [{"$ref": "#/channels/render-preview/messages/RenderPreviewRequest"}],
        "reply": {
            "channel": {"$ref": "#/channels/render-preview-reply"},
            "messages": [{"$ref": "#/channels/render-preview-reply/messages/RenderPreviewReply"}],
        },
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "batchyard bus",
            "version": "1.0.0",
            "description": "The NATS subjects batchyard's services meet on. Events are CloudEvents 1.0 "
            "structured JSON published by the outbox relay, at least once and in order per stream; "
            "`prevposition` chains them in global order.",
        },
        "defaultContentType": CLOUDEVENTS_CONTENT_TYPE,
        "servers": {
            "embedded": {
                "host": "127.0.0.1:4222",
                "protocol": "nats",
                "description": "A NATS server with JetStream (`make run` starts one on a free port).",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


def render_json(document: Json) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


_PLAIN = re.compile(r"^[A-Za-z][A-Za-z0-9_ ./()-]*$")
_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "y", "n"}


def _yaml_scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    text = str(value)
    if _PLAIN.match(text) and text.lower() not in _YAML_WORDS and not text.endswith(" "):
        return text
    return json.dumps(text, ensure_ascii=False)


def _yaml_lines(value: Any, indent: int) -> Iterator[str]:
    pad = "  " * indent
    if isinstance(value, dict):
        if not value:
            yield f"{pad}{{}}"
        for key in sorted(value):
            item = value[key]
            if isinstance(item, dict | list) and item:
                yield f"{pad}{_yaml_scalar(key)}:"
                yield from _yaml_lines(item, indent + 1)
            else:
                yield f"{pad}{_yaml_scalar(key)}: {_yaml_inline(item)}"
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict | list) and item:
                nested = list(_yaml_lines(item, indent + 1))
                yield f"{pad}- {nested[0].lstrip()}"
                yield from nested[1:]
            else:
                yield f"{pad}- {_yaml_inline(item)}"
    else:
        yield f"{pad}{_yaml_scalar(value)}"


def _yaml_inline(value: Any) -> str:
    if value == {}:
        return "{}"
    if value == []:
        return "[]"
    return _yaml_scalar(value)


def render_yaml(document: Json) -> str:
    """Block-style YAML with sorted keys; a tiny emitter so `make contracts` needs no YAML library."""
    return "\n".join(_yaml_lines(document, 0)) + "\n"


def generated_files() -> dict[str, str]:
    """Every generated file, keyed by its path relative to `contracts/`."""
    files = {event_schema_path(cls.event_type()): render_json(event_schema(cls)) for cls in event_classes()}
    files.update(
        {command_schema_path(cls.__name__): render_json(command_schema(cls)) for cls in command_classes()}
    )
    files.update({path: render_json(schema) for path, schema in preview_schemas().items()})
    files[ASYNCAPI_NAME] = render_yaml(asyncapi())
    return files


def write(root: Path) -> list[Path]:
    """Write every generated file under `root`, replacing the schema folder so removed contracts vanish."""
    shutil.rmtree(root / SCHEMA_DIR_NAME, ignore_errors=True)
    written = []
    for relative, text in sorted(generated_files().items()):
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=CONTRACTS_DIR, help="folder to write into (contracts/)")
    args = parser.parse_args(argv)
    written = write(args.out)
    print(f"wrote {len(written)} files under {args.out}")


if __name__ == "__main__":
    main()
