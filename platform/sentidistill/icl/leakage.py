"""The test-set guard: no SentiBench test sentence may reach an ICLDist prompt or target.

A student trained on test items scores what it memorised, not what it learned, and nobody
notices. So every test sentence of EVERY registered task (not only the ones built: a test
sentence of one task can sit in another task's train file) is indexed twice:
- as a whole text, normalised (lowercase, whitespace collapsed, punctuation stripped at the
  ends): catches short items such as "Good food ." shared by Rest16 train and test;
- by its first words, for sentences of at least `min_words` words: catches a test sentence
  inside a longer text (a general-instruction input, a review that quotes it, a target).
Short sentences are not searched inside texts: "you get what you pay for" is an OpeNER test
item and an everyday idiom. Whole-text matching applies to INPUTS (the texts a prompt is made
of); answers are only searched for long sentences: Rest16 has test items such as "Excellent",
"not bad" and "no", and a teacher answering "no" reveals nothing about a test item.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sentidistill.errors import StageInputError
from sentidistill.tasks import Example, TaskRegistry

_SPACE = re.compile(r"\s+")
_ENDS = re.compile(r"^\W+|\W+$")
_WORD = re.compile(r"\w+")
MAX_REPORTED = 10


def normalize(text: str) -> str:
    """Lowercase, collapse whitespace, strip punctuation at both ends ('Good food .' -> 'good food')."""
    return _ENDS.sub("", _SPACE.sub(" ", text.lower()).strip())


@dataclass(frozen=True)
class Leak:
    """One offending item: where it was built, which test item it contains."""

    task: str
    row_id: str
    test_id: str
    sentence: str

    def __str__(self) -> str:
        return f"({self.task}, {self.row_id}, {self.sentence[:120]!r} = test item {self.test_id})"


class LeakageGuard:
    """Index of test sentences; `find` is O(words of the text), so prompts can all be checked."""

    def __init__(self, tests: Iterable[Example], min_words: int):
        self.min_words = min_words
        self._exact: dict[str, Example] = {}
        self._by_prefix: dict[tuple[str, ...], list[tuple[list[str], Example]]] = defaultdict(list)
        for ex in tests:
            norm = normalize(ex.text)
            if not norm or norm in self._exact:
                continue  # punctuation-only items (OpeNER has ',') cannot be matched meaningfully
            self._exact[norm] = ex
            words = _WORD.findall(norm)
            if len(words) >= min_words:
                self._by_prefix[tuple(words[:min_words])].append((words, ex))

    @classmethod
    def from_registry(cls, registry: TaskRegistry, min_words: int) -> LeakageGuard:
        """Every registered task's test split (tasks without a readable test file raise)."""
        return cls((ex for task in registry for ex in registry.load_split(task.name, "test")), min_words)

    def __len__(self) -> int:
        return len(self._exact)

    def find(self, text: str, whole_text: bool = True) -> Example | None:
        """The test item `text` is (with whole_text), or contains (long sentences only); None when clean."""
        hit = self._exact.get(normalize(text)) if whole_text else None
        if hit is not None:
            return hit
        words = _WORD.findall(text.lower())
        n = self.min_words
        for i in range(len(words) - n + 1):
            for sentence, ex in self._by_prefix.get(tuple(words[i:i + n]), ()):
                if words[i:i + len(sentence)] == sentence:
                    return ex
        return None

    def leaks(self, items: Iterable[tuple[str, str, Sequence[str], Sequence[str]]]) -> list[Leak]:
        """(task, row id, input texts, target texts) -> the rows where a text is or holds a test item."""
        out = []
        for task, row_id, inputs, targets in items:
            hits = [self.find(t) for t in inputs if t] + [self.find(t, whole_text=False) for t in targets if t]
            ex = next((hit for hit in hits if hit is not None), None)
            if ex is not None:
                out.append(Leak(task, row_id, ex.id, ex.text))
        return out

    def check(self, items: Iterable[tuple[str, str, Sequence[str], Sequence[str]]]) -> None:
        """Raise StageInputError listing up to 10 offending (task, row id, sentence) items."""
        found = self.leaks(items)
        if found:
            shown = "\n  ".join(str(leak) for leak in found[:MAX_REPORTED])
            more = f"\n  ... and {len(found) - MAX_REPORTED} more" if len(found) > MAX_REPORTED else ""
            raise StageInputError(
                f"icldist leakage guard: {len(found)} built prompts or targets contain a SentiBench test "
                f"sentence (normalised match):\n  {shown}{more}\nRemove them from the source data "
                "(general_data files, task train files), or set icl.drop_test_overlap: true to drop "
                "train rows that hold test sentences from the pools."
            )
