"""Point-estimate thresholds for the binary head (the non-default policies), and the evaluation
statistics."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.metrics import f1_score

from trainer.calibrate import binary_threshold
from trainer.metrics import binary_pr, macro_f1, mcnemar_exact


def test_fbeta_threshold_maximises_f2() -> None:
    p = np.array([0.95, 0.9, 0.8, 0.6, 0.4, 0.3, 0.2, 0.1])
    y = np.array([1, 1, 0, 1, 0, 1, 0, 0], dtype=bool)
    cal = binary_threshold(p, y, "fbeta", beta=2.0)
    best = 0.0
    for t in p:
        r, prec = binary_pr(y.astype(int), (p >= t).astype(int), 1)
        f2 = 5 * prec * r / (4 * prec + r) if prec + r else 0.0
        best = max(best, f2)
    assert cal["val_fbeta"] == pytest.approx(best)
    assert cal["threshold"] == 0.3  # catches all four positives


def test_precision_policy_and_its_fallback() -> None:
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    y = np.array([1, 0, 1, 0, 1], dtype=bool)
    cal = binary_threshold(p, y, "precision", min_precision=0.6)
    assert cal["policy"] == "precision" and cal["val_precision"] >= 0.6
    assert cal["val_recall"] == pytest.approx(1.0)  # flagging all five: precision exactly 0.6
    assert binary_threshold(p, y, "precision", min_precision=1.01)["policy"] == "fbeta"


def test_mcnemar_exact_matches_the_binomial_test() -> None:
    a = np.array([1] * 30 + [0] * 10 + [1] * 50, dtype=bool)
    b = np.array([0] * 30 + [1] * 10 + [1] * 50, dtype=bool)
    r = mcnemar_exact(a, b)
    assert (r["only_a_correct"], r["only_b_correct"]) == (30, 10)
    assert r["p_value"] == pytest.approx(binomtest(10, 40, 0.5).pvalue)
    assert mcnemar_exact(a, a)["p_value"] == 1.0


def test_macro_f1_matches_sklearn() -> None:
    rng = np.random.default_rng(1)
    y, pred = rng.integers(0, 6, 300), rng.integers(0, 5, 300)
    assert macro_f1(y, pred, 7) == pytest.approx(f1_score(y, pred, average="macro"))


def test_recall_policy_reaches_the_target_with_the_fewest_flags() -> None:
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3])
    y = np.array([1, 0, 1, 0, 1, 0, 1], dtype=bool)
    cal = binary_threshold(p, y, "recall", min_recall=0.5)
    assert cal["threshold"] == 0.7 and cal["val_recall"] == 0.5  # 2 of 4 positives, 3 flags
    assert cal["val_flagged_share"] == pytest.approx(3 / 7)
    assert binary_threshold(p, y, "recall", min_recall=1.0)["threshold"] == 0.3


def test_evaluate_scores_each_task_on_the_rows_labelled_for_it() -> None:
    import pandas as pd

    from consumer.package import TaskHead
    from trainer.labels import UNKNOWN
    from trainer.metrics import evaluate
    from trainer.scoring import Scores

    heads = {
        "team": TaskHead("team", "team_logits", ("cards", "mortgages"), "multiclass"),
        "vulnerable": TaskHead(
            "vulnerable", "vulnerable_logits", ("no", "yes"), "binary", "yes", threshold=0.5
        ),
    }
    # row 0: right on team, flagged; row 1: wrong on team, not flagged; row 2: right on team,
    # flagged
    probs = {
        "team": np.array([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9]]),
        "vulnerable": np.array([[0.1, 0.9], [0.9, 0.1], [0.1, 0.9]]),
    }
    df = pd.DataFrame(
        {"team": ["cards", "mortgages", "mortgages"], "vulnerable": ["yes", UNKNOWN, "no"]}
    )
    m = evaluate(heads, Scores(probs, 0.001), df)
    assert m["team"]["n"] == 3 and m["team"]["accuracy"] == pytest.approx(2 / 3)
    # the unlabelled row is neither a missed vulnerable customer nor a false flag
    assert m["vulnerable"]["n"] == 2
    assert (m["vulnerable"]["recall"], m["vulnerable"]["precision"]) == (1.0, 0.5)
