"""Score any system's outputs (`sentidistill score`): a JSONL of raw outputs per test row -> both modes' metrics.

Lines are `{"idx": <test row index>, "output": "<raw model text after the prompt>"}` for extraction
and `{"idx": ..., "label": "<label>"}` (or `"output"`, read with the task's text parser) for
classification. The items given are scored (a subset is fine, each row at most once). Bad lines
raise `StageInputError` naming the file, line number and field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sentidistill.errors import StageInputError
from sentidistill.evaluation.scoring import item_scores, part_metrics
from sentidistill.tasks import Example, TaskSpec, build_prompt, parse_output, sample_demos
from sentidistill.tasks.reference import Scoring


@dataclass(frozen=True)
class Line:
    idx: int
    text: str
    is_label: bool


def read_lines(path: Path, task: TaskSpec, n_test: int) -> list[Line]:
    """Validated prediction lines in file order; every problem names its line and field."""
    try:
        raw_lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise StageInputError(f"predictions file {str(path)!r} cannot be read: {e}") from None
    out: list[Line] = []
    seen: dict[int, int] = {}
    for n, raw in enumerate(raw_lines, 1):
        if not raw.strip():
            continue
        where = f"{path}:{n}"
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as e:
            raise StageInputError(f"{where}: not a JSON object ({e.msg})") from None
        if not isinstance(row, dict):
            raise StageInputError(f"{where}: expected a JSON object with 'idx' and 'output', got {type(row).__name__}")
        idx = row.get("idx")
        if not isinstance(idx, int) or isinstance(idx, bool):
            raise StageInputError(f"{where}: field 'idx' must be an integer test row index (got {idx!r})")
        if not 0 <= idx < n_test:
            raise StageInputError(f"{where}: field 'idx' {idx} is outside the test split of {task.name!r} "
                                  f"(0..{n_test - 1})")
        if idx in seen:
            raise StageInputError(f"{where}: field 'idx' {idx} was already given on line {seen[idx]}")
        seen[idx] = n
        field = "label" if task.kind == "classify" and "label" in row else "output"
        if field not in row:
            wanted = "'label' or 'output'" if task.kind == "classify" else "'output'"
            raise StageInputError(f"{where}: field {wanted} is missing (the raw model text for {task.name!r})")
        if not isinstance(row[field], str):
            raise StageInputError(f"{where}: field {field!r} must be a string (got {type(row[field]).__name__})")
        out.append(Line(idx, row[field], field == "label"))
    if not out:
        raise StageInputError(f"predictions file {str(path)!r} holds no prediction lines")
    return out


def _label(task: TaskSpec, line: Line) -> str | None:
    if not line.is_label:
        return parse_output(task, line.text).value  # type: ignore[return-value]
    return next((lab for lab in task.labels if lab.lower() == line.text.strip().lower()), None)


def score_file(task: TaskSpec, train: list[Example], test: list[Example], path: Path, mode: Scoring,
               seed: int | None = None) -> dict[str, Any]:
    """Both modes' metrics of the file's predictions (the active mode's at the top level).

    With `seed`, reference extraction reads the answer as upstream does, from the rebuilt prompt
    (that seed's demonstrations) plus the output, match k of its answer regex; without, from the
    output alone. They differ only when a prompt sentence itself contains the output field name.
    """
    lines = sorted(read_lines(path, task, len(test)), key=lambda ln: ln.idx)
    examples = [test[ln.idx] for ln in lines]
    prompts = None
    if seed is not None and task.kind == "extract":
        demos = sample_demos(task, train, test, seed)
        prompts = {ln.idx: build_prompt(task, demos[ln.idx], test[ln.idx]) for ln in lines}
    per_item = []
    for ln, ex in zip(lines, examples, strict=True):
        if task.kind == "classify":
            label = _label(task, ln)
            values = [1.0 if lab == label else 0.0 for lab in task.labels] if label else None
            per_item.append(item_scores(task, ex, {"scores": values and json.dumps(values)}))
            continue
        prompt = prompts[ln.idx] if prompts is not None else None
        per_item.append(item_scores(task, ex, {"output": ln.text}, prompt, task.layout.k))
    metrics = part_metrics(task, examples, per_item, mode, 0)
    metrics.pop("prompts_too_long")
    return {"task": task.name, "scoring": mode, "items": len(lines), "test_rows": len(test), "seed": seed,
            "metrics": metrics}
