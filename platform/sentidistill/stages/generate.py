"""KnowDist generation: unlabeled texts x MPP perspectives -> teacher answers, resumable.

Reads top to bottom: resolve inputs (perspectives, corpus files, config hash) -> skip when
complete -> read the corpus -> work list of (source_id, perspective) pairs -> subtract the ids
already in `knowdist/data` and `knowdist/filtered` -> Ray Data `map_batches(GenerateUDF)` over an
actor pool of teacher engines -> quality control -> Parquet parts -> manifest.

Writing: the driver streams finished rows with `iter_batches(batch_size=knowdist.rows_per_part)`
and writes each chunk as one atomic Parquet part per folder (data/ for qc == "kept", filtered/
for the rest) through RunDir (temp file + rename locally, one object on s3/gs). A kill loses at
most the chunks in flight; a row id lives in exactly one part, so a rerun that generates only
the missing ids can never duplicate one. Rows whose engine call errored are not written (the
next run retries them); they are counted and logged, and the stage is rerun instead of skipped
while any pair is missing.

Rule for changed configs: the stage hash covers what changes answers (teacher model and engine
settings, corpus, knowdist incl. the perspective templates; not resources such as concurrency).
If `knowdist/` belongs to another hash or other input files, or `force` is set, the old folder
is moved aside to `knowdist.prev-<hash>/` and generation starts fresh: computed work is never
mixed with answers to different prompts, and never deleted.

With the replay engine the texts come from the replay file itself and every row belongs to
`teacher.replay.perspective`: imported answers line up with their prompts by construction.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
import uuid
from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from sentidistill.config import KnowDistConfig, PipelineConfig, config_hash, dump_config
from sentidistill.data.corpus import CorpusResult, fingerprint_sources, load_corpus, resolve_sources
from sentidistill.data.locate import resolve_data_path
from sentidistill.engines.base import render_messages
from sentidistill.engines.pool import map_batches_kwargs
from sentidistill.errors import ConfigError, StageInputError
from sentidistill.perspectives import Perspective, sample_for_text, select_perspectives
from sentidistill.rundir import Manifest, RunDir, fingerprint_path
from sentidistill.stages.generation import GenerateUDF
from sentidistill.stages.quality import KEPT, QualityFilter

log = logging.getLogger("sentidistill")

STAGE = "knowdist"
DATA, FILTERED, REJECTED = "data", "filtered", "rejected"
# Engine settings that change speed or resources but not the answers: excluded from the hash.
RESOURCE_FIELDS = {"batch_size", "concurrency", "num_cpus", "num_gpus", "accelerator_type", "gpu_memory_utilization",
                   "max_num_seqs", "cpu_kvcache_gb", "max_concurrent_requests", "timeout_s", "max_retries",
                   "retry_backoff_s", "retry_max_backoff_s", "api_key_env", "enforce_eager"}
ROW_SCHEMA = pa.schema([
    ("id", pa.string()), ("source_id", pa.string()), ("stage", pa.string()), ("perspective", pa.string()),
    ("variant", pa.string()), ("messages", pa.string()), ("prompt", pa.string()), ("response", pa.string()),
    ("finish_reason", pa.string()), ("prompt_tokens", pa.int64()), ("completion_tokens", pa.int64()),
    ("teacher", pa.string()), ("engine", pa.string()), ("latency_s", pa.float64()), ("qc", pa.string()),
    ("gold", pa.string()), ("meta", pa.string()),
])
REJECTED_SCHEMA = pa.schema([("source", pa.string()), ("raw", pa.string()), ("reason", pa.string())])
_SUMMARY_COLUMNS = ["id", "perspective", "qc", "prompt_tokens", "completion_tokens"]


def pair_id(source_id: str, perspective: str) -> str:
    """Row id: sha256 of source id + perspective (the artifact schema shared with ICLDist)."""
    return hashlib.sha256(f"{source_id}\x1f{perspective}".encode()).hexdigest()[:16]


def stage_hash(cfg: PipelineConfig, perspectives: list[Perspective]) -> str:
    return config_hash(
        cfg.teacher.model_dump(mode="json", exclude=RESOURCE_FIELDS), cfg.corpus,
        cfg.knowdist.model_dump(mode="json", exclude={"rows_per_part", "enabled"}),
        [p.model_dump(mode="json") for p in perspectives],
    )


def build_work(rows: list[dict[str, Any]], perspectives: list[Perspective], kd: KnowDistConfig) -> list[dict[str, Any]]:
    """One prompt row per (text, sampled perspective), in corpus order."""
    by_name = {p.name: p for p in perspectives}
    work = []
    for row in rows:
        for name in sample_for_text(list(by_name), kd.per_text, kd.seed, row["source_id"]):
            p = by_name[name]
            msgs = p.messages(row["text"])
            work.append({
                "id": pair_id(row["source_id"], name), "source_id": row["source_id"], "stage": STAGE,
                "perspective": name, "variant": p.variant,
                "messages": json.dumps(msgs, ensure_ascii=False) if kd.apply_chat_template else None,
                "prompt": None if kd.apply_chat_template else render_messages(None, msgs, apply_template=False),
                "max_new_tokens": p.max_new_tokens or kd.max_new_tokens,
                "temperature": kd.temperature if p.temperature is None else p.temperature,
                "top_p": p.top_p or kd.top_p, "seed": kd.seed, "check": p.check,
                "source_text": row["text"], "meta": row["meta"], "gold": None,
            })
    return work


# -- run-dir helpers -------------------------------------------------------------------------------
def _parquet(rows: list[dict[str, Any]], schema: pa.Schema) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), buf)
    return buf.getvalue()


def _parts(rd: RunDir, folder: str) -> list[str]:
    return [f"{STAGE}/{folder}/{f}" for f in rd.list_files(f"{STAGE}/{folder}", ".parquet")]


def _read_outputs(rd: RunDir, columns: list[str]) -> pa.Table:
    tables = [pq.read_table(rd.path(p), filesystem=rd.fs, columns=columns)
              for p in _parts(rd, DATA) + _parts(rd, FILTERED)]
    return pa.concat_tables(tables) if tables else ROW_SCHEMA.empty_table().select(columns)


def _drop_partial_writes(rd: RunDir) -> None:
    """Temp files of a write that was killed before its rename: never complete, never read."""
    for folder in (DATA, FILTERED, REJECTED):
        for f in rd.list_files(f"{STAGE}/{folder}"):
            if ".tmp-" in f:
                rd.delete(f"{STAGE}/{folder}/{f}")


def _set_aside(rd: RunDir, chash: str, inputs: dict[str, str], force: bool) -> None:
    """Move a `knowdist/` made for other settings (or any, with force) to `knowdist.prev-<hash>/`."""
    if not rd.exists(STAGE):
        return
    old = rd.manifest(STAGE)
    if not force and old is not None and old.config_hash == chash and old.inputs == inputs:
        return
    base = f"{STAGE}.prev-{old.config_hash if old else 'unknown'}"
    dst, n = base, 2
    while rd.exists(dst):
        dst, n = f"{base}-{n}", n + 1
    if rd.remote:
        pafs.copy_files(rd.path(STAGE), rd.path(dst), source_filesystem=rd.fs, destination_filesystem=rd.fs)
        rd.delete(STAGE)
    else:
        rd.fs.move(rd.path(STAGE), rd.path(dst))
    why = "--force" if force else "the config or the input files changed"
    log.warning("knowdist: %s; previous results moved to %s", why, rd.uri(dst))


# -- generation ------------------------------------------------------------------------------------
def _generate(cfg: PipelineConfig, todo: list[dict[str, Any]], rd: RunDir) -> dict[str, Any]:
    """Run the missing pairs through the engine pool; write each finished chunk as soon as it arrives."""
    import ray.data

    stamp = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    qc = QualityFilter(cfg.knowdist.quality)
    ds = ray.data.from_items(todo).map_batches(
        GenerateUDF,
        fn_constructor_kwargs={"engine_cfg": cfg.teacher, "cache_dir": cfg.cache_dir, "data_dir": cfg.data_dir},
        batch_format="pyarrow", **map_batches_kwargs(cfg.teacher),
    )
    stats: dict[str, Any] = {"generated": 0, "errors": 0, "completion_tokens": 0, "error_samples": []}
    t0 = time.perf_counter()
    batches = ds.iter_batches(batch_size=cfg.knowdist.rows_per_part, batch_format="pyarrow")
    for seq, batch in enumerate(batches):
        rows = batch.to_pylist()
        failed = [r for r in rows if r["finish_reason"] == "error"]
        answered = [r for r in rows if r["finish_reason"] != "error"]
        for r in answered:
            r["qc"] = qc.verdict(r["response"], r["finish_reason"], r["check"])
        for folder, keep in ((DATA, True), (FILTERED, False)):
            part = [r for r in answered if (r["qc"] == KEPT) == keep]
            if part:
                rd.write_bytes(f"{STAGE}/{folder}/part-{stamp}-{seq:05d}.parquet", _parquet(part, ROW_SCHEMA))
        stats["generated"] += len(answered)
        stats["completion_tokens"] += sum(r["completion_tokens"] for r in answered)
        stats["errors"] += len(failed)
        stats["error_samples"] += [f"{r['id']}: {r['error']}" for r in failed[: 5 - len(stats["error_samples"])]]
    stats["generate_s"] = round(time.perf_counter() - t0, 3)
    stats["completion_tokens_per_s"] = round(stats["completion_tokens"] / max(stats["generate_s"], 1e-9), 2)
    return stats


def _summarise(rd: RunDir, work: list[dict[str, Any]], names: list[str], corpus: CorpusResult,
               stats: dict[str, Any]) -> dict[str, Any]:
    """Counts over everything in the stage folder (this run and resumed ones)."""
    out = _read_outputs(rd, _SUMMARY_COLUMNS).to_pydict()
    done = set(out["id"])
    qc = Counter(out["qc"])
    per: dict[str, Counter[str]] = {name: Counter() for name in names}
    for w in work:
        per.setdefault(w["perspective"], Counter())["pairs"] += 1
    for name, verdict in zip(out["perspective"], out["qc"], strict=True):
        per.setdefault(name, Counter())["kept" if verdict == KEPT else "filtered"] += 1
    return {
        "texts": len(corpus.rows), "pairs": len(work), "kept": qc[KEPT], "filtered": sum(qc.values()) - qc[KEPT],
        "missing": sum(1 for w in work if w["id"] not in done), "generated_this_run": stats["generated"],
        "errors": stats["errors"], "qc": dict(sorted(qc.items())),
        "per_perspective": {k: {"pairs": v["pairs"], "kept": v["kept"], "filtered": v["filtered"]}
                            for k, v in per.items()},
        "prompt_tokens": sum(out["prompt_tokens"]), "completion_tokens": sum(out["completion_tokens"]),
        "completion_tokens_per_s": stats.get("completion_tokens_per_s", 0.0), "corpus": corpus.counts,
    }


def _replay_corpus(cfg: PipelineConfig) -> CorpusResult:
    """With the replay engine the texts ARE the replay file's rows, so every request finds its answer.

    Texts are not truncated here: the recorded answer was written for the full text.
    """
    from sentidistill.engines.replay import iter_replay_rows

    assert cfg.teacher.replay is not None  # EngineConfig's validator guarantees it for kind 'replay'
    rows = [{k: r[k] for k in ("source_id", "text", "meta")}
            for r in iter_replay_rows(cfg.teacher.replay, cfg.data_dir, cfg.cache_dir)]
    source = {"source": "teacher.replay", "path": cfg.teacher.replay.path, "read": len(rows), "kept": len(rows)}
    counts = {"read": len(rows), "kept": len(rows), "rejected": 0, "rejected_by_reason": {}, "duplicates": 0,
              "truncated": 0, "per_source": [source]}
    return CorpusResult(rows=rows, counts=counts)


def _plan(cfg: PipelineConfig) -> tuple[list[str], dict[str, str]]:
    """(perspective names, input fingerprints): replay answers belong to one perspective and one file."""
    if cfg.teacher.kind == "replay":
        assert cfg.teacher.replay is not None
        path = resolve_data_path(cfg.teacher.replay.path, cfg.data_dir, cfg.cache_dir)
        return [cfg.teacher.replay.perspective], {"teacher.replay.path": fingerprint_path(path)}
    if not cfg.corpus.sources:
        raise ConfigError("corpus.sources is empty: list at least one file or dataset of texts")
    return cfg.knowdist.perspectives, fingerprint_sources(resolve_sources(cfg.corpus, cfg.data_dir, cfg.cache_dir))


def run(cfg: PipelineConfig, *, force: bool = False) -> Manifest:
    """Generate the KnowDist data set into `<run_dir>/knowdist/`; a finished run returns its manifest.

    >>> manifest = run(load_config("jobs/configs/local.yaml"))   # after runtime.init_ray(cfg.ray)
    >>> manifest.counts["kept"], manifest.counts["qc"]
    """
    kd = cfg.knowdist
    if not kd.enabled:
        raise ConfigError("knowdist.enabled is false: the generate stage is switched off in this config")
    rd = RunDir(cfg.run_dir)
    names, inputs = _plan(cfg)
    perspectives = select_perspectives(names, kd.perspective_files)
    chash = stage_hash(cfg, perspectives)
    done = rd.manifest(STAGE)
    if not force and rd.is_complete(STAGE, chash, inputs) and done is not None and done.counts.get("missing") == 0:
        log.info("knowdist: complete for this config and corpus (%s); nothing to do", rd.uri(STAGE))
        return done

    replay = cfg.teacher.kind == "replay"
    corpus = _replay_corpus(cfg) if replay else load_corpus(cfg.corpus, cfg.data_dir, cfg.cache_dir)
    if not corpus.rows:
        where = cfg.teacher.replay.path if cfg.teacher.replay else [s.path for s in cfg.corpus.sources]
        raise StageInputError(f"corpus: no usable texts in {where}; "
                              f"rejected by reason: {corpus.counts['rejected_by_reason']}")
    work = build_work(corpus.rows, perspectives, kd)
    _set_aside(rd, chash, inputs, force)
    with rd.stage_run(STAGE, chash, inputs, dump_config(cfg)) as manifest:
        _drop_partial_writes(rd)
        rd.write_bytes(f"{STAGE}/{REJECTED}/rejected.parquet", _parquet(corpus.rejected, REJECTED_SCHEMA))
        have = set(_read_outputs(rd, ["id"]).column("id").to_pylist())
        todo = [w for w in work if w["id"] not in have]
        log.info("knowdist: %d texts x perspectives = %d pairs; %d already done, %d to generate",
                 len(corpus.rows), len(work), len(work) - len(todo), len(todo))
        stats = _generate(cfg, todo, rd) if todo else {"generated": 0, "errors": 0, "error_samples": []}
        manifest.counts = _summarise(rd, work, names, corpus, stats)
        manifest.outputs = [p.removeprefix(f"{STAGE}/") for p in _parts(rd, DATA) + _parts(rd, FILTERED)]
        manifest.outputs.append(f"{REJECTED}/rejected.parquet")
        manifest.timings["generate_s"] = stats.get("generate_s", 0.0)
        manifest.extra = {"teacher": cfg.teacher.display_name, "engine": cfg.teacher.kind,
                          "perspectives": {p.name: p.variant for p in perspectives},
                          "error_samples": stats["error_samples"]}
    if manifest.counts["missing"]:
        log.warning("knowdist: %d pairs have no answer yet (%d engine errors this run, e.g. %s); "
                    "run the same command again to retry them", manifest.counts["missing"], stats["errors"],
                    stats["error_samples"][:1])
    return manifest
