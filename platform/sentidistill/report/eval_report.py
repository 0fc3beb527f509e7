"""SentiBench results side by side as files: `eval/summary.md` and the PNG chart with intervals.

The table itself is built once by `evaluation.compare` (the CLI prints the same one); this module
only renders it: markdown under a header naming each model's settings, and grouped bars with
the bootstrap intervals as error bars.
"""

from __future__ import annotations

import io
import math

from sentidistill.evaluation.compare import Comparison, Scored, compare
from sentidistill.layout import RunLayout
from sentidistill.rundir import RunDir


def comparison_chart(comp: Comparison) -> bytes:
    """Grouped bars, one colour per model: per task, then per category and SentiBench; error bars
    are the bootstrap intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [r for r in comp.rows if r.kind == "task"]
    groups = [r for r in comp.rows if r.kind != "task"]
    slugs = comp.models
    width = 0.8 / max(1, len(slugs))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(4 + 0.9 * len(tasks) + 0.6 * len(groups), 4.2),
                                   gridspec_kw={"width_ratios": [max(1, len(tasks)), max(1, len(groups))]})
    for ax, block, title in ((ax1, tasks, "per task"), (ax2, groups, "per category")):
        for j, slug in enumerate(slugs):
            cells = [r.cells[slug] for r in block]
            xs = [i + (j - (len(slugs) - 1) / 2) * width for i in range(len(block))]
            ys = [math.nan if c.value is None else c.value for c in cells]
            lo = [0.0 if c.ci is None or c.value is None else max(0.0, c.value - c.ci[0]) for c in cells]
            hi = [0.0 if c.ci is None or c.value is None else max(0.0, c.ci[1] - c.value) for c in cells]
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=slug, color=f"C{j}",
                   error_kw={"elinewidth": 0.8})
        ax.set_xticks(range(len(block)), [r.name for r in block], rotation=45, ha="right")
        ax.set(title=f"SentiBench {title}", ylim=(0, 100))
        ax.grid(axis="y", alpha=0.3)
    ax1.set_ylabel("score x100 (mean over seeds; bars: 95% CI)")
    ax2.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def model_chart(metrics: dict) -> bytes:
    """One model's scores chart (PNG bytes), written beside its metrics.json."""
    return comparison_chart(compare({metrics["model"]: Scored(metrics, {})}, metrics["model"]))


def write_eval_report(rd: RunDir, comp: Comparison) -> list[str]:
    """Write eval/summary.md and eval/comparison.png for a comparison (`evaluation.compare.build`);
    returns the run-dir-relative paths."""
    header = ["# SentiBench comparison", ""]
    for slug in comp.models:
        rel = f"{RunLayout.eval(slug)}/metrics.json"
        if not rd.exists(rel):
            header.append(f"- **{slug}**: not scored yet")
            continue
        m = rd.read_json(rel)
        header.append(f"- **{slug}**: `{m['model_ref']}`, engine {m['engine']}, dtype {m['dtype']}, k {m['k_label']}, "
                      f"seeds {', '.join(map(str, m['seeds']))}, prompt {m['prompt_variant']}, "
                      f"items per task {m['limit'] or 'all'}")
    rd.write_text(RunLayout.EVAL_SUMMARY, "\n".join(header) + "\n\n" + comp.markdown())
    rd.write_bytes(RunLayout.EVAL_CHART, comparison_chart(comp))
    return [RunLayout.EVAL_SUMMARY, RunLayout.EVAL_CHART]
