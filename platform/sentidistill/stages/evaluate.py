"""SentiBench evaluation: score models on the task registry's tasks, resumable per (task, seed).

Reads top to bottom, per model: resolve the model and its input fingerprint -> plan one part per
(task, seed) with a key over everything that decides its predictions -> skip when the manifest is
complete and every part file exists -> build every missing part's prompts on the driver (exact
reference sampling, before any sorting) -> check that labels have distinct first tokens -> one
Ray Data dataset ordered part by part, longest prompt first -> `map_batches(EvalUDF)` over an
actor pool of engines (label logits for classification, greedy text for extraction) -> each part
is parsed, scored and written as soon as its last item arrives -> aggregate every part into
predictions.jsonl, metrics.json, metrics.md and scores.png.

Each model is its own stage `eval/<slug>`. An interrupted run loses only the parts in flight;
parts made for other settings stay on disk (their key differs) and are reused if the settings
come back. `force` rescores every selected part.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sentidistill import console
from sentidistill.config import EngineConfig, PipelineConfig, config_hash, dump_config, output_settings
from sentidistill.engines import capabilities
from sentidistill.engines.gen_config import context_length
from sentidistill.engines.pool import map_batches_kwargs
from sentidistill.errors import ConfigError, StageInputError
from sentidistill.evaluation.aggregate import (
    bootstrap_tasks, items_fingerprint, metrics_markdown, model_metrics, part_result, replicates_npz,
)
from sentidistill.evaluation.bootstrap import Settings
from sentidistill.evaluation.items import (
    Part, Protocol, TaskInputs, batch_order, check_label_tokens, measure, part_items, part_key,
)
from sentidistill.evaluation.scoring import TOO_LONG
from sentidistill.evaluation.udf import EvalUDF
from sentidistill.icl.builder import select_tasks
from sentidistill.models import (
    build_student_init, default_cache_dir, remote_fingerprint, remote_kind, resolve_metadata, resolve_model,
)
from sentidistill.evaluation import compare
from sentidistill.evaluation.compare import Comparison
from sentidistill.report.eval_report import model_chart, write_eval_report
from sentidistill.layout import EVAL, RunLayout
from sentidistill.rundir import Manifest, RunDir, fingerprint_path
from sentidistill.runtime import start_ray
from sentidistill.stage_counts import EvalCounts, EvalExtra
from sentidistill.tasks import TaskSpec, load_registry
from sentidistill.tasks.reference import scoring_mode
from sentidistill.tasks.splits import load_split, split_path

log = logging.getLogger("sentidistill")

# Not in any eval hash beyond speed-only settings: the model is fingerprinted on its own, the name is a label.
HASH_EXCLUDED = {"name", "model"}
_SLUG = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_GENERIC = {"model", "models", "final", "hf", "export", "checkpoint"}


# -- which models --------------------------------------------------------------------------------
def slugify(ref: str) -> str:
    """Folder name for a model reference: its last path part, with the parent when that is generic
    ('runs/x/train/icldist/model' -> 'icldist-model')."""
    parts = [p for p in re.split(r"[/\\]+", ref.split("://", 1)[-1]) if p]
    pick = parts[-2:] if len(parts) > 1 and parts[-1].lower() in _GENERIC else parts[-1:]
    slug = re.sub(r"[^a-z0-9._-]+", "-", "-".join(pick).lower()).strip("-.")
    return slug or "model"


def parse_models(models: dict[str, str] | list[str]) -> dict[str, str]:
    """slug -> reference. List entries are references or 'label=reference'; slugs must be unique."""
    if isinstance(models, dict):
        pairs = list(models.items())
    else:
        pairs = []
        for entry in models:
            label, sep, ref = entry.partition("=")
            if sep and _SLUG.match(label) and ref:
                pairs.append((label, ref))
            else:
                pairs.append((slugify(entry), entry))
    out: dict[str, str] = {}
    for slug, ref in pairs:
        if not _SLUG.match(slug):
            raise ConfigError(f"eval: model label {slug!r} must be lowercase letters, digits, '.', '_' or '-'")
        if slug in out:
            raise ConfigError(f"eval: two models would share the folder eval/{slug} ({out[slug]!r} and {ref!r}); "
                              "name them with label=reference, e.g. --model base=path/to/model")
        out[slug] = ref
    return out


def model_engine(engine: EngineConfig, ref: str) -> EngineConfig:
    """The eval engine settings with this model (for openai: the served model name)."""
    return EngineConfig.model_validate({**engine.model_dump(), "model": ref})


def served_engine(cfg: PipelineConfig) -> EngineConfig:
    """eval.engine for scoring our own served app (`eval --endpoint`) with this config's serve section.

    /v1/score takes at most serve.max_texts prompts per request (a larger batch is a 422 on every
    call), so batches are capped there; the bearer key comes from serve.api_key_env unless
    eval.engine.openai.api_key_env names another variable.
    """
    engine, serve = cfg.eval.engine, cfg.serve
    batch = engine.resources.batch_size
    if batch > serve.max_texts:
        log.info("eval.engine.resources.batch_size %d -> %d: the served /v1/score accepts at most serve.max_texts "
                 "prompts per request", batch, serve.max_texts)
    update: dict[str, Any] = {"resources": engine.resources.model_copy(
        update={"batch_size": min(batch, serve.max_texts)})}
    if engine.openai is not None:
        update["openai"] = engine.openai.model_copy(
            update={"api_key_env": engine.openai.api_key_env or serve.api_key_env})
    return engine.model_copy(update=update)


def teacher_engine(cfg: PipelineConfig) -> EngineConfig:
    """eval.engine's scoring settings where the teacher runs: a teacher keeps its own resources (but eval's
    batch size and token budget), trust_remote_code and vllm section (a 70B model needs its tensor-parallel node, not
    eval.engine's 1-GPU slot)."""
    teacher, engine = cfg.teacher, cfg.eval.engine
    resources = teacher.resources.model_copy(update={"batch_size": engine.resources.batch_size,
                                                      "max_batch_tokens": engine.resources.max_batch_tokens})
    update: dict[str, Any] = {"resources": resources, "trust_remote_code": teacher.trust_remote_code}
    if teacher.vllm is not None and engine.kind == teacher.kind:
        update["vllm"] = teacher.vllm
    return engine.model_copy(update=update)


def model_inputs(cfg: PipelineConfig, rd: RunDir, ref: str) -> tuple[dict[str, str], Path | None]:
    """(input fingerprints, local folder): a model trained in this run is fingerprinted by its train
    manifest, any other local model by its files; an endpoint by its URL and served name only."""
    engine = cfg.eval.engine
    can = capabilities(engine.kind)
    if not can.scores_labels:
        raise ConfigError(f"eval.engine.kind: {engine.kind!r} cannot score a model; use hf, vllm or openai")
    if engine.openai is not None:  # an endpoint: identified by its URL and served name
        return {"endpoint": config_hash(engine.openai.base_url, ref)}, None
    cache = default_cache_dir(cfg.cache_dir)
    stage = RunLayout(rd).trained_stage(ref)
    if stage is not None:
        return {stage: rd.stage_fingerprint(stage)}, resolve_metadata(ref, cache)
    if remote_kind(ref):  # hub id or cloud folder: metadata only, the weights load on the engine's node
        return {"model": remote_fingerprint(ref)}, resolve_metadata(ref, cache)
    path = resolve_model(ref, cache)
    return {"model": fingerprint_path(str(path))}, path


# -- one model ---------------------------------------------------------------------------------
def protocol(cfg: PipelineConfig, context: int | None = None) -> Protocol:
    """The run's protocol; `context` = the model's resolved max_model_len (None: unknown, an endpoint)."""
    ev = cfg.eval
    return Protocol(k=ev.k, limit=ev.limit, chat=ev.prompt_variant == "chat", max_new_tokens=ev.max_new_tokens,
                    max_model_len=context, scoring=ev.scoring)


def model_context(engine: EngineConfig, path: Path | None) -> int | None:
    """eval.engine.max_model_len, else the model's own context length (None for an endpoint)."""
    if engine.max_model_len is not None or not capabilities(engine.kind).loads_model or path is None:
        return engine.max_model_len
    return context_length(path)


def plan_parts(cfg: PipelineConfig, tasks: list[TaskSpec], model: dict[str, str],
               context: int | None = None) -> list[Part]:
    proto = protocol(cfg, context)
    engine = output_settings(cfg.eval.engine, exclude=HASH_EXCLUDED)
    parts = []
    for task in tasks:
        data = {s: fingerprint_path(split_path(task, s, cfg.data_dir, cfg.cache_dir)) for s in ("train", "test")}
        parts += [Part(task, seed, part_key(task, seed, proto, engine, model, data)) for seed in cfg.eval.seeds]
    return parts


def _tokenizer(path: Path | None, engine: EngineConfig) -> Any | None:
    if path is None:
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, trust_remote_code=engine.trust_remote_code)


def _score(cfg: PipelineConfig, engine: EngineConfig, rd: RunDir, stage: str, todo: list[Part],
           inputs: dict[str, TaskInputs], tokenizer: Any | None, context: int | None = None) -> dict[str, Any]:
    """Build, order and score the items of the missing parts; write each part when it is complete.

    A prompt that does not fit the model (with its answer budget) is never cut and never run: it is
    scored as wrong (finish_reason 'too_long') and counted per part (`prompts_too_long`).
    """
    import ray.data

    proto = protocol(cfg, context)
    items = {p.name: part_items(p, inputs[p.task.name], proto) for p in todo}
    flat = [it for p in todo for it in items[p.name]]
    measure(flat, tokenizer)
    by_name = {p.name: p for p in todo}
    pending: dict[str, dict[int, dict[str, Any]]] = {p.name: {} for p in todo}
    too_long = {p.name: sum(not proto.fits(p.task, it["prompt_tokens"]) for it in items[p.name])
                if tokenizer is not None and context is not None else None for p in todo}
    for it in flat:
        if not proto.fits(by_name[it["part"]].task, it["prompt_tokens"]):
            pending[it["part"]][it["idx"]] = {"part": it["part"], "idx": it["idx"], "output": None, "scores": None,
                                              "finish_reason": TOO_LONG, "prompt_tokens": it["prompt_tokens"],
                                              "completion_tokens": 0, "error": None, "dtype": None}
    if any(too_long.values()):
        log.warning("eval: prompts that do not fit the model's %d tokens (with the answer budget) are scored as "
                    "wrong, never cut: %s", context, {k: v for k, v in too_long.items() if v})
    run_items = [it for it in flat if it["idx"] not in pending[it["part"]]]
    stats: dict[str, Any] = {"parts_scored": 0, "items_scored": 0, "errors": 0, "error_samples": []}

    def finish(name: str) -> None:
        part, got = by_name[name], pending.pop(name)
        failed = [o for o in got.values() if o["finish_reason"] == "error"]
        if failed:  # not written: the next run scores this part again
            stats["errors"] += len(failed)
            stats["error_samples"] += [f"{part.name}#{o['idx']}: {o['error']}" for o in failed[:2]]
            return
        result = part_result(part, inputs[part.task.name], items[part.name], got, too_long[part.name])
        rd.write_json(f"{stage}/{part.rel}", result)
        stats["parts_scored"] += 1
        stats["items_scored"] += len(got)

    t0 = time.perf_counter()
    for name in [n for n, got in pending.items() if len(got) == len(items[n])]:
        finish(name)  # no prompt of this part fits: complete without the engine
    if run_items:
        ds = ray.data.from_items(batch_order(run_items, todo)).map_batches(
            EvalUDF, fn_constructor_kwargs={"engine_cfg": engine, "cache_dir": cfg.cache_dir},
            batch_format="pyarrow", udf_modifying_row_count=False, **map_batches_kwargs(engine),
        )
        scored = 0
        for batch in ds.iter_batches(batch_size=256, batch_format="pyarrow"):
            for out in batch.to_pylist():
                got = pending[out["part"]]
                got[out["idx"]] = out
                if len(got) == len(items[out["part"]]):
                    finish(out["part"])
            scored += batch.num_rows
            console.update(scored, len(run_items), note=f"{stage} items")  # the stage line
    stats["score_s"] = round(time.perf_counter() - t0, 3)
    return stats


def _load_inputs(cfg: PipelineConfig, tasks: list[TaskSpec], cache: dict[str, TaskInputs]) -> dict[str, TaskInputs]:
    """Demonstration pools and test items, read once per run however many models are scored."""
    for task in tasks:
        if task.name in cache:
            continue
        test = load_split(task, "test", cfg.data_dir, cfg.cache_dir, limit=cfg.eval.limit)
        if not test:
            raise StageInputError(f"task {task.name!r}: the test split has no rows")
        cache[task.name] = TaskInputs(task, load_split(task, "train", cfg.data_dir, cfg.cache_dir), test)
    return cache


def _processors(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The generation_config logits processors the engine reported (one entry per distinct setting)."""
    seen: list[dict[str, Any]] = []
    for r in results:
        seen += [p for p in r.get("logit_processors") or [] if p not in seen]
    return seen


def _write_outputs(cfg: PipelineConfig, rd: RunDir, stage: str, slug: str, ref: str, parts: list[Part],
                   tasks: list[TaskSpec], benchmark: list[TaskSpec], chash: str,
                   data: dict[str, TaskInputs], context: int | None = None) -> dict[str, Any]:
    """Aggregate the part files that exist into predictions.jsonl, metrics.json/md, scores.png and the
    bootstrap replicates (bootstrap.npz) that paired comparisons between models read."""
    results = [rd.read_json(f"{stage}/{p.rel}") for p in parts if rd.exists(stage, p.rel)]
    scored = [t for t in tasks if any(r["task"] == t.name for r in results)]
    inputs = _load_inputs(cfg, scored, data)
    examples = {t.name: inputs[t.name].test for t in scored}
    bs = cfg.eval.bootstrap
    settings = Settings(resamples=bs.resamples, seed=bs.seed, confidence=bs.confidence)
    boot = bootstrap_tasks(scored, results, examples, settings)
    ev, engine = cfg.eval, cfg.eval.engine
    meta = {
        "model": slug, "model_ref": ref, "engine": engine.kind, "engine_name": engine.name or ref,
        "dtype": engine.dtype, "k": ev.k, "k_label": ev.k if ev.k is not None else "per task (SentiBench: 4)",
        "k_per_task": {t.name: ev.k if ev.k is not None else t.layout.k for t in tasks}, "seeds": ev.seeds,
        "limit": ev.limit, "prompt_variant": ev.prompt_variant, "max_new_tokens": ev.max_new_tokens,
        "max_model_len": context, "scoring": ev.scoring or "per task (SentiBench: reference)",
        "logit_processors": _processors(results), "config_hash": chash,
    }
    metrics = model_metrics(meta, results, tasks, benchmark, boot, settings,
                            {n: items_fingerprint(ex) for n, ex in examples.items()})
    lines = [json.dumps(rec, ensure_ascii=False) for r in results for rec in r["predictions"]]
    rd.write_text(f"{stage}/predictions.jsonl", "\n".join(lines) + ("\n" if lines else ""))
    rd.write_bytes(f"{stage}/bootstrap.npz", replicates_npz(boot))
    rd.write_json(f"{stage}/metrics.json", metrics)
    rd.write_text(f"{stage}/metrics.md", metrics_markdown(metrics))
    rd.write_bytes(f"{stage}/scores.png", model_chart(metrics))
    return metrics


def evaluate_model(cfg: PipelineConfig, rd: RunDir, slug: str, ref: str, tasks: list[TaskSpec],
                   benchmark: list[TaskSpec], force: bool = False,
                   data: dict[str, TaskInputs] | None = None, engine_cfg: EngineConfig | None = None) -> Manifest:
    """Score one model into eval/<slug>; a complete stage with every part present is returned as is.

    engine_cfg: where this model runs (default eval.engine); scores and hashes follow eval.engine either way.
    """
    stage = RunLayout.eval(slug)
    tasks = [t.model_copy(update={"scoring": scoring_mode(t, cfg.eval.scoring)}) for t in tasks]  # one mode each
    engine = model_engine(engine_cfg or cfg.eval.engine, ref)
    inputs, path = model_inputs(cfg, rd, ref)
    chash = config_hash(cfg.eval.model_dump(mode="json", exclude={"models", "engine", "reference"}),
                        output_settings(cfg.eval.engine, exclude=HASH_EXCLUDED), ref,
                        [t.fingerprint() for t in tasks])
    context = model_context(cfg.eval.engine, path)
    parts = plan_parts(cfg, tasks, inputs, context)
    missing = [p for p in parts if force or not rd.exists(stage, p.rel)]
    done = rd.manifest(stage)
    if not missing and done is not None and rd.is_complete(stage, chash, inputs) and rd.exists(stage, "metrics.json"):
        log.info("eval/%s: complete for this model and config (%s); nothing to do", slug, rd.uri(stage))
        return done
    data = {} if data is None else data
    with rd.stage_run(stage, chash, inputs, dump_config(cfg)) as manifest:
        RunLayout(rd).drop_partial_writes(f"{stage}/parts")
        log.info("eval/%s: %d of %d (task, seed) parts to score", slug, len(missing), len(parts))
        stats: dict[str, Any] = {"parts_scored": 0, "items_scored": 0, "errors": 0, "error_samples": []}
        if missing:
            start_ray(cfg)
            need = list({p.task.name: p.task for p in missing}.values())
            tokenizer = _tokenizer(path, engine)
            if tokenizer is not None:
                check_label_tokens(need, tokenizer, cfg.eval.prompt_variant == "chat")
            elif cfg.eval.prompt_variant == "chat" and any(t.kind == "classify" for t in need):
                raise ConfigError("eval.prompt_variant: 'chat' needs the model's tokenizer to score labels; "
                                  f"engine {engine.kind!r} has none here (use 'raw', or the hf / vllm engine)")
            stats = _score(cfg, engine, rd, stage, missing, _load_inputs(cfg, need, data), tokenizer, context)
        metrics = _write_outputs(cfg, rd, stage, slug, ref, parts, tasks, benchmark, chash, data, context)
        absent = [p.name for p in parts if not rd.exists(stage, p.rel)]
        sb = metrics["sentibench"]
        manifest.counts = EvalCounts(
            tasks=len(tasks), seeds=len(cfg.eval.seeds), parts=len(parts), missing_parts=len(absent),
            parts_scored_this_run=stats["parts_scored"], items_scored_this_run=stats["items_scored"],
            errors=stats["errors"], items=sum(metrics["items_per_task"].values()),
            sentibench=round(sb["score"], 2) if sb else None,
            prompts_too_long=sum(v for v in metrics["prompts_too_long"].values() if v),
        ).dump()
        manifest.outputs = ["predictions.jsonl", "metrics.json", "metrics.md", "scores.png", "bootstrap.npz",
                            *(p.rel for p in parts)]
        manifest.timings["score_s"] = stats.get("score_s", 0.0)
        manifest.extra = EvalExtra(model=ref, engine=engine.kind, missing=absent,
                                   error_samples=stats["error_samples"]).dump()
    if absent:
        log.warning("eval/%s: %d parts have no result yet (%d engine errors, e.g. %s); run the same command again "
                    "to score them", slug, len(absent), stats["errors"], stats["error_samples"][:1])
    return manifest


def run(cfg: PipelineConfig, models: dict[str, str] | list[str] | None = None, *,
        force: bool = False, engines: dict[str, EngineConfig] | None = None) -> Manifest:
    """Score each model on the selected tasks into `<run_dir>/eval/<slug>/`; one manifest per model in `.parts`.

    `models` maps a label (the folder name) to a reference, or lists references ('label=ref' allowed);
    None = `cfg.eval.models`. Starts Ray (or joins it) when a model needs scoring.
    >>> run(cfg, {"teacher": "smollm2-135m-instruct", "student-after": "runs/local/train/icldist/model"}).parts
    """
    targets = parse_models(cfg.eval.models if models is None else models)
    if not targets:
        raise ConfigError("eval: no model to score; pass --model M (repeatable) or set eval.models")
    registry = load_registry(cfg)
    tasks = registry.select(cfg.eval.tasks, field="eval.tasks")
    rd = RunDir(cfg.run_dir)
    data: dict[str, TaskInputs] = {}
    engines = engines or {}
    return Manifest.combine(EVAL, [evaluate_model(cfg, rd, slug, ref, tasks, registry.benchmark(), force, data,
                                                  engines.get(slug)) for slug, ref in targets.items()])


def pipeline_models(cfg: PipelineConfig) -> dict[str, str]:
    """Teacher, student before training, student after: the side-by-side `run` scores and reports."""
    rd = RunDir(cfg.run_dir)
    models: dict[str, str] = {}
    if capabilities(cfg.teacher.kind).loads_model and cfg.teacher.model:
        models["teacher"] = cfg.teacher.model
    models["student-before"] = cfg.train.model.student or build_student_init(cfg, rd)
    models["student-after"] = RunLayout(rd).final_student(cfg)
    return models


def scored(rd: RunDir, slugs: list[str]) -> list[str]:
    """The labels among `slugs` that have an evaluation folder (complete or partly scored)."""
    return [s for s in slugs if rd.manifest(RunLayout.eval(s)) is not None]


ICL_TRAINED, HELD_OUT = "ICLDist tasks", "held out of ICLDist"


def icl_groups(cfg: PipelineConfig) -> dict[str, list[str]]:
    """With `icl.holdout_tasks`: the tasks ICLDist trained on and the held-out ones, as two table rows
    (does a gain carry over to tasks the student never saw in training?)."""
    if not (cfg.icl.enabled and cfg.icl.holdout_tasks):
        return {}
    trained = [t.name for t in select_tasks(cfg.icl, load_registry(cfg))]
    return {ICL_TRAINED: trained, HELD_OUT: list(cfg.icl.holdout_tasks)}


def comparison(cfg: PipelineConfig, slugs: list[str], rerun: str | None = None) -> Comparison | None:
    """The SentiBench table of the scored models among `slugs` (None: none scored yet), written as
    eval/summary.md and eval/comparison.png; the CLI prints and the report shows this same table.

    `rerun`: the command the small-sample note points to."""
    rd = RunDir(cfg.run_dir)
    have = scored(rd, slugs)
    if not have:
        return None
    comp = compare.build(rd, have, cfg.eval.reference, rerun or compare.DEFAULT_RERUN, icl_groups(cfg))
    write_eval_report(rd, comp)
    return comp


@dataclass
class EvalResult:
    """What `sentidistill eval` shows: one manifest per model (`manifest.parts`) and their comparison."""

    manifest: Manifest
    comparison: Comparison | None
    written: list[str]  # URIs of eval/summary.md and eval/comparison.png


def score(cfg: PipelineConfig, models: list[str] | None = None, *, force: bool = False, endpoint: bool = False,
          rerun: str | None = None) -> EvalResult:
    """Score the models, then compare them; `endpoint`: the models are served by our own app at
    eval.engine.openai.base_url, so its request cap (serve.max_texts) and key (serve.api_key_env) apply."""
    if endpoint:
        cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"engine": served_engine(cfg)})})
    manifest = run(cfg, models, force=force)
    comp = comparison(cfg, [m.stage.removeprefix(f"{EVAL}/") for m in manifest.parts], rerun)
    rd = RunDir(cfg.run_dir)
    return EvalResult(manifest, comp, [rd.uri(RunLayout.EVAL_SUMMARY), rd.uri(RunLayout.EVAL_CHART)] if comp else [])


__all__ = ["EvalResult", "comparison", "evaluate_model", "model_engine", "parse_models", "pipeline_models",
           "plan_parts", "run", "score", "scored", "served_engine", "slugify"]
