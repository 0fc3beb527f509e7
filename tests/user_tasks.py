"""A user task written the way the docs tell users to: one YAML file beside its own JSONL data."""

from __future__ import annotations

import json
from pathlib import Path

REVIEWS_YAML = """\
# A user task: own JSONL data, own labels, own layout.
name: my_reviews
category: product
kind: classify
data: {train: reviews.jsonl, test: reviews.jsonl, format: jsonl}
fields: {text: text, label: label}
gold_builder: label
labels: [bad, good]
label_map: {"0": bad, "1": good}
parser: first_token_label
metric: macro_f1
instruction: |-
  Is this product review good or bad? Answer with one label from ['bad', 'good'].
layout: {input_name: "Review:", output_name: "Verdict:", k: 2}
"""


def write_reviews_task(folder: Path, yaml_text: str = REVIEWS_YAML, name: str = "reviews") -> Path:
    """Write the task's YAML as `<name>.yaml` and 20 labelled reviews as `reviews.jsonl`; return the YAML path."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"text": f"Review {i}: {'works great, love it' if i % 2 else 'broke after a day'}", "label": i % 2}
            for i in range(20)]
    (folder / "reviews.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    path = folder / f"{name}.yaml"
    path.write_text(yaml_text)
    return path
