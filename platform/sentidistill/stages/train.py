"""`train` stage: fine-tune the student on KnowDist data, then on ICLDist data (Ray Train + DeepSpeed).

Inputs: `knowdist/data/*.parquet` / `icldist/data/*.parquet` (rows with qc == "kept"); stage
icldist also takes stage knowdist's trained model. Outputs per stage under `train/<stage>/`:
`model/` (plain HF folder + model card), `metrics.jsonl`, `deepspeed.json`, `config.yaml`,
`manifest.json`; Ray Train's checkpoints under `train/ray/<stage>/`.

>>> from sentidistill.stages import train
>>> manifest = train.run(load_config("jobs/configs/local.yaml"))  # manifest.parts: one per trained stage
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Literal

from sentidistill import console
from sentidistill.config import PipelineConfig, TrainConfig, config_hash, dump_config, output_settings
from sentidistill.errors import ConfigError, StageInputError
from sentidistill.models import build_student_init, default_cache_dir, resolve_metadata
from sentidistill.layout import RAY_STORAGE, RunLayout
from sentidistill.rundir import Manifest, RunDir, fingerprint_path
from sentidistill.runtime import start_ray
from sentidistill.stage_counts import TrainCounts, TrainExtra
from sentidistill.training.dataset import TokenizeSpec, prepare
from sentidistill.training.deepspeed_config import deepspeed_config, grad_accum_steps
from sentidistill.training.export import model_card
from sentidistill.training.loop import LoopSpec
from sentidistill.training.trainer import MetricsCallback, MetricsWatcher, fit

log = logging.getLogger("sentidistill")

Stage = Literal["knowdist", "icldist"]
STAGES: tuple[Stage, ...] = ("knowdist", "icldist")
SUMMARY = {"knowdist": "knowledge distillation from multi-perspective teacher answers",
           "icldist": "in-context-learning distillation from few-shot teacher answers"}


@dataclass
class Plan:
    """What a stage reads: its data, optional replay data, the student it starts from."""

    inputs: dict[str, str]
    data_uri: str
    replay_uri: str | None
    student: str | None  # None: the layer-pruned init, built when the stage runs
    started_from: str
    notes: list[str] = field(default_factory=list)


def run(
    cfg: PipelineConfig, stage: Literal["knowdist", "icldist", "all"] = "all", *, force: bool = False,
    on_metrics: MetricsCallback | None = None,
) -> Manifest:
    """Train one stage, or both in order ("all": the enabled ones, their manifests in `.parts`); complete
    stages are skipped."""
    if stage == "all":
        return Manifest.combine("train", [run_stage(cfg, s, force=force, on_metrics=on_metrics)
                                          for s in STAGES if cfg.train.stage(s).enabled])
    if stage not in STAGES:
        raise ConfigError(f"--stage must be knowdist, icldist or all (got {stage!r})")
    if not cfg.train.stage(stage).enabled:
        raise ConfigError(f"train.{stage}.enabled is false; enable it to train this stage")
    return run_stage(cfg, stage, force=force, on_metrics=on_metrics)


def stage_config_hash(train: TrainConfig, stage: Stage) -> str:
    """Hash of what shapes this stage's weights (the other stage's overrides excluded)."""
    # speed-only settings (train.checkpoint, the tokenizer pool) are outside it: editing them never retrains
    return config_hash(stage, output_settings(train, exclude={"knowdist", "icldist"}), train.stage(stage))


def run_stage(cfg: PipelineConfig, stage: Stage, *, force: bool = False,
              on_metrics: MetricsCallback | None = None) -> Manifest:
    rd = RunDir(cfg.run_dir)
    lay = RunLayout(rd)
    folder = lay.train(stage)
    plan = plan_stage(cfg, rd, stage)
    chash = stage_config_hash(cfg.train, stage)
    if not force and rd.is_complete(folder, chash, plan.inputs):
        log.info("train %s: complete for these inputs, skipped (--force retrains)", stage)
        return rd.manifest(folder)  # type: ignore[return-value]
    previous = rd.manifest(folder)
    resume = not force and previous is not None and previous.config_hash == chash and previous.inputs == plan.inputs
    if not resume:  # a different config or input: Ray Train must not pick up the old run's checkpoints
        for rel in (lay.ray_checkpoints(stage), lay.metrics(stage), lay.model(stage), lay.packed(stage)):
            rd.delete(rel)
    start_ray(cfg)
    with rd.stage_run(folder, chash, plan.inputs, dump_config(cfg)) as manifest:
        train, st = cfg.train, cfg.train.stage(stage)
        student = plan.student or build_student_init(cfg, rd)
        cache = student_cache(cfg, student, plan.inputs.get("train:knowdist", config_hash(student)))
        tok_spec = TokenizeSpec(student=student, cache_dir=cache, max_seq_len=train.data.max_seq_len,
                                apply_chat_template=train.data.apply_chat_template,
                                trust_remote_code=train.model.trust_remote_code)
        packing = train.data.packing and _supports_packing(student, cache, train.model.trust_remote_code)
        data = prepare(plan.data_uri, tok_spec, packing=packing, pack_window=train.data.pack_window, seed=train.seed,
                       replay_uri=plan.replay_uri, replay_share=st.replay_share, resources=train.data,
                       out_uri=rd.uri(lay.packed(stage)))
        ds_cfg = deepspeed_config(train)
        rd.write_json(lay.deepspeed(stage), ds_cfg)
        spec = loop_spec(cfg, stage, rd, student=student, cache=cache, packing=packing, ds_cfg=ds_cfg,
                         rows=data.counts["rows"], packing_efficiency=data.counts["packing_efficiency"])
        log.info("train %s: %d steps (%d per epoch) on %d workers, from %s", stage, spec.total_steps,
                 spec.steps_per_epoch, train.resources.num_workers, plan.started_from)
        with MetricsWatcher(rd, spec.metrics_rel, on_metrics or console.train_step):
            result = fit(spec, data.dataset, train, rd.uri(RAY_STORAGE))
        summary = result.return_value or {}  # what the loop returns (training.loop); empty when no step ran
        counts = TrainCounts.model_validate({**data.counts, "steps": summary.get("final_step", spec.total_steps),
                                             "total_steps": spec.total_steps, "steps_per_epoch": spec.steps_per_epoch})
        extra = TrainExtra(student=student, started_from=plan.started_from, init_digest=summary.get("init_digest"),
                           resumed_from_step=summary.get("resumed_from", 0),
                           final_metrics=summary.get("last_metrics", {}), teachers=data.teachers, notes=plan.notes,
                           ray_storage=rd.uri(lay.ray_checkpoints(stage)))
        manifest.counts, manifest.extra = counts.dump(), extra.dump()
        rd.write_text(f"{lay.model(stage)}/README.md", model_card({
            "stage": stage, "stage_summary": SUMMARY[stage], "student": plan.started_from,
            "init_digest": extra.init_digest, "teacher": ", ".join(data.teachers) or "unknown",
            "config_hash": chash, "inputs": plan.inputs, "counts": manifest.counts,
            "lora": train.model.lora is not None, "metrics": extra.final_metrics.model_dump(exclude_none=True),
            "num_workers": train.resources.num_workers,
            "zero_stage": ds_cfg.get("zero_optimization", {}).get("stage", 0),
            "precision": "bf16" if ds_cfg["bf16"]["enabled"] else "fp32",
        }))
        manifest.outputs = ["model", "metrics.jsonl", "deepspeed.json", "config.yaml"]
    return manifest


def loop_spec(cfg: PipelineConfig, stage: Stage, rd: RunDir, *, student: str, cache: str | None, packing: bool,
              ds_cfg: dict, rows: int, packing_efficiency: float) -> LoopSpec:
    """What every worker runs: the stage's resolved settings and step budget, as plain values."""
    train, st = cfg.train, cfg.train.stage(stage)
    model, opt = train.model, train.optimizer
    steps_per_epoch, total_steps = step_budget(rows, train, st.epochs or train.optimizer.epochs, st.max_steps)
    return LoopSpec(
        stage=stage, student=student, cache_dir=cache, trust_remote_code=model.trust_remote_code,
        attn_implementation=model.attn_implementation, gradient_checkpointing=model.gradient_checkpointing,
        lora=model.lora.model_dump() if model.lora else None, deepspeed=ds_cfg, lr=st.lr or opt.lr,
        weight_decay=opt.weight_decay, lr_schedule=opt.lr_schedule, warmup_ratio=opt.warmup_ratio,
        total_steps=total_steps, steps_per_epoch=steps_per_epoch, grad_accum=grad_accum_steps(train),
        micro_batch_size=opt.micro_batch_size, packed=packing, packing_efficiency=packing_efficiency,
        checkpoint_every_steps=train.checkpoint.every_steps, log_every_steps=train.checkpoint.log_every_steps,
        seed=train.seed, run_dir=rd.uri(), metrics_rel=RunLayout.metrics(stage), model_rel=RunLayout.model(stage),
    )


def plan_stage(cfg: PipelineConfig, rd: RunDir, stage: Stage) -> Plan:
    """Inputs and their fingerprints; cheap, so a complete stage is skipped before Ray starts."""
    notes: list[str] = []
    inputs: dict[str, str] = {}
    data_uri, inputs[f"data:{stage}"] = _data_input(rd, stage, notes)
    replay_uri = None
    if stage == "icldist" and cfg.train.icldist.replay_share > 0:
        replay_uri, inputs["replay:knowdist"] = _data_input(rd, "knowdist", notes)
    if stage == "icldist" and cfg.train.knowdist.enabled:
        m = rd.manifest(RunLayout.train("knowdist"))
        if m is None or m.status != "complete":
            raise StageInputError(
                f"train icldist starts from the KnowDist student, but train/knowdist in {rd.uri()} is "
                f"{'missing' if m is None else m.status}: run `sentidistill train CONFIG --stage knowdist` first "
                "(or set train.knowdist.enabled=false to start from the base student)"
            )
        inputs["train:knowdist"] = m.fingerprint()
        model = RunLayout.model("knowdist")
        return Plan(inputs, data_uri, replay_uri, rd.uri(model), model, notes)
    if stage == "icldist":
        notes.append("train.knowdist.enabled is false: icldist starts from the base student")
    if cfg.train.model.student:
        local = fingerprint_path(cfg.train.model.student) if "://" not in cfg.train.model.student else "missing"
        if local != "missing":
            inputs["student"] = local
        return Plan(inputs, data_uri, replay_uri, cfg.train.model.student, cfg.train.model.student, notes)
    init = cfg.train.model.init
    assert init is not None  # the config validator requires student or init
    return Plan(inputs, data_uri, replay_uri, None,
                f"{init.from_model} layers {init.layers or f'{init.num_layers} evenly spaced'}", notes)


def _data_input(rd: RunDir, gen_stage: str, notes: list[str]) -> tuple[str, str]:
    """(Parquet folder URI, fingerprint): the generation manifest's, else the folder's own."""
    data = RunLayout.data(gen_stage)
    if not rd.list_files(data, ".parquet"):
        command = "generate" if gen_stage == "knowdist" else "icl"
        raise StageInputError(f"no Parquet files under {rd.uri(data)}: run `sentidistill {command} CONFIG` first")
    if rd.manifest(gen_stage) is not None:
        return rd.uri(data), rd.stage_fingerprint(gen_stage)
    notes.append(f"{data} has no manifest: fingerprinted the Parquet folder itself")
    return rd.uri(data), fingerprint_path(rd.uri(data))


def step_budget(rows: int, train: TrainConfig, epochs: float, max_steps: int | None) -> tuple[int, int]:
    """(optimizer steps per epoch, total steps): every worker takes the same whole micro-batches."""
    per_step = train.optimizer.micro_batch_size * grad_accum_steps(train)
    steps_per_epoch = (rows // train.resources.num_workers) // per_step
    if steps_per_epoch == 0:
        raise StageInputError(
            f"{rows} training rows are fewer than one optimizer step (train.optimizer.effective_batch_size="
            f"{train.optimizer.effective_batch_size} rows over {train.resources.num_workers} workers): add data or "
            "lower "
            "train.optimizer.effective_batch_size / train.optimizer.micro_batch_size"
        )
    total = math.ceil(epochs * steps_per_epoch)
    return steps_per_epoch, min(total, max_steps) if max_steps else total


def student_cache(cfg: PipelineConfig, student: str, version: str) -> str | None:
    """Cache root for loading the student: per version for cloud folders.

    resolve_model caches a cloud folder by its URI, but train/knowdist/model on s3:// is
    rewritten whenever stage 1 retrains; a versioned cache root never serves stale weights.
    """
    if "://" not in student:
        return cfg.cache_dir
    return str(default_cache_dir(cfg.cache_dir) / "students" / version)


def _supports_packing(student: str, cache: str | None, trust_remote_code: bool) -> bool:
    from sentidistill.training.data import supports_packing

    # the config is all it reads: a remote student's weights stay off the head (they load on the workers)
    ok = supports_packing(str(resolve_metadata(student, default_cache_dir(cache))), trust_remote_code)
    if not ok:
        log.warning("student %s does not support position_ids packing: one example per row, bucketed", student)
    return ok
