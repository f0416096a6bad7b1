"""`KEY=VALUE` options: dimensions (`--dimension customer=acme`), filters (`--where`) and params.

A param value is a string (`--param greeting=hello`) unless written `KEY:=JSON`
(`--param retries:=3`, `--param hosts:='["a","b"]'`), so `--param zip=01234` stays the string a
person typed; `--params-json` gives a whole object at once and `--param` overrides its keys.

`--secret KEY` makes KEY a secret param sent as `{"type": "secret", "value": ...}`, which the API
encrypts at the door; the value never appears in argv (shell history, `ps`): it is asked for without
echo on a terminal, else read from stdin, one line per `--secret` in the order given.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from cli.errors import CliError


def split_pair(text: str, option: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise CliError(f"{option} {text!r}: expected KEY=VALUE, e.g. {option} customer=acme")
    return key, value


def string_pairs(texts: Sequence[str] | None, option: str) -> dict[str, str]:
    """`--dimension a=b --dimension c=d` as `{"a": "b", "c": "d"}`; a key given twice is refused."""
    found: dict[str, str] = {}
    for text in texts or ():
        key, value = split_pair(text, option)
        if not value:
            raise CliError(f"{option} {text!r}: the value after '=' is empty")
        if key in found:
            raise CliError(f"{option} {key!r} is given twice")
        found[key] = value
    return found


def params(pairs: Sequence[str] | None, params_json: str | None = None) -> dict[str, Any]:
    """`--params-json` first, then each `--param`: `KEY=string` or `KEY:=json`."""
    merged: dict[str, Any] = {}
    if params_json is not None:
        try:
            whole = json.loads(params_json)
        except ValueError as exc:
            raise CliError(f"--params-json is not JSON: {exc}") from None
        if not isinstance(whole, dict):
            raise CliError('--params-json must be a JSON object, e.g. \'{"greeting": "hello"}\'')
        merged.update(whole)
    for text in pairs or ():
        key, value = split_pair(text, "--param")
        if key.endswith(":"):
            key = key[:-1].strip()
            if not key:
                raise CliError(f"--param {text!r}: expected KEY:=JSON, e.g. --param retries:=3")
            try:
                merged[key] = json.loads(value)
            except ValueError as exc:
                raise CliError(f"--param {key}:= is not JSON: {exc}") from None
        else:
            merged[key] = value
    return merged


def secret_params(keys: Sequence[str] | None) -> dict[str, Any]:
    if not keys:
        return {}
    if len(set(keys)) != len(keys):
        raise CliError("--secret: a key is given twice")
    if sys.stdin.isatty():
        import getpass

        values = [getpass.getpass(f"value of secret param {key} (not shown): ") for key in keys]
    else:
        values = sys.stdin.read().splitlines()
        if len(values) < len(keys):
            raise CliError(
                f"--secret: stdin holds {len(values)} line(s) for {len(keys)} secret(s), one per line"
            )
    return {key: {"type": "secret", "value": value} for key, value in zip(keys, values, strict=False)}
