"""A command's log with an s3:// run_dir: written under <cache_dir>/logs/, uploaded to <run_dir>/logs/ at the end."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from sentidistill.rundir import RunDir


def test_log_of_a_remote_run_is_uploaded_masked(bucket: str, tmp_path: Path) -> None:
    run_dir = f"{bucket}/run"
    script = textwrap.dedent(f"""
        import os
        from sentidistill import console
        console.start({run_dir!r}, "demo", {str(tmp_path / "cache")!r})
        os.write(2, b"worker says " + os.environ["HF_TOKEN"].encode() + b"\\n")
        console.stop()
    """)
    env = {**os.environ, "HF_TOKEN": "hf_not-a-real-token-42"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    local = list((tmp_path / "cache" / "logs").glob("demo-*.log"))
    assert len(local) == 1
    assert f"uploaded to {run_dir}/logs/{local[0].name}" in out.stderr
    uploaded = RunDir(run_dir).read_text(f"logs/{local[0].name}")
    assert "worker says ***" in uploaded and "hf_not-a-real-token-42" not in uploaded
