"""Cluster files: every YAML parses, passes Ray's own checks, and hosts what gpu-cluster.yaml asks for.

Launcher YAMLs go through the same prepare/validate calls `ray up` makes; KubeRay manifests through
the conversion the in-tree autoscaler applies to the custom resource. A typo in an
accelerator_type or a GPU count that no node type offers would leave a stage pending forever.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import ray
import yaml

from sentidistill.cluster.resources import (
    ACCELERATOR_PREFIX,
    hosted_stages,
    node_types_from_file,
    placement_problems,
    ray_cluster_spec,
    requirements,
)
from sentidistill.config import load_config
from sentidistill.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
GPU_CONFIG = REPO / "jobs" / "configs" / "gpu-cluster.yaml"
# What each file must host: the pipeline stages, or only the serving replicas.
HOSTS = {
    "aws.yaml": ("run", "serve"),
    "gcp.yaml": ("run", "serve"),
    "kuberay/raycluster.yaml": ("run", "serve"),
    "kuberay/rayjob.yaml": ("run",),
    "kuberay/rayservice.yaml": ("serve",),
}
NOT_RAY = {"kuberay/namespace.yaml"}  # the namespace and service account the KubeRay pods run as
ALL_YAML = sorted(p for p in CLUSTER.rglob("*.yaml") if p.relative_to(CLUSTER).as_posix() not in NOT_RAY)
RAY_MINOR = ".".join(ray.__version__.split(".")[:2])


def _doc(rel: str) -> dict:
    return yaml.safe_load((CLUSTER / rel).read_text())


def test_every_cluster_yaml_is_covered() -> None:
    assert [p.relative_to(CLUSTER).as_posix() for p in ALL_YAML] == sorted(HOSTS)
    assert {rel: hosted_stages(CLUSTER / rel) for rel in HOSTS} == HOSTS  # what `plan --cluster` checks


@pytest.mark.parametrize("rel", sorted(HOSTS))
def test_node_types_host_the_gpu_config(rel: str) -> None:
    cfg = load_config(GPU_CONFIG)
    reqs = [r for stage in HOSTS[rel] for r in requirements(cfg, stage)]
    assert {r.component for r in reqs} >= ({"serve"} if "serve" in HOSTS[rel] else {"teacher", "train", "eval"})
    nodes = node_types_from_file(CLUSTER / rel)
    assert placement_problems(reqs, nodes) == []
    # each accelerator type the config pins to is a resource of some GPU node type
    for r in reqs:
        if r.accelerator_type:
            key = ACCELERATOR_PREFIX + r.accelerator_type
            assert any(n.resources.get(key) for n in nodes if n.resources.get("GPU"))


@pytest.mark.parametrize("rel", sorted(HOSTS))
def test_a_misspelled_accelerator_or_too_many_gpus_is_caught(rel: str) -> None:
    stage = HOSTS[rel][0]
    key = "serve.engine" if stage == "serve" else "teacher"
    nodes = node_types_from_file(CLUSTER / rel)
    typo = load_config(GPU_CONFIG, [f"{key}.resources.accelerator_type=H10O"])
    assert any("H10O" in p for p in placement_problems(requirements(typo, stage), nodes))
    greedy = load_config(GPU_CONFIG, [f"{key}.resources.num_gpus=16"])
    assert any("no node type has" in p for p in placement_problems(requirements(greedy, stage), nodes))


def test_train_worker_count_is_checked_against_group_size() -> None:
    cfg = load_config(GPU_CONFIG, ["train.resources.num_workers=64", "train.optimizer.effective_batch_size=256"])
    problems = placement_problems(requirements(cfg, "train"), node_types_from_file(CLUSTER / "aws.yaml"))
    assert problems and "at most 16 at once" in problems[0]


@pytest.mark.parametrize("rel", ["aws.yaml", "gcp.yaml"])
def test_launcher_gpu_groups_scale_from_zero_and_run_the_package_image(rel: str) -> None:
    doc = _doc(rel)
    gpu_types = {k: v for k, v in doc["available_node_types"].items() if v["resources"].get("GPU")}
    assert len(gpu_types) >= 2 and all(v["min_workers"] == 0 for v in gpu_types.values())
    assert not doc["available_node_types"][doc["head_node_type"]]["resources"].get("GPU")
    # the image built from cluster/Dockerfile (Ray + the [vllm] extra), as in the KubeRay manifests
    kuberay = ray_cluster_spec(_doc("kuberay/raycluster.yaml"))["headGroupSpec"]["template"]["spec"]
    assert doc["docker"]["image"] == kuberay["containers"][0]["image"]


@pytest.mark.parametrize("rel", ["kuberay/raycluster.yaml", "kuberay/rayjob.yaml", "kuberay/rayservice.yaml"])
def test_kuberay_manifests_autoscale_gpu_groups(rel: str) -> None:
    doc = _doc(rel)
    assert doc["apiVersion"] == "ray.io/v1"
    spec = ray_cluster_spec(doc)
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["rayVersion"].startswith(RAY_MINOR + ".")
    groups = spec["workerGroupSpecs"]
    gpus = [g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu", 0) for g in groups]
    assert all(gpus) and all(g["maxReplicas"] > g["minReplicas"] for g in groups)
    if doc["kind"] != "RayService":  # batch groups cost nothing while idle
        assert all(g["minReplicas"] == 0 for g in groups)


def test_rayjob_runs_the_pipeline_with_the_jobs_runtime_env() -> None:
    job = _doc("kuberay/rayjob.yaml")
    assert job["spec"]["entrypoint"].split()[:2] == ["sentidistill", "run"]
    shipped = yaml.safe_load((REPO / "jobs" / "runtime_env.yaml").read_text())
    assert yaml.safe_load(job["spec"]["runtimeEnvYAML"])["env_vars"] == shipped["env_vars"]
    config = job["spec"]["entrypoint"].split()[2]
    assert (REPO / Path(config).relative_to("/app")).is_file()  # the image holds the checkout at /app


def test_rayservice_serves_the_package_app() -> None:
    from ray.serve.schema import ServeDeploySchema

    serve_config = yaml.safe_load(_doc("kuberay/rayservice.yaml")["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(serve_config)  # what `serve deploy` / KubeRay submit
    apps = serve_config["applications"]
    module, attr = apps[0]["import_path"].split(":")
    assert module.startswith("sentidistill.")
    if importlib.util.find_spec(module.rsplit(".", 1)[0]) is not None:  # the serving package is present
        assert callable(getattr(importlib.import_module(module), attr))
    assert (REPO / Path(apps[0]["args"]["config"]).relative_to("/app")).is_file()


def test_dockerfile_installs_the_vllm_extra_on_the_matching_ray_image() -> None:
    text = (CLUSTER / "Dockerfile").read_text()
    assert f"FROM rayproject/ray:{RAY_MINOR}." in text and '"/app[vllm]"' in text


def test_not_a_cluster_file_is_a_clear_error(tmp_path: Path) -> None:
    p = tmp_path / "x.yaml"
    p.write_text("kind: Deployment\n")
    with pytest.raises(ConfigError, match="neither a Ray cluster launcher YAML"):
        node_types_from_file(p)
    p.write_text("cluster_name: x\nprovider: {type: aws, region: us-east-1}\navailable_node_types: {}\n")
    with pytest.raises(ConfigError, match="not a valid Ray cluster definition"):
        node_types_from_file(p)
