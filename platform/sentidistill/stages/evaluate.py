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
from pathlib import Path
from typing import Any

from sentidistill.config import EngineConfig, PipelineConfig, config_hash, dump_config
from sentidistill.data.sentibench import load_split, split_path
from sentidistill.engines.pool import map_batches_kwargs
from sentidistill.errors import ConfigError, StageInputError
from sentidistill.evaluation.aggregate import metrics_markdown, model_metrics, part_result
from sentidistill.evaluation.items import (
    Part, Protocol, TaskInputs, batch_order, check_label_tokens, measure, part_items, part_key,
)
from sentidistill.evaluation.udf import EvalUDF
from sentidistill.models import default_cache_dir, resolve_model
from sentidistill.report.eval_report import model_chart
from sentidistill.rundir import Manifest, RunDir, fingerprint_path
from sentidistill.tasks import TaskSpec, load_registry

log = logging.getLogger("sentidistill")

ROOT = "eval"
# Engine settings that change speed or resources but not the predictions: outside every hash.
RESOURCE_FIELDS = {"name", "model", "batch_size", "concurrency", "num_cpus", "num_gpus", "accelerator_type",
                   "gpu_memory_utilization", "max_num_seqs", "cpu_kvcache_gb", "max_concurrent_requests",
                   "timeout_s", "max_retries", "retry_backoff_s", "retry_max_backoff_s", "api_key_env",
                   "enforce_eager"}
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


def _norm(uri: str) -> str:
    return uri.rstrip("/") if "://" in uri else str(Path(uri).expanduser().resolve())


def model_inputs(cfg: PipelineConfig, rd: RunDir, ref: str) -> tuple[dict[str, str], Path | None]:
    """(input fingerprints, local folder): a model trained in this run is fingerprinted by its train
    manifest, any other local model by its files; an endpoint by its URL and served name only."""
    engine = cfg.eval.engine
    if engine.kind == "openai":
        return {"endpoint": config_hash(engine.base_url, ref)}, None
    if engine.kind not in ("hf", "vllm"):
        raise ConfigError(f"eval.engine.kind: {engine.kind!r} cannot score a model; use hf, vllm or openai")
    for stage in ("train/knowdist", "train/icldist"):
        if _norm(ref) == _norm(rd.uri(stage, "model")):
            return {stage: rd.stage_fingerprint(stage)}, resolve_model(ref, default_cache_dir(cfg.cache_dir))
    path = resolve_model(ref, default_cache_dir(cfg.cache_dir))
    return {"model": fingerprint_path(str(path))}, path


# -- one model ---------------------------------------------------------------------------------
def protocol(cfg: PipelineConfig) -> Protocol:
    ev = cfg.eval
    return Protocol(k=ev.k, limit=ev.limit, chat=ev.prompt_variant == "chat", max_new_tokens=ev.max_new_tokens,
                    max_model_len=ev.engine.max_model_len)


def plan_parts(cfg: PipelineConfig, tasks: list[TaskSpec], model: dict[str, str]) -> list[Part]:
    proto, engine = protocol(cfg), cfg.eval.engine.model_dump(mode="json", exclude=RESOURCE_FIELDS)
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
           inputs: dict[str, TaskInputs], tokenizer: Any | None) -> dict[str, Any]:
    """Build, order and score the items of the missing parts; write each part when it is complete."""
    import ray.data

    proto = protocol(cfg)
    items = {p.name: part_items(p, inputs[p.task.name], proto) for p in todo}
    flat = [it for p in todo for it in items[p.name]]
    measure(flat, tokenizer)
    truncated = {p.name: sum(it["length"] > proto.prompt_limit(p.task) for it in items[p.name])
                 if tokenizer is not None else None for p in todo}
    if any(truncated.values()):
        log.warning("eval: prompts longer than eval.engine.max_model_len=%d (minus the answer budget) are cut on "
                    "the left: %s; raise max_model_len to score them whole",
                    proto.max_model_len, {k: v for k, v in truncated.items() if v})
    by_name = {p.name: p for p in todo}
    ds = ray.data.from_items(batch_order(flat, todo)).map_batches(
        EvalUDF, fn_constructor_kwargs={"engine_cfg": engine, "cache_dir": cfg.cache_dir},
        batch_format="pyarrow", udf_modifying_row_count=False, **map_batches_kwargs(engine),
    )
    pending: dict[str, dict[int, dict[str, Any]]] = {p.name: {} for p in todo}
    stats: dict[str, Any] = {"parts_scored": 0, "items_scored": 0, "errors": 0, "error_samples": []}
    t0 = time.perf_counter()
    for batch in ds.iter_batches(batch_size=256, batch_format="pyarrow"):
        for out in batch.to_pylist():
            got = pending[out["part"]]
            got[out["idx"]] = out
            if len(got) < len(items[out["part"]]):
                continue
            part = by_name[out["part"]]
            failed = [o for o in got.values() if o["finish_reason"] == "error"]
            if failed:  # not written: the next run scores this part again
                stats["errors"] += len(failed)
                stats["error_samples"] += [f"{part.name}#{o['idx']}: {o['error']}" for o in failed[:2]]
            else:
                result = part_result(part, inputs[part.task.name], items[part.name], got, truncated[part.name])
                rd.write_json(f"{stage}/{part.rel}", result)
                stats["parts_scored"] += 1
                stats["items_scored"] += len(got)
            del pending[out["part"]]
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


def _write_outputs(cfg: PipelineConfig, rd: RunDir, stage: str, slug: str, ref: str, parts: list[Part],
                   tasks: list[TaskSpec], benchmark: list[TaskSpec], chash: str) -> dict[str, Any]:
    """Aggregate the part files that exist into predictions.jsonl, metrics.json/md and scores.png."""
    results = [rd.read_json(f"{stage}/{p.rel}") for p in parts if rd.exists(stage, p.rel)]
    ev, engine = cfg.eval, cfg.eval.engine
    meta = {
        "model": slug, "model_ref": ref, "engine": engine.kind, "engine_name": engine.name or ref,
        "dtype": engine.dtype, "k": ev.k, "k_label": ev.k if ev.k is not None else "per task (SentiBench: 4)",
        "k_per_task": {t.name: ev.k if ev.k is not None else t.layout.k for t in tasks}, "seeds": ev.seeds,
        "limit": ev.limit, "prompt_variant": ev.prompt_variant, "max_new_tokens": ev.max_new_tokens,
        "max_model_len": engine.max_model_len, "config_hash": chash,
    }
    metrics = model_metrics(meta, results, tasks, benchmark)
    lines = [json.dumps(rec, ensure_ascii=False) for r in results for rec in r["predictions"]]
    rd.write_text(f"{stage}/predictions.jsonl", "\n".join(lines) + ("\n" if lines else ""))
    rd.write_json(f"{stage}/metrics.json", metrics)
    rd.write_text(f"{stage}/metrics.md", metrics_markdown(metrics))
    rd.write_bytes(f"{stage}/scores.png", model_chart(metrics))
    return metrics


def evaluate_model(cfg: PipelineConfig, rd: RunDir, slug: str, ref: str, tasks: list[TaskSpec],
                   benchmark: list[TaskSpec], force: bool = False,
                   data: dict[str, TaskInputs] | None = None) -> Manifest:
    """Score one model into eval/<slug>; a complete stage with every part present is returned as is."""
    stage = f"{ROOT}/{slug}"
    engine = model_engine(cfg.eval.engine, ref)
    inputs, path = model_inputs(cfg, rd, ref)
    chash = config_hash(cfg.eval.model_dump(mode="json", exclude={"models", "engine"}),
                        cfg.eval.engine.model_dump(mode="json", exclude=RESOURCE_FIELDS), ref,
                        [t.fingerprint() for t in tasks])
    parts = plan_parts(cfg, tasks, inputs)
    missing = [p for p in parts if force or not rd.exists(stage, p.rel)]
    done = rd.manifest(stage)
    if not missing and done is not None and rd.is_complete(stage, chash, inputs) and rd.exists(stage, "metrics.json"):
        log.info("eval/%s: complete for this model and config (%s); nothing to do", slug, rd.uri(stage))
        return done
    with rd.stage_run(stage, chash, inputs, dump_config(cfg)) as manifest:
        for leftover in rd.list_files(f"{stage}/parts"):  # temp files of writes killed before their rename
            if ".tmp-" in leftover:
                rd.delete(f"{stage}/parts/{leftover}")
        log.info("eval/%s: %d of %d (task, seed) parts to score", slug, len(missing), len(parts))
        stats: dict[str, Any] = {"parts_scored": 0, "items_scored": 0, "errors": 0, "error_samples": []}
        if missing:
            need = list({p.task.name: p.task for p in missing}.values())
            tokenizer = _tokenizer(path, engine)
            if tokenizer is not None:
                check_label_tokens(need, tokenizer, cfg.eval.prompt_variant == "chat")
            elif cfg.eval.prompt_variant == "chat" and any(t.kind == "classify" for t in need):
                raise ConfigError("eval.prompt_variant: 'chat' needs the model's tokenizer to score labels; "
                                  f"engine {engine.kind!r} has none here (use 'raw', or the hf / vllm engine)")
            stats = _score(cfg, engine, rd, stage, missing, _load_inputs(cfg, need, {} if data is None else data),
                           tokenizer)
        metrics = _write_outputs(cfg, rd, stage, slug, ref, parts, tasks, benchmark, chash)
        absent = [p.name for p in parts if not rd.exists(stage, p.rel)]
        sb = metrics["sentibench"]
        manifest.counts = {
            "tasks": len(tasks), "seeds": len(cfg.eval.seeds), "parts": len(parts), "missing_parts": len(absent),
            "parts_scored_this_run": stats["parts_scored"], "items_scored_this_run": stats["items_scored"],
            "errors": stats["errors"], "items": sum(metrics["items_per_task"].values()),
            "sentibench": round(sb["score"], 2) if sb else None,
        }
        manifest.outputs = ["predictions.jsonl", "metrics.json", "metrics.md", "scores.png", *(p.rel for p in parts)]
        manifest.timings["score_s"] = stats.get("score_s", 0.0)
        manifest.extra = {"model": ref, "engine": engine.kind, "missing": absent,
                          "error_samples": stats["error_samples"]}
    if absent:
        log.warning("eval/%s: %d parts have no result yet (%d engine errors, e.g. %s); run the same command again "
                    "to score them", slug, len(absent), stats["errors"], stats["error_samples"][:1])
    return manifest


def run(cfg: PipelineConfig, models: dict[str, str] | list[str] | None = None, *,
        force: bool = False) -> list[Manifest]:
    """Score each model on the selected tasks into `<run_dir>/eval/<slug>/`; one manifest per model.

    `models` maps a label (the folder name) to a reference, or lists references ('label=ref' allowed);
    None = `cfg.eval.models`. Call `runtime.init_ray(cfg.ray)` first.
    >>> run(cfg, {"teacher": "smollm2-135m-instruct", "student-after": "runs/local/train/icldist/model"})
    """
    targets = parse_models(cfg.eval.models if models is None else models)
    if not targets:
        raise ConfigError("eval: no model to score; pass --model M (repeatable) or set eval.models")
    registry = load_registry(cfg)
    tasks = registry.select(cfg.eval.tasks, field="eval.tasks")
    rd = RunDir(cfg.run_dir)
    data: dict[str, TaskInputs] = {}
    return [evaluate_model(cfg, rd, slug, ref, tasks, registry.benchmark(), force, data)
            for slug, ref in targets.items()]


__all__ = ["evaluate_model", "model_engine", "parse_models", "plan_parts", "run", "slugify"]
