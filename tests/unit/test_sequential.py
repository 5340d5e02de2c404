"""The promotion statistics: error rates by simulation, the rule on hand-made counts, and the
state."""

from __future__ import annotations

import json
import math
from typing import Literal

import numpy as np
import pytest

from promoter.sequential import (
    ArmStats,
    Discordance,
    Policy,
    decide,
    evaluate,
    log_e_positive,
    log_ndtr,
)
from promoter.simulate import Scenario, first_decisions, run, sample_paths

Design = Literal["canary", "shadow"]
DESIGNS: tuple[Design, ...] = ("canary", "shadow")


def _vulnerable_arm(n: int, correct: int, positives: int = 40, flagged: int = 36) -> ArmStats:
    return ArmStats(
        n=n, correct=correct, vulnerable_positives=positives, vulnerable_flagged=flagged
    )


# --- error rates, by simulation with decide's rule applied after every
# label ------------------------------


@pytest.mark.parametrize("design", DESIGNS)
def test_null_false_promotion_rate_is_within_alpha(design: Design) -> None:
    result = run(Scenario("null", design, 0.80, 0.80), experiments=200, max_labels=10_000, seed=11)
    assert result.false_promotion_rate is not None
    assert result.false_promotion_rate <= 0.05


def test_the_harness_catches_peeking_at_a_fixed_sample_test() -> None:
    # The same null paths, judged by a one-sided z-test at 5% after every label (not anytime-valid):
    # it must "promote" far more often than 5%, or the null test above could not fail.
    champion, challenger, _ = sample_paths(
        Scenario("null", "canary", 0.8, 0.8), 200, 5_000, np.random.default_rng(3)
    )
    n_a, n_b = np.maximum(champion.n, 1), np.maximum(challenger.n, 1)
    p = (np.asarray(champion.correct) + challenger.correct) / (n_a + n_b)
    z = (np.asarray(challenger.correct) / n_b - np.asarray(champion.correct) / n_a) / np.sqrt(
        p * (1 - p) * (1 / n_a + 1 / n_b) + 1e-12
    )
    naive = np.where((n_a >= 50) & (n_b >= 50) & (z > 1.645), 1, 0).astype(np.int8)
    assert np.mean(first_decisions(naive)[0] == 1) > 0.2


@pytest.mark.parametrize("design", DESIGNS)
def test_a_clearly_better_challenger_is_promoted_in_most_runs(design: Design) -> None:
    result = run(Scenario("better", design, 0.80, 0.88), experiments=100, max_labels=6_000, seed=12)
    assert result.promote_rate >= 0.7
    assert result.rollback_rate <= 0.1


@pytest.mark.parametrize("design", DESIGNS)
def test_a_clearly_worse_challenger_is_rolled_back_in_most_runs(design: Design) -> None:
    result = run(Scenario("worse", design, 0.80, 0.70), experiments=100, max_labels=6_000, seed=13)
    assert result.rollback_rate >= 0.9
    assert result.promote_rate == 0.0


@pytest.mark.parametrize("design", DESIGNS)
def test_decide_after_every_label_matches_the_vectorised_rule(design: Design) -> None:
    # simulate.run relies on evaluate() being exactly decide(); replay two paths label by label
    # through record().
    sc = Scenario("better", design, 0.80, 0.90, correlation=0.3)
    champion_path, challenger_path, disc_path = sample_paths(sc, 2, 1_500, np.random.default_rng(5))
    policy = Policy(min_vulnerable=10)
    vectorised = evaluate(champion_path, challenger_path, disc_path, policy).action
    assert (vectorised != 0).any()  # the replay must cover a decision, not only waits
    for row in range(2):
        champion, challenger, discordance = ArmStats(), ArmStats(), Discordance()
        steps = [np.diff(np.asarray(x)[row], prepend=0) for x in (*champion_path, *challenger_path)]
        for t in range(1_500):
            (na, ka, pa, fa, nb, kb, pb, fb) = (int(s[t]) for s in steps)
            if na:
                champion.record(bool(ka), vulnerable=bool(pa), flagged=bool(fa))
            if nb:
                challenger.record(bool(kb), vulnerable=bool(pb), flagged=bool(fb))
            if design == "shadow":
                discordance.record(bool(ka), bool(kb))
                decision = decide(
                    champion, challenger, paired=True, discordant=discordance, min_vulnerable=10
                )
            else:
                decision = decide(champion, challenger, min_vulnerable=10)
            expected = {1: "promote", -1: "rollback", 0: "wait"}[int(vectorised[row, t])]
            assert decision.action == expected, (row, t, decision)


# --- the rule on hand-made
# counts -------------------------------------------------------------------------


def test_better_accuracy_with_equal_recall_promotes() -> None:
    decision = decide(_vulnerable_arm(2_000, 1_600), _vulnerable_arm(500, 450))
    assert decision.action == "promote"
    assert decision.evidence["p_better"] <= 0.05 and decision.evidence["guardrail_ok"] is True


def test_guardrail_blocks_promotion_when_challenger_recall_is_worse() -> None:
    champion = _vulnerable_arm(2_000, 1_600, positives=200, flagged=180)  # recall 0.90
    challenger = _vulnerable_arm(
        500, 450, positives=50, flagged=43
    )  # recall 0.86, accuracy 0.90 vs 0.80
    decision = decide(champion, challenger)
    assert decision.evidence["p_better"] <= 0.05  # the accuracy evidence alone would promote
    assert decision.action == "wait" and "guardrail" in decision.reason
    # With a recall margin of 5 points the same counts pass the guardrail.
    assert decide(champion, challenger, recall_margin=0.05).action == "promote"


def test_guardrail_needs_enough_vulnerable_customers_in_each_arm() -> None:
    decision = decide(
        _vulnerable_arm(2_000, 1_600), _vulnerable_arm(500, 450, positives=29, flagged=29)
    )
    assert decision.action == "wait"


def test_a_clear_fall_in_vulnerable_recall_rolls_back_even_with_better_accuracy() -> None:
    champion = _vulnerable_arm(4_000, 3_200, positives=400, flagged=360)  # recall 0.90
    challenger = _vulnerable_arm(1_000, 900, positives=100, flagged=60)  # recall 0.60
    decision = decide(champion, challenger)
    assert decision.action == "rollback" and "recall" in decision.reason
    assert decision.evidence["p_recall_worse"] <= 0.05


@pytest.mark.parametrize("paired", [False, True])
def test_no_decision_before_min_labels_in_each_arm(paired: bool) -> None:
    # The champion always wrong and the challenger always right: overwhelming evidence from the
    # first labels.
    champion, challenger, discordance = ArmStats(), ArmStats(), Discordance()
    for i in range(1, 80):
        champion.record(False, vulnerable=True, flagged=True)
        challenger.record(True, vulnerable=True, flagged=True)
        discordance.record(False, True)
        decision = decide(
            champion,
            challenger,
            paired=paired,
            discordant=discordance if paired else None,
            min_vulnerable=1,
        )
        assert decision.action == ("wait" if i < 50 else "promote"), i


def test_rollback_also_waits_for_min_labels() -> None:
    assert decide(ArmStats(49, 49), ArmStats(49, 0)).action == "wait"
    assert decide(ArmStats(50, 50), ArmStats(50, 0)).action == "rollback"


def test_paired_and_discordant_go_together() -> None:
    with pytest.raises(ValueError):
        decide(ArmStats(100, 80), ArmStats(100, 90), paired=True)
    with pytest.raises(ValueError):
        decide(ArmStats(100, 80), ArmStats(100, 90), discordant=(5, 15))


# --- the
# formula ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("s", "v", "tau"), [(0.0, 0.0, 0.3), (12.0, 40.0, 0.3), (-5.0, 30.0, 0.3), (60.0, 900.0, 0.05)]
)
def test_e_value_is_the_half_normal_mixture_of_likelihood_ratios(
    s: float, v: float, tau: float
) -> None:
    lam = np.linspace(0.0, 12 * tau, 200_001)
    integrand = (
        np.exp(lam * s - lam**2 * v / 2)
        * 2
        * np.exp(-(lam**2) / (2 * tau**2))
        / (tau * math.sqrt(2 * math.pi))
    )
    numeric = float(np.sum((integrand[1:] + integrand[:-1]) / 2 * np.diff(lam)))
    assert math.isclose(math.exp(float(log_e_positive(s, v, tau))), numeric, rel_tol=1e-6)


def test_log_ndtr_matches_scipy_including_the_far_tail() -> None:
    special = pytest.importorskip("scipy.special")
    x = np.array([-80.0, -35.5, -35.0, -34.5, -8.0, -1.0, 0.0, 2.0, 9.0])
    np.testing.assert_allclose(log_ndtr(x), special.log_ndtr(x), rtol=1e-9)


# ---
# state --------------------------------------------------------------------------------------------


def test_state_round_trips_through_json() -> None:
    arm = ArmStats()
    for correct, vulnerable, flagged in [
        (True, False, True),
        (False, True, True),
        (True, True, False),
    ]:
        arm.record(correct, vulnerable=vulnerable, flagged=flagged)
    assert arm == ArmStats(n=3, correct=2, vulnerable_positives=2, vulnerable_flagged=1)
    assert ArmStats.from_dict(json.loads(json.dumps(arm.to_dict()))) == arm
    discordance = Discordance(b=4, c=9)
    assert Discordance.from_dict(json.loads(json.dumps(discordance.to_dict()))) == discordance


@pytest.mark.parametrize(
    "state",
    [
        {"n": 3, "correct": 4, "vulnerable_positives": 0, "vulnerable_flagged": 0},
        {"n": 3, "correct": 1},
        {"n": "x"},
    ],
)
def test_inconsistent_or_incomplete_state_is_refused(state: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ArmStats.from_dict(state)


def test_the_evidence_compares_the_arms_on_their_automated_share() -> None:
    """Coverage and accuracy on the automated share, per arm, beside raw accuracy."""
    champion, challenger = ArmStats(), ArmStats()
    for i in range(100):
        champion.record(i % 10 < 8, automated=i % 2 == 0)  # covers 50%
        challenger.record(i % 10 < 8, automated=i % 4 != 0)  # covers 75%
    e = decide(champion, challenger).evidence
    assert (e["coverage_champion"], e["coverage_challenger"]) == (0.5, 0.75)
    assert e["accuracy_automated_champion"] == champion.automated_correct / 50
    assert ArmStats.from_dict(challenger.to_dict()) == challenger
    with pytest.raises(ValueError):
        ArmStats(n=3, correct=1, automated=2, automated_correct=2)
