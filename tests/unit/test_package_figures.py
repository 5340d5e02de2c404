"""What a package's manifest says its heads achieved on validation: the figures the consumer
exports as ``allocator_model_expected_ratio`` for the live-quality alerts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from consumer.package import ModelPackage, load_package
from tests.tiny_packages import with_validation_figures

HEADS: dict[str, dict[str, Any]] = {
    "team": {"output": "team_logits", "labels": ["a", "b"], "kind": "multiclass"},
    "vulnerable": {
        "output": "vulnerable_logits",
        "labels": ["no", "yes"],
        "kind": "binary",
        "positive_label": "yes",
        "calibration": {"threshold": 0.3, "val_recall": 0.61, "val_precision": 0.2},
    },
}


def package(manifest: dict[str, Any]) -> ModelPackage:
    return ModelPackage(Path("."), {"name": "m", "version": "1", **manifest}, "0" * 64)


def test_validation_accuracy_and_calibrated_recall() -> None:
    metrics = {"val": {"team": {"accuracy": 0.8}, "vulnerable": {"accuracy": 0.7, "recall": 0.6}}}
    pkg = package({"tasks": HEADS, "metrics": metrics})
    assert pkg.expected("team") == {"accuracy": 0.8}
    # the recall at the calibrated threshold wins over the served decisions' recall
    assert pkg.expected("vulnerable") == {"accuracy": 0.7, "recall": 0.61}


def test_recall_falls_back_to_validation_metrics() -> None:
    heads = {
        **HEADS,
        "vulnerable": {k: v for k, v in HEADS["vulnerable"].items() if k != "calibration"},
    }
    pkg = package({"tasks": heads, "metrics": {"val": {"vulnerable": {"recall": 0.0}}}})
    assert pkg.expected("vulnerable") == {"recall": 0.0}


def test_missing_or_malformed_figures_are_left_out() -> None:
    heads = {**HEADS, "vulnerable": {**HEADS["vulnerable"], "calibration": {"val_recall": "high"}}}
    metrics = {"val": {"team": {"accuracy": 80}, "vulnerable": {"accuracy": True}}}
    pkg = package({"tasks": heads, "metrics": metrics})
    assert pkg.expected("team") == {} and pkg.expected("vulnerable") == {}
    assert package({"tasks": HEADS}).expected("team") == {}
    assert package({"tasks": HEADS, "metrics": {"val": []}}).expected("team") == {}
    assert package({"tasks": HEADS}).expected("issue") == {}


def test_a_tiny_package_has_none_until_given(tiny: Path, tmp_path: Path) -> None:
    assert all(load_package(tiny).expected(t) == {} for t in ("team", "issue", "vulnerable"))
    given = load_package(with_validation_figures(tiny, tmp_path / "pkg", 0.6, 0.4))
    assert given.expected("issue") == {"accuracy": 0.6, "guaranteed_accuracy": 0.6}
    assert given.expected("vulnerable") == {
        "accuracy": 0.6,
        "recall": 0.4,
        "guaranteed_recall": 0.4,
    }
    assert given.ref == load_package(tiny).ref and given.digest != load_package(tiny).digest


def test_a_guarantee_not_met_promises_nothing(tiny: Path, tmp_path: Path) -> None:
    from consumer.package import write_manifest

    given = load_package(with_validation_figures(tiny, tmp_path / "pkg", 0.6, 0.4))
    tasks = {
        t: {**spec, "guarantee": {**spec["guarantee"], "met": False}}
        for t, spec in given.manifest["tasks"].items()
    }
    write_manifest(given.path, {**given.manifest, "tasks": tasks})
    unmet = load_package(given.path)
    assert unmet.expected("issue") == {"accuracy": 0.6}
    assert unmet.heads["issue"].guarantee_met is False
