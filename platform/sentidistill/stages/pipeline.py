"""`sentidistill run`: every stage in order, in one Ray job, each skipped when already complete.

The pipeline is the ordered list `PIPELINE` of steps (name, folders, enabled-when, run): generate
-> icl -> train-knowdist -> train-icldist -> eval (teacher, student before and after) ->
report. It adds no logic of its own to any stage: each step calls a stage's `run(cfg, force=...)`,
which decides from its manifest whether there is work left (and starts Ray when there is). That
is what makes an interrupted run resumable: rerun the same command and finished stages are skipped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sentidistill import console
from sentidistill.config import PipelineConfig, dump_config
from sentidistill.errors import ConfigError
from sentidistill.layout import EVAL, ICLDIST, KNOWDIST, REPORT, RunLayout
from sentidistill.rundir import Manifest, RunDir

if TYPE_CHECKING:
    from sentidistill.evaluation.compare import Comparison


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
    comparison: Comparison | None = None  # the SentiBench table of the scored models (built once per run)


class RunContext:
    """What later steps share: the models to score (resolved once) and their comparison (built once)."""

    def __init__(self, cfg: PipelineConfig, rerun: str | None):
        self.cfg, self.rerun = cfg, rerun
        self._models: dict[str, str] | None = None
        self._comparison: Comparison | None = None

    @property
    def models(self) -> dict[str, str]:
        if self._models is None:
            from sentidistill.stages import evaluate

            self._models = evaluate.pipeline_models(self.cfg)
        return self._models

    def comparison(self) -> Comparison | None:
        if self._comparison is None:
            from sentidistill.stages import evaluate

            self._comparison = evaluate.comparison(self.cfg, list(self.models), self.rerun)
        return self._comparison


@dataclass(frozen=True)
class Step:
    name: str
    folders: Callable[[RunContext], list[str]]
    enabled: Callable[[PipelineConfig], bool]
    run: Callable[[PipelineConfig, bool, RunContext], Manifest]


def _generate(cfg: PipelineConfig, force: bool, ctx: RunContext) -> Manifest:
    from sentidistill.stages import generate

    return generate.run(cfg, force=force)


def _build_icl(cfg: PipelineConfig, force: bool, ctx: RunContext) -> Manifest:
    from sentidistill.stages import icl

    return icl.run(cfg, force=force)


def _train(stage: str) -> Callable[[PipelineConfig, bool, RunContext], Manifest]:
    def run(cfg: PipelineConfig, force: bool, ctx: RunContext) -> Manifest:
        from sentidistill.stages import train

        return train.run(cfg, stage, force=force)  # type: ignore[arg-type]

    return run


def _eval(cfg: PipelineConfig, force: bool, ctx: RunContext) -> Manifest:
    from sentidistill.stages import evaluate

    # the teacher is scored where it runs (teacher.num_gpus, tensor_parallel_size, accelerator_type)
    return evaluate.run(cfg, ctx.models, force=force, engines={"teacher": evaluate.teacher_engine(cfg)})


def _report(cfg: PipelineConfig, force: bool, ctx: RunContext) -> Manifest:
    from sentidistill.stages import report

    return report.run(cfg, force=force, models=ctx.models, comparison=ctx.comparison())


PIPELINE: tuple[Step, ...] = (
    Step("generate", lambda ctx: [KNOWDIST], lambda cfg: cfg.generate.enabled, _generate),
    Step("icl", lambda ctx: [ICLDIST], lambda cfg: cfg.icl.enabled, _build_icl),
    Step("train-knowdist", lambda ctx: [RunLayout.train(KNOWDIST)], lambda cfg: cfg.train.knowdist.enabled,
         _train(KNOWDIST)),
    Step("train-icldist", lambda ctx: [RunLayout.train(ICLDIST)], lambda cfg: cfg.train.icldist.enabled,
         _train(ICLDIST)),
    Step(EVAL, lambda ctx: [RunLayout.eval(slug) for slug in ctx.models], lambda cfg: True, _eval),
    Step(REPORT, lambda ctx: [REPORT], lambda cfg: True, _report),
)
STEPS = [s.name for s in PIPELINE]
ALIASES = {"build-icl": "icl"}  # old step names still accepted on the command line


def step_name(name: str) -> str:
    """The step's current name (old names map through ALIASES)."""
    return ALIASES.get(name, name)


def select_steps(start: str | None, until: str | None) -> list[str]:
    """Steps between --from and --until (inclusive), validated against STEPS."""
    start, until = (step_name(v) if v else v for v in (start, until))
    for name, value in (("--from", start), ("--until", until)):
        if value is not None and value not in STEPS:
            raise ConfigError(f"{name} {value!r} is not a pipeline step; steps: {', '.join(STEPS)}")
    lo = STEPS.index(start) if start else 0
    hi = STEPS.index(until) if until else len(STEPS) - 1
    if lo > hi:
        raise ConfigError(f"--from {start} comes after --until {until}")
    return STEPS[lo:hi + 1]


def run_step(name: str, folders: list[str], rd: RunDir, fn: Callable[[], Any],
             on_step: Callable[[StepResult], None] | None = None) -> StepResult:
    """Run one step and say what it did: 'skipped' when every folder was complete before and is unchanged."""
    lay = RunLayout(rd)
    before, t0 = lay.finished(folders), time.perf_counter()
    try:
        with console.stage(name):
            fn()
    except BaseException:
        result = StepResult(name, "failed", time.perf_counter() - t0, [rd.uri(f) for f in folders])
        if on_step:
            on_step(result)
        raise
    after = lay.finished(folders)
    status = "skipped" if before == after and all(before.values()) else "ran"
    result = StepResult(name, status, time.perf_counter() - t0, [rd.uri(f) for f in folders])
    if on_step:
        on_step(result)
    return result


def run(cfg: PipelineConfig, *, start: str | None = None, until: str | None = None,
        force: list[str] | None = None, on_step: Callable[[StepResult], None] | None = None,
        rerun: str | None = None) -> PipelineResult:
    """Run the selected steps in order; a failing step stops the run (its manifest says why).

    `rerun` is the command the comparison's small-sample note points to (see `evaluation.compare`).
    """
    selected = select_steps(start, until)
    forced = {step_name(f) for f in force or []}
    unknown = forced - set(STEPS)
    if unknown:
        raise ConfigError(f"--force {sorted(unknown)}: not pipeline steps; steps: {', '.join(STEPS)}")
    rd = RunDir(cfg.run_dir)
    rd.write_text("config.yaml", dump_config(cfg))
    ctx = RunContext(cfg, rerun)
    results: list[StepResult] = []
    for step in (s for s in PIPELINE if s.name in selected):
        if not step.enabled(cfg):
            results.append(StepResult(step.name, "disabled", 0.0, note="disabled in config"))
            if on_step:
                on_step(results[-1])
            continue
        results.append(run_step(step.name, step.folders(ctx), rd,
                                lambda step=step: step.run(cfg, step.name in forced, ctx), on_step))
    uses_models = any(s in selected for s in (EVAL, REPORT))
    return PipelineResult(rd.uri(), results, ctx.models if uses_models else {},
                          ctx.comparison() if uses_models else None)


__all__ = ["PIPELINE", "STEPS", "PipelineResult", "RunContext", "Step", "StepResult", "run", "run_step",
           "select_steps"]
