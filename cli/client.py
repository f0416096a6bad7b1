"""A small synchronous client of the batchyard HTTP API for the CLI commands.

The CLI makes one request per command, so plain `urllib` (no event loop, quick import) is enough.
Every failure becomes a `CliError` with one readable line: unreachable servers, and problem+json answers
(RFC 9457) whose title, detail and field errors are what the user needs to see.
"""

from __future__ import annotations

import argparse
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from cli.errors import CliError

DEFAULT_URL = "http://127.0.0.1:8080"
URL_ENV = "BATCHYARD_URL"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
PAGE_MAX = 500


class ApiUnreachable(CliError):
    """No answer at all (refused, reset, timed out): worth retrying where a stream is being followed."""


@dataclass(frozen=True)
class Response:
    status: int
    body: Any


def add_client_options(parser: argparse.ArgumentParser) -> None:
    """The options every command that talks to the API shares."""
    parser.add_argument(
        "--url",
        default=os.environ.get(URL_ENV, DEFAULT_URL),
        help=f"address of the batchyard API (default: ${URL_ENV} or {DEFAULT_URL})",
    )
    parser.add_argument("--json", action="store_true", help="print the API's JSON answer instead of text")


def client_for(args: argparse.Namespace, **options: Any) -> ApiClient:
    """The client a command's `--url` names."""
    return ApiClient(args.url, **options)


def quoted(identifier: str) -> str:
    """An id typed by a person, safe as one path segment (a stray `/` must not reach another route)."""
    return urllib.parse.quote(identifier.strip(), safe="")


class ApiClient:
    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        actor: str | None = None,
        correlation_id: str | None = None,
    ) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise CliError(f"--url {base_url!r} is not an http(s) address like {DEFAULT_URL}")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._opener = _opener_for(parsed.hostname)
        self.actor = actor or os.environ.get("USER") or "cli"
        self.correlation_id = correlation_id

    def call(
        self, method: str, path: str, *, body: Any = None, query: dict[str, Any] | None = None
    ) -> Response:
        """One request; answers any HTTP status, raises only when the API cannot be reached."""
        data = None if body is None else json.dumps(body).encode()
        request = self._request(method, path, query, data)
        request.add_header("Accept", "application/json, application/problem+json")
        try:
            with self._opener.open(request, timeout=self.timeout) as answer:
                return Response(answer.status, _decode(answer.read()))
        except urllib.error.HTTPError as answer:
            return Response(answer.code, _decode(answer.read()))
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiUnreachable(f"cannot reach the batchyard API at {self.base_url}: {reason}") from None

    def request(
        self, method: str, path: str, *, body: Any = None, query: dict[str, Any] | None = None
    ) -> Any:
        """The JSON body of a successful answer; an error answer becomes a `CliError`."""
        response = self.call(method, path, body=body, query=query)
        if response.status >= 400:
            raise CliError(describe_problem(response))
        return response.body

    def get(self, path: str, **query: Any) -> Any:
        return self.request("GET", path, query=query)

    def items(self, path: str, query: dict[str, Any], limit: int | None = None) -> Iterator[Any]:
        """Every item of a paged list, following `next_cursor`, or the first `limit` of them."""
        wanted = limit
        query = dict(query)
        while wanted is None or wanted > 0:
            if wanted is not None:
                query["limit"] = min(wanted, PAGE_MAX)
            page = self.request("GET", path, query=query)
            yield from page["items"]
            if wanted is not None:
                wanted -= len(page["items"])
            if not page.get("next_cursor") or not page["items"]:
                return
            query["cursor"] = page["next_cursor"]

    def open_stream(
        self,
        path: str,
        query: dict[str, Any] | None = None,
        *,
        last_event_id: str | None = None,
        read_timeout: float | None = None,
    ) -> Any:
        """An open server-sent-events answer to read line by line; an error answer is a `CliError`."""
        request = self._request("GET", path, query, None)
        request.add_header("Accept", "text/event-stream")
        if last_event_id is not None:
            request.add_header("Last-Event-ID", last_event_id)
        try:
            return self._opener.open(request, timeout=read_timeout)
        except urllib.error.HTTPError as answer:
            raise CliError(describe_problem(Response(answer.code, _decode(answer.read())))) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiUnreachable(f"cannot reach the batchyard API at {self.base_url}: {reason}") from None

    def _request(
        self, method: str, path: str, query: dict[str, Any] | None, data: bytes | None
    ) -> urllib.request.Request:
        url = self.base_url + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None}, doseq=True)
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("X-Actor", self.actor)
        if self.correlation_id is not None:
            request.add_header("X-Correlation-Id", self.correlation_id)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        return request


def describe_problem(response: Response) -> str:
    """One line out of a problem+json answer (or whatever the server sent instead)."""
    body = response.body
    if not isinstance(body, dict):
        text = str(body).strip().splitlines()[0] if body else ""
        return f"the API answered {response.status}" + (f": {text}" if text else "")
    line = f"{response.status} {body.get('title') or 'error'}"
    if body.get("detail"):
        line += f": {body['detail']}"
    fields = []
    for error in body.get("errors") or []:
        if isinstance(error, dict):
            field = error.get("field") or error.get("pointer")
            reason = error.get("reason") or error.get("message")
            fields.append(f"{field}: {reason}" if field else str(reason))
    fields = [text for text in fields if text not in line]
    return line + (f" ({'; '.join(fields)})" if fields else "")


def _opener_for(host: str | None) -> urllib.request.OpenerDirector:
    """A local API is reached directly, whatever proxy the environment names for the world outside."""
    if host in LOOPBACK:
        return urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener()


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")
