"""KnowDist generation: unlabeled texts x MPP perspectives -> teacher answers, resumable.

Reads top to bottom: resolve inputs (perspectives, corpus files, config hash) -> skip when
complete -> clean corpus written to `knowdist/corpus/` by Ray Data tasks (`data.corpus`; kept
across a resumed run) -> prompt rows per (text, perspective) built by Ray Data tasks, minus the
ids already in `knowdist/data` and `knowdist/filtered` (a distributed anti-join: corpus rows and
done ids meet in the same `groupby` bucket by source id) -> `map_batches(GenerateUDF)` over an
actor pool of teacher engines -> QC and Parquet parts written by sink tasks -> manifest from
counts aggregated by Ray Data. The driver never holds corpus rows, prompts or answers.

Writing (`generation.outputs`, shared with ICLDist): sink tasks take `generate.rows_per_part`
answered rows at a time and write them as one atomic Parquet part per folder (data/ for qc ==
"kept", filtered/ for the rest) through RunDir (temp file + rename locally, one object on
s3/gs). A kill loses at most the chunks in flight; a row id lives in exactly one part, so a rerun
that generates only the missing ids can never duplicate one. Rows whose engine call errored are
not written (the next run retries them); they are counted and logged, and the stage is rerun
instead of skipped while any pair is missing.

Rule for changed configs: the stage hash covers what changes answers (teacher model and engine
settings, corpus, the generate section incl. the perspective templates; not resources such as concurrency).
If `knowdist/` belongs to another hash or other input files, or `force` is set, the old folder
is moved aside to `knowdist.prev-<hash>/` and generation starts fresh: computed work is never
mixed with answers to different prompts, and never deleted.

With the replay engine the texts come from the replay file itself and every row belongs to
`teacher.replay.perspective`: imported answers line up with their prompts by construction.
"""

from __future__ import annotations

import functools
import json
import logging
import zlib
from collections import Counter
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from sentidistill.config import GenerateConfig, PipelineConfig, config_hash, dump_config, output_settings
from sentidistill.data.corpus import (
    corpus_specs, fingerprint_sources, prepare_corpus, replay_files, replay_spec, resolve_sources,
    shuffle_partitions,
)
from sentidistill.data.locate import resolve_data_path
from sentidistill.engines.base import render_messages
from sentidistill.errors import ConfigError, StageInputError
from sentidistill.perspectives import Perspective, sample_for_text, select_perspectives
from sentidistill.rundir import Manifest, RunDir, fingerprint_path
from sentidistill.runtime import start_ray
from sentidistill.stage_counts import KnowDistCounts
from sentidistill.generation.outputs import ROW_SCHEMA  # noqa: F401  (re-exported: the shared artifact schema)
from sentidistill.generation.outputs import (
    DATA, FILTERED, StageFolder, generate_parts, pair_id, part_stamp, part_uris, tally,
)
from sentidistill.generation.quality import KEPT, QualityFilter

if TYPE_CHECKING:
    import ray.data

log = logging.getLogger("sentidistill")

STAGE = "knowdist"
REJECTED, CORPUS = "rejected", "corpus"
CORPUS_COUNTS = f"{CORPUS}/counts.json"  # written last: the clean corpus is complete and reusable
WORK_SCHEMA = pa.schema([
    ("id", pa.string()), ("source_id", pa.string()), ("stage", pa.string()), ("perspective", pa.string()),
    ("variant", pa.string()), ("messages", pa.string()), ("prompt", pa.string()), ("max_new_tokens", pa.int64()),
    ("temperature", pa.float64()), ("top_p", pa.float64()), ("seed", pa.int64()), ("check", pa.string()),
    ("source_text", pa.string()), ("meta", pa.string()), ("gold", pa.string()),
])
# Corpus rows and done ids side by side, so they can meet in one groupby bucket.
_SIDE_SCHEMA = pa.schema([("source_id", pa.string()), ("text", pa.string()), ("meta", pa.string()),
                          ("done_id", pa.string()), ("bucket", pa.int64())])
_BUCKETS = 256


def stage_hash(cfg: PipelineConfig, perspectives: list[Perspective]) -> str:
    return config_hash(
        output_settings(cfg.teacher), cfg.corpus,
        cfg.generate.model_dump(mode="json", exclude={"rows_per_part", "enabled"}),
        [p.model_dump(mode="json") for p in perspectives],
    )


def build_work(rows: list[dict[str, Any]], perspectives: list[Perspective], kd: GenerateConfig) -> list[dict[str, Any]]:
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


# -- work rows, built and resumed on Ray Data -------------------------------------------------------------
def work_batch(batch: pa.Table, perspectives: list[Perspective], kd: GenerateConfig) -> pa.Table:
    """Corpus rows (and, when resuming, the done ids of the same bucket) -> the prompt rows still to answer."""
    rows = batch.to_pylist()
    done = {r["done_id"] for r in rows if r.get("done_id")}
    texts = [r for r in rows if r.get("text") is not None]
    return pa.Table.from_pylist([w for w in build_work(texts, perspectives, kd) if w["id"] not in done],
                                schema=WORK_SCHEMA)


def _bucket(ids: list[str]) -> pa.Array:
    return pa.array([zlib.crc32(i.encode()) % _BUCKETS for i in ids], pa.int64())


def _corpus_side(batch: pa.Table) -> pa.Table:
    n = batch.num_rows
    return pa.table([batch.column("source_id"), batch.column("text"), batch.column("meta"),
                     pa.nulls(n, pa.string()), _bucket(batch.column("source_id").to_pylist())], schema=_SIDE_SCHEMA)


def _done_side(batch: pa.Table) -> pa.Table:
    n = batch.num_rows
    return pa.table([batch.column("source_id"), pa.nulls(n, pa.string()), pa.nulls(n, pa.string()),
                     batch.column("id"), _bucket(batch.column("source_id").to_pylist())], schema=_SIDE_SCHEMA)


def _read_parquet(rd: RunDir, paths: str | list[str], columns: list[str]) -> ray.data.Dataset:
    import ray.data

    return ray.data.read_parquet(paths, file_extensions=["parquet"],
                                 filesystem=rd.fs if rd.remote else None).select_columns(columns)


def pending_work(folder: StageFolder, perspectives: list[Perspective], kd: GenerateConfig) -> ray.data.Dataset:
    """Prompt rows of every (text, perspective) pair not yet in data/ or filtered/, as a lazy Dataset.

    Resume is an anti-join on the workers: corpus rows and done ids are hash-grouped by source id, and
    each group builds its prompts minus its done ids. No id set is ever built on the driver."""
    corpus = _read_parquet(folder.rd, folder.rd.uri(f"{STAGE}/{CORPUS}"), ["source_id", "text", "meta"])
    fn_kwargs = {"perspectives": perspectives, "kd": kd}
    done = part_uris(folder)
    if not done:
        return corpus.map_batches(work_batch, fn_kwargs=fn_kwargs, batch_format="pyarrow")
    both = corpus.map_batches(_corpus_side, batch_format="pyarrow").union(
        _read_parquet(folder.rd, done, ["id", "source_id"]).map_batches(_done_side, batch_format="pyarrow"))
    return both.groupby("bucket", num_partitions=shuffle_partitions()).map_groups(
        work_batch, fn_kwargs=fn_kwargs, batch_format="pyarrow")


def _pairs_of(source_ids: list[str], names: list[str], kd: GenerateConfig) -> dict[str, int]:
    """Prompts per perspective that these texts get (counted while the corpus is written)."""
    return dict(Counter(n for sid in source_ids for n in sample_for_text(names, kd.per_text, kd.seed, sid)))


def prepare(cfg: PipelineConfig, rd: RunDir, names: list[str]) -> dict[str, Any]:
    """The clean corpus in `knowdist/corpus/` (kept from an interrupted run of the same config); its counts.

    With the replay engine the texts ARE the replay file's rows (untruncated: the recorded answer was
    written for the full text), read by the same pipeline, so corpus ids and replay lookups agree.
    `kept_tally` holds the pairs per perspective (the stage hash covers what decides them)."""
    if rd.exists(f"{STAGE}/{CORPUS_COUNTS}"):
        return rd.read_json(f"{STAGE}/{CORPUS_COUNTS}")
    for rel in (CORPUS, REJECTED):
        rd.delete(f"{STAGE}/{rel}")
    replay = cfg.teacher.replay  # set for kind replay only: the texts are the replay file's rows
    if replay is not None:
        files, specs, dedup = replay_files(replay, cfg.data_dir, cfg.cache_dir), [replay_spec(replay)], False
    else:
        files, specs = resolve_sources(cfg.corpus, cfg.data_dir, cfg.cache_dir), corpus_specs(cfg.corpus)
        dedup = cfg.corpus.dedup
    counts = prepare_corpus(files, specs, dedup, rd.uri(), f"{STAGE}/{CORPUS}", f"{STAGE}/{REJECTED}", part_stamp(),
                            functools.partial(_pairs_of, names=names, kd=cfg.generate))
    rd.write_json(f"{STAGE}/{CORPUS_COUNTS}", counts)
    return counts


# -- generation ------------------------------------------------------------------------------------
def _generate(cfg: PipelineConfig, todo: ray.data.Dataset, folder: StageFolder) -> dict[str, Any]:
    """Run the missing pairs through the engine pool; sink tasks write each finished chunk as it arrives."""
    qc = QualityFilter(cfg.generate.quality)

    def finish(row: dict[str, Any]) -> None:
        row["qc"] = qc.verdict(row["response"], row["finish_reason"], row["check"])

    return generate_parts(folder, todo, cfg.teacher, cfg.cache_dir, cfg.data_dir, cfg.generate.rows_per_part, finish)


def _summarise(tallies: list[dict[str, Any]], names: list[str], corpus: dict[str, Any],
               stats: dict[str, Any]) -> dict[str, Any]:
    """Counts over everything in the stage folder (resumed parts and this run's), from tallies only."""
    pairs = corpus.get("kept_tally", {})
    qc: Counter[str] = Counter()
    per: dict[str, Counter[str]] = {name: Counter() for name in names}
    for name, n in pairs.items():
        per.setdefault(name, Counter())["pairs"] += n
    tokens: Counter[str] = Counter()
    for t in tallies:
        qc[t["qc"]] += t["rows"]
        per.setdefault(t["perspective"], Counter())["kept" if t["qc"] == KEPT else "filtered"] += t["rows"]
        tokens.update({"prompt_tokens": t["prompt_tokens"], "completion_tokens": t["completion_tokens"]})
    total = sum(pairs.values())
    return {
        "texts": corpus["kept"], "pairs": total, "kept": qc[KEPT], "filtered": sum(qc.values()) - qc[KEPT],
        # ids are unique across parts and all belong to this config's pairs, so done = rows written
        "missing": total - sum(qc.values()), "generated_this_run": stats["generated"],
        "errors": stats["errors"], "qc": dict(sorted(qc.items())),
        "per_perspective": {k: {"pairs": v["pairs"], "kept": v["kept"], "filtered": v["filtered"]}
                            for k, v in per.items()},
        "prompt_tokens": tokens["prompt_tokens"], "completion_tokens": tokens["completion_tokens"],
        "completion_tokens_per_s": stats.get("completion_tokens_per_s", 0.0),
        "corpus": {k: v for k, v in corpus.items() if k != "kept_tally"},
    }


def _plan(cfg: PipelineConfig) -> tuple[list[str], dict[str, str]]:
    """(perspective names, input fingerprints): replay answers belong to one perspective and one file."""
    replay = cfg.teacher.replay
    if replay is not None:
        path = resolve_data_path(replay.path, cfg.data_dir, cfg.cache_dir)
        return [replay.perspective], {"teacher.replay.path": fingerprint_path(path)}
    if not cfg.corpus.sources:
        raise ConfigError("corpus.sources is empty: list at least one file or dataset of texts")
    return cfg.generate.perspectives, fingerprint_sources(resolve_sources(cfg.corpus, cfg.data_dir, cfg.cache_dir))


def run(cfg: PipelineConfig, *, force: bool = False) -> Manifest:
    """Generate the KnowDist data set into `<run_dir>/knowdist/`; a finished run returns its manifest.

    >>> manifest = run(load_config("jobs/configs/local.yaml"))   # starts (or joins) Ray when there is work
    >>> KnowDistCounts.of(manifest).kept, KnowDistCounts.of(manifest).qc
    """
    kd = cfg.generate
    if not kd.enabled:
        raise ConfigError("generate.enabled is false: the generate stage is switched off in this config")
    rd = RunDir(cfg.run_dir)
    names, inputs = _plan(cfg)
    perspectives = select_perspectives(names, kd.perspective_files)
    chash = stage_hash(cfg, perspectives)
    done = rd.manifest(STAGE)
    if not force and rd.is_complete(STAGE, chash, inputs) and done is not None and KnowDistCounts.of(done).missing == 0:
        log.info("knowdist: complete for this config and corpus (%s); nothing to do", rd.uri(STAGE))
        return done

    start_ray(cfg)
    folder = StageFolder(rd, STAGE)
    folder.set_aside(chash, inputs, force)
    with rd.stage_run(STAGE, chash, inputs, dump_config(cfg)) as manifest:
        folder.drop_partial_writes((DATA, FILTERED, REJECTED, CORPUS))
        corpus = prepare(cfg, rd, names)
        if not corpus["kept"]:
            where = cfg.teacher.replay.path if cfg.teacher.replay else [s.path for s in cfg.corpus.sources]
            raise StageInputError(f"corpus: no usable texts in {where}; "
                                  f"rejected by reason: {corpus['rejected_by_reason']}")
        before = tally(folder)  # parts of an interrupted run: counted by Ray Data tasks, not read here
        log.info("knowdist: %d texts x perspectives = %d pairs; %d already done, generating the rest",
                 corpus["kept"], sum(corpus["kept_tally"].values()), sum(t["rows"] for t in before))
        stats = _generate(cfg, pending_work(folder, perspectives, kd), folder)
        manifest.counts = _summarise(before + stats["tally"], names, corpus, stats)
        manifest.outputs = folder.outputs() + [
            f"{rel}/{f}" for rel in (CORPUS, REJECTED) for f in rd.list_files(f"{STAGE}/{rel}", ".parquet")]
        manifest.timings["generate_s"] = stats.get("generate_s", 0.0)
        manifest.extra = {"teacher": cfg.teacher.display_name, "engine": cfg.teacher.kind,
                          "perspectives": {p.name: p.variant for p in perspectives},
                          "error_samples": stats["error_samples"]}
    if manifest.counts["missing"]:
        log.warning("knowdist: %d pairs have no answer yet (%d engine errors this run, e.g. %s); "
                    "run the same command again to retry them", manifest.counts["missing"], stats["errors"],
                    stats["error_samples"][:1])
    return manifest
