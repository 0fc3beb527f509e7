"""Token-by-token text from the hf engine's batched `generate` (a transformers streamer per call).

transformers' `TextIteratorStreamer` takes one row; `RowStreamer` takes the whole batch: after each
step it decodes every unfinished row and sends the text that can no longer change, so what was sent
is always a prefix of the completion's final text: a half-done multi-byte character waits for its
last token, and the last (longest stop string - 1) characters wait until no stop string can start
in them (the completion is cut before a stop string). `finish` sends the rest of the final text.
`Cancelled` ends the call at the next step once nobody waits for it.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from transformers import StoppingCriteria
from transformers.generation.streamers import BaseStreamer

from sentidistill.engines.base import TextStream
from sentidistill.engines.stop_strings import first_stop

log = logging.getLogger("sentidistill")


class RowStreamer(BaseStreamer):
    """Sends each row's settled text to `stream` (row r of this call is `stream`'s request r)."""

    def __init__(self, tokenizer: Any, stream: TextStream, rows: int, stops: tuple[str, ...], eos_ids: set[int]):
        self.tokenizer = tokenizer
        self.stream = stream
        self.stops = stops
        self.eos_ids = eos_ids
        self.hold = max((len(s) for s in stops), default=1) - 1
        self.ids: list[list[int]] = [[] for _ in range(rows)]
        self.sent = [""] * rows
        self.done = [False] * rows

    def put(self, value: torch.Tensor) -> None:
        if value.dim() > 1:  # generate first hands over the prompts (batch x length)
            return
        for row, token in enumerate(value.tolist()):
            if self.done[row]:
                continue
            if token in self.eos_ids:
                self.done[row] = True
                continue
            self.ids[row].append(token)
            text = self.tokenizer.decode(self.ids[row], skip_special_tokens=True)
            if text.endswith("\ufffd"):  # a multi-byte character still in progress
                continue
            cut = first_stop(text, self.stops)
            if cut is not None:
                text, self.done[row] = text[:cut], True
            else:
                text = text[:max(0, len(text) - self.hold)]
            self._send(row, text)

    def end(self) -> None:
        """Nothing: the final texts (after the engine's own stop handling) come through `finish`."""

    def finish(self, row: int, text: str) -> None:
        """The completion's final text: send what was not sent yet."""
        if not text.startswith(self.sent[row]):  # never expected: the streamed text was not a prefix
            log.warning("streamed text of row %d is not a prefix of its completion; the rest is not sent", row)
            return
        self._send(row, text)

    def _send(self, row: int, text: str) -> None:
        if len(text) > len(self.sent[row]) and text.startswith(self.sent[row]):
            self.stream.emit(row, text[len(self.sent[row]):])
            self.sent[row] = text


class Cancelled(StoppingCriteria):
    """Stops every row once `stream.cancelled()` (the client left or timed out)."""

    def __init__(self, stream: TextStream):
        self.stream = stream

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.stream.cancelled(), dtype=torch.bool, device=input_ids.device)
