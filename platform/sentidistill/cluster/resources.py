"""What each stage asks of the cluster's nodes, and whether a cluster's node types can host it.

A config pins engine actors and training workers to GPUs and accelerator types
(`accelerator_type: H100` becomes the Ray resource `accelerator_type:H100`). The autoscaler
can only start a node for a request some node type satisfies, so a typo here means a stage that
waits forever. These checks catch that before launch: against the node types of a cluster file
(`sentidistill plan CONFIG --cluster cluster/aws.yaml`, the manifest tests) and against the live
nodes (`sentidistill submit`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sentidistill.config import EngineConfig, PipelineConfig
from sentidistill.engines import capabilities
from sentidistill.errors import ConfigError
from sentidistill.readers import read_mapping

ACCELERATOR_PREFIX = "accelerator_type:"  # ray._common.utils.RESOURCE_CONSTRAINT_PREFIX
_ACCELERATOR_SHARE = 0.001  # what Ray Data / Ray Train request of the accelerator_type resource
KUBERAY_KINDS = {"RayCluster", "RayJob", "RayService"}

@dataclass(frozen=True)
class Stage:
    """A stage command: the CLI words that run it and the config components it starts on the cluster."""

    command: tuple[str, ...]
    components: tuple[str, ...]


STAGES: dict[str, Stage] = {
    "validate": Stage(("config", "validate"), ()),
    "generate": Stage(("generate",), ("teacher",)),
    "icl": Stage(("icl",), ("teacher",)),
    "build-icl": Stage(("icl",), ("teacher",)),  # the old name of the icl command
    "train": Stage(("train",), ("train",)),
    "eval": Stage(("eval",), ("eval",)),
    "serve": Stage(("serve",), ("serve",)),
    "run": Stage(("run",), ("teacher", "train", "eval")),
}


@dataclass(frozen=True)
class Requirement:
    """One kind of actor or worker a config starts: what each one needs and how many run at once."""

    component: str
    key: str  # the config keys that set it, as the user writes them
    cpus: float
    gpus: float
    accelerator_type: str | None
    count: int

    def bundle(self) -> dict[str, float]:
        """The Ray resource request of one actor/worker."""
        out = {"CPU": self.cpus, "GPU": self.gpus}
        if self.accelerator_type:
            out[ACCELERATOR_PREFIX + self.accelerator_type] = _ACCELERATOR_SHARE
        return {k: v for k, v in out.items() if v > 0}

    def describe(self) -> str:
        acc = f" on {self.accelerator_type}" if self.accelerator_type else ""
        return f"{self.component} ({self.key}): {self.count} x {{{self.cpus:g} CPU, {self.gpus:g} GPU{acc}}}"


@dataclass(frozen=True)
class NodeType:
    """A node type of a cluster file: its Ray resources and how many such nodes may run."""

    name: str
    resources: dict[str, float] = field(default_factory=dict)
    max_nodes: int = 1

    def fits(self, req: Requirement) -> int:
        """How many of req's actors/workers one node of this type holds."""
        return per_node(req, self.resources)


def per_node(req: Requirement, resources: dict[str, float]) -> int:
    """Actors/workers of req that fit in one node with these total resources."""
    counts = [math.floor(resources.get(k, 0.0) / v + 1e-9) for k, v in req.bundle().items()]
    return min(counts) if counts else 1_000_000


def _engine_requirement(component: str, key: str, eng: EngineConfig, count: int) -> Requirement | None:
    if not capabilities(eng.kind).loads_model:
        return None  # runs no model on the cluster
    res = eng.resources
    return Requirement(component, f"{key}.resources", res.num_cpus, res.num_gpus, res.accelerator_type, count)


def requirements(cfg: PipelineConfig, stage: str = "run") -> list[Requirement]:
    """The actor/worker kinds a stage command starts, from the config's resource settings."""
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    t = cfg.train.resources
    per_worker = dict(t.resources_per_worker)
    gpus = per_worker.get("GPU", 1.0 if t.use_gpu else 0.0)
    found = {
        "teacher": _engine_requirement("teacher", "teacher", cfg.teacher, cfg.teacher.actor_range[0]),
        "train": Requirement("train", "train.resources.resources_per_worker", per_worker.get("CPU", 1.0), gpus,
                             t.accelerator_type, t.num_workers),
        "eval": _engine_requirement("eval", "eval.engine", cfg.eval.engine, cfg.eval.engine.actor_range[0]),
        "serve": _engine_requirement("serve", "serve.engine", cfg.serve.engine, cfg.serve.autoscaling.max_replicas),
    }
    return [r for name in STAGES[stage].components if (r := found[name]) is not None]


def placement_problems(reqs: list[Requirement], nodes: list[NodeType]) -> list[str]:
    """Why reqs cannot all be placed on these node types (empty when they can)."""
    problems = []
    for req in reqs:
        capacity = sum(n.fits(req) * n.max_nodes for n in nodes)
        if not any(n.fits(req) for n in nodes):
            have = "; ".join(f"{n.name} {_short(n.resources)}" for n in nodes)
            problems.append(f"{req.describe()}: no node type has {_short(req.bundle())}. Node types: {have}")
        elif capacity < req.count:
            problems.append(f"{req.describe()}: the node types hold at most {capacity} at once")
    return problems


def _short(res: dict[str, float]) -> str:
    keep = {k: v for k, v in res.items() if k in ("CPU", "GPU") or k.startswith(ACCELERATOR_PREFIX)}
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(keep.items())) + "}"


def _launcher_node_types(doc: dict[str, Any]) -> list[NodeType]:
    # The launcher's own preparation and schema check (`ray up` runs the same two calls).
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(doc)
    validate_config(prepared)
    head = prepared["head_node_type"]
    return [
        NodeType(name, {k: float(v) for k, v in nt["resources"].items()},
                 (1 if name == head else 0) + nt.get("max_workers", 0))
        for name, nt in prepared["available_node_types"].items()
    ]


def ray_cluster_spec(doc: dict[str, Any]) -> dict[str, Any]:
    """The RayCluster spec inside a RayCluster, RayJob or RayService manifest."""
    kind = doc.get("kind")
    spec = doc.get("spec") or {}
    if kind == "RayCluster":
        return spec
    if kind == "RayJob":
        return spec.get("rayClusterSpec") or {}
    if kind == "RayService":
        return spec.get("rayClusterConfig") or {}
    raise ConfigError(f"kind {kind!r} is not one of {sorted(KUBERAY_KINDS)}")


def _kuberay_node_types(doc: dict[str, Any]) -> list[NodeType]:
    # The conversion the KubeRay in-tree autoscaler itself applies to the custom resource.
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr

    cr = {"metadata": {"namespace": "default", **(doc.get("metadata") or {})}, "spec": ray_cluster_spec(doc)}
    derived = _derive_autoscaling_config_from_ray_cr(cr)
    return [
        NodeType(name, {k: float(v) for k, v in nt["resources"].items()}, max(nt["max_workers"], 1))
        for name, nt in derived["available_node_types"].items()
    ]


def hosted_stages(path: str | Path) -> tuple[str, ...]:
    """Stages a cluster file is meant for: a RayService serves, a RayJob runs the pipeline, others both."""
    kind = read_mapping(path, "cluster file").get("kind")
    return {"RayService": ("serve",), "RayJob": ("run",)}.get(kind, ("run", "serve"))


def node_types_from_file(path: str | Path) -> list[NodeType]:
    """Node types of a Ray cluster launcher YAML or a KubeRay RayCluster/RayJob/RayService manifest."""
    import jsonschema

    p = Path(path)
    doc = read_mapping(p, "cluster file", holds="one YAML mapping", empty_ok=False)
    try:
        if "available_node_types" in doc:
            return _launcher_node_types(doc)
        if doc.get("kind") in KUBERAY_KINDS:
            return _kuberay_node_types(doc)
    except (KeyError, TypeError, ValueError, jsonschema.ValidationError) as e:
        why = getattr(e, "message", e)  # jsonschema errors carry a short message beside the long str()
        raise ConfigError(f"cluster file {str(p)!r} is not a valid Ray cluster definition: {why}") from None
    raise ConfigError(f"cluster file {str(p)!r} is neither a Ray cluster launcher YAML "
                      f"(available_node_types) nor a KubeRay manifest ({', '.join(sorted(KUBERAY_KINDS))})")
