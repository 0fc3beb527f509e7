"""`TaskSpec`: one evaluation/ICL task described as data (one YAML file per task).

A task says where its data lies, how to read a row, the exact instruction the benchmark uses (plus
paraphrases for ICLDist), its labels or tuple schema, and which registered parser and metric score
it. Parsers, metrics and gold builders are named from closed registries, never imported by path,
so a YAML file cannot smuggle code in.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from sentidistill.tasks.gold import GOLD_BUILDERS
from sentidistill.tasks.metrics import METRICS
from sentidistill.tasks.parsers import PARSERS
from sentidistill.tasks.reference import REFERENCE_PARSERS, reference_parser_name

SPEC_VERSION = 1
SENTIBENCH = "sentibench"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TaskData(_Frozen):
    train: str = Field(..., description="Demonstration pool: path, data://rel, or s3:// / gs:// URI.")
    test: str = Field(..., description="Scored items (never used for training or demonstrations).")
    val: str | None = Field(None, description="Optional validation split.")
    format: Literal["json", "jsonl"] = Field("json", description="json: one array; jsonl: one object per line.")


class RowFields(_Frozen):
    """Which columns of a row hold what; extraction tasks name the column with the gold structures."""

    text: str = Field("sentence", description="Column with the input text.")
    label: str | None = Field("label", description="Column with the gold label (classify).")
    target: str | None = Field(None, description="Column with a per-row target (P-Stance), shown in the instruction.")
    tuples: str | None = Field(None, description="Column with the gold structures (extract), e.g. aspects, quards.")
    tuple_keys: list[str] | None = Field(
        None, description="gold_builder 'records': keys (or list positions) read from each structure, "
        "in tuple order; default = tuple_fields.",
    )


class PromptLayout(_Frozen):
    input_name: str = Field("Sentence:", description="Field name before each text.")
    output_name: str = Field("Label:", description="Field name before each answer; the prompt ends with it.")
    k: int = Field(4, ge=0, description="Demonstrations per prompt in the benchmark protocol.")


class TaskSpec(_Frozen):
    """One task. Instructions are exact text: `{target}` is the only placeholder."""

    version: int = Field(SPEC_VERSION, ge=1, description="Bump when a prompt or label changes (recorded in results).")
    name: str = Field(..., description="Unique task name (lowercase, digits, '_' or '-').")
    category: str = Field(..., description="basic | multifaceted | fine-grained, or a user-defined category.")
    benchmark: str | None = Field(None, description="'sentibench' for the 12 scored tasks; None for other tasks.")
    kind: Literal["classify", "extract"]
    description: str = Field("", description="One line for listings and model cards.")
    data: TaskData
    fields: RowFields = Field(default_factory=RowFields)
    gold_builder: str = Field(..., description=f"How gold is read from a row: one of {sorted(GOLD_BUILDERS)}.")
    instruction: str = Field(..., min_length=1, description="Canonical instruction, exact reference text.")
    paraphrases: list[str] = Field(default_factory=list, description="Alternative instructions (ICLDist diversity).")
    labels: list[str] = Field(default_factory=list, description="Canonical labels (classify), in scoring order.")
    label_map: dict[str, str] = Field(default_factory=dict, description="Dataset label -> canonical label.")
    lowercase_labels: bool = Field(True, description="Unmapped dataset labels are lowercased (the reference does).")
    demo_label_template: str | None = Field(
        None, description="Demo label rendering, placeholders {label} and {target}; None = the label itself.",
    )
    tuple_fields: list[str] = Field(
        default_factory=list, description="Extract: names of the tuple slots in gold order (JSON keys); "
        "the last slot is the polarity.",
    )
    allowed_polarities: list[str] = Field(default_factory=list, description="Extract: accepted polarity values.")
    parser: str = Field(..., description=f"Registered output parser: one of {sorted(PARSERS)}.")
    metric: str = Field(..., description=f"Registered metric: one of {sorted(METRICS)}.")
    scoring: Literal["reference", "tolerant"] | None = Field(
        None, description="Default scoring mode (eval.scoring overrides): reference = the upstream scorers' "
        "decisions, tolerant = our forgiving parser; None = reference for SentiBench tasks, tolerant otherwise.",
    )
    reference_parser: str | None = Field(
        None, description=f"Upstream scorer used in reference mode: one of {sorted(REFERENCE_PARSERS)}; "
        "None = the one matching gold_builder (label, atsa, acsa, asqp, ssa).",
    )
    layout: PromptLayout = Field(default_factory=PromptLayout)

    _source: Path | None = PrivateAttr(None)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("use lowercase letters, digits, '_' or '-' (e.g. 'my_reviews')")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> TaskSpec:
        for attr, registry in (("parser", PARSERS), ("metric", METRICS), ("gold_builder", GOLD_BUILDERS)):
            entry = registry.get(getattr(self, attr))
            if entry is None:
                raise ValueError(f"{attr}: unknown {getattr(self, attr)!r}; available: {sorted(registry)}")
            if entry.kind != self.kind:
                raise ValueError(f"{attr}: {getattr(self, attr)!r} is for '{entry.kind}' tasks, "
                                 f"this one is '{self.kind}'")
        ref = REFERENCE_PARSERS.get(self.reference_parser) if self.reference_parser else None
        if self.reference_parser and (ref is None or ref.kind != self.kind):
            raise ValueError(f"reference_parser: {self.reference_parser!r} is not one of the "
                             f"{self.kind} reference parsers {sorted(k for k, e in REFERENCE_PARSERS.items() if e.kind == self.kind)}")
        if self.reference_parser == "ssa" and self.gold_builder != "ssa":
            raise ValueError("reference_parser: 'ssa' needs gold_builder 'ssa' (it reads the character offsets)")
        if self.scoring == "reference" and reference_parser_name(self) is None:
            raise ValueError(f"scoring: 'reference' needs reference_parser (one of {sorted(REFERENCE_PARSERS)})")
        if self.metric == "ssa_graph_f1" and self.gold_builder != "ssa":
            raise ValueError("metric: ssa_graph_f1 needs gold_builder 'ssa' (it reads the character offsets)")
        self._check_kind()
        self._check_placeholders()
        return self

    def _check_kind(self) -> None:
        if self.kind == "classify":
            if len(self.labels) < 2:
                raise ValueError("labels: a classify task needs at least two labels")
            lowered = [label.lower() for label in self.labels]
            if len(set(lowered)) != len(lowered):
                raise ValueError(f"labels: duplicates (compared lowercased): {self.labels}")
            if not self.fields.label:
                raise ValueError("fields.label: a classify task needs the label column")
            unknown = sorted(set(self.label_map.values()) - set(self.labels))
            if unknown:
                raise ValueError(f"label_map: maps to {unknown}, which are not in labels {self.labels}")
        else:
            if not self.tuple_fields or not self.allowed_polarities:
                raise ValueError("tuple_fields and allowed_polarities: an extract task needs both")
            bad = [f for f in self.tuple_fields if not _KEY.match(f)]
            if bad:
                raise ValueError(f"tuple_fields: {bad} are not identifiers (they are JSON keys)")
            if not self.fields.tuples:
                raise ValueError("fields.tuples: an extract task needs the column holding the gold structures")

    def _check_placeholders(self) -> None:
        texts = {"instruction": self.instruction} | {f"paraphrases[{i}]": p for i, p in enumerate(self.paraphrases)}
        needs_target = "{target}" in self.instruction
        for where, text in texts.items():
            if ("{target}" in text) != needs_target:
                raise ValueError(f"{where}: '{{target}}' must appear in all instructions or in none")
        if needs_target and not self.fields.target:
            raise ValueError("fields.target: the instruction uses {target}, so name the row's target column")
        if self.demo_label_template is not None:
            try:
                self.demo_label_template.format(label="x", target="y")
            except (KeyError, IndexError, ValueError) as e:
                raise ValueError(f"demo_label_template: only {{label}} and {{target}} may appear ({e})") from None

    @property
    def tuple_arity(self) -> int:
        """Slots per gold tuple (extract tasks); 0 for classification."""
        return len(self.tuple_fields)

    @property
    def source(self) -> Path | None:
        """The YAML file this spec came from (relative data paths resolve against its folder)."""
        return self._source

    def fingerprint(self) -> str:
        """Short hash of the whole definition: results and ICL data record it to detect changed tasks."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]
