"""`batchyard health`: is the API alive (`/healthz`) and ready (`/readyz`: store, bus, consumers)?

Exit codes: 0 alive and ready, 1 alive but not ready, 2 unreachable (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from cli.client import ApiClient, Response, add_client_options

NOT_READY = 1


def register(commands: Any) -> None:
    parser = commands.add_parser("health", help="check that the API is alive and ready")
    add_client_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    client = ApiClient(args.url, timeout=5.0)
    live = client.call("GET", "/healthz")
    ready = client.call("GET", "/readyz")
    if args.json:
        print(json.dumps({"url": client.base_url, "healthz": _as_dict(live), "readyz": _as_dict(ready)}))
    else:
        print(f"API {client.base_url}")
        print(f"  alive: {_verdict(live)}")
        print(f"  ready: {_verdict(ready)}")
        for name, state in _checks(ready.body):
            print(f"    {name}: {state}")
    return 0 if live.status == 200 and ready.status in (200, 404) else NOT_READY


def _as_dict(response: Response) -> dict[str, Any]:
    return {"status": response.status, "body": response.body}


def _verdict(response: Response) -> str:
    if response.status == 200:
        return "yes"
    if response.status == 404:
        return "not reported by this API (404)"
    detail = response.body.get("detail") if isinstance(response.body, dict) else None
    return f"no ({response.status}{': ' + str(detail) if detail else ''})"


def _checks(body: Any) -> list[tuple[str, str]]:
    """The per-component states a readiness answer may carry, e.g. `{"checks": {"store": "ok"}}`."""
    checks = body.get("checks") if isinstance(body, dict) else None
    if not isinstance(checks, dict):
        return []
    return [
        (str(name), state if isinstance(state, str) else json.dumps(state)) for name, state in checks.items()
    ]
