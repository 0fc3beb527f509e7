"""Prompts against hand-written expected strings built from the reference's rules."""

from __future__ import annotations

import random

import pytest

from sentidistill.errors import StageInputError
from sentidistill.tasks import (
    Example, PromptVariant, TaskRegistry, as_messages, build_prompt, classification_candidates, gold_text,
    sample_variant,
)
from sentidistill.tasks.splits import to_example

SENTIMENT = ("Please perform Sentiment Analysis task. Given the sentence, assign a sentiment polarity label "
             "from ['negative', 'positive']. Return label only without any other text.")


def test_sentiment_prompt_byte_for_byte(registry: TaskRegistry) -> None:
    task = registry.get("imdb")
    demos = [Example("d1", "Great film.", "positive"), Example("d2", "Dull , slow.", "negative")]
    expected = (SENTIMENT + "\n\nSentence: Great film.\nLabel: positive\n\n"
                "Sentence: Dull , slow.\nLabel: negative\n\nSentence: Loved it!\nLabel:")
    assert build_prompt(task, demos, Example.query("Loved it!")) == expected
    assert build_prompt(task, demos, "Loved it!") == expected
    assert build_prompt(task, [], "Loved it!") == SENTIMENT + "\n\nSentence: Loved it!\nLabel:"


def test_pstance_prompt_byte_for_byte(registry: TaskRegistry) -> None:
    task = registry.get("pstance")
    rows = [{"sentence": "Build the wall!", "target": "Donald Trump", "label": "FAVOR"},
            {"sentence": "Feel the Bern? No.", "target": "Bernie Sanders", "label": "AGAINST"}]
    demos = [to_example(task, r, f"d{i}") for i, r in enumerate(rows)]
    query = to_example(task, {"sentence": "Joe again...", "target": "Joe Biden", "label": "AGAINST"}, "q")
    expected = (
        "Please perform Stance Detection task. Given the sentence, assign a sentiment label expressed by the author "
        "towards \"Joe Biden\" from ['against', 'favor']. Return label only without any other text.\n\n"
        "Sentence: Build the wall!\nLabel: favor(opinion towards 'Donald Trump')\n\n"
        "Sentence: Feel the Bern? No.\nLabel: against(opinion towards 'Bernie Sanders')\n\n"
        "Sentence: Joe again...\nLabel:"
    )
    assert build_prompt(task, demos, query) == expected
    assert classification_candidates(task) == [" against", " favor"]
    with pytest.raises(StageInputError, match="target"):
        build_prompt(task, demos, "no target given")


def test_atsa_prompt_byte_for_byte(registry: TaskRegistry, splits) -> None:
    task = registry.get("atsa_rest16")
    demo = splits("atsa_rest16", "train")[26]  # offsets "31" < "4" as strings; one NULL term dropped
    expected = (
        "Please perform Aspect Term Sentiment Analysis task. Given the sentence, extract all "
        "(aspect term, sentiment polarity) pairs.\n\n"
        "Sentence: The food is very average...the Thai fusion stuff is a bit too sweet, every thing they serve "
        "is too sweet here.\nLabel: [('Thai fusion stuff', 'negative'), ('food', 'negative')]\n\n"
        "Sentence: Nice view.\nLabel:"
    )
    assert build_prompt(task, [demo], "Nice view.") == expected


def test_gold_rendering_of_acsa_asqp_ssa(splits) -> None:
    acsa = splits("acsa_rest16", "train")[0]
    assert acsa.gold == [("restaurant general", "negative")]  # 'RESTAURANT#GENERAL' lowercased, '#' -> ' '
    asqp = splits("asqp_rest16", "train")[0]
    assert asqp.gold == [("service general", "service", "great", "positive"),
                         ("food quality", "dinner", "great quality", "positive")]  # category first
    ssa = splits("ssa_opener", "train")
    assert ssa[184].gold[1] == ("NULL", "many other AND services", "special", "positive")
    none = next(ex for ex in ssa if not ex.raw["opinions"])
    assert none.gold == [("NULL", "NULL", "NULL", "NULL")]


def test_variants_change_layout_casing_instruction_and_format(registry: TaskRegistry) -> None:
    task = registry.get("imdb")
    v = PromptVariant(input_name="Review:", output_name="Sentiment:", io_sep=" ", label_case="upper", paraphrase=0)
    prompt = build_prompt(task, [Example("d", "Great.", "positive")], "Bad.", v)
    assert prompt == ("Classify the sentiment polarity of the sentence. Choose one label from "
                      "['NEGATIVE', 'POSITIVE'] and answer with the label only.\n\n"
                      "Review: Great. Sentiment: POSITIVE\n\nReview: Bad. Sentiment:")
    assert classification_candidates(task, v) == [" NEGATIVE", " POSITIVE"]
    assert PromptVariant().key() == "canonical" and PromptVariant.from_key(v.key()) == v

    atsa = registry.get("atsa_rest16")
    js = PromptVariant(output_format="json")
    demo = Example("d", "Nice view, rude staff.", [("view", "positive"), ("staff", "negative")])
    assert gold_text(atsa, demo, js) == ('[{"aspect": "view", "polarity": "positive"}, '
                                         '{"aspect": "staff", "polarity": "negative"}]')
    assert build_prompt(atsa, [], "x", js).split("\n\n")[0].endswith(
        'Write each tuple as a JSON object with the keys "aspect", "polarity".')
    para = build_prompt(atsa, [], "x", PromptVariant(output_format="json", paraphrase=2))
    assert "Please return JSON list only." in para and "python" not in para.lower()


def test_chat_variant_is_one_user_message(registry: TaskRegistry) -> None:
    prompt = build_prompt(registry.get("sst2"), [], "Fine.")
    assert as_messages(prompt) == [{"role": "user", "content": prompt}]


def test_sample_variant_is_reproducible_and_valid(registry: TaskRegistry) -> None:
    task = registry.get("pstance")
    draws = [sample_variant(task, random.Random(7), k_max=4) for _ in range(2)]
    assert draws[0] == draws[1]
    rng = random.Random(0)
    variants = [sample_variant(task, rng, k_max=4, field_names=1.0, label_casing=1.0, vary_k=1.0) for _ in range(30)]
    assert all(v.input_name and v.label_case in ("upper", "title") and 0 <= v.k <= 4 for v in variants)
    assert len({v.k for v in variants}) > 1
    for v in variants:  # every drawn variant renders (paraphrases keep {target})
        q = Example("q", "text", "favor", target="Joe Biden")
        assert "Joe Biden" in build_prompt(task, [q], q, v)
