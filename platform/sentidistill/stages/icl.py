"""ICLDist data: diversified few-shot prompts from labeled task data, answered by the teacher, resumable.

Reads top to bottom: select tasks (minus holdouts) -> fingerprints and config hash -> skip when
complete -> leakage index of every registered task's test split -> pools (train rows holding a
test sentence dropped) -> prompts (`icl.builder`) -> leakage guard over every prompt and gold
target, BEFORE any teacher call -> subtract ids already in `icldist/data` + `icldist/filtered`
-> gold-target rows written directly, teacher rows through the KnowDist engine pool and writer
(`generation.outputs`) with `icl.targets.Judge` as QC -> manifest with counts per task and variant.

Targets (icl.target): `teacher` (distillation), `gold` (no engine call at all),
`teacher_agree_gold` (teacher answers kept only where they agree with gold; the others go to
filtered/ with qc 'disagrees_with_gold'). A changed config or input moves the old folder to
`icldist.prev-<hash>/` (see `generation.outputs`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from sentidistill.config import PipelineConfig, config_hash, dump_config, output_settings
from sentidistill.engines import capabilities
from sentidistill.data.locate import resolve_data_path
from sentidistill.errors import ConfigError
from sentidistill.generation.outputs import StageFolder, generate_parts, part_stamp
from sentidistill.icl import builder
from sentidistill.icl.builder import Item, Pool
from sentidistill.icl.leakage import LeakageGuard
from sentidistill.icl.summary import COLUMNS, summarise
from sentidistill.icl.targets import Judge, gold_row
from sentidistill.rundir import Manifest, RunDir, fingerprint_path
from sentidistill.runtime import start_ray
from sentidistill.stage_counts import ICLDistCounts
from sentidistill.tasks import TaskRegistry, TaskSpec, load_registry
from sentidistill.tasks.splits import split_path

log = logging.getLogger("sentidistill")

STAGE = "icldist"


def stage_hash(cfg: PipelineConfig, tasks: list[TaskSpec]) -> str:
    """What changes the rows: the teacher (not for gold targets), icldist settings, task definitions."""
    icl = cfg.icl
    teacher = "gold" if icl.target == "gold" else output_settings(cfg.teacher)
    return config_hash(teacher, icl.model_dump(mode="json", exclude={"enabled", "rows_per_part"}),
                       [t.fingerprint() for t in tasks])


def stage_inputs(cfg: PipelineConfig, registry: TaskRegistry, tasks: list[TaskSpec]) -> dict[str, str]:
    """Train files of the built tasks, every registered test file (the guard reads them), general data."""
    def fp(task: TaskSpec, split: str) -> str:
        return fingerprint_path(split_path(task, split, cfg.data_dir, cfg.cache_dir))

    inputs = {f"{t.name}.train": fp(t, "train") for t in tasks}
    tests = json.dumps({t.name: fp(t, "test") for t in registry})
    inputs["tests"] = hashlib.sha256(tests.encode()).hexdigest()[:16]
    for i, path in enumerate(cfg.icl.general_data):
        inputs[f"general_data[{i}]"] = fingerprint_path(resolve_data_path(path, cfg.data_dir, cfg.cache_dir))
    return inputs


def build_items(cfg: PipelineConfig, registry: TaskRegistry, tasks: list[TaskSpec],
                guard: LeakageGuard) -> tuple[list[Item], dict[str, Pool], dict[str, int]]:
    """Every prompt of the build (task rows, then general rows) with the pools and wanted counts."""
    icl = cfg.icl
    wanted = builder.task_counts(tasks, icl)
    pools: dict[str, Pool] = {}
    items: list[Item] = []
    for task in tasks:
        if wanted[task.name] == 0:
            continue
        pools[task.name] = builder.build_pool(task, registry.load_split(task.name, "train"), guard,
                                              icl.drop_test_overlap)
        items += builder.task_items(pools[task.name], wanted[task.name], icl)
    if icl.general_data and icl.general_share > 0:
        rows = builder.read_general(icl.general_data, cfg.data_dir, cfg.cache_dir)
        wanted[builder.GENERAL] = builder.general_count(len(items), icl.general_share, len(rows))
        items += builder.general_items(rows, wanted[builder.GENERAL], icl.seed)
    return items, pools, wanted


def uses_gold(cfg: PipelineConfig, item: Item) -> bool:
    """Gold target: always with target gold; for general rows also with teacher_agree_gold (free text)."""
    target = cfg.icl.target
    return target == "gold" or (target == "teacher_agree_gold" and item.task is None)


def work_row(cfg: PipelineConfig, item: Item) -> dict[str, Any]:
    """The row in the shared generation schema plus the sampling columns GenerateUDF reads."""
    icl = cfg.icl
    return {
        "id": item.id, "source_id": item.source_id, "stage": STAGE, "perspective": item.perspective,
        "variant": item.variant_key, "messages": None, "prompt": item.prompt, "gold": item.gold,
        "meta": json.dumps(item.meta, ensure_ascii=False), "max_new_tokens": icl.max_new_tokens,
        "temperature": icl.temperature, "top_p": icl.top_p, "seed": icl.seed,
        # Task answers are one line (a label or a tuple list): stop there instead of letting the
        # teacher invent the next demonstration. General instruction answers may span lines.
        "stop": json.dumps(["\n"]) if item.task is not None else None,
    }


def _write_gold(cfg: PipelineConfig, folder: StageFolder, items: list[Item]) -> None:
    rows = [gold_row(work_row(cfg, it), it) for it in items]
    stamp, size = part_stamp(), cfg.icl.rows_per_part
    for seq, start in enumerate(range(0, len(rows), size)):
        folder.write_rows(rows[start:start + size], f"part-{stamp}-gold-{seq:05d}")


def run(cfg: PipelineConfig, *, force: bool = False) -> Manifest:
    """Build the ICLDist data set into `<run_dir>/icldist/`; a finished build returns its manifest.

    >>> manifest = run(load_config("jobs/configs/local.yaml"))   # starts (or joins) Ray when the teacher is asked
    >>> ICLDistCounts.of(manifest).per_task["sst2"], ICLDistCounts.of(manifest).agreement
    """
    icl = cfg.icl
    if not icl.enabled:
        raise ConfigError("icl.enabled is false: the icl stage is switched off in this config")
    if icl.target != "gold" and not capabilities(cfg.teacher.kind).answers_any_prompt:
        raise ConfigError("icl.target: the replay teacher only holds KnowDist answers, it cannot answer "
                          "few-shot prompts; use a model teacher (teacher.kind hf/vllm/openai) or target: gold")
    registry = load_registry(cfg)
    tasks = builder.select_tasks(icl, registry)
    rd = RunDir(cfg.run_dir)
    inputs, chash = stage_inputs(cfg, registry, tasks), stage_hash(cfg, tasks)
    done = rd.manifest(STAGE)
    if not force and rd.is_complete(STAGE, chash, inputs) and done is not None and ICLDistCounts.of(done).missing == 0:
        log.info("icldist: complete for this config and these inputs (%s); nothing to do", rd.uri(STAGE))
        return done

    guard = LeakageGuard.from_registry(registry, icl.leak_min_words)
    items, pools, wanted = build_items(cfg, registry, tasks, guard)
    guard.check((it.perspective, it.source_id, it.inputs, (it.gold,)) for it in items)
    folder = StageFolder(rd, STAGE)
    folder.set_aside(chash, inputs, force)
    with rd.stage_run(STAGE, chash, inputs, dump_config(cfg)) as manifest:
        folder.drop_partial_writes()
        have = folder.done_ids()
        todo = [it for it in items if it.id not in have]
        gold = [it for it in todo if uses_gold(cfg, it)]
        ask = [it for it in todo if not uses_gold(cfg, it)]
        log.info("icldist: %d prompts over %d tasks; %d already done, %d gold targets, %d for the teacher",
                 len(items), len(pools), len(items) - len(todo), len(gold), len(ask))
        _write_gold(cfg, folder, gold)
        stats: dict[str, Any] = {"generated": 0, "errors": 0, "error_samples": []}
        if ask:  # gold targets need no engine, hence no Ray
            start_ray(cfg)
            judge = Judge(icl, guard, {it.id: it for it in ask})
            stats = generate_parts(folder, [work_row(cfg, it) for it in ask], cfg.teacher, cfg.cache_dir,
                                   cfg.data_dir, icl.rows_per_part, judge)
        manifest.counts = summarise(folder.read(COLUMNS).to_pylist(), items, pools, wanted, stats)
        manifest.counts["holdout_tasks"] = list(icl.holdout_tasks)
        manifest.counts["test_sentences_indexed"] = len(guard)
        manifest.outputs = folder.outputs()
        manifest.timings["generate_s"] = stats.get("generate_s", 0.0)
        manifest.extra = {"teacher": "gold" if icl.target == "gold" else cfg.teacher.display_name,
                          "engine": "gold" if icl.target == "gold" else cfg.teacher.kind, "target": icl.target,
                          "tasks": {t.name: t.fingerprint() for t in tasks}, "error_samples": stats["error_samples"]}
    if manifest.counts["missing"]:
        log.warning("icldist: %d prompts have no answer yet (%d engine errors this run, e.g. %s); "
                    "run the same command again to retry them", manifest.counts["missing"], stats["errors"],
                    stats["error_samples"][:1])
    return manifest
