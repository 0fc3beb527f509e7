"""Reference scoring (`eval.scoring: reference`): the upstream SentiBench scorers' decisions, reproduced.

Upstream is HITSZ-HLT/Sentiment-Distillation: `fsa.py` extracts the query's answer, one parser per
extraction task (`parse_utils/{atsa,acsa,asqp,ssa}.py`, here one module each) turns it into tuples,
and `utils.save_result` rounds each dataset's F1 to 4 decimals. Classification is already scored
as upstream does (first-token logits, sklearn's macro-F1); reference mode only adds the rounding
(and, in the engines' caller, the model's generation_config logits processors).

`reference_score` has the signature of `tasks.score` so any caller (the eval, `sentidistill score`,
the bootstrap) can switch modes with `scorer(mode)`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from sentidistill.tasks.entry import Entry
from sentidistill.tasks.example import Example
from sentidistill.tasks.metrics import Metrics, macro_f1, score
from sentidistill.tasks.reference import acsa, asqp, atsa, ssa
from sentidistill.tasks.reference.common import RefParsed, micro_f1, reference_answer

if TYPE_CHECKING:
    from sentidistill.tasks.spec import TaskSpec

Scoring = Literal["reference", "tolerant"]
SCORINGS: tuple[Scoring, ...] = ("reference", "tolerant")
ROUND = 4  # utils.save_result: round(f1, 4) per dataset and seed

REFERENCE_PARSERS: dict[str, Entry] = {
    "classify": Entry("classify", macro_f1, "first-token logits after the model's logits processors; macro-F1"),
    "atsa": Entry("extract", atsa.parse, "parse_utils/atsa.py: (term, polarity), placeholders, no repair"),
    "acsa": Entry("extract", acsa.parse, "parse_utils/acsa.py: (category, polarity), repair keeps 3"),
    "asqp": Entry("extract", asqp.parse, "parse_utils/asqp.py: 4-tuples, no polarity check, repair keeps 3"),
    "ssa": Entry("extract", ssa.parse, "parse_utils/ssa.py: raw tuples -> weighted sentiment-graph F1"),
}
_BY_GOLD = {"label": "classify", "atsa": "atsa", "acsa": "acsa", "asqp": "asqp", "ssa": "ssa"}


def reference_parser_name(task: TaskSpec) -> str | None:
    """The task's upstream scorer: `reference_parser` if set, else the one of its gold builder (None: none)."""
    return task.reference_parser or _BY_GOLD.get(task.gold_builder)


def scoring_mode(task: TaskSpec, override: str | None = None) -> Scoring:
    """Which mode scores a task: the config's `eval.scoring`, else the task's `scoring`, else
    reference for SentiBench tasks and tolerant for the others."""
    mode = override or task.scoring or ("reference" if task.benchmark == "sentibench" else "tolerant")
    if mode == "reference" and reference_parser_name(task) is None:
        raise ValueError(f"task {task.name!r}: scoring 'reference' needs a reference parser "
                         f"(set reference_parser to one of {sorted(REFERENCE_PARSERS)}) or scoring: tolerant")
    return mode  # type: ignore[return-value]


def reference_parse(task: TaskSpec, completion: str, sentence: str, prompt: str | None = None,
                    k: int = 0) -> RefParsed:
    """One completion (text after the prompt) -> the items the reference scores for it; with the
    prompt (k demonstrations), the answer is read from prompt + completion as upstream does."""
    name = reference_parser_name(task)
    if name is None or task.kind != "extract":
        raise ValueError(f"task {task.name!r} has no reference extraction parser")
    return _parse(name, completion, sentence, task.layout.input_name, task.layout.output_name, prompt, k)


@functools.lru_cache(maxsize=1 << 16)
def _parse(name: str, completion: str, sentence: str, input_name: str, output_name: str, prompt: str | None,
           k: int) -> RefParsed:
    """Cached: the bootstrap rescored the same stored outputs on every resample."""
    answer = reference_answer(completion, input_name, output_name, prompt, k)
    return REFERENCE_PARSERS[name].fn(answer, sentence, output_name)


def _as_ref(task: TaskSpec, ex: Example, p: Any) -> RefParsed:
    if isinstance(p, RefParsed):
        return p
    return reference_parse(task, "" if p is None else str(p), ex.text)


def _rounded(metrics: Metrics, f1: float) -> Metrics:
    return {**metrics, "score": round(f1, ROUND), "score_unrounded": f1}


def reference_score(task: TaskSpec, examples: Sequence[Example], predictions: Sequence[Any]) -> Metrics:
    """Upstream's metric for one dataset and seed. Extraction predictions are raw completions (str)
    or `RefParsed`; classification predictions are labels (argmax after the logits processors)."""
    if task.kind == "classify":
        m = macro_f1(task, examples, predictions)
        return _rounded(m, m["score"])
    if len(examples) != len(predictions):
        raise ValueError(f"{len(examples)} examples but {len(predictions)} predictions")
    refs = [_as_ref(task, ex, p) for ex, p in zip(examples, predictions, strict=True)]
    counts = {"n": float(len(refs)), "parse_failure_rate": sum(r.failed for r in refs) / len(refs) if refs else 0.0,
              "invalid_tuples": float(sum(v is False for r in refs for v in r.value)),
              "repaired": float(sum(r.repaired for r in refs)), "reference_crashes": float(sum(r.crashed for r in refs))}
    if reference_parser_name(task) == "ssa":
        gold = [ssa.gold_graph(ex.raw) for ex in examples]
        pred = [ssa.pred_graph(ex.text, r.value) for ex, r in zip(examples, refs, strict=True)]
        f1, precision, recall = ssa.graph_f1(gold, pred)
        extra = {"graph_f1": float(f1), "n_pred": float(sum(map(len, pred))), "n_gold": float(sum(map(len, gold)))}
    else:
        golds = [[tuple(g) for g in ex.gold or []] for ex in examples]
        f1, precision, recall = micro_f1(golds, [r.value for r in refs])
        extra = {"micro_f1": float(f1), "n_pred": float(sum(len(r.value) for r in refs)),
                 "n_gold": float(sum(map(len, golds)))}
    return _rounded({"precision": float(precision), "recall": float(recall), **extra, **counts}, float(f1))


def reference_correct(task: TaskSpec, example: Example, prediction: RefParsed) -> bool:
    """Per-item agreement in reference terms: every predicted item is gold and every gold item predicted."""
    if reference_parser_name(task) == "ssa":
        gold, pred = ssa.gold_graph(example.raw), ssa.pred_graph(example.text, prediction.value)
        return ssa.graph_f1([gold], [pred])[0] > 1 - 1e-9 or (not gold and not pred)
    gold_t = [tuple(g) for g in example.gold or []]
    return all(p in gold_t for p in prediction.value) and all(g in prediction.value for g in gold_t)


def scorer(mode: Scoring) -> Callable[[TaskSpec, Sequence[Example], Sequence[Any]], Metrics]:
    """The metric function of a scoring mode (same signature for both)."""
    return reference_score if mode == "reference" else score


__all__ = ["REFERENCE_PARSERS", "SCORINGS", "RefParsed", "Scoring", "reference_answer", "reference_correct",
           "reference_parse", "reference_parser_name", "reference_score", "scorer", "scoring_mode"]
