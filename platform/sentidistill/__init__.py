"""SentiDistill: distil sentiment analysis from a teacher LLM into a compact student, on Ray.

The public surface is small; everything runs from one config:

>>> from sentidistill import load_config
>>> cfg = load_config("jobs/configs/local.yaml", ["eval.limit=8"])
"""

from sentidistill.config import PipelineConfig, load_config

__version__ = "0.1.0"
__all__ = ["PipelineConfig", "load_config", "__version__"]
