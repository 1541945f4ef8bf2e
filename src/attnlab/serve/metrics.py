"""The server's Prometheus metrics: one registry per app (so two apps in one process, as in
tests, never share counters), rendered by ``GET /metrics``."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

# seconds: time to first token spans a queue wait; per-token latency one decoding step
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """Requests by route and status, tokens in and out, the scheduler's queue depth and
    running batch (read when scraped), time to first token and per-token latency."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "attnlab_requests", "HTTP requests answered", ["route", "status"], registry=r
        )
        self.prompt_tokens = Counter(
            "attnlab_prompt_tokens", "prompt (input) tokens processed", registry=r
        )
        self.completion_tokens = Counter(
            "attnlab_completion_tokens", "completion tokens generated", registry=r
        )
        self.queue_depth = Gauge(
            "attnlab_queue_depth", "decoding requests waiting for a batch slot", registry=r
        )
        self.running = Gauge(
            "attnlab_running_batch", "decoding requests in the running batch", registry=r
        )
        self.cancelled = Counter(
            "attnlab_cancelled_requests",
            "decoding requests withdrawn unfinished (the client left, or a 429 refused them)",
            registry=r,
        )
        self.ttft = Histogram(
            "attnlab_time_to_first_token_seconds",
            "from the request's arrival to its first generated token",
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.token_latency = Histogram(
            "attnlab_inter_token_latency_seconds",
            "between consecutive generated tokens of one request",
            buckets=TOKEN_BUCKETS,
            registry=r,
        )

    def watch(self, queue_depth: Callable[[], float], running: Callable[[], float]) -> None:
        """Read the scheduler's queue depth and batch size at each scrape."""
        self.queue_depth.set_function(queue_depth)
        self.running.set_function(running)

    def render(self) -> bytes:
        return generate_latest(self.registry)
