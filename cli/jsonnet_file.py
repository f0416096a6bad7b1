"""Evaluate a jsonnet (or JSON) file on the operator's machine, imports resolved next to the file.

State files and job files are evaluated here, not on the server, so `import`/`importstr` read the
operator's checkout (templates kept in Git beside the state file) and stored definitions never need
one. go-jsonnet is preferred when installed (it is much faster, see 0041), the C++ engine otherwise;
both resolve imports relative to the importing file. A jsonnet error becomes one line naming the
file, line and column of the innermost frame.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

from cli.errors import CliError

ENGINES = ("_gojsonnet", "_jsonnet")
# `file:3:5`, `file:3:5-9` or `file:(3:5)-(4:2)`: the first one in jsonnet's text is the innermost frame.
_LOCATION = re.compile(r"(?P<file>[^\s:()]+):(?:\((?P<pline>\d+):(?P<pcol>\d+)\)|(?P<line>\d+):(?P<col>\d+))")
_PREFIX = re.compile(r"^(?:STATIC ERROR|RUNTIME ERROR):\s*")


def _engine() -> ModuleType:
    for name in ENGINES:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise CliError("no jsonnet engine is installed: install gojsonnet or jsonnet")


def evaluate(path: Path) -> Any:
    """The JSON value of the file; a missing file, a jsonnet error or a non-JSON result is a CliError."""
    if not path.is_file():
        raise CliError(f"{path}: no such file")
    try:
        text = _engine().evaluate_file(str(path))
    except RuntimeError as exc:
        raise CliError(describe_error(str(exc), str(path))) from None
    return json.loads(text)


def describe_error(message: str, path: str) -> str:
    """`state.jsonnet:2:9: unexpected: "," while parsing terminal` out of either engine's text."""
    lines = [line for line in message.strip().splitlines() if line.strip()]
    if not lines:
        return f"{path}: jsonnet evaluation failed"
    first = lines[0]
    location = _LOCATION.search(first) if not first.startswith("RUNTIME ERROR") else None
    if location is None:
        location = next((m for line in lines[1:] if (m := _LOCATION.search(line))), None)
    if location is None:
        return f"{path}: {_PREFIX.sub('', first)}"
    where = "{}:{}:{}".format(
        location["file"], location["line"] or location["pline"], location["col"] or location["pcol"]
    )
    reason = _PREFIX.sub("", first)
    if location.group(0) in reason:
        reason = reason[reason.index(location.group(0)) + len(location.group(0)) :]
        reason = re.sub(r"^[-\d]*:?\s*", "", reason)
    return f"{where}: {reason.strip() or 'jsonnet evaluation failed'}"
