"""Parsers: labels from text, tuple lists with repair, filtering and de-duplication; never eval."""

from __future__ import annotations

import pytest

from sentidistill.tasks import PromptVariant, TaskRegistry, parse_output


@pytest.mark.parametrize(("text", "label"), [
    (" positive", "positive"),
    ("Positive.", "positive"),
    ("Label: negative", "negative"),
    ("positive\n\nSentence: invented demo\nLabel: negative", "positive"),
    ("The sentiment is clearly NEGATIVE, not positive.", "negative"),
])
def test_label_from_text(registry: TaskRegistry, text: str, label: str) -> None:
    p = parse_output(registry.get("imdb"), text)
    assert (p.value, p.failed) == (label, False)


def test_label_whole_words_and_failures(registry: TaskRegistry) -> None:
    assert parse_output(registry.get("irony18"), " non-irony").value == "non-irony"
    assert parse_output(registry.get("irony18"), "this is irony").value == "irony"
    assert parse_output(registry.get("intimacy"), " Moderately Intimate").value == "moderately intimate"
    assert parse_output(registry.get("pstance"), " against(opinion towards 'Joe Biden')").value == "against"
    for text in ("neutral", "positively", "", "I cannot answer that."):
        p = parse_output(registry.get("imdb"), text)
        assert p.value is None and p.failed


def test_tuples_clean_and_fenced(registry: TaskRegistry) -> None:
    atsa = registry.get("atsa_rest16")
    text = " [('food', 'positive'), ('service', 'negative')]\n\nSentence: x\nLabel: [('y', 'positive')]"
    p = parse_output(atsa, text)
    assert (p.value, p.failed, p.dropped) == ([("food", "positive"), ("service", "negative")], False, 0)
    p = parse_output(atsa, "```python\n[('food', 'positive')]\n```")
    assert p.value == [("food", "positive")]
    assert parse_output(atsa, " []").value == [] and not parse_output(atsa, " []").failed


def test_duplicates_case_and_bad_tuples(registry: TaskRegistry) -> None:
    p = parse_output(registry.get("atsa_rest16"),
                     "[(' food ', 'Positive'), ('food', 'positive'), ('bar', 'great'), ('a', 'b', 'positive'), "
                     "(3, 'negative'), ('wine', 'negative')]")
    assert p.value == [("food", "positive"), ("wine", "negative")]
    assert (p.dropped, p.failed) == (3, False)


def test_malformed_list_is_repaired(registry: TaskRegistry) -> None:
    p = parse_output(registry.get("atsa_rest16"), "[('food', 'positive'), ('service', 'neg")
    assert (p.value, p.failed) == ([("food", "positive")], False)
    p = parse_output(registry.get("atsa_rest16"), "[('food', 'positive'")
    assert (p.value, p.failed) == ([], True)


def test_bare_tuple_nested_list_and_multiline(registry: TaskRegistry) -> None:
    atsa = registry.get("atsa_rest16")
    assert parse_output(atsa, "('food', 'positive')").value == [("food", "positive")]
    assert parse_output(atsa, "[[('food', 'positive')]]").value == [("food", "positive")]
    assert parse_output(atsa, "[\n  ('food', 'positive'),\n  ('wine', 'neutral')\n]").value == [
        ("food", "positive"), ("wine", "neutral")]


def test_ssa_null_answers(registry: TaskRegistry) -> None:
    ssa = registry.get("ssa_opener")
    p = parse_output(ssa, "[('NULL', 'NULL', 'NULL', 'NULL')]")
    assert (p.value, p.failed, p.dropped) == ([], False, 0)  # the instructed "no opinion" answer
    p = parse_output(ssa, "[(None, 'room', 'dirty', 'negative'), ('I', 'NULL', 'loved it', 'Positive')]")
    assert p.value == [("NULL", "room", "dirty", "negative"), ("I", "NULL", "loved it", "positive")]


def test_json_output_variant(registry: TaskRegistry) -> None:
    atsa, js = registry.get("atsa_rest16"), PromptVariant(output_format="json")
    p = parse_output(atsa, '[{"aspect": "food", "polarity": "positive"}, {"aspect": "x"}]', js)
    assert (p.value, p.dropped) == ([("food", "positive")], 1)
    p = parse_output(atsa, '[{"aspect": "food", "polarity": "positive"}, {"aspect": "se', js)
    assert (p.value, p.failed) == ([("food", "positive")], False)
    pretty = '```json\n[\n  {"aspect": "food", "polarity": "positive"}\n]\n```'
    assert parse_output(atsa, pretty, js).value == [("food", "positive")]


def test_custom_field_names_are_understood(registry: TaskRegistry) -> None:
    v = PromptVariant(input_name="Review:", output_name="Sentiment:")
    text = "Sentiment: positive\nReview: next\nSentiment: negative"
    assert parse_output(registry.get("sst2"), text, v).value == "positive"


def test_model_output_is_never_evaluated(registry: TaskRegistry, tmp_path) -> None:
    marker = tmp_path / "pwned"
    text = f"[__import__('pathlib').Path({str(marker)!r}).touch()]"
    p = parse_output(registry.get("atsa_rest16"), text)
    assert p.failed and p.value == [] and not marker.exists()
