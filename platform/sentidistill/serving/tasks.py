"""The tasks an app serves: names and aliases, preloaded demonstration pools, prompts, answers.

Pure Python (no Ray, no model), built once per ingress replica. Prompts are the SentiBench protocol
prompts (`build_prompt`, raw text, no chat template) with demonstrations drawn as evaluation draws
them (`sample_demos`: `random.Random(seed)`, one `rng.sample(train, k)` per text), so a served label
is the label the evaluation job would give the same text at the same position and seed.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from typing import Literal

from sentidistill.config import PipelineConfig
from sentidistill.engines.base import Completion
from sentidistill.errors import ConfigError
from sentidistill.serving.errors import ApiError
from sentidistill.serving.schemas import ExtractResult, LabelResult
from sentidistill.tasks import Example, TaskSpec, build_prompt, classification_candidates, load_registry, parse_output
from sentidistill.tasks.prompts import sample_demos

Kind = Literal["classify", "extract"]
ROUTE_OF: dict[str, str] = {"classify": "POST /v1/sentiment", "extract": "POST /v1/extract"}


class ServedTasks:
    """Served task specs by name, their train pools, and the aliases that point at them."""

    def __init__(self, specs: Sequence[TaskSpec], pools: dict[str, list[Example]], aliases: dict[str, str],
                 k: int, seed: int):
        self.specs = {s.name: s for s in specs}
        self.pools = pools
        self.aliases = {a: t for a, t in aliases.items() if t in self.specs}
        self.k = k
        self.seed = seed

    @classmethod
    def load(cls, cfg: PipelineConfig) -> ServedTasks:
        """Check `serve.tasks` and `serve.task_aliases` against the registry and load the train pools."""
        registry = load_registry(cfg)
        specs = registry.select(cfg.serve.tasks if cfg.serve.tasks is not None else registry.names(),
                                field="serve.tasks")
        for alias, name in cfg.serve.task_aliases.items():
            if alias in registry:
                raise ConfigError(f"serve.task_aliases.{alias}: {alias!r} is already a registered task name")
            registry.get(name, field=f"serve.task_aliases.{alias}")
        pools = {s.name: registry.load_split(s.name, "train") for s in specs}
        return cls(specs, pools, cfg.serve.task_aliases, cfg.serve.k, cfg.serve.seed)

    def names(self, kind: Kind) -> list[str]:
        """Aliases first, then registered names: what a client may send as `task` for this kind."""
        aliases = [a for a, t in self.aliases.items() if self.specs[t].kind == kind]
        return aliases + [n for n, s in self.specs.items() if s.kind == kind]

    def resolve(self, name: str, kind: Kind) -> TaskSpec:
        """The task `name` (an alias or a registered name) for a route serving `kind`; 422 otherwise."""
        spec = self.specs.get(self.aliases.get(name, name))
        if spec is None:
            available = self.names(kind)
            close = difflib.get_close_matches(name, available, n=3)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ApiError(422, f"task: Unknown task {name!r}.{hint} Available: {', '.join(available)}",
                           param="task", code="unknown_task")
        if spec.kind != kind:
            what = "a classification" if spec.kind == "classify" else "an extraction"
            raise ApiError(422, f"task: {name!r} is {what} task: use {ROUTE_OF[spec.kind]}",
                           param="task", code="wrong_task_kind")
        return spec

    def prompts(self, task: TaskSpec, texts: list[str], target: str | None, k: int | None,
                seed: int | None) -> tuple[list[str], int, int]:
        """Protocol prompts for `texts`, and the k and seed used; 422 naming `target` or `k` when unusable."""
        k = self.k if k is None else k
        seed = self.seed if seed is None else seed
        needs_target = "{target}" in task.instruction
        if needs_target and target is None:
            raise ApiError(422, f"target: task {task.name!r} needs a target (what the stance is about, "
                                "e.g. 'Joe Biden')", param="target", code="missing_target")
        if not needs_target and target is not None:
            raise ApiError(422, f"target: task {task.name!r} takes no target", param="target", code="unexpected_target")
        pool = self.pools[task.name]
        if k > len(pool):
            raise ApiError(422, f"k: task {task.name!r} has {len(pool)} demonstrations; asked for {k}", param="k")
        queries = [Example.query(t, target) for t in texts]
        demos = sample_demos(task, pool, queries, seed, k)
        return [build_prompt(task, d, q) for d, q in zip(demos, queries, strict=True)], k, seed

    @staticmethod
    def candidates(task: TaskSpec) -> list[str]:
        return classification_candidates(task)

    @staticmethod
    def label_results(task: TaskSpec, logits: list[list[float]]) -> list[LabelResult]:
        """Softmax over each row of label logits; the argmax is the label (first label on ties)."""
        return [LabelResult(label=task.labels[max(range(len(row)), key=row.__getitem__)],
                            probabilities=dict(zip(task.labels, softmax(row), strict=True))) for row in logits]

    @staticmethod
    def extraction_result(task: TaskSpec, completion: Completion) -> ExtractResult:
        parsed = parse_output(task, completion.text)
        tuples = [dict(zip(task.tuple_fields, t, strict=True)) for t in parsed.value or []]
        return ExtractResult(tuples=tuples, raw=completion.text, parse_failed=parsed.failed, dropped=parsed.dropped,
                             finish_reason=completion.finish_reason)


def softmax(row: list[float]) -> list[float]:
    """Probabilities from logits; -inf logits get probability 0 (all -inf: uniform)."""
    top = max(row)
    if math.isinf(top):
        return [1.0 / len(row)] * len(row)
    exps = [math.exp(x - top) for x in row]
    total = sum(exps)
    return [e / total for e in exps]
