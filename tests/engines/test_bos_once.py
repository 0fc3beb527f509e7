"""A chat template that writes the BOS token itself (as Llama 3's does) must not get a second one from the
tokenizer: the hf engine, the vllm engine and the training data all give the model BOS exactly once.

The tokenizer is SmolLM2's (whose template has no BOS), rebuilt locally to behave like Llama 3's: a BOS
token added by default and a template starting with `{{ bos_token }}`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from sentidistill.config import EngineConfig
from sentidistill.engines import GenerationRequest, build_engine
from sentidistill.engines.base import prompt_ids, render_messages
from sentidistill.training.data import tokenize_example

CHAT = [{"role": "user", "content": "Rate this review: great food, rude staff."}]
RAW = "Sentence: the service was slow\nLabel:"
LABELS = [" negative", " positive", " neutral"]


@pytest.fixture(scope="module")
def bos_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bos-llama")
    shutil.copytree(tiny_model, out, dirs_exist_ok=True)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    tok.bos_token = "<|endoftext|>"
    tok.add_bos_token = True
    tok.chat_template = "{{ bos_token }}" + tok.chat_template
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tok(bos_model: Path):
    t = AutoTokenizer.from_pretrained(bos_model)
    bos = t.bos_token_id
    text = render_messages(t, CHAT)
    # the trap this file guards against: tokenizer defaults on templated text give two BOS tokens
    assert text.startswith(t.bos_token) and t(text)["input_ids"][:2] == [bos, bos]
    assert t(RAW)["input_ids"][0] == bos and t(RAW)["input_ids"][1] != bos
    return t


def reference_ids(tok, messages=None, raw=None) -> list[int]:
    """What the model should see: transformers' own chat tokenization, or the tokenizer's defaults for raw text."""
    if messages is not None:
        ids = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    return tok(raw)["input_ids"]


def test_prompt_ids_gives_bos_once(tok) -> None:
    assert prompt_ids(tok, render_messages(tok, CHAT)) == reference_ids(tok, CHAT)
    assert prompt_ids(tok, RAW) == reference_ids(tok, raw=RAW)
    assert reference_ids(tok, CHAT).count(tok.bos_token_id) == 1


def test_training_examples_carry_one_bos(tok) -> None:
    chat = tokenize_example(tok, CHAT, None, "negative", apply_chat_template=True, max_seq_len=512)
    ref = reference_ids(tok, CHAT)
    assert chat.input_ids[:len(ref)] == ref and chat.input_ids.count(tok.bos_token_id) == 1
    raw = tokenize_example(tok, None, RAW, " negative", apply_chat_template=True, max_seq_len=512)
    assert raw.input_ids[:2] == reference_ids(tok, raw=RAW)[:2] and raw.input_ids.count(tok.bos_token_id) == 1


def last_logits(model_dir: Path, ids: list[int], candidates: list[str], tok) -> list[float]:
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    first = [tok.encode(c, add_special_tokens=False)[0] for c in candidates]
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0, -1, first].tolist()


def check_engine(engine, tok, bos_model: Path) -> None:
    chat, raw = engine.generate([GenerationRequest(messages=CHAT, max_new_tokens=2),
                                 GenerationRequest(prompt=RAW, max_new_tokens=2)])
    assert chat.error is None and chat.prompt_tokens == len(reference_ids(tok, CHAT))
    assert raw.error is None and raw.prompt_tokens == len(reference_ids(tok, raw=RAW))
    scores = engine.score_next_token([render_messages(tok, CHAT), RAW], LABELS)
    assert scores[0] == pytest.approx(last_logits(bos_model, reference_ids(tok, CHAT), LABELS, tok), abs=1e-4)
    assert scores[1] == pytest.approx(last_logits(bos_model, reference_ids(tok, raw=RAW), LABELS, tok), abs=1e-4)


def test_hf_engine_sees_one_bos(bos_model: Path, tok) -> None:
    engine = build_engine(EngineConfig(kind="hf", model=str(bos_model), dtype="float32", max_model_len=512))
    try:
        check_engine(engine, tok, bos_model)
    finally:
        engine.shutdown()


def test_vllm_engine_sees_one_bos(bos_model: Path, tok) -> None:
    pytest.importorskip("vllm")
    engine = build_engine(EngineConfig(kind="vllm", model=str(bos_model), dtype="float32", max_model_len=512,
                                       vllm={"max_num_seqs": 4, "cpu_kvcache_gb": 1}))
    try:
        check_engine(engine, tok, bos_model)
    finally:
        engine.shutdown()
