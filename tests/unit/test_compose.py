"""Check docker-compose.yml and the Dockerfile without a Docker engine."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
REQUIRED = {
    "postgres",
    "redis",
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "airflow-worker-modem",
    "smsc-simulator",
    "flower",
}


@pytest.fixture(scope="module")
def compose() -> dict:
    """Return the compose file parsed with anchors and merge keys resolved."""
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def common_services() -> set[str]:
    """Return the services that merge the x-airflow-common anchor (found on the YAML node graph)."""
    root = yaml.compose(COMPOSE.read_text(encoding="utf-8"))
    common = next(v for k, v in root.value if k.value == "x-airflow-common")
    services = next(v for k, v in root.value if k.value == "services")
    out = set()
    for key, node in services.value:
        if any(k.value == "<<" and v is common for k, v in node.value):
            out.add(key.value)
    return out


def test_required_services_exist(compose: dict) -> None:
    assert REQUIRED <= set(compose["services"])


def test_depends_on_targets_exist(compose: dict) -> None:
    services = compose["services"]
    for name, service in services.items():
        deps = service.get("depends_on", {})
        for target in deps if isinstance(deps, list) else deps.keys():
            assert target in services, f"{name} depends on missing {target}"


def test_anchors_resolve(compose: dict, common_services: set[str]) -> None:
    assert {s for s in REQUIRED if s.startswith("airflow-")} | {"flower"} <= common_services
    common = compose["x-airflow-common"]
    for name in common_services:
        service = compose["services"][name]
        assert service["image"] == common["image"]
        env = service["environment"]
        for key, value in common["environment"].items():
            assert env[key] == value, (name, key)
        assert "<<" not in env and "<<" not in service


def test_one_image_for_every_common_service(compose: dict, common_services: set[str]) -> None:
    images = {compose["services"][name]["image"] for name in common_services}
    assert len(images) == 1
    assert compose["services"]["smsc-simulator"]["image"] in images
    assert (
        compose["x-airflow-common"]["build"]["args"]["AIRFLOW_BASE_IMAGE"]
        == "apache/airflow:3.3.2-python3.11"
    )


def test_celery_executor_redis_postgres(compose: dict) -> None:
    env = compose["x-airflow-common"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
    assert "postgres" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false"
    assert env["AIRFLOW_CONN_DUNNING_STORE"].startswith("postgres://")
    assert "smsc-simulator" in env["AIRFLOW_CONN_SMPP_DEFAULT"] and "2775" in env["AIRFLOW_CONN_SMPP_DEFAULT"]
    assert env["DUNNING_STAGING_ROOT"]


def test_workers_and_queues(compose: dict) -> None:
    services = compose["services"]
    modem = services["airflow-worker-modem"]["command"].split()
    assert modem[:2] == ["celery", "worker"]
    assert modem[modem.index("--queues") + 1].split(",") == ["modem"]
    default = services["airflow-worker"]["command"].split()
    assert "modem" not in default[default.index("--queues") + 1].split(",")
    assert "devices:" in COMPOSE.read_text(encoding="utf-8")  # the commented /dev/ttyUSB0 mapping
    assert "/dev/ttyUSB0" in COMPOSE.read_text(encoding="utf-8")


def test_staging_volume_is_shared_by_every_worker(compose: dict, common_services: set[str]) -> None:
    for name in common_services:
        assert "dunning-staging:/opt/airflow/staging" in compose["services"][name]["volumes"]
    assert "dunning-staging" in compose["volumes"]


def test_healthchecks_and_profiles(compose: dict) -> None:
    services = compose["services"]
    for name in ("postgres", "redis", "airflow-apiserver", "airflow-scheduler", "airflow-worker"):
        assert "healthcheck" in services[name], name
    assert services["flower"]["profiles"] == ["flower"]
    assert services["smsc-simulator"]["command"].split()[:3] == ["python", "-m", "include.simulators.smsc"]
    assert "8080:8080" in services["airflow-apiserver"]["ports"]


def test_dockerfile_builds_from_airflow_with_constraints() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"^ARG AIRFLOW_BASE_IMAGE=apache/airflow:3\.3\.2-python3\.11$", text, re.M)
    assert re.search(r"^FROM \$\{AIRFLOW_BASE_IMAGE\}$", text, re.M)
    assert "-r /opt/dunning/requirements.txt -c /opt/dunning/constraints.txt" in text
    for path in re.findall(r"^COPY --chown=\S+ (.+) \S+$", text, re.M):
        for part in path.split():
            if part != "constraints.txt":  # written by the integrator
                assert (ROOT / part).exists(), part


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose binary not on PATH")
def test_docker_compose_config_accepts_the_file() -> None:
    result = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
