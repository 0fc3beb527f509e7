"""What a config will cost before it runs: tokens to generate, GPU-hours and storage.

`estimate(cfg)` counts the corpus the way `generate` will read it (same reader, same limits, rejects
and dedup, summed by Ray Data tasks: no corpus row reaches this process), renders the real
perspective templates and SentiBench prompts for their lengths, and turns token counts into
GPU-hours at stated throughputs. Tokens are estimated as characters / chars_per_token; KnowDist
answers are counted at their full budget (long analyses usually fill it), ICL answers at the length
of the gold answer (labels and tuple lists). All assumptions are fields of `Throughputs` and are
printed with the plan.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from sentidistill.config import PipelineConfig
from sentidistill.engines import capabilities
from sentidistill.errors import DataNotFoundError

log = logging.getLogger("sentidistill")

_CHAT_OVERHEAD_TOKENS = 8  # role markers and separators a chat template adds per message
_SIZE = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)\s*([bm])(?![a-z])", re.IGNORECASE)


class Throughputs(BaseModel):
    """Rates the plan assumes; the defaults are for H100-class GPUs (A100: roughly half)."""

    model_config = ConfigDict(extra="forbid")

    gen_tokens_per_s_per_gpu: float = Field(
        500.0, gt=0, description="Teacher output tokens/s per GPU: vLLM, 70B bf16, tensor parallel 8 on H100, "
        "large batches (about 4,000 per 8-GPU node).")
    prefill_tokens_per_s_per_gpu: float = Field(
        5000.0, gt=0, description="Teacher prompt tokens/s per GPU (prefill is ~10x faster than decoding).")
    train_tokens_per_s_per_gpu: float = Field(
        20000.0, gt=0, description="Student training tokens/s per GPU: ~1B model, bf16, ZeRO-2, packed sequences.")
    chars_per_token: float = Field(4.0, gt=0, description="Characters per token for English text.")


class StageTokens(BaseModel):
    requests: int = Field(description="Teacher calls (or training examples).")
    prompt_tokens: int
    completion_tokens: int


class PlanEstimate(BaseModel):
    """The numbers `sentidistill plan` prints (and `--json` dumps)."""

    corpus_texts: int
    avg_text_chars: float
    knowdist: StageTokens
    icldist: StageTokens
    icl_tasks: list[str]
    gen_gpu_hours: float = Field(description="0 when the teacher is an API (openai/replay engine).")
    gen_wall_hours: float | None = Field(description="With the config's teacher GPUs; None without GPUs.")
    train_tokens: dict[str, int] = Field(description="Tokens seen per training stage, epochs and max_steps applied.")
    train_gpu_hours: float
    train_wall_hours: float | None
    student_params: float | None
    teacher_params: float | None
    storage_bytes: dict[str, int] = Field(description="Run-dir storage by item (uncompressed upper bounds).")
    teacher_disk_bytes_per_node: int | None = Field(description="bf16 teacher weights cached on each teacher node.")
    throughputs: Throughputs


def params_from_name(ref: str | None) -> float | None:
    """Parameter count written in a model name ('Llama-3.3-70B' -> 7e10, 'smollm2-135m' -> 1.35e8)."""
    if not ref:
        return None
    match = _SIZE.findall(Path(ref).name)
    if not match:
        return None
    num, unit = match[-1]
    return float(num) * (1e9 if unit.lower() == "b" else 1e6)


def params_from_config(config: dict, num_layers: int | None = None) -> float:
    """Parameters of a Llama-style HF config.json, optionally with only num_layers decoder layers."""
    h, inter, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or h // heads
    kv = config.get("num_key_value_heads", heads)
    layer = 2 * h * heads * head_dim + 2 * h * kv * head_dim + 3 * h * inter + 2 * h
    embed = vocab * h * (1 if config.get("tie_word_embeddings", False) else 2)
    return float(embed + layer * (num_layers or config["num_hidden_layers"]) + h)


def student_params(cfg: PipelineConfig) -> float | None:
    """From the student's (or init model's) local config.json, else from its name; None if unknown."""
    init = cfg.train.model.init
    ref = cfg.train.model.student or (init.from_model if init else None)
    layers = (init.num_layers or len(init.layers or [])) if init and not cfg.train.model.student else None
    config_json = Path(ref).expanduser() / "config.json" if ref else None
    if config_json is not None and config_json.is_file():
        return params_from_config(json.loads(config_json.read_text()), layers)
    return params_from_name(ref)


def _knowdist_tokens(cfg: PipelineConfig, texts: int, avg_chars: float, cpt: float) -> StageTokens:
    from sentidistill.perspectives import select_perspectives

    if not cfg.generate.enabled or texts == 0:
        return StageTokens(requests=0, prompt_tokens=0, completion_tokens=0)
    persp = select_perspectives(cfg.generate.perspectives, cfg.generate.perspective_files)
    share = (cfg.generate.per_text or len(persp)) / len(persp)  # each perspective's chance per text
    prompt = completion = 0.0
    for p in persp:
        msgs = p.messages("")
        chars = sum(len(m["content"]) for m in msgs) + avg_chars
        prompt += texts * share * (chars / cpt + _CHAT_OVERHEAD_TOKENS * len(msgs))
        completion += texts * share * (p.max_new_tokens or cfg.generate.max_new_tokens)
    return StageTokens(requests=round(texts * share * len(persp)), prompt_tokens=round(prompt),
                       completion_tokens=round(completion))


def _icl_tokens_anywhere(cfg: PipelineConfig, cpt: float) -> tuple[StageTokens, list[str]]:
    """ICL tokens from data_dir; when that is shared storage not reachable from here (a laptop before the
    upload), from the local SentiBench copy: the same rows, so the same estimate."""
    from sentidistill.data.locate import remote_root

    try:
        return _icl_tokens(cfg, cpt)
    except DataNotFoundError as e:
        if remote_root(cfg.data_dir) is None:
            raise
        log.warning("plan: %s; estimating ICL prompts from the local data copy instead", str(e).split(". ")[0])
        return _icl_tokens(cfg.model_copy(update={"data_dir": None}), cpt)


def _icl_tokens(cfg: PipelineConfig, cpt: float, sample: int = 64) -> tuple[StageTokens, list[str]]:
    """ICL prompts built with the benchmark renderer from each task's train split, at the average k."""
    from sentidistill.tasks import build_prompt, gold_text, load_registry

    icl = cfg.icl
    if not icl.enabled:
        return StageTokens(requests=0, prompt_tokens=0, completion_tokens=0), []
    registry = load_registry(cfg)
    tasks = [t for t in registry.select(icl.tasks, "icl.tasks") if t.name not in icl.holdout_tasks]
    k = round(icl.k_max * (1 - icl.diversify.vary_k / 2))  # vary_k draws k uniformly from [0, k_max]
    prompt = completion = 0.0
    for task in tasks:
        train = registry.load_split(task.name, "train", limit=sample + k)
        if len(train) <= k:
            raise DataNotFoundError(f"task {task.name!r}: its train split has {len(train)} rows, fewer than k+1")
        queries = train[k:]
        p_chars = sum(len(build_prompt(task, train[:k], q)) for q in queries) / len(queries)
        a_chars = sum(len(gold_text(task, q)) for q in queries) / len(queries)
        prompt += icl.examples_per_task * p_chars / cpt
        completion += icl.examples_per_task * (a_chars / cpt + 1)  # + end of sequence
    n = icl.examples_per_task * len(tasks)
    if icl.general_data:  # general instruction rows, assumed as long as the task rows
        extra = icl.general_share / (1 - icl.general_share)
        n, prompt, completion = round(n * (1 + extra)), prompt * (1 + extra), completion * (1 + extra)
    return StageTokens(requests=n, prompt_tokens=round(prompt), completion_tokens=round(completion)), \
        [t.name for t in tasks]


def _train_tokens(cfg: PipelineConfig, data: StageTokens, stage: str, replay: StageTokens | None) -> int:
    t = cfg.train
    st = t.stage(stage)  # type: ignore[arg-type]
    if not st.enabled or data.requests == 0:
        return 0
    per_example = min((data.prompt_tokens + data.completion_tokens) / data.requests, t.data.max_seq_len)
    examples = data.requests
    tokens = examples * per_example
    if replay is not None and replay.requests and st.replay_share:
        replayed = examples * st.replay_share / (1 - st.replay_share)
        per_replayed = (replay.prompt_tokens + replay.completion_tokens) / replay.requests
        tokens += replayed * min(per_replayed, t.data.max_seq_len)
        examples += replayed
    total = tokens * st.epochs
    if st.max_steps:
        seq_tokens = t.data.max_seq_len if t.data.packing else tokens / examples
        total = min(total, st.max_steps * t.optimizer.effective_batch_size * seq_tokens)
    return round(total)


def _teacher_gpus(cfg: PipelineConfig) -> float:
    if not capabilities(cfg.teacher.kind).loads_model:
        return 0.0
    return cfg.teacher.actor_range[1] * cfg.teacher.resources.num_gpus


def _storage(cfg: PipelineConfig, kd: StageTokens, icl: StageTokens, params: float | None,
             cpt: float) -> dict[str, int]:
    row_overhead = 300  # ids, teacher name, counters, qc: bytes per generated row
    out = {
        "knowdist data": round((kd.prompt_tokens + kd.completion_tokens) * cpt + kd.requests * row_overhead),
        "icldist data": round((icl.prompt_tokens + icl.completion_tokens) * cpt + icl.requests * row_overhead),
    }
    if params:
        t = cfg.train
        precision = t.deepspeed.precision
        weight_bytes = 2 if precision == "bf16" or (precision == "auto" and t.resources.use_gpu) else 4
        stages = [s for s in ("knowdist", "icldist") if t.stage(s).enabled]  # type: ignore[arg-type]
        state = weight_bytes + (0 if t.model.lora else 12)  # fp32 master weights + Adam moments
        out["student models"] = round(params * weight_bytes * len(stages))
        out["training checkpoints"] = round(params * state * t.checkpoint.keep * len(stages))
    return out


def estimate(cfg: PipelineConfig, rates: Throughputs | None = None, *, corpus_texts: int | None = None,
             avg_text_chars: float | None = None, student_param_count: float | None = None) -> PlanEstimate:
    """Estimate tokens, GPU-hours and storage for the whole pipeline (reads data on Ray Data, loads no model).

    corpus_texts / avg_text_chars skip reading the corpus (e.g. a large bucket); both are needed.
    """
    rates = rates or Throughputs()
    cpt = rates.chars_per_token
    if corpus_texts is None or avg_text_chars is None:
        from sentidistill.data.corpus import text_stats

        corpus_texts, avg_text_chars = text_stats(cfg.corpus, cfg.data_dir, cfg.cache_dir)
    kd = _knowdist_tokens(cfg, corpus_texts, avg_text_chars, cpt)
    icl, tasks = _icl_tokens_anywhere(cfg, cpt)
    teacher_gpus = _teacher_gpus(cfg)
    gen_s = 0.0 if not capabilities(cfg.teacher.kind).loads_model else (
        (kd.prompt_tokens + icl.prompt_tokens) / rates.prefill_tokens_per_s_per_gpu
        + (kd.completion_tokens + icl.completion_tokens) / rates.gen_tokens_per_s_per_gpu)
    train = {"knowdist": _train_tokens(cfg, kd, "knowdist", None), "icldist": _train_tokens(cfg, icl, "icldist", kd)}
    workers = cfg.train.resources
    train_gpus = workers.num_workers * workers.resources_per_worker.get("GPU", 1.0 if workers.use_gpu else 0.0)
    train_gpu_h = sum(train.values()) / rates.train_tokens_per_s_per_gpu / 3600
    params = student_param_count or student_params(cfg)
    teacher_params = params_from_name(cfg.teacher.model) if teacher_gpus else None
    return PlanEstimate(
        corpus_texts=corpus_texts, avg_text_chars=round(avg_text_chars, 1), knowdist=kd, icldist=icl,
        icl_tasks=tasks, gen_gpu_hours=gen_s / 3600,
        gen_wall_hours=gen_s / 3600 / teacher_gpus if teacher_gpus else None,
        train_tokens=train, train_gpu_hours=train_gpu_h,
        train_wall_hours=train_gpu_h / train_gpus if train_gpus else None,
        student_params=params, teacher_params=teacher_params,
        storage_bytes=_storage(cfg, kd, icl, params, cpt),
        teacher_disk_bytes_per_node=round(teacher_params * 2) if teacher_params else None,
        throughputs=rates,
    )
