"""KnowDist generation: unlabeled texts x MPP perspectives -> teacher answers, resumable.

Reads top to bottom: resolve inputs (perspectives, corpus files, config hash) -> skip when
complete -> read the corpus -> work list of (source_id, perspective) pairs -> subtract the ids
already in `knowdist/data` and `knowdist/filtered` -> Ray Data `map_batches(GenerateUDF)` over an
actor pool of teacher engines -> quality control -> Parquet parts -> manifest.

Writing (`stages.outputs`, shared with ICLDist): the driver streams finished rows with
`iter_batches(batch_size=knowdist.rows_per_part)` and writes each chunk as one atomic Parquet
part per folder (data/ for qc == "kept", filtered/ for the rest) through RunDir (temp file +
rename locally, one object on s3/gs). A kill loses at most the chunks in flight; a row id lives
in exactly one part, so a rerun that generates only the missing ids can never duplicate one.
Rows whose engine call errored are not written (the next run retries them); they are counted
and logged, and the stage is rerun instead of skipped while any pair is missing.

Rule for changed configs: the stage hash covers what changes answers (teacher model and engine
settings, corpus, knowdist incl. the perspective templates; not resources such as concurrency).
If `knowdist/` belongs to another hash or other input files, or `force` is set, the old folder
is moved aside to `knowdist.prev-<hash>/` and generation starts fresh: computed work is never
mixed with answers to different prompts, and never deleted.

With the replay engine the texts come from the replay file itself and every row belongs to
`teacher.replay.perspective`: imported answers line up with their prompts by construction.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Any

import pyarrow as pa

from sentidistill.config import KnowDistConfig, PipelineConfig, config_hash, dump_config
from sentidistill.data.corpus import CorpusResult, fingerprint_sources, load_corpus, resolve_sources
from sentidistill.data.locate import resolve_data_path
from sentidistill.engines.base import render_messages
from sentidistill.errors import ConfigError, StageInputError
from sentidistill.perspectives import Perspective, sample_for_text, select_perspectives
from sentidistill.rundir import Manifest, RunDir, fingerprint_path
from sentidistill.stages.outputs import ROW_SCHEMA  # noqa: F401  (re-exported: the shared artifact schema)
from sentidistill.stages.outputs import (
    DATA, FILTERED, RESOURCE_FIELDS, StageFolder, generate_parts, pair_id, parquet_bytes,
)
from sentidistill.stages.quality import KEPT, QualityFilter

log = logging.getLogger("sentidistill")

STAGE = "knowdist"
REJECTED = "rejected"
REJECTED_SCHEMA = pa.schema([("source", pa.string()), ("raw", pa.string()), ("reason", pa.string())])
_SUMMARY_COLUMNS = ["id", "perspective", "qc", "prompt_tokens", "completion_tokens"]


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


# -- generation ------------------------------------------------------------------------------------
def _generate(cfg: PipelineConfig, todo: list[dict[str, Any]], folder: StageFolder) -> dict[str, Any]:
    """Run the missing pairs through the engine pool; each finished chunk is written as soon as it arrives."""
    qc = QualityFilter(cfg.knowdist.quality)

    def finish(row: dict[str, Any]) -> None:
        row["qc"] = qc.verdict(row["response"], row["finish_reason"], row["check"])

    return generate_parts(folder, todo, cfg.teacher, cfg.cache_dir, cfg.data_dir, cfg.knowdist.rows_per_part, finish)


def _summarise(folder: StageFolder, work: list[dict[str, Any]], names: list[str], corpus: CorpusResult,
               stats: dict[str, Any]) -> dict[str, Any]:
    """Counts over everything in the stage folder (this run and resumed ones)."""
    out = folder.read(_SUMMARY_COLUMNS).to_pydict()
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
    folder = StageFolder(rd, STAGE)
    folder.set_aside(chash, inputs, force)
    with rd.stage_run(STAGE, chash, inputs, dump_config(cfg)) as manifest:
        folder.drop_partial_writes((DATA, FILTERED, REJECTED))
        rd.write_bytes(f"{STAGE}/{REJECTED}/rejected.parquet", parquet_bytes(corpus.rejected, REJECTED_SCHEMA))
        have = folder.done_ids()
        todo = [w for w in work if w["id"] not in have]
        log.info("knowdist: %d texts x perspectives = %d pairs; %d already done, %d to generate",
                 len(corpus.rows), len(work), len(work) - len(todo), len(todo))
        stats = _generate(cfg, todo, folder) if todo else {"generated": 0, "errors": 0, "error_samples": []}
        manifest.counts = _summarise(folder, work, names, corpus, stats)
        manifest.outputs = folder.outputs()
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
