"""The "flow" dashboard: is the stream keeping up, how fast, and what is going to the DLQ."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash_b

from dashboards.panels import Panel, Variable, quantile, rate, sel, series, single, target


def throughput() -> Panel:
    return series(
        "Throughput",
        "Records read, allocations published (by journey) and records sent to the DLQ.",
        "ops",
        target(rate("allocator_messages_consumed_total"), "consumed"),
        target(rate("allocator_allocations_total", by="journey"), "allocated {{journey}}", ref="B"),
        target(rate("allocator_dlq_total"), "dlq", ref="C"),
    )


def end_to_end_latency() -> Panel:
    return series(
        "End-to-end latency",
        "From the input record's Kafka timestamp to the commit of its allocation: "
        "includes time spent waiting in the topic, so it grows with lag.",
        "s",
        target(quantile(0.5, "allocator_end_to_end_latency_seconds"), "p50"),
        target(quantile(0.99, "allocator_end_to_end_latency_seconds"), "p99", ref="B"),
    )


def batch_and_inference() -> Panel:
    return series(
        "Batch and inference time (p99)",
        "Wall time of one micro-batch (poll to commit) and onnxruntime "
        "time per model per batch. Inference close to the batch time means the CPU is the "
        "bottleneck.",
        "s",
        target(quantile(0.99, "allocator_batch_duration_seconds"), "batch p99"),
        target(
            quantile(0.99, "allocator_inference_seconds", by="model_version"),
            "inference {{model_version}}",
            ref="B",
        ),
    )


def batch_size() -> Panel:
    return series(
        "Mean batch size",
        "Records per micro-batch (one Kafka transaction). Near batchMaxMessages under load; near 1 "
        "when idle.",
        "short",
        target(
            f"sum(rate({sel('allocator_batch_size_messages_sum')}[$__rate_interval])) / "
            f"sum(rate({sel('allocator_batch_size_messages_count')}[$__rate_interval]))",
            "records/batch",
        ),
    )


def consumer_lag() -> Panel:
    return series(
        "Consumer lag",
        "Records behind the log end, per pod (partitions it owns) and in total. The autoscaler "
        "targets this.",
        "short",
        target(f"sum({sel('allocator_consumer_lag_messages')})", "total"),
        target(f"sum by (pod) ({sel('allocator_consumer_lag_messages')})", "{{pod}}", ref="B"),
    )


def time_to_drain() -> Panel:
    return series(
        "Time to drain the backlog",
        "Lag divided by the current consumption rate: how long until the "
        "consumers catch up if input stopped now. Also the last SIGTERM drain duration per pod.",
        "s",
        target(
            f"sum({sel('allocator_consumer_lag_messages')}) / "
            f"clamp_min({rate('allocator_messages_consumed_total')}, 0.001)",
            "backlog at current rate",
        ),
        target(
            f"max by (pod) ({sel('allocator_last_drain_duration_seconds')})",
            "last drain {{pod}}",
            ref="B",
        ),
    )


def partitions() -> Panel:
    return series(
        "Partitions and readiness",
        "Partitions owned per pod; replicas beyond the partition count own none.",
        "short",
        target(f"sum by (pod) ({sel('allocator_assigned_partitions')})", "partitions {{pod}}"),
        target(f"sum({sel('allocator_consumer_ready')})", "ready pods", ref="B"),
        stack=False,
    )


def dlq_by_reason() -> Panel:
    return series(
        "DLQ by reason",
        "Records sent to complaints.dlq per reason (see consumer/errors.py). model_failure should "
        "stay at zero.",
        "ops",
        target(rate("allocator_dlq_total", by="reason"), "{{reason}}"),
        stack=True,
    )


def transactions() -> Panel:
    return series(
        "Kafka transactions",
        "Committed and aborted transactions; aborts replay their batch (exactly-once).",
        "ops",
        target(rate("allocator_transactions_total", by="outcome"), "{{outcome}}"),
        stack=True,
    )


def circuit_breaker() -> Panel:
    return series(
        "Circuit breaker",
        "Pods whose breaker is open (input held, nothing committed) and trips per second. An open "
        "breaker means the model fails on most records: publish a fixed plan or roll back.",
        "short",
        target(f"sum({sel('allocator_circuit_breaker_open')})", "open pods"),
        target(rate("allocator_circuit_breaker_trips_total"), "trips/s", ref="B"),
    )


def lag_now() -> Panel:
    return single(
        "Lag now",
        "Total records behind, all partitions.",
        "short",
        target(f"sum({sel('allocator_consumer_lag_messages')})", "lag"),
        [(None, "green"), (1000, "orange"), (10000, "red")],
    )


def p99_now() -> Panel:
    return single(
        "End-to-end p99",
        "Over the rate window.",
        "s",
        target(quantile(0.99, "allocator_end_to_end_latency_seconds"), "p99"),
        [(None, "green"), (5, "orange"), (30, "red")],
    )


def dlq_share_now() -> Panel:
    return single(
        "DLQ share",
        "DLQ records over records consumed.",
        "percentunit",
        target(
            f"{rate('allocator_dlq_total')} / "
            f"clamp_min({rate('allocator_messages_consumed_total')}, 1e-9)",
            "dlq share",
        ),
        [(None, "green"), (0.01, "orange"), (0.05, "red")],
    )


def ready_now() -> Panel:
    return single(
        "Ready consumers",
        "Pods with a model plan loaded.",
        "short",
        target(f"sum({sel('allocator_consumer_ready')})", "ready"),
        [(None, "red"), (1, "green")],
    )


def build(variables: list[Variable]) -> dash_b.Dashboard:
    board = (
        dash_b.Dashboard("Complaints allocation / Flow")
        .uid("ca-flow")
        .description("Is the stream keeping up: throughput, latency, lag, DLQ and transactions.")
        .tags(["complaints-allocation"])
        .refresh("30s")
        .time("now-3h", "now")
        .timezone("browser")
    )
    for variable in variables:
        board = board.with_variable(variable)
    board = board.with_row(dash_b.Row("Now"))
    for panel in (lag_now(), p99_now(), dlq_share_now(), ready_now()):
        board = board.with_panel(panel)
    board = board.with_row(dash_b.Row("Throughput and latency"))
    for panel in (throughput(), end_to_end_latency(), batch_and_inference(), batch_size()):
        board = board.with_panel(panel)
    board = board.with_row(dash_b.Row("Lag"))
    for panel in (consumer_lag(), time_to_drain(), partitions()):
        board = board.with_panel(panel)
    board = board.with_row(dash_b.Row("Errors"))
    for panel in (dlq_by_reason(), transactions(), circuit_breaker()):
        board = board.with_panel(panel)
    return board
