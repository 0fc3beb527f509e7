"""Quality control: each filter fires on its case and only there; checks parse without eval."""

from __future__ import annotations

import pytest

from sentidistill.config import QualityConfig, load_config
from sentidistill.errors import ConfigError
from sentidistill.generation.quality import KEPT, QualityFilter, repetition_share
from sentidistill.perspectives.checks import CHECKS

GOOD = "The review is positive: the author loved the soup and praised the friendly staff."


@pytest.fixture()
def qc() -> QualityFilter:
    return QualityFilter(QualityConfig())


@pytest.mark.parametrize(("response", "finish", "check", "verdict"), [
    (GOOD, "stop", None, KEPT),
    ("   ", "stop", None, "empty"),
    ("ok", "stop", None, "empty"),
    (GOOD, "length", None, "truncated"),
    ("I'm sorry, but I can't help with that request about the review.", "stop", None, "refused"),
    ("As an AI language model I have no feelings about soup at all.", "stop", None, "refused"),
    ("the food was good " * 12, "stop", None, "repetitive"),
    ("Great! " * 20, "stop", None, "repetitive"),
    (GOOD + "\n\n" + "-" * 80 + "\n\nConfidence: high", "stop", None, KEPT),
    (GOOD, "stop", "first_person", "failed_check:first_person"),
    ("I loved the soup and my friends adored the staff.", "stop", "first_person", KEPT),
    (GOOD, "stop", "mentions_polarity", KEPT),
])
def test_verdicts(qc: QualityFilter, response: str, finish: str, check: str | None, verdict: str) -> None:
    assert qc.verdict(response, finish, check) == verdict


def test_filters_can_be_switched_off() -> None:
    lax = QualityFilter(QualityConfig(drop_truncated=False, refusal_patterns=[], max_repetition=1.0, run_checks=False))
    assert lax.verdict(GOOD, "length") == KEPT
    assert lax.verdict("As an AI, I'm sorry, but I can't help with this text here.", "stop") == KEPT
    assert lax.verdict("the food was good " * 12, "stop") == KEPT
    assert lax.verdict(GOOD, "stop", "first_person") == KEPT


def test_list_and_json_checks_parse_safely() -> None:
    assert CHECKS["python_list"]('Here: [("soup", "food", "positive", "tasty")]')
    assert CHECKS["python_list"]("```python\n[('staff', 'service', 'very positive', 'friendly')]\n```")
    assert not CHECKS["python_list"]("[]") and not CHECKS["python_list"]("no list here")
    assert not CHECKS["python_list"]("[__import__('os').system('echo pwned')]")  # literal_eval refuses calls
    assert CHECKS["json"]('{"polarity": "positive"}') and CHECKS["json"]('```json\n[{"a": 1}]\n```')
    assert not CHECKS["json"]("{polarity: positive}")


def test_repetition_share_is_zero_for_normal_text() -> None:
    assert repetition_share(GOOD) == 0.0
    assert repetition_share("a b c d " * 10) == 1.0


def test_bad_refusal_regex_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"refusal_patterns\[1\]"):
        load_config(None, ["train.model.student=x", r"generate.quality.refusal_patterns=['ok', '(unclosed']"])
