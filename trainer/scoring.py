"""A small onnxruntime scorer for the trainer's own evaluations (compare, bench, parity, int8
check).

The consumer has its own inference path; this one only needs ``onnxruntime``, ``tokenizers`` and
numpy. Texts are sorted by length and batched so that dynamic padding wastes little; results come
back in input order as ``{task: logits [n, n_labels]}`` plus the wall time per text.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from consumer.errors import InferenceError
from consumer.package import ModelPackage, TaskHead
from trainer.tokens import TextEncoder, serving_tokenizer


def session(path: Path, threads: int = 0) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    # The arena keeps the peak of the biggest batch for the life of the session (DESIGN section 5).
    opts.enable_cpu_mem_arena = False
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=-1, keepdims=True))


@dataclass
class Scores:
    logits: dict[str, np.ndarray]
    seconds_per_text: float

    def probs(self, task: str) -> np.ndarray:
        return softmax(self.logits[task])


class OnnxScorer:
    """Scores texts with one ONNX graph; ``outputs`` maps task -> ONNX output name."""

    def __init__(
        self,
        onnx_path: Path,
        tokenizer_path: Path,
        max_length: int,
        truncation: str,
        outputs: dict[str, str],
        threads: int = 0,
    ) -> None:
        self.encoder = TextEncoder(
            serving_tokenizer(tokenizer_path, max_length), max_length, truncation
        )
        self.session = session(onnx_path, threads)
        self.outputs = dict(outputs)

    @classmethod
    def for_package(
        cls, package: ModelPackage, onnx_file: str | None = None, threads: int = 0
    ) -> OnnxScorer:
        """The package's served graph (``model.onnx``), or another of its graphs by file name."""
        return cls(
            package.path / (onnx_file or package.manifest["onnx"]["file"]),
            package.tokenizer_path,
            package.max_length,
            package.truncation,
            {t: h.output for t, h in package.heads.items()},
            threads,
        )

    def score(self, texts: Sequence[str], batch_size: int = 16) -> Scores:
        if not texts:
            raise InferenceError("nothing to score")
        rows = self.encoder.encode(texts)
        order = np.argsort([len(r) for r in rows], kind="stable")
        names = list(self.outputs.values())
        parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
        start = time.perf_counter()
        for lo in range(0, len(order), batch_size):
            idx = order[lo : lo + batch_size]
            ids, mask = self.encoder.pad([rows[i] for i in idx])
            try:
                out = self.session.run(names, {"input_ids": ids, "attention_mask": mask})
            except Exception as exc:  # onnxruntime raises its own unrelated exception classes
                raise InferenceError(f"onnxruntime failed on a batch of {len(idx)}: {exc}") from exc
            for n, arr in zip(names, out, strict=True):
                parts[n].append(np.asarray(arr, dtype=np.float32))
        elapsed = time.perf_counter() - start
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        logits = {t: np.concatenate(parts[n])[inverse] for t, n in self.outputs.items()}
        return Scores(logits=logits, seconds_per_text=elapsed / len(texts))


def decisions(heads: dict[str, TaskHead], scores: Scores) -> dict[str, np.ndarray]:
    """Predicted label index per task, applying each binary head's calibrated threshold."""
    out = {}
    for task, head in heads.items():
        probs = scores.probs(task)
        if head.kind == "binary":
            pos = head.labels.index(str(head.positive_label))
            out[task] = np.where(probs[:, pos] >= head.threshold, pos, 1 - pos)
        else:
            out[task] = probs.argmax(axis=1)
    return out
