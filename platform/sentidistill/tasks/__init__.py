"""Tasks as data: the SentiBench registry, prompts, parsers and metrics (pure Python, no models).

>>> from sentidistill.tasks import load_registry, build_prompt, sample_demos
>>> from sentidistill.tasks.splits import load_split
>>> reg = load_registry()
>>> task = reg.get("imdb")
>>> train, test = load_split(task, "train"), load_split(task, "test")
>>> demos = sample_demos(task, train, test, seed=42)
>>> prompt = build_prompt(task, demos[0], test[0])   # the protocol's prompt, byte for byte
"""

from sentidistill.tasks.example import Example
from sentidistill.tasks.metrics import METRICS, agrees, score, seed_summary, summarize
from sentidistill.tasks.parsers import PARSERS, Parsed, parse_output
from sentidistill.tasks.prompts import (
    as_messages, build_prompt, classification_candidates, gold_text, instruction_text, sample_demos, sample_variant,
)
from sentidistill.tasks.registry import TaskRegistry, load_registry, load_spec
from sentidistill.tasks.spec import TaskSpec
from sentidistill.tasks.variant import CANONICAL, PromptVariant

__all__ = [
    "CANONICAL", "METRICS", "PARSERS", "Example", "Parsed", "PromptVariant", "TaskRegistry", "TaskSpec",
    "agrees", "as_messages", "build_prompt", "classification_candidates", "gold_text", "instruction_text",
    "load_registry", "load_spec", "parse_output", "sample_demos", "sample_variant", "score", "seed_summary",
    "summarize",
]
