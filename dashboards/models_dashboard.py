"""The "models" dashboard: which strategy and models serve, what they predict, how good they are."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash_b

from dashboards.panels import (
    Panel,
    Variable,
    grid,
    quantile,
    rate,
    sel,
    series,
    single,
    target,
    updown,
)


def strategy_version() -> Panel:
    return series(
        "Strategy version per pod",
        "Version of the strategy document in force. Pods should agree within "
        "seconds of a change; a pod stuck on an old version cannot reach Redis.",
        "none",
        target(f"max by (pod) ({sel('allocator_strategy_version')})", "{{pod}}"),
    )


def strategy_age() -> Panel:
    return single(
        "Strategy read age (worst pod)",
        "Seconds since the stalest pod last read the strategy.",
        "s",
        target(f"time() - min({sel('allocator_strategy_last_refresh_timestamp_seconds')})", "age"),
        [(None, "green"), (30, "orange"), (120, "red")],
    )


def store_up() -> Panel:
    return single(
        "Redis (worst pod)",
        "Whether every pod's last strategy read reached Redis. Pods keep "
        "serving the last good strategy while it is down.",
        "none",
        target(f"min({sel('allocator_store_up')})", "store"),
        [(None, "red"), (1, "green")],
        mappings=updown(),
    )


def strategy_rejections() -> Panel:
    return single(
        "Strategy / model refusals (1h)",
        "Strategy documents refused and model packages refused "
        "at load (digest mismatch, bad manifest) in the last hour.",
        "short",
        target(
            f"sum(increase({sel('allocator_strategy_rejected_total')}[1h])) + "
            f"sum(increase({sel('allocator_model_load_failures_total')}[1h]))",
            "refusals",
        ),
        [(None, "green"), (1, "red")],
    )


def models_served() -> Panel:
    return grid(
        "Models served",
        "One row per (task, arm): the model name, version and digest prefix.",
        target(
            "max by (task, arm, model_name, model_version, digest) "
            f"({sel('allocator_model_info')})",
            instant=True,
        ),
    )


def predictions_by_label() -> Panel:
    return series(
        "Predictions by label and model version",
        "Published predictions per task, label and model "
        "version: a shift in the mix after a promotion shows here first.",
        "ops",
        target(
            rate("allocator_predictions_total", by="task, model_version, label"),
            "{{task}} {{model_version}} {{label}}",
        ),
        stack=True,
        width=24,
        height=10,
    )


def traffic_by_arm() -> Panel:
    return series(
        "Traffic by arm",
        "Predictions per task and strategy arm (champion, canary): the canary share should match "
        "its weight.",
        "ops",
        target(rate("allocator_predictions_total", by="task, arm"), "{{task}} {{arm}}"),
        stack=True,
    )


def needs_review() -> Panel:
    return series(
        "Routed to human review",
        "Allocations below a decision threshold, per task.",
        "ops",
        target(rate("allocator_needs_review_total", by="task"), "{{task}}"),
        stack=True,
    )


def automated_share() -> Panel:
    return series(
        "Automated share (coverage)",
        "Share of published decisions the model took alone, per task and model version: the rest "
        "went to the triage analysts. The trainer chose each threshold so that this share meets "
        "the human team's accuracy at 95% confidence (the manifest's guarantee).",
        "percentunit",
        target(
            f"{rate('allocator_routed_total', by='task, model_version', decision='auto')} / "
            f"{rate('allocator_routed_total', by='task, model_version')}",
            "{{task}} {{model_version}}",
        ),
    )


def shadow_agreement() -> Panel:
    return series(
        "Shadow agreement",
        "Share of shadow predictions that agree with the published one, per task and shadow model "
        "version.",
        "percentunit",
        target(
            f"{rate('allocator_shadow_agreement_total', by='task, model_version', agree='true')} / "
            f"{rate('allocator_shadow_agreement_total', by='task, model_version')}",
            "{{task}} {{model_version}}",
        ),
    )


def live_guarantee() -> Panel:
    return series(
        "Live automated share vs its guarantee",
        "From feedback, per task, model version and arm: accuracy on the decisions the model took "
        "alone (the figure the manifest guarantees), the share it took alone (live coverage), and "
        "the guaranteed targets. A challenger that covers more at the same target automates more "
        "of the triage team's work.",
        "percentunit",
        target(
            f"max by (task, model_version, arm) ({sel('allocator_live_automated_accuracy_ratio')})",
            "accuracy automated {{task}} {{model_version}} {{arm}}",
        ),
        target(
            f"max by (task, model_version, arm) ({sel('allocator_live_coverage_ratio')})",
            "coverage {{task}} {{model_version}} {{arm}}",
            ref="B",
        ),
        target(
            f"max by (task, model_version, measure) "
            f"({sel('allocator_model_expected_ratio', measure='guaranteed_accuracy')})",
            "guaranteed {{task}} {{model_version}}",
            ref="C",
        ),
    )


def live_accuracy() -> Panel:
    return series(
        "Live accuracy",
        "Accuracy against human decisions (feedback), per task, model version and arm; "
        "vulnerable-customer recall, the promotion guardrail; and what the served models' "
        "manifests expect (validation accuracy, calibrated recall), which the alerts compare with.",
        "percentunit",
        target(
            f"max by (task, model_version, arm) ({sel('allocator_live_accuracy_ratio')})",
            "{{task}} {{model_version}} {{arm}}",
        ),
        target(
            f"max by (model_version, arm) ({sel('allocator_live_vulnerable_recall_ratio')})",
            "vulnerable recall {{model_version}} {{arm}}",
            ref="B",
        ),
        target(
            f"max by (task, model_version, measure) ({sel('allocator_model_expected_ratio')})",
            "expected {{task}} {{measure}} {{model_version}}",
            ref="C",
        ),
    )


def live_evidence() -> Panel:
    return series(
        "Evidence behind live accuracy",
        "Labelled predictions per task, model version and arm, and customers people judged "
        "vulnerable per model version and arm. The accuracy and recall alerts wait for 200 "
        "labels and 30 vulnerable customers.",
        "short",
        target(
            f"max by (task, model_version, arm) ({sel('allocator_live_accuracy_labels')})",
            "labels {{task}} {{model_version}} {{arm}}",
        ),
        target(
            f"max by (model_version, arm) ({sel('allocator_live_vulnerable_positives')})",
            "vulnerable {{model_version}} {{arm}}",
            ref="B",
        ),
    )


def live_outcomes() -> Panel:
    return series(
        "Labelled outcomes",
        "Predictions joined with feedback, by correctness: the evidence behind live accuracy and "
        "promotion decisions.",
        "ops",
        target(
            rate("allocator_live_outcomes_total", by="task, arm, correct"),
            "{{task}} {{arm}} {{correct}}",
        ),
        stack=True,
    )


def feedback_and_decisions() -> Panel:
    return series(
        "Feedback joins and promoter decisions",
        "Feedback records by join outcome, and canary/shadow decisions by action (applied or "
        "recommended).",
        "ops",
        target(rate("allocator_feedback_total", by="outcome"), "feedback {{outcome}}"),
        target(
            rate("allocator_promoter_decisions_total", by="task, action, applied"),
            "{{task}} {{action}} applied={{applied}}",
            ref="B",
        ),
    )


def label_delay() -> Panel:
    return series(
        "Label delay (p50)",
        "From allocation to the human decision: how stale live accuracy is.",
        "s",
        target(quantile(0.5, "allocator_label_delay_seconds"), "p50"),
    )


def experiment_evidence() -> Panel:
    return series(
        "Experiment evidence",
        "Always-valid p-values of each running experiment's tests (better, worse, recall_worse): "
        "the promoter "
        "acts when one falls below alpha (ALLOCATOR_ALPHA, 0.05 by default). And labels counted "
        "per arm.",
        "none",
        target(
            f"max by (task, mode, test) ({sel('allocator_promoter_p_value')})",
            "p {{task}} {{mode}} {{test}}",
        ),
        target(
            f"max by (task, mode, arm) ({sel('allocator_promoter_experiment_labels')})",
            "labels {{task}} {{mode}} {{arm}}",
            ref="B",
        ),
    )


def promoter_health() -> Panel:
    return series(
        "Promoter input",
        "Records the promoter reads by kind and outcome, feedback parked until its allocation "
        "arrives, and "
        "its own lag. Parked feedback that only grows means allocations are missing.",
        "short",
        target(
            rate("allocator_promoter_records_total", by="kind, outcome"), "{{kind}} {{outcome}} /s"
        ),
        target(f"sum({sel('allocator_promoter_parked_feedback')})", "parked feedback", ref="B"),
        target(f"sum({sel('allocator_promoter_lag_messages')})", "lag", ref="C"),
    )


def promoter_batch() -> Panel:
    return series(
        "Promoter batch time and readiness",
        "Wall time of one promoter batch (state transaction, offset commit, evaluation), and "
        "whether it is ready.",
        "s",
        target(quantile(0.99, "allocator_promoter_batch_duration_seconds"), "batch p99"),
        target(f"max({sel('allocator_promoter_ready')})", "ready", ref="B"),
    )


def explanations() -> Panel:
    return series(
        "Explanations",
        "Explainer requests by HTTP status, and answers served from the cache.",
        "ops",
        target(rate("allocator_explanations_total", by="status"), "{{status}}"),
        target(rate("allocator_explanation_cache_hits_total"), "cache hits", ref="B"),
    )


def explanation_time() -> Panel:
    return series(
        "Explanation time",
        "Time to compute one explanation (cache misses).",
        "s",
        target(quantile(0.5, "allocator_explanation_duration_seconds"), "p50"),
        target(quantile(0.99, "allocator_explanation_duration_seconds"), "p99", ref="B"),
    )


def build(variables: list[Variable]) -> dash_b.Dashboard:
    board = (
        dash_b.Dashboard("Complaints allocation / Models")
        .uid("ca-models")
        .description(
            "Strategy and models in force, predictions, shadow agreement, live accuracy, explainer."
        )
        .tags(["complaints-allocation"])
        .refresh("1m")
        .time("now-24h", "now")
        .timezone("browser")
    )
    for variable in variables:
        board = board.with_variable(variable)
    board = board.with_row(dash_b.Row("Strategy"))
    for panel in (
        strategy_age(),
        store_up(),
        strategy_rejections(),
        strategy_version(),
        models_served(),
    ):
        board = board.with_panel(panel)
    board = board.with_row(dash_b.Row("Predictions"))
    for panel in (predictions_by_label(), traffic_by_arm(), needs_review(), automated_share()):
        board = board.with_panel(panel)
    board = board.with_row(dash_b.Row("Quality"))
    for panel in (
        shadow_agreement(),
        live_accuracy(),
        live_guarantee(),
        live_evidence(),
        live_outcomes(),
        feedback_and_decisions(),
        label_delay(),
    ):
        board = board.with_panel(panel)
    board = board.with_row(dash_b.Row("Promoter"))
    for panel in (experiment_evidence(), promoter_health(), promoter_batch()):
        board = board.with_panel(panel)
    board = board.with_row(dash_b.Row("Explainer"))
    for panel in (explanations(), explanation_time()):
        board = board.with_panel(panel)
    return board
