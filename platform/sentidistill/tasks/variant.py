"""`PromptVariant`: how a prompt departs from the benchmark layout (ICLDist format diversity).

The default instance is the canonical SentiBench prompt; every field left at its default keeps
the protocol. Parsers read the same variant to know which field names and output format to expect.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from sentidistill.tasks.spec import TaskSpec

# Input/output field-name pairs used for format diversification; the first is the protocol's.
FIELD_NAME_PAIRS: tuple[tuple[str, str], ...] = (
    ("Sentence:", "Label:"), ("Input:", "Output:"), ("Text:", "Answer:"), ("Review:", "Sentiment:"),
    ("Query:", "Response:"), ("Post:", "Prediction:"),
)
IO_SEPARATORS: tuple[str, ...] = ("\n", " ")  # between a text and its answer; "\n" is the protocol's

LabelCase = Literal["as_is", "lower", "upper", "title"]


class PromptVariant(BaseModel):
    """A prompt format. `PromptVariant()` reproduces the benchmark protocol byte for byte."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_name: str | None = Field(None, description="Field before each text; None = the task layout's ('Sentence:').")
    output_name: str | None = Field(None, description="Field before each answer; None = the task layout's ('Label:').")
    io_sep: str = Field("\n", min_length=1, description="Between a text and its answer field.")
    paraphrase: int | None = Field(None, ge=0, description="Index into task.paraphrases; None = canonical instruction.")
    label_case: LabelCase = Field("as_is", description="Casing of class labels in demos, instruction and candidates.")
    output_format: Literal["python", "json"] = Field(
        "python", description="Extraction answers as a Python list of tuples or a JSON list of objects.",
    )
    k: int | None = Field(None, ge=0, description="Demonstrations; None = the task layout's k.")

    @property
    def is_canonical(self) -> bool:
        return self == CANONICAL

    def key(self) -> str:
        """Short stable text for the `variant` column: 'canonical' or the non-default fields as JSON."""
        changed = self.model_dump(exclude_defaults=True)
        return json.dumps(changed, sort_keys=True, ensure_ascii=False) if changed else "canonical"

    @classmethod
    def from_key(cls, key: str) -> PromptVariant:
        """Inverse of `key()` (reads the `variant` column of generation rows back)."""
        return cls() if key == "canonical" else cls.model_validate(json.loads(key))


CANONICAL = PromptVariant()


def case_label(label: str, case: LabelCase) -> str:
    if case == "lower":
        return label.lower()
    if case == "upper":
        return label.upper()
    if case == "title":
        return label.title()
    return label


def field_names(task: TaskSpec, variant: PromptVariant) -> tuple[str, str]:
    """(input name, output name) the variant uses for this task."""
    return variant.input_name or task.layout.input_name, variant.output_name or task.layout.output_name
