"""Every Prometheus metric of the project, in base units, with bounded labels.

Label values come from bounded sets only: task names and labels from model manifests, model versions
and arms from the strategy, DLQ reasons from ``consumer.errors.DLQ_REASONS``, load failure reasons
from ``consumer.errors.LOAD_FAILURE_REASONS``. Never a complaint id or text. The loop calls the
small hook methods of ``ConsumerMetrics`` (in the manner of faust's sensors) instead of touching
metric objects, so the hot path stays readable and the metric names live here alone.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from consumer.errors import LOAD_FAILURE_REASONS

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ConsumerMetrics:
    """Metrics of ``allocator consume``."""

    # Long by design: one statement per metric, every metric of the process declared in one place.
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.consumed = Counter(
            "allocator_messages_consumed_total", "Input records read from Kafka.", registry=r
        )
        self.allocations = Counter(
            "allocator_allocations_total",
            "Allocations published (committed transactions).",
            ["journey"],
            registry=r,
        )
        self.dlq = Counter(
            "allocator_dlq_total", "Records sent to the DLQ, by reason.", ["reason"], registry=r
        )
        self.predictions = Counter(
            "allocator_predictions_total",
            "Published predictions by task, label, model version and arm.",
            ["task", "label", "model_version", "arm"],
            registry=r,
        )
        self.needs_review = Counter(
            "allocator_needs_review_total",
            "Allocations routed to human review, by task.",
            ["task"],
            registry=r,
        )
        self.routed = Counter(
            "allocator_routed_total",
            "Published multiclass decisions by task, model version and routing decision (auto: "
            "decided by the model within its guarantee; review: left to the triage analysts). "
            "Coverage is auto / (auto + review).",
            ["task", "model_version", "decision"],
            registry=r,
        )
        self.batch_size = Histogram(
            "allocator_batch_size_messages",
            "Records per micro-batch.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_seconds = Histogram(
            "allocator_batch_duration_seconds",
            "Wall time of one micro-batch, poll to commit.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_seconds = Histogram(
            "allocator_inference_seconds",
            "onnxruntime time per model per micro-batch.",
            ["model_version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.e2e_seconds = Histogram(
            "allocator_end_to_end_latency_seconds",
            "From the input record's Kafka timestamp to the commit of its allocation.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.transactions = Counter(
            "allocator_transactions_total",
            "Kafka transactions by outcome.",
            ["outcome"],
            registry=r,
        )
        self.lag = Gauge(
            "allocator_consumer_lag_messages",
            "Records behind the log end, summed over the partitions this pod owns.",
            registry=r,
        )
        self.assigned = Gauge(
            "allocator_assigned_partitions", "Partitions this pod owns.", registry=r
        )
        self.strategy_version = Gauge(
            "allocator_strategy_version", "Strategy version in force.", registry=r
        )
        self.strategy_refreshed = Gauge(
            "allocator_strategy_last_refresh_timestamp_seconds",
            "When the strategy was last read from Redis.",
            registry=r,
        )
        self.store_up = Gauge(
            "allocator_store_up", "1 when Redis answered the last strategy read.", registry=r
        )
        self.strategy_rejected = Counter(
            "allocator_strategy_rejected_total",
            "Strategy documents refused (invalid or unloadable).",
            registry=r,
        )
        self.model_info = Gauge(
            "allocator_model_info",
            "1 for each (task, arm) served, naming the model.",
            ["task", "arm", "model_name", "model_version", "digest"],
            registry=r,
        )
        self.model_expected = Gauge(
            "allocator_model_expected_ratio",
            "What each served model's manifest says of its head, by measure: accuracy and "
            "calibrated recall on validation; guaranteed_accuracy (on the automated share) and "
            "guaranteed_recall, the targets its guarantee holds at 95% confidence. Absent when the "
            "manifest has no such figure.",
            ["task", "model_version", "measure"],
            registry=r,
        )
        self.model_load_failures = Counter(
            "allocator_model_load_failures_total",
            "Model packages refused at load, by reason.",
            ["reason"],
            registry=r,
        )
        for reason in LOAD_FAILURE_REASONS:  # every series exists from start-up, at 0
            self.model_load_failures.labels(reason)
        self.shadow_agreement = Counter(
            "allocator_shadow_agreement_total",
            "Shadow predictions by agreement with the published one.",
            ["task", "model_version", "agree"],
            registry=r,
        )
        self.shadow_delta = Histogram(
            "allocator_shadow_confidence_delta",
            "Shadow score minus published score for the published label.",
            ["task"],
            buckets=(-0.5, -0.2, -0.1, -0.05, 0, 0.05, 0.1, 0.2, 0.5),
            registry=r,
        )
        self.breaker_open = Gauge(
            "allocator_circuit_breaker_open",
            "1 while the circuit breaker holds the input: recent batches failed in the model.",
            registry=r,
        )
        self.breaker_trips = Counter(
            "allocator_circuit_breaker_trips_total",
            "Times the circuit breaker opened (model-failure share above its threshold).",
            registry=r,
        )
        self.drain_seconds = Gauge(
            "allocator_last_drain_duration_seconds", "Duration of the last drain.", registry=r
        )
        self.up = Gauge(
            "allocator_consumer_ready",
            "1 when partitions are assigned and models loaded.",
            registry=r,
        )


class PromoterMetrics:
    """Metrics of ``allocator promoter``."""

    # Long by design: one statement per metric, every metric of the process declared in one place.
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.feedback = Counter(
            "allocator_feedback_total",
            "Feedback records by outcome of the join.",
            ["outcome"],
            registry=r,
        )
        self.outcomes = Counter(
            "allocator_live_outcomes_total",
            "Labelled predictions by correctness, per model version and arm.",
            ["task", "model_version", "arm", "correct"],
            registry=r,
        )
        self.accuracy = Gauge(
            "allocator_live_accuracy_ratio",
            "Live accuracy per task, model version and arm.",
            ["task", "model_version", "arm"],
            registry=r,
        )
        self.accuracy_labels = Gauge(
            "allocator_live_accuracy_labels",
            "Labelled predictions live accuracy is computed on, per task, model version and arm.",
            ["task", "model_version", "arm"],
            registry=r,
        )
        self.coverage = Gauge(
            "allocator_live_coverage_ratio",
            "Share of labelled predictions the model decided alone (routing auto), per task, model "
            "version and arm.",
            ["task", "model_version", "arm"],
            registry=r,
        )
        self.automated_accuracy = Gauge(
            "allocator_live_automated_accuracy_ratio",
            "Live accuracy on the automated share (what the manifest's guarantee promises), per "
            "task, model version and arm.",
            ["task", "model_version", "arm"],
            registry=r,
        )
        self.automated_labels = Gauge(
            "allocator_live_automated_labels",
            "Labelled automated predictions the automated accuracy is computed on.",
            ["task", "model_version", "arm"],
            registry=r,
        )
        self.vulnerable_recall = Gauge(
            "allocator_live_vulnerable_recall_ratio",
            "Live vulnerable-customer recall per model version and arm.",
            ["model_version", "arm"],
            registry=r,
        )
        self.vulnerable_positives = Gauge(
            "allocator_live_vulnerable_positives",
            "Customers people judged vulnerable that live recall is computed on, per model version "
            "and arm.",
            ["model_version", "arm"],
            registry=r,
        )
        self.label_delay = Histogram(
            "allocator_label_delay_seconds",
            "From allocation to the human decision.",
            buckets=(60, 600, 3600, 4 * 3600, 86_400, 3 * 86_400, 7 * 86_400, 30 * 86_400),
            registry=r,
        )
        self.decisions = Counter(
            "allocator_promoter_decisions_total",
            "Canary/shadow analysis outcomes.",
            ["task", "action", "applied"],
            registry=r,
        )
        self.records = Counter(
            "allocator_promoter_records_total",
            "Input records by kind (allocation, shadow, feedback) and outcome (stored, duplicate, "
            "malformed, ...).",
            ["kind", "outcome"],
            registry=r,
        )
        self.parked = Gauge(
            "allocator_promoter_parked_feedback", "Feedback waiting for its allocation.", registry=r
        )
        self.p_value = Gauge(
            "allocator_promoter_p_value",
            "Always-valid p-value of each running experiment's tests (better, worse, "
            "recall_worse).",
            ["task", "mode", "test"],
            registry=r,
        )
        self.experiment_labels = Gauge(
            "allocator_promoter_experiment_labels",
            "Labels counted in each arm of the running experiments.",
            ["task", "mode", "arm"],
            registry=r,
        )
        self.batch_seconds = Histogram(
            "allocator_promoter_batch_duration_seconds",
            "Wall time of one batch: state transaction, offset commit and evaluation.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.lag = Gauge(
            "allocator_promoter_lag_messages",
            "Records behind the log end on the partitions owned.",
            registry=r,
        )
        self.up = Gauge(
            "allocator_promoter_ready",
            "1 when partitions are assigned and Redis answers.",
            registry=r,
        )


class ExplainerMetrics:
    """Metrics of ``allocator explain serve``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.requests = Counter(
            "allocator_explanations_total",
            "Explanation requests by HTTP status.",
            ["status"],
            registry=r,
        )
        self.seconds = Histogram(
            "allocator_explanation_duration_seconds",
            "Time to compute one explanation (cache misses).",
            buckets=(0.1, 0.5, 1, 2, 5, 10, 20, 30, 60, 120),
            registry=r,
        )
        self.cache_hits = Counter(
            "allocator_explanation_cache_hits_total", "Explanations served from cache.", registry=r
        )
