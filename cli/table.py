"""Plain-text output of the CLI: aligned tables, short times and compact values for people to read.

Scripts use `--json` instead, so nothing here is a format anyone should parse.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

CELL_WIDTH = 60


def print_json(value: Any) -> None:
    """The API's JSON as it came, one document, for `--json`."""
    print(json.dumps(value, indent=2, ensure_ascii=False))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns aligned on the widest cell, separated by two spaces; headers in capitals."""
    cells = [[cell(value) for value in row] for row in rows]
    titles = [header.upper() for header in headers]
    widths = [max([len(title)] + [len(row[i]) for row in cells]) for i, title in enumerate(titles)]
    lines = [_line(titles, widths)] + [_line(row, widths) for row in cells]
    return "\n".join(lines)


def _line(values: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(value.ljust(width) for value, width in zip(values, widths, strict=True)).rstrip()


def cell(value: Any) -> str:
    """One value as a single line: `-` for nothing, text whole, structures as JSON cut at CELL_WIDTH."""
    if value is None or value == "" or value == {} or value == []:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return " ".join(value.split())
    text = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return text if len(text) <= CELL_WIDTH else text[: CELL_WIDTH - 1] + "…"


def when(value: str | None) -> str:
    """An API timestamp (ISO 8601) as `2026-11-23 19:15:08Z`: UTC, to the second."""
    if not value:
        return "-"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def pairs(mapping: dict[str, Any] | None) -> str:
    """`{"env": "prod", "customer": "acme"}` as `customer=acme env=prod`: keys sorted, a value with
    spaces or a non-string value as JSON, so each pair reads unambiguously."""
    if not mapping:
        return "-"
    return " ".join(f"{key}={_pair_value(mapping[key])}" for key in sorted(mapping))


def _pair_value(value: Any) -> str:
    if isinstance(value, str) and value and not any(c.isspace() or c == '"' for c in value):
        return value
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def details(fields: Sequence[tuple[str, Any]]) -> str:
    """A record as `name: value` lines, names aligned, for `show` commands."""
    width = max(len(name) for name, _ in fields)
    return "\n".join(f"{name + ':':<{width + 1}} {value}" for name, value in fields)
