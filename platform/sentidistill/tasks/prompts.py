"""Prompt rendering and demonstration sampling, byte for byte as the SentiBench reference.

Canonical layout (k demonstrations, raw text, no chat template):

    {instruction}

    Sentence: {demo text}
    Label: {demo label}

    Sentence: {query}
    Label:

Demonstrations come from one `random.Random(seed)`: one `rng.sample(train, k)` per test row, in
test order, train rows in file order. Build prompts first; batch or sort afterwards.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sentidistill.errors import ConfigError, StageInputError
from sentidistill.tasks.example import Example
from sentidistill.tasks.variant import (
    CANONICAL, FIELD_NAME_PAIRS, IO_SEPARATORS, PromptVariant, case_label, field_names,
)

if TYPE_CHECKING:
    from sentidistill.tasks.spec import TaskSpec

_PYTHON_LIST = re.compile(r"python list", re.IGNORECASE)


def instruction_text(task: TaskSpec, variant: PromptVariant = CANONICAL, target: str | None = None) -> str:
    """The instruction the variant asks for, with the query's target and label casing applied."""
    if variant.paraphrase is None:
        text = task.instruction
    elif variant.paraphrase < len(task.paraphrases):
        text = task.paraphrases[variant.paraphrase]
    else:
        raise ConfigError(f"task {task.name!r} has {len(task.paraphrases)} paraphrases; "
                          f"variant asks for paraphrase {variant.paraphrase}")
    if task.kind == "classify" and variant.label_case != "as_is":
        for label in task.labels:
            text = text.replace(f"'{label}'", f"'{case_label(label, variant.label_case)}'")
    if "{target}" in text:
        if not target:
            raise StageInputError(f"task {task.name!r}: the instruction needs the item's target "
                                  f"(column {task.fields.target!r}) and none was given")
        text = text.replace("{target}", target)
    if task.kind == "extract" and variant.output_format == "json":
        keys = ", ".join(f'"{k}"' for k in task.tuple_fields)
        text = _PYTHON_LIST.sub("JSON list", text) + f"\nWrite each tuple as a JSON object with the keys {keys}."
    return text


def gold_text(task: TaskSpec, example: Example, variant: PromptVariant = CANONICAL) -> str:
    """The answer as a demonstration shows it: the label (P-Stance: with its target), or the
    Python `repr` of the list of tuples (JSON list of objects for the json variant)."""
    if example.gold is None:
        raise StageInputError(f"task {task.name!r}: example {example.id!r} has no gold answer to render")
    if task.kind == "classify":
        label = case_label(str(example.gold), variant.label_case)
        if task.demo_label_template is None:
            return label
        return task.demo_label_template.format(label=label, target=example.target or "")
    tuples = [tuple(t) for t in example.gold]
    if variant.output_format == "json":
        return json.dumps([dict(zip(task.tuple_fields, t, strict=True)) for t in tuples], ensure_ascii=False)
    return repr(tuples)


def build_prompt(task: TaskSpec, demos: Sequence[Example], query: Example | str,
                 variant: PromptVariant | None = None, *, target: str | None = None) -> str:
    """Render one raw prompt. `PromptVariant()` (the default) is the benchmark protocol.

    `query` is an Example (its `target` fills P-Stance's instruction) or a plain text with `target`.
    """
    v = variant or CANONICAL
    if isinstance(query, Example):
        text, target = query.text, query.target if target is None else target
    else:
        text = query
    inp, out = field_names(task, v)
    blocks = [f"{inp} {d.text}{v.io_sep}{out} {gold_text(task, d, v)}\n\n" for d in demos]
    return f"{instruction_text(task, v, target)}\n\n{''.join(blocks)}{inp} {text}{v.io_sep}{out}"


def as_messages(prompt: str) -> list[dict[str, str]]:
    """The `chat` prompt variant: the same text as one user message (the engine applies the template)."""
    return [{"role": "user", "content": prompt}]


def classification_candidates(task: TaskSpec, variant: PromptVariant | None = None) -> list[str]:
    """Strings whose first token is scored after the prompt, in label order: ' ' + label.

    P-Stance scores the bare labels (' against', ' favor'), not its demo template, as the reference does.
    """
    if task.kind != "classify":
        raise ConfigError(f"task {task.name!r} is an extraction task: it has no label candidates")
    case = (variant or CANONICAL).label_case
    return [" " + case_label(label, case) for label in task.labels]


def sample_demos(task: TaskSpec, train: Sequence[Example], test: Sequence[Example], seed: int,
                 k: int | None = None) -> list[list[Example]]:
    """Demonstrations for each test item: `rng = random.Random(seed)`, then `rng.sample(train, k)`
    once per test row in order, exactly as the reference (prompts therefore match its prompts)."""
    k = task.layout.k if k is None else k
    if k > len(train):
        raise StageInputError(f"task {task.name!r}: k={k} demonstrations but the train split has {len(train)} rows")
    rng, pool = random.Random(seed), list(train)
    return [rng.sample(pool, k) for _ in test]


def sample_variant(task: TaskSpec, rng: random.Random, *, k_max: int, field_names: float = 0.5,
                   instruction_paraphrase: float = 0.5, label_casing: float = 0.2, json_output: float = 0.3,
                   vary_k: float = 0.5) -> PromptVariant:
    """Draw a diversified variant; each argument is the share of prompts that change that aspect.

    The keyword names match `ICLConfig.diversify`, so a builder can pass
    `**cfg.icl.diversify.model_dump()`. Draws happen in a fixed order (reproducible per rng).
    """
    fields: dict[str, object] = {}
    if rng.random() < field_names:
        fields["input_name"], fields["output_name"] = rng.choice(FIELD_NAME_PAIRS[1:])
        fields["io_sep"] = rng.choice(IO_SEPARATORS)
    if task.paraphrases and rng.random() < instruction_paraphrase:
        fields["paraphrase"] = rng.randrange(len(task.paraphrases))
    if task.kind == "classify" and rng.random() < label_casing:
        fields["label_case"] = rng.choice(["upper", "title"])
    if task.kind == "extract" and rng.random() < json_output:
        fields["output_format"] = "json"
    fields["k"] = rng.randint(0, k_max) if rng.random() < vary_k else k_max
    return PromptVariant.model_validate(fields)
