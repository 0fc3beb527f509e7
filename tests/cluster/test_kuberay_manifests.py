"""KubeRay manifests apply on a real cluster of the documented node types.

Offline: every Kubernetes object and every pod template is validated (strict: unknown fields fail) against
the Kubernetes JSON schemas shipped in the `kubernetes-validate` package; the RayCluster shape is checked
by tests/cluster/test_manifests.py through Ray's own conversion. Beyond the schema: each pod's requests
fit the allocatable capacity of the node types the docs name for it (cluster/aws.yaml, cluster/gcp.yaml),
and the service account the pods run as is created by namespace.yaml.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sentidistill.cluster.resources import ACCELERATOR_PREFIX, ray_cluster_spec

kubernetes_validate = pytest.importorskip("kubernetes_validate")

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"
KUBERAY = ["kuberay/raycluster.yaml", "kuberay/rayjob.yaml", "kuberay/rayservice.yaml"]
K8S_VERSION = "1.30"  # oldest Kubernetes the docs' KubeRay (>= 1.3) supports on EKS/GKE today
# Capacity (vCPU, GiB) of the instance types cluster/aws.yaml and gcp.yaml name, from the clouds' instance
# tables. GCE sizes are given in GB and taken as 10^9 bytes here (the smaller reading).
CAPACITY = {
    "m6i.4xlarge": (16, 64), "n2-standard-16": (16, 64e9 / 2**30),
    "p5.48xlarge": (192, 2048), "a3-highgpu-8g": (208, 1872e9 / 2**30),
    "p4d.24xlarge": (96, 1152), "a2-highgpu-8g": (96, 680e9 / 2**30),
}
DAEMONSETS = (1.0, 4.0)  # CPU, GiB left for node daemons (kube-proxy, CNI, GPU device plugin, logging)


def allocatable(cpus: float, gib: float) -> tuple[float, float]:
    """GKE's documented kubelet reservation (larger than EKS' for these sizes) plus the 100 MiB eviction
    threshold and the daemon allowance: what pods can request on one node."""
    cpu_reserve = 0.06 + 0.01 * min(max(cpus - 1, 0), 1) + 0.005 * min(max(cpus - 2, 0), 2) \
        + 0.0025 * max(cpus - 4, 0)
    mem_reserve = 0.25 * min(gib, 4) + 0.2 * min(max(gib - 4, 0), 4) + 0.1 * min(max(gib - 8, 0), 8) \
        + 0.06 * min(max(gib - 16, 0), 112) + 0.02 * max(gib - 128, 0) + 0.1
    return cpus - cpu_reserve - DAEMONSETS[0], gib - mem_reserve - DAEMONSETS[1]


def quantity(value: str | int | float, unit: str) -> float:
    """Kubernetes quantities -> CPUs or GiB."""
    s = str(value)
    if unit == "cpu":
        return float(s[:-1]) / 1000 if s.endswith("m") else float(s)
    suffixes = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    for suffix, factor in suffixes.items():
        if s.endswith(suffix):
            return float(s[: -len(suffix)]) * factor / 2**30
    return float(s) / 2**30


def documented_node_types() -> dict[str, list[str]]:
    """'head' or an accelerator type -> the instance types the launcher YAMLs use for it."""
    out: dict[str, list[str]] = {}
    for rel in ("aws.yaml", "gcp.yaml"):
        doc = yaml.safe_load((CLUSTER / rel).read_text())
        for name, node in doc["available_node_types"].items():
            config = node["node_config"]
            instance = config.get("InstanceType") or config.get("machineType")
            acc = [k.removeprefix(ACCELERATOR_PREFIX) for k in node["resources"] if k.startswith(ACCELERATOR_PREFIX)]
            key = "head" if name == doc["head_node_type"] else acc[0]
            out.setdefault(key, []).append(instance)
    return out


def pod_templates(doc: dict[str, Any]) -> Iterator[tuple[str, str | None, dict[str, Any]]]:
    """(group name, accelerator type or None for the head, pod template) of a RayCluster/RayJob/RayService."""
    spec = ray_cluster_spec(doc)
    yield "head", None, spec["headGroupSpec"]["template"]
    for group in spec["workerGroupSpecs"]:
        resources = yaml.safe_load(group.get("rayStartParams", {}).get("resources", "{}"))
        if isinstance(resources, str):  # KubeRay's rayStartParams hold a quoted JSON string
            resources = yaml.safe_load(resources)
        acc = [k.removeprefix(ACCELERATOR_PREFIX) for k in resources if k.startswith(ACCELERATOR_PREFIX)]
        yield group["groupName"], acc[0] if acc else None, group["template"]


def _load(rel: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((CLUSTER / rel).read_text()) if d]


@pytest.mark.parametrize("rel", KUBERAY)
def test_pod_templates_pass_the_kubernetes_schema(rel: str) -> None:
    (doc,) = _load(rel)
    for group, _, template in pod_templates(doc):
        obj = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": group}, "template": template}
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{rel} group {group}: {e}")


def test_namespace_and_service_account_pass_the_schema_and_are_the_ones_the_pods_use() -> None:
    objects = _load("kuberay/namespace.yaml")
    for obj in objects:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    accounts = {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in objects if o["kind"] == "ServiceAccount"}
    namespaces = {o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"}
    for rel in KUBERAY:
        (doc,) = _load(rel)
        ns = doc["metadata"]["namespace"]
        assert ns in namespaces, f"{rel}: namespace {ns!r} is not created by namespace.yaml"
        for group, _, template in pod_templates(doc):
            account = template["spec"].get("serviceAccountName")
            assert account is None or (ns, account) in accounts, (
                f"{rel} group {group}: service account {account!r} in namespace {ns!r} is never created")


@pytest.mark.parametrize("rel", KUBERAY)
def test_pods_fit_the_documented_node_types(rel: str) -> None:
    nodes = documented_node_types()
    (doc,) = _load(rel)
    for group, acc, template in pod_templates(doc):
        instances = nodes["head" if acc is None else acc]
        cpu = mem = 0.0
        for container in template["spec"]["containers"]:
            requests = container["resources"].get("requests") or container["resources"]["limits"]
            cpu += quantity(requests["cpu"], "cpu")
            mem += quantity(requests["memory"], "memory")
        for instance in instances:
            free_cpu, free_mem = allocatable(*CAPACITY[instance])
            assert cpu <= free_cpu and mem <= free_mem, (
                f"{rel} group {group}: requests {cpu:g} CPU / {mem:g} GiB, but a {instance} node has about "
                f"{free_cpu:.1f} CPU / {free_mem:.0f} GiB allocatable: the pod would stay Pending")


def test_the_capacity_check_catches_the_old_1000gi_train_pod() -> None:
    free_cpu, free_mem = allocatable(*CAPACITY["a2-highgpu-8g"])
    assert quantity("1000Gi", "memory") > free_mem and quantity("560Gi", "memory") <= free_mem
    assert quantity("16", "cpu") > allocatable(*CAPACITY["m6i.4xlarge"])[0]
