"""deploy/k8s: schema validation (offline, kubernetes-validate), kustomize wiring, and that the
objects refer to each other and to the server correctly."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from tests.deploy.conftest import K8S, check_ggserve_env, load_yaml_documents, tool

VARIANTS = ("cpu", "gpu")
# The oldest Kubernetes release we promise to run on, and the newest the schemas know.
KUBERNETES_VERSIONS = ("1.30.0", "latest")
HELM_VALUES = {"extras/prometheus-adapter-values.yaml"}
# Objects of a CRD (the Prometheus Operator's PrometheusRule, the Inference Extension's
# InferencePool, Gateway API routes, KEDA) have no schema in kubernetes-validate;
# tests/deploy/test_observability_assets.py and test_inference_gateway.py check them instead.
CUSTOM_RESOURCES = {
    "extras/prometheus-rules.yaml",
    "extras/keda-scaledobject.yaml",
    "inference-gateway/inferencepool.yaml",
    "inference-gateway/gateway.yaml",
    "inference-gateway/inferenceobjectives.yaml",
}
# Pods that talk to the API server (the endpoint picker watches pods and InferencePools).
API_CLIENTS = {"inference-gateway/epp.yaml"}

Object = dict[str, Any]


def _manifest_files() -> list[Path]:
    return sorted(
        p
        for p in K8S.rglob("*.yaml")
        if p.name != "kustomization.yaml" and str(p.relative_to(K8S)) not in HELM_VALUES
    )


def _objects(*relative: str) -> list[Object]:
    return [doc for name in relative for doc in load_yaml_documents(K8S / name)]


def _variant(variant: str) -> list[Object]:
    """The objects `kubectl apply -k deploy/k8s/<variant>` creates, read from the files."""
    objects: list[Object] = []

    def collect(folder: Path) -> None:
        kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
        for resource in kustomization["resources"]:
            target = (folder / resource).resolve()
            if target.is_dir():
                collect(target)
            else:
                objects.extend(load_yaml_documents(target))

    collect(K8S / variant)
    return objects


def _one(objects: list[Object], kind: str, name: str | None = None) -> Object:
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _server(objects: list[Object]) -> Object:
    return _one(objects, "Deployment", "ggserve")


def _container(deployment: Object) -> Object:
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return container


def _validate(validate: Any, obj: Object, version: str, where: str) -> None:
    """Schema-check one object; strict, so a misspelt field fails instead of being dropped."""
    try:
        validate.validate(obj, version, strict=True)
    except validate.ValidationError as exc:
        field = ".".join(str(part) for part in exc.path)
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        pytest.fail(f"{where}: {name} at {field or '(top)'}: {exc.message} (k8s {version})")


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(
    "path",
    [p for p in _manifest_files() if str(p.relative_to(K8S)) not in CUSTOM_RESOURCES],
    ids=lambda p: str(p.relative_to(K8S)),
)
def test_manifest_is_valid_against_the_kubernetes_schema(path: Path, version: str) -> None:
    validate = pytest.importorskip(
        "kubernetes_validate.utils", reason="kubernetes-validate (dev extra) is not installed"
    )
    if version == "latest":
        version = validate.latest_version()
    documents = load_yaml_documents(path)
    assert documents, f"{path} holds no object"
    for document in documents:
        _validate(validate, document, version, where=str(path.relative_to(K8S)))


def test_only_the_helm_values_file_is_not_a_kubernetes_object() -> None:
    for name in HELM_VALUES:
        values = yaml.safe_load((K8S / name).read_text())
        assert "kind" not in values and "rules" in values


@pytest.mark.parametrize("variant", VARIANTS)
def test_kustomization_lists_existing_files(variant: str) -> None:
    for folder in (K8S / variant, K8S / "common"):
        kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
        for resource in kustomization["resources"]:
            assert (folder / resource).exists(), f"{folder.name}: {resource} does not exist"


def test_every_manifest_is_used_by_a_variant_or_documented_as_applied_by_hand() -> None:
    used = {
        (K8S / variant / r).resolve()
        for variant in (*VARIANTS, "common", "inference-gateway")
        for r in yaml.safe_load((K8S / variant / "kustomization.yaml").read_text())["resources"]
    }
    by_hand = {K8S / "secret.example.yaml", *(K8S / "extras").glob("*.yaml")}
    orphans = [p for p in _manifest_files() if p.resolve() not in used and p not in by_hand]
    assert not orphans, f"manifests no kustomization includes: {orphans}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_kustomize_renders_the_variant_into_valid_objects(variant: str) -> None:
    kubectl = tool("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; the kustomization files are checked above")
    validate = pytest.importorskip("kubernetes_validate.utils")
    rendered = subprocess.run(
        [kubectl, "kustomize", str(K8S / variant)], capture_output=True, text=True, timeout=60
    )
    assert rendered.returncode == 0, rendered.stderr
    objects = [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]
    assert sorted(o["kind"] for o in objects) == sorted(o["kind"] for o in _variant(variant))
    for obj in objects:
        assert obj["metadata"].get("namespace", "ggserve") == "ggserve"
        _validate(validate, obj, validate.latest_version(), where=f"kustomize {variant}")
    image = _container(_server(objects))["image"]
    assert image.endswith("-cpu" if variant == "cpu" else "-cuda")


@pytest.mark.parametrize("variant", VARIANTS)
def test_service_pdb_and_hpa_point_at_the_server_pods(variant: str) -> None:
    objects = _variant(variant)
    deployment = _server(objects)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert _matches(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    service = _one(objects, "Service", "ggserve")
    assert _matches(service["spec"]["selector"], pod_labels)
    redis_pods = _one(objects, "Deployment", "ggserve-redis")["spec"]["template"]["metadata"]
    assert not _matches(service["spec"]["selector"], redis_pods["labels"])
    pdb = _one(objects, "PodDisruptionBudget")
    assert _matches(pdb["spec"]["selector"]["matchLabels"], pod_labels)
    target = _one(objects, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    port_names = {p["name"] for p in _container(deployment)["ports"]}
    assert service["spec"]["ports"][0]["targetPort"] in port_names


@pytest.mark.parametrize("variant", VARIANTS)
def test_probes_use_health_for_liveness_and_ready_for_readiness(variant: str) -> None:
    container = _container(_server(_variant(variant)))
    port_names = {p["name"] for p in container["ports"]}
    probes = {
        k: container[k]["httpGet"] for k in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert probes["livenessProbe"]["path"] == "/health"
    assert probes["readinessProbe"]["path"] == "/ready"
    assert probes["startupProbe"]["path"] == "/health"
    assert {p["port"] for p in probes.values()} <= port_names
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120, "slow starts get 2 min+"


@pytest.mark.parametrize("variant", VARIANTS)
def test_pod_configuration_refers_to_objects_that_exist(variant: str) -> None:
    objects = _variant(variant) + _objects("secret.example.yaml")
    pod = _server(objects)["spec"]["template"]["spec"]
    for source in _container(_server(objects))["envFrom"]:
        kind, ref = next(iter(source.items()))
        _one(objects, {"configMapRef": "ConfigMap", "secretRef": "Secret"}[kind], ref["name"])
    for volume in pod["volumes"]:
        if "persistentVolumeClaim" in volume:
            _one(objects, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    mounted = {m["name"] for m in _container(_server(objects))["volumeMounts"]}
    assert mounted == {v["name"] for v in pod["volumes"]}


def test_config_map_holds_real_settings_and_points_rate_limits_at_redis() -> None:
    objects = _variant("cpu")
    data = _one(objects, "ConfigMap", "ggserve-config")["data"]
    check_ggserve_env(data, "configmap.yaml")
    assert data["GGSERVE_HOST"] == "0.0.0.0"
    assert not [k for k in data if "API_KEY" in k], "API key hashes belong in the Secret"
    storage = urlparse(data["GGSERVE_RATE_LIMIT_STORAGE"])
    redis_service = _one(objects, "Service", storage.hostname)
    assert storage.port in {p["port"] for p in redis_service["spec"]["ports"]}
    container = _container(_server(objects))
    assert int(data["GGSERVE_PORT"]) == container["ports"][0]["containerPort"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    for key in ("GGSERVE_MODEL_PATH", "GGSERVE_EMBEDDER_PATH", "GGSERVE_FEEDBACK_DB"):
        assert any(data[key].startswith(m + "/") for m in mounts), f"{key} is on no volume"


def test_example_secret_holds_only_the_published_example_hash() -> None:
    from server.security.api_keys import hash_key, parse_key_entry

    secret = _one(_objects("secret.example.yaml"), "Secret", "ggserve-api-keys")
    entries = secret["stringData"]["GGSERVE_API_KEYS"].split(",")
    keys = [parse_key_entry(entry) for entry in entries]
    assert [k.sha256 for k in keys] == [hash_key("example-key-do-not-use")]


def test_redis_accepts_connections_only_from_the_server_pods() -> None:
    objects = _variant("cpu")
    policy = _one(objects, "NetworkPolicy", "ggserve-redis")
    redis_pods = _one(objects, "Deployment", "ggserve-redis")["spec"]["template"]["metadata"]
    server_pods = _server(objects)["spec"]["template"]["metadata"]
    assert _matches(policy["spec"]["podSelector"]["matchLabels"], redis_pods["labels"])
    [rule] = policy["spec"]["ingress"]
    [peer] = rule["from"]
    assert _matches(peer["podSelector"]["matchLabels"], server_pods["labels"])


@pytest.mark.parametrize("variant", VARIANTS)
def test_llama_cpp_threads_leave_one_requested_core_to_the_server(variant: str) -> None:
    container = _container(_server(_variant(variant)))
    [threads] = [e for e in container["env"] if e["name"] == "GGSERVE_N_THREADS"]
    assert int(threads["value"]) == int(container["resources"]["requests"]["cpu"]) - 1
    assert "cpu" not in container["resources"].get("limits", {}), "CPU limits throttle streams"


def test_gpu_variant_requests_one_gpu_and_offloads_every_layer() -> None:
    container = _container(_server(_variant("gpu")))
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["GGSERVE_N_GPU_LAYERS"] == "-1"
    cpu = _container(_server(_variant("cpu")))
    assert "nvidia.com/gpu" not in cpu["resources"].get("limits", {})


def test_gpu_deployment_differs_from_cpu_only_where_a_gpu_needs_it() -> None:
    def comparable(variant: str) -> Object:
        deployment = copy.deepcopy(_server(_variant(variant)))
        spec = deployment["spec"]
        spec.pop("strategy")
        spec["template"]["spec"].pop("tolerations", None)
        container = _container(deployment)
        container.pop("image")
        container.pop("resources")
        container["env"] = [e for e in container["env"] if e["name"] != "GGSERVE_N_GPU_LAYERS"]
        return deployment

    assert comparable("gpu") == comparable("cpu")


def test_hpa_metrics_are_ones_the_server_exports() -> None:
    from server.observability.metrics import Metrics

    exported = {
        family.name for family in Metrics(lambda: None, lambda: "ready", str).registry.collect()
    }
    adapter = yaml.safe_load((K8S / "extras" / "prometheus-adapter-values.yaml").read_text())
    served = adapter["rules"]["custom"][0]["seriesQuery"]
    for variant in VARIANTS:
        for metric in _one(_variant(variant), "HorizontalPodAutoscaler")["spec"]["metrics"]:
            if metric["type"] == "Pods":
                name = metric["pods"]["metric"]["name"]
                assert name in exported, f"{name} is not on /metrics"
                assert name.removeprefix("ggserve_") in served, f"the adapter does not serve {name}"


@pytest.mark.parametrize(
    "path",
    [
        p
        for p in _manifest_files()
        if any(f"kind: {kind}\n" in p.read_text() for kind in ("Deployment", "Job", "CronJob"))
    ],
    ids=lambda p: str(p.relative_to(K8S)),
)
def test_pods_meet_the_restricted_pod_security_standard(path: Path) -> None:
    for obj in load_yaml_documents(path):
        if obj["kind"] not in ("Deployment", "Job", "CronJob"):
            continue
        pod = _pod_spec(obj)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        if str(path.relative_to(K8S)) in API_CLIENTS:  # its own ServiceAccount, bound by a Role
            assert pod["automountServiceAccountToken"] is True and pod["serviceAccountName"]
        else:
            assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert context["readOnlyRootFilesystem"] is True
            assert container["resources"]["limits"]["memory"], "a memory limit keeps OOM local"


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_grace_period_outlasts_prestop_plus_the_drain(variant: str) -> None:
    """SIGKILL must not come before the server's drain (server/runtime/drain.py) is over."""
    from server.runtime.drain import DEADLINE_GRACE_S

    objects = _variant(variant)
    drain_s = float(_one(objects, "ConfigMap", "ggserve-config")["data"]["GGSERVE_DRAIN_TIMEOUT_S"])
    pod = _server(objects)["spec"]["template"]["spec"]
    pre_stop = _container(_server(objects))["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    needed = float(pre_stop[1]) + drain_s + DEADLINE_GRACE_S
    assert pod["terminationGracePeriodSeconds"] >= needed + 5, (pod, needed)


def _pod_spec(obj: Object) -> Object:
    """The pod template's spec of a Deployment, Job or CronJob."""
    if obj["kind"] == "CronJob":
        obj = obj["spec"]["jobTemplate"]
    spec: Object = obj["spec"]["template"]["spec"]
    return spec


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_server_names_its_trusted_proxies_setting_and_leaves_it_safe(variant: str) -> None:
    from server.settings import Settings

    container = _container(_server(_variant(variant)))
    env = {e["name"]: e["value"] for e in container["env"]}
    check_ggserve_env(env, f"{variant}/deployment.yaml")
    # Empty by default: X-Forwarded-For is never read until the operator names the ingress.
    assert env["GGSERVE_TRUSTED_PROXIES"] == ""
    assert (
        Settings.model_validate({"trusted_proxies": env["GGSERVE_TRUSTED_PROXIES"]}).trusted_proxies
        == []
    )
    text = (K8S / variant / "deployment.yaml").read_text()
    assert "ingress controller" in text.split("GGSERVE_TRUSTED_PROXIES")[0][-800:]


def test_server_pods_take_traffic_only_on_http_from_the_ingress_and_prometheus() -> None:
    objects = _variant("cpu")
    policy = _one(objects, "NetworkPolicy", "ggserve-server")
    server = _server(objects)
    assert _matches(
        policy["spec"]["podSelector"]["matchLabels"],
        server["spec"]["template"]["metadata"]["labels"],
    )
    redis = _one(objects, "Deployment", "ggserve-redis")["spec"]["template"]["metadata"]["labels"]
    assert not _matches(policy["spec"]["podSelector"]["matchLabels"], redis)
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    [rule] = policy["spec"]["ingress"]
    sources = {
        peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for peer in rule["from"]
    }
    assert sources == {"ingress-nginx", "monitoring"}
    assert all(set(peer) == {"namespaceSelector"} for peer in rule["from"])  # no ipBlock 0.0.0.0/0
    port_names = {p["name"] for p in _container(server)["ports"]}
    assert [p["port"] for p in rule["ports"]] == ["http"] and "http" in port_names
    egress_ports = sorted(p["port"] for r in policy["spec"]["egress"] for p in r["ports"])
    assert egress_ports == [53, 53, 6379]  # DNS and Redis, nothing else
    [to_redis] = [r for r in policy["spec"]["egress"] if r["ports"][0]["port"] == 6379]
    assert _matches(to_redis["to"][0]["podSelector"]["matchLabels"], redis)


def test_metrics_are_public_in_the_cluster_only_behind_the_server_network_policy() -> None:
    objects = _variant("cpu")
    data = _one(objects, "ConfigMap", "ggserve-config")["data"]
    assert data["GGSERVE_METRICS_PUBLIC"] == "true"
    _one(objects, "NetworkPolicy", "ggserve-server")  # what keeps it inside the cluster
    annotations = _server(objects)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == "/metrics"


def test_the_feedback_purge_cronjob_purges_the_servers_database_with_its_settings() -> None:
    objects = _objects("extras/feedback-purge-cronjob.yaml")
    cron = _one(objects, "CronJob", "ggserve-feedback-purge")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = _pod_spec(cron)
    [container] = pod["containers"]
    assert container["args"] == ["feedback", "purge"]
    assert container["image"] == _container(_server(_variant("cpu")))["image"]
    # The same ConfigMap: the same database path and retention the server uses.
    [source] = container["envFrom"]
    assert source["configMapRef"]["name"] == "ggserve-config"
    db = _one(_variant("cpu"), "ConfigMap", "ggserve-config")["data"]["GGSERVE_FEEDBACK_DB"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    [db_mount] = [path for path in mounts if db.startswith(path + "/")]
    [volume] = [v for v in pod["volumes"] if v["name"] == mounts[db_mount]]
    _one(objects, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    affinity = pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    server_labels = _server(_variant("cpu"))["spec"]["template"]["metadata"]["labels"]
    assert _matches(affinity[0]["labelSelector"]["matchLabels"], server_labels)
    from cli.feedback import app as feedback_cli

    assert "purge" in {c.name for c in feedback_cli.registered_commands}
