"""What the ingress observed, as Prometheus text (`GET /metrics`) and JSON (`GET /v1/stats`).

Per ingress replica: requests by route and status, latency, and the size of the model batches its
requests ran in (the model deployment reports that size with every answer). Ray Serve's own
per-deployment metrics (queue lengths, replica counts, latencies) are exported cluster-wide by Ray's
metrics agent beside these.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client import Counter as PromCounter

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServeMetrics:
    """A private Prometheus registry plus exact batch-size counts for the JSON view."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = PromCounter("sentidistill_requests", "HTTP requests by route and status code.",
                                    ["route", "status"], registry=self.registry)
        self.latency = Histogram("sentidistill_request_seconds", "HTTP request latency by route.", ["route"],
                                 registry=self.registry)
        self.batch = Histogram("sentidistill_batch_requests", "Requests per model batch, as seen by each request.",
                               ["method"], buckets=BATCH_BUCKETS, registry=self.registry)
        self.batch_sizes: dict[str, Counter[int]] = {"score": Counter(), "generate": Counter()}

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route=route, status=str(status)).inc()
        self.latency.labels(route=route).observe(seconds)

    def observe_batch(self, method: str, size: int) -> None:
        self.batch.labels(method=method).observe(size)
        self.batch_sizes[method][size] += 1

    def prometheus_text(self) -> bytes:
        return generate_latest(self.registry)

    def snapshot(self) -> dict[str, Any]:
        """Batch sizes per method: how many requests ran in a batch of each size, the largest, the mean."""
        out: dict[str, Any] = {}
        for method, sizes in self.batch_sizes.items():
            n = sum(sizes.values())
            out[method] = {
                "requests": n, "max_batch": max(sizes, default=0),
                "mean_batch": round(sum(s * c for s, c in sizes.items()) / n, 3) if n else 0.0,
                "by_size": {str(s): c for s, c in sorted(sizes.items())},
            }
        return {"batches": out}
