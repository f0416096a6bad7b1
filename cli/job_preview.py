"""`batchyard jobs preview ID [--at TIME]`: what a run of the job would render, each param's layer.

The API asks a renderer (`GET /jobs/{id}/preview`), so the payload is exactly what a run would get,
secrets shown as `***`. `--at` renders the job, its execution and its dimensions as they stood then.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import Any

from cli.client import add_client_options, client_for, quoted
from cli.table import cell, print_json, table, when


def register(verbs: Any) -> None:
    preview = verbs.add_parser("preview", help="the payload a run would render, and each param's layer")
    add_client_options(preview)
    preview.add_argument("job_id", metavar="ID")
    preview.add_argument(
        "--at",
        metavar="TIME",
        help="as the job stood then: RFC 3339, e.g. 2026-11-23T08:00:00Z (no offset: UTC)",
    )
    preview.set_defaults(run=run_preview)


def run_preview(args: argparse.Namespace) -> int:
    preview = client_for(args, timeout=30.0).get(f"/jobs/{quoted(args.job_id)}/preview", at=args.at)
    if args.json:
        print_json(preview)
        return 0
    stood = f" as it stood at {when(preview['at'])}" if preview.get("at") else ""
    print(f"job {preview['job_id']} version {preview['job_version']}{stood}, driver {preview['driver']}")
    print(json.dumps(preview["payload"], indent=2, ensure_ascii=False))
    leaves = _leaves(preview["params"], "")
    if leaves:
        provenance = preview.get("provenance") or {}
        rows = [[path, cell(value), provenance.get(path, "-")] for path, value in sorted(leaves.items())]
        print()
        print(table(["param", "value", "from"], rows))
    return 0


def _leaves(value: Any, prefix: str) -> dict[str, Any]:
    """Dotted path → value, as `provenance` names them (`db.host`)."""
    if isinstance(value, Mapping) and value:
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_leaves(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value} if prefix else {}
