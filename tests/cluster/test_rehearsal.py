"""The multi-node dress rehearsal (scripts/rehearse-cluster.sh) with its smallest settings.

Three raylets (a GPU-less head, an "H100" and an "A100" node), a moto S3 server, the user's
`submit --stage run`, status, serve, API calls and `eval --endpoint`; the script's own checks read
placement from Ray's state API and grep every log and artifact for the secrets. Minutes, not
hours, on CPU (about 8 minutes here; marker `cluster`, in CI's default set).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.cluster
@pytest.mark.timeout(1800)
def test_rehearse_cluster_script_passes(shared_data: Path) -> None:
    env = {**os.environ, "SENTIBENCH_DIR": str(shared_data / "sentibench")}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(["bash", str(REPO / "scripts" / "rehearse-cluster.sh")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1740)
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, tail
    assert "rehearsal passed" in proc.stdout and "no process left behind" in proc.stdout, tail
    assert "CHECK FAILED" not in proc.stderr
