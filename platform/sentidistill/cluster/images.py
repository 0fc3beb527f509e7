"""The one GPU stack the cluster files are pinned to, and the image mismatches a cluster file shows.

vLLM, torch and CUDA must agree with the NVIDIA driver on the GPU nodes: the `[vllm]` extra pins
vLLM 0.33.0 on torch 2.14.0 built for CUDA 13.0, which needs a driver >= 580. Every node type runs
one image built from cluster/Dockerfile (whose base carries CUDA 13.0), so what the head validated
is what the GPU workers run. A driver is not visible in a cluster file; what is visible is checked
here: several images for one cluster, a base or host image built for another CUDA major, and a
GPU node type left on the launcher's default machine image (an older driver).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sentidistill.cluster.resources import ray_cluster_spec


@dataclass(frozen=True)
class GpuStack:
    """The pinned combination, as in pyproject.toml and cluster/Dockerfile."""

    vllm: str = "0.33.0"
    torch: str = "2.14.0"
    cuda: str = "13.0"
    min_driver: int = 580
    base_image: str = "rayproject/ray:2.60.0-py311-cu130"

    @property
    def cuda_major(self) -> int:
        return int(self.cuda.split(".")[0])

    def describe(self) -> str:
        return (f"vLLM {self.vllm} + torch {self.torch} (CUDA {self.cuda}), NVIDIA driver >= {self.min_driver}, "
                f"image from cluster/Dockerfile (FROM {self.base_image})")


STACK = GpuStack()
_CUDA_VERSION = re.compile(r"cuda[:-]?(\d+)\.\d", re.IGNORECASE)   # nvidia/cuda:12.4.1-..., cuda-12.4
_CUDA_TAG = re.compile(r"(?<![a-z0-9])cu(\d{2})\d(?!\d)", re.IGNORECASE)  # ...-cu124, common-cu130
_DRIVER_TAG = re.compile(r"nvidia-(\d{3})")


def _cuda_major(image: str) -> int | None:
    """CUDA major version an image or machine-image name advertises (`cu124` -> 12, `cuda:13.0.1` -> 13)."""
    m = _CUDA_VERSION.search(image) or _CUDA_TAG.search(image.rsplit("/", 1)[-1])
    return int(m.group(1)) if m else None


def _launcher_images(doc: dict[str, Any]) -> dict[str, str]:
    """node type -> container image it runs (launcher YAML: docker.image, head_image/worker_image, overrides)."""
    docker = doc.get("docker") or {}
    head = doc.get("head_node_type")
    out = {}
    for name, nt in (doc.get("available_node_types") or {}).items():
        own = (nt or {}).get("docker") or {}
        if name == head:
            image = own.get("head_image") or docker.get("head_image") or docker.get("image")
        else:
            image = own.get("worker_image") or docker.get("worker_image") or docker.get("image")
        if image:
            out[name] = image
    return out


def _kuberay_images(doc: dict[str, Any]) -> dict[str, str]:
    spec = ray_cluster_spec(doc)
    groups = [("head", spec.get("headGroupSpec") or {})]
    groups += [(g.get("groupName", "worker"), g) for g in spec.get("workerGroupSpecs") or []]
    out = {}
    for name, group in groups:
        containers = (((group.get("template") or {}).get("spec") or {}).get("containers") or [])
        if containers and containers[0].get("image"):
            out[name] = containers[0]["image"]
    return out


def _gpu_node_types(doc: dict[str, Any]) -> list[str]:
    return [name for name, nt in (doc.get("available_node_types") or {}).items()
            if float(((nt or {}).get("resources") or {}).get("GPU", 0)) > 0]


def image_problems(doc: dict[str, Any], stack: GpuStack = STACK) -> list[str]:
    """Why a cluster file's images cannot run the tested GPU stack (empty when nothing visible is wrong)."""
    launcher = "available_node_types" in doc
    images = _launcher_images(doc) if launcher else _kuberay_images(doc)
    problems = []
    if launcher and not images:
        problems.append("no container image (docker.image): nodes would run whatever Python stack setup_commands "
                        f"install on the host image; use the image built from cluster/Dockerfile ({stack.describe()})")
    if len(set(images.values())) > 1:
        problems.append("node types run different images " + ", ".join(f"{n}: {i}" for n, i in images.items())
                        + "; use one image (cluster/Dockerfile) for all, so every node has the same vLLM/torch/CUDA")
    for name, image in images.items():
        major = _cuda_major(image)
        if major is not None and major != stack.cuda_major:
            problems.append(f"{name}: image {image} is built for CUDA {major}, but the pinned stack needs CUDA "
                            f"{stack.cuda} ({stack.describe()})")
        elif image.startswith("rayproject/ray") and image.endswith("-gpu"):
            problems.append(f"{name}: image {image} is Ray's '-gpu' alias, whose CUDA version is not pinned; build "
                            f"cluster/Dockerfile (FROM {stack.base_image})")
    if launcher:
        provider = (doc.get("provider") or {}).get("type")
        for name in _gpu_node_types(doc):
            node_config = (doc["available_node_types"][name] or {}).get("node_config") or {}
            if provider == "aws" and "ImageId" not in node_config:
                problems.append(f"{name}: no node_config.ImageId, so the launcher's default AMI (an NVIDIA driver "
                                f"older than {stack.min_driver}) runs the GPUs; use a Deep Learning AMI with "
                                f"driver >= {stack.min_driver}")
            for disk in node_config.get("disks") or []:
                source = ((disk or {}).get("initializeParams") or {}).get("sourceImage", "")
                major, driver = _cuda_major(source), _DRIVER_TAG.search(source)
                if major is not None and major < stack.cuda_major:
                    problems.append(f"{name}: sourceImage {source} ships a driver for CUDA {major}; the pinned stack "
                                    f"needs CUDA {stack.cuda} (driver >= {stack.min_driver})")
                elif driver and int(driver.group(1)) < stack.min_driver:
                    problems.append(f"{name}: sourceImage {source} has NVIDIA driver {driver.group(1)}; "
                                    f"the pinned stack needs >= {stack.min_driver}")
    return problems
