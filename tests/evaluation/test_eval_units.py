"""Evaluation pieces without Ray: model labels, prompt parts, part keys, the scoring UDF on the tiny model,
argmax parsing, hand-computed aggregates, the comparison report and CLI argument errors."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from sentidistill.cli import app
from sentidistill.config import EngineConfig, PipelineConfig, load_config
from sentidistill.engines import GenerationRequest
from sentidistill.engines.base import render_messages
from sentidistill.errors import ConfigError
from sentidistill.evaluation.aggregate import metrics_markdown, model_metrics
from sentidistill.evaluation.scoring import item_scores
from sentidistill.evaluation.items import (
    Part, Protocol, TaskInputs, batch_order, candidates, check_label_tokens, measure, part_items, part_key,
)
from sentidistill.evaluation.udf import EvalUDF
from sentidistill.cli.tables import print_comparison
from sentidistill.evaluation import compare
from sentidistill.report.eval_report import write_eval_report
from sentidistill.rundir import RunDir
from sentidistill.stages.evaluate import parse_models, run, slugify
from sentidistill.tasks import TaskRegistry, as_messages, build_prompt, load_registry, sample_demos

PROTO = Protocol(k=None, limit=3, chat=False, max_new_tokens=150, max_model_len=2048)


@pytest.fixture(scope="module")
def registry(shared_data: Path) -> TaskRegistry:
    return load_registry(data_dir=str(shared_data))


def inputs_for(registry: TaskRegistry, name: str, limit: int = 3) -> TaskInputs:
    return TaskInputs(registry.get(name), registry.load_split(name, "train"), registry.load_split(name, "test", limit))


# -- model labels -------------------------------------------------------------------------------
def test_slugs_and_model_labels() -> None:
    assert slugify("runs/local/train/icldist/model") == "icldist-model"
    assert slugify("HuggingFaceTB/SmolLM2-135M-Instruct") == "smollm2-135m-instruct"
    assert slugify("s3://bucket/exp/Student_v2/") == "student_v2"
    assert parse_models(["base=some/folder", "other/model"]) == {"base": "some/folder", "other-model": "other/model"}
    assert parse_models({"teacher": "t"}) == {"teacher": "t"}
    with pytest.raises(ConfigError, match="share the folder eval/a-model"):
        parse_models(["x/a/model", "y/a/model"])
    with pytest.raises(ConfigError, match="model label 'Bad Label'"):
        parse_models({"Bad Label": "x"})


# -- parts and prompts --------------------------------------------------------------------------
def test_part_items_are_the_reference_prompts_in_test_order(registry: TaskRegistry) -> None:
    inp = inputs_for(registry, "pstance")
    part = Part(inp.task, 52, "k")
    items = part_items(part, inp, PROTO)
    demos = sample_demos(inp.task, inp.train, inp.test, 52)
    assert [it["prompt"] for it in items] == [build_prompt(inp.task, d, ex) for d, ex in zip(demos, inp.test)]
    assert [it["idx"] for it in items] == [0, 1, 2] and {it["part"] for it in items} == {"pstance/seed-52"}
    assert json.loads(items[0]["candidates"]) == [" against", " favor"] and items[0]["max_new_tokens"] == 1
    assert items[0]["prompt"].endswith("\nLabel:")
    extract = part_items(Part(registry.get("atsa_rest16"), 42, "k"), inputs_for(registry, "atsa_rest16"), PROTO)
    assert extract[0]["candidates"] is None and extract[0]["max_new_tokens"] == 150 and extract[0]["kind"] == "extract"
    k2 = part_items(part, inp, Protocol(k=2, limit=3, chat=False, max_new_tokens=150, max_model_len=2048))
    assert k2[0]["prompt"].count("\nLabel: ") == 2


def test_batch_order_is_part_major_longest_first(registry: TaskRegistry) -> None:
    a, b = Part(registry.get("sst2"), 42, "k"), Part(registry.get("imdb"), 42, "k")
    items = part_items(b, inputs_for(registry, "imdb"), PROTO) + part_items(a, inputs_for(registry, "sst2"), PROTO)
    measure(items, None)
    ordered = batch_order(items, [a, b])
    assert [it["part"] for it in ordered] == ["sst2/seed-42"] * 3 + ["imdb/seed-42"] * 3
    for name in ("sst2/seed-42", "imdb/seed-42"):
        lengths = [it["length"] for it in ordered if it["part"] == name]
        assert lengths == sorted(lengths, reverse=True) and lengths[0] == max(len(it["prompt"]) for it in items
                                                                             if it["part"] == name)


def test_part_key_tracks_what_changes_predictions(registry: TaskRegistry) -> None:
    imdb, atsa = registry.get("imdb"), registry.get("atsa_rest16")
    eng, model, data = {"kind": "hf", "dtype": "auto"}, {"model": "fp1"}, {"test": "d1"}
    base = part_key(imdb, 42, PROTO, eng, model, data)
    assert base == part_key(imdb, 42, PROTO, eng, model, data)
    longer = Protocol(k=None, limit=3, chat=False, max_new_tokens=64, max_model_len=2048)
    assert part_key(imdb, 42, longer, eng, model, data) == base  # generation budget: extraction only
    assert part_key(atsa, 42, longer, eng, model, data) != part_key(atsa, 42, PROTO, eng, model, data)
    for other in (part_key(imdb, 52, PROTO, eng, model, data), part_key(imdb, 42, PROTO, eng, {"model": "fp2"}, data),
                  part_key(imdb, 42, PROTO, {**eng, "dtype": "bfloat16"}, model, data),
                  part_key(imdb, 42, PROTO, eng, model, {"test": "d2"}),
                  part_key(imdb, 42, Protocol(k=None, limit=None, chat=False, max_new_tokens=150,
                                              max_model_len=2048), eng, model, data)):
        assert other != base


# -- scoring ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def udf(tiny_model: Path):
    u = EvalUDF(EngineConfig(kind="hf", model=str(tiny_model), resources={"batch_size": 4}, max_model_len=1024))
    yield u
    u.close()


def test_udf_scores_labels_and_generates_in_one_mixed_batch(udf, registry: TaskRegistry) -> None:
    rows = (part_items(Part(registry.get("emotion20"), 42, "k"), inputs_for(registry, "emotion20", 2), PROTO)
            + part_items(Part(registry.get("atsa_rest16"), 42, "k"), inputs_for(registry, "atsa_rest16", 1),
                         Protocol(k=None, limit=1, chat=False, max_new_tokens=6, max_model_len=1024))
            + part_items(Part(registry.get("sst2"), 42, "k"), inputs_for(registry, "sst2", 1), PROTO))
    batch = {col: [r[col] for r in rows] for col in rows[0]}
    out = udf(batch)
    assert out["part"] == [r["part"] for r in rows] and out["idx"] == [r["idx"] for r in rows]
    assert set(out["dtype"]) == {"float32"}
    eng = udf.engine
    for i, r in enumerate(rows):
        if r["kind"] == "classify":
            expect = eng.score_next_token([r["prompt"]], json.loads(r["candidates"]))[0]
            assert json.loads(out["scores"][i]) == pytest.approx(expect, abs=1e-4)
            assert out["finish_reason"][i] == "scored" and out["output"][i] is None
        else:
            ref = eng.generate([GenerationRequest(prompt=r["prompt"], max_new_tokens=6)])[0]
            assert out["output"][i] == ref.text and out["completion_tokens"][i] == ref.completion_tokens
            assert out["scores"][i] is None
    with pytest.raises(ValueError, match=r"required input columns \['candidates'\]"):
        udf({k: v for k, v in batch.items() if k != "candidates"})


def test_chat_variant_scores_bare_labels_after_the_chat_template(udf, registry: TaskRegistry) -> None:
    chat = Protocol(k=None, limit=1, chat=True, max_new_tokens=8, max_model_len=1024)
    row = part_items(Part(registry.get("sst2"), 42, "k"), inputs_for(registry, "sst2", 1), chat)[0]
    assert json.loads(row["candidates"]) == ["negative", "positive"]
    out = udf({col: [row[col]] for col in row})
    templated = render_messages(udf.engine.tokenizer, as_messages(row["prompt"]))
    assert templated != row["prompt"] and row["prompt"] in templated
    assert json.loads(out["scores"][0]) == pytest.approx(
        udf.engine.score_next_token([templated], ["negative", "positive"])[0], abs=1e-4)


def test_label_token_check_uses_the_models_tokenizer(udf, registry: TaskRegistry) -> None:
    check_label_tokens([registry.get(n) for n in ("intimacy", "emotion20", "atsa_rest16")], udf.engine.tokenizer, False)
    assert candidates(registry.get("intimacy"), True) == ["not intimate", "moderately intimate", "highly intimate"]


def test_argmax_parsing_ties_and_missing_scores(registry: TaskRegistry) -> None:
    twitter = registry.get("twitter17")
    ex = registry.load_split("twitter17", "test")[0]

    def label(scores: list[float | None], mode: str = "tolerant", processed: list[float] | None = None) -> object:
        out = {"scores": json.dumps(scores), "processed_scores": processed and json.dumps(processed)}
        return item_scores(twitter, ex, out)[mode].parsed  # type: ignore[index]

    assert label([0.1, 2.0, 1.0]) == "positive" and label([3.0, 1.0, 3.0]) == "negative"  # first label wins a tie
    assert label([None, None, -1.0]) == "neutral" and label([None, None, None]) is None
    # reference mode reads the logits after the model's processors; tolerant the raw ones
    assert label([0.1, 2.0, 1.0], "reference", [0.1, 0.5, 1.0]) == "neutral"
    assert label([0.1, 2.0, 1.0], "tolerant", [0.1, 0.5, 1.0]) == "positive"
    assert item_scores(twitter, ex, {"finish_reason": "too_long", "scores": None})["reference"].failed
    asqp = registry.get("asqp_rest16")
    text = " [('food quality', 'sushi', 'good', 'positive'), ('food quality', 'x', 'y', 'meh')]\nSentence: next"
    both = item_scores(asqp, registry.load_split("asqp_rest16", "test")[0], {"output": text})
    assert both["tolerant"].prediction.value == [("food quality", "sushi", "good", "positive")]
    assert both["tolerant"].prediction.dropped == 1
    assert both["reference"].parsed == [["food quality", "sushi", "good", "positive"], ["food quality", "x", "y", "meh"]]


# -- aggregation and report ---------------------------------------------------------------------
def part_file(task: str, seed: int, score: float, n: int = 4, **extra: float) -> dict[str, Any]:
    return {"task": task, "seed": seed, "key": "k", "n": n, "dtype": "float32", "prompts_too_long": 0,
            "metrics": {"score": score, "n": float(n), "parse_failure_rate": 0.0, **extra}, "predictions": []}


def fake_metrics(registry: TaskRegistry, slug: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    names = list(dict.fromkeys(r["task"] for r in results))
    meta = {"model": slug, "model_ref": f"refs/{slug}", "engine": "hf", "engine_name": slug, "dtype": "auto",
            "k": None, "k_label": "per task", "seeds": [42, 52], "limit": 4, "prompt_variant": "raw"}
    return model_metrics(meta, results, [registry.get(n) for n in names], registry.benchmark())


def test_seed_means_categories_and_sentibench_by_hand(registry: TaskRegistry) -> None:
    m = fake_metrics(registry, "a", [
        part_file("imdb", 42, 0.5, accuracy=0.5), part_file("imdb", 52, 0.7, accuracy=0.75),
        part_file("sst2", 42, 0.9), part_file("sst2", 52, 0.9),
        part_file("atsa_rest16", 42, 0.2), part_file("atsa_rest16", 52, 0.4)])
    imdb = m["tasks"]["imdb"]
    assert imdb["mean"] == pytest.approx(0.6) and imdb["std"] == pytest.approx(0.1) and imdb["n_seeds"] == 2
    assert imdb["means"]["accuracy"] == pytest.approx(0.625) and set(imdb["seeds"]) == {"42", "52"}
    assert m["categories"] == pytest.approx({"basic": 75.0, "fine-grained": 30.0})
    assert m["sentibench"] == {"score": pytest.approx(60.0), "complete": False, "tasks_scored": 3, "tasks_total": 12}
    assert m["items_per_task"] == {"imdb": 4, "sst2": 4, "atsa_rest16": 4} and m["dtype"] == "float32"
    md = metrics_markdown(m)
    assert "| imdb | basic | macro_f1 | 60.0 | - | 10.0 | 50.0 / 70.0 | 62.5 | - |" in md
    assert "| **SentiBench** (3 of 12 tasks) | | | 60.0 | - |" in md


def test_comparison_rows_markdown_chart_and_rich_table(tmp_path: Path, registry: TaskRegistry) -> None:
    """Without bootstrap replicates (metrics from before intervals existed) the table still lines up."""
    rd = RunDir(str(tmp_path / "run"))
    rd.write_json("eval/a/metrics.json", fake_metrics(registry, "a", [part_file("imdb", 42, 0.5),
                                                                      part_file("atsa_rest16", 42, 0.25)]))
    rd.write_json("eval/b/metrics.json", fake_metrics(registry, "b", [part_file("imdb", 42, 0.75)]))
    comp = compare.build(rd, ["a", "b", "never-run"], reference="a")
    names = [r.name for r in comp.rows]
    assert comp.models == ["a", "b", "never-run"] and comp.reference == "a"
    assert names == ["imdb", "atsa_rest16", "basic", "fine-grained", "SentiBench"]  # only what was scored
    rows = {r.name: comp.texts(r) for r in comp.rows}
    assert comp.header() == ["task", "a", "b", "Δ b", "never-run", "Δ never-run"]
    assert rows["imdb"] == ["50.0", "75.0", "n/a (no bootstrap)", "-", "-"]
    assert rows["atsa_rest16"] == ["25.0", "-", "-", "-", "-"]
    assert rows["SentiBench"] == ["37.5 (2/12)", "75.0 (1/12)", "n/a (other tasks)", "-", "-"]
    assert "| imdb | 50.0 | 75.0 | n/a (no bootstrap) | - | - |" in comp.markdown()
    assert any("never-run: not scored yet" in n for n in comp.notes)

    written = write_eval_report(rd, compare.build(rd, ["a", "b"], reference="a"))
    assert written == ["eval/summary.md", "eval/comparison.png"]
    assert rd.read_bytes("eval/comparison.png")[:8] == b"\x89PNG\r\n\x1a\n"
    summary = rd.read_text("eval/summary.md")
    assert "`refs/a`" in summary and "| **SentiBench** | 37.5 (2/12) | 75.0 (1/12) | n/a (other tasks) |" in summary

    console = Console(file=io.StringIO(), width=160)
    print_comparison(console, compare.build(rd, ["a", "b"]))
    text = console.file.getvalue()
    assert "imdb" in text and "37.5 (2/12)" in text and "fine-grained" in text and "multifaceted" not in text
    assert "reference model 'student-before'" in text and "Only 4 test items per task" in text
    assert "Seeds 42, 52: the SentiBench protocol averages seeds 42, 52 and 62" in text


# -- errors -------------------------------------------------------------------------------------
def test_config_and_cli_errors_name_the_field(tmp_path: Path) -> None:
    cfg = PipelineConfig.model_validate({"run_dir": str(tmp_path / "run"), "train": {"model": {"student": "x"}}})
    with pytest.raises(ConfigError, match="no model to score"):
        run(cfg)
    cfg.eval.tasks = ["imbd"]
    with pytest.raises(ConfigError, match="eval.tasks: Unknown task 'imbd'. Did you mean 'imdb'"):
        run(cfg, ["some/model"])
    config = tmp_path / "c.yaml"
    config.write_text("train: {model: {student: x}}\n")
    with pytest.raises(ConfigError, match="eval.seeds lists \\[42\\] more than once"):
        load_config(config, ["eval.seeds=[42,42]"])
    result = CliRunner().invoke(app, ["eval", str(config), "--endpoint", "http://127.0.0.1:9/v1"])
    assert isinstance(result.exception, ConfigError) and "--endpoint needs --model" in str(result.exception)

