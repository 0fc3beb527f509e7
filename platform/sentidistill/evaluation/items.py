"""Evaluation work: one `Part` per (task, seed), every prompt built on the driver before any sorting.

Prompts follow the reference exactly (`tasks.sample_demos` + `tasks.build_prompt`): one
`random.Random(seed)`, one draw of k demonstrations per test item in file order. Only then are
the items ordered for batching (longest first within each part), so batching never changes a
prompt. A part is the unit of resumability: it is scored as a whole and stored as one file whose
name carries `key`, a hash of everything that decides its predictions (model, engine settings,
protocol, task definition, data files, seed). A part file with the right key is never recomputed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sentidistill.config import config_hash
from sentidistill.engines.base import first_token_ids
from sentidistill.errors import ConfigError
from sentidistill.tasks import Example, TaskSpec, build_prompt, classification_candidates, sample_demos
from sentidistill.tasks.reference import scoring_mode


@dataclass(frozen=True)
class Protocol:
    """The evaluation settings every prompt and prediction of a run depends on."""

    k: int | None  # None = the task's own layout.k
    limit: int | None
    chat: bool
    max_new_tokens: int
    max_model_len: int | None  # the model's context (resolved); None = unknown (an endpoint decides)
    scoring: str | None = None  # eval.scoring; None = each task's own mode

    def k_for(self, task: TaskSpec) -> int:
        return task.layout.k if self.k is None else self.k

    def budget(self, task: TaskSpec) -> int:
        """Tokens the engine reserves after the prompt: one scored token, or the generation budget."""
        return 1 if task.kind == "classify" else self.max_new_tokens

    def fits(self, task: TaskSpec, prompt_tokens: int | None) -> bool:
        """Does the prompt plus its answer budget fit the model? Unknown lengths are sent as they are.
        The reference never cuts a prompt, so one that does not fit is never run (scored wrong)."""
        if self.max_model_len is None or prompt_tokens is None:
            return True
        return prompt_tokens + self.budget(task) <= self.max_model_len


@dataclass(frozen=True)
class TaskInputs:
    """A task with its demonstration pool (whole train split) and scored items (first `limit` test rows)."""

    task: TaskSpec
    train: list[Example]
    test: list[Example]


@dataclass(frozen=True)
class Part:
    task: TaskSpec
    seed: int
    key: str

    @property
    def name(self) -> str:
        return f"{self.task.name}/seed-{self.seed}"

    @property
    def rel(self) -> str:
        """Path inside the model's eval folder."""
        return f"parts/{self.task.name}/seed-{self.seed}-{self.key}.json"


def part_key(task: TaskSpec, seed: int, protocol: Protocol, engine: dict[str, Any], model: dict[str, str],
             data: dict[str, str]) -> str:
    """Hash of what decides a part's predictions; the generation budget counts for extraction only."""
    settings = {"k": protocol.k_for(task), "limit": protocol.limit, "chat": protocol.chat,
                "max_new_tokens": protocol.max_new_tokens if task.kind == "extract" else None,
                "max_model_len": protocol.max_model_len, "scoring": scoring_mode(task, protocol.scoring)}
    return config_hash(engine, settings, task.fingerprint(), data, model, seed)


def candidates(task: TaskSpec, chat: bool) -> list[str]:
    """Label strings whose first token is scored: ' label' after 'Label:'; the bare label in the chat
    variant, where the answer opens the assistant turn instead of following 'Label:' on one line."""
    cands = classification_candidates(task)
    return [c.lstrip() for c in cands] if chat else cands


def check_label_tokens(tasks: list[TaskSpec], tokenizer: Any, chat: bool) -> None:
    """Refuse a task whose labels share a first token: argmax scoring could not tell them apart."""
    for task in tasks:
        if task.kind != "classify":
            continue
        try:
            first_token_ids(tokenizer, candidates(task, chat))
        except ValueError as e:
            where = f" ({task.source})" if task.source else ""
            raise ConfigError(f"task {task.name!r}{where}: labels: {e}") from None


def part_items(part: Part, inputs: TaskInputs, protocol: Protocol) -> list[dict[str, Any]]:
    """The part's rows for the Ray dataset, in test order (prompts exactly as the reference builds them)."""
    task = part.task
    demos = sample_demos(task, inputs.train, inputs.test, part.seed, protocol.k_for(task))
    cands = json.dumps(candidates(task, protocol.chat)) if task.kind == "classify" else None
    budget = protocol.budget(task)
    return [{"part": part.name, "task": task.name, "seed": part.seed, "idx": i, "kind": task.kind,
             "prompt": build_prompt(task, d, ex), "chat": protocol.chat, "candidates": cands,
             "max_new_tokens": budget}
            for i, (ex, d) in enumerate(zip(inputs.test, demos, strict=True))]


def measure(items: list[dict[str, Any]], tokenizer: Any | None) -> None:
    """Set each item's `prompt_tokens` (None without a local tokenizer) and its sort `length`:
    tokens with the model's tokenizer, characters without one (endpoints)."""
    if tokenizer is None:
        for item in items:
            item["prompt_tokens"], item["length"] = None, len(item["prompt"])
        return
    ids = tokenizer([item["prompt"] for item in items])["input_ids"]
    for item, toks in zip(items, ids, strict=True):
        item["prompt_tokens"] = item["length"] = len(toks)


def batch_order(items: list[dict[str, Any]], parts: list[Part]) -> list[dict[str, Any]]:
    """Part by part (so finished parts can be saved while later ones run), longest prompt first
    within a part: similar lengths share a batch (little padding) and memory errors show up early."""
    rank = {p.name: i for i, p in enumerate(parts)}
    return sorted(items, key=lambda it: (rank[it["part"]], -it["length"], it["idx"]))
