"""The report stage: built from the run dir alone, with the one SentiBench comparison the CLI also prints."""

from __future__ import annotations

from pathlib import Path

from sentidistill.config import PipelineConfig
from sentidistill.evaluation.aggregate import (
    bootstrap_tasks, items_fingerprint, model_metrics, replicates_npz, task_metric,
)
from sentidistill.evaluation.bootstrap import Settings
from sentidistill.layout import RunLayout
from sentidistill.rundir import Manifest, RunDir
from sentidistill.stage_counts import ReportCounts
from sentidistill.stages import evaluate, report
from sentidistill.tasks import Parsed, load_registry


def scored(rd: RunDir, registry, targets: dict[str, str], *, n: int = 30, resamples: int = 100,
           period: int = 4) -> None:
    """eval/<slug>/ as the eval stage leaves it: metrics.json, bootstrap.npz, a complete manifest. Model k
    (in `targets` order) answers k+1 of every `period` sst2 items right, so later models score higher."""
    task, settings = registry.get("sst2"), Settings(resamples=resamples)
    examples = registry.load_split("sst2", "test", n)
    for k, slug in enumerate(targets):
        preds = [Parsed.of(ex.gold if i % period < k + 1 else "nonsense") for i, ex in enumerate(examples)]
        records = [{"idx": i, "id": ex.id, "parsed": p.value, "parse_failed": p.failed}
                   for i, (ex, p) in enumerate(zip(examples, preds))]
        results = [{"task": "sst2", "seed": 42, "key": "k", "n": n, "dtype": "float32", "prompts_truncated": 0,
                    "metrics": task_metric(task)(examples, preds), "predictions": records}]
        boot = bootstrap_tasks([task], results, {"sst2": examples}, settings)
        meta = {"model": slug, "model_ref": targets[slug], "engine": "hf", "engine_name": slug, "dtype": "auto",
                "k": None, "k_label": "4", "seeds": [42], "limit": n, "prompt_variant": "raw"}
        rd.write_json(f"eval/{slug}/metrics.json", model_metrics(meta, results, [task], registry.benchmark(), boot,
                                                                 settings, {"sst2": items_fingerprint(examples)}))
        rd.write_bytes(f"eval/{slug}/bootstrap.npz", replicates_npz(boot))
        rd.write_manifest(Manifest(stage=f"eval/{slug}", status="complete", config_hash="h", counts={"items": n},
                                   finished_at="2026-01-01T00:00:00"))


def test_report_stage_uses_the_pipeline_models_and_one_comparison(tmp_path: Path, shared_data: Path) -> None:
    cfg = PipelineConfig.model_validate({"run_dir": str(tmp_path / "run"), "data_dir": str(shared_data),
                                         "train": {"model": {"student": "/models/base-student"}}})
    rd = RunDir(cfg.run_dir)
    models = evaluate.pipeline_models(cfg)
    assert list(models)[-2:] == ["student-before", "student-after"]
    assert models["student-after"] == RunLayout(rd).final_student(cfg)
    assert evaluate.comparison(cfg, list(models)) is None  # nothing scored yet: no table, no summary written
    assert not rd.exists(RunLayout.EVAL_SUMMARY)

    scored(rd, load_registry(data_dir=str(shared_data)), models)
    comp = evaluate.comparison(cfg, list(models), "`sentidistill run x.yaml eval.limit=200`")
    assert comp is not None and comp.models == list(models) and comp.reference == "student-before"
    assert rd.exists(RunLayout.EVAL_SUMMARY) and rd.read_bytes(RunLayout.EVAL_CHART)[:4] == b"\x89PNG"

    manifest = report.run(cfg, models=models, comparison=comp)
    assert manifest.status == "complete" and ReportCounts.of(manifest).models == len(models)
    assert set(manifest.inputs) == {f"eval/{s}" for s in models}  # no data or training stages in this run dir
    html = rd.read_text(RunLayout.REPORT_HTML)
    assert "student-after" in html and "sentibench-table" in html and "../eval/comparison.png" in html
    assert "| sst2 |" in rd.read_text(RunLayout.REPORT_MD)
    assert [f for f, _ in RunLayout(rd).stage_states()][-1] == "report"


def test_pipeline_steps_are_one_declarative_list(tmp_path: Path, shared_data: Path) -> None:
    from sentidistill.stages import pipeline

    assert pipeline.STEPS == ["generate", "icl", "train-knowdist", "train-icldist", "eval", "report"]
    cfg = PipelineConfig.model_validate({"run_dir": str(tmp_path / "run"), "data_dir": str(shared_data),
                                         "train": {"model": {"student": "/models/base-student"},
                                                   "icldist": {"enabled": False}}})
    enabled = {s.name: s.enabled(cfg) for s in pipeline.PIPELINE}
    assert enabled["train-icldist"] is False and enabled["train-knowdist"] is True
    models = evaluate.pipeline_models(cfg)
    assert models["student-after"].endswith("train/knowdist/model")  # icldist off: KnowDist's export is final
    scored(RunDir(cfg.run_dir), load_registry(data_dir=str(shared_data)), models)
    seen: list[pipeline.StepResult] = []
    result = pipeline.run(cfg, start="report", on_step=seen.append)  # report only: no Ray, no training
    assert [(s.step, s.status) for s in seen] == [("report", "ran")] and result.steps == seen
    assert result.eval_models == models and result.comparison is not None
    assert result.comparison.models == list(models)
    assert RunDir(cfg.run_dir).manifest("report").status == "complete"
