"""SentiBench evaluation internals: prompt parts built on the driver, the Ray Data scoring actor,
and aggregation of per-item predictions into metrics. The stage entry point is `stages/evaluate.py`."""
