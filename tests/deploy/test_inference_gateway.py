"""deploy/k8s/inference-gateway and the KEDA ScaledObject: the custom resources have no schema
in kubernetes-validate, so their fields are checked against the published API here (Gateway API
Inference Extension v1, Gateway API v1, KEDA v1alpha1), and the objects are checked to refer to
each other and to the server correctly."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import K8S, check_ggserve_env, load_yaml_documents, tool

VARIANT = K8S / "inference-gateway"
Object = dict[str, Any]

# inference.networking.k8s.io/v1 InferencePoolSpec (the API reference's field list).
POOL_SPEC = {"selector", "targetPorts", "appProtocol", "endpointPickerRef"}
POOL_SPEC_REQUIRED = {"selector", "targetPorts", "endpointPickerRef"}
PICKER_REF = {"group", "kind", "name", "port", "failureMode"}
CUSTOM_KINDS = {"InferencePool", "InferenceObjective", "Gateway", "HTTPRoute"}


def _rendered() -> list[Object]:
    """The objects `kubectl apply -k deploy/k8s/inference-gateway` creates (kubectl's kustomize)."""
    kubectl = tool("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    result = subprocess.run(
        [kubectl, "kustomize", str(VARIANT)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def objects() -> list[Object]:
    return _rendered()


def _one(objects: list[Object], kind: str, name: str | None = None) -> Object:
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _server_container(objects: list[Object]) -> Object:
    [container] = _one(objects, "Deployment", "ggserve")["spec"]["template"]["spec"]["containers"]
    return container


def test_the_variant_renders_and_its_built_in_objects_are_valid(objects: list[Object]) -> None:
    validate = pytest.importorskip("kubernetes_validate.utils")
    kinds = {o["kind"] for o in objects}
    assert kinds >= CUSTOM_KINDS | {"HorizontalPodAutoscaler", "Deployment", "NetworkPolicy"}
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == "ggserve", obj["metadata"]
        if obj["kind"] in CUSTOM_KINDS:
            continue
        try:
            validate.validate(obj, validate.latest_version(), strict=True)
        except validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message}")


def test_the_pool_uses_the_v1_api_and_selects_the_server_pods_on_their_port(
    objects: list[Object],
) -> None:
    pool = _one(objects, "InferencePool", "ggserve")
    assert pool["apiVersion"] == "inference.networking.k8s.io/v1"
    spec = pool["spec"]
    assert POOL_SPEC_REQUIRED <= set(spec) <= POOL_SPEC, set(spec)
    assert set(spec["endpointPickerRef"]) <= PICKER_REF
    assert spec["endpointPickerRef"].get("failureMode", "FailClose") in ("FailOpen", "FailClose")
    server = _one(objects, "Deployment", "ggserve")
    pod_labels = server["spec"]["template"]["metadata"]["labels"]
    assert set(spec["selector"]) == {"matchLabels"}
    assert _matches(spec["selector"]["matchLabels"], pod_labels)
    redis = _one(objects, "Deployment", "ggserve-redis")["spec"]["template"]["metadata"]
    assert not _matches(spec["selector"]["matchLabels"], redis["labels"])
    ports = {p["containerPort"] for p in _server_container(objects)["ports"]}
    assert [p["number"] for p in spec["targetPorts"]] == [8000] and 8000 in ports
    data = _one(objects, "ConfigMap", "ggserve-config")["data"]
    assert data["GGSERVE_PORT"] == "8000"


def test_the_pool_points_at_the_endpoint_pickers_grpc_service(objects: list[Object]) -> None:
    ref = _one(objects, "InferencePool")["spec"]["endpointPickerRef"]
    service = _one(objects, "Service", ref["name"])
    [port] = [p for p in service["spec"]["ports"] if p["port"] == ref["port"]["number"]]
    epp = _one(objects, "Deployment", ref["name"])
    [container] = epp["spec"]["template"]["spec"]["containers"]
    assert port["targetPort"] in {p["name"] for p in container["ports"]}
    assert _matches(service["spec"]["selector"], epp["spec"]["template"]["metadata"]["labels"])
    args = container["args"]
    assert args[args.index("--pool-name") + 1] == _one(objects, "InferencePool")["metadata"]["name"]
    config = args[args.index("--config-file") + 1]
    [mount] = [m for m in container["volumeMounts"] if config.startswith(m["mountPath"] + "/")]
    [volume] = [v for v in epp["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]]
    plugins = _one(objects, "ConfigMap", volume["configMap"]["name"])["data"][Path(config).name]
    picker = yaml.safe_load(plugins)
    declared = {p["type"] for p in picker["plugins"]}
    used = {r["pluginRef"] for profile in picker["schedulingProfiles"] for r in profile["plugins"]}
    assert used <= declared and "kv-cache-utilization-scorer" in used
    assert re.fullmatch(
        r"registry\.k8s\.io/gateway-api-inference-extension/epp:v1\.\d+\.\d+", container["image"]
    )


def test_the_picker_may_read_pods_and_pools_and_nothing_more(objects: list[Object]) -> None:
    epp = _one(objects, "Deployment", "ggserve-epp")["spec"]["template"]["spec"]
    binding = _one(objects, "RoleBinding", "ggserve-epp")
    assert {"kind": "ServiceAccount", "name": epp["serviceAccountName"]}.items() <= binding[
        "subjects"
    ][0].items()
    role = _one(objects, binding["roleRef"]["kind"], binding["roleRef"]["name"])
    granted = {
        (g, r) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
    }
    assert {("", "pods"), ("inference.networking.k8s.io", "inferencepools")} <= granted
    assert all(set(rule["verbs"]) <= {"get", "watch", "list"} for rule in role["rules"])
    _one(objects, "ServiceAccount", epp["serviceAccountName"])


def test_the_route_sends_the_api_to_the_pool_through_the_gateway(objects: list[Object]) -> None:
    route = _one(objects, "HTTPRoute", "ggserve")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    [parent] = route["spec"]["parentRefs"]
    gateway = _one(objects, "Gateway", parent["name"])
    assert gateway["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert gateway["spec"]["gatewayClassName"] and gateway["spec"]["listeners"]
    [rule] = route["spec"]["rules"]
    [backend] = rule["backendRefs"]
    pool = _one(objects, "InferencePool", backend["name"])
    assert (backend["group"], backend["kind"]) == (pool["apiVersion"].split("/")[0], pool["kind"])
    # Longer than the server's own request timeout: the route never cuts a generation first.
    timeout = int(rule["timeouts"]["request"].removesuffix("s"))
    from server.settings import Settings

    assert timeout > Settings.model_fields["request_timeout_s"].default


def test_replicas_publish_what_the_picker_scrapes(objects: list[Object]) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from server.engine.types import EngineStats
    from server.observability.model_server import ModelServerCollector, ServedInfo
    from server.settings import Settings

    data = _one(objects, "ConfigMap", "ggserve-config")["data"]
    check_ggserve_env(data, "inference-gateway configmap")
    settings = Settings.model_validate(
        {k.removeprefix("GGSERVE_").lower(): v for k, v in data.items() if k.startswith("GGSERVE_")}
    )
    assert settings.metrics_vllm_names and settings.metrics_without_key
    registry = CollectorRegistry()
    stats = EngineStats(
        slots_total=4, slots_active=1, queue_depth=2, kv_cells_used=1, kv_cells_total=8
    )
    registry.register(ModelServerCollector(lambda: stats, lambda: ServedInfo("m"), vllm_names=True))
    text = generate_latest(registry).decode()
    # The picker's default metric names (vLLM's).
    for name in (
        "vllm:num_requests_waiting",
        "vllm:num_requests_running",
        "vllm:kv_cache_usage_perc",
    ):
        assert f"{name}{{" in text or f"{name} " in text, name


def test_objectives_map_onto_server_priorities_in_the_same_order(objects: list[Object]) -> None:
    from server.settings import parse_objectives

    data = _one(objects, "ConfigMap", "ggserve-config")["data"]
    mapping = parse_objectives(data["GGSERVE_INFERENCE_OBJECTIVES"])
    declared = {
        o["metadata"]["name"]: o["spec"].get("priority", 0)
        for o in objects
        if o["kind"] == "InferenceObjective"
    }
    assert set(declared) == set(mapping)
    for objective in objects:
        if objective["kind"] == "InferenceObjective":
            assert objective["apiVersion"] == "inference.networking.x-k8s.io/v1alpha2"
            pool_ref = objective["spec"]["poolRef"]
            _one(objects, "InferencePool", pool_ref["name"])
    # The picker serves higher priorities first, ggserve lower ones: the orders must agree.
    by_picker = sorted(declared, key=lambda name: -declared[name])
    by_server = sorted(mapping, key=lambda name: mapping[name])
    assert by_picker == by_server
    assert int(data["GGSERVE_MIN_PRIORITY"]) <= min(mapping.values())  # no objective is a 400


def test_the_picker_and_the_gateway_may_reach_the_server_pods(objects: list[Object]) -> None:
    policy = _one(objects, "NetworkPolicy", "ggserve-server-from-gateway")
    server = _one(objects, "Deployment", "ggserve")
    assert _matches(
        policy["spec"]["podSelector"]["matchLabels"],
        server["spec"]["template"]["metadata"]["labels"],
    )
    [rule] = policy["spec"]["ingress"]
    epp_labels = _one(objects, "Deployment", "ggserve-epp")["spec"]["template"]["metadata"][
        "labels"
    ]
    assert any(
        "podSelector" in peer and _matches(peer["podSelector"]["matchLabels"], epp_labels)
        for peer in rule["from"]
    )
    assert all(set(peer) <= {"podSelector", "namespaceSelector"} for peer in rule["from"])
    assert [p["port"] for p in rule["ports"]] == ["http"]


def test_keda_scales_the_server_deployment_on_a_queue_gauge_the_server_exports() -> None:
    from server.observability.metrics import Metrics

    [scaled] = load_yaml_documents(K8S / "extras" / "keda-scaledobject.yaml")
    assert (scaled["apiVersion"], scaled["kind"]) == ("keda.sh/v1alpha1", "ScaledObject")
    spec = scaled["spec"]
    target = spec["scaleTargetRef"]
    deployment = load_yaml_documents(K8S / "cpu" / "deployment.yaml")[0]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    [trigger] = spec["triggers"]
    assert trigger["type"] == "prometheus"
    metadata = trigger["metadata"]
    assert float(metadata["threshold"]) > 0
    exported = {
        family.name for family in Metrics(lambda: None, lambda: "ready", str).registry.collect()
    }
    [metric] = re.findall(r"[a-z_:]+(?=\{)", metadata["query"])
    assert metric in exported, f"{metric} is not on /metrics"
    # KEDA owns an HPA of its own: it must not be in a variant beside the HPA.
    for variant in ("cpu", "gpu", "inference-gateway"):
        text = (K8S / variant / "kustomization.yaml").read_text()
        assert "keda" not in text
