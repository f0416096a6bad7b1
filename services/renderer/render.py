"""Evaluate an execution's jsonnet payload template; see docs/decisions/0041-template-evaluation.md.

The template is a jsonnet expression in which `params` is bound (striv's contract). It is evaluated as
`local params = std.extVar('params');` on a line of its own followed by the template, so a template
written for striv works unchanged, `params` needs no function wrapper, and the only shift in jsonnet's
error positions is that one line, which `template_error` takes back off.
"""

from __future__ import annotations

import importlib
import json
import re
from types import ModuleType
from typing import Any

from contracts.base import JsonObject
from contracts.payloads import validate_payload


def _available_engines() -> tuple[ModuleType, ...]:
    """go-jsonnet first: it evaluates a template in about 0.25 ms where the C++ one, which parses its
    standard library on every call, takes 25-85 ms (docs/decisions/0041-template-evaluation.md)."""
    engines = []
    for name in ("_gojsonnet", "_jsonnet"):
        try:
            engines.append(importlib.import_module(name))
        except ImportError:
            continue
    if not engines:
        raise ImportError("no jsonnet engine installed: install gojsonnet or jsonnet")
    return tuple(engines)


JSONNET_ENGINES = _available_engines()
DEFAULT_ENGINE = JSONNET_ENGINES[0]

SNIPPET_NAME = "payload_template"
PARAMS_BINDING = "local params = std.extVar('params');\n"
BINDING_LINES = PARAMS_BINDING.count("\n")
IMPORT_REFUSAL = "imports are not available in payload templates; inline the file in the state file"

_LOCATION = re.compile(rf"{SNIPPET_NAME}:(?:\((\d+):(\d+)\)|(\d+):(\d+))")
_STATIC_PREFIX = re.compile(rf"^(?:STATIC ERROR: )?{SNIPPET_NAME}:[0-9():-]+:? ")
_RUNTIME_PREFIX = "RUNTIME ERROR: "
_IMPORT_KEYWORD = re.compile(r"\bimport(?:str|bin)?\b")


class RenderError(Exception):
    """A template that does not evaluate; line and column are those of the user's template."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


def evaluate_template(
    template: str, params: JsonObject, *, execution: str | None = None, engine: ModuleType = DEFAULT_ENGINE
) -> Any:
    imports = _ImportRefusal()
    try:
        output = engine.evaluate_snippet(
            SNIPPET_NAME,
            PARAMS_BINDING + template,
            ext_codes={"params": json.dumps(params)},
            import_callback=imports,
        )
    except RuntimeError as exc:
        imports.raise_if_attempted(template, execution, str(exc))
        raise template_error(str(exc), execution) from None
    imports.raise_if_attempted(template, execution, "")
    return json.loads(output)


class _ImportRefusal:
    """Templates render on the renderer's machine, where an `import` would read that machine's files;
    state files resolve their imports on the client, so a stored template never needs one.

    The callback answers with jsonnet that fails instead of raising, because go-jsonnet's binding can
    garble the error text of an exception raised in a callback; `importstr` of that answer would succeed,
    so the attempt is also remembered and turned into the error afterwards.
    """

    def __init__(self) -> None:
        self.attempted: list[str] = []

    def __call__(self, directory: str, path: str) -> tuple[str, bytes]:
        self.attempted.append(path)
        return f"<refused import {path}>", b"error " + json.dumps(IMPORT_REFUSAL).encode()

    def raise_if_attempted(self, template: str, execution: str | None, jsonnet_message: str) -> None:
        if not self.attempted:
            return
        line, column = _position(jsonnet_message)
        if line is None:
            line, column = _first_import(template)
        raise _located(f"cannot import {self.attempted[0]!r}: {IMPORT_REFUSAL}", line, column, execution)


def _first_import(template: str) -> tuple[int | None, int | None]:
    match = _IMPORT_KEYWORD.search(template)
    if match is None:
        return None, None
    before = template[: match.start()]
    return before.count("\n") + 1, match.start() - (before.rfind("\n") + 1) + 1


def template_error(jsonnet_message: str, execution: str | None) -> RenderError:
    """Turn jsonnet's error text into one readable line with the position in the user's template."""
    first_line = jsonnet_message.strip().splitlines()[0] if jsonnet_message.strip() else "evaluation failed"
    detail = _STATIC_PREFIX.sub("", first_line).removeprefix(_RUNTIME_PREFIX)
    line, column = _position(jsonnet_message)
    return _located(detail, line, column, execution)


def _located(detail: str, line: int | None, column: int | None, execution: str | None) -> RenderError:
    subject = f"template of execution {execution!r}" if execution else "template"
    where = f" at line {line}, column {column}" if line is not None else ""
    return RenderError(f"{subject}{where}: {detail}", line, column)


def _position(jsonnet_message: str) -> tuple[int | None, int | None]:
    match = _LOCATION.search(jsonnet_message)
    if match is None:
        return None, None
    line_text, column_text = (match.group(1), match.group(2)) if match.group(1) else match.group(3, 4)
    line = int(line_text) - BINDING_LINES
    if line < 1:
        return None, None
    return line, int(column_text)


def render_payload(
    execution: str,
    driver: str,
    template: str,
    params: JsonObject,
    driver_config: JsonObject | None = None,
) -> JsonObject:
    """Evaluate and validate: what comes out is a payload the execution's driver accepts."""
    payload = evaluate_template(template, params, execution=execution)
    return validate_payload(driver, with_driver_config(driver, payload, driver_config or {}))


def with_driver_config(driver: str, payload: Any, driver_config: JsonObject) -> Any:
    """striv's executions name their Nomad cluster in `driver_config.nomad_url`; `RunRendered` carries
    only the payload, so the address goes into it, unless the template chose one itself (0100)."""
    url = driver_config.get("nomad_url")
    if driver != "nomad" or not url or not isinstance(payload, dict) or "nomad_url" in payload:
        return payload
    return {**payload, "nomad_url": url}
