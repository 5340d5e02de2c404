"""Scoring texts with a model package for the trainer's evaluations (a run's calibration and
metrics, the int8 agreement check, ``compare``, the benches), through the consumer's own inference:
``consumer.inference.TextEncoder`` and ``OnnxModel``.

Why the consumer's code and not a scorer of the trainer's own: a threshold calibrated here means in
serving what it meant here only if these are the probabilities the consumer computes, tokenisation,
long-text policy, padding and batching included. ``Scorer`` keeps ``OnnxModel``'s default sub-batch
(1, the consumer's ``max_sub_batch`` default: each text alone), which also matters for the int8
graph, whose activations are quantised with ranges taken from each onnxruntime call's whole input.

Only ``onnxruntime``, ``tokenizers`` and numpy are needed (no torch), so ``compare`` runs anywhere
the consumer does.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from consumer.errors import InferenceError
from consumer.inference import OnnxModel, TextEncoder
from consumer.package import ModelPackage, TaskHead


@dataclass(frozen=True)
class Scores:
    """Probabilities ``[n, n_labels]`` per task, in input order, and the onnxruntime time per text
    (tokenisation excluded)."""

    probs: dict[str, np.ndarray]
    seconds_per_text: float


class Scorer:
    """One package as the consumer serves it: its ``TextEncoder`` and an ``OnnxModel`` session.
    ``threads`` 0: the container's CPU limit, as in the consumer."""

    def __init__(self, package: ModelPackage, threads: int = 0) -> None:
        self.package = package
        self.encoder = TextEncoder(package)
        self.model = OnnxModel(package, threads)

    def score(self, texts: Sequence[str]) -> Scores:
        """``InferenceError`` for no texts, or when onnxruntime fails."""
        if not texts:
            raise InferenceError("nothing to score")
        encoded = self.encoder.encode(texts)
        start = time.perf_counter()
        probs = self.model.run(encoded)
        return Scores(probs, (time.perf_counter() - start) / len(texts))


def decisions(heads: dict[str, TaskHead], scores: Scores) -> dict[str, np.ndarray]:
    """Predicted label index per task, applying each binary head's calibrated threshold."""
    out = {}
    for task, head in heads.items():
        probs = scores.probs[task]
        if head.kind == "binary":
            pos = head.labels.index(str(head.positive_label))
            out[task] = np.where(probs[:, pos] >= head.threshold, pos, 1 - pos)
        else:
            out[task] = probs.argmax(axis=1)
    return out
