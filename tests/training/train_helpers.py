"""Train-test helpers: small generation-stage Parquet files in the shared row schema, and configs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sentidistill.config import PipelineConfig, load_config
from sentidistill.rundir import RunDir

REVIEWS = [
    ("The pasta was cold and the waiter ignored us.", "negative"),
    ("Lovely staff, fresh bread, we will come back.", "positive"),
    ("Battery died after two days, very disappointed.", "negative"),
    ("Great screen and the sound is crisp.", "positive"),
    ("The hotel room smelled of smoke.", "negative"),
    ("Fast delivery and the shoes fit perfectly.", "positive"),
    ("Boring plot, I fell asleep halfway.", "negative"),
    ("A touching film with superb acting.", "positive"),
]


def _row(stage: str, source: str, variant: str, *, messages=None, prompt=None, response: str, qc="kept",
         gold=None, teacher="tiny-teacher") -> dict:
    return {
        "id": hashlib.sha256(f"{source}|{variant}".encode()).hexdigest()[:16], "source_id": source, "stage": stage,
        "perspective": variant, "variant": variant, "messages": json.dumps(messages) if messages else None,
        "prompt": prompt, "response": response, "finish_reason": "stop", "prompt_tokens": 10,
        "completion_tokens": 5, "teacher": teacher, "engine": "hf", "latency_s": 0.1, "qc": qc, "gold": gold,
        "meta": None,
    }


def knowdist_rows() -> list[dict]:
    rows = []
    for i, (text, label) in enumerate(REVIEWS):
        for persp, question in [("overall", "What is the overall sentiment of this review?"),
                                ("emotions", "Which emotions does the author express?")]:
            answer = f"The sentiment is {label}." if persp == "overall" else f"The author feels {label} about it."
            rows.append(_row("knowdist", f"r{i}", persp, response=answer,
                             messages=[{"role": "user", "content": f"{question}\n\nReview: {text}"}]))
    rows.append(_row("knowdist", "r0", "stance", response="I cannot help", qc="refusal",
                     messages=[{"role": "user", "content": "stance?"}]))
    return rows


def icldist_rows() -> list[dict]:
    rows = []
    for i, (text, label) in enumerate(REVIEWS):
        prompt = f"Classify the sentiment.\nSentence: {REVIEWS[(i + 1) % 8][0]}\nLabel: {REVIEWS[(i + 1) % 8][1]}\n" \
                 f"Sentence: {text}\nLabel:"
        rows.append(_row("icldist", f"s{i}", "sc", prompt=prompt, response=f" {label}", gold=label))
    rows.append(_row("icldist", "s9", "sc", prompt="Sentence: x\nLabel:", response=" ???", qc="parse_error"))
    return rows


def write_stage_data(run_dir: Path, stage: str, rows: list[dict], with_manifest: bool) -> None:
    """Parquet in <run_dir>/<stage>/data, optionally with a completed generation manifest."""
    data = run_dir / stage / "data"
    data.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), data / "part-00000.parquet")
    if with_manifest:
        with RunDir(str(run_dir)).stage_run(stage, "test-gen", {}) as m:
            m.outputs = ["data/part-00000.parquet"]
            m.counts = {"kept": sum(r["qc"] == "kept" for r in rows)}


def train_config(run_dir: Path, student: Path, cache: Path, *overrides: str) -> PipelineConfig:
    """Tiny, fast settings: 2 CPU workers, ZeRO-2, one micro-batch per step, short packed rows."""
    base = [
        f"run_dir={run_dir}", f"cache_dir={cache}", f"train.model.student={student}", "train.optimizer.lr=2e-3",
        "train.optimizer.micro_batch_size=1", "train.optimizer.effective_batch_size=2", "train.optimizer.warmup_ratio=0.1",
        "train.resources.num_workers=2", "train.data.max_seq_len=160", "train.data.pack_window=64",
        "train.deepspeed.zero_stage=2", "train.checkpoint.every_steps=4", "train.checkpoint.keep=2",
        "train.checkpoint.max_failures=1", "train.checkpoint.log_every_steps=1",
    ]
    return load_config(None, [*base, *overrides])
