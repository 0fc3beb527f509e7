"""ICLDist prompt construction: task pools, seeded query / demonstration / variant draws, general data.

Pure Python (no Ray, no models). Everything the teacher will see is built here, before any
teacher call, so the leakage guard can check it all first.

Sampling, per task: `rng = random.Random(f"{seed}:{task}")` draws the queries (distinct train
rows), then per query its `PromptVariant` (the `icl.diversify` shares) and its k
demonstrations from the same pool without the query. One generator per task: adding or removing
a task never changes another task's prompts. Rendering, gold text and variants are the task
registry's (`sentidistill.tasks`), the same code evaluation uses: one registry of tasks, not two.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sentidistill.config import ICLConfig
from sentidistill.data.locate import resolve_data_path
from sentidistill.errors import ConfigError, StageInputError
from sentidistill.generation.outputs import pair_id
from sentidistill.icl.leakage import LeakageGuard, normalize
from sentidistill.tasks import Example, PromptVariant, TaskRegistry, TaskSpec, build_prompt, gold_text, sample_variant
from sentidistill.tasks.splits import read_rows
from sentidistill.tasks.variant import field_names

GENERAL = "general"
GENERAL_VARIANT = "general"


@dataclass
class Pool:
    """A task's usable train rows: test-sentence holders and duplicate texts removed (and counted)."""

    task: TaskSpec
    examples: list[Example]
    counts: dict[str, int]


@dataclass(frozen=True)
class Item:
    """One built example before any teacher call. `task`/`query`/`variant` are None for general rows."""

    id: str
    source_id: str
    perspective: str
    variant_key: str
    prompt: str
    gold: str
    inputs: tuple[str, ...]  # the texts the prompt is made of, and the prompt: what the leakage guard reads
    meta: dict[str, Any] = field(hash=False)
    task: TaskSpec | None = None
    query: Example | None = None
    variant: PromptVariant | None = None


def select_tasks(icl: ICLConfig, registry: TaskRegistry) -> list[TaskSpec]:
    """`icl.tasks` (None = SentiBench) minus `holdout_tasks`; every name is checked first."""
    for name in icl.holdout_tasks:
        registry.get(name, "icl.holdout_tasks")
    for name in icl.task_weights:
        registry.get(name, "icl.task_weights")
    tasks = [t for t in registry.select(icl.tasks, "icl.tasks") if t.name not in icl.holdout_tasks]
    if not tasks:
        raise ConfigError("icldist: no task left to build (icl.holdout_tasks removes every selected task)")
    return tasks


def build_pool(task: TaskSpec, train: list[Example], guard: LeakageGuard, drop_test_overlap: bool) -> Pool:
    """Train rows usable as queries and demonstrations.

    Duplicate texts are removed so a demonstration can never be the query under another row id.
    """
    seen: set[str] = set()
    kept: list[Example] = []
    overlap = duplicates = 0
    for ex in train:
        norm = normalize(ex.text)
        if drop_test_overlap and guard.find(ex.text) is not None:
            overlap += 1
        elif norm in seen:
            duplicates += 1
        else:
            seen.add(norm)
            kept.append(ex)
    if not kept:
        raise StageInputError(f"task {task.name!r}: no usable train rows ({len(train)} read, {overlap} hold a "
                              f"test sentence, {duplicates} duplicates)")
    counts = {"train_rows": len(train), "dropped_test_overlap": overlap, "duplicates": duplicates, "pool": len(kept)}
    return Pool(task, kept, counts)


def task_items(pool: Pool, n: int, icl: ICLConfig) -> list[Item]:
    """Up to n prompts (each train row is the query at most once), in draw order."""
    task, rows = pool.task, pool.examples
    rng = random.Random(f"{icl.seed}:{task.name}")
    k_max = min(icl.k_max, len(rows) - 1)
    items = []
    for qi in rng.sample(range(len(rows)), min(n, len(rows))):
        query = rows[qi]
        variant = sample_variant(task, rng, k_max=k_max, **icl.diversify.model_dump())
        demos = [rows[j + (j >= qi)] for j in rng.sample(range(len(rows) - 1), variant.k or 0)]
        prompt = build_prompt(task, demos, query, variant)
        gold = gold_text(task, query, variant)
        key = variant.key()
        items.append(Item(
            id=pair_id(query.id, key), source_id=query.id, perspective=task.name, variant_key=key,
            prompt=prompt, gold=gold, inputs=(query.text, *(d.text for d in demos), prompt),
            meta={"task": task.name, "query_id": query.id, "demo_ids": [d.id for d in demos]},
            task=task, query=query, variant=variant,
        ))
    return items


def task_counts(tasks: list[TaskSpec], icl: ICLConfig) -> dict[str, int]:
    """Prompts wanted per task: examples_per_task x the task's weight (the task mix)."""
    return {t.name: round(icl.examples_per_task * icl.task_weights.get(t.name, 1.0)) for t in tasks}


# -- general instruction data ----------------------------------------------------------------------
def read_general(paths: list[str], data_dir: str | None, cache_dir: str | None) -> list[dict[str, Any]]:
    """Rows of the instruction/input/output JSONL files, each with its source id and file."""
    out = []
    for f, path in enumerate(paths):
        resolved = resolve_data_path(path, data_dir, cache_dir)
        if "://" not in resolved and not Path(resolved).is_file():
            raise StageInputError(f"icl.general_data[{f}]: file {path!r} not found")
        for i, row in enumerate(read_rows(resolved, "jsonl")):
            bad = [k for k in ("instruction", "output") if not isinstance(row.get(k), str) or not row[k].strip()]
            if bad or not isinstance(row.get("input", ""), str):
                what = f"missing or empty {bad}" if bad else "'input' is not a string"
                raise StageInputError(f"{path}: line {i + 1}: {what} (general rows need instruction, "
                                      "optional input, output)")
            out.append({"source_id": f"{GENERAL}/{f}/{i}", "file": path, **row})
    return out


def general_prompt(instruction: str, inp: str) -> str:
    """Raw prompt in the ICL layout with no demonstrations; the answer follows 'Output:'."""
    body = f"Input: {inp.strip()}\n" if inp.strip() else ""
    return f"{instruction.strip()}\n\n{body}Output:"


def general_count(n_task_items: int, share: float, available: int) -> int:
    """General rows so that they are `share` of the total, capped at what the files hold."""
    return min(available, round(n_task_items * share / (1 - share)))


def general_items(rows: list[dict[str, Any]], n: int, seed: int) -> list[Item]:
    """n distinct general rows drawn with `random.Random(f"{seed}:general")`."""
    rng = random.Random(f"{seed}:{GENERAL}")
    items = []
    for i in rng.sample(range(len(rows)), min(n, len(rows))):
        row = rows[i]
        prompt = general_prompt(row["instruction"], row.get("input", ""))
        gold = row["output"].strip()
        items.append(Item(
            id=pair_id(row["source_id"], GENERAL_VARIANT), source_id=row["source_id"], perspective=GENERAL,
            variant_key=GENERAL_VARIANT, prompt=prompt, gold=gold,
            inputs=(row["instruction"], row.get("input", ""), prompt), meta={"file": row["file"]},
        ))
    return items


def variant_dimensions(item: Item) -> dict[str, str]:
    """The diversification dimensions an item used, for the manifest's per-variant counts."""
    if item.task is None or item.variant is None:
        return {"kind": GENERAL}
    task, v = item.task, item.variant
    inp, out = field_names(task, v)
    dims = {
        "field_names": f"{inp} {out}",
        "io_sep": "newline" if v.io_sep == "\n" else repr(v.io_sep),
        "instruction": "canonical" if v.paraphrase is None else f"paraphrase {v.paraphrase}",
        "k": str(v.k),
    }
    if task.kind == "classify":
        dims["label_case"] = v.label_case
    else:
        dims["output_format"] = v.output_format
    return dims
