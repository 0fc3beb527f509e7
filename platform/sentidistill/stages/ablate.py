"""`ablate`: the paper's comparison of distillation variants from one config, every shared artifact made once.

Variants (each one `eval/<label>/` in the run directory, compared against `student-before`):

- `student-before`: the undistilled student (the reference of every difference);
- `knowdist`: KnowDist only (the pipeline's `train/knowdist`);
- `icldist`: ICLDist only: the same ICLDist data, trained from the undistilled student (`ablate/icldist/`);
- `knowdist-icldist`: KnowDist then ICLDist (the pipeline's `train/icldist`, what `run` calls student-after);
- `gold`: gold-label fine-tuning, the baseline without a teacher: the ICLDist prompts answered with
  the gold labels, trained from the undistilled student for as many optimizer steps as
  KnowDist + ICLDist took together (`ablate/gold/`).

Generation, ICLDist data, the student init, KnowDist training and the shared evaluations live where
`sentidistill run` puts them, so `run` and `ablate` on one config reuse each other's work. A variant
is a config derived from the base one with its own run directory under `ablate/`; the ICLDist data it
trains on is the base run's, copied with its manifest (never regenerated). Every step is a stage that
skips itself when its manifest is complete, so an interrupted ablation resumes where it stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow.fs as pafs

from sentidistill.config import PipelineConfig, config_hash
from sentidistill.errors import ConfigError, StageInputError
from sentidistill.evaluation import compare
from sentidistill.evaluation.compare import Comparison
from sentidistill.layout import ABLATE, ICLDIST, KNOWDIST, RunLayout
from sentidistill.models import build_student_init
from sentidistill.rundir import Manifest, RunDir
from sentidistill.stage_counts import AblateCounts, TrainCounts
from sentidistill.stages.pipeline import StepResult, run_step

log = logging.getLogger("sentidistill")

ROOT = ABLATE
REFERENCE = "student-before"
VARIANTS = ("knowdist", "icldist", "knowdist-icldist", "gold")
SUMMARY_MD, CHART_PNG = f"{ROOT}/summary.md", f"{ROOT}/comparison.png"


@dataclass
class AblationResult:
    run_dir: str
    steps: list[StepResult]
    models: dict[str, str] = field(default_factory=dict)
    comparison: Comparison | None = None  # every variant against the reference (what summary.md holds)


def check(cfg: PipelineConfig) -> None:
    """Every variant needs both kinds of data and both training stages of the base config."""
    off = [name for name, on in (("generate.enabled", cfg.generate.enabled), ("icl.enabled", cfg.icl.enabled),
                                 ("train.knowdist.enabled", cfg.train.knowdist.enabled),
                                 ("train.icldist.enabled", cfg.train.icldist.enabled)) if not on]
    if off:
        raise ConfigError(f"ablate compares KnowDist and ICLDist variants: {', '.join(off)} must be true")


def variant_config(cfg: PipelineConfig, rd: RunDir, name: str, student: str,
                   steps: int | None = None) -> PipelineConfig:
    """The config of a variant trained from the undistilled `student` in `ablate/<name>/`: ICLDist only,
    no KnowDist replay; `gold` answers the same prompts with gold labels and trains exactly `steps` steps."""
    data = cfg.model_dump(mode="json")
    data["run_dir"] = rd.uri(ROOT, name)
    data["train"]["model"]["student"], data["train"]["model"]["init"] = student, None
    data["train"]["knowdist"]["enabled"] = False
    data["train"]["icldist"]["replay_share"] = 0.0
    if name == "gold":
        if not steps:
            raise StageInputError("ablate gold: the KnowDist + ICLDist step count is unknown; train them first")
        data["icl"]["target"] = "gold"
        data["train"]["icldist"]["max_steps"] = steps
        data["train"]["icldist"]["epochs"] = float(steps)  # >= steps / steps_per_epoch: max_steps decides
    return PipelineConfig.model_validate(data)


def distilled_steps(rd: RunDir) -> int:
    """Optimizer steps of KnowDist + ICLDist in the base run (what the gold baseline gets)."""
    total = 0
    for stage in (RunLayout.train(KNOWDIST), RunLayout.train(ICLDIST)):
        m = rd.manifest(stage)
        if m is None or m.status != "complete":
            raise StageInputError(f"ablate gold: {stage} in {rd.uri()} is not complete; it sets the step budget")
        total += TrainCounts.of(m).steps
    return total


def share(src: RunDir, dst: RunDir, stage: str) -> bool:
    """Copy a finished stage folder (its data and manifest) into a variant's run directory, unless the
    copy there is already this one. Returns whether it copied."""
    m = src.manifest(stage)
    if m is None or m.status != "complete":
        raise StageInputError(f"ablate: {stage} in {src.uri()} is not complete")
    have = dst.manifest(stage)
    if have is not None and have.fingerprint() == m.fingerprint() and have.status == "complete":
        return False
    dst.delete(stage)
    dst.makedirs(stage, "data")
    pafs.copy_files(src.path(stage, "data"), dst.path(stage, "data"), source_filesystem=src.fs,
                    destination_filesystem=dst.fs)
    dst.write_manifest(m)  # last: a copy interrupted before this line is redone
    return True


def models(cfg: PipelineConfig, rd: RunDir, student: str) -> dict[str, str]:
    """eval label -> model, in table order; the reference first."""
    model = RunLayout.model
    return {REFERENCE: student, "knowdist": rd.uri(model(KNOWDIST)),
            "icldist": rd.uri(ROOT, "icldist", model(ICLDIST)),
            "knowdist-icldist": rd.uri(model(ICLDIST)),
            "gold": rd.uri(ROOT, "gold", model(ICLDIST))}


def chosen(variants: list[str] | None) -> tuple[str, ...]:
    """The variants to compare, in table order (None = all of VARIANTS); unknown names are an error."""
    if not variants:
        return VARIANTS
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise ConfigError(f"--variant {unknown}: not a variant; variants: {', '.join(VARIANTS)}")
    return tuple(v for v in VARIANTS if v in variants)


def run(cfg: PipelineConfig, *, force: list[str] | None = None, variants: list[str] | None = None,
        on_step: Callable[[StepResult], None] | None = None, rerun: str | None = None) -> AblationResult:
    """Shared stages, the extra variants, one evaluation of every variant, the summary.

    `force` names steps to redo (pipeline steps, 'icldist', 'gold', 'eval'); `variants` picks some of
    VARIANTS (default all; the reference is always scored); `rerun` is the command the comparison's
    small-sample note points to. Each stage starts Ray when it has work.
    """
    from sentidistill.stages import evaluate, icl, pipeline, train

    check(cfg)
    picked = chosen(variants)
    forced = set(force or [])
    known = {*pipeline.STEPS, "icldist", "gold"}
    if forced - known:
        raise ConfigError(f"--force {sorted(forced - known)}: not ablation steps; steps: {', '.join(sorted(known))}")
    shared = pipeline.run(cfg, until="train-icldist", force=sorted(forced & set(pipeline.STEPS)), on_step=on_step)
    rd = RunDir(cfg.run_dir)
    steps = list(shared.steps)
    student = cfg.train.model.student or build_student_init(cfg, rd)

    def step(name: str, folders: list[str], where: RunDir, fn: Callable[[], object]) -> None:
        steps.append(run_step(name, folders, where, fn, on_step))

    if "icldist" in picked:
        only = variant_config(cfg, rd, "icldist", student)
        only_rd = RunDir(only.run_dir)
        step("icldist: share data", [ICLDIST], only_rd, lambda: share(rd, only_rd, ICLDIST))
        step("icldist: train", [RunLayout.train(ICLDIST)], only_rd,
             lambda: train.run(only, "icldist", force="icldist" in forced))
    if "gold" in picked:
        gold = variant_config(cfg, rd, "gold", student, distilled_steps(rd))
        gold_rd = RunDir(gold.run_dir)
        step("gold: build data", [ICLDIST], gold_rd, lambda: icl.run(gold, force="gold" in forced))
        step("gold: train", [RunLayout.train(ICLDIST)], gold_rd,
             lambda: train.run(gold, "icldist", force="gold" in forced))
    targets = {label: ref for label, ref in models(cfg, rd, student).items() if label == REFERENCE or label in picked}
    step("eval", [RunLayout.eval(s) for s in targets], rd,
         lambda: evaluate.run(cfg, targets, force="eval" in forced))
    comp = compare.build(rd, list(targets), REFERENCE, rerun or compare.DEFAULT_RERUN, evaluate.icl_groups(cfg))
    step("summary", [ROOT], rd, lambda: summarise(cfg, rd, targets, comp))
    return AblationResult(rd.uri(), steps, targets, comp)


def summarise(cfg: PipelineConfig, rd: RunDir, targets: dict[str, str], comp: Comparison | None = None) -> Manifest:
    """ablate/summary.md and comparison.png: every variant with its interval and its paired difference to
    the undistilled student; the manifest records the variants, their models and step counts."""
    from sentidistill.report.eval_report import comparison_chart

    inputs = {RunLayout.eval(s): rd.stage_fingerprint(RunLayout.eval(s)) for s in targets}
    chash = config_hash(sorted(targets.items()))
    if rd.is_complete(ROOT, chash, inputs) and rd.exists(SUMMARY_MD):
        return rd.manifest(ROOT)  # type: ignore[return-value]
    with rd.stage_run(ROOT, chash, inputs) as manifest:
        comp = comp or compare.build(rd, list(targets), REFERENCE)
        lines = ["# Ablation: distillation variants", ""]
        lines += [f"- **{s}**: `{ref}`" for s, ref in targets.items()]
        rd.write_text(SUMMARY_MD, "\n".join(lines) + "\n\n" + comp.markdown())
        rd.write_bytes(CHART_PNG, comparison_chart(comp))
        steps: dict[str, int | None] = {}
        trained = RunLayout.train(ICLDIST)
        for s, where in (("knowdist", RunLayout.train(KNOWDIST)), ("knowdist-icldist", trained),
                         ("icldist", f"{ROOT}/icldist/{trained}"), ("gold", f"{ROOT}/gold/{trained}")):
            if s not in targets:
                continue
            m = rd.manifest(where)
            steps[s] = TrainCounts.of(m).steps if m else None
        manifest.counts = AblateCounts(variants=len(targets), steps=steps).model_dump(mode="json")
        manifest.outputs = ["summary.md", "comparison.png"]
        manifest.extra = {"models": targets, "reference": REFERENCE, "table": comp.as_dict()}
    return manifest


__all__ = ["REFERENCE", "VARIANTS", "AblationResult", "check", "chosen", "distilled_steps", "models", "run", "share",
           "summarise", "variant_config"]
