"""Helpers for the ICLDist tests: two small user tasks (a classifier and an extractor) as YAML + JSONL,
registered beside the 12 shipped SentiBench tasks (whose test splits the leakage guard reads)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sentidistill.config import PipelineConfig

MINI_YAML = """\
name: mini
category: basic
kind: classify
data: {train: mini_train.jsonl, test: mini_test.jsonl, format: jsonl}
fields: {text: text, label: label}
gold_builder: label
labels: [negative, positive]
parser: first_token_label
metric: macro_f1
instruction: |-
  Please perform Sentiment Analysis task. Given the sentence, assign a sentiment polarity label from ['negative', 'positive']. Return label only without any other text.
paraphrases:
  - |-
    Label the sentiment of the sentence with one of ['negative', 'positive'].
  - |-
    Is the opinion negative or positive? Answer with a label from ['negative', 'positive'].
  - |-
    Sentiment: choose from ['negative', 'positive'] and return the label only.
"""

MINI_ABSA_YAML = """\
name: mini_absa
category: fine-grained
kind: extract
data: {train: absa_train.jsonl, test: absa_test.jsonl, format: jsonl}
fields: {text: text, label: null, tuples: pairs}
gold_builder: records
tuple_fields: [aspect, polarity]
allowed_polarities: [positive, negative, neutral]
parser: tuple_list
metric: tuple_micro_f1
instruction: |-
  Extract all (aspect term, sentiment polarity) pairs. Please return python list only.
paraphrases:
  - |-
    List every (aspect, polarity) pair of the review as a python list of tuples.
"""

DISHES = ["soup", "noodles", "curry", "salad", "bread", "steak", "tea", "cake", "rice", "fish"]
MOODS = [("delicious", "positive"), ("awful", "negative"), ("lovely", "positive"), ("bland", "negative"),
         ("superb", "positive"), ("cold", "negative")]


def mini_rows(n: int, offset: int = 0) -> list[dict[str, Any]]:
    return [{"text": f"Visit {i}: the {DISHES[i % 10]} was {MOODS[i % 6][0]}.", "label": MOODS[i % 6][1]}
            for i in range(offset, offset + n)]


def absa_rows(n: int, offset: int = 0) -> list[dict[str, Any]]:
    return [{"text": f"Night {i}: {DISHES[i % 10]} {MOODS[i % 6][0]}, {DISHES[(i + 3) % 10]} {MOODS[(i + 1) % 6][0]}.",
             "pairs": [[DISHES[i % 10], MOODS[i % 6][1]], [DISHES[(i + 3) % 10], MOODS[(i + 1) % 6][1]]]}
            for i in range(offset, offset + n)]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_tasks(folder: Path, mini_train: list[dict[str, Any]] | None = None) -> Path:
    """The two user tasks in `folder` (train rows replaceable, e.g. to plant a test sentence)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mini.yaml").write_text(MINI_YAML)
    (folder / "mini_absa.yaml").write_text(MINI_ABSA_YAML)
    write_jsonl(folder / "mini_train.jsonl", mini_train if mini_train is not None else mini_rows(40))
    write_jsonl(folder / "mini_test.jsonl", mini_rows(6, offset=1000))
    write_jsonl(folder / "absa_train.jsonl", absa_rows(30))
    write_jsonl(folder / "absa_test.jsonl", absa_rows(4, offset=1000))
    return folder



def icl_config(tiny: Any, run_dir: Path, tasks_dir: Path, shared_data: Path, *overrides: str,
               teacher: dict[str, Any] | None = None) -> PipelineConfig:
    """jobs/configs/tiny.yaml (`tiny`: the `tiny_config` fixture) building the two user tasks (SentiBench data
    from the shared folder); the teacher is a model that does not exist unless one is given."""
    return tiny.load(f"run_dir={run_dir}", f"data_dir={shared_data}", *overrides,
                     teacher=teacher or {"model": str(run_dir / "no-such-model")},
                     tasks={"extra_files": [str(tasks_dir)]},
                     icl={"tasks": ["mini", "mini_absa"], "examples_per_task": 6, "rows_per_part": 4})
