"""Parameter merge: the layers a run's params come from, in the order they override each other.

Pure functions only, so the merge order (see docs/decisions/0040-parameter-merge-order.md) is tested
without any server, and the preview and the run path cannot disagree about it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from contracts.base import JsonObject

DEFAULT_LAYER = "default"
JOB_LAYER = "job"
RUN_LAYER = "run"


def dimension_layer(dimension: str, value: str) -> str:
    return f"dimension:{dimension}={value}"


class ParamsError(ValueError):
    """Params a person has to fix before anything can render; `param` names the offending key."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class MissingRequiredParams(ParamsError):
    def __init__(self, missing: Sequence[str], job_id: str | None) -> None:
        names = ", ".join(repr(name) for name in missing)
        noun = "param" if len(missing) == 1 else "params"
        where = f" for job {job_id}" if job_id else ""
        super().__init__(f"required {noun} {names} missing{where}", missing[0])
        self.missing = list(missing)
        self.job_id = job_id


@dataclass(frozen=True)
class ParamLayer:
    source: str
    params: JsonObject


@dataclass(frozen=True)
class DimensionParams:
    """One dimension value a job picked, with the dimension's priority that orders it in the merge."""

    dimension: str
    priority: int
    value: str
    params: JsonObject


@dataclass(frozen=True)
class MergedParams:
    params: JsonObject
    provenance: dict[str, str]
    """Dotted path of every leaf param → the layer that set it (`default`, `dimension:<d>=<v>`, …)."""


TYPED_VALUE_TYPES = frozenset({"secret"})


def is_typed_value(value: Any) -> bool:
    """A typed param value (striv's `{"type": "secret", "encrypted": …}`) is one leaf, never merged into.

    Only known types count: an ordinary object that happens to have a `type` key
    (`{"storage": {"type": "s3", "bucket": …}}`) still merges key by key.
    """
    return isinstance(value, dict) and value.get("type") in TYPED_VALUE_TYPES


def nest_dotted_keys(params: Mapping[str, Any], *, layer: str = "params") -> JsonObject:
    """Turn striv's dotted keys (`db.host`) into nested objects, at every depth.

    A key that both a dotted and a nested spelling set to a leaf in the same layer is ambiguous and
    refused, rather than one spelling silently winning.
    """
    nested: JsonObject = {}
    for key, value in params.items():
        path = key.split(".")
        if any(part == "" for part in path):
            raise ParamsError(f"param key {key!r} in {layer} has an empty part between dots", key)
        expanded = nest_dotted_keys(value, layer=layer) if _is_object(value) else copy.deepcopy(value)
        _insert(nested, path, expanded, key, layer)
    return nested


def _insert(tree: JsonObject, path: list[str], value: Any, key: str, layer: str) -> None:
    head, rest = path[0], path[1:]
    if rest:
        child = tree.setdefault(head, {})
        if not _is_object(child):
            raise ParamsError(
                f"param {key!r} in {layer} conflicts with the value already set for {head!r}", key
            )
        _insert(child, rest, value, key, layer)
        return
    if head not in tree:
        tree[head] = value
    elif _is_object(tree[head]) and _is_object(value):
        for sub_key, sub_value in value.items():
            _insert(tree[head], [sub_key], sub_value, key, layer)
    else:
        raise ParamsError(f"param {key!r} is set twice in {layer}", key)


def _is_object(value: Any) -> bool:
    return isinstance(value, dict) and not is_typed_value(value)


def merge_layers(layers: Iterable[ParamLayer]) -> MergedParams:
    """Deep-merge layers in order, later ones overriding earlier ones leaf by leaf.

    Objects merge key by key; anything else (scalars, arrays, typed values, null) replaces what was
    there, so an array param is never concatenated and a layer can replace a whole object only by
    setting it to a non-object.
    """
    merged: JsonObject = {}
    provenance: dict[str, str] = {}
    for layer in layers:
        _merge_into(merged, provenance, nest_dotted_keys(layer.params, layer=layer.source), (), layer.source)
    return MergedParams(merged, dict(sorted(provenance.items())))


def _merge_into(
    target: JsonObject, provenance: dict[str, str], source: JsonObject, prefix: tuple[str, ...], layer: str
) -> None:
    for key, value in source.items():
        path = (*prefix, key)
        if _is_object(value) and _is_object(target.get(key)):
            _merge_into(target[key], provenance, value, path, layer)
            continue
        if key in target:
            _forget(provenance, path)
        if _is_object(value) and value:
            target[key] = {}
            _merge_into(target[key], provenance, value, path, layer)
        else:
            target[key] = value
            provenance[_dotted(path)] = layer


def _forget(provenance: dict[str, str], path: tuple[str, ...]) -> None:
    dotted = _dotted(path)
    for leaf in [leaf for leaf in provenance if leaf == dotted or leaf.startswith(dotted + ".")]:
        del provenance[leaf]


def _dotted(path: tuple[str, ...]) -> str:
    return ".".join(path)


def dimension_layers(dimensions: Iterable[DimensionParams]) -> list[ParamLayer]:
    """Lower priority first so higher priority overrides; equal priorities go by dimension name (as striv
    does), so the outcome never depends on the order a job happened to list its dimensions in."""
    ordered = sorted(dimensions, key=lambda d: (d.priority, d.dimension))
    return [ParamLayer(dimension_layer(d.dimension, d.value), d.params) for d in ordered]


def merge_params(
    *,
    defaults: JsonObject,
    dimensions: Iterable[DimensionParams] = (),
    job: JsonObject | None = None,
    overrides: JsonObject | None = None,
    required: Sequence[str] = (),
    job_id: str | None = None,
) -> MergedParams:
    layers = [
        ParamLayer(DEFAULT_LAYER, defaults),
        *dimension_layers(dimensions),
        ParamLayer(JOB_LAYER, job or {}),
        ParamLayer(RUN_LAYER, overrides or {}),
    ]
    merged = merge_layers(layers)
    missing = [name for name in required if not _is_set(merged.params, name.split("."))]
    if missing:
        raise MissingRequiredParams(missing, job_id)
    return merged


def _is_set(params: JsonObject, path: list[str]) -> bool:
    """A null counts as unset, so defaults can declare a placeholder that a job must fill in."""
    node: Any = params
    for part in path:
        if not _is_object(node) or part not in node:
            return False
        node = node[part]
    return node is not None
