"""Image labels and tags name the version pyproject.toml declares, so a release bumps them all."""

from __future__ import annotations

from typing import Any

import yaml

from tests.deploy.conftest import K8S, REPO, load_yaml_documents
from tests.deploy.dockerfile import Dockerfile


def test_image_version_label_is_the_project_version(
    dockerfile: Dockerfile, pyproject: dict[str, Any]
) -> None:
    assert dockerfile.final.arg_defaults()["VERSION"] == pyproject["project"]["version"]


def test_compose_and_kubernetes_image_tags_carry_the_project_version(
    compose: dict[str, Any], pyproject: dict[str, Any]
) -> None:
    version = pyproject["project"]["version"]
    tags = {
        f"compose {name}": service["image"].split(":", 1)[1]
        for name, service in compose["services"].items()
        if service["image"].startswith("ggserve:")
    }
    for variant in ("cpu", "gpu"):
        kustomization = yaml.safe_load((K8S / variant / "kustomization.yaml").read_text())
        tags[f"k8s {variant} kustomization"] = kustomization["images"][0]["newTag"]
        [deployment] = load_yaml_documents(K8S / variant / "deployment.yaml")
        image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        tags[f"k8s {variant} deployment"] = image.split(":", 1)[1]
    [job] = load_yaml_documents(K8S / "extras" / "models-fetch-job.yaml")
    tags["models fetch job"] = job["spec"]["template"]["spec"]["containers"][0]["image"].split(":")[
        1
    ]
    stale = {where: tag for where, tag in tags.items() if not tag.startswith(version + "-")}
    assert not stale, f"image tags not at version {version}: {stale}"
    assert (REPO / "docs" / "deploy.md").read_text().count(f"ggserve:{version}-") >= 4
