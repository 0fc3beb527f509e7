"""Reference scoring (`eval.scoring: reference`) pinned to the upstream scorers' own numbers.

Where the expected values come from: every table below was scored by a verbatim copy of the
reference's code (HITSZ-HLT/Sentiment-Distillation at commit 2810fc2826e8f7c2ae6a0d6dd328ab7d8979744a:
`fsa.py` `extract_labels_from_text` over the seed-42 prompt + output, then `parse_utils/{atsa,acsa,
asqp,ssa}.py` `Result_*.parse_from` + `cal_metric`, print statements removed), run outside this
repository on these exact outputs and test rows, under PYTHONHASHSEED 0-3 (same numbers). `REF`
holds its precision, recall and F1 as printed by Python (`repr`); each row's tuple is the
reference's (predicted items, hits) for that row (SSA: predicted opinions after `parse_to_origin`).
The same copy agreed with our scorer to 1e-12 on 12 noisy prediction sets over the whole test sets.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sentidistill.cli import app
from sentidistill.errors import StageInputError
from sentidistill.tasks import TaskRegistry, sample_demos
from sentidistill.tasks import reference
from sentidistill.tasks.reference import acsa, asqp, reference_parse, reference_score, scoring_mode
from sentidistill.tasks.reference.common import reference_answer

# (test row idx, raw output after the prompt, upstream (n predicted, n hits) for the row)
TABLES: dict[str, list[tuple[int, str, Any]]] = {
    'atsa_rest16': [
        (0, ' []', (0, 0)),  # no aspect, nothing predicted
        (1, " [('sushi', 'positive')]", (1, 1)),  # exact pair
        (2, " [('portions', 'Neutral')]", (1, 0)),  # polarity not lowercased: placeholder, a false positive
        (3, " ```python\n[('Green Tea creme brulee', 'positive')]\n```", (0, 0)),  # fenced multi-line answer yields nothing
        (4, " [('restaurant', 'positive', 'x')]", (1, 0)),  # wrong arity: raw list kept, counts as predicted
        (5, " [('Comparison', 'great')]", (1, 0)),  # polarity outside the set: placeholder
        (6, " Label: [('place', 'positive')]", (1, 1)),  # echoed Label: removed (ATSA only)
        (7, " [('sushi', 'positive'), ('sushi', 'positive'), ('service', 'positive')]", (3, 3)),  # duplicates counted
        (8, " [('staff', 'positive'), ('staff', 'positive')", (0, 0)),  # cut-off list: ATSA has no repair
        (9, " [('restaurant', 'positive')]\n\nSentence: next\nLabel: []", (1, 1)),  # continuation ignored
        (10, " [('Attitude', 'negative')", (0, 0)),  # cut-off list, no repair
        (11, "\n[('breakfast', 'negative')]", (1, 0)),  # leading newline skipped by the answer regex
        (12, " [('the owner', 'negative')]", (1, 0)),  # term not in the sentence (case-sensitive): placeholder
        (13, " [\n('food', 'positive')\n]", (0, 0)),  # list over several lines yields nothing
        (14, " [[('breakfast food', 'positive')]]", (1, 0)),  # nested list: last element taken
        (15, " ['meal', 'positive']", (1, 1)),  # bare pair wrapped
        (16, " [('wait', 'negative'), 'oops']", (2, 0)),  # unsplittable string: whole raw list kept
        (17, " [('staff', 'positive'), ('staff', 'positive'), ('Staff', 'positive')]", (3, 2)),  # duplicates + placeholder
        (18, " I think [('food', 'positive')]", (0, 0)),  # prose before the list: nothing
    ],
    'acsa_rest16': [
        (0, " [('food quality', 'positive')]", (1, 1)),  # exact pair
        (1, " [('food quality', 'Positive')]", (1, 0)),  # polarity not lowercased: placeholder
        (2, " ```python\n[('food style_options', 'neutral')]\n```", (0, 0)),  # fenced multi-line answer yields nothing
        (3, " [('food quality', 'positive'), ('food quality', 'positive')]", (2, 2)),  # duplicates counted
        (4, " Label: [('food quality', 'positive')]", (1, 1)),  # echoed Label: removed (ACSA)
        (5, " [('restaurant general', 'positive'), ('restaurant general', 'positive'), ('food quality'", (1, 1)),  # repair de-duplicates
        (6, " [('restaurant general', 'positive', 'x')]", (1, 0)),  # wrong arity: raw list kept
        (7, " [('food quality', 'positive'), ('service general', 'great')]", (2, 1)),  # invalid polarity: placeholder
        (8, " ('service general', 'positive')", (1, 1)),  # bare pair wrapped
        (9, " [('restaurant general', 'positive')]\nSentence: x", (1, 1)),  # continuation ignored
        (10, " [\n('service general', 'negative')\n]", (0, 0)),  # multi-line list: repair of '[' gives nothing
        (11, " [('service general', 'negative'), ('service general', 'negative'), ('food quality', 'negative'), ('ambience general', 'negative'), ('food quality'", (3, 1)),  # repair keeps 3 distinct
        (12, ' service general - negative', (0, 0)),  # no list: nothing
        (13, " ['food quality - positive']", (1, 1)),  # string item split on '-'
        (14, " [('food quality', 'positive'), ('food prices', 'negative'), ('service general', 'positive'), ('ambience general', 'neutral'), ('drinks", (3, 0)),  # repair of 4 distinct wrong pairs keeps 3 (any 3: same score)
        (15, " [('Food Quality', 'positive')]", (1, 0)),  # category not lowercased or checked
        (16, ' []', (0, 0)),  # empty list
        (17, " [('service general', 'positive'), ('service general', 'negative')]", (2, 1)),  # one hit one miss
    ],
    'asqp_rest16': [
        (0, " [('service general', 'service', 'never served again', 'negative')]", (1, 1)),  # exact quad
        (1, " [('ambience general', 'ambiance', 'peaceful', 'Positive')]", (1, 0)),  # polarity neither lowercased nor checked
        (2, " ```python\n[('restaurant general', 'NULL', 'hidden', 'positive')]\n```", (0, 0)),  # fenced multi-line answer yields nothing
        (3, " Label: [('restaurant general', 'NULL', 'impressed', 'positive')]", (0, 0)),  # echoed Label: not skipped: nothing
        (4, " [('food quality', 'sushi', 'great', 'positive'), ('food quality', 'sushi', 'great', 'positive'), ('service general', 'service', 'better', 'positive')]", (2, 2)),  # duplicates removed (set)
        (5, " [('food quality', 'menu items', 'hit', 'great')]", (1, 0)),  # polarity outside the set kept
        (6, " [('ambience general', 'deck', 'best', 'positive'), ('service general', 'NULL', 'bring you a blanket')]", (1, 1)),  # wrong arity dropped
        (7, ' [(\'restaurant general\', "Ray \'s", \'go back\', \'positive\'), (\'restaurant general\', "Ray \'s", \'go back\', \'positive\'), (\'restaurant general\', \'place\', \'go back\', \'positive\'), (\'restaurant', (2, 1)),  # repair keeps distinct tuples
        (8, ' [(\'restaurant general\', \'NULL\', "Ca n\'t Go Wrong", \'positive\')]\n\nSentence: x', (1, 1)),  # continuation ignored
        (9, " [(' food quality ', ' menu ', ' excellent ', ' positive ')]", (1, 1)),  # predicted fields stripped
        (10, ' (\'food style_options\', "pepperoni \'s", \'thick\', \'positive\')', (0, 0)),  # bare tuple: set of strings, nothing of arity 4
        (11, " [('food quality', 'Green tea creme brulee', 'better', 'positive')] Sentence:", (1, 1)),  # stops before Sentence:
        (12, " [\n('ambience general', 'NULL', 'fine', 'positive')\n]", (0, 0)),  # multi-line list yields nothing
        (13, " [('ambience general', 'atmosphere', 'nice', 'positive')]", (1, 0)),  # case-sensitive aspect
        (14, " [('food quality', 'NULL', 'fabulous', 'positive'), ('service general', 'NULL', 'fabulous', 'positive'), ('ambience general', 'NULL', 'fabulous', 'positive'), ('drinks quality', 'NULL', 'fabulous', 'positive'), ('food", (3, 0)),  # repair of 4 distinct wrong quads keeps 3
        (15, " [['restaurant general', 'PLACE', 'AVOID', 'negative']]", (0, 0)),  # list of lists: unhashable, nothing
        (16, " [('food quality', 'pizza', 'better', 'negative')]\n", (1, 1)),  # exact quad
        (17, " [('service general', 'service', 'exceptional', 'positive'), ('service general', 'waiters', 'friendly')]", (1, 1)),  # one valid, one wrong arity
        (49, " [('food prices', 'plate', '100 dollar', 'negative'), ('food quality', 'exotic fish', 'NOT ONE was eatable', 'negative'), ('food style_options', 'exotic fish', 'Fancy', 'negative')]", (3, 2)),  # gold ' 100 dollar' is not stripped
        (167, " [('service general', 'NULL', 'flown off in a rage', 'negative')]", (1, 0)),  # gold 'flown off in a rage ' is not stripped
    ],
    'ssa_opener': [
        (0, " [('NULL', 'NULL', 'NULL', 'NULL')]", 1),  # instructed no-opinion answer: a false positive
        (1, " [('us', 'They', 'to keep AND happy', 'positive')]", 1),  # exact, expression split on AND
        (2, " [('NULL', 'place', 'wonderful', 'positive'), ('we', 'NULL', 'planning to return', 'positive', 'x')]", 0),  # one wrong arity drops the item
        (3, " [('NULL', 'experience', 'wonderful', 'Positive')]", 1),  # polarity compared after capitalize()
        (4, ' []', 0),  # no opinion, nothing predicted
        (5, " ```python\n[('NULL', 'Hotel', 'under construction', 'negative')]\n```", 0),  # fenced multi-line answer yields nothing
        (6, " [('NULL', 'Carpets', 'very old', 'neutral')]", 1),  # wrong polarity
        (7, " [('NULL', 'Staircase', 'not heated', 'negative'), ('NULL', 'Staircase', 'not heated', 'negative')]", 1),  # duplicates removed
        (8, " Label: [('NULL', 'The room', 'OK', 'positive')]", 0),  # echoed Label: not skipped: nothing
        (9, ' [(\'NULL\', \'The TV\', \'stopped foor several moments\', \'negative\'), (\'NULL\', \'the internet connection\', "wasn \'t sufficient", \'negative\')', 2),  # repair, no 3-tuple limit
        (10, " [('We', 'stay', 'OK', 'positive')]", 1),  # holder found but gold has none
        (11, " [('NULL', 'NULL', 'NULL', 'NULL'), ('NULL', 'NULL', 'NULL', 'NULL')]", 1),  # no-opinion answer twice: one false positive
        (12, " [('NULL', 'hotel', 'Very cool', 'positive')]", 1),  # exact
        (13, " [('NULL', 'hotel', 'chic', 'positive')]", 1),  # partial expression overlap
        (14, " [('NULL', 'Animation team', 'just super', 'positive')]", 1),  # partial overlap
        (15, " [('NULL', 'Food', 'delicious AND all tastes', 'positive')]", 1),  # expression split on AND
        (16, " [('NULL', 'Animation team AND guys', 'super AND very funny', 'positive')]", 1),  # target split on AND
        (17, " [('Service AND property', 'property', 'clean', 'positive')]", 1),  # holder not split: not found, treated as none
    ],
}
# upstream (precision, recall, f1) on each whole table
REF = {
    "atsa_rest16": (0.5, 0.5384615384615384, 0.5185185185185186),
    "acsa_rest16": (0.5238095238095238, 0.5555555555555556, 0.5392156862745098),
    "asqp_rest16": (0.5714285714285714, 0.48, 0.5217391304347826),
    "ssa_opener": (0.6259259259259259, 0.4733333333333333, 0.5390386343216531),
}


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    path = tmp_path_factory.mktemp("score") / "c.yaml"
    path.write_text(f"data_dir: {shared_data}\ntrain: {{model: {{student: unused}}}}\n")
    return path


def run_score(config: Path, task: str, lines: list[dict[str, Any]], tmp_path: Path, *extra: str) -> Any:
    path = tmp_path / f"{task}.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return CliRunner().invoke(app, ["score", "--task", task, str(path), "--config", str(config), *extra])


@pytest.mark.parametrize("task", list(TABLES))
def test_reference_mode_reproduces_the_upstream_scores(task: str, config_file: Path, tmp_path: Path,
                                                       registry: TaskRegistry, splits) -> None:
    rows = TABLES[task]
    assert len(rows) >= 15
    result = run_score(config_file, task, [{"idx": i, "output": o} for i, o, _ in rows], tmp_path, "--seed", "42")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    m = out["metrics"]
    precision, recall, f1 = REF[task]
    assert out["scoring"] == "reference" and out["items"] == len(rows) and out["seed"] == 42
    assert m["precision"] == pytest.approx(precision, abs=1e-12) and m["recall"] == pytest.approx(recall, abs=1e-12)
    assert m["score_unrounded"] == pytest.approx(f1, abs=1e-12) and m["score"] == round(f1, 4)
    # the tolerant mode is written alongside and is kinder on these outputs
    assert m["tolerant/score"] > m["score"]
    # without --seed (output only, as the eval reads it) the numbers are the same
    plain = json.loads(run_score(config_file, task, [{"idx": i, "output": o} for i, o, _ in rows], tmp_path).output)
    assert plain["metrics"]["score_unrounded"] == pytest.approx(f1, abs=1e-12)
    # row by row: what the reference predicts, and how many of those predictions are gold
    spec, test = registry.get(task), splits(task, "test")
    for idx, output, expected in rows:
        parsed = reference_parse(spec, output, test[idx].text)
        if task == "ssa_opener":
            from sentidistill.tasks.reference import ssa

            assert len(ssa.pred_graph(test[idx].text, parsed.value)) == expected, (idx, output)
        else:
            gold = [tuple(g) for g in test[idx].gold]
            assert (len(parsed.value), sum(p in gold for p in parsed.value)) == expected, (idx, output)


def test_answer_extraction_is_the_reference_regex() -> None:
    assert reference_answer(" [('a', 'positive')]\nSentence: x") == "[('a', 'positive')]"
    assert reference_answer("\n\n[('a', 'positive')]") == "[('a', 'positive')]"  # leading blank lines skipped
    assert reference_answer(" ```python\n[('a', 'positive')]\n```") == "```python"
    assert reference_answer(" [('a', 'positive')] Sentence: next") == "[('a', 'positive')]"
    prompt = "Instr.\n\nSentence: d\nLabel: []\n\nSentence: q\nLabel:"
    assert reference_answer(" [('q', 'neutral')]", prompt=prompt, k=1) == "[('q', 'neutral')]"


def test_upstream_crashes_are_scored_as_no_tuples_and_counted(registry: TaskRegistry, splits) -> None:
    """Upstream raises on a non-string field of a 4-tuple (its run dies); we score no tuples."""
    asqp_task, ssa_task = registry.get("asqp_rest16"), registry.get("ssa_opener")
    ex = splits("asqp_rest16", "test")[0]
    bad = " [('service general', None, 'never served again', 'negative'), " \
          "('service general', 'service', 'never served again', 'negative')]"
    parsed = reference_parse(asqp_task, bad, ex.text)
    assert parsed.crashed and parsed.value == []
    m = reference_score(asqp_task, [ex], [bad])
    assert m["reference_crashes"] == 1.0 and m["n_pred"] == 0.0 and m["recall"] == 0.0
    ssa_ex = splits("ssa_opener", "test")[1]
    assert reference_parse(ssa_task, " [('us', 'They', None, 'positive')]", ssa_ex.text).crashed
    # a non-string holder is no crash upstream (it becomes 'NULL')
    assert not reference_parse(ssa_task, " [(None, 'They', 'happy', 'positive')]", ssa_ex.text).crashed


def test_rounding_and_classification_in_reference_mode(registry: TaskRegistry, splits, config_file: Path,
                                                       tmp_path: Path) -> None:
    twitter, test = registry.get("twitter17"), splits("twitter17", "test")[:7]
    labels = ["positive", "negative", "neutral", "neutral", "positive", "negative", "negative"]
    m = reference_score(twitter, test, labels)
    assert m["score"] == round(m["score_unrounded"], 4) and m["score"] != m["score_unrounded"]
    lines = [{"idx": i, "label": lab.upper() if i == 0 else lab} for i, lab in enumerate(labels)]
    lines[1] = {"idx": 1, "output": " negative\nSentence: x"}  # raw text is read with the task's text parser
    out = json.loads(run_score(config_file, "twitter17", lines, tmp_path).output)
    assert out["metrics"]["score_unrounded"] == pytest.approx(m["score_unrounded"])
    assert out["metrics"]["tolerant/score"] == pytest.approx(m["score_unrounded"])  # same numbers, unrounded


def test_scoring_mode_defaults_and_user_tasks(registry: TaskRegistry) -> None:
    assert {scoring_mode(t) for t in registry.benchmark()} == {"reference"}
    assert scoring_mode(registry.get("atsa_rest16"), "tolerant") == "tolerant"
    user = registry.get("asqp_rest16").model_copy(update={"benchmark": None, "gold_builder": "records",
                                                          "reference_parser": None})
    assert scoring_mode(user) == "tolerant"
    with pytest.raises(ValueError, match="needs a reference parser"):
        scoring_mode(user, "reference")
    assert scoring_mode(user.model_copy(update={"reference_parser": "asqp"}), "reference") == "reference"


def test_score_cli_errors_name_the_line_and_field(config_file: Path, tmp_path: Path) -> None:
    cases = [
        ('{"idx": 0, "output": " []"}\n{"idx": "3", "output": " []"}', r"atsa_rest16.jsonl:2: field 'idx' must be"),
        ('{"idx": 0, "outputs": " []"}', r"atsa_rest16.jsonl:1: field 'output' is missing"),
        ('{"idx": 0, "output": 5}', r"atsa_rest16.jsonl:1: field 'output' must be a string"),
        ('{"idx": 0, "output": " []"}\n\n{"idx": 0, "output": " []"}', r":3: field 'idx' 0 was already given on line 1"),
        ('{"idx": 676, "output": " []"}', r":1: field 'idx' 676 is outside the test split of 'atsa_rest16' \(0..675\)"),
        ('{"idx": 0, "output": " []"', r":1: not a JSON object"),
        ('[1, 2]', r":1: expected a JSON object"),
        ("", r"holds no prediction lines"),
    ]
    for text, message in cases:
        path = tmp_path / "atsa_rest16.jsonl"
        path.write_text(text)
        result = CliRunner().invoke(app, ["score", "--task", "atsa_rest16", str(path), "--config", str(config_file)])
        assert isinstance(result.exception, StageInputError), (text, result.output)
        assert __import__("re").search(message, str(result.exception)), (message, str(result.exception))
    result = CliRunner().invoke(app, ["score", "--task", "atsa_rest16", str(path), "--scoring", "strict"])
    assert "--scoring: 'strict' is not one of ['reference', 'tolerant']" in str(result.exception)


def _truncated_outputs(test: list[Any], share: float, rng: random.Random) -> list[str]:
    """A 150-token cut: the gold tuples, then each with another polarity, cut inside the last one."""
    outs = []
    for ex in test:
        tuples = list(ex.gold)
        if not tuples or rng.random() >= share:
            outs.append(" " + repr(tuples))
            continue
        flipped = [(*t[:-1], next(p for p in ("negative", "neutral", "positive") if p != t[-1])) for t in tuples]
        outs.append(" " + repr(tuples + flipped)[:-3])
    return outs


MAX_AFFECTED = {"acsa_rest16": 0.05, "asqp_rest16": 0.12}  # every answer cut: items with > 3 distinct tuples


@pytest.mark.parametrize("task, module", [("acsa_rest16", acsa), ("asqp_rest16", asqp)])
def test_hash_order_choice_rarely_changes_a_score(task: str, module: Any, registry: TaskRegistry, splits,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Upstream keeps 3 tuples of a repaired list in set (hash) order, which changes per process;
    we sort them. Only a repaired answer with more than 3 distinct tuples depends on it."""
    spec, test = registry.get(task), splits(task, "test")
    for share, max_affected, max_spread in ((1.0, MAX_AFFECTED[task], 0.04), (0.1, 0.02, 0.01)):
        outs = _truncated_outputs(test, share, random.Random(0))
        ours = reference_score(spec, test, outs)["score_unrounded"]
        kept = [set(reference_parse(spec, o, ex.text).value) for o, ex in zip(outs, test)]
        hash_orders, affected = [], set()
        for seed in range(20):  # a random permutation of the distinct tuples = one PYTHONHASHSEED
            rng = random.Random(seed)
            monkeypatch.setattr(module, "distinct", lambda items, rng=rng: rng.sample(sorted(set(items)), len(set(items))))
            reference._parse.cache_clear()  # parses are cached: redo them in this order
            hash_orders.append(reference_score(spec, test, outs)["score_unrounded"])
            affected |= {i for i, (o, ex) in enumerate(zip(outs, test))
                         if set(reference_parse(spec, o, ex.text).value) != kept[i]}
            monkeypatch.undo()
            reference._parse.cache_clear()
        print(f"{task}: {share:.0%} of answers cut: {len(affected)} of {len(test)} items depend on the order; "
              f"F1 ours {ours:.4f}, hash orders {min(hash_orders):.4f}..{max(hash_orders):.4f}")
        assert 0 < len(affected) / len(test) <= max_affected
        assert min(hash_orders) - 1e-9 <= ours <= max(hash_orders) + 1e-9
        assert max(hash_orders) - min(hash_orders) <= max_spread


def test_atsa_demo_ties_are_rare_and_fixed(registry: TaskRegistry, splits) -> None:
    """ATSA demo labels sort by offsets; ties (one term, two polarities) keep file order where the
    reference's order depends on the hash seed. They only change prompt text, in few prompts."""
    from sentidistill.tasks.gold import _offset_key

    train, test = splits("atsa_rest16", "train"), splits("atsa_rest16", "test")
    tied = {ex.id for ex in train if len({_offset_key(a) for a in ex.raw["aspects"] if a.get("target") not in
                                          ("NULL", None)}) < len(ex.gold)}
    assert 0 < len(tied) / len(train) < 0.02  # 28 of 2000 rows
    demos = sample_demos(registry.get("atsa_rest16"), train, test, 42)
    share = sum(any(d.id in tied for d in ds) for ds in demos) / len(test)
    assert share < 0.08  # prompts whose text could differ from one reference run to another
