"""Registry: user tasks by YAML alone, and clear errors naming the file and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sentidistill.config import PipelineConfig, TasksConfig
from sentidistill.errors import ConfigError, DataNotFoundError, StageInputError
from sentidistill.tasks import build_prompt, classification_candidates, load_registry, sample_demos, score
from sentidistill.tasks.splits import load_split
from user_tasks import REVIEWS_YAML, write_reviews_task

PAIRS_YAML = """\
name: my_pairs
category: product
kind: extract
data: {train: pairs.jsonl, test: pairs.jsonl, format: jsonl}
fields: {text: text, tuples: opinions, tuple_keys: [feature, sentiment]}
gold_builder: records
tuple_fields: [feature, polarity]
allowed_polarities: [positive, negative]
parser: tuple_list
metric: tuple_micro_f1
instruction: |-
  List every (feature, polarity) pair. Please return python list only.
"""


def _user_tasks(tmp_path: Path) -> Path:
    folder = write_reviews_task(tmp_path / "tasks").parent
    (folder / "pairs.yml").write_text(PAIRS_YAML)
    pairs = [{"text": f"battery {i}", "opinions": [{"feature": "battery", "sentiment": "Positive"}]} for i in range(20)]
    (folder / "pairs.jsonl").write_text("\n".join(json.dumps(r) for r in pairs))
    return folder


def test_custom_tasks_from_yaml_and_jsonl(tmp_path: Path) -> None:
    folder = _user_tasks(tmp_path)
    reg = load_registry(PipelineConfig(train={"model": {"student": "x"}}, tasks={"extra_files": [str(folder)]}))
    assert reg.names()[-2:] == ["my_pairs", "my_reviews"] and len(reg) == 14
    sentibench = [t.name for t in reg.select(None)]
    assert len(sentibench) == 12 and sentibench[0] == "imdb"
    assert "my_reviews" not in sentibench

    task = reg.get("my_reviews")
    rows = reg.load_split("my_reviews", "train")
    assert len(rows) == 20 and rows[1].gold == "good" and rows[0].gold == "bad"
    demos = sample_demos(task, rows, rows[:1], seed=42)[0]
    assert len(demos) == 2  # the task's own k
    prompt = build_prompt(task, demos, rows[0])
    assert prompt == (
        "Is this product review good or bad? Answer with one label from ['bad', 'good'].\n\n"
        f"Review: {demos[0].text}\nVerdict: {demos[0].gold}\n\nReview: {demos[1].text}\nVerdict: {demos[1].gold}\n\n"
        f"Review: {rows[0].text}\nVerdict:"
    )
    assert classification_candidates(task) == [" bad", " good"]
    assert score(task, rows, [ex.gold for ex in rows])["score"] == 1.0

    pairs = reg.get("my_pairs")
    ex = load_split(pairs, "test", limit=3)
    assert len(ex) == 3 and ex[0].gold == [("battery", "positive")]
    assert build_prompt(pairs, ex[:1], ex[1]).split("\n\n")[1] == "Sentence: battery 0\nLabel: [('battery', 'positive')]"


def test_extra_file_by_path(tmp_path: Path) -> None:
    folder = _user_tasks(tmp_path)
    reg = load_registry(TasksConfig(extra_files=[str(folder / "reviews.yaml")]))
    assert "my_reviews" in reg and "my_pairs" not in reg


def test_duplicate_name_names_both_files(tmp_path: Path) -> None:
    folder = _user_tasks(tmp_path)
    clash = tmp_path / "imdb_again.yaml"
    clash.write_text(REVIEWS_YAML.replace("name: my_reviews", "name: imdb"))
    with pytest.raises(ConfigError, match="defined twice") as e:
        load_registry(TasksConfig(extra_files=[str(folder), str(clash)]))
    assert "01_imdb.yaml" in str(e.value) and "imdb_again.yaml" in str(e.value)


def test_unknown_task_suggests_and_lists() -> None:
    reg = load_registry()
    with pytest.raises(ConfigError) as e:
        reg.select(["imbd"], field="eval.tasks")
    msg = str(e.value)
    assert msg.startswith("eval.tasks: Unknown task 'imbd'. Did you mean 'imdb'?") and "Available: imdb, yelp2" in msg


@pytest.mark.parametrize(("change", "expected"), [
    (("instruction: |-", "instructions: |-"), ["instructions: unknown key", "instruction: Field required"]),
    (("parser: first_token_label", "parser: regex_magic"), ["parser: unknown 'regex_magic'"]),
    (("metric: macro_f1", "metric: tuple_micro_f1"), ["metric: 'tuple_micro_f1' is for 'extract' tasks"]),
    (("kind: classify", "kind: sort"), ["kind: Input should be 'classify' or 'extract'"]),
    (("labels: [bad, good]", "labels: [good]"), ["labels: a classify task needs at least two labels"]),
    (("Answer with", "Towards {target}, answer with"), ["fields.target"]),
])
def test_bad_task_file_names_file_and_field(tmp_path: Path, change: tuple[str, str], expected: list[str]) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text(REVIEWS_YAML.replace(*change))
    with pytest.raises(ConfigError) as e:
        load_registry(TasksConfig(extra_files=[str(bad)]))
    assert "broken.yaml" in str(e.value)
    for part in expected:
        assert part in str(e.value)


def test_unreadable_yaml_and_missing_paths(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml.*not valid YAML"):
        load_registry(TasksConfig(extra_files=[str(bad)]))
    with pytest.raises(ConfigError, match="neither a file nor a folder"):
        load_registry(TasksConfig(extra_files=[str(tmp_path / "nope")]))


def test_bad_rows_name_file_and_row(tmp_path: Path) -> None:
    folder = _user_tasks(tmp_path)
    reg = load_registry(TasksConfig(extra_files=[str(folder)]))
    (folder / "reviews.jsonl").write_text('{"text": "ok", "label": 1}\n{"text": "meh", "label": 7}\n')
    with pytest.raises(StageInputError, match=r"reviews.jsonl: row 1 .*label '7' is not one of \['bad', 'good'\]"):
        reg.load_split("my_reviews", "test")
    (folder / "reviews.jsonl").write_text('{"text": "ok", "label": 1}\n{"text": \n')
    with pytest.raises(StageInputError, match="reviews.jsonl: line 2 is not valid JSON"):
        reg.load_split("my_reviews", "test")
    (folder / "reviews.jsonl").unlink()
    with pytest.raises(DataNotFoundError, match="data.test file 'reviews.jsonl' not found"):
        reg.load_split("my_reviews", "test")
    with pytest.raises(ConfigError, match="no 'val' split"):
        reg.load_split("my_reviews", "val")
