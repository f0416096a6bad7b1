"""What a rendered payload must look like for each driver; see docs/decisions/0042-driver-payloads.md.

The renderer validates against these before it appends `RunRendered`, so a dispatcher only ever sees a
payload its driver understands, and a bad template ends as `RunRejected` naming the field instead of a
crash in the dispatcher.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from contracts.base import Contract, JsonObject


class EncryptedSecret(Contract):
    """A secret param as it travels in a payload: still encrypted, so events and the bus never hold its
    cleartext; the dispatcher decrypts it just before it starts the process."""

    type: Literal["secret"]
    encrypted: str = Field(min_length=1)


Text = str | EncryptedSecret


def _command_shape(value: Any) -> Any:
    if value is None:
        return value
    if not isinstance(value, list | str):
        raise ValueError("must be an argv list of strings or a shell command string")
    if not value:
        raise ValueError("must not be empty")
    return value


def _env_names(value: Any) -> Any:
    if isinstance(value, dict):
        for name in value:
            if not isinstance(name, str) or not name or "=" in name or "\x00" in name:
                raise ValueError(f"{name!r} is not a valid environment variable name")
    return value


Command = Annotated[list[Text] | str, BeforeValidator(_command_shape)]
Env = Annotated[dict[str, Text], BeforeValidator(_env_names)]


def _absolute_path(value: Any) -> Any:
    if isinstance(value, str) and not value.startswith("/"):
        raise ValueError("must be an absolute path")
    return value


AbsolutePath = Annotated[str, Field(min_length=1), BeforeValidator(_absolute_path)]
StepName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


def _output_channel(value: Any) -> Any:
    if isinstance(value, str) and value not in ("stdout", "stderr") and not value.startswith("/"):
        raise ValueError("must be 'stdout', 'stderr' or an absolute file path")
    return value


OutputChannel = Annotated[str, Field(min_length=1), BeforeValidator(_output_channel)]


class LocalStep(Contract):
    """One step of a local pipeline; see docs/decisions/0170-pipelines-of-local-steps.md.

    `output` is what the next step reads on its stdin: the step's `stdout` (streamed through an OS
    pipe while the step runs), its `stderr`, or the content of a file it writes (an absolute path; the
    next step then starts only after this one ended). `env` is added to the run's env. `log` false keeps
    the data handed to the next step out of the log, so it flows from process to process without the
    dispatcher copying it.
    """

    name: StepName
    command: Command
    env: Env = Field(default_factory=dict)
    output: OutputChannel = "stdout"
    log: bool = True


class LocalPayload(Contract):
    """A process on the dispatcher's machine.

    `command` as a list is an argv run without a shell; as a string it is run by `/bin/sh -c`.
    `timeout_s` None means no timeout: batch work may legitimately run for hours, and a default limit
    would kill it by surprise. `cwd` None leaves the choice of working directory to the dispatcher.
    `state` true keeps what the run writes to `$BATCHYARD_STATE` for the job's next run (0172).
    """

    command: Command
    env: Env = Field(default_factory=dict)
    cwd: str | None = Field(default=None, min_length=1)
    timeout_s: float | None = Field(default=None, gt=0)
    stop_grace_s: float = Field(default=10.0, ge=0, le=3600)
    state: bool = False


class LocalPipelinePayload(Contract):
    """A pipeline of local processes: the local driver's payload when it has `steps` (0170).

    Each step's env is added to `env`; `cwd`, `timeout_s` (for the whole pipeline), `stop_grace_s` and
    `state` mean what they mean for a single command.
    """

    steps: Annotated[list[LocalStep], Field(min_length=1, max_length=64)]
    env: Env = Field(default_factory=dict)
    cwd: str | None = Field(default=None, min_length=1)
    timeout_s: float | None = Field(default=None, gt=0)
    stop_grace_s: float = Field(default=10.0, ge=0, le=3600)
    state: bool = False

    @field_validator("steps")
    @classmethod
    def _unique_names(cls, steps: list[LocalStep]) -> list[LocalStep]:
        names = [step.name for step in steps]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"step name {name!r} is used twice")
        return steps


class _LoosePayload(BaseModel):
    """Nomad payloads accept fields beyond those named: they are Nomad's own job specification."""

    model_config = ConfigDict(frozen=True, extra="allow")


PullPolicy = Literal["if-not-present", "always", "never"]


class DockerMount(Contract):
    """A bind mount: a path of the engine's host seen inside the container."""

    source: AbsolutePath
    target: AbsolutePath
    read_only: bool = False


class DockerPayload(Contract):
    """A container on a Docker Engine API (Docker or podman); see docs/docker.md.

    `command` None keeps the image's CMD; a list replaces it as an argv, a string is run by `/bin/sh -c`
    (so the image needs a shell). `entrypoint` None keeps the image's ENTRYPOINT. `network_mode` None
    leaves the engine's default. `keep` leaves the ended container in place for inspection instead of
    removing it.
    """

    image: str = Field(min_length=1, pattern=r"^\S+$")
    command: Command | None = None
    entrypoint: Annotated[list[Text], Field(min_length=1)] | None = None
    env: Env = Field(default_factory=dict)
    working_dir: AbsolutePath | None = None
    mounts: list[DockerMount] = Field(default_factory=list)
    cpu_limit: float | None = Field(default=None, gt=0, description="CPU cores, may be fractional")
    memory_limit_mb: int | None = Field(default=None, ge=6, description="Docker's floor is 6 MB")
    network_mode: str | None = Field(default=None, min_length=1)
    pull_policy: PullPolicy = "if-not-present"
    keep: bool = False
    timeout_s: float | None = Field(default=None, gt=0)
    stop_grace_s: float = Field(default=10.0, ge=0, le=3600)


class DockerStep(Contract):
    """One container of a Docker pipeline: its stdin is the previous step's `output` channel, fed
    through the engine's attach stream (0170). `env` is added to the pipeline's."""

    name: StepName
    image: str = Field(min_length=1, pattern=r"^\S+$")
    command: Command | None = None
    env: Env = Field(default_factory=dict)
    output: Literal["stdout", "stderr"] = "stdout"


class DockerPipelinePayload(Contract):
    """A pipeline of containers: the Docker driver's payload when it has `steps`. The other fields
    apply to every step's container as in `DockerPayload`; `timeout_s` is for the whole pipeline."""

    steps: Annotated[list[DockerStep], Field(min_length=1, max_length=64)]
    env: Env = Field(default_factory=dict)
    working_dir: AbsolutePath | None = None
    mounts: list[DockerMount] = Field(default_factory=list)
    cpu_limit: float | None = Field(default=None, gt=0)
    memory_limit_mb: int | None = Field(default=None, ge=6)
    network_mode: str | None = Field(default=None, min_length=1)
    pull_policy: PullPolicy = "if-not-present"
    keep: bool = False
    timeout_s: float | None = Field(default=None, gt=0)
    stop_grace_s: float = Field(default=10.0, ge=0, le=3600)

    @field_validator("steps")
    @classmethod
    def _unique_names(cls, steps: list[DockerStep]) -> list[DockerStep]:
        names = [step.name for step in steps]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"step name {name!r} is used twice")
        return steps


class _NomadObject(BaseModel):
    """A part of a Nomad job in its JSON API form. Nomad has many more fields than batchyard checks, so
    the rest pass through untouched, and a dump gives back only what the template wrote: the job Nomad
    receives is the job the user rendered, with no defaults of batchyard's invented into it."""

    model_config = ConfigDict(frozen=True, extra="allow")

    @model_serializer(mode="wrap")
    def _as_written(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        written = self.model_fields_set | set(self.model_extra or {})
        return {key: value for key, value in data.items() if key in written}


class NomadTask(_NomadObject):
    """Only the shapes batchyard reads are checked here; whether the task is complete (a name, a
    driver Nomad knows) is for Nomad to say, which the driver asks it before the run starts."""

    Name: str | None = Field(default=None, min_length=1)
    Driver: str | None = Field(default=None, min_length=1)
    KillTimeout: int | None = Field(default=None, ge=0, description="nanoseconds, as in Nomad's API")


class NomadTaskGroup(_NomadObject):
    Name: str | None = Field(default=None, min_length=1)
    Count: int = Field(default=1, ge=0)
    Tasks: list[NomadTask] | None = None


class NomadDispatch(Contract):
    """Run an instance of a parameterized job that already exists in Nomad."""

    job_id: str = Field(min_length=1, description="the parameterized job's ID")
    meta: dict[str, str] = Field(default_factory=dict)
    payload: str | None = Field(
        default=None, description="text handed to the job; base64-encoded on the wire"
    )
    namespace: str | None = Field(default=None, min_length=1)


NOMAD_OPTIONS = ("dispatch", "nomad_url", "timeout_s", "purge")
NOT_A_RUN = {
    "Periodic": "a run is one execution; give the job a schedule with fired_by 'nomad' to hand it to Nomad",
    "ParameterizedJob": "a parameterized job only waits for dispatches; use 'dispatch' to run one",
}


class NomadPayload(_NomadObject):
    """A Nomad job specification in its JSON API form, as striv's templates render it, plus batchyard's
    own options in lower case (Nomad's fields start with a capital letter, so the two never collide).

    Either the job itself (`TaskGroups` and the rest of Nomad's `Job` fields; its `ID` is replaced by one
    derived from the run id) or `dispatch`, which runs an instance of a parameterized job. `Type` must be
    one that ends: `batch` (the default batchyard applies, since Nomad's own default is `service`) or
    `sysbatch`. `nomad_url` picks the cluster (an execution's `driver_config.nomad_url`); `timeout_s` None
    means no timeout; `purge` removes the job from Nomad once its end is known. The grace period of a stop
    is each task's own `KillTimeout`. See docs/decisions/0100-nomad-payload.md.
    """

    dispatch: NomadDispatch | None = None
    TaskGroups: list[NomadTaskGroup] | None = Field(default=None, min_length=1, validate_default=True)
    Type: Literal["batch", "sysbatch"] | None = None
    ID: str | None = Field(default=None, min_length=1)
    Name: str | None = Field(default=None, min_length=1)
    Meta: dict[str, str] | None = None
    nomad_url: str | None = Field(default=None, pattern=r"^https?://[^\s/]+")
    timeout_s: float | None = Field(default=None, gt=0)
    purge: bool = False

    @field_validator("TaskGroups")
    @classmethod
    def _groups_unless_dispatch(
        cls, value: list[NomadTaskGroup] | None, info: ValidationInfo
    ) -> list[NomadTaskGroup] | None:
        if value is None and info.data.get("dispatch") is None and "dispatch" in info.data:
            raise ValueError("required (or 'dispatch' to run a parameterized job)")
        return value

    @model_validator(mode="after")
    def _one_kind_of_run(self) -> NomadPayload:
        extras = self.model_extra or {}
        for key in extras:
            if key[:1].islower():
                raise ValueError(
                    f"unknown field {key!r}: batchyard's options are {', '.join(NOMAD_OPTIONS)}, "
                    "and Nomad's job fields start with a capital letter"
                )
            if key in NOT_A_RUN:
                raise ValueError(f"{key!r} is not allowed in a run: {NOT_A_RUN[key]}")
        job_fields = [key for key in self.model_fields_set | set(extras) if key[:1].isupper()]
        if self.dispatch is not None and job_fields:
            fields = ", ".join(sorted(job_fields))
            raise ValueError(f"'dispatch' runs an existing parameterized job; remove the job fields {fields}")
        return self


PAYLOAD_MODELS: dict[str, type[BaseModel]] = {
    "local": LocalPayload,
    "docker": DockerPayload,
    "nomad": NomadPayload,
}


PIPELINE_MODELS: dict[str, type[BaseModel]] = {
    "local": LocalPipelinePayload,
    "docker": DockerPipelinePayload,
}


class PayloadError(ValueError):
    """A payload the driver would not understand; `field` is the dotted path of the first bad field."""

    def __init__(self, driver: str, field: str | None, reason: str) -> None:
        where = f" field {field!r}" if field else ""
        super().__init__(f"{driver} payload{where}: {reason}")
        self.driver = driver
        self.field = field
        self.reason = reason


def validate_payload(driver: str, payload: Any) -> JsonObject:
    """Check a rendered payload and return it with every default filled in."""
    model = PAYLOAD_MODELS.get(driver)
    if isinstance(payload, dict) and "steps" in payload:
        model = PIPELINE_MODELS.get(driver, model)
    if model is None:
        raise PayloadError(driver, None, f"unknown driver {driver!r}; known: {', '.join(PAYLOAD_MODELS)}")
    if not isinstance(payload, dict):
        raise PayloadError(driver, None, f"must be an object, not {type(payload).__name__}")
    try:
        validated = model.model_validate(payload)
    except ValidationError as exc:
        field, reason = _first_error(exc)
        raise PayloadError(driver, field, reason) from None
    dumped: JsonObject = validated.model_dump(mode="json")
    return dumped


def _first_error(exc: ValidationError) -> tuple[str | None, str]:
    """Pick the most telling error: pydantic reports one error per union member, so prefer the one that
    got deepest into the value, and drop the union-member tags from its location."""
    errors = exc.errors(include_url=False)
    best = max(errors, key=lambda error: len(_path(error["loc"])))
    path = _path(best["loc"])
    if best["type"] == "extra_forbidden":
        reason = "unknown field, not allowed"
    else:
        reason = best["msg"].removeprefix("Value error, ")
    return (".".join(path) or None), reason


def _path(loc: tuple[int | str, ...]) -> list[str]:
    return [str(part) for part in loc if isinstance(part, int) or not _is_union_tag(part)]


def _is_union_tag(part: str) -> bool:
    return "[" in part or part in {"str", "int", "float", "bool", "EncryptedSecret"}
