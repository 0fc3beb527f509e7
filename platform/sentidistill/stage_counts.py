"""Typed views of what each stage's manifest records in `counts` (and, where readers need it, `extra`).

Manifests keep their JSON shape on disk, so run directories written by older versions still read:
a field an older manifest lacks takes its "not recorded" value, keys a newer one adds are kept.
A value of the wrong type is an error that names the manifest file. Stages fill these models and
store their dump; the CLI, the report and other stages read them back with `<Model>.of(manifest)`.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sentidistill.errors import StageInputError
from sentidistill.rundir import Manifest

C = TypeVar("C", bound="StageView")


class StageView(BaseModel):
    """Base: unknown keys kept (newer manifests), wrong types rejected."""

    model_config = ConfigDict(extra="allow")

    @classmethod
    def section(cls) -> str:
        return "counts"

    @classmethod
    def of(cls: type[C], manifest: Manifest) -> C:
        """Parse this manifest's section; a malformed one is a StageInputError naming the file."""
        data = getattr(manifest, cls.section())
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            where = manifest.source or f"{manifest.stage}/manifest.json"
            problems = "; ".join(f"{cls.section()}.{'.'.join(map(str, err['loc']))}: {err['msg']}"
                                 for err in e.errors()[:5])
            raise StageInputError(f"{where}: not a {manifest.stage} manifest this version can read ({problems})") \
                from None

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


# -- generation (knowdist, icldist) -------------------------------------------------------------------
class CorpusCounts(StageView):
    read: int = 0
    rejected: int = 0
    duplicates: int = 0
    kept: int = 0
    rejected_by_reason: dict[str, int] = Field(default_factory=dict)


class PerspectiveCounts(StageView):
    pairs: int = 0
    kept: int = 0
    filtered: int = 0


class GenerationCounts(StageView):
    """What both generation stages record."""

    kept: int = 0
    filtered: int = 0
    missing: int | None = None  # None: not recorded, so the stage is never taken as complete
    generated_this_run: int = 0
    errors: int = 0
    qc: dict[str, int] = Field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    completion_tokens_per_s: float = 0.0

    @property
    def filtered_by_reason(self) -> dict[str, int]:
        return {k: v for k, v in self.qc.items() if k != "kept"}


class KnowDistCounts(GenerationCounts):
    texts: int = 0
    pairs: int = 0
    per_perspective: dict[str, PerspectiveCounts] = Field(default_factory=dict)
    corpus: CorpusCounts = Field(default_factory=CorpusCounts)


class TaskCounts(StageView):
    pool: int | None = None
    dropped_test_overlap: int | None = None
    wanted: int = 0
    prompts: int = 0
    short_pool: int = 0
    kept: int = 0
    filtered: int = 0
    qc: dict[str, int] = Field(default_factory=dict)


class Agreement(StageView):
    judged: int = 0
    agree: int = 0
    rate: float = 0.0
    parse_failures: int = 0
    tuple_f1: float | None = None


class ICLDistCounts(GenerationCounts):
    examples: int = 0
    per_task: dict[str, TaskCounts] = Field(default_factory=dict)
    per_variant: dict[str, dict[str, int]] = Field(default_factory=dict)
    agreement: dict[str, Agreement] = Field(default_factory=dict)
    holdout_tasks: list[str] = Field(default_factory=list)
    test_sentences_indexed: int = 0


class GenerationExtra(StageView):
    @classmethod
    def section(cls) -> str:
        return "extra"

    teacher: str = ""
    engine: str = ""
    target: str | None = None
    error_samples: list[str] = Field(default_factory=list)


# -- training -----------------------------------------------------------------------------------------
class TrainCounts(StageView):
    replay_examples: int = 0
    stage_examples: int = 0
    truncated_examples: int = 0
    dropped_too_long: int = 0
    train_examples: int = 0
    rows: int = 0
    tokens: int = 0
    answer_tokens: int = 0
    packed: bool = False
    packing_efficiency: float = 0.0
    steps: int = 0
    total_steps: int = 0
    steps_per_epoch: int = 0


class FinalMetrics(StageView):
    """The last logged training metrics (more keys kept as they come)."""

    loss: float | None = None
    tokens_per_s: float | None = None


class TrainExtra(StageView):
    @classmethod
    def section(cls) -> str:
        return "extra"

    student: str = ""
    started_from: str = ""
    init_digest: str | None = None
    resumed_from_step: int = 0
    final_metrics: FinalMetrics = Field(default_factory=FinalMetrics)
    teachers: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    ray_storage: str = ""


# -- evaluation, report, ablation ---------------------------------------------------------------------
class EvalCounts(StageView):
    tasks: int = 0
    seeds: int = 0
    parts: int = 0
    missing_parts: int = 0
    parts_scored_this_run: int = 0
    items_scored_this_run: int = 0
    errors: int = 0
    items: int = 0
    sentibench: float | None = None
    prompts_too_long: int = 0


class EvalExtra(StageView):
    @classmethod
    def section(cls) -> str:
        return "extra"

    model: str = ""
    engine: str = ""
    missing: list[str] = Field(default_factory=list)
    error_samples: list[str] = Field(default_factory=list)


class ReportCounts(StageView):
    models: int = 0
    teacher_samples: int = 0


class AblateCounts(StageView):
    variants: int = 0
    steps: dict[str, int | None] = Field(default_factory=dict)


__all__ = ["AblateCounts", "Agreement", "CorpusCounts", "EvalCounts", "EvalExtra", "FinalMetrics",
           "GenerationCounts", "GenerationExtra", "ICLDistCounts", "KnowDistCounts", "ReportCounts", "StageView",
           "TaskCounts", "TrainCounts", "TrainExtra"]
