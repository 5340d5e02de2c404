"""The promoter's live gauges: each ratio comes with the number it rests on, per model version and
arm, so an alert can wait for enough evidence."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from consumer.metrics import PromoterMetrics
from promoter.hooks import PromoterHooks
from promoter.join import live_field


def test_live_sets_each_ratio_with_its_count() -> None:
    registry = CollectorRegistry()
    hooks = PromoterHooks(PromoterMetrics(registry))
    counters = {
        live_field("acc", "issue", "m@v1", "champion", "n"): 250,
        live_field("acc", "issue", "m@v1", "champion", "correct"): 125,
        live_field("rec", "m@v1", "champion", "positives"): 40,
        live_field("rec", "m@v1", "champion", "flagged"): 24,
    }
    hooks.live(counters, parked=3)
    acc = {"task": "issue", "model_version": "v1", "arm": "champion"}
    rec = {"model_version": "v1", "arm": "champion"}
    assert registry.get_sample_value("allocator_live_accuracy_ratio", acc) == 0.5
    assert registry.get_sample_value("allocator_live_accuracy_labels", acc) == 250
    assert registry.get_sample_value("allocator_live_vulnerable_recall_ratio", rec) == 0.6
    assert registry.get_sample_value("allocator_live_vulnerable_positives", rec) == 40
    assert registry.get_sample_value("allocator_promoter_parked_feedback") == 3
