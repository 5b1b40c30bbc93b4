"""deploy/kubernetes/: every manifest validates against the Kubernetes OpenAPI schemas (kubernetes-validate's
bundled copies, strict: unknown fields are errors; no network used), and the pieces fit each other
(probes, GPU, volumes, packed environment, Service, HPA metrics served by the adapter rules, scraping)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

K8S = Path(__file__).resolve().parents[1] / "deploy" / "kubernetes"
#: The oldest Kubernetes still commonly run, and the newest the package bundles.
VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version())
#: Custom resources have no schema in Kubernetes itself; checked by hand below.
CRDS = {"monitoring.coreos.com/v1"}


def _docs() -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out[f"{path.name}:{doc['kind']}"] = doc
    return out


DOCS = _docs()


def _kind(kind: str) -> dict[str, Any]:
    return next(d for d in DOCS.values() if d["kind"] == kind)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    "name", [n for n, d in DOCS.items() if d["apiVersion"] not in CRDS and d["kind"] != "Kustomization"]
)
def test_manifest_matches_the_kubernetes_schema(
    name: str, version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("schema validation tried to use the network")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    kubernetes_validate.validate(DOCS[name], version, strict=True)


def test_validation_catches_a_bad_manifest() -> None:
    """The validator is not a no-op: a misspelt field and a wrong type are refused."""
    bad = yaml.safe_load(yaml.safe_dump(_kind("Deployment")))
    bad["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/x"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, VERSIONS[-1], strict=True)
    bad = yaml.safe_load(yaml.safe_dump(_kind("Service")))
    bad["spec"]["ports"][0]["port"] = "eight thousand"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, VERSIONS[-1], strict=True)


def test_kustomization_applies_every_manifest() -> None:
    listed = set(_kind("Kustomization")["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}


def test_triton_pod_probes_gpu_repository_and_packed_env() -> None:
    deployment = _kind("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (triton,) = pod["containers"]
    assert triton["image"].startswith("nvcr.io/nvidia/tritonserver:")
    ports = {p["name"]: p["containerPort"] for p in triton["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert triton["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    startup = triton["startupProbe"]
    assert startup["httpGet"]["path"] == "/v2/health/ready"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 900  # TensorRT engine build at warm-up
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == 1
    # The repository comes read-only from the PVC; the packed environment is unpacked and first on PATH.
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert (
        volumes["model-store"]["persistentVolumeClaim"]["claimName"]
        == _kind("PersistentVolumeClaim")["metadata"]["name"]
    )
    mounts = {m["name"]: m for m in triton["volumeMounts"]}
    assert (
        mounts["model-store"]["readOnly"] and "--model-repository=/store/model_repository" in triton["args"]
    )
    env = {e["name"]: e["value"] for e in triton["env"]}
    assert env["PATH"].split(":")[0] == f"{mounts['python-env']['mountPath']}/bin"
    init = {c["name"]: c for c in pod["initContainers"]}
    assert "/opt/gliodeploy-env" in init["unpack-python-env"]["command"]
    assert "/store/envs/gliodeploy-env.tar.gz" in init["unpack-python-env"]["command"]
    assert "SHA256SUMS" in " ".join(init["verify-checksums"]["command"])
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert _kind("Service")["spec"]["selector"].items() <= labels.items()


def test_autoscaling_on_triton_queue_metrics_from_the_adapter() -> None:
    hpa = _kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == _kind("Deployment")["metadata"]["name"]
    wanted = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"]}
    assert wanted == {"nv_inference_pending_request_count", "nv_inference_queue_duration_us_per_request"}
    rules = yaml.safe_load(DOCS["prometheus-adapter-rules.yaml:ConfigMap"]["data"]["config.yaml"])["rules"]
    served = {r["name"]["as"] for r in rules}
    assert wanted <= served
    assert any("nv_inference_queue_duration_us" in r["seriesQuery"] for r in rules)


def test_metrics_port_is_scraped() -> None:
    monitor = _kind("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    service_ports = {p["name"]: p["port"] for p in _kind("Service")["spec"]["ports"]}
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"] and service_ports[
        "metrics"
    ] == 8002
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= _kind("Service")["metadata"]["labels"].items()
    )
    annotations = _kind("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "8002"
    (job,) = yaml.safe_load(DOCS["prometheus-scrape-config.yaml:ConfigMap"]["data"]["scrape-config.yaml"])
    assert job["kubernetes_sd_configs"] == [{"role": "pod"}]
    targets = {tuple(r.get("source_labels", [])): r for r in job["relabel_configs"]}
    assert targets[("__meta_kubernetes_pod_name",)]["target_label"] == "pod"  # what the adapter maps
