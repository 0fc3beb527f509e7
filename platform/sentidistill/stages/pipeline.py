"""`sentidistill run`: every stage in order, in one Ray job, each skipped when already complete.

generate -> build-icl -> train-knowdist -> train-icldist -> eval (teacher, student before and
after) -> report [-> serve]. The pipeline adds no logic of its own to any stage: it calls each
stage's `run()`, which decides from its manifest whether there is work left. That is what makes
an interrupted run resumable: rerun the same command and finished stages are skipped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sentidistill.config import PipelineConfig, dump_config
from sentidistill.errors import ConfigError
from sentidistill.rundir import Manifest, RunDir

log = logging.getLogger("sentidistill")

STEPS = ["generate", "build-icl", "train-knowdist", "train-icldist", "eval", "report"]


@dataclass
class StepResult:
    step: str
    status: str  # ran | skipped | disabled | failed
    seconds: float
    artifacts: list[str] = field(default_factory=list)
    note: str = ""


@dataclass
class PipelineResult:
    run_dir: str
    steps: list[StepResult]
    eval_models: dict[str, str]


def select_steps(start: str | None, until: str | None) -> list[str]:
    """Steps between --from and --until (inclusive), validated against STEPS."""
    for name, value in (("--from", start), ("--until", until)):
        if value is not None and value not in STEPS:
            raise ConfigError(f"{name} {value!r} is not a pipeline step; steps: {', '.join(STEPS)}")
    lo = STEPS.index(start) if start else 0
    hi = STEPS.index(until) if until else len(STEPS) - 1
    if lo > hi:
        raise ConfigError(f"--from {start} comes after --until {until}")
    return STEPS[lo:hi + 1]


def final_student(cfg: PipelineConfig, rd: RunDir) -> str:
    """The model the pipeline ends with: ICLDist's export, else KnowDist's."""
    stage = "icldist" if cfg.train.icldist.enabled else "knowdist"
    return rd.uri(f"train/{stage}/model")


def eval_models(cfg: PipelineConfig, rd: RunDir) -> dict[str, str]:
    """Teacher, student before training, student after: the side-by-side the report shows."""
    from sentidistill.stages import train

    models: dict[str, str] = {}
    if cfg.teacher.kind in ("hf", "vllm") and cfg.teacher.model:
        models["teacher"] = cfg.teacher.model
    models["student-before"] = cfg.train.student or train.build_init(cfg, rd)
    models["student-after"] = final_student(cfg, rd)
    return models


def _stage_folders(step: str, cfg: PipelineConfig, models: dict[str, str]) -> list[str]:
    return {
        "generate": ["knowdist"], "build-icl": ["icldist"], "train-knowdist": ["train/knowdist"],
        "train-icldist": ["train/icldist"], "eval": [f"eval/{slug}" for slug in models], "report": ["report"],
    }[step]


def _enabled(step: str, cfg: PipelineConfig) -> bool:
    return {
        "generate": cfg.knowdist.enabled, "build-icl": cfg.icldist.enabled,
        "train-knowdist": cfg.train.knowdist.enabled, "train-icldist": cfg.train.icldist.enabled,
    }.get(step, True)


def _runner(step: str, cfg: PipelineConfig, rd: RunDir, force: bool) -> Callable[[], object]:
    if step == "generate":
        from sentidistill.stages import generate
        return lambda: generate.run(cfg, force=force)
    if step == "build-icl":
        from sentidistill.stages import icl
        return lambda: icl.run(cfg, force=force)
    if step in ("train-knowdist", "train-icldist"):
        from sentidistill.stages import train
        return lambda: train.run(cfg, step.split("-", 1)[1], force=force)
    if step == "eval":
        from sentidistill.stages import evaluate
        # the teacher is scored where it runs (teacher.num_gpus, tensor_parallel_size, accelerator_type)
        return lambda: evaluate.run(cfg, eval_models(cfg, rd), force=force,
                                    engines={"teacher": evaluate.teacher_engine(cfg)})
    from sentidistill.report import run_report
    return lambda: run_report.build(cfg, eval_models(cfg, rd))


def run(cfg: PipelineConfig, *, start: str | None = None, until: str | None = None,
        force: list[str] | None = None, on_step: Callable[[StepResult], None] | None = None) -> PipelineResult:
    """Run the selected steps in order; a failing step stops the run (its manifest says why)."""
    from sentidistill.runtime import check_shared_storage, init_ray

    steps = select_steps(start, until)
    forced = set(force or [])
    unknown = forced - set(STEPS)
    if unknown:
        raise ConfigError(f"--force {sorted(unknown)}: not pipeline steps; steps: {', '.join(STEPS)}")
    init_ray(cfg.ray)
    check_shared_storage(cfg.run_dir)
    rd = RunDir(cfg.run_dir)
    rd.write_text("config.yaml", dump_config(cfg))
    results: list[StepResult] = []
    models: dict[str, str] = {}
    for step in steps:
        if not _enabled(step, cfg):
            results.append(StepResult(step, "disabled", 0.0, note="disabled in config"))
            continue
        if step in ("eval", "report") and not models:
            models = eval_models(cfg, rd)
        folders = _stage_folders(step, cfg, models)
        before = {f: _finished(rd.manifest(f)) for f in folders}
        t0 = time.perf_counter()
        try:
            _runner(step, cfg, rd, step in forced)()
        except BaseException:
            results.append(StepResult(step, "failed", time.perf_counter() - t0, [rd.uri(f) for f in folders]))
            if on_step:
                on_step(results[-1])
            raise
        after = {f: _finished(rd.manifest(f)) for f in folders}
        status = "skipped" if before == after and all(before.values()) else "ran"
        results.append(StepResult(step, status, time.perf_counter() - t0, [rd.uri(f) for f in folders]))
        if on_step:
            on_step(results[-1])
    return PipelineResult(rd.uri(), results, models)


def _finished(m: Manifest | None) -> str | None:
    return m.finished_at if m is not None and m.status == "complete" else None


def stage_states(run_dir: str) -> list[tuple[str, Manifest]]:
    """Every stage manifest under a run dir, in pipeline order (for `sentidistill status`)."""
    rd = RunDir(run_dir)
    found = [rel[: -len("/manifest.json")] for rel in rd.list_files("", "manifest.json") if "/" in rel]
    found = [f for f in found if not f.startswith("train/ray")]
    order = ["knowdist", "icldist", "train/knowdist", "train/icldist", "eval", "report"]
    rank = lambda f: next((i for i, p in enumerate(order) if f == p or f.startswith(p + "/")), len(order))  # noqa: E731
    out = []
    for folder in sorted(found, key=lambda f: (rank(f), f)):
        m = rd.manifest(folder)
        if m is not None:
            out.append((folder, m))
    return out


__all__ = ["STEPS", "PipelineResult", "StepResult", "eval_models", "final_student", "run", "select_steps",
           "stage_states"]
