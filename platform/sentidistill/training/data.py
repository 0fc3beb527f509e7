"""Examples -> token ids with the loss on the answer only -> packed rows -> model batches.

Pure functions (no Ray), so each rule is tested token by token:
- the prompt is formatted exactly as the student sees it at inference (chat template for
  `messages`, raw text for `prompt`), the answer follows it and ends the turn;
- labels are IGNORE_INDEX on every prompt token and on each example's first token, so no
  example is ever trained to continue the previous one in a packed row;
- packed rows restart `position_ids` at 0 per example, and a packed micro-batch is flattened
  into one row: transformers derives a block-diagonal mask from them (sdpa/eager) or varlen
  attention (flash-attention, which reads them only for a single row), so examples never
  see each other.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from sentidistill.engines.base import prompt_ids, render_messages
from sentidistill.errors import StageInputError

IGNORE_INDEX = -100
Status = Literal["kept", "truncated", "dropped"]


@dataclass
class Example:
    """One tokenized example; `status` says whether it fit max_seq_len."""

    input_ids: list[int]
    labels: list[int]
    status: Status


def parse_messages(raw: str | None, row_id: str) -> list[dict[str, str]] | None:
    """The `messages` column is a JSON string; a malformed one names the row."""
    if raw is None:
        return None
    try:
        messages = json.loads(raw)
    except json.JSONDecodeError as e:
        raise StageInputError(f"row {row_id!r}: column 'messages' is not valid JSON ({e})") from None
    if not isinstance(messages, list) or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in messages
    ):
        raise StageInputError(f"row {row_id!r}: column 'messages' must be a JSON list of {{role, content}} objects")
    return messages


def format_example(
    tokenizer: Any, messages: list[dict[str, str]] | None, prompt: str | None, response: str,
    apply_chat_template: bool,
) -> tuple[str, str, bool]:
    """(prompt text, answer text, append eos?) as the student will see them at inference.

    With a chat template the answer is whatever the template appends for the assistant turn
    (the response plus its end-of-turn tokens), so the student learns to stop the way the
    template expects; raw prompts and template-less tokenizers get the eos token instead.
    """
    if messages is not None:
        if apply_chat_template and getattr(tokenizer, "chat_template", None):
            prompt_text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            full = tokenizer.apply_chat_template(
                [*messages, {"role": "assistant", "content": response}], tokenize=False
            )
            if full.startswith(prompt_text) and len(full) > len(prompt_text):
                return prompt_text, full[len(prompt_text):], False
            return prompt_text, response, True
        return render_messages(tokenizer, messages, apply_template=False), response, True
    if prompt is None:
        raise StageInputError("a training row has neither 'messages' nor 'prompt'")
    return prompt, response, True


def tokenize_example(
    tokenizer: Any, messages: list[dict[str, str]] | None, prompt: str | None, response: str, *,
    apply_chat_template: bool, max_seq_len: int,
) -> Example:
    """Token ids and labels; labels copy the answer tokens and hide everything else.

    The prompt is tokenized on its own, as the engines do at inference (`prompt_ids`: BOS once,
    whether or not the chat template writes it), so its tokens are exactly those the student will be given.
    Too long: cut from the right while an answer token survives, else dropped.
    """
    prompt_text, answer_text, add_eos = format_example(tokenizer, messages, prompt, response, apply_chat_template)
    prompt_tokens = prompt_ids(tokenizer, prompt_text)
    answer_ids = tokenizer(answer_text, add_special_tokens=False)["input_ids"]
    if add_eos and tokenizer.eos_token_id is not None:
        answer_ids = [*answer_ids, tokenizer.eos_token_id]
    input_ids = prompt_tokens + answer_ids
    labels = [IGNORE_INDEX] * len(prompt_tokens) + list(answer_ids)
    labels[0] = IGNORE_INDEX  # nothing inside the example predicts its first token
    status: Status = "kept"
    if len(input_ids) > max_seq_len:
        input_ids, labels = input_ids[:max_seq_len], labels[:max_seq_len]
        status = "truncated"
    if all(t == IGNORE_INDEX for t in labels):
        status = "dropped"
    return Example(input_ids, labels, status)


def pack_examples(examples: list[tuple[list[int], list[int]]], max_seq_len: int) -> list[dict[str, Any]]:
    """First-fit decreasing: fill rows of <= max_seq_len tokens; every token lands in exactly one row."""
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i][0]))
    bins: list[list[int]] = []
    free: list[int] = []
    for i in order:
        n = len(examples[i][0])
        for b, space in enumerate(free):
            if n <= space:
                bins[b].append(i)
                free[b] -= n
                break
        else:
            bins.append([i])
            free.append(max_seq_len - n)
    return [_concat([examples[i] for i in members]) for members in bins]


def bucket_examples(examples: list[tuple[list[int], list[int]]]) -> list[dict[str, Any]]:
    """No packing: one example per row, longest first, so neighbouring rows pad little."""
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i][0]))
    return [_concat([examples[i]]) for i in order]


def _concat(members: list[tuple[list[int], list[int]]]) -> dict[str, Any]:
    input_ids: list[int] = []
    labels: list[int] = []
    position_ids: list[int] = []
    for ids, labs in members:
        input_ids += ids
        labels += labs
        position_ids += range(len(ids))
    return {
        "input_ids": input_ids, "labels": labels, "position_ids": position_ids,
        "num_examples": len(members), "num_tokens": len(input_ids),
        "num_answer_tokens": sum(t != IGNORE_INDEX for t in labels),
    }


def collate(batch: dict[str, Any], pad_id: int, packed: bool) -> dict[str, Any]:
    """Rows of unequal length -> tensors for the model.

    Packed rows are flattened into ONE row of shape (1, total tokens), no padding, with
    `position_ids` restarting at 0 per example and no attention mask: transformers then keeps
    examples apart for every attention implementation (sdpa/eager: a block-diagonal mask from
    the position ids; flash_attention_2: varlen kernels, which it derives from position ids
    only for a batch of one row, as with DataCollatorWithFlattening). Each example's first
    label is IGNORE_INDEX, so the loss never predicts across a boundary.
    Unpacked rows are padded, with a plain 2D padding mask.
    """
    import torch

    if packed:
        return {k: torch.from_numpy(np.concatenate([np.asarray(r, dtype=np.int64) for r in batch[k]])[None])
                for k in ("input_ids", "labels", "position_ids")}
    rows = [np.asarray(r, dtype=np.int64) for r in batch["input_ids"]]
    labels = [np.asarray(r, dtype=np.int64) for r in batch["labels"]]
    width = max(len(r) for r in rows)
    n = len(rows)
    ids = np.full((n, width), pad_id, dtype=np.int64)
    lab = np.full((n, width), IGNORE_INDEX, dtype=np.int64)
    mask = np.zeros((n, width), dtype=np.int64)
    for i, (r, l) in enumerate(zip(rows, labels, strict=True)):
        ids[i, : len(r)], lab[i, : len(r)], mask[i, : len(r)] = r, l, 1
    return {"input_ids": torch.from_numpy(ids), "labels": torch.from_numpy(lab),
            "attention_mask": torch.from_numpy(mask)}


def supports_packing(model_dir: str, trust_remote_code: bool = False) -> bool:
    """Whether the model builds its attention mask with transformers' `create_causal_mask`.

    Those models detect packed sequences from restarting position_ids (sdpa, eager, flex) and
    flash-attention uses them for varlen kernels; other (e.g. remote-code) models would
    attend across examples, so they get length bucketing instead.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    try:
        cls = AutoModelForCausalLM._model_mapping[type(config)]
    except KeyError:
        return False
    module = importlib.import_module(cls.__module__)
    return hasattr(module, "create_causal_mask")
