"""Prometheus metrics of one process (the API or a worker), on its own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

_FAST = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_SLOW = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)

HTTP_DURATION = Histogram(
    "lumi_http_request_duration_seconds",
    "HTTP request durations by route template.",
    ["method", "route", "status"],
    buckets=_FAST,
    registry=REGISTRY,
)
GRAPHQL_DURATION = Histogram(
    "lumi_graphql_operation_duration_seconds",
    "GraphQL operation durations (subscriptions: until their stream is set up).",
    ["type", "name"],
    buckets=_FAST,
    registry=REGISTRY,
)
ACTIVE_SUBSCRIPTIONS = Gauge(
    "lumi_active_subscriptions", "Subscriptions streaming right now.", registry=REGISTRY
)
EVENTS_PUBLISHED = Counter(
    "lumi_events_published_total", "Request events published on the bus.", registry=REGISTRY
)
EVENTS_DELIVERED = Counter(
    "lumi_events_delivered_total", "Request events sent to subscribers.", registry=REGISTRY
)
JOBS = Gauge(
    "lumi_jobs", "Generation jobs by kind and status.", ["kind", "status"], registry=REGISTRY
)
QUEUE_DEPTH = Gauge(
    "lumi_queue_depth", "Messages waiting in each broker queue.", ["queue"], registry=REGISTRY
)
PHASE_DURATION = Histogram(
    "lumi_phase_duration_seconds",
    "How long requests spend in each phase.",
    ["phase"],
    buckets=_SLOW,
    registry=REGISTRY,
)
PROVIDER_LATENCY = Histogram(
    "lumi_provider_latency_seconds",
    "Provider call durations.",
    ["provider", "operation"],
    buckets=(*_FAST, 30, 60),
    registry=REGISTRY,
)
PROVIDER_ERRORS = Counter(
    "lumi_provider_errors_total",
    "Provider calls that failed, by error code.",
    ["provider", "operation", "code"],
    registry=REGISTRY,
)
JOB_RETRIES = Counter(
    "lumi_job_retries_total",
    "Job attempts that failed transiently and were scheduled again.",
    ["kind", "code"],
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "lumi_dead_letters_total",
    "Jobs that failed for good and were kept as dead letters.",
    ["kind", "code"],
    registry=REGISTRY,
)
RECOVERED_JOBS = Counter(
    "lumi_recovered_jobs_total",
    "Jobs the sweeper recovered: polled again, retried, resent, or requests failed.",
    ["action"],
    registry=REGISTRY,
)
