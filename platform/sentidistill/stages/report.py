"""`report` stage: `<run_dir>/report/` (index.html, report.md, training charts) from the run's artifacts.

The report is rebuilt every time the stage runs (it reads only what the run directory holds, so
it is cheap and always current); its manifest records which stage results it was built from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sentidistill.config import PipelineConfig, config_hash
from sentidistill.layout import DATA_AND_MODELS, REPORT, RunLayout
from sentidistill.report import run_report
from sentidistill.rundir import Manifest, RunDir
from sentidistill.stage_counts import ReportCounts

if TYPE_CHECKING:
    from sentidistill.evaluation.compare import Comparison


def run(cfg: PipelineConfig, *, force: bool = False, models: dict[str, str] | None = None,
        comparison: Comparison | None = None) -> Manifest:
    """Build the report. `models`: the scored side-by-side (default: the pipeline's teacher / student
    before / student after); `comparison`: their table when the caller already built it. `force` is
    accepted for the stage contract: the report is always rebuilt."""
    from sentidistill.stages import evaluate

    rd = RunDir(cfg.run_dir)
    models = evaluate.pipeline_models(cfg) if models is None else models
    folders = [*DATA_AND_MODELS, *(RunLayout.eval(s) for s in models)]
    inputs = {f: m.fingerprint() for f in folders if (m := rd.manifest(f)) is not None and m.status == "complete"}
    comp = comparison if comparison is not None else evaluate.comparison(cfg, list(models))
    with rd.stage_run(REPORT, config_hash(sorted(models.items())), inputs) as manifest:
        manifest.outputs, samples = run_report.write(cfg, rd, comp)
        manifest.counts = ReportCounts(models=len(comp.models) if comp else 0, teacher_samples=samples).dump()
    return manifest
