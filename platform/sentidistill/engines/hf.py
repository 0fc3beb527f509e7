"""transformers engine: CPU or GPU, batched, left padding, safetensors only; streams text token by token
(`generate_streaming`, hf_stream) and returns per-token log-probabilities (step_logprobs) when asked."""

from __future__ import annotations

import time
from typing import Any
from itertools import groupby

import torch

from sentidistill.config import EngineConfig, HFEngineConfig
from sentidistill.engines.base import (
    Capabilities, Completion, Engine, EngineDeadError, GenerationRequest, TextStream, first_token_ids, prompt_ids,
    render_messages,
)
from sentidistill.engines.gen_config import context_length
from sentidistill.engines.prefix_cache import PrefixCache
from sentidistill.engines.seeded_sampling import SeededSampler
from sentidistill.engines.stop_strings import first_stop, stop_criteria
from sentidistill.models import resolve_model


MIN_TEMPERATURE = 0.01  # vLLM's floor for temperature > 0 (sampling_params._MAX_TEMP)


def resolve_dtype(name: str, device: str) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def token_batches(idx: list[int], lengths: list[int], max_rows: int, max_tokens: int | None) -> list[list[int]]:
    """`idx` cut in order into batches of at most `max_rows` whose padded size (rows x longest) stays within
    `max_tokens`: a few long prompts per pass, many short ones. A prompt over the budget runs alone."""
    batches: list[list[int]] = []
    chunk: list[int] = []
    longest = 0
    for i, n in zip(idx, lengths, strict=True):
        wider = max(longest, n)
        if chunk and (len(chunk) >= max_rows or (max_tokens is not None and wider * (len(chunk) + 1) > max_tokens)):
            batches.append(chunk)
            chunk, wider = [], n
        chunk.append(i)
        longest = wider
    if chunk:
        batches.append(chunk)
    return batches


class HFEngine(Engine):
    kind = "hf"
    capabilities = Capabilities(loads_model=True, scores_labels=True, answers_any_prompt=True, caches_prefixes=True,
                                returns_logprobs=True)

    def __init__(self, cfg: EngineConfig, cache_dir: str | None = None):
        super().__init__(cfg, cache_dir)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if not cfg.model:
            raise ValueError("engine 'hf' needs a model (engine.model)")
        self.model_path = resolve_model(cfg.model, cache_dir)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path, trust_remote_code=cfg.trust_remote_code)
        self.tokenizer.padding_side = "left"
        self.tokenizer.truncation_side = "left"  # keep the query end of over-long prompts
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(
            self.model_path,
            dtype=resolve_dtype(cfg.dtype, self.device),
            trust_remote_code=cfg.trust_remote_code,
            use_safetensors=True,
        ).to(self.device)
        self.model.eval()
        # None = the model's own context length (the reference never cuts a prompt)
        self.max_model_len = cfg.max_model_len or context_length(self.model_path)
        # Reusing a prefix's KV assumes plain full-attention layers (no sliding windows, no recurrent state).
        plain = not getattr(self.model.config, "sliding_window", None) and "sliding_attention" not in str(
            getattr(self.model.config, "layer_types", None) or "")
        opts = cfg.hf or HFEngineConfig()
        self.prefix_cache = PrefixCache(opts.prefix_cache_entries if plain else 0, opts.prefix_cache_min_tokens)

    @property
    def weights_dtype(self) -> str:
        return str(self.model.dtype).removeprefix("torch.")

    @property
    def chat_tokenizer(self) -> Any:
        return self.tokenizer

    @property
    def generation_config(self) -> Any:
        return self.model.generation_config

    # helpers ---------------------------------------------------------------
    def _prompt_text(self, req: GenerationRequest) -> str:
        return req.prompt if req.prompt is not None else render_messages(self.tokenizer, req.messages or [])

    def _encode(self, texts: list[str], budget: int) -> dict[str, torch.Tensor]:
        # BOS once (prompt_ids), the last max_model_len - budget tokens kept, left padding.
        limit = max(8, self.max_model_len - budget)
        ids = [prompt_ids(self.tokenizer, t)[-limit:] for t in texts]
        enc = self.tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt")
        return {k: v.to(self.device) for k, v in enc.items()}

    # Engine API ------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, requests: list[GenerationRequest]) -> list[Completion]:
        return self._generate(requests, None)

    @torch.inference_mode()
    def generate_streaming(self, requests: list[GenerationRequest], stream: TextStream) -> list[Completion]:
        """Token by token: each call's rows send their settled text after every step (hf_stream.RowStreamer)."""
        return self._generate(requests, stream)

    def _generate(self, requests: list[GenerationRequest], stream: TextStream | None) -> list[Completion]:
        out: list[Completion | None] = [None] * len(requests)
        # Seeded and unseeded requests never share a call; seeded ones with different seeds do (each row
        # samples from its own generator, engines/seeded_sampling.py).
        key = lambda i: (requests[i].max_new_tokens, requests[i].temperature, requests[i].top_p,  # noqa: E731
                         tuple(requests[i].stop), requests[i].seed is not None)
        order = sorted(range(len(requests)), key=key)
        size = self.cfg.resources.batch_size
        for _, group in groupby(order, key=key):
            idx = list(group)
            first = requests[idx[0]]
            params = (first.max_new_tokens, first.temperature, first.top_p, tuple(first.stop))
            for start in range(0, len(idx), size):
                chunk = idx[start:start + size]
                try:
                    results = self._generate_batch([requests[i] for i in chunk], *params,
                                                   stream=stream and stream.for_rows(chunk))
                except Exception as e:  # noqa: BLE001 - recorded per row, retried on the next run
                    if self.is_dead(e):  # the device or the weights are gone: every later row would fail too
                        raise EngineDeadError(f"hf engine: {type(e).__name__}: {e}") from e
                    results = [Completion("", "error", error=f"{type(e).__name__}: {e}") for _ in chunk]
                for i, r in zip(chunk, results, strict=True):
                    out[i] = r
        return [c for c in out if c is not None]

    def _generate_batch(self, reqs: list[GenerationRequest], max_new: int, temp: float, top_p: float,
                        stop: tuple[str, ...], stream: TextStream | None = None) -> list[Completion]:
        t0 = time.perf_counter()
        enc = self._encode([self._prompt_text(r) for r in reqs], max_new)
        gen_kwargs = dict(max_new_tokens=max_new, pad_token_id=self.tokenizer.pad_token_id)
        recorder = self._logprobs_recorder(reqs)
        processors: list[Any] = [recorder] if recorder is not None else []
        seeds = [r.seed for r in reqs]
        temp = max(temp, MIN_TEMPERATURE) if temp > 0 else 0.0  # tiny temperatures overflow: vLLM's floor, as vLLM does
        if temp > 0 and None not in seeds:  # sampled in the last processor, each row from its own generator
            processors.append(SeededSampler(seeds, temp, top_p, self.model.generation_config, self.device))
            gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        elif temp > 0:
            gen_kwargs.update(do_sample=True, temperature=temp, top_p=top_p)
        else:
            gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if stop:  # not transformers' stop_strings: its set-up cost grows with vocabulary x stop length
            gen_kwargs["stopping_criteria"] = stop_criteria(self.tokenizer, list(stop), enc["input_ids"].shape[1])
        if processors:
            gen_kwargs["logits_processor"] = processors
        streamer = None
        if stream is not None:
            from sentidistill.engines.hf_stream import Cancelled, RowStreamer  # transformers: loaded only when used

            streamer = RowStreamer(self.tokenizer, stream, len(reqs), stop, set(self._eos_ids()))
            gen_kwargs.update(streamer=streamer, stopping_criteria=[*gen_kwargs.get("stopping_criteria", []),
                                                                    Cancelled(stream)])
        seqs = self.model.generate(**enc, **gen_kwargs)
        new = seqs[:, enc["input_ids"].shape[1]:]
        if recorder is not None:
            recorder.finish(new[:, -1])
        latency = (time.perf_counter() - t0) / len(reqs)
        eos_ids = set(self._eos_ids())
        results = []
        for k, (row, mask) in enumerate(zip(new.tolist(), enc["attention_mask"], strict=True)):
            n = next((j + 1 for j, t in enumerate(row) if t in eos_ids), None)
            finished = n is not None
            toks = row[: n] if finished else row
            text = self.tokenizer.decode(toks, skip_special_tokens=True)
            cut = first_stop(text, stop)
            if cut is not None:
                text, finished = text[:cut], True
            reason = "stop" if finished or len(toks) < max_new else "length"
            top_n = reqs[k].logprobs
            logprobs = None if recorder is None or top_n is None else recorder.entries(
                self.tokenizer, k, row[: n - 1] if n is not None else row, top_n, text)
            results.append(Completion(text, reason, int(mask.sum()), len(toks), round(latency, 4), logprobs=logprobs))
            if streamer is not None:
                streamer.finish(k, text)
        return results

    @staticmethod
    def _logprobs_recorder(reqs: list[GenerationRequest]) -> Any:
        """A StepLogprobs for the most alternatives any request asks for; None when none asks."""
        wanted = [r.logprobs for r in reqs if r.logprobs is not None]
        if not wanted:
            return None
        from sentidistill.engines.step_logprobs import StepLogprobs  # transformers: loaded only when used

        return StepLogprobs(max(wanted))

    def _eos_ids(self) -> list[int]:
        eos = self.model.generation_config.eos_token_id
        ids = eos if isinstance(eos, list) else [eos]
        return [i for i in ids if i is not None] or [self.tokenizer.eos_token_id]

    @torch.inference_mode()
    def score_next_token(self, prompts: list[str], candidates: list[str]) -> list[list[float]]:
        """One forward pass per prompt; prompts sharing a cached prefix run only their suffix."""
        ids = first_token_ids(self.tokenizer, candidates)
        tokens = [tuple(prompt_ids(self.tokenizer, p)) for p in prompts]
        fits = all(len(t) <= self.max_model_len - 1 for t in tokens)  # over-long ones take the truncating path
        prefixes = self.prefix_cache.assign(tokens) if fits else [None] * len(tokens)
        groups: dict[tuple[int, ...] | None, list[int]] = {}
        for i, prefix in enumerate(prefixes):
            groups.setdefault(prefix, []).append(i)
        out: list[list[float]] = [[] for _ in prompts]
        for prefix, idx in groups.items():
            skip = len(prefix) if prefix else 0
            for chunk in token_batches(idx, [len(tokens[i]) - skip for i in idx], self.cfg.resources.batch_size,
                                       self.cfg.resources.max_batch_tokens):
                if prefix is None:
                    logits = self._score_whole([prompts[i] for i in chunk])
                else:
                    logits = self._score_suffixes(prefix, [tokens[i][len(prefix):] for i in chunk])
                for i, row in zip(chunk, logits[:, -1, ids].float().tolist(), strict=True):
                    out[i] = row
        return out

    def _score_whole(self, prompts: list[str]) -> torch.Tensor:
        enc = self._encode(prompts, 1)
        mask = enc["attention_mask"]
        # Left padding: positions must count real tokens only, or rotary offsets shift the logits.
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        # logits_to_keep=1: only the last position's logits are computed (same numbers, far less memory).
        return self.model(input_ids=enc["input_ids"], attention_mask=mask, position_ids=pos, logits_to_keep=1).logits

    def _prefix_kv(self, prefix: tuple[int, ...]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        kv = self.prefix_cache.get(prefix)
        if kv is None:
            cache = self.model(input_ids=torch.tensor([prefix], device=self.device), use_cache=True,
                               logits_to_keep=1).past_key_values
            kv = [(layer.keys, layer.values) for layer in cache.layers]
            self.prefix_cache.put(prefix, kv)
        return kv

    def _score_suffixes(self, prefix: tuple[int, ...], suffixes: list[tuple[int, ...]]) -> torch.Tensor:
        """The prompts' last-position logits from the prefix's cached KV plus their left-padded suffixes.

        Pads sit between prefix and suffix and are masked out; positions continue from the prefix
        over real tokens only, so the logits equal a whole-prompt pass (up to float rounding).
        """
        from transformers import DynamicCache

        kv = self._prefix_kv(prefix)
        n, width, plen = len(suffixes), max(len(s) for s in suffixes), len(prefix)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(s)) + list(s) for s in suffixes], device=self.device)
        smask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in suffixes], device=self.device)
        mask = torch.cat([torch.ones(n, plen, dtype=smask.dtype, device=self.device), smask], dim=1)
        pos = plen + (smask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(ddp_cache_data=[(k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1)) for k, v in kv],
                             config=self.model.config)
        return self.model(input_ids=input_ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                          use_cache=True, logits_to_keep=1).logits

    def shutdown(self) -> None:
        del self.model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def is_dead(self, error: BaseException) -> bool:
        """Shut down, or a device error (CUDA errors leave the context unusable); out-of-memory is not one."""
        return super().is_dead(error) or not hasattr(self, "model") or (
            isinstance(error, torch.AcceleratorError) and not isinstance(error, torch.OutOfMemoryError))
