"""The run directory's layout: the one place that knows where every stage and artifact lives.

Stages, the report, the CLI and serving ask a `RunLayout` for folder names, artifact paths, the
stage order, stage states and the final student instead of building paths themselves. It also owns
the run directory's housekeeping: publishing a model folder, dropping partial writes and moving
the outputs of other settings aside.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from pathlib import Path

import pyarrow.fs as pafs

from sentidistill.config import PipelineConfig
from sentidistill.rundir import Manifest, RunDir

log = logging.getLogger("sentidistill")

KNOWDIST, ICLDIST = "knowdist", "icldist"
TRAIN_STAGES = (KNOWDIST, ICLDIST)
EVAL, REPORT, ABLATE = "eval", "report", "ablate"
# The stages that make data and models, then everything in pipeline order (`status`, the report's stage
# table): a folder sorts by its first prefix in ORDER.
DATA_AND_MODELS = (KNOWDIST, ICLDIST, f"train/{KNOWDIST}", f"train/{ICLDIST}")
ORDER = (*DATA_AND_MODELS, EVAL, REPORT, ABLATE)
RAY_STORAGE = "train/ray"  # Ray Train's checkpoints: not a stage folder
LOGS = "logs"  # one log file per command (sentidistill.console): not a stage folder


class RunLayout:
    """Folder names and artifact paths under one run directory (run-dir relative unless named `*_uri`)."""

    def __init__(self, run_dir: str | RunDir):
        self.rd = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)

    def uri(self, *parts: str) -> str:
        return self.rd.uri(*parts)

    # generation stages ----------------------------------------------------------------------------
    @staticmethod
    def data(stage: str) -> str:
        """Kept rows of a generation stage (knowdist / icldist): what training reads."""
        return f"{stage}/data"

    # training stages ------------------------------------------------------------------------------
    @staticmethod
    def train(stage: str) -> str:
        return f"train/{stage}"

    @staticmethod
    def model(stage: str) -> str:
        """The exported HF folder of a training stage."""
        return f"train/{stage}/model"

    @staticmethod
    def metrics(stage: str) -> str:
        return f"train/{stage}/metrics.jsonl"

    @staticmethod
    def packed(stage: str) -> str:
        return f"train/{stage}/packed"

    @staticmethod
    def deepspeed(stage: str) -> str:
        return f"train/{stage}/deepspeed.json"

    @staticmethod
    def ray_checkpoints(stage: str) -> str:
        return f"{RAY_STORAGE}/{stage}"

    @staticmethod
    def student_init(key: str) -> str:
        """The layer-pruned student init, cached per init settings."""
        return f"train/student-init/{key}"

    def final_student(self, cfg: PipelineConfig) -> str:
        """URI of the model the pipeline ends with: ICLDist's export, else KnowDist's."""
        return self.uri(self.model(ICLDIST if cfg.train.icldist.enabled else KNOWDIST))

    def trained_stage(self, ref: str) -> str | None:
        """The training folder whose exported model `ref` is (None: a model from elsewhere)."""
        norm = _norm(ref)
        return next((self.train(s) for s in TRAIN_STAGES if norm == _norm(self.uri(self.model(s)))), None)

    # evaluation and report ------------------------------------------------------------------------
    @staticmethod
    def eval(slug: str) -> str:
        return f"{EVAL}/{slug}"

    EVAL_SUMMARY = f"{EVAL}/summary.md"
    EVAL_CHART = f"{EVAL}/comparison.png"
    REPORT_HTML = f"{REPORT}/index.html"
    REPORT_MD = f"{REPORT}/report.md"

    @staticmethod
    def report_file(name: str) -> str:
        return f"{REPORT}/{name}"

    # stage states ---------------------------------------------------------------------------------
    def finished(self, folders: list[str]) -> dict[str, str | None]:
        """folder -> finish time of its complete manifest (None: missing, running or failed)."""
        out: dict[str, str | None] = {}
        for f in folders:
            m = self.rd.manifest(f)
            out[f] = m.finished_at if m is not None and m.status == "complete" else None
        return out

    def stage_states(self) -> list[tuple[str, Manifest]]:
        """Every stage manifest under the run dir, in pipeline order (`sentidistill status`, the report)."""
        found = [rel.removesuffix("/manifest.json") for rel in self.rd.list_files("", "manifest.json") if "/" in rel]
        found = [f for f in found if not f.startswith(RAY_STORAGE)]
        out = []
        for folder in sorted(found, key=lambda f: (_rank(f), f)):
            m = self.rd.manifest(folder)
            if m is not None:
                out.append((folder, m))
        return out

    # housekeeping ---------------------------------------------------------------------------------
    def drop_partial_writes(self, folder: str) -> None:
        """Temp files of writes killed before their rename (`RunDir.write_bytes`): never complete, never read."""
        for f in self.rd.list_files(folder):
            if ".tmp-" in f:
                self.rd.delete(f"{folder}/{f}")

    def set_aside(self, stage: str, chash: str, inputs: dict[str, str], force: bool) -> str | None:
        """Move a stage folder made for other settings (or any, with force) to `<stage>.prev-<hash>/`;
        computed work is never mixed with other settings' and never deleted. Returns where it went."""
        rd = self.rd
        if not rd.exists(stage):
            return None
        old = rd.manifest(stage)
        if not force and old is not None and old.config_hash == chash and old.inputs == inputs:
            return None
        base = f"{stage}.prev-{old.config_hash if old else 'unknown'}"
        dst, n = base, 2
        while rd.exists(dst):
            dst, n = f"{base}-{n}", n + 1
        if rd.remote:
            pafs.copy_files(rd.path(stage), rd.path(dst), source_filesystem=rd.fs, destination_filesystem=rd.fs)
            rd.delete(stage)
        else:
            rd.fs.move(rd.path(stage), rd.path(dst))
        why = "--force" if force else "the config or the input files changed"
        log.warning("%s: %s; previous results moved to %s", stage, why, rd.uri(dst))
        return dst

    def publish(self, local: Path, rel: str) -> None:
        """Replace `rel` with the local folder: a rename on local disks (never half-written), a copy on
        object stores."""
        rd = self.rd
        if rd.remote:
            rd.delete(rel)
            pafs.copy_files(str(local), rd.path(rel), source_filesystem=pafs.LocalFileSystem(),
                            destination_filesystem=rd.fs)
            return
        target = rd.local_path(rel)
        staging = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(local, staging)
        staging.chmod(0o755)  # the temp dir it came from was private
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)


def _rank(folder: str) -> int:
    return next((i for i, p in enumerate(ORDER) if folder == p or folder.startswith(p + "/")), len(ORDER))


def _norm(uri: str) -> str:
    return uri.rstrip("/") if "://" in uri else str(Path(uri).expanduser().resolve())


__all__ = ["ABLATE", "DATA_AND_MODELS", "EVAL", "ICLDIST", "KNOWDIST", "ORDER", "REPORT", "TRAIN_STAGES", "RunLayout"]
