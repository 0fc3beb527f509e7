"""Manifest counts become readable report tables: totals, pivots for per-member groups, key/value otherwise."""

from __future__ import annotations

from sentidistill.report.run_report import count_tables


def test_count_tables_pivot_flat_and_lists() -> None:
    counts = {
        "texts": 16, "kept": 27,
        "qc": {"kept": 27, "failed_check:python_list": 4},
        "per_perspective": {"overall": {"pairs": 6, "kept": 6}, "aspects": {"pairs": 5, "kept": 0, "filtered": 5}},
        "corpus": {"read": 16, "per_source": [{"source": "a", "kept": 10}, {"source": "b", "kept": 6}]},
        "per_variant": {"k": {"0": 10, "1": 5}, "io_sep": {"newline": 37}, "label_case": {"upper": 6, "title": 4}},
    }
    tables = {t["title"]: t for t in count_tables(counts)}
    assert tables["totals"]["rows"] == [["texts", 16], ["kept", 27]]
    assert tables["qc"]["rows"] == [["kept", 27], ["failed_check:python_list", 4]]
    pivot = tables["per_perspective"]
    assert pivot["columns"] == ["", "pairs", "kept", "filtered"]
    assert pivot["rows"] == [["overall", 6, 6, ""], ["aspects", 5, 0, 5]]
    assert ["per_source", "source=a, kept=10; source=b, kept=6"] in tables["corpus"]["rows"]
    # members with disjoint keys stay key/value rows instead of a mostly empty pivot
    assert tables["per_variant"]["columns"] == ["count", "value"]
    assert ["k.0", 10] in tables["per_variant"]["rows"]
