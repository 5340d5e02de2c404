"""Selective automation with a finite-sample guarantee: which share of complaints a head may decide
alone, chosen on validation so that the share's quality meets the human team's, at a stated
confidence.

Method: Learn then Test (Angelopoulos, Bates, Candès, Jordan and Lei, "Learn then Test:
Calibrating Predictive Algorithms to Achieve Risk Control", 2021, arXiv:2110.01052) with
fixed-sequence testing, and the exact binomial (Clopper-Pearson, 1934) test for each candidate:

- ``accuracy_threshold`` (multiclass heads): a candidate threshold ``t`` automates the rows whose
  top score is at least ``t``. Its null hypothesis is "accuracy on the automated rows < target".
  Given the scores, the ``n`` automated rows are independent trials, so the count of correct ones is
  binomial and the p-value is ``P(Binomial(n, target) >= correct)``. Candidates are tested from the
  strictest (``min_coverage`` of validation automated, 5% by default) to the loosest (100%), in
  steps of 1%, and testing stops at the first that is not rejected at ``delta = 1 - confidence``;
  the loosest rejected one is chosen. The start is fixed before looking: a test on 1% of validation
  (12 rows for ``issue``) cannot reject unless nearly every row is right (11 of 12 at a 71% target
  gives p = 0.12), and the first test that fails ends the sequence, so starting there would often
  automate nothing that a larger share could have justified. Fixed-sequence
  testing spends the whole ``delta`` on each test and still bounds the chance that *any* chosen
  threshold misses the target by ``delta`` (family-wise error control), so: with probability at
  least ``confidence`` over the validation sample, accuracy on the automated share is at least the
  target. The candidates are score quantiles of the validation rows, which depend on the scores
  only, never the labels, so the tests stay valid given the scores (the same argument as
  Geifman and El-Yaniv, "Selective Classification for Deep Neural Networks", NeurIPS 2017).
- ``recall_threshold`` (binary heads, ``vulnerable``): a candidate ``t`` flags ``P(yes) >= t``; the
  null is "recall < target" and the p-value is binomial over the validation positives. Candidates
  come from a fixed grid (0.000 to 1.000 in steps of 0.001, independent of the data) and are tested
  from the loosest (everything flagged, recall 1) upwards; the strictest rejected one is chosen, the
  fewest flags with recall at least the target at ``confidence``.

Each function returns the threshold with a ``guarantee`` record for the manifest: the method, the
target, the confidence, the validation counts and the one-sided Clopper-Pearson lower bound of the
chosen threshold's accuracy (or recall). When no candidate is rejected, ``met`` is false and the
threshold automates nothing (multiclass: 1.0 and ``met`` false, every complaint goes to people)
or flags everything (binary: 0.0): the guarantee is never claimed on a fallback.

Never call these on test or holdout rows: the guarantee is about data the thresholds were not chosen
on only if the rows scored later were not used here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

METHOD = "learn-then-test fixed-sequence, exact binomial (Clopper-Pearson)"
# The threshold recorded when no candidate passes: with ``met`` false the consumer automates nothing
# whatever the score (a float32 softmax can round to exactly 1.0, so no threshold alone would do).
NOTHING = 1.0


def binomial_p(successes: np.ndarray, trials: np.ndarray, target: float) -> np.ndarray:
    """One-sided p-values of "success rate < target": ``P(Binomial(trials, target) >= successes)``;
    1.0 where there are no trials."""
    successes, trials = np.asarray(successes), np.asarray(trials)
    p = stats.binom.sf(successes - 1, np.maximum(trials, 1), target)
    return np.where(trials > 0, p, 1.0)


def clopper_pearson_lower(successes: int, trials: int, confidence: float) -> float:
    """The one-sided lower confidence bound of a binomial proportion at ``confidence``."""
    if trials <= 0 or successes <= 0:
        return 0.0
    return float(stats.beta.ppf(1.0 - confidence, successes, trials - successes + 1))


def clopper_pearson(successes: int, trials: int, confidence: float) -> tuple[float, float]:
    """The two-sided Clopper-Pearson interval at ``confidence`` (for reports)."""
    if trials <= 0:
        return 0.0, 1.0
    a = (1.0 - confidence) / 2
    lo = 0.0 if successes == 0 else stats.beta.ppf(a, successes, trials - successes + 1)
    hi = 1.0 if successes == trials else stats.beta.ppf(1 - a, successes + 1, trials - successes)
    return float(lo), float(hi)


def _fixed_sequence(p_values: np.ndarray, delta: float) -> int:
    """Index of the last hypothesis rejected before the first that is not; -1 when none is."""
    failed = np.flatnonzero(p_values > delta)
    return (int(failed[0]) if failed.size else len(p_values)) - 1


def accuracy_threshold(
    top: np.ndarray,
    correct: np.ndarray,
    target: float,
    confidence: float = 0.95,
    min_coverage: float = 0.05,
) -> dict[str, Any]:
    """The loosest top-score threshold whose automated share has accuracy >= ``target`` with
    probability >= ``confidence`` (see the module docstring). ``top``: each validation row's top
    score; ``correct``: whether its top label is the true one."""
    _check(target, confidence)
    top, correct = np.asarray(top, dtype=float), np.asarray(correct, dtype=bool)
    if top.shape != correct.shape or top.size == 0:
        raise ValueError("accuracy_threshold needs one top score and one outcome per row, >= 1 row")
    coverages = np.round(np.arange(max(min_coverage, 0.01), 1.0 + 1e-9, 0.01), 2)
    # candidate thresholds: the score quantile that automates each coverage (labels unseen)
    cands = np.unique(np.quantile(top, 1.0 - coverages, method="higher"))[::-1]
    kept = (top[None, :] >= cands[:, None]).sum(axis=1)
    right = ((top[None, :] >= cands[:, None]) & correct[None, :]).sum(axis=1)
    p = binomial_p(right, kept, target)
    i = _fixed_sequence(p, 1.0 - confidence)
    record: dict[str, Any] = {
        "method": METHOD,
        "measure": "accuracy_on_automated",
        "target": target,
        "confidence": confidence,
        "val_rows": int(top.size),
        "val_accuracy_all": float(correct.mean()),
        "candidates_tested": int(min(i + 2, len(cands))),
    }
    if i < 0:
        return {
            "threshold": NOTHING,
            **record,
            "met": False,
            "val_coverage": 0.0,
            "val_automated": 0,
            "val_accuracy": None,
            "lower_bound": None,
            "p_value": float(p[0]) if p.size else 1.0,
        }
    n, k = int(kept[i]), int(right[i])
    return {
        "threshold": float(cands[i]),
        **record,
        "met": True,
        "val_coverage": n / top.size,
        "val_automated": n,
        "val_accuracy": k / n,
        "lower_bound": clopper_pearson_lower(k, n, confidence),
        "p_value": float(p[i]),
    }


def recall_threshold(
    p_pos: np.ndarray, positive: np.ndarray, target: float, confidence: float = 0.95
) -> dict[str, Any]:
    """The strictest ``P(positive)`` threshold whose recall is >= ``target`` with probability >=
    ``confidence``, from the fixed grid 0.000..1.000 (see the module docstring)."""
    _check(target, confidence)
    p_pos, positive = np.asarray(p_pos, dtype=float), np.asarray(positive, dtype=bool)
    if p_pos.shape != positive.shape or not positive.any():
        raise ValueError("recall_threshold needs one score and one label per row, >= 1 positive")
    grid = np.round(np.linspace(0.0, 1.0, 1001), 3)
    pos_scores = p_pos[positive]
    found = (pos_scores[None, :] >= grid[:, None]).sum(axis=1)
    n_pos = int(positive.sum())
    p = binomial_p(found, np.full_like(found, n_pos), target)
    i = _fixed_sequence(p, 1.0 - confidence)
    met = i >= 0
    i = max(i, 0)  # no rejection: flag everything (threshold 0), and say the guarantee is not met
    t = float(grid[i])
    flagged = p_pos >= t
    k = int(found[i])
    return {
        "threshold": t,
        "method": METHOD,
        "measure": "recall",
        "target": target,
        "confidence": confidence,
        "met": bool(met),
        "val_rows": int(p_pos.size),
        "val_positives": n_pos,
        "val_recall": k / n_pos,
        "lower_bound": clopper_pearson_lower(k, n_pos, confidence) if met else None,
        "p_value": float(p[i]),
        "val_flagged_share": float(flagged.mean()),
        "val_precision": float(positive[flagged].mean()) if flagged.any() else 0.0,
    }


def _check(target: float, confidence: float) -> None:
    if not 0.0 < target < 1.0:
        raise ValueError(f"target must be in (0, 1), got {target}")
    if not 0.5 <= confidence < 1.0:
        raise ValueError(f"confidence must be in [0.5, 1), got {confidence}")
