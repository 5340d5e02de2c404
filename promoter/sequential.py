"""Always-valid evidence for promoting or rolling back a challenger model.

``decide`` may be called after every label: each of its tests is an e-process (a nonnegative
supermartingale under its null), so by Ville's inequality the chance that it *ever* reaches 1/alpha
is at most alpha, however often it is looked at. Both designs use one formula, the one-sided
normal-mixture martingale of Robbins as written by Howard, Ramdas, McAuliffe & Sekhon,
"Time-uniform, nonparametric, nonasymptotic confidence sequences" (Ann. Statist. 2021): if
exp(lam*S - lam**2*V/2) is a supermartingale for every lam > 0 under the null, mixing lam over a
half-normal with scale tau (rho = 1/tau**2) gives the e-value

    e(S, V) = 2 * sqrt(rho/(V+rho)) * exp(S**2/(2(V+rho))) * Phi(S/sqrt(V+rho)).

* shadow (paired, exact): both models scored every complaint, so only discordant pairs carry
  information (a sequential McNemar test). b = champion right and challenger wrong, c = the reverse;
  scoring each discordant pair +1/-1 gives S = c - b and V = b + c. Under "challenger no more
  accurate" each score has mean <= 0 and is 1-sub-Gaussian, so the test is exact at every sample
  size, with no variance to estimate.
* canary (unpaired, asymptotic): each complaint was served by one arm. With D = acc_challenger -
  acc_champion estimated and information I = 1/Var(D) = 1/(v*(1/n_champion + 1/n_challenger)), S =
  D*I less its drift is close to Brownian motion in I. This is the mSPRT of Johari, Koomen, Pekelis
  & Walsh, "Always valid inference: continuous monitoring of A/B tests" (Oper. Res. 2022) with a
  plug-in variance v, an asymptotic confidence sequence in the sense of Waudby-Smith, Arnold, Wu,
  Howard & Ramdas, "Time-uniform central limit theory and asymptotic confidence sequences" (Ann.
  Statist. 2024). v is pooled over both arms, as under the null (see ``unpaired_score``);
  ``simulate`` measures the error rates at our sample sizes.

Decision rule, first match wins, and only once each arm has ``min_labels`` labels:
1. rollback if the accuracy test shows the challenger worse, or the recall test shows its
   vulnerable-customer recall below the champion's by more than ``recall_margin`` (the unpaired test
   on vulnerable positives, in both designs: ignoring the pairing overstates the variance, which
   only makes the rollback more cautious);
2. promote if the accuracy test shows the challenger better AND the guardrail holds: each arm has
   seen ``min_vulnerable`` vulnerable customers and the challenger's observed recall is not below
   the champion's minus ``recall_margin``. A point-estimate guardrail is deliberately conservative:
   proving that recall did not fall would take far more vulnerable customers than arrive, so we
   never promote on a recall that looks worse, and roll back once it is shown worse;
3. wait otherwise.
A false promotion needs the promotion test to err: probability <= alpha. A false rollback needs one
of two tests to err: <= 2*alpha (rollback is the safe direction, so alpha is not split between
them).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, NamedTuple

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]
Action = Literal["promote", "rollback", "wait"]

# Mixing scales tau: the effect size each test is tuned to (Johari et al.'s tau; Howard et al.'s rho
# = tau**-2).
ACCURACY_TAU = 0.05  # canary: difference in accuracy
# shadow: mean +1/-1 score of a discordant pair = accuracy difference / discordance rate
DISCORDANT_TAU = 0.3
RECALL_TAU = 0.15  # vulnerable-customer recall difference

_erfc = np.frompyfunc(math.erfc, 1, 1)  # numpy has no erfc and scipy is not a runtime dependency
_TAIL = -35.0  # Phi(-35) ~ 1e-268 is still a normal double; the expansion errs by < 1e-8 beyond


def log_ndtr(x: npt.ArrayLike) -> Array:
    """log Phi(x): from math.erfc of |x| (log1p on the right, so Phi near 1 keeps its tiny deficit),
    and the Mills-ratio expansion below _TAIL where Phi would underflow."""
    x = np.asarray(x, dtype=float)
    q = np.asarray(_erfc(np.abs(np.maximum(x, _TAIL)) / math.sqrt(2)), dtype=float) / 2  # Phi(-|x|)
    direct = np.where(x > 0, np.log1p(-q), np.log(q))
    far = np.minimum(x, _TAIL)
    tail = (
        -(far**2) / 2
        - np.log(-far)
        - 0.5 * math.log(2 * math.pi)
        + np.log1p(-(far**-2) + 3 * far**-4)
    )
    return np.where(x > _TAIL, direct, tail)


def log_e_positive(s: npt.ArrayLike, v: npt.ArrayLike, tau: float) -> Array:
    """log e(S, V) for "drift > 0" (module docstring). e = 1 at S = V = 0 and e < 1 whenever S
    <= 0."""
    rho = tau**-2
    w = np.asarray(v, dtype=float) + rho
    s = np.asarray(s, dtype=float)
    return math.log(2) + 0.5 * np.log(rho / w) + s * s / (2 * w) + log_ndtr(s / np.sqrt(w))


def unpaired_score(
    n_a: npt.ArrayLike,
    k_a: npt.ArrayLike,
    n_b: npt.ArrayLike,
    k_b: npt.ArrayLike,
    shift: float = 0.0,
) -> tuple[Array, Array]:
    """(S, I) for the rate difference k_b/n_b - k_a/n_a + shift of two independent binomials; (0, 0)
    while either arm is empty. The variance is pooled over both arms, as under the null (a score
    test): per-arm variances let a small arm that is lucky (high rate, so low variance) inflate S,
    which simulation showed breaks the error rate with a 20% canary. (k+1)/(n+2) keeps the variance
    above 0."""
    n_a, k_a, n_b, k_b = (np.asarray(x, dtype=float) for x in (n_a, k_a, n_b, k_b))
    safe_a, safe_b = np.maximum(n_a, 1.0), np.maximum(n_b, 1.0)
    pooled = (k_a + k_b + 1) / (n_a + n_b + 2)
    info = np.where(
        (n_a > 0) & (n_b > 0), 1 / (pooled * (1 - pooled) * (1 / safe_a + 1 / safe_b)), 0.0
    )
    return (k_b / safe_b - k_a / safe_a + shift) * info, info


class ArmArrays(NamedTuple):
    """Counts of one arm as arrays (any broadcastable shape): what ``evaluate`` consumes."""

    n: npt.ArrayLike
    correct: npt.ArrayLike
    vulnerable_positives: npt.ArrayLike
    vulnerable_flagged: npt.ArrayLike


class Evaluation(NamedTuple):
    action: npt.NDArray[np.int8]  # +1 promote, -1 rollback, 0 wait
    log_e_better: Array
    log_e_worse: Array
    log_e_recall_worse: Array
    enough: npt.NDArray[np.bool_]
    guardrail_ok: npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Policy:
    alpha: float = 0.05
    min_labels: int = 50
    recall_margin: float = 0.0
    min_vulnerable: int = 30

    def __post_init__(self) -> None:
        if (
            not 0 < self.alpha < 1
            or self.min_labels < 1
            or self.min_vulnerable < 1
            or self.recall_margin < 0
        ):
            raise ValueError(f"invalid promotion policy: {self}")


def evaluate(
    champion: ArmArrays,
    challenger: ArmArrays,
    discordant: tuple[npt.ArrayLike, npt.ArrayLike] | None,
    policy: Policy,
) -> Evaluation:
    """The vectorised core of ``decide``: elementwise over broadcastable count arrays, so
    ``simulate`` runs the very same rule on whole sample paths. ``discordant`` = (b, c) selects the
    paired test."""
    if discordant is None:
        s, v = unpaired_score(champion.n, champion.correct, challenger.n, challenger.correct)
        tau = ACCURACY_TAU
    else:
        b, c = (np.asarray(x, dtype=float) for x in discordant)
        s, v, tau = c - b, b + c, DISCORDANT_TAU
    better, worse = log_e_positive(s, v, tau), log_e_positive(-s, v, tau)
    # Vulnerable recall: positives and flagged counts, shifted so the null is "challenger >=
    # champion - margin".
    s_r, v_r = unpaired_score(*champion[2:], *challenger[2:], shift=policy.recall_margin)
    recall_worse = log_e_positive(-s_r, v_r, RECALL_TAU)
    threshold = math.log(1 / policy.alpha)
    enough = (np.asarray(champion.n) >= policy.min_labels) & (
        np.asarray(challenger.n) >= policy.min_labels
    )
    pos_a, pos_b = (
        np.asarray(champion.vulnerable_positives),
        np.asarray(challenger.vulnerable_positives),
    )
    # Recall comparison cross-multiplied: no division by a zero count.
    guard = (
        (pos_a >= policy.min_vulnerable)
        & (pos_b >= policy.min_vulnerable)
        & (
            np.asarray(challenger.vulnerable_flagged) * pos_a
            >= (np.asarray(champion.vulnerable_flagged) - policy.recall_margin * pos_a) * pos_b
        )
    )
    rollback = (worse >= threshold) | (recall_worse >= threshold)
    promote = (better >= threshold) & guard
    action = np.where(enough & rollback, -1, np.where(enough & promote, 1, 0)).astype(np.int8)
    return Evaluation(action, better, worse, recall_worse, enough, guard)


@dataclass
class ArmStats:
    """Labelled outcomes of one model in one experiment. ``record`` is O(1) per label; ``to_dict``
    and ``from_dict`` round-trip through JSON (the promoter keeps this in Redis across restarts)."""

    n: int = 0
    correct: int = 0
    vulnerable_positives: int = 0  # customers people judged vulnerable, among the n
    vulnerable_flagged: int = 0  # of those, how many this model flagged
    automated: int = 0  # of the n, the decisions this model took alone (routing auto)
    automated_correct: int = 0  # of those, the right ones

    def __post_init__(self) -> None:
        if not (
            0 <= self.correct <= self.n
            and 0 <= self.vulnerable_flagged <= self.vulnerable_positives <= self.n
            and 0 <= self.automated_correct <= self.automated <= self.n
            and self.automated_correct <= self.correct
        ):
            raise ValueError(f"inconsistent arm counts: {self}")

    def record(
        self,
        correct: bool,
        *,
        vulnerable: bool = False,
        flagged: bool = False,
        automated: bool = False,
    ) -> None:
        """Count one label: ``correct`` if this model's decision matched people's; ``flagged`` (this
        model said vulnerable) only matters when people judged the customer ``vulnerable``;
        ``automated`` when the model decided alone (its coverage, and accuracy on that share)."""
        self.n += 1
        self.correct += bool(correct)
        self.vulnerable_positives += bool(vulnerable)
        self.vulnerable_flagged += bool(vulnerable and flagged)
        self.automated += bool(automated)
        self.automated_correct += bool(automated and correct)

    @property
    def coverage(self) -> float | None:
        return self.automated / self.n if self.n else None

    @property
    def automated_accuracy(self) -> float | None:
        return self.automated_correct / self.automated if self.automated else None

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.n if self.n else None

    @property
    def recall(self) -> float | None:
        return (
            self.vulnerable_flagged / self.vulnerable_positives
            if self.vulnerable_positives
            else None
        )

    def arrays(self) -> ArmArrays:
        return ArmArrays(self.n, self.correct, self.vulnerable_positives, self.vulnerable_flagged)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ArmStats:
        """Inverse of ``to_dict``; raises ValueError on missing or inconsistent counts."""
        return cls(**_counts(cls, data))


@dataclass
class Discordance:
    """Discordant pairs of a shadow experiment: b = champion right and challenger wrong, c = the
    reverse."""

    b: int = 0
    c: int = 0

    def __post_init__(self) -> None:
        if self.b < 0 or self.c < 0:
            raise ValueError(f"negative discordant counts: {self}")

    def record(self, champion_correct: bool, challenger_correct: bool) -> None:
        self.b += bool(champion_correct and not challenger_correct)
        self.c += bool(challenger_correct and not champion_correct)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Discordance:
        return cls(**_counts(cls, data))


def _counts(cls: type, data: Mapping[str, Any]) -> dict[str, int]:
    try:
        return {f.name: int(data[f.name]) for f in fields(cls)}
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"bad {cls.__name__} state {dict(data)!r}: {exc!r}") from exc


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    evidence: dict[
        str, Any
    ]  # JSON-ready numbers: counts, accuracies, e-values, always-valid p-values, recalls


def decide(
    champion: ArmStats,
    challenger: ArmStats,
    *,
    paired: bool = False,
    discordant: Discordance | tuple[int, int] | None = None,
    alpha: float = 0.05,
    min_labels: int = 50,
    recall_margin: float = 0.0,
    min_vulnerable: int = 30,
) -> Decision:
    """Promote, roll back or wait, by the rule in the module docstring. Call it after every label
    and act on the first non-wait answer. ``paired`` (shadow) requires ``discordant``; the arms then
    count the same complaints. The p-values reported are 1/e at this moment (always valid, if
    conservative)."""
    if paired != (discordant is not None):
        raise ValueError("discordant counts (b, c) go with paired=True (shadow), and only with it")
    policy = Policy(alpha, min_labels, recall_margin, min_vulnerable)
    if isinstance(discordant, Discordance):
        discordant = (discordant.b, discordant.c)
    ev = evaluate(champion.arrays(), challenger.arrays(), discordant, policy)
    logs = {
        "better": float(ev.log_e_better),
        "worse": float(ev.log_e_worse),
        "recall_worse": float(ev.log_e_recall_worse),
    }
    p = {k: math.exp(-max(x, 0.0)) for k, x in logs.items()}  # always-valid p = min(1, 1/e)
    evidence: dict[str, Any] = {"design": "paired" if paired else "unpaired", "alpha": alpha}
    for name, arm in (("champion", champion), ("challenger", challenger)):
        evidence |= {
            f"n_{name}": arm.n,
            f"accuracy_{name}": arm.accuracy,
            f"recall_{name}": arm.recall,
            # the selective comparison: how much each model decides alone, and how well
            f"coverage_{name}": arm.coverage,
            f"accuracy_automated_{name}": arm.automated_accuracy,
        }
        evidence[f"vulnerable_positives_{name}"] = arm.vulnerable_positives
    if discordant is not None:
        evidence["discordant_b"], evidence["discordant_c"] = int(discordant[0]), int(discordant[1])
    evidence |= {f"e_{k}": math.exp(min(x, 700.0)) for k, x in logs.items()} | {
        f"p_{k}": x for k, x in p.items()
    }
    evidence |= {"recall_margin": recall_margin, "guardrail_ok": bool(ev.guardrail_ok)}
    return Decision(*_explain(ev, p, policy), evidence)


def _explain(ev: Evaluation, p: dict[str, float], policy: Policy) -> tuple[Action, str]:
    """The action is ev.action, so decide() and evaluate() cannot disagree; this only words the
    reason."""
    a, threshold = policy.alpha, math.log(1 / policy.alpha)
    if ev.action < 0 and ev.log_e_worse >= threshold:
        return "rollback", f"challenger less accurate (always-valid p={p['worse']:.4g} <= {a})"
    if ev.action < 0:
        return (
            "rollback",
            f"challenger vulnerable recall lower (always-valid p={p['recall_worse']:.4g} <= {a})",
        )
    if ev.action > 0:
        return (
            "promote",
            f"challenger more accurate (always-valid p={p['better']:.4g} <= {a}); guardrail holds",
        )
    if not ev.enough:
        return "wait", f"fewer than {policy.min_labels} labels in an arm"
    if ev.log_e_better >= threshold:
        return (
            "wait",
            "challenger more accurate, but the vulnerable-recall guardrail does not hold yet",
        )
    return (
        "wait",
        f"no conclusive evidence yet (p_better={p['better']:.3g}, p_worse={p['worse']:.3g})",
    )
