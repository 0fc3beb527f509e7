"""Per-token log-probabilities of a completion, built the same way by every engine that returns them.

An engine hands over the generated token ids (without the end-of-sequence token), each one's
log-probability and the ids and log-probabilities of the most likely tokens at each step; this
module turns them into `TokenLogprob`s whose texts add up to the completion's text (a token ending
inside a multi-byte character shows as "" and the next one carries the whole character), cut where
the returned text ends (stop strings).
"""

from __future__ import annotations

import math
from typing import Any

from sentidistill.engines.base import LOGPROB_FLOOR, TokenLogprob

CONTEXT_TOKENS = 4  # tokens of left context when decoding an alternative (word-start spaces, byte pieces)


def finite(logprob: float) -> float:
    """JSON has no -inf or NaN: a ruled-out token gets LOGPROB_FLOOR (as OpenAI does)."""
    return logprob if not math.isnan(logprob) and logprob >= LOGPROB_FLOOR else LOGPROB_FLOOR


def token_pieces(tokenizer: Any, ids: list[int]) -> list[str]:
    """The text each token adds to `tokenizer.decode(ids, skip_special_tokens=True)`, in order."""
    pieces: list[str] = []
    emitted = ""
    for i in range(len(ids)):
        text = tokenizer.decode(ids[:i + 1], skip_special_tokens=True)
        if text.endswith("\ufffd"):  # inside a multi-byte character: the token completing it carries it
            pieces.append("")
        elif text.startswith(emitted):
            pieces.append(text[len(emitted):])
            emitted = text
        else:  # the tokenizer rewrote earlier text (clean-up of spaces): this token's own text
            pieces.append(tokenizer.decode([ids[i]], skip_special_tokens=True))
            emitted = text
    whole = tokenizer.decode(ids, skip_special_tokens=True)
    if pieces and whole.startswith(emitted) and len(whole) > len(emitted):
        pieces[-1] += whole[len(emitted):]  # a last, incomplete character (the budget ran out inside it)
    return pieces


def alternative_text(tokenizer: Any, context: list[int], token: int) -> str:
    """What `token` would have added after `context` (special tokens shown as themselves, e.g. '</s>')."""
    left = context[-CONTEXT_TOKENS:]
    before = tokenizer.decode(left, skip_special_tokens=False)
    after = tokenizer.decode([*left, token], skip_special_tokens=False)
    return after[len(before):] if after.startswith(before) else tokenizer.decode([token], skip_special_tokens=False)


def build_logprobs(tokenizer: Any, ids: list[int], chosen: list[float], top: list[list[tuple[int, float]]],
                   text: str) -> list[TokenLogprob]:
    """Entries for the tokens of `text` (the completion as returned); `top[i]` is step i's most likely
    (id, logprob), most likely first (empty lists when no alternatives were asked for)."""
    out: list[TokenLogprob] = []
    offset = 0
    for i, piece in enumerate(token_pieces(tokenizer, ids)):
        if offset >= len(text):
            break  # the rest was cut by a stop string
        alts = [(piece if t == ids[i] else alternative_text(tokenizer, ids[:i], t), finite(lp))  # chosen: as above
                for t, lp in top[i]] if top else []
        out.append(TokenLogprob(piece, finite(chosen[i]), alts))
        offset += len(piece)
    return out
