"""Model resolver: local folders, GGUF, named models, cloud folders, clear misses; layer pruning."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sentidistill.errors import ModelNotFoundError
from sentidistill.models import evenly_spaced_layers, prune_layers, resolve_model


def test_local_folder_resolves_to_itself(tiny_model: Path, tmp_path: Path) -> None:
    assert resolve_model(str(tiny_model), tmp_path) == tiny_model.resolve()



def test_cloud_folder_copy(tiny_model: Path, tmp_path: Path) -> None:
    """s3:// and gs:// folders go through pyarrow's filesystem copy; file:// runs that same code offline."""
    from sentidistill import models

    got = models._download_cloud_folder(f"file://{tiny_model}", tmp_path)
    assert got != tiny_model and (got / "config.json").is_file() and (got / "model.safetensors").is_file()
    assert models._download_cloud_folder(f"file://{tiny_model}", tmp_path) == got  # idempotent
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        models._download_cloud_folder(f"file://{tmp_path / 'empty'}", tmp_path / "c2")


def test_missing_model_names_every_place_tried(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError) as e:
        resolve_model("nobody/no-such-model-xyz", tmp_path)
    msg = str(e.value)
    assert "named local models" in msg and "local path" in msg and "Hugging Face hub" in msg
    with pytest.raises(ModelNotFoundError, match="not found"):
        resolve_model(str(tmp_path / "nothing-here"), tmp_path)


@pytest.mark.slow
def test_gguf_file_converts_once(tmp_path: Path) -> None:
    """A .gguf path becomes a safetensors folder; the second call reuses it (no re-conversion)."""
    from sentidistill.models import NAMED_MODELS

    gguf = NAMED_MODELS["smollm2-135m-instruct"]()
    first = resolve_model(str(gguf), tmp_path)
    assert (first / "model.safetensors").is_file() and (first / "tokenizer.json").is_file()
    mtime = (first / "model.safetensors").stat().st_mtime_ns
    assert resolve_model(str(gguf), tmp_path) == first
    assert (first / "model.safetensors").stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_prepare_smollm2_loads_offline_and_answers(smollm2: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(smollm2, use_safetensors=True)
    tok = AutoTokenizer.from_pretrained(smollm2)
    assert model.config.num_hidden_layers == 30 and tok.chat_template
    ids = tok("The movie was", return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 3


def test_evenly_spaced_layers() -> None:
    assert evenly_spaced_layers(30, 2) == [0, 29]
    assert evenly_spaced_layers(4, 10) == [0, 1, 2, 3]
    kept = evenly_spaced_layers(30, 12)
    assert len(kept) == 12 and kept[0] == 0 and kept[-1] == 29


def test_prune_layers_keeps_weights(tiny_model: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    out = prune_layers(tiny_model, tmp_path / "student", layers=[1])
    src = AutoModelForCausalLM.from_pretrained(tiny_model)
    dst = AutoModelForCausalLM.from_pretrained(out)
    assert dst.config.num_hidden_layers == 1
    torch.testing.assert_close(dst.model.layers[0].mlp.up_proj.weight, src.model.layers[1].mlp.up_proj.weight)
    with pytest.raises(ValueError, match="out of range"):
        prune_layers(tiny_model, tmp_path / "bad", layers=[5])
    shutil.rmtree(out)
