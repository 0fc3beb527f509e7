"""One pinned GPU stack, one image for every node type, and `plan --cluster` refusing visible mismatches."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from sentidistill.cli import app
from sentidistill.cluster.images import STACK, image_problems
from sentidistill.cluster.resources import ray_cluster_spec

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
FILES = ["aws.yaml", "gcp.yaml", "kuberay/raycluster.yaml", "kuberay/rayjob.yaml", "kuberay/rayservice.yaml"]


def _doc(rel: str) -> dict:
    return yaml.safe_load((CLUSTER / rel).read_text())


def test_pins_dockerfile_and_stack_agree() -> None:
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["vllm"]
    assert sorted(extra) == sorted([f"vllm=={STACK.vllm}", f"torch=={STACK.torch}"])
    docker = (CLUSTER / "Dockerfile").read_text()
    assert f"FROM {STACK.base_image}\n" in docker and '"/app[vllm]"' in docker
    assert f"startswith('{STACK.cuda_major}.')" in docker  # the build checks torch's CUDA against the base
    assert "cu130" in STACK.base_image and STACK.min_driver == 580


def test_every_node_type_of_every_cluster_file_runs_the_one_image() -> None:
    images = set()
    for rel in FILES:
        doc = _doc(rel)
        assert image_problems(doc) == [], rel
        if "available_node_types" in doc:
            images.add(doc["docker"]["image"])
            assert not doc.get("setup_commands")  # nothing installs a second stack over the image
        else:
            spec = ray_cluster_spec(doc)
            groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
            images |= {g["template"]["spec"]["containers"][0]["image"] for g in groups}
    assert len(images) == 1, images


def test_launcher_nodes_start_ray_through_the_secrets_script() -> None:
    for rel in ("aws.yaml", "gcp.yaml"):
        doc = _doc(rel)
        for key in ("head_start_ray_commands", "worker_start_ray_commands"):
            assert any("cluster/start-ray.sh" in c for c in doc[key]), (rel, key)
            assert not any(" ray start" in c.replace("start-ray.sh", "") for c in doc[key]), (rel, key)
        assert doc["file_mounts"] == {"/home/ray/sentidistill.env": "~/.sentidistill/cluster.env"}


@pytest.mark.parametrize("case", ["cuda12-image", "two-images", "gpu-alias", "default-ami", "gcp-cu124", "old-driver"])
def test_visible_mismatches_are_refused(case: str) -> None:
    doc = _doc("gcp.yaml" if case.startswith(("gcp", "old")) else "aws.yaml")
    bad = copy.deepcopy(doc)
    if case == "cuda12-image":
        bad["docker"]["image"] = "rayproject/ray:2.60.0-py311-cu124"
        want = "built for CUDA 12"
    elif case == "two-images":
        bad["docker"]["worker_image"] = "ghcr.io/my-org/other:1"
        want = "different images"
    elif case == "gpu-alias":
        bad["docker"]["image"] = "rayproject/ray:2.60.0-py311-gpu"
        want = "'-gpu' alias"
    elif case == "default-ami":
        del bad["available_node_types"]["teacher_h100"]["node_config"]["ImageId"]
        want = "default AMI"
    else:
        disk = bad["available_node_types"]["train_a100"]["node_config"]["disks"][0]["initializeParams"]
        old = "common-cu124" if case == "gcp-cu124" else "common-cu130-ubuntu-2404-nvidia-570"
        disk["sourceImage"] = f"projects/deeplearning-platform-release/global/images/family/{old}"
        want = "CUDA 12" if case == "gcp-cu124" else "driver 570"
    problems = image_problems(bad)
    assert problems and any(want in p for p in problems), problems


def test_plan_cluster_refuses_an_image_mismatch(tmp_path: Path) -> None:
    bad = _doc("aws.yaml")
    bad["docker"]["image"] = "rayproject/ray:2.60.0-py311-cu124"
    path = tmp_path / "aws.yaml"
    path.write_text(yaml.safe_dump(bad))
    args = ["plan", str(REPO / "jobs/configs/gpu-cluster.yaml"), "--corpus-texts", "1000", "--avg-chars", "500"]
    ok = CliRunner().invoke(app, [*args, "--cluster", str(CLUSTER / "aws.yaml")])
    assert ok.exit_code == 0, ok.output
    res = CliRunner().invoke(app, [*args, "--cluster", str(path)])
    assert res.exit_code != 0
    assert "built for CUDA 12" in str(res.exception) + res.output
