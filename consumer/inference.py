"""onnxruntime inference of a model package: tokenisation, length-bucketed sub-batches, per-task
probabilities.

Measured on this CPU class (DESIGN section 5): onnxruntime does not get faster per text with bigger
batches and padding costs 2-4x, so texts are grouped only with texts of (nearly) the same length,
and the default sub-batch is small. The CPU memory arena is disabled so that one long batch does not
pin ~1 GiB for good.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from consumer.errors import InferenceError, PackageError
from consumer.package import ModelPackage


def cpu_limit() -> int:
    """CPUs this container may use: the cgroup v2 quota when set, else the affinity mask."""
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()
        if quota != "max":
            return max(1, int(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return max(1, len(os.sched_getaffinity(0)))


def load_tokenizer(package: ModelPackage) -> Tokenizer:
    """The package's tokenizer with its padding and truncation off: the long-text policy works on
    ids, and batches are padded per length bucket. A file that does not load is a
    ``PackageError``."""
    try:
        tok = Tokenizer.from_file(str(package.tokenizer_path))
    except Exception as exc:  # tokenizers raises bare Exception subclasses
        raise PackageError(f"{package.ref}: tokenizer does not load: {exc}") from exc
    tok.no_padding()
    tok.no_truncation()
    return tok


@dataclass(frozen=True)
class Encoded:
    """Token ids of one text after the package's long-text policy."""

    ids: np.ndarray  # int64, 1-D
    truncated: bool


class TextEncoder:
    """Tokeniser plus long-text policy of a package. Packages with equal ``key`` share encodings."""

    def __init__(self, package: ModelPackage) -> None:
        self.max_length = package.max_length
        self.policy = package.truncation
        self.key = self.key_of(package)
        self._tok = load_tokenizer(package)

    @staticmethod
    def key_of(package: ModelPackage) -> tuple[str, int, str]:
        return (package.tokenizer_digest, package.max_length, package.truncation)

    def encode(self, texts: Sequence[str]) -> list[Encoded]:
        out = []
        for enc in self._tok.encode_batch(list(texts)):
            ids = enc.ids
            n = len(ids)
            if n > self.max_length:
                out.append(Encoded(self._truncate(ids), True))
            else:
                out.append(Encoded(np.asarray(ids, dtype=np.int64), False))
        return out

    def _truncate(self, ids: list[int]) -> np.ndarray:
        # ids are [CLS] body [SEP]; keep both special tokens
        room = self.max_length - 2
        if self.policy == "head_tail":
            # the head states the product, the tail often states what the customer asks for
            head = room // 4
            body = ids[1 : 1 + head] + ids[len(ids) - 1 - (room - head) : -1]
        else:
            body = ids[1 : 1 + room]
        return np.asarray([ids[0], *body, ids[-1]], dtype=np.int64)


def length_buckets(
    lengths: Sequence[int], max_batch: int, max_waste: float = 0.1
) -> list[list[int]]:
    """Group indices so that each group has at most ``max_batch`` members and pads at most
    ``max_waste`` of its real tokens (members are sorted by length, so the newest member sets the
    padded width)."""
    groups: list[list[int]] = []
    real = 0
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        g = groups[-1] if groups else None
        if (
            g is not None
            and len(g) < max_batch
            and (len(g) + 1) * lengths[i] <= (1 + max_waste) * (real + lengths[i])
        ):
            g.append(i)
            real += lengths[i]
        else:
            groups.append([i])
            real = lengths[i]
    return groups


class OnnxModel:
    """One model package loaded into an onnxruntime session. ``predict`` returns probabilities per
    task."""

    def __init__(self, package: ModelPackage, threads: int = 0, max_sub_batch: int = 1) -> None:
        self.package = package
        self.heads = package.heads
        self.max_sub_batch = max_sub_batch
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or cpu_limit()
        opts.inter_op_num_threads = 1
        opts.enable_cpu_mem_arena = False
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(
                str(package.onnx_path), opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own non-exported exception types
            raise PackageError(f"{package.ref}: onnxruntime refuses the graph: {exc}") from exc
        names = {o.name for o in self.session.get_outputs()}
        missing = [h.output for h in self.heads.values() if h.output not in names]
        if missing:
            raise PackageError(f"{package.ref}: graph lacks outputs {missing}")
        self._outputs = [h.output for h in self.heads.values()]
        self._inputs = {i.name for i in self.session.get_inputs()}

    def run(self, encoded: Sequence[Encoded]) -> dict[str, np.ndarray]:
        """Probabilities ``[len(encoded), n_labels]`` per task. Raises ``InferenceError`` when the
        session fails."""
        n = len(encoded)
        probs = {t: np.empty((n, len(h.labels)), dtype=np.float32) for t, h in self.heads.items()}
        for group in length_buckets([len(e.ids) for e in encoded], self.max_sub_batch):
            width = max(len(encoded[i].ids) for i in group)
            ids = np.zeros((len(group), width), dtype=np.int64)
            mask = np.zeros((len(group), width), dtype=np.int64)
            for row, i in enumerate(group):
                k = len(encoded[i].ids)
                ids[row, :k] = encoded[i].ids
                mask[row, :k] = 1
            feed = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self._inputs:
                feed["token_type_ids"] = np.zeros_like(ids)
            try:
                logits = self.session.run(self._outputs, feed)
            except Exception as exc:  # onnxruntime's Fail/InvalidArgument are not importable types
                raise InferenceError(f"{self.package.ref}: {type(exc).__name__}: {exc}") from exc
            for task, out in zip(self.heads, logits, strict=True):
                probs[task][group] = _softmax(out)
        return probs


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out
