"""Trained weights -> a plain HF folder (safetensors, tokenizer, generation config, model card).

The folder is what every later stage (eval, serve) and any user loads with
`AutoModelForCausalLM.from_pretrained`: no DeepSpeed, no peft, no Ray needed to read it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from sentidistill.layout import RunLayout
from sentidistill.training.model import load_student, lora_config


def gather_state_dict(engine: Any, rank: int) -> dict[str, Any] | None:
    """The full state dict on rank 0 (CPU copies); None elsewhere.

    Under ZeRO-3 each rank holds a slice of every parameter, so all ranks must join the
    gather; below stage 3 every rank already holds full weights.
    """
    import deepspeed

    module = engine.module
    if engine.zero_optimization_stage() == 3:
        with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
            return _cpu_state(module) if rank == 0 else None
    return _cpu_state(module) if rank == 0 else None


def _cpu_state(module: Any) -> dict[str, Any]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def export_model(
    state: dict[str, Any], student_dir: Path, tokenizer: Any, *, lora: dict[str, Any] | None, bf16: bool,
    trust_remote_code: bool, run_dir: str, rel: str,
) -> None:
    """Load the trained state into a fresh copy of the student (LoRA merged), save it, publish it."""
    model = load_student(student_dir, dtype="bfloat16" if bf16 else "float32", trust_remote_code=trust_remote_code)
    if lora:
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(lora))
        model.load_state_dict(state)
        model = model.merge_and_unload()
    else:
        model.load_state_dict(state)
    gen = model.generation_config
    if gen.pad_token_id is None:
        gen.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with tempfile.TemporaryDirectory(prefix="sentidistill-export-") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        RunLayout(run_dir).publish(Path(tmp), rel)


def model_card(lineage: dict[str, Any]) -> str:
    """README.md for the exported folder: what it is, where it came from, how it trained."""
    m = lineage.get("metrics", {})
    rows = "\n".join(f"| {k} | {v} |" for k, v in lineage.get("inputs", {}).items())
    counts = "\n".join(f"| {k} | {v} |" for k, v in lineage.get("counts", {}).items())
    return f"""---
library_name: transformers
pipeline_tag: text-generation
tags: [sentiment-analysis, distillation, sentidistill, {lineage['stage']}]
---

# SentiDistill student: {lineage['stage']}

A compact sentiment-analysis model distilled with SentiDistill, stage **{lineage['stage']}**
({lineage['stage_summary']}). Load it with `AutoModelForCausalLM.from_pretrained(<this folder>)`.

## Lineage
- Started from: `{lineage['student']}` (weights digest `{lineage['init_digest']}`)
- Teacher: {lineage['teacher']}
- Train config hash: `{lineage['config_hash']}` (resolved config: `../config.yaml`)
- LoRA: {"merged into the weights" if lineage.get('lora') else "no (full fine-tuning)"}

| input | fingerprint |
|---|---|
{rows}

## Training
- Steps: {m.get('step', 0)} of {m.get('total_steps', 0)}, final loss {m.get('loss', 'n/a')}
- Ray Train workers: {lineage['num_workers']}, DeepSpeed ZeRO stage {lineage['zero_stage']},
  precision {lineage['precision']}

| count | value |
|---|---|
{counts}

Per-step metrics: `../metrics.jsonl`; DeepSpeed config: `../deepspeed.json`; manifest: `../manifest.json`.
"""
