"""Prometheus metrics (``/metrics``), one registry per app so tests can build many apps.

The request middleware is plain ASGI (no ``BaseHTTPMiddleware``), labelled by the route
template (``/v1/records/{record_id}``), never the raw path, to keep label cardinality bounded.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["Metrics", "MetricsMiddleware"]

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The gateway's metrics in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "gateway_http_requests", "HTTP requests", ["method", "route", "status"], registry=r
        )
        self.latency = Histogram(
            "gateway_http_request_seconds",
            "HTTP request latency",
            ["method", "route"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.decisions = Counter(
            "gateway_access_decisions", "Fetch decisions", ["decision", "reason"], registry=r
        )
        self.uploads = Counter("gateway_uploads", "Record uploads", ["outcome"], registry=r)
        self.relayed = Counter(
            "gateway_relayed_transactions",
            "Relayed consent transactions",
            ["action", "outcome"],
            registry=r,
        )
        self.checkpoints = Counter(
            "gateway_checkpoints_anchored", "Access-log checkpoints anchored", registry=r
        )
        self.log_size = Gauge("gateway_access_log_size", "Access-log entries", registry=r)
        self.anchored_size = Gauge(
            "gateway_access_log_anchored_size",
            "Tree size of the last anchored checkpoint",
            registry=r,
        )
        self.chain_errors = Counter(
            "gateway_chain_unavailable",
            "Requests refused because the chain was unreachable",
            registry=r,
        )
        self.ipfs_errors = Counter(
            "gateway_ipfs_unavailable", "Requests refused because IPFS was unreachable", registry=r
        )
        # Read from the chain at each scrape of /metrics (GET /metrics answers without them
        # when the chain node does not: gateway_chain_up is then 0).
        self.chain_up = Gauge(
            "gateway_chain_up",
            "1 when the chain node answered this scrape's reads, else 0",
            registry=r,
        )
        self.head_block = Gauge(
            "gateway_chain_head_block", "Number of the chain head at the last scrape", registry=r
        )
        self.head_age = Gauge(
            "gateway_chain_head_age_seconds",
            "Age of the chain head (its timestamp against the gateway's clock) at the last scrape",
            registry=r,
        )
        self.account_balance = Gauge(
            "gateway_account_balance_wei",
            "Balance of each sending account (gateway, registrar, relayer) at the last scrape",
            ["account"],
            registry=r,
        )
        self.fast_path_active = Gauge(
            "gateway_fast_path_active",
            "1 while the record-fetch fast path serves well-formed fetches (gateway.fastpath)",
            registry=r,
        )
        self.fast_path_responses = Counter(
            "gateway_fast_path_responses",
            "Answers given by the record-fetch fast path, by status",
            ["status"],
            registry=r,
        )


class MetricsMiddleware:
    """Counts requests and observes latency by method, route template and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = str(scope.get("method", ""))
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - start)
