"""The model's own decoding settings (its `generation_config`) and context length, for every engine.

Why: the SentiBench reference scores labels from `generate(...).scores[0]`, i.e. after the logits
processors the model's generation_config switches on for greedy decoding (several instruct models
set `repetition_penalty`), and it decodes extraction answers with them. `greedy_processors` reads
those settings, `apply_processors` applies them to a prompt's candidate logits exactly as
transformers does, so the hf and vllm engines' label scores agree with the reference and with
each other; `vllm_sampling_defaults` hands vLLM the ones it can apply while generating.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

# Applied to first-token label logits (both engines) and, where vLLM has the knob, to generation.
SUPPORTED = ("repetition_penalty", "no_repeat_ngram_size", "suppress_tokens", "begin_suppress_tokens")
# Greedy-time processors we do not reproduce: reported (metrics.json `logit_processors.not_applied`), never silent.
UNSUPPORTED = ("encoder_repetition_penalty", "encoder_no_repeat_ngram_size", "bad_words_ids", "sequence_bias",
               "guidance_scale", "exponential_decay_length_penalty")
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def load_generation_config(path: str | Path) -> Any:
    """The folder's generation_config.json, else the defaults transformers derives from config.json."""
    from transformers import AutoConfig, GenerationConfig

    try:
        return GenerationConfig.from_pretrained(str(path))
    except OSError:
        return GenerationConfig.from_model_config(AutoConfig.from_pretrained(str(path)))


def context_length(path: str | Path) -> int:
    """The model's own context length (config.json), the default eval max_model_len."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(str(path))
    cfg = getattr(cfg, "text_config", None) or cfg
    for key in _CONTEXT_KEYS:
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ValueError(f"model {str(path)!r}: config.json states no context length ({', '.join(_CONTEXT_KEYS)}); "
                     "set engine.max_model_len")


def greedy_processors(gen_cfg: Any) -> tuple[dict[str, Any], list[str]]:
    """(settings we apply, settings set but not applied) among the greedy-time logits processors."""
    applied: dict[str, Any] = {}
    penalty = getattr(gen_cfg, "repetition_penalty", None)
    if penalty is not None and float(penalty) != 1.0:
        applied["repetition_penalty"] = float(penalty)
    ngram = getattr(gen_cfg, "no_repeat_ngram_size", None)
    if ngram:
        applied["no_repeat_ngram_size"] = int(ngram)
    for key in ("suppress_tokens", "begin_suppress_tokens"):
        if getattr(gen_cfg, key, None):
            applied[key] = [int(t) for t in getattr(gen_cfg, key)]
    skipped = [k for k in UNSUPPORTED if getattr(gen_cfg, k, None) not in (None, 1.0, 0, [], {})]
    return applied, skipped


def _banned_ngram_tokens(ids: list[int], n: int) -> set[int]:
    """NoRepeatNGramLogitsProcessor: tokens that would complete an n-gram already in `ids`."""
    if n < 1 or len(ids) + 1 < n:
        return set()
    prefix = tuple(ids[len(ids) - n + 1:]) if n > 1 else ()
    return {ids[i + n - 1] for i in range(len(ids) - n + 1) if tuple(ids[i:i + n - 1]) == prefix}


def apply_processors(settings: dict[str, Any], prompt_ids: list[int], candidate_ids: list[int],
                     logits: list[float]) -> list[float]:
    """Candidate logits after the processors, as transformers' greedy `generate` computes scores[0]."""
    out = [float(v) for v in logits]
    penalty = settings.get("repetition_penalty")
    if penalty:
        seen = set(prompt_ids)
        out = [(v * penalty if v < 0 else v / penalty) if c in seen else v for v, c in zip(out, candidate_ids)]
    banned = _banned_ngram_tokens(prompt_ids, settings.get("no_repeat_ngram_size") or 0)
    banned |= set(settings.get("suppress_tokens") or []) | set(settings.get("begin_suppress_tokens") or [])
    return [-math.inf if c in banned else v for v, c in zip(out, candidate_ids)]


def vllm_sampling_defaults(gen_cfg: Any, sampling: bool) -> dict[str, Any]:
    """SamplingParams fields from the generation_config, so vLLM decodes as transformers' generate
    does with the same config: the repetition penalty always, top_k / min_p when sampling."""
    out: dict[str, Any] = {}
    penalty = getattr(gen_cfg, "repetition_penalty", None)
    if penalty is not None and float(penalty) != 1.0:
        out["repetition_penalty"] = float(penalty)
    if sampling:
        if getattr(gen_cfg, "top_k", None):
            out["top_k"] = int(gen_cfg.top_k)
        if getattr(gen_cfg, "min_p", None):
            out["min_p"] = float(gen_cfg.min_p)
    return out
