"""Structure of docker-compose.yml: cpu and gpu services, Redis, volumes, health checks."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

import pytest

from tests.deploy.conftest import REPO, check_ggserve_env, compose_default
from tests.deploy.dockerfile import parse

SERVERS = ("ggserve-cpu", "ggserve-gpu")


def _env(service: dict[str, Any]) -> dict[str, str]:
    return {k: compose_default(str(v)) for k, v in service["environment"].items()}


def test_compose_has_a_cpu_and_a_gpu_server_under_profiles_and_redis(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert set(services) == {*SERVERS, "redis"}
    assert services["ggserve-cpu"]["profiles"] == ["cpu"]
    assert services["ggserve-gpu"]["profiles"] == ["gpu"]
    # Redis has no profile: it starts with whichever server is chosen.
    assert "profiles" not in services["redis"]


@pytest.mark.parametrize(
    ("service", "dockerfile"),
    [("ggserve-cpu", "Dockerfile.cpu"), ("ggserve-gpu", "Dockerfile.cuda")],
)
def test_each_server_builds_from_its_dockerfile(
    compose: dict[str, Any], service: str, dockerfile: str
) -> None:
    build = compose["services"][service]["build"]
    assert build["context"] == "."
    assert build["dockerfile"] == dockerfile
    assert (REPO / dockerfile).is_file()


def test_gpu_server_reserves_an_nvidia_gpu_and_cpu_server_none(compose: dict[str, Any]) -> None:
    devices = compose["services"]["ggserve-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert [(d["driver"], d["capabilities"]) for d in devices] == [("nvidia", ["gpu"])]
    assert devices[0].get("count", "all") in (1, "all")
    assert "deploy" not in compose["services"]["ggserve-cpu"]


def test_gpu_server_offloads_every_layer_and_otherwise_shares_the_cpu_settings(
    compose: dict[str, Any],
) -> None:
    cpu, gpu = (_env(compose["services"][name]) for name in SERVERS)
    assert gpu.pop("GGSERVE_N_GPU_LAYERS") == "-1"
    assert "GGSERVE_N_GPU_LAYERS" not in cpu
    assert gpu == cpu


@pytest.mark.parametrize("service", SERVERS)
def test_server_mounts_models_and_indexes_read_only_and_keeps_feedback(
    compose: dict[str, Any], service: str
) -> None:
    mounts = {m.split(":")[1]: m for m in compose["services"][service]["volumes"]}
    assert mounts["/models"].endswith(":ro")
    assert mounts["/indexes"].endswith(":ro")
    feedback_volume = mounts["/data"].split(":")[0]
    assert feedback_volume in compose["volumes"], "the feedback store needs a named volume"
    env = _env(compose["services"][service])
    assert env["GGSERVE_MODEL_PATH"].startswith("/models/")
    assert env["GGSERVE_EMBEDDER_PATH"].startswith("/models/")
    assert env["GGSERVE_FEEDBACK_DB"].startswith("/data/")


@pytest.mark.parametrize("service", SERVERS)
def test_server_environment_holds_real_settings_and_no_secrets(
    compose: dict[str, Any], service: str
) -> None:
    env = _env(compose["services"][service])
    check_ggserve_env(env, f"docker-compose.yml service {service}")
    assert env["GGSERVE_HOST"] == "0.0.0.0"
    assert not [k for k in env if "API_KEY" in k], "API keys belong in .env, not the compose file"
    assert compose["services"][service]["env_file"] == [{"path": ".env", "required": False}]


@pytest.mark.parametrize("service", SERVERS)
def test_rate_limits_are_shared_through_the_redis_service(
    compose: dict[str, Any], service: str
) -> None:
    storage = urlparse(_env(compose["services"][service])["GGSERVE_RATE_LIMIT_STORAGE"])
    assert storage.scheme == "redis"
    assert storage.hostname in compose["services"]
    assert compose["services"][service]["depends_on"]["redis"]["condition"] == "service_healthy"


@pytest.mark.parametrize("service", SERVERS)
def test_server_publishes_the_port_it_listens_on_with_a_health_check(
    compose: dict[str, Any], service: str
) -> None:
    definition = compose["services"][service]
    port = _env(definition)["GGSERVE_PORT"]
    [published] = definition["ports"]
    assert compose_default(published).rsplit(":", 1)[1] == port
    test = definition["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    assert test[1] == f"ggserve health --url http://127.0.0.1:{port} || exit 1"


def test_compose_health_check_matches_the_image_health_check(compose: dict[str, Any]) -> None:
    image_check = parse(REPO / "Dockerfile.cpu").final.of("HEALTHCHECK")[0]
    for flag in ("interval", "timeout", "retries", "start-period"):
        image_value = image_check.args.split(f"--{flag}=")[1].split()[0]
        compose_value = compose["services"]["ggserve-cpu"]["healthcheck"][flag.replace("-", "_")]
        assert str(compose_value) == image_value, flag


def test_every_service_has_a_health_check(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
