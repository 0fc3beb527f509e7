"""Both training stages end to end: real Ray Train, real DeepSpeed (ZeRO-2), 2 CPU workers, tiny Llama."""

from __future__ import annotations

import hashlib
import json
import time

import pytest
import torch
from train_helpers import icldist_rows, knowdist_rows, train_config, write_stage_data
from transformers import AutoModelForCausalLM, AutoTokenizer

from sentidistill.errors import StageInputError
from sentidistill.rundir import RunDir
from sentidistill.stages import train


def digest(folder) -> str:
    """Weights digest computed here, independently of the code under test."""
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, use_safetensors=True)
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        h.update(name.encode())
        h.update(p.detach().to(torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def metrics(rd: RunDir, stage: str) -> list[dict]:
    return [json.loads(line) for line in rd.read_text(f"train/{stage}/metrics.jsonl").splitlines()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model, ray_local):
    run_dir = tmp_path_factory.mktemp("train-run")
    write_stage_data(run_dir, "knowdist", knowdist_rows(), with_manifest=True)
    write_stage_data(run_dir, "icldist", icldist_rows(), with_manifest=False)
    cfg = train_config(run_dir, tiny_model, run_dir / "cache", "train.knowdist.epochs=4", "train.icldist.epochs=2",
                       "train.icldist.replay_share=0.25", "train.checkpoint.log_every_steps=2")
    seen: list[dict] = []
    manifests = train.run(cfg, "all", on_metrics=seen.append).parts
    return cfg, RunDir(str(run_dir)), manifests, seen


def test_both_stages_complete_with_artifacts(trained):
    _, rd, manifests, seen = trained
    assert [m.stage for m in manifests] == ["train/knowdist", "train/icldist"]
    assert all(m.status == "complete" for m in manifests)
    kd, icl = manifests
    assert kd.counts["stage_examples"] == 16  # the refusal row (qc != kept) is not trained on
    assert icl.counts["stage_examples"] == 8 and icl.counts["replay_examples"] == 3  # 0.25 share of 11
    assert 0 < kd.counts["packing_efficiency"] <= 1 and kd.counts["rows"] < kd.counts["train_examples"]
    assert kd.extra["teachers"] == ["tiny-teacher"]
    for stage in ("knowdist", "icldist"):
        ds = rd.read_json(f"train/{stage}/deepspeed.json")
        assert ds["zero_optimization"]["stage"] == 2 and ds["gradient_accumulation_steps"] == 1
        card = rd.read_text(f"train/{stage}/model/README.md")
        assert "tiny-teacher" in card and rd.manifest(f"train/{stage}").config_hash in card
    assert {r["stage"] for r in seen} == {"knowdist", "icldist"}  # the driver saw the workers' metrics live


def test_loss_falls_and_metrics_are_recorded(trained):
    _, rd, manifests, _ = trained
    rows = metrics(rd, "knowdist")
    assert [r["step"] for r in rows] == list(range(2, manifests[0].counts["total_steps"] + 1, 2))
    for key in ("loss", "lr", "tokens_per_s", "packing_efficiency", "epoch"):
        assert all(key in r for r in rows)
    assert rows[-1]["loss"] < 0.9 * rows[0]["loss"]
    assert rows[-1]["lr"] < rows[0]["lr"]  # cosine decay after warmup


def test_exported_models_load_and_generate(trained):
    _, rd, _, _ = trained
    for stage in ("knowdist", "icldist"):
        folder = rd.local_path(f"train/{stage}/model")
        assert (folder / "model.safetensors").is_file() and (folder / "generation_config.json").is_file()
        tok = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True)
        enc = tok("Sentence: great food\nLabel:", return_tensors="pt")
        out = model.generate(**enc, max_new_tokens=4, do_sample=False)
        assert out.shape[1] > enc["input_ids"].shape[1]


def test_icldist_starts_from_knowdist_weights(trained, tiny_model):
    _, rd, (kd, icl), _ = trained
    base, stage1 = digest(tiny_model), digest(rd.local_path("train/knowdist/model"))
    assert kd.extra["init_digest"] == base
    assert stage1 != base  # stage 1 changed the weights
    assert icl.extra["init_digest"] == stage1  # and stage 2 loaded exactly those
    assert icl.inputs["train:knowdist"] == kd.fingerprint()


def test_rerun_skips_complete_stages(trained):
    cfg, _, manifests, _ = trained
    t0 = time.perf_counter()
    again = train.run(cfg, "all").parts
    assert time.perf_counter() - t0 < 10
    assert [m.started_at for m in again] == [m.started_at for m in manifests]


def test_missing_inputs_are_named(tmp_path, tiny_model):
    cfg = train_config(tmp_path, tiny_model, tmp_path / "cache")
    with pytest.raises(StageInputError, match="knowdist/data.*sentidistill generate"):
        train.run(cfg, "knowdist")
    write_stage_data(tmp_path, "icldist", icldist_rows(), with_manifest=False)
    with pytest.raises(StageInputError, match="train/knowdist.*missing.*--stage knowdist"):
        train.run(cfg, "icldist")


def test_lora_zero3_unpacked_from_pruned_init(tmp_path, tiny_model, ray_local):
    """Other switches in one short run: a layer-pruned student init, LoRA merged on export, ZeRO-3 gather,
    no packing, gradient checkpointing; icldist alone starts from that base student."""
    write_stage_data(tmp_path, "icldist", icldist_rows(), with_manifest=False)
    cfg = train_config(tmp_path, tiny_model, tmp_path / "cache", "train.model.student=null", "train.knowdist.enabled=false",
                       f"train.model.init={{from_model: {tiny_model}, num_layers: 1}}",
                       "train.model.lora={r: 4, alpha: 8, dropout: 0.0}", "train.deepspeed.zero_stage=3", "train.data.packing=false",
                       "train.model.gradient_checkpointing=true", "train.icldist.max_steps=2", "train.optimizer.lr=1e-2")
    (manifest,) = train.run(cfg, "all").parts
    assert manifest.status == "complete" and manifest.counts["packed"] is False
    assert manifest.counts["rows"] == manifest.counts["train_examples"] == 8  # one example per row
    assert any("knowdist.enabled is false" in n for n in manifest.extra["notes"])
    (init,) = (tmp_path / "train" / "student-init").iterdir()
    assert manifest.extra["student"] == str(init)
    assert AutoModelForCausalLM.from_pretrained(init).config.num_hidden_layers == 1
    folder = tmp_path / "train" / "icldist" / "model"
    assert not (folder / "adapter_config.json").exists()
    trained = dict(AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True).named_parameters())
    base = dict(AutoModelForCausalLM.from_pretrained(init, use_safetensors=True).named_parameters())
    assert trained.keys() == base.keys()  # a plain 1-layer model: adapters merged, no peft names left
    changed = {n for n in base if not torch.equal(base[n], trained[n])}
    assert changed and all(n.endswith("proj.weight") for n in changed)  # only LoRA targets moved
    assert "model.embed_tokens.weight" not in changed
