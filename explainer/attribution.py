"""Token-level SHAP values for one text, one task and one label, on one loaded ONNX model.

Method: shap's Partition explainer (Owen values over the masker's token hierarchy) with a Text
masker built on the package's own tokeniser (``explainer.tokens``), in ``token_ids`` mode, so every
evaluation is the ONNX graph on the exact ids the consumer scored with some of them hidden. How a
token is hidden (``Masking``):
- ``remove`` (default): left out of the input, so the model reads the text without it; the base
  value is the model on ``[CLS] [SEP]``. Masked inputs are shorter, and onnxruntime's cost is linear
  in length on this CPU (MiniLM int8: ~0.13 ms per token per evaluation), so an explanation costs
  about half of ``mask_token``'s.
- ``mask_token``: replaced by the tokeniser's ``[MASK]`` id (shap's default for BERT tokenisers);
  fixed length.
(Under ``remove`` the masker still marks hidden tokens with the mask id, and the model function
drops them; a text token that *is* the mask id, possible only when a tokeniser lacks ``[MASK]`` and
``[UNK]`` stands in, can then never be hidden: it keeps value 0, and additivity still holds.)
The explained quantity is the softmax *probability* of the label (what ``predictions[task].score``
records), so values add up in probability space: ``base_value + sum(values) == output`` (the model
on the unmasked ids), which ``Attribution.additivity_error`` measures. ``[CLS]`` and ``[SEP]`` are
not features: they are always present, and their value is 0.

Budget: at most ``max_evals`` model evaluations, and ``BudgetExceededError`` when the wall-clock
budget runs out (checked before every batch of evaluations; a batch in flight is not interrupted).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from consumer.errors import ConfigError
from consumer.inference import Encoded, OnnxModel
from explainer.errors import BadRequestError, BudgetExceededError, ExplainerError
from explainer.tokens import PackageTokens, ShapTokenizer, TokenView

ALGORITHM = "shap.PartitionExplainer (Owen values), fixed_context=None"
OUTPUT_SPACE = "probability"
Masking = Literal["remove", "mask_token"]


@dataclass(frozen=True)
class Attribution:
    """SHAP values of the kept tokens of ``view`` (special tokens included, always 0)."""

    view: TokenView
    task: str
    label: str
    values: tuple[float, ...]
    base_value: float
    output: float  # the model's probability of ``label`` on the unmasked input, computed directly
    evals: int
    max_evals: int
    seconds: float
    masker: str
    masking: str = "remove"

    @property
    def additivity_error(self) -> float:
        return abs(self.base_value + sum(self.values) - self.output)


def require_shap() -> Any:
    """shap, imported on first use (slow, and only in the image with the ``explain`` extra)."""
    try:
        import shap
    except ImportError as exc:
        raise ConfigError(
            "shap is not installed: install the `explain` extra (pip install '.[explain]')"
        ) from exc
    return shap


_warm = threading.Lock()
_warmed = False


def warm_up() -> None:
    """Import shap and compile its numba kernels once (the first explanation otherwise pays ~5-10
    s)."""
    global _warmed
    with _warm:
        if _warmed:
            return
        shap = require_shap()
        masker = (
            shap.maskers.Text()
        )  # a regexp tokeniser: no model package needed to compile the kernels
        explainer = shap.explainers.Partition(
            lambda x: np.array([len(s) for s in x], dtype=float), masker
        )
        explainer(["warm up the partition explainer kernels"], max_evals=50, silent=True)
        _warmed = True


class TokenShap:
    """Explains texts with one loaded model. Thread-safe: every call builds its own masker and
    explainer."""

    def __init__(
        self,
        model: OnnxModel,
        tokens: PackageTokens,
        masking: Masking = "remove",
        batch_size: int = 16,
    ) -> None:
        self.model = model
        self.tokens = tokens
        self.masking = masking
        self.batch_size = batch_size
        how = (
            "masked tokens removed"
            if masking == "remove"
            else f"masked tokens replaced by {tokens.mask_token}"
        )
        self.masker_name = f"shap.maskers.Text(output_type=token_ids), {how}"

    def explain(
        self, text: str, task: str, label: str, max_evals: int, budget_s: float
    ) -> Attribution:
        """SHAP values of ``text`` for P(``label``) of ``task``. Raises ``BadRequestError`` for an
        unknown task or label, ``BudgetExceededError`` past ``budget_s`` and ``InferenceError`` when
        the model fails."""
        shap = require_shap()
        column = self._column(task, label)
        view = self.tokens.view(text)
        body = view.body
        if not body:
            raise BadRequestError("the text has no tokens to explain")
        started = time.monotonic()
        deadline = started + budget_s
        evals = 0
        score = self._scorer(view, task, column)

        def f(x: np.ndarray) -> np.ndarray:
            nonlocal evals
            if time.monotonic() > deadline:
                raise BudgetExceededError(
                    f"explanation exceeded its {budget_s:g} s budget after {evals} of {max_evals} "
                    "evaluations"
                )
            evals += len(x)
            return score(x)

        masker = shap.maskers.Text(
            ShapTokenizer(self.tokens), mask_token=self.tokens.mask_id, output_type="token_ids"
        )
        explainer = shap.explainers.Partition(f, masker)
        result: Any = explainer(
            [text], max_evals=max_evals, batch_size=self.batch_size, silent=True
        )
        found = np.asarray(result.values[0], dtype=np.float64).reshape(-1)
        if len(found) != len(body):
            raise ExplainerError(f"the masker saw {len(found)} tokens, the model {len(body)}")
        values = np.zeros(len(view.ids))
        values[body] = found
        output = float(score(np.asarray([[view.ids[i] for i in body]]))[0])
        return Attribution(
            view=view,
            task=task,
            label=label,
            values=tuple(float(v) for v in values),
            base_value=float(np.asarray(result.base_values).reshape(-1)[0]),
            output=output,
            evals=evals,
            max_evals=max_evals,
            seconds=time.monotonic() - started,
            masker=self.masker_name,
            masking=self.masking,
        )

    def _column(self, task: str, label: str) -> int:
        """The output column of ``label`` in ``task``'s head; ``BadRequestError`` if either is
        unknown."""
        head = self.model.heads.get(task)
        if head is None:
            raise BadRequestError(
                f"model {self.model.package.ref} has no task {task!r}: {sorted(self.model.heads)}"
            )
        if label not in head.labels:
            raise BadRequestError(
                f"task {task!r} has no label {label!r} (labels: {list(head.labels)})"
            )
        return head.labels.index(label)

    def _scorer(
        self, view: TokenView, task: str, column: int
    ) -> Callable[[np.ndarray], np.ndarray]:
        """P(label) for rows of body token ids, masked tokens removed or replaced per
        ``masking``."""
        body = view.body
        mask_id = self.tokens.mask_id
        original = np.asarray([view.ids[i] for i in body], dtype=np.int64)

        def score(x: np.ndarray) -> np.ndarray:
            full = view.with_body(np.asarray(x, dtype=np.int64))
            if self.masking == "remove":
                keep = np.ones_like(full, dtype=bool)
                keep[:, body] = (x != mask_id) | (original == mask_id)
                rows = [Encoded(r[k], view.truncated) for r, k in zip(full, keep, strict=True)]
            else:
                rows = [Encoded(r, view.truncated) for r in full]
            out: np.ndarray = self.model.run(rows)[task][:, column].astype(np.float64)
            return out

        return score
