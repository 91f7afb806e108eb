"""The label values of /metrics stay few whatever clients send, and each process
serves only the metrics it measures."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from app.metrics import API_REGISTRY, WORKER_REGISTRY, OperationNames


def names(registry: CollectorRegistry) -> set[str]:
    return {family.name for family in registry.collect()}


def test_an_unknown_operation_name_is_other_and_a_missing_one_anonymous() -> None:
    labels = OperationNames(["Create"])
    assert [labels.label(n) for n in ("Create", "Probe123", None, "")] == [
        "Create",
        "other",
        "anonymous",
        "anonymous",
    ]


def test_past_the_cap_even_known_names_are_other() -> None:
    labels = OperationNames(["A", "B", "C"], cap=2)
    assert [labels.label(n) for n in "ABCAB"] == ["A", "B", "other", "A", "B"]


def test_only_the_api_registry_holds_what_only_the_api_measures() -> None:
    assert names(API_REGISTRY) - names(WORKER_REGISTRY) == {
        "lumi_http_request_duration_seconds",
        "lumi_graphql_operation_duration_seconds",
        "lumi_active_subscriptions",
        "lumi_events_delivered",
        "lumi_jobs",
        "lumi_queue_depth",
        "lumi_response_cache_requests",
        "lumi_response_cache_invalidations",
        "lumi_response_cache_bytes",
    }
    everywhere = {"lumi_provider_latency_seconds", "process_resident_memory_bytes", "python_info"}
    assert everywhere <= names(API_REGISTRY) & names(WORKER_REGISTRY)
