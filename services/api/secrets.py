"""Secrets at the API's door: cleartext secrets are encrypted before anything is recorded, and every
secret leaves the API as `***`.

The API only ever encrypts, so it holds the public key alone: `BATCHYARD_SECRET_KEY_FILE` may name
the private key file (its private half is dropped on load) or a public key file. Nothing in this
process can decrypt what it stored. See docs/decisions/0131-secrets-at-the-api-door.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from contracts.commands import JobPatch, StateFile
from contracts.envelope import RecordedEvent
from contracts.specs import DimensionSpec, DimensionValue, ExecutionSpec, JobSpec
from services.api.models import DimensionView, ExecutionView, JobView, RunView
from services.api.problems import ProblemError
from shared.secrets import (
    MASK,
    NO_KEY_MESSAGE,
    DecryptionError,
    InvalidSecretParamError,
    NoSecretKeyError,
    encrypt_cleartext_secrets,
    format_path,
    is_secret,
    load_public_key,
    mask_secrets,
)
from shared.settings import Settings


def _field(where: str, path: tuple[str | int, ...]) -> str:
    inner = format_path(path)
    if not inner:
        return where
    return f"{where}{inner}" if inner.startswith("[") else f"{where}.{inner}"


@dataclass(frozen=True)
class SecretDoor:
    """Encrypts cleartext secrets in every params tree a request brings in, or refuses them (422)."""

    public_key: rsa.RSAPublicKey | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretDoor:
        if settings.secret_key_file is None or not str(settings.secret_key_file).strip():
            return cls(None)
        return cls(load_public_key(Path(settings.secret_key_file).expanduser()))

    def seal(self, params: Mapping[str, Any], where: str) -> dict[str, Any]:
        """`params` with every `{"type": "secret", "value": …}` encrypted; `where` names the tree in
        errors (`body.params`), so a problem points at `body.params.db.password`."""
        _refuse_masks(params, where)
        try:
            return encrypt_cleartext_secrets(params, self.public_key)
        except NoSecretKeyError as exc:
            errors = [{"field": _field(where, path), "reason": NO_KEY_MESSAGE} for path in exc.paths]
            raise ProblemError(422, "No secret key", str(exc), "no-secret-key", errors=errors) from None
        except (InvalidSecretParamError, DecryptionError) as exc:
            name = _field(where, exc.path)
            raise ProblemError(
                422,
                "Invalid secret",
                f"{name}: {exc.reason}",
                "validation",
                errors=[{"field": name, "reason": exc.reason}],
            ) from None

    def seal_execution(self, spec: ExecutionSpec, where: str) -> ExecutionSpec:
        """Default params and driver config: a secret in either must never be stored in clear."""
        return spec.model_copy(
            update={
                "default_params": self.seal(spec.default_params, f"{where}.default_params"),
                "driver_config": self.seal(spec.driver_config, f"{where}.driver_config"),
            }
        )

    def seal_dimension(self, spec: DimensionSpec, where: str) -> DimensionSpec:
        values = {
            name: DimensionValue(params=self.seal(value.params, f"{where}.values.{name}.params"))
            for name, value in spec.values.items()
        }
        return spec.model_copy(update={"values": values})

    def seal_state(self, state: StateFile, where: str) -> StateFile:
        """Keeps which kinds the body carried: an absent kind must stay absent (0130)."""
        update: dict[str, Any] = {}
        if "executions" in state.model_fields_set:
            update["executions"] = {
                name: self.seal_execution(spec, f"{where}.executions.{name}")
                for name, spec in state.executions.items()
            }
        if "dimensions" in state.model_fields_set:
            update["dimensions"] = {
                name: self.seal_dimension(spec, f"{where}.dimensions.{name}")
                for name, spec in state.dimensions.items()
            }
        return state.model_copy(update=update)

    def seal_job(self, spec: JobSpec, where: str) -> JobSpec:
        return spec.model_copy(update={"params": self.seal(spec.params, f"{where}.params")})

    def seal_patch(self, patch: JobPatch, where: str) -> JobPatch:
        if patch.params is None:
            return patch
        return patch.model_copy(update={"params": self.seal(patch.params, f"{where}.params")})


def _refuse_masks(params: Mapping[str, Any], where: str) -> None:
    """A `***` value is what this API shows in place of a secret. Sent back (a client that read a job,
    edited one field and sent all params again), it would replace the secret with three asterisks,
    silently; so it is refused, naming every place, and the client sends the secret again or omits it."""
    found: list[str] = []

    def visit(value: Any, path: tuple[str | int, ...]) -> None:
        if value == MASK:
            found.append(_field(where, path))
        elif isinstance(value, Mapping) and not is_secret(value):
            for key, item in value.items():
                visit(item, (*path, str(key)))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                visit(item, (*path, index))

    for name, value in params.items():
        visit(value, (name,))
    if found:
        reason = f"{MASK} stands for a secret in responses; send the secret itself or leave the param out"
        raise ProblemError(
            422,
            "Masked value sent back",
            f"{', '.join(found)}: {reason}",
            "validation",
            errors=[{"field": name, "reason": reason} for name in found],
        )


def mask_anywhere(value: Any) -> Any:
    """Every secret-tagged object at any depth as `***`, for documents that are not a params tree
    (event data, history values), where no top level of param names needs protecting."""
    if is_secret(value):
        return MASK
    if isinstance(value, Mapping):
        return {key: mask_anywhere(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [mask_anywhere(item) for item in value]
    return value


def masked_event(event: RecordedEvent) -> RecordedEvent:
    return event.model_copy(update={"data": mask_anywhere(event.data)})


def masked_execution(view: ExecutionView) -> ExecutionView:
    spec = view.spec.model_copy(
        update={
            "default_params": mask_secrets(view.spec.default_params),
            "driver_config": mask_secrets(view.spec.driver_config),
        }
    )
    return view.model_copy(update={"spec": spec})


def masked_dimension(view: DimensionView) -> DimensionView:
    values = {
        name: DimensionValue(params=mask_secrets(value.params)) for name, value in view.spec.values.items()
    }
    return view.model_copy(update={"spec": view.spec.model_copy(update={"values": values})})


def masked_job(view: JobView) -> JobView:
    return view.model_copy(update={"params": mask_secrets(view.params)})


def masked_run(view: RunView) -> RunView:
    return view.model_copy(update={"overrides": mask_secrets(view.overrides)})
