"""Prometheus metrics of one node, in a private registry served at /metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_STAGE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.bids = Counter(
            "computenode_bids_total",
            "Bid decisions by outcome and first reason kind",
            ["outcome", "reason"],
            registry=r,
        )
        self.transitions = Counter(
            "computenode_execution_transitions_total", "Execution state changes", ["state"], registry=r
        )
        self.executions = Gauge(
            "computenode_executions", "Executions in the store by state", ["state"], registry=r
        )
        self.queue_depth = Gauge(
            "computenode_queue_depth", "Accepted executions waiting for capacity", registry=r
        )
        self.running = Gauge("computenode_running_executions", "Executions running now", registry=r)
        self.stage_seconds = Histogram(
            "computenode_stage_seconds",
            "Duration of execution stages",
            ["stage"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.capacity_total = Gauge("computenode_capacity_total", "Node capacity", ["resource"], registry=r)
        self.capacity_available = Gauge(
            "computenode_capacity_available", "Capacity not running", ["resource"], registry=r
        )
        self.reaped = Counter("computenode_reaper_removals_total", "Orphaned workloads removed", registry=r)
        self.bytes_freed = Counter(
            "computenode_cleanup_bytes_freed_total", "Bytes freed by disk cleanup", registry=r
        )
        self.offers = Counter(
            "computenode_offers_total",
            "Offers (ask_for_bid) received, by transport",
            ["transport"],
            registry=r,
        )
        self.callbacks = Counter(
            "computenode_callbacks_total",
            "Callback deliveries by transport and outcome (delivered, or retried)",
            ["transport", "outcome"],
            registry=r,
        )
        self.callbacks_pending = Gauge(
            "computenode_callbacks_pending", "Callbacks not yet acknowledged", registry=r
        )


# Words of a rejection reason that name its kind, in the order they are looked for.
_REASON_KINDS = (
    *("node selector", "queue full", "over node capacity", "accept_networked_jobs", "probe", "timeout"),
    *("engine", "storage source", "publisher", "locality", "draining", "disk", "stateless"),
)


def reason_kind(reason: str) -> str:
    """A low-cardinality label for a rejection reason: its kind, else its first words before a colon."""
    for word in _REASON_KINDS:
        if word in reason:
            return word.replace(" ", "_")
    head = reason.split(":", 1)[0].strip()
    return head[:32].replace(" ", "_") or "other"
