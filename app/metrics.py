"""Prometheus metrics of one process: the API serves API_REGISTRY at /metrics, `lumi
worker` serves WORKER_REGISTRY on its own port. Both hold the pipeline's metrics (the
API runs stages itself with the embedded broker) and the process's own (`process_*`,
`python_info`); only the API's holds what only it measures (HTTP, GraphQL,
subscriptions, the job and queue gauges it reads at each scrape)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.registry import Collector

# In the text format every counter and histogram label set also carries a `_created`
# series, a start timestamp nothing reads: one more series each. (prometheus_client's
# other switch is an environment variable, and only app.config reads those.)
disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated upstream

API_REGISTRY = CollectorRegistry(auto_describe=True)
WORKER_REGISTRY = CollectorRegistry(auto_describe=True)
API = (API_REGISTRY,)
EVERY_PROCESS = (API_REGISTRY, WORKER_REGISTRY)

_M = TypeVar("_M", bound=Collector)


def _on(registries: Iterable[CollectorRegistry], metric: _M) -> _M:
    for registry in registries:
        registry.register(metric)
    return metric


for _registry in EVERY_PROCESS:
    ProcessCollector(registry=_registry)
    PlatformCollector(registry=_registry)

_FAST = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_SLOW = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)

# Measured by the API alone.
HTTP_DURATION = _on(
    API,
    Histogram(
        "lumi_http_request_duration_seconds",
        "HTTP request durations by route template.",
        ["method", "route", "status"],
        buckets=_FAST,
        registry=None,
    ),
)
GRAPHQL_DURATION = _on(
    API,
    Histogram(
        "lumi_graphql_operation_duration_seconds",
        "GraphQL operation durations (subscriptions: until their stream is set up), by "
        "operation name when the name is known (see OperationNames), else `other`.",
        ["type", "name"],
        buckets=_FAST,
        registry=None,
    ),
)
ACTIVE_SUBSCRIPTIONS = _on(
    API, Gauge("lumi_active_subscriptions", "Subscriptions streaming right now.", registry=None)
)
EVENTS_DELIVERED = _on(
    API,
    Counter("lumi_events_delivered_total", "Request events sent to subscribers.", registry=None),
)
JOBS = _on(
    API,
    Gauge("lumi_jobs", "Generation jobs by kind and status.", ["kind", "status"], registry=None),
)
QUEUE_DEPTH = _on(
    API,
    Gauge("lumi_queue_depth", "Messages waiting in each broker queue.", ["queue"], registry=None),
)

RESPONSE_CACHE_REQUESTS = _on(
    API,
    Counter(
        "lumi_response_cache_requests_total",
        "GraphQL operations over HTTP by what the response cache did: `hit` (answered from "
        "it), `miss` (made and kept), `bypass` (not cacheable, or the cache is off).",
        ["result"],
        registry=None,
    ),
)
RESPONSE_CACHE_DROPS = _on(
    API,
    Counter(
        "lumi_response_cache_invalidations_total",
        "Cached answers dropped, by reason: `changed` (what they show changed), `resync` "
        "and `bus down` (changes may have been missed), `expired`, `evicted`, `replaced`.",
        ["reason"],
        registry=None,
    ),
)
RESPONSE_CACHE_BYTES = _on(
    API, Gauge("lumi_response_cache_bytes", "Bytes the response cache holds.", registry=None)
)

# Measured wherever stages run: worker processes, and the API with the embedded broker.
EVENTS_PUBLISHED = _on(
    EVERY_PROCESS,
    Counter("lumi_events_published_total", "Request events published on the bus.", registry=None),
)
PHASE_DURATION = _on(
    EVERY_PROCESS,
    Histogram(
        "lumi_phase_duration_seconds",
        "How long requests spend in each phase.",
        ["phase"],
        buckets=_SLOW,
        registry=None,
    ),
)
PROVIDER_LATENCY = _on(
    EVERY_PROCESS,
    Histogram(
        "lumi_provider_latency_seconds",
        "Provider call durations.",
        ["provider", "operation"],
        buckets=(*_FAST, 30, 60),
        registry=None,
    ),
)
PROVIDER_ERRORS = _on(
    EVERY_PROCESS,
    Counter(
        "lumi_provider_errors_total",
        "Provider calls that failed, by error code.",
        ["provider", "operation", "code"],
        registry=None,
    ),
)
JOB_RETRIES = _on(
    EVERY_PROCESS,
    Counter(
        "lumi_job_retries_total",
        "Job attempts that failed transiently and were scheduled again.",
        ["kind", "code"],
        registry=None,
    ),
)
DEAD_LETTERS = _on(
    EVERY_PROCESS,
    Counter(
        "lumi_dead_letters_total",
        "Jobs that failed for good and were kept as dead letters.",
        ["kind", "code"],
        registry=None,
    ),
)
RECOVERED_JOBS = _on(
    EVERY_PROCESS,
    Counter(
        "lumi_recovered_jobs_total",
        "Jobs the sweeper recovered: polled again, retried, resent, or requests failed.",
        ["action"],
        registry=None,
    ),
)

WEBHOOK_ATTEMPTS = _on(
    EVERY_PROCESS,
    Counter(
        "lumi_webhook_attempts_total",
        "Webhook calls by result: delivered; retry (failed, tried again later); failed "
        "(failed for good).",
        ["result"],
        registry=None,
    ),
)
WEBHOOK_LAG = _on(
    EVERY_PROCESS,
    Histogram(
        "lumi_webhook_delivery_lag_seconds",
        "From a delivery entering the outbox to its receiver accepting it, retries included.",
        buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 7200, 36000, 86400),
        registry=None,
    ),
)

# Measured by `lumi worker` alone: its Dramatiq consumer threads (see workers/watchdog.py).
WORKER_CONSUMERS_ALIVE = _on(
    (WORKER_REGISTRY,),
    Gauge(
        "lumi_worker_consumers_alive",
        "Whether the worker's consumer thread for each broker queue runs (1) or died (0).",
        ["queue"],
        registry=None,
    ),
)
WORKER_CONSUMER_RESTARTS = _on(
    (WORKER_REGISTRY,),
    Counter(
        "lumi_worker_consumer_restarts_total",
        "Consumer threads that died and that the worker's watchdog started again.",
        ["queue"],
        registry=None,
    ),
)


class OperationNames:
    """The `name` label of GraphQL durations. Clients name their operations, and each
    new label value is a new set of series: 150 random names made 2,250 series for an
    anonymous caller. So a name is its own label only when the server knows it
    (LUMI_METRICS_OPERATION_NAMES), and at most `cap` names ever are, should that list
    grow long; any other name is `other`."""

    def __init__(self, known: Iterable[str] = (), *, cap: int = 50) -> None:
        self.known = frozenset(known)
        self.cap = cap
        self._labelled: set[str] = set()

    def label(self, name: str | None) -> str:
        if not name:
            return "anonymous"
        if name not in self.known:
            return "other"
        if name not in self._labelled:
            if len(self._labelled) >= self.cap:
                return "other"
            self._labelled.add(name)
        return name
