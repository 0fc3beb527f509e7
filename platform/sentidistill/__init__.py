"""SentiDistill: distil sentiment analysis from a teacher LLM into a compact student, on Ray.

The public surface is small; everything runs from one config:

>>> from sentidistill import load_config, run_pipeline
>>> cfg = load_config("jobs/configs/local.yaml", ["eval.limit=8"])
>>> result = run_pipeline(cfg)            # generate -> icl -> train -> eval -> report
>>> [(s.step, s.status) for s in result.steps]

Tasks are data (`load_registry().get("imdb")` is a `TaskSpec`); each stage module in
`sentidistill.stages` exposes its own `run(cfg, ...) -> Manifest`.
"""

from sentidistill.config import PipelineConfig, load_config
from sentidistill.stages.pipeline import run as run_pipeline
from sentidistill.tasks import TaskSpec, load_registry

__version__ = "0.1.0"
__all__ = ["PipelineConfig", "TaskSpec", "__version__", "load_config", "load_registry", "run_pipeline"]
