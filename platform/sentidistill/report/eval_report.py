"""SentiBench results side by side: markdown table, PNG chart and rich table, from `eval/<slug>/metrics.json` only.

Rows are always the 12 SentiBench tasks, then their 3 categories, then the SentiBench average
(x100, one decimal, '-' where a model has no score), so tables of different runs line up; tasks
and categories from user task files follow the SentiBench ones. An average over fewer than the
12 tasks says so: '41.3 (2/12)'.
"""

from __future__ import annotations

import io
import math
from typing import Any

from sentidistill.rundir import RunDir
from sentidistill.tasks import load_registry

SUMMARY_MD = "eval/summary.md"
COMPARISON_PNG = "eval/comparison.png"
TOTAL = "SentiBench"


def load_metrics(rd: RunDir, slugs: list[str]) -> dict[str, dict[str, Any] | None]:
    """slug -> its metrics.json (None when the model has not been scored yet)."""
    return {s: rd.read_json(f"eval/{s}/metrics.json") if rd.exists(f"eval/{s}/metrics.json") else None
            for s in slugs}


def _layout(metrics: dict[str, dict[str, Any] | None]) -> tuple[list[str], list[str]]:
    """(task names, category names): SentiBench's in registry order, then any others found."""
    bench = load_registry().benchmark()
    tasks, cats = [t.name for t in bench], list(dict.fromkeys(t.category for t in bench))
    for m in metrics.values():
        for name, t in (m or {}).get("tasks", {}).items():
            tasks += [name] if name not in tasks else []
            cats += [t["category"]] if t["category"] not in cats else []
    return tasks, cats


def _values(m: dict[str, Any] | None, kind: str, name: str) -> tuple[float | None, float | None, str]:
    """(value x100, std x100, formatted) of one cell."""
    if m is None:
        return None, None, "-"
    if kind == "task":
        t = m["tasks"].get(name)
        return (None, None, "-") if t is None else (100 * t["mean"], 100 * t["std"], f"{100 * t['mean']:.1f}")
    if kind == "category":
        v = m["categories"].get(name)
        return (None, None, "-") if v is None else (v, None, f"{v:.1f}")
    sb = m.get("sentibench")
    if not sb:
        return None, None, "-"
    note = "" if sb["complete"] else f" ({sb['tasks_scored']}/{sb['tasks_total']})"
    return sb["score"], None, f"{sb['score']:.1f}{note}"


def _table(metrics: dict[str, dict[str, Any] | None]) -> list[dict[str, Any]]:
    tasks, cats = _layout(metrics)
    rows = [("task", n) for n in tasks] + [("category", c) for c in cats] + [("total", TOTAL)]
    out = []
    for kind, name in rows:
        cells = [_values(m, kind, name) for m in metrics.values()]
        out.append({"name": name, "kind": kind, "values": [c[2] for c in cells],
                    "numbers": [c[0] for c in cells], "std": [c[1] for c in cells]})
    return out


def _markdown(slugs: list[str], rows: list[dict[str, Any]]) -> str:
    lines = ["| task | " + " | ".join(slugs) + " |", "|---|" + "---:|" * len(slugs)]
    for r in rows:
        name = r["name"] if r["kind"] == "task" else f"**{r['name']}**"
        lines.append(f"| {name} | " + " | ".join(r["values"]) + " |")
    return "\n".join(lines) + "\n"


def comparison(rd: RunDir, slugs: list[str]) -> dict[str, Any]:
    """{"models": slugs, "rows": [{"name", "values": [str per model]}...], "markdown": str}: tasks, categories,
    SentiBench; each row also carries `kind` ('task' | 'category' | 'total')."""
    metrics = load_metrics(rd, slugs)
    rows = _table(metrics)
    public = [{"name": r["name"], "kind": r["kind"], "values": r["values"]} for r in rows]
    return {"models": list(slugs), "rows": public, "markdown": _markdown(list(slugs), rows)}


def _png(metrics: dict[str, dict[str, Any] | None]) -> bytes:
    """Grouped bars, one colour per model: per task (with the spread over seeds), per category + SentiBench."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _table(metrics)
    tasks = [r for r in rows if r["kind"] == "task"]
    groups = [r for r in rows if r["kind"] != "task"]
    slugs = list(metrics)
    width = 0.8 / max(1, len(slugs))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(4 + 0.9 * len(tasks), 4.2),
                                   gridspec_kw={"width_ratios": [max(1, len(tasks)), max(1, len(groups))]})
    for ax, block, title in ((ax1, tasks, "per task"), (ax2, groups, "per category")):
        for j, slug in enumerate(slugs):
            xs = [i + (j - (len(slugs) - 1) / 2) * width for i in range(len(block))]
            ys = [math.nan if r["numbers"][j] is None else r["numbers"][j] for r in block]
            errs = [0.0 if r["std"][j] is None else r["std"][j] for r in block]
            ax.bar(xs, ys, width, yerr=errs if ax is ax1 else None, capsize=2, label=slug, color=f"C{j}")
        ax.set_xticks(range(len(block)), [r["name"] for r in block], rotation=45, ha="right")
        ax.set(title=f"SentiBench {title}", ylim=(0, 100))
        ax.grid(axis="y", alpha=0.3)
    ax1.set_ylabel("score x100 (mean over seeds; bars: std)")
    ax2.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def model_chart(metrics: dict[str, Any]) -> bytes:
    """One model's scores chart (PNG bytes), written beside its metrics.json."""
    return _png({metrics["model"]: metrics})


def write_eval_report(rd: RunDir, slugs: list[str]) -> list[str]:
    """Write eval/summary.md and eval/comparison.png for these models; returns the run-dir-relative paths."""
    metrics = load_metrics(rd, slugs)
    header = ["# SentiBench comparison", ""]
    for slug, m in metrics.items():
        if m is None:
            header.append(f"- **{slug}**: not scored yet")
            continue
        header.append(f"- **{slug}**: `{m['model_ref']}`, engine {m['engine']}, dtype {m['dtype']}, k {m['k_label']}, "
                      f"seeds {', '.join(map(str, m['seeds']))}, prompt {m['prompt_variant']}, "
                      f"items per task {m['limit'] or 'all'}")
    body = _markdown(slugs, _table(metrics))
    rd.write_text(SUMMARY_MD, "\n".join(header) + "\n\nScores x100, mean over seeds.\n\n" + body)
    rd.write_bytes(COMPARISON_PNG, _png(metrics))
    return [SUMMARY_MD, COMPARISON_PNG]


def print_eval_table(console: Any, rd: RunDir, slugs: list[str]) -> None:
    """The comparison as a rich table: tasks, then category means, then SentiBench."""
    from rich.table import Table

    comp = comparison(rd, slugs)
    table = Table(title="SentiBench x100", caption="mean over seeds", header_style="bold")
    table.add_column("task")
    for slug in comp["models"]:
        table.add_column(slug, justify="right")
    rows = comp["rows"]
    for i, r in enumerate(rows):
        last_of_kind = i + 1 == len(rows) or rows[i + 1]["kind"] != r["kind"]
        style = "bold" if r["kind"] == "total" else None
        table.add_row(r["name"], *r["values"], style=style, end_section=last_of_kind)
    console.print(table)
