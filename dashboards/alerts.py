"""Prometheus alert rules, one ``Alert`` each, rendered into a plain rules file.

Thresholds are defaults, not truths: the chart lets operators override any rule
(``monitoring.prometheusRule.overrides``). Each alert names the ``signals`` it is built from:
queries that must return data from a healthy, busy deployment; the end-to-end test checks
them against a real Prometheus (the alert condition itself is, hopefully, empty).

The model-quality alerts compare live figures (the promoter's) with what the served model's
manifest promised (``allocator_model_expected_ratio``, the consumers'), joined on the model
version: no fixed target can suit a team model at 80% and an issue model at 50%. A model whose
manifest has no figure has no expected series, so these alerts stay silent for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

GROUP = "complaints-allocation"

CONSUMED = "sum by (namespace) (rate(allocator_messages_consumed_total[10m]))"
LAG = "sum by (namespace) (allocator_consumer_lag_messages)"
EXPLANATIONS = "sum by (namespace) (rate(allocator_explanations_total[10m]))"

# Margins below the manifest's figures, and the evidence needed before judging. The chart's
# overrides replace whole fields, so another margin is another ``expr`` (docs/operations.md). At
# the minimums the margins are about 1.5 standard errors of the live figure (accuracy 0.5 on 200
# labels, recall 0.6 on 30 positives); the live figures are cumulative, so the noise shrinks.
ACCURACY_MARGIN = 0.05  # below the validation accuracy (manifest metrics.val.<task>.accuracy)
MIN_ACCURACY_LABELS = 200  # labelled predictions of the (task, model version, arm)
RECALL_MARGIN = 0.1  # below the calibrated recall (manifest tasks.vulnerable.calibration)
MIN_VULNERABLE_POSITIVES = 30  # customers people judged vulnerable, per (model version, arm)

LIVE_ACCURACY = "max by (namespace, task, model_version, arm) (allocator_live_accuracy_ratio)"
ACCURACY_LABELS = "max by (namespace, task, model_version, arm) (allocator_live_accuracy_labels)"
EXPECTED_ACCURACY = (
    'max by (namespace, task, model_version) (allocator_model_expected_ratio{measure="accuracy"})'
)
LIVE_RECALL = "max by (namespace, model_version, arm) (allocator_live_vulnerable_recall_ratio)"
POSITIVES = "max by (namespace, model_version, arm) (allocator_live_vulnerable_positives)"
EXPECTED_RECALL = (
    "max by (namespace, model_version) "
    '(allocator_model_expected_ratio{task="vulnerable", measure="recall"})'
)
# The guarantees (trainer.selective): the manifest's target holds at 95% confidence on validation.
# Live, the alert fires when even the upper end of a one-sided 95% normal interval around the live
# figure is below the target: the shortfall is not noise. Normal intervals are fair from ~100
# labels at these rates (n*p*(1-p) >= 9 at 0.9 on 100).
Z95 = 1.645
MIN_AUTOMATED_LABELS = 100  # labelled automated predictions of the (task, model version, arm)
AUTO_ACCURACY = (
    "max by (namespace, task, model_version, arm) (allocator_live_automated_accuracy_ratio)"
)
AUTO_LABELS = "max by (namespace, task, model_version, arm) (allocator_live_automated_labels)"
GUARANTEED_ACCURACY = (
    "max by (namespace, task, model_version) "
    '(allocator_model_expected_ratio{measure="guaranteed_accuracy"})'
)
GUARANTEED_RECALL = (
    "max by (namespace, model_version) "
    '(allocator_model_expected_ratio{task="vulnerable", measure="guaranteed_recall"})'
)


def upper_bound(ratio: str, n: str) -> str:
    """The one-sided 95% upper bound of a live ratio on ``n`` trials (normal approximation)."""
    return f"({ratio} + {Z95} * sqrt({ratio} * (1 - {ratio}) / {n}))"


BREAKER_OPEN = "max by (namespace, pod) (allocator_circuit_breaker_open)"
LOAD_FAILURES = "sum by (namespace, reason) (increase(allocator_model_load_failures_total[10m]))"


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    for_: str
    severity: str  # critical pages someone; warning goes to the team channel
    summary: str
    description: str
    signals: tuple[str, ...] = field(default=())

    def rule(self) -> dict[str, object]:
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.for_,
            "labels": {"severity": self.severity, "service": "complaints-allocation"},
            "annotations": {"summary": self.summary, "description": self.description},
        }


ALERTS: tuple[Alert, ...] = (
    Alert(
        "AllocatorConsumerLagGrowing",
        f"{LAG} > 1000 and sum by (namespace) (deriv(allocator_consumer_lag_messages[15m])) > 0",
        "15m",
        "warning",
        "Consumer lag is above 1000 and still growing",
        "Lag is {{ $value | humanize }} records in {{ $labels.namespace }} and rising for 15 "
        "minutes: "
        "input outpaces the consumers. Scale out (up to the partition count) or check for slow "
        "inference.",
        signals=(LAG, "sum by (namespace) (deriv(allocator_consumer_lag_messages[15m]))"),
    ),
    Alert(
        "AllocatorConsumerStalled",
        f"{LAG} > 0 and {CONSUMED} == 0",
        "10m",
        "critical",
        "Consumers are not consuming while records wait",
        "{{ $labels.namespace }}: records are waiting but none was consumed in 10 minutes.",
        signals=(LAG, CONSUMED),
    ),
    Alert(
        "AllocatorDLQRateHigh",
        f"sum by (namespace) (rate(allocator_dlq_total[10m])) / {CONSUMED} > 0.05",
        "10m",
        "warning",
        "More than 5% of complaints go to the DLQ",
        "{{ $value | humanizePercentage }} of records in {{ $labels.namespace }} go to the DLQ. "
        "Check "
        "allocator_dlq_total by reason: a producer may be sending a new or broken format.",
        signals=("sum by (namespace) (rate(allocator_dlq_total[10m]))", CONSUMED),
    ),
    Alert(
        "AllocatorModelFailures",
        'sum by (namespace) (rate(allocator_dlq_total{reason="model_failure"}[10m])) > 0',
        "5m",
        "warning",
        "Model failures are sending complaints to the DLQ",
        "Inference failed on records in {{ $labels.namespace }}; they are in the DLQ with reason "
        "model_failure and can be redriven after a fix.",
        signals=("sum by (namespace, reason) (rate(allocator_dlq_total[10m]))",),
    ),
    Alert(
        "AllocatorTransactionsAborting",
        'sum by (namespace) (rate(allocator_transactions_total{outcome="aborted"}[10m])) '
        "/ sum by (namespace) (rate(allocator_transactions_total[10m])) > 0.1",
        "10m",
        "warning",
        "More than 10% of Kafka transactions abort",
        "Aborted transactions replay their batch: throughput suffers. Look for broker errors, "
        "fencing "
        "(rebalances) or a transaction timeout shorter than a batch.",
        signals=("sum by (namespace) (rate(allocator_transactions_total[10m]))",),
    ),
    Alert(
        "AllocatorEndToEndLatencyHigh",
        "histogram_quantile(0.99, sum by (namespace, le) "
        "(rate(allocator_end_to_end_latency_seconds_bucket[10m]))) > 30",
        "15m",
        "warning",
        "p99 end-to-end latency above 30s",
        "Complaints in {{ $labels.namespace }} take {{ $value | humanizeDuration }} (p99) from "
        "arrival to allocation.",
        signals=(
            "histogram_quantile(0.99, sum by (namespace, le) "
            "(rate(allocator_end_to_end_latency_seconds_bucket[10m])))",
        ),
    ),
    Alert(
        "AllocatorStrategyStale",
        "time() - max by (namespace, pod) (allocator_strategy_last_refresh_timestamp_seconds) > "
        "120",
        "5m",
        "warning",
        "A pod has not read the strategy for over 2 minutes",
        "{{ $labels.pod }} serves its last good strategy but cannot refresh it: strategy changes "
        "(canary, rollback) do not reach it.",
        signals=(
            "time() - max by (namespace, pod) (allocator_strategy_last_refresh_timestamp_seconds)",
        ),
    ),
    Alert(
        "AllocatorStoreDown",
        "min by (namespace, pod) (allocator_store_up) == 0",
        "5m",
        "critical",
        "Redis (model registry and strategy) is unreachable",
        "{{ $labels.pod }} cannot reach Redis. Running pods keep serving, but new pods cannot load "
        "models, strategy changes are frozen and the promoter is blind.",
        signals=("min by (namespace, pod) (allocator_store_up)",),
    ),
    Alert(
        "AllocatorStrategyRejected",
        "sum by (namespace) (increase(allocator_strategy_rejected_total[10m])) > 0",
        "0m",
        "warning",
        "A strategy document was refused",
        "Pods in {{ $labels.namespace }} refused a strategy (invalid, or a model that failed to "
        "load) and "
        "keep the previous one. Check `allocator strategy show` and the consumer logs.",
        signals=("sum by (namespace) (increase(allocator_strategy_rejected_total[10m]))",),
    ),
    Alert(
        "AllocatorModelLoadFailures",
        f"{LOAD_FAILURES} > 0",
        "0m",
        "warning",
        "A model package was refused at load",
        "{{ $labels.reason }}: a model package in {{ $labels.namespace }} failed verification "
        "(digest "
        "mismatch, manifest, ONNX) and was not served.",
        signals=(LOAD_FAILURES,),
    ),
    Alert(
        "AllocatorCircuitBreakerOpen",
        f"{BREAKER_OPEN} == 1",
        "2m",
        "critical",
        "A consumer's circuit breaker holds the input",
        "The model fails on most records in {{ $labels.pod }}: it commits nothing and holds its "
        "partitions; the input waits in Kafka, it is not dead-lettered. Publish a fixed plan "
        "(`allocator strategy champion NAME@VERSION`, or `allocator strategy end` for a failing "
        "challenger) or roll back (`allocator strategy rollback`): a new plan resumes the flow.",
        signals=(BREAKER_OPEN,),
    ),
    Alert(
        "AllocatorLiveAccuracyBelowTarget",
        f"{LIVE_ACCURACY} < on (namespace, task, model_version) group_left () "
        f"({EXPECTED_ACCURACY} - {ACCURACY_MARGIN}) "
        f"and on (namespace, task, model_version, arm) {ACCURACY_LABELS} >= {MIN_ACCURACY_LABELS}",
        "1h",
        "warning",
        "Live accuracy below the model's validation accuracy",
        "{{ $labels.task }} accuracy of {{ $labels.model_version }} ({{ $labels.arm }}) is "
        "{{ $value | humanizePercentage }} against human decisions, "
        f"more than {ACCURACY_MARGIN * 100:g} points below its validation accuracy, "
        f"on at least {MIN_ACCURACY_LABELS} labels. "
        "Consider a rollback (`allocator strategy rollback`) or retraining.",
        signals=(LIVE_ACCURACY, EXPECTED_ACCURACY, ACCURACY_LABELS),
    ),
    Alert(
        "AllocatorVulnerableRecallBelowTarget",
        f"{LIVE_RECALL} < on (namespace, model_version) group_left () "
        f"({EXPECTED_RECALL} - {RECALL_MARGIN}) "
        f"and on (namespace, model_version, arm) {POSITIVES} >= {MIN_VULNERABLE_POSITIVES}",
        "2h",
        "critical",
        "Vulnerable-customer recall below the model's calibrated recall",
        "{{ $labels.model_version }} ({{ $labels.arm }}) misses vulnerable customers: recall "
        "{{ $value | humanizePercentage }}, "
        f"more than {RECALL_MARGIN * 100:g} points below its calibrated recall, "
        f"on at least {MIN_VULNERABLE_POSITIVES} vulnerable customers. "
        "They must follow the vulnerable journey; roll back.",
        signals=(LIVE_RECALL, EXPECTED_RECALL, POSITIVES),
    ),
    Alert(
        "AllocatorAutomationGuaranteeBreached",
        f"{upper_bound(AUTO_ACCURACY, AUTO_LABELS)} < on (namespace, task, model_version) "
        f"group_left () {GUARANTEED_ACCURACY} "
        f"and on (namespace, task, model_version, arm) {AUTO_LABELS} >= {MIN_AUTOMATED_LABELS}",
        "1h",
        "critical",
        "The automated share is less accurate than the model's guarantee",
        "{{ $labels.task }} decisions that {{ $labels.model_version }} ({{ $labels.arm }}) took "
        "alone are less accurate than its manifest guarantees (the human team's target), beyond "
        f"noise (95% upper bound {{{{ $value | humanizePercentage }}}}, on at least "
        f"{MIN_AUTOMATED_LABELS} labels). Send the task to review (`allocator strategy "
        "rollback`, or a model whose guarantee holds) and retrain.",
        signals=(AUTO_ACCURACY, AUTO_LABELS, GUARANTEED_ACCURACY),
    ),
    Alert(
        "AllocatorVulnerableRecallGuaranteeBreached",
        f"{upper_bound(LIVE_RECALL, POSITIVES)} < on (namespace, model_version) group_left () "
        f"{GUARANTEED_RECALL} "
        f"and on (namespace, model_version, arm) {POSITIVES} >= {MIN_VULNERABLE_POSITIVES}",
        "2h",
        "critical",
        "Vulnerable-customer recall below the model's guarantee",
        "{{ $labels.model_version }} ({{ $labels.arm }}) finds fewer vulnerable customers than "
        "its manifest guarantees, beyond noise (95% upper bound "
        "{{ $value | humanizePercentage }}, "
        f"on at least {MIN_VULNERABLE_POSITIVES} vulnerable customers). The keyword rule and "
        "customer records still route theirs; roll back the model.",
        signals=(LIVE_RECALL, POSITIVES, GUARANTEED_RECALL),
    ),
    Alert(
        "AllocatorPromoterNotReady",
        "max by (namespace) (allocator_promoter_ready) == 0",
        "15m",
        "warning",
        "The promoter is not ready",
        "The promoter in {{ $labels.namespace }} has had no partitions or no Redis for 15 minutes: "
        "live accuracy "
        "goes stale and no canary is promoted or rolled back.",
        signals=("max by (namespace) (allocator_promoter_ready)",),
    ),
    Alert(
        "AllocatorExplainerErrors",
        f'sum by (namespace) (rate(allocator_explanations_total{{status=~"5.."}}[10m])) / '
        f"{EXPLANATIONS} > 0.05",
        "10m",
        "warning",
        "More than 5% of explanation requests fail",
        "The explainer in {{ $labels.namespace }} answers {{ $value | humanizePercentage }} of "
        "requests with "
        "a 5xx: regulator requests are failing.",
        signals=(EXPLANATIONS,),
    ),
)


def rules_file() -> dict[str, object]:
    """The Prometheus rules file (also the source of the chart's PrometheusRule)."""
    return {"groups": [{"name": GROUP, "rules": [a.rule() for a in ALERTS]}]}
