"""Tokenize, mask, pack, collate: checked token by token against the real tokenizer and tiny model (no Ray)."""

from __future__ import annotations

import json
import random

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from sentidistill.errors import StageInputError
from sentidistill.training.data import (
    IGNORE_INDEX,
    bucket_examples,
    collate,
    pack_examples,
    parse_messages,
    supports_packing,
    tokenize_example,
)

MESSAGES = [{"role": "user", "content": "What is the sentiment of: 'The soup was cold and bland.'"}]
RESPONSE = "Negative: the reviewer complains that the soup was cold and had no taste."


@pytest.fixture(scope="module")
def tok(tiny_model):
    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture(scope="module")
def model(tiny_model):
    m = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32, use_safetensors=True)
    return m.eval()


def test_chat_example_labels_only_the_answer_token_by_token(tok):
    ex = tokenize_example(tok, MESSAGES, None, RESPONSE, apply_chat_template=True, max_seq_len=512)
    prompt_ids = tok(tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True))["input_ids"]
    n = len(prompt_ids)
    assert ex.status == "kept"
    assert ex.input_ids[:n] == prompt_ids  # the student is trained on exactly the prompt it sees at inference
    for i, (token, label) in enumerate(zip(ex.input_ids, ex.labels, strict=True)):
        if i < n:
            assert label == IGNORE_INDEX, f"prompt token {i} ({tok.decode([token])!r}) carries loss"
        else:
            assert label == token, f"answer token {i} ({tok.decode([token])!r}) is not a target"
    assert tok.decode(ex.input_ids[n:]) == RESPONSE + "<|im_end|>\n"  # the answer ends the assistant turn


def test_raw_prompt_answer_ends_with_eos(tok):
    prompt = "Sentence: great movie!\nLabel:"
    ex = tokenize_example(tok, None, prompt, " positive", apply_chat_template=True, max_seq_len=512)
    n = len(tok(prompt)["input_ids"])
    assert ex.labels[:n] == [IGNORE_INDEX] * n
    assert ex.labels[n:] == ex.input_ids[n:]
    assert ex.input_ids[-1] == tok.eos_token_id
    assert tok.decode(ex.input_ids[n:-1]) == " positive"


def test_no_template_uses_plain_rendering(tok):
    ex = tokenize_example(tok, MESSAGES, None, RESPONSE, apply_chat_template=False, max_seq_len=512)
    assert "<|im_start|>" not in tok.decode(ex.input_ids)
    assert ex.input_ids[-1] == tok.eos_token_id


def test_too_long_examples_are_truncated_or_dropped(tok):
    ex = tokenize_example(tok, None, "short prompt", "a long answer " * 20, apply_chat_template=True, max_seq_len=16)
    assert ex.status == "truncated" and len(ex.input_ids) == 16
    assert any(label != IGNORE_INDEX for label in ex.labels)
    ex = tokenize_example(tok, None, "a very long prompt " * 20, "answer", apply_chat_template=True, max_seq_len=16)
    assert ex.status == "dropped"


def test_malformed_messages_name_the_row():
    with pytest.raises(StageInputError, match="row 'r1'.*not valid JSON"):
        parse_messages("{not json", "r1")
    with pytest.raises(StageInputError, match="row 'r2'.*role, content"):
        parse_messages(json.dumps([{"role": "user"}]), "r2")
    assert parse_messages(None, "r3") is None


def test_loss_weight_is_zero_on_every_prompt_token(tok, model):
    """Through the model's own loss: d loss / d logits vanishes exactly where the next token is a prompt token."""
    ex = tokenize_example(tok, MESSAGES, None, RESPONSE, apply_chat_template=True, max_seq_len=512)
    out = model(input_ids=torch.tensor([ex.input_ids]), labels=torch.tensor([ex.labels]))
    out.logits.retain_grad()
    out.loss.backward()
    grad_norm = out.logits.grad[0].abs().sum(-1)  # position t predicts token t + 1
    for t in range(len(ex.input_ids) - 1):
        weighted = bool(grad_norm[t] > 0)
        assert weighted == (ex.labels[t + 1] != IGNORE_INDEX), f"position {t}: weighted={weighted}"
    assert grad_norm[-1] == 0


def _random_examples(n: int, seed: int) -> list[tuple[list[int], list[int]]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        p, a = rng.randint(1, 20), rng.randint(1, 12)
        ids = [rng.randint(10, 4000) for _ in range(p + a)]
        out.append((ids, [IGNORE_INDEX] * p + ids[p:]))
    return out


def _segments(row: dict) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    starts = [i for i, pos in enumerate(row["position_ids"]) if pos == 0] + [len(row["input_ids"])]
    return [(tuple(row["input_ids"][a:b]), tuple(row["labels"][a:b])) for a, b in zip(starts, starts[1:])]


@pytest.mark.parametrize("max_seq_len", [32, 64])
def test_packing_keeps_every_token_exactly_once(max_seq_len):
    examples = _random_examples(60, seed=max_seq_len)
    rows = pack_examples(examples, max_seq_len)
    assert all(len(r["input_ids"]) <= max_seq_len for r in rows)
    unpacked = sorted(seg for r in rows for seg in _segments(r))
    assert unpacked == sorted((tuple(i), tuple(lab)) for i, lab in examples)
    assert sum(r["num_tokens"] for r in rows) == sum(len(i) for i, _ in examples)
    assert sum(r["num_examples"] for r in rows) == len(examples)
    assert len(rows) < len(examples)  # rows were actually shared
    assert len(bucket_examples(examples)) == len(examples)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])  # every train.model.attn_implementation that runs on CPU
def test_packed_forward_equals_separate_forwards(tiny_model, attn):
    """No token attends across examples: a packed micro-batch gives each example the logits it gets alone."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32, attn_implementation=attn).eval()
    examples = _random_examples(5, seed=1)
    rows = pack_examples(examples, 48)
    assert len(rows) > 1 and any(r["num_examples"] > 1 for r in rows)  # micro_batch_size > 1, packed rows
    batch = collate({k: [r[k] for r in rows] for k in rows[0]}, pad_id=0, packed=True)
    assert "attention_mask" not in batch
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        start = 0
        for row in rows:
            for ids, _ in _segments(row):
                alone = model(input_ids=torch.tensor([ids])).logits[0]
                torch.testing.assert_close(packed[0, start:start + len(ids)], alone, atol=1e-5, rtol=1e-4)
                start += len(ids)
    assert start == packed.shape[1]


def test_packed_micro_batch_gives_flash_attention_the_example_boundaries():
    """flash_attention_2 (no kernel here) only separates packed examples when transformers sees one flattened
    row: it then builds varlen cu_seqlens from the position ids. Checked with transformers' own functions."""
    from transformers.modeling_flash_attention_utils import _is_packed_sequence, prepare_fa_kwargs_from_position_ids

    examples = _random_examples(7, seed=2)
    rows = pack_examples(examples, 40)
    assert len(rows) > 1
    batch = collate({k: [r[k] for r in rows] for k in rows[0]}, pad_id=0, packed=True)
    pos = batch["position_ids"]
    assert batch["input_ids"].shape == pos.shape == batch["labels"].shape == (1, sum(len(i) for i, _ in examples))
    assert bool(_is_packed_sequence(pos, batch_size=batch["input_ids"].shape[0]))
    (cu_q, _), _ = prepare_fa_kwargs_from_position_ids(pos)
    lengths = [len(ids) for row in rows for ids, _ in _segments(row)]
    assert cu_q.diff().tolist() == lengths


def test_collate_pads_with_ignored_labels():
    rows = [r for r in pack_examples(_random_examples(6, seed=3), 40)]
    batch = collate({k: [r[k] for r in rows] for k in rows[0]}, pad_id=7, packed=False)
    width = max(len(r["input_ids"]) for r in rows)
    assert batch["input_ids"].shape == (len(rows), width)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        assert batch["attention_mask"][i].sum() == n
        assert (batch["labels"][i, n:] == IGNORE_INDEX).all() and (batch["input_ids"][i, n:] == 7).all()


def test_llama_supports_packing(tiny_model):
    assert supports_packing(str(tiny_model))


def test_packed_loss_is_the_token_mean_of_separate_losses(tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    examples = _random_examples(4, seed=5)
    rows = pack_examples(examples, 64)
    batch = collate({k: [r[k] for r in rows] for k in rows[0]}, pad_id=0, packed=True)
    with torch.no_grad():
        packed = model(**batch, use_cache=False).loss
        total, count = 0.0, 0
        for ids, labels in examples:
            n = sum(lab != IGNORE_INDEX for lab in labels[1:])
            total += model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss.item() * n
            count += n
    assert packed.item() == pytest.approx(total / count, rel=1e-4)


def test_flash_attention_without_gpu_workers_is_refused_at_config_time():
    from pydantic import ValidationError

    from sentidistill.config import TrainConfig

    with pytest.raises(ValidationError, match="train.model.attn_implementation: flash_attention_2 runs on GPU only"):
        TrainConfig(model={"attn_implementation": "flash_attention_2"})
    gpu = TrainConfig(model={"attn_implementation": "flash_attention_2"}, resources={"use_gpu": True})
    assert gpu.model.attn_implementation == "flash_attention_2"
