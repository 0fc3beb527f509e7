"""The ICLDist manifest counts: per task, per variant dimension, QC reasons, teacher-gold agreement.

Computed from every row in the stage folder (this run and resumed ones), so a resumed build
reports the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from sentidistill.generation.quality import KEPT
from sentidistill.icl.builder import GENERAL, Item, Pool, variant_dimensions
from sentidistill.icl.targets import GOLD_ENGINE

COLUMNS = ["id", "perspective", "qc", "meta", "engine", "prompt_tokens", "completion_tokens"]


def _f1(tp: int, n_pred: int, n_gold: int) -> float:
    """Micro-F1 with the evaluation's conventions (precision 1 with no prediction, recall 1 with no gold)."""
    precision = tp / n_pred if n_pred else 1.0
    recall = tp / n_gold if n_gold else 1.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def agreement_rates(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per task: teacher answers judged, agreeing with gold, their rate, parse failures (+ tuple F1)."""
    acc: dict[str, Counter[str]] = {}
    for row in rows:
        if row["engine"] == GOLD_ENGINE or row["perspective"] == GENERAL or not row["meta"]:
            continue
        meta = json.loads(row["meta"])
        c = acc.setdefault(row["perspective"], Counter())
        c["judged"] += 1
        c["agree"] += bool(meta["agrees"])
        c["parse_failures"] += bool(meta["parse_failed"])
        if "tp" in meta:
            c["extract"] = 1
            for key in ("tp", "n_pred", "n_gold"):
                c[key] += meta[key]
    out: dict[str, dict[str, float]] = {}
    for task, c in sorted(acc.items()):
        out[task] = {"judged": c["judged"], "agree": c["agree"], "rate": round(c["agree"] / c["judged"], 4),
                     "parse_failures": c["parse_failures"]}
        if c["extract"]:
            out[task]["tuple_f1"] = round(_f1(c["tp"], c["n_pred"], c["n_gold"]), 4)
    return out


def variant_counts(items: list[Item]) -> dict[str, dict[str, int]]:
    """How many built prompts used each value of each diversification dimension."""
    dims: dict[str, Counter[str]] = {}
    for item in items:
        for dim, value in variant_dimensions(item).items():
            dims.setdefault(dim, Counter())[value] += 1
    return {dim: dict(sorted(c.items())) for dim, c in sorted(dims.items())}


def summarise(rows: list[dict[str, Any]], items: list[Item], pools: dict[str, Pool], wanted: dict[str, int],
              stats: dict[str, Any]) -> dict[str, Any]:
    """The manifest's `counts`; `rows` are the stored rows (columns `COLUMNS`)."""
    ids = {it.id for it in items}
    rows = [r for r in rows if r["id"] in ids]
    qc = Counter(r["qc"] for r in rows)
    per_qc: dict[str, Counter[str]] = {}
    for r in rows:
        per_qc.setdefault(r["perspective"], Counter())[r["qc"]] += 1
    built = Counter(it.perspective for it in items)
    per_task: dict[str, dict[str, Any]] = {}
    for name in [*pools, *([GENERAL] if built[GENERAL] or GENERAL in wanted else [])]:
        c = per_qc.get(name, Counter())
        base = dict(pools[name].counts) if name in pools else {}
        per_task[name] = {**base, "wanted": wanted.get(name, 0), "prompts": built[name],
                          "short_pool": max(0, wanted.get(name, 0) - built[name]), "kept": c[KEPT],
                          "filtered": sum(c.values()) - c[KEPT],
                          "qc": dict(sorted(c.items()))}
    done = {r["id"] for r in rows}
    return {
        "examples": len(items), "kept": qc[KEPT], "filtered": sum(qc.values()) - qc[KEPT],
        "missing": len(ids - done), "generated_this_run": stats["generated"], "errors": stats["errors"],
        "qc": dict(sorted(qc.items())), "per_task": per_task, "per_variant": variant_counts(items),
        "agreement": agreement_rates(rows),
        "prompt_tokens": sum(r["prompt_tokens"] for r in rows),
        "completion_tokens": sum(r["completion_tokens"] for r in rows),
        "completion_tokens_per_s": stats.get("completion_tokens_per_s", 0.0),
    }
