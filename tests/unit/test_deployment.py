"""compose.yaml and the Dockerfile describe a deployment that matches the code (no Docker engine here)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("api", "renderer", "dispatcher", "logarchiver")


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


def test_compose_runs_nats_with_jetstream_postgres_and_the_four_services_from_one_image() -> None:
    services = compose()["services"]
    assert set(services) == {"nats", "postgres", *SERVICES}
    assert "-js" in services["nats"]["command"]
    assert services["postgres"]["image"].startswith("postgres:")
    assert {services[name]["image"] for name in SERVICES} == {"batchyard:latest"}
    assert all(services[name]["build"] == "." for name in SERVICES)
    for name in SERVICES:
        assert services[name]["command"] == ["python", "-m", f"services.{name}.main"]
        assert set(services[name]["depends_on"]) == {"nats", "postgres"}


def test_compose_publishes_the_api_on_8080_and_runs_the_workers_as_several_replicas() -> None:
    services = compose()["services"]
    assert services["api"]["ports"] == ["8080:8080"]
    assert services["api"]["environment"]["BATCHYARD_API_HOST"] == "0.0.0.0"
    for name in ("renderer", "dispatcher", "logarchiver"):
        assert services[name]["deploy"]["replicas"] >= 2


def test_compose_sets_only_settings_batchyard_reads_and_points_services_at_its_servers() -> None:
    known = {f"BATCHYARD_{field.upper()}" for field in Settings.model_fields}
    for name in SERVICES:
        environment = compose()["services"][name]["environment"]
        assert set(environment) <= known, set(environment) - known
        assert environment["BATCHYARD_NATS_URL"] == "nats://nats:4222"
        assert "@postgres:5432/batchyard" in environment["BATCHYARD_PG_DSN"]


def test_the_image_holds_every_package_the_project_installs() -> None:
    copied = set(re.findall(r"^COPY (\w+) ", (ROOT / "Dockerfile").read_text(), flags=re.MULTILINE))
    pyproject = (ROOT / "pyproject.toml").read_text()
    included = re.search(r"include = \[(.*?)\]", pyproject)
    assert included is not None
    packages = {name.strip(' "*') for name in included.group(1).split(",")}
    assert packages <= copied
