"""The whole-run report: `<run_dir>/report/index.html` and `report.md`, built only from artifacts.

It reads manifests, training metrics, generation samples and evaluation results from the run
directory (local or cloud), so it can be rebuilt at any time without rerunning a stage.
"""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone
from importlib import resources
from typing import Any

from sentidistill.config import PipelineConfig, dump_config
from sentidistill.evaluation.compare import Comparison
from sentidistill.layout import ICLDIST, KNOWDIST, REPORT, TRAIN_STAGES, RunLayout
from sentidistill.rundir import RunDir

SAMPLE_PERSPECTIVE_CHARS = 1200


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def training_charts(rd: RunDir) -> list[str]:
    """Loss and learning-rate curves per training stage, written as PNGs; returns report-relative paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    for stage in TRAIN_STAGES:
        rel = RunLayout.metrics(stage)
        if not rd.exists(rel):
            continue
        rows = [json.loads(line) for line in rd.read_text(rel).splitlines() if line.strip()]
        rows = [r for r in rows if "loss" in r and "step" in r]
        if not rows:
            continue
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3))
        ax1.plot([r["step"] for r in rows], [r["loss"] for r in rows], marker="o")
        ax1.set(title=f"{stage}: loss", xlabel="optimizer step", ylabel="loss")
        ax2.plot([r["step"] for r in rows], [r.get("lr", 0.0) for r in rows], color="tab:orange")
        ax2.set(title=f"{stage}: learning rate", xlabel="optimizer step")
        fig.tight_layout()
        rd.write_bytes(RunLayout.report_file(f"train_{stage}.png"), _png(fig))
        plt.close(fig)
        out.append(f"train_{stage}.png")
    return out


def _read_parquet_rows(rd: RunDir, folder: str, limit_files: int = 4) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    rows: list[dict[str, Any]] = []
    for rel in rd.list_files(folder, ".parquet")[:limit_files]:
        with rd.fs.open_input_file(rd.path(folder, rel)) as f:
            rows.extend(pq.read_table(f).to_pylist())
    return rows


def teacher_samples(rd: RunDir) -> list[dict[str, str]]:
    """One kept teacher answer per perspective, with its user prompt."""
    seen: dict[str, dict[str, str]] = {}
    for row in _read_parquet_rows(rd, RunLayout.data(KNOWDIST)):
        p = row.get("perspective") or "?"
        if p in seen:
            continue
        prompt = row.get("prompt") or ""
        if row.get("messages"):
            msgs = json.loads(row["messages"])
            prompt = next((m["content"] for m in reversed(msgs) if m.get("role") == "user"), "")
        seen[p] = {"perspective": p, "prompt": prompt[:SAMPLE_PERSPECTIVE_CHARS],
                   "response": (row.get("response") or "")[:SAMPLE_PERSPECTIVE_CHARS]}
    return [seen[k] for k in sorted(seen)]


def student_samples(rd: RunDir, slug: str = "student-after", per_task: int = 2) -> list[dict[str, Any]]:
    """A few per-item predictions of the final student, per task."""
    rel = f"{RunLayout.eval(slug)}/predictions.jsonl"
    if not rd.exists(rel):
        return []
    counts: dict[str, int] = {}
    out = []
    for line in rd.read_text(rel).splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        task = item.get("task", "?")
        if counts.get(task, 0) >= per_task:
            continue
        counts[task] = counts.get(task, 0) + 1
        pred = item.get("parsed", item.get("prediction", item.get("raw_output")))
        out.append({"task": task, "gold": _short(item.get("gold")), "pred": _short(pred),
                    "correct": item.get("correct")})
    return out


def _short(value: Any, n: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= n else text[: n - 1] + "…"


def stage_rows(rd: RunDir) -> list[dict[str, Any]]:
    return [{"stage": folder, "status": m.status, "seconds": "" if m.seconds is None else m.seconds,
             "finished": m.finished_at or ""} for folder, m in RunLayout(rd).stage_states() if folder != REPORT]


def data_counts(rd: RunDir) -> list[dict[str, Any]]:
    """Counts of the generation stages as small tables (QC rejections per reason included)."""
    blocks = []
    for stage in (KNOWDIST, ICLDIST):
        m = rd.manifest(stage)
        if m is not None:
            blocks.append({"stage": stage, "tables": count_tables(m.counts)})
    return blocks


def count_tables(counts: dict[str, Any]) -> list[dict[str, Any]]:
    """Totals first, then one table per nested group: a pivot (one row per member) when the members
    share their keys (per task, per perspective), else key/value rows (QC reasons, variants)."""
    scalars = [[k, _cell(v)] for k, v in counts.items() if not isinstance(v, dict)]
    tables = [{"title": "totals", "columns": ["count", "value"], "rows": scalars}] if scalars else []
    for key, value in counts.items():
        if not isinstance(value, dict):
            continue
        members = {k: dict(_flatten(v)) for k, v in value.items() if isinstance(v, dict)}
        cols = list(dict.fromkeys(c for m in members.values() for c in m))
        filled = sum(len(m) for m in members.values()) / max(1, len(members) * len(cols))
        if members and len(members) == len(value) and len(cols) <= 20 and filled >= 0.5:
            rows = [[k, *(_cell(m.get(c, "")) for c in cols)] for k, m in members.items()]
            tables.append({"title": key, "columns": ["", *cols], "rows": rows})
        else:
            tables.append({"title": key, "columns": ["count", "value"],
                           "rows": [[k, _cell(v)] for k, v in _flatten(value)]})
    return tables


def _cell(value: Any) -> Any:
    """Lists of records (e.g. per-source corpus counts) as readable text rather than Python reprs."""
    if isinstance(value, list):
        return "; ".join(", ".join(f"{k}={v}" for k, v in x.items()) if isinstance(x, dict) else str(x)
                         for x in value)
    return value


def _flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.extend(_flatten(v, key + "."))
        else:
            out.append((key, v))
    return out


def _markdown(ctx: dict[str, Any]) -> str:
    lines = ["# SentiDistill run report", "", f"Run directory `{ctx['run_dir']}`, generated {ctx['generated_at']}.",
             "", "## Stages", "", "| stage | status | seconds |", "|---|---|---|"]
    lines += [f"| {s['stage']} | {s['status']} | {s['seconds']} |" for s in ctx["stages"]]
    lines += ["", "## SentiBench", "", ctx["sentibench_md"] or "_No evaluation results yet._", ""]
    for block in ctx["data_counts"]:
        lines += [f"## Data: {block['stage']}", ""]
        for t in block["tables"]:
            lines += [f"### {t['title']}", "", "| " + " | ".join(t["columns"]) + " |",
                      "|" + "---|" * len(t["columns"])]
            lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in t["rows"]]
            lines.append("")
    lines += ["## Training", ""] + [f"![training curve]({img})" for img in ctx["training_charts"]]
    lines += ["", "## Sample teacher answers", ""]
    for s in ctx["teacher_samples"]:
        lines += [f"### {s['perspective']}", "", "```", s["response"], "```", ""]
    return "\n".join(lines) + "\n"


def write(cfg: PipelineConfig, rd: RunDir, comp: Comparison | None) -> tuple[list[str], int]:
    """Write report/index.html and report/report.md from whatever the run directory holds now and the
    SentiBench comparison (`stages.evaluate.comparison`); returns (report-relative outputs, teacher samples)."""
    from jinja2 import Environment, select_autoescape

    charts = [f"../{RunLayout.EVAL_CHART}"] if comp else []
    ctx = {
        "run_dir": rd.uri(), "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "stages": stage_rows(rd), "data_counts": data_counts(rd), "training_charts": training_charts(rd),
        "teacher_samples": teacher_samples(rd), "student_samples": student_samples(rd),
        "config_yaml": dump_config(cfg),
        "sentibench": {**(comp.as_dict() if comp else {"rows": []}), "charts": charts},
        "sentibench_md": comp.markdown() if comp else "",
    }
    env = Environment(autoescape=select_autoescape(["html", "j2"]))
    template = env.from_string(
        resources.files("sentidistill.report").joinpath("templates/index.html.j2").read_text("utf-8"))
    rd.write_text(RunLayout.REPORT_HTML, template.render(**ctx))
    rd.write_text(RunLayout.REPORT_MD, _markdown(ctx))
    return ["index.html", "report.md", *ctx["training_charts"]], len(ctx["teacher_samples"])
