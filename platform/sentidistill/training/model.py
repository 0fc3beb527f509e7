"""Building the student: the HF model as training and export both load it, LoRA, a weight digest."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any


def load_student(
    student_dir: Path, *, dtype: str = "float32", trust_remote_code: bool = False,
    attn_implementation: str = "auto", gradient_checkpointing: bool = False,
) -> Any:
    """An HF causal LM from a local safetensors folder.

    Training loads fp32 (DeepSpeed casts for bf16 and keeps fp32 master weights); export
    loads the dtype the weights are saved in.
    """
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": getattr(torch, dtype), "use_safetensors": True,
                              "trust_remote_code": trust_remote_code}
    if attn_implementation != "auto":
        kwargs["attn_implementation"] = attn_implementation
    model = AutoModelForCausalLM.from_pretrained(student_dir, **kwargs)
    if gradient_checkpointing:
        model.config.use_cache = False
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def lora_config(lora: dict[str, Any]) -> Any:
    """peft config from our LoraConfig fields; training and export build identical modules from it."""
    from peft import LoraConfig

    return LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                      target_modules=lora["target_modules"], task_type="CAUSAL_LM")


def weights_digest(model: Any) -> str:
    """sha256 over parameter names and fp32 values: proves which weights a stage started from."""
    import torch

    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        h.update(name.encode())
        h.update(p.detach().to(torch.float32).cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
