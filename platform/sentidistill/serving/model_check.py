"""Check the model to serve on the driver, in seconds and before Ray starts.

A replica that cannot load its model makes Serve retry it several times and then report only
"Failed to update the deployments"; these checks name the cause instead: a missing path, a folder
without config.json, pickle-only weights (we load safetensors only), a truncated safetensors file,
or an unknown hub id.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from sentidistill.errors import ModelNotFoundError
from sentidistill.models import NAMED_MODELS, resolve_model
from sentidistill.rundir import is_remote

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def check_safetensors(path: Path) -> None:
    """Raise unless the file's header parses and the file is as long as the header says."""
    size = path.stat().st_size
    try:
        with path.open("rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            if header_len > size - 8:
                raise ValueError("header longer than the file")
            header = json.loads(f.read(header_len))
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    except (struct.error, ValueError, KeyError, TypeError, IndexError) as e:
        raise ModelNotFoundError(f"model weights {path} are not a readable safetensors file ({e})") from None
    if size < 8 + header_len + end:
        raise ModelNotFoundError(f"model weights {path} are truncated: {size} bytes, the header needs "
                                 f"{8 + header_len + end}; copy the file again")


def check_folder(folder: Path, ref: str) -> None:
    """A loadable HF folder: config.json and complete safetensors weights."""
    if not folder.is_dir():
        raise ModelNotFoundError(f"model {ref!r}: {folder} is not a folder")
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(f"model {ref!r}: the folder {folder} has no config.json (not a Hugging Face "
                                 "model folder; point --model at the folder that holds config.json)")
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        what = f"only pickle weights ({', '.join(pickles[:3])})" if pickles else "no weights"
        raise ModelNotFoundError(f"model {ref!r}: the folder {folder} holds {what}; only .safetensors weights are "
                                 "loaded (pickle can run code): save the model with save_pretrained() "
                                 "(safe_serialization is the default)")
    for w in weights:
        check_safetensors(w)


def check_model(ref: str, cache_dir: str | None, *, resolve_remote: bool) -> None:
    """Raise ModelNotFoundError naming the problem; cloud URIs (and hub ids when `resolve_remote` is off) are
    left to the replica, which may see storage this machine does not."""
    if ref in NAMED_MODELS or (is_remote(ref) and not resolve_remote):
        return
    local = Path(ref).expanduser()
    if local.is_file() and local.suffix == ".gguf":
        return
    if local.exists():
        check_folder(local, ref)
        return
    looks_like_hub = ref.count("/") == 1 and not ref.startswith((".", "/", "~"))
    if looks_like_hub and not resolve_remote:
        return
    check_folder(resolve_model(ref, cache_dir), ref)  # names every place it looked when not found
