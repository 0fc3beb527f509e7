"""The model's own generation_config in both engines: label logits after its logits processors (what
the reference scores: `generate(...).scores[0]`), and greedy decoding with them in hf and vLLM alike.

Uses a copy of the tiny model whose generation_config sets `repetition_penalty`, as several instruct
models do. One vLLM engine for the module (starting it costs ~20-40 s here).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from sentidistill.config import EngineConfig
from sentidistill.engines import GenerationRequest, build_engine
from sentidistill.engines.base import first_token_ids, prompt_ids
from sentidistill.engines.gen_config import apply_processors, context_length, greedy_processors
from sentidistill.evaluation.udf import EvalUDF

PENALTY = 1.3
LABELS = [" negative", " positive", " neutral"]
PROMPTS = [  # the labels occur in the prompts, so the penalty moves their logits
    "Sentence: great food\nLabel: positive\n\nSentence: awful service\nLabel:",
    "Sentence: it was fine\nLabel: neutral\n\nSentence: rude and slow, never again\nLabel: negative\n\nSentence: ok\nLabel:",
    "Sentence: the soup was cold\nLabel:",
]


@pytest.fixture(scope="module")
def penalized(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import GenerationConfig

    out = tmp_path_factory.mktemp("tiny-penalty")
    shutil.copytree(tiny_model, out, dirs_exist_ok=True)
    gen = GenerationConfig.from_pretrained(tiny_model)
    gen.repetition_penalty = PENALTY
    gen.save_pretrained(out)
    return out


def rows(prompts: list[str], kind: str) -> dict[str, list]:
    return {"part": ["t/seed-42"] * len(prompts), "idx": list(range(len(prompts))), "kind": [kind] * len(prompts),
            "prompt": prompts, "chat": [False] * len(prompts),
            "candidates": [json.dumps(LABELS) if kind == "classify" else None] * len(prompts),
            "max_new_tokens": [1 if kind == "classify" else 12] * len(prompts)}


def test_processors_match_transformers_own(tiny_model: Path) -> None:
    """apply_processors == transformers' processors on one step (penalty, n-gram ban, suppression)."""
    from transformers.generation.logits_process import (
        LogitsProcessorList, NoRepeatNGramLogitsProcessor, RepetitionPenaltyLogitsProcessor,
        SuppressTokensAtBeginLogitsProcessor, SuppressTokensLogitsProcessor,
    )

    torch.manual_seed(0)
    ids = [5, 9, 5, 7, 3, 5, 9]
    logits = torch.randn(1, 20)
    settings = {"repetition_penalty": 1.7, "no_repeat_ngram_size": 3, "suppress_tokens": [11],
                "begin_suppress_tokens": [12]}
    theirs = LogitsProcessorList([
        RepetitionPenaltyLogitsProcessor(1.7), NoRepeatNGramLogitsProcessor(3),
        SuppressTokensLogitsProcessor([11]), SuppressTokensAtBeginLogitsProcessor([12], len(ids)),
    ])(torch.tensor([ids]), logits.clone())[0].tolist()
    ours = apply_processors(settings, ids, list(range(20)), logits[0].tolist())
    assert [round(v, 5) for v in ours] == [round(v, 5) for v in theirs]
    assert math.isinf(ours[5]) and math.isinf(ours[11]) and math.isinf(ours[12])  # 5 would repeat (5, 9, 5)


def test_hf_reference_scores_are_generate_scores0(penalized: Path, tiny_model: Path) -> None:
    udf = EvalUDF(EngineConfig(kind="hf", model=str(penalized), dtype="float32", resources={"batch_size": 4}))
    try:
        assert udf.engine.max_model_len == context_length(penalized) == 4096  # default: the model's own context
        assert json.loads(udf.processor_note) == {"applied": {"repetition_penalty": PENALTY}, "not_applied": []}
        out = udf(rows(PROMPTS, "classify"))
        eng, ids = udf.engine, first_token_ids(udf.engine.tokenizer, LABELS)
        moved = 0
        for i, prompt in enumerate(PROMPTS):
            enc = torch.tensor([prompt_ids(eng.tokenizer, prompt)])
            gen = eng.model.generate(enc, attention_mask=torch.ones_like(enc), max_new_tokens=1, do_sample=False,
                                     output_scores=True, output_logits=True, return_dict_in_generate=True,
                                     pad_token_id=eng.tokenizer.pad_token_id)
            processed, raw = json.loads(out["processed_scores"][i]), json.loads(out["scores"][i])
            assert processed == pytest.approx(gen.scores[0][0, ids].tolist(), abs=1e-4)  # the reference's numbers
            assert raw == pytest.approx(gen.logits[0][0, ids].tolist(), abs=1e-4)  # tolerant mode: raw logits
            moved += sum(abs(p - r) > 1e-6 for p, r in zip(processed, raw))
        assert moved >= 3  # the penalty really changed the compared logits
        assert json.loads(out["logit_processors"][0])["applied"] == {"repetition_penalty": PENALTY}
    finally:
        udf.close()
    plain = EvalUDF(EngineConfig(kind="hf", model=str(tiny_model), dtype="float32", resources={"batch_size": 4}))
    try:
        out = plain(rows(PROMPTS[:1], "classify"))
        assert out["processed_scores"] == [None] and json.loads(out["logit_processors"][0])["applied"] == {}
    finally:
        plain.close()


def test_vllm_and_hf_agree_with_the_models_generation_config(penalized: Path, tiny_model: Path) -> None:
    pytest.importorskip("vllm")
    common = {"model": str(penalized), "dtype": "float32", "resources": {"batch_size": 4}}
    hf = EvalUDF(EngineConfig(kind="hf", **common))
    try:
        hf_cls, hf_gen = hf(rows(PROMPTS, "classify")), hf(rows(PROMPTS, "extract"))
        plain = build_engine(EngineConfig(kind="hf", **{**common, "model": str(tiny_model)}))
        unpenalized = [c.text for c in plain.generate([GenerationRequest(prompt=p, max_new_tokens=12) for p in PROMPTS])]
        plain.shutdown()
    finally:
        hf.close()
    assert unpenalized != hf_gen["output"]  # the penalty changes greedy text on this model: the check can fail
    vl = EvalUDF(EngineConfig(kind="vllm", **common, vllm={"max_num_seqs": 8, "cpu_kvcache_gb": 1}))
    try:
        assert vl.engine.max_model_len == 4096
        assert json.loads(vl.processor_note)["applied"] == {"repetition_penalty": PENALTY}
        vl_cls, vl_gen = vl(rows(PROMPTS, "classify")), vl(rows(PROMPTS, "extract"))
    finally:
        vl.close()
    assert vl_gen["output"] == hf_gen["output"]  # same greedy decoding, generation_config honoured in both
    for i in range(len(PROMPTS)):
        assert json.loads(vl_cls["processed_scores"][i]) == pytest.approx(json.loads(hf_cls["processed_scores"][i]),
                                                                          abs=1e-3)
        assert json.loads(vl_cls["scores"][i]) == pytest.approx(json.loads(hf_cls["scores"][i]), abs=1e-3)


def test_unsupported_processors_are_reported_not_silent() -> None:
    from transformers import GenerationConfig

    applied, skipped = greedy_processors(GenerationConfig(repetition_penalty=1.1, sequence_bias={(5,): 1.0}))
    assert applied == {"repetition_penalty": 1.1} and skipped == ["sequence_bias"]
