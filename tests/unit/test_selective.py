"""Selective automation's guarantee (trainer.selective): the chosen threshold's automated share
meets the target at the stated confidence, checked against exact binomial arithmetic and by
simulation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from trainer import selective


def _calibrated(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Top scores that are honest probabilities of being right."""
    top = rng.uniform(0.3, 1.0, n)
    return top, rng.uniform(size=n) < top


def test_the_chosen_share_passes_its_binomial_test_and_the_next_looser_does_not() -> None:
    top, correct = _calibrated(3000, np.random.default_rng(1))
    g = selective.accuracy_threshold(top, correct, 0.8, 0.95)
    assert g["met"] and 0.2 < g["val_coverage"] < 0.8
    kept = top >= g["threshold"]
    n, k = int(kept.sum()), int(correct[kept].sum())
    assert (n, k / n) == (g["val_automated"], g["val_accuracy"])
    assert stats.binomtest(k, n, 0.8, alternative="greater").pvalue <= 0.05
    assert g["lower_bound"] >= 0.8  # Clopper-Pearson's one-sided bound agrees with the test
    # one candidate looser (the next lower quantile) is not rejected: fixed-sequence stops there
    coverages = np.round(np.arange(0.05, 1.0001, 0.01), 2)
    quantiles = np.unique(np.quantile(top, 1 - coverages, method="higher"))
    nxt = quantiles[quantiles < g["threshold"]].max()
    m = top >= nxt
    assert stats.binomtest(int(correct[m].sum()), int(m.sum()), 0.8, "greater").pvalue > 0.05


def test_the_guarantee_holds_at_its_confidence_over_many_validation_draws() -> None:
    """Draw validation sets, choose, then measure the automated share's true accuracy on a large
    fresh sample: it may miss the target in at most about 5% of draws (checked with slack)."""
    rng = np.random.default_rng(7)
    fresh_top, fresh_ok = _calibrated(200_000, rng)
    misses = 0
    draws = 200
    for _ in range(draws):
        top, correct = _calibrated(800, rng)
        g = selective.accuracy_threshold(top, correct, 0.85, 0.95)
        kept = fresh_top >= g["threshold"]
        if g["met"] and fresh_ok[kept].mean() < 0.85:
            misses += 1
    assert misses / draws <= 0.08


def test_no_share_reaching_the_target_automates_nothing_and_says_so() -> None:
    top, correct = _calibrated(500, np.random.default_rng(2))
    g = selective.accuracy_threshold(top, correct, 0.999, 0.95)
    assert not g["met"]
    assert g["threshold"] == selective.NOTHING and g["val_coverage"] == 0.0
    assert g["lower_bound"] is None


def test_recall_guarantee_flags_the_fewest_with_recall_bounded_below() -> None:
    rng = np.random.default_rng(3)
    y = rng.uniform(size=4000) < 0.2
    p = np.clip(rng.normal(0.35 + 0.2 * y, 0.15), 0, 1)
    g = selective.recall_threshold(p, y, 0.6, 0.95)
    assert g["met"]
    found = int((p[y] >= g["threshold"]).sum())
    assert found / y.sum() == pytest.approx(g["val_recall"])
    assert stats.binomtest(found, int(y.sum()), 0.6, "greater").pvalue <= 0.05
    assert g["lower_bound"] >= 0.6
    # the next grid step up would not pass: the threshold is the strictest that does
    up = int((p[y] >= g["threshold"] + 0.001).sum())
    assert stats.binomtest(up, int(y.sum()), 0.6, "greater").pvalue > 0.05
    # a point estimate of 60% would flag fewer: the guarantee costs flags, and says how many
    point = np.quantile(p[y], 0.4)
    assert (p >= point).mean() < g["val_flagged_share"]


def test_too_few_positives_flag_everything_and_claim_nothing() -> None:
    p = np.array([0.1, 0.9, 0.2, 0.8])
    y = np.array([False, True, False, False])
    g = selective.recall_threshold(p, y, 0.6, 0.95)
    assert not g["met"] and g["threshold"] == 0.0 and g["val_flagged_share"] == 1.0


@pytest.mark.parametrize(("target", "confidence"), [(0.0, 0.95), (1.0, 0.95), (0.8, 1.0)])
def test_bad_targets_are_refused(target: float, confidence: float) -> None:
    with pytest.raises(ValueError):
        selective.accuracy_threshold(np.array([0.9]), np.array([True]), target, confidence)


def test_clopper_pearson_interval_matches_scipy() -> None:
    lo, hi = selective.clopper_pearson(37, 50, 0.95)
    ci = stats.binomtest(37, 50).proportion_ci(0.95, method="exact")
    assert (lo, hi) == pytest.approx((ci.low, ci.high))


def test_the_trainer_writes_each_heads_guarantee_into_a_valid_manifest_entry() -> None:
    """``calibrate_heads`` on validation scores: the multiclass heads carry an accuracy guarantee
    at the configured targets, ``vulnerable`` a recall guarantee, and the specs pass the schema."""
    import pandas as pd
    from jsonschema import Draft202012Validator

    from consumer.contracts.schemas import schema
    from trainer.labels import load_label_space
    from trainer.run_config import TrainConfig
    from trainer.scoring import Scores
    from trainer.train_command import calibrate_heads

    space = load_label_space()
    rng = np.random.default_rng(5)
    n = 1500
    truth = {t: rng.integers(0, len(labels), n) for t, labels in space.tasks.items()}
    probs = {}
    for task, labels in space.tasks.items():
        logits = rng.normal(0, 1, (n, len(labels)))
        logits[np.arange(n), truth[task]] += 3.0  # a model that is often right
        e = np.exp(logits)
        probs[task] = e / e.sum(axis=1, keepdims=True)
    val = pd.DataFrame({t: [space.tasks[t][i] for i in truth[t]] for t in space.tasks})
    cfg = TrainConfig(review_target_accuracy={"team": 0.8, "issue": 0.71})
    heads = calibrate_heads(space, val, Scores(probs, 0.0), cfg)
    tasks_schema = Draft202012Validator(schema("model-manifest/v1")["properties"]["tasks"])
    for task, head in heads.items():
        spec = head.manifest(task)
        tasks_schema.validate({task: spec})
        g = spec["guarantee"]
        assert g["confidence"] == 0.95 and g["met"]
    assert heads["team"].guarantee["target"] == 0.8
    assert heads["issue"].guarantee["target"] == 0.71
    assert heads["issue"].review_threshold == heads["issue"].guarantee["threshold"]
    assert heads["vulnerable"].guarantee["measure"] == "recall"
    assert heads["vulnerable"].threshold == heads["vulnerable"].guarantee["threshold"]


def test_the_sequence_starts_where_a_test_can_reject() -> None:
    """A few very confident rows with one mistake among them must not end the sequence before the
    larger shares, which clear the target comfortably, are tested."""
    top = np.linspace(1.0, 0.0, 1000)
    correct = np.r_[np.array([True] * 9 + [False] + [True] * 2), np.arange(988) % 10 < 9]
    correct[500:] = np.arange(500) % 2 == 0  # the lower half is a coin toss
    strict = selective.accuracy_threshold(top, correct, 0.8, 0.95, min_coverage=0.01)
    assert not strict["met"]  # 11 of 12 at 1% cannot reject 80%: the sequence ends there
    g = selective.accuracy_threshold(top, correct, 0.8, 0.95)
    assert g["met"] and 0.4 < g["val_coverage"] < 0.7


@pytest.mark.parametrize(
    "changes",
    [
        {"vulnerable_policy": "guarante"},
        {"guarantee_confidence": 1.0},
        {"guarantee_confidence": 0.2},
        {"guarantee_min_coverage": 0.0},
        {"review_target_accuracy": {"team": 80}},
        {"vulnerable_min_recall": 1.0},
    ],
)
def test_bad_decision_settings_are_refused_before_training(changes: dict[str, object]) -> None:
    from consumer.errors import ConfigError
    from trainer.run_config import TrainConfig

    with pytest.raises(ConfigError):
        TrainConfig().replace(**changes)
