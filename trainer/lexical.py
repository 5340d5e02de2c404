"""A lexical model compiled into the served graph next to the encoder: wide (words) and deep
(transformer).

Why: the fine-tuned encoder reads the first ``max_length`` wordpieces (128 by default; 64% of
narratives are longer), while a bag of words reads the whole text and errs differently. On
validation, the two are right on different rows often enough that their mix beats either
(docs/trainer.md, "Wide and deep").

What the graph computes, per text (ids as the package's tokenizer gives them, ``read_length`` at
most):

- **features**: counts of every wordpiece that is not a special token, and of every pair of adjacent
  ones hashed into ``buckets`` slots (``vocab + (a * PRIME + b) % buckets``); sublinear tf ``1 +
  ln(count)``, times an idf fitted on the training rows (smooth idf; 0 for a feature seen in fewer
  than 2 training rows), scaled to unit L2 norm: TF-IDF, on the serving tokenizer's own units, so it
  needs no second tokenizer;
- **wide logits**: one multinomial logistic regression per task (scikit-learn, fitted on the
  training rows labelled for that task), as one matrix over all tasks;
- **deep logits**: the fine-tuned ``MultiTaskModel`` on the first ``encoder_length`` ids (re-cut in
  the graph exactly as the consumer's ``TextEncoder`` cuts at that length with the ``head`` policy,
  so the encoder sees the ids it was trained on);
- **output** per task: ``(1 - weight) * log_softmax(deep) + weight * log_softmax(wide)``, a weighted
  geometric mean of the two distributions; the consumer's softmax normalises it.

The graph keeps the contract's interface (``input_ids``, ``attention_mask`` in; ``<task>_logits``
out), so the consumer, explainer and registry serve it with no change: only the package's tokenizer
reads further.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from consumer.errors import ConfigError
from trainer.errors import DataError
from trainer.labels import IGNORE
from trainer.model import MultiTaskModel, output_name
from trainer.run_config import TrainConfig
from trainer.training_tokens import TrainingTokens

log = logging.getLogger(__name__)

PRIME = 1_000_003  # pairs hash as a * PRIME + b: below 2**63 for any vocabulary under 9e12
MISSING_LOGIT = -30.0  # a label with no training row: the wide model never picks it


def count(
    rows: Sequence[Sequence[int]], vocab_size: int, buckets: int, special_ids: Iterable[int]
) -> sp.csr_matrix:
    """Raw counts ``[len(rows), vocab_size + buckets]``: kept unigrams and hashed adjacent pairs of
    kept ids."""
    indptr, cols = [0], []
    special = np.asarray(sorted(special_ids), dtype=np.int64)
    for row in rows:
        a = np.asarray(row, dtype=np.int64)
        keep = ~np.isin(a, special)
        pair = keep[:-1] & keep[1:]
        cols.append(a[keep])
        cols.append(vocab_size + (a[:-1][pair] * PRIME + a[1:][pair]) % buckets)
        indptr.append(indptr[-1] + int(keep.sum()) + int(pair.sum()))
    col = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    shape = (len(rows), vocab_size + buckets)
    m = sp.csr_matrix((np.ones(len(col), dtype=np.float64), col, np.asarray(indptr)), shape=shape)
    m.sum_duplicates()
    return m


@dataclass(frozen=True)
class Features:
    """The feature space: which ids count, how pairs hash, and the idf fitted on training rows."""

    vocab_size: int
    buckets: int
    special_ids: frozenset[int]
    idf: np.ndarray  # float32 [vocab_size + buckets]

    @property
    def size(self) -> int:
        return self.vocab_size + self.buckets

    def counts(self, rows: Sequence[Sequence[int]]) -> sp.csr_matrix:
        """``count`` in this feature space."""
        return count(rows, self.vocab_size, self.buckets, self.special_ids)

    def transform(self, counts: sp.csr_matrix) -> sp.csr_matrix:
        """Sublinear tf, idf, unit L2 norm: the same arithmetic as ``LexicalHead.features``."""
        x = counts.astype(np.float64, copy=True)
        x.data = 1.0 + np.log(x.data)
        x = sp.csr_matrix(x.multiply(self.idf.astype(np.float64)))
        norm = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
        return sp.csr_matrix(sp.diags(1.0 / np.maximum(norm, 1e-12)) @ x)

    @classmethod
    def fit(
        cls, counts: sp.csr_matrix, vocab_size: int, buckets: int, special_ids: set[int]
    ) -> Features:
        """idf from the training rows' ``counts``: ``ln((1 + n) / (1 + df)) + 1``, and 0 for a
        feature in fewer than 2 rows."""
        df = np.asarray((counts > 0).sum(axis=0)).ravel()
        idf = np.log((1.0 + counts.shape[0]) / (1.0 + df)) + 1.0
        idf[df < 2] = 0.0
        return cls(vocab_size, buckets, frozenset(special_ids), idf.astype(np.float32))


def fit_wide(
    features: Features,
    counts: sp.csr_matrix,
    labels: dict[str, np.ndarray],
    n_labels: dict[str, int],
    c: float,
    max_iter: int = 3000,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """One logistic regression per task on the rows labelled for it (``counts``: the training rows',
    as ``count`` gives them): ``{task: (W [size, k], b [k])}``.

    Labels with no training row get weight 0 and bias ``MISSING_LOGIT``. Unweighted classes: on
    validation the square-root class weights of the deep head made the mix slightly worse
    (docs/trainer.md).
    """
    from sklearn.linear_model import LogisticRegression

    x = features.transform(counts)
    out = {}
    for task, y in labels.items():
        k = n_labels[task]
        known = y != IGNORE
        w = np.zeros((features.size, k), dtype=np.float32)
        b = np.full(k, MISSING_LOGIT, dtype=np.float32)
        present = np.unique(y[known])
        if len(present) == 1:  # one class only: it always wins
            b[present[0]] = 0.0
        elif len(present) > 1:
            lr = LogisticRegression(C=c, max_iter=max_iter).fit(x[known], y[known])
            coef, intercept = lr.coef_, lr.intercept_
            if len(present) == 2:  # scikit-learn keeps one row for two classes: logit of the second
                coef = np.vstack([np.zeros_like(coef), coef])
                intercept = np.concatenate([[0.0], intercept])
            w[:, lr.classes_] = coef.T.astype(np.float32)
            b[lr.classes_] = intercept.astype(np.float32)
        out[task] = (w, b)
    return out


class LexicalHead(nn.Module):
    """TF-IDF features of the ids and the wide logits, in torch, so that they export to ONNX."""

    keep: torch.Tensor  # [vocab]: 1 for ids that count, 0 for special tokens
    idf: torch.Tensor  # [vocab + buckets]

    def __init__(self, features: Features, wide: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        super().__init__()
        self.vocab_size = features.vocab_size
        self.buckets = features.buckets
        keep = np.ones(features.vocab_size, dtype=np.float32)
        keep[sorted(features.special_ids)] = 0.0
        self.register_buffer("keep", torch.from_numpy(keep))
        self.register_buffer("idf", torch.from_numpy(features.idf.astype(np.float32)))
        self.tasks = {t: w.shape[1] for t, (w, _) in wide.items()}
        # One matrix over all tasks: one MatMul in the graph
        self.weight = nn.Parameter(
            torch.from_numpy(np.concatenate([w for w, _ in wide.values()], axis=1))
        )
        self.bias = nn.Parameter(torch.from_numpy(np.concatenate([b for _, b in wide.values()])))

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        kept = self.keep[input_ids] * attention_mask.to(torch.float32)
        pairs = self.vocab_size + (input_ids[:, :-1] * PRIME + input_ids[:, 1:]) % self.buckets
        index = torch.cat([input_ids, pairs], dim=1)
        values = torch.cat([kept, kept[:, :-1] * kept[:, 1:]], dim=1)
        counts = torch.zeros(
            input_ids.shape[0], self.vocab_size + self.buckets, dtype=torch.float32
        )
        counts = counts.scatter_add(1, index, values)
        tf = torch.where(
            counts > 0, 1.0 + torch.log(counts.clamp(min=1.0)), torch.zeros_like(counts)
        )
        x = tf * self.idf
        return x / x.norm(dim=1, keepdim=True).clamp(min=1e-12)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        logits = self.features(input_ids, attention_mask) @ self.weight + self.bias
        out, start = {}, 0
        for task, k in self.tasks.items():
            out[task] = torch.log_softmax(logits[:, start : start + k], dim=-1)
            start += k
        return out


def head_cut(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, length: int, end_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``length`` ids of each row, the last one replaced by ``end_id`` where the row
    was longer: what the tokenizer's own ``head`` truncation at ``length`` gives ([CLS] body
    [SEP])."""
    ids, mask = input_ids[:, :length], attention_mask[:, :length]
    cut = (
        attention_mask.sum(dim=1, keepdim=True) > length
    )  # only when the batch is wider than ``length``
    last = torch.arange(ids.shape[1]).unsqueeze(0) == ids.shape[1] - 1
    return torch.where(cut & last, torch.full_like(ids, end_id), ids), mask


class WideAndDeep(nn.Module):
    """The served module: ``MultiTaskModel`` on the head of the text mixed with ``LexicalHead`` on
    all of it.

    ``config`` and ``tasks`` are the encoder's, as ``trainer.export`` expects of the module it
    exports.
    """

    def __init__(
        self,
        deep: MultiTaskModel,
        wide: LexicalHead,
        weight: float,
        encoder_length: int,
        end_id: int,
    ) -> None:
        super().__init__()
        if not 0.0 < weight < 1.0:
            raise ConfigError(f"lexical_weight must be in (0, 1) for a mix, got {weight}")
        if set(wide.tasks) != set(deep.tasks):
            raise ConfigError(
                f"wide tasks {sorted(wide.tasks)} differ from deep tasks {sorted(deep.tasks)}"
            )
        self.deep = deep
        self.wide = wide
        self.config = deep.config
        self.tasks = deep.tasks
        self.weight = weight
        self.encoder_length = encoder_length
        self.end_id = end_id

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        ids, mask = head_cut(input_ids, attention_mask, self.encoder_length, self.end_id)
        deep = self.deep(ids, mask)
        wide = self.wide(input_ids, attention_mask)
        return {
            output_name(t): (1.0 - self.weight) * torch.log_softmax(deep[output_name(t)], dim=-1)
            + self.weight * wide[t]
            for t in self.tasks
        }


def wide_and_deep(
    net: MultiTaskModel,
    read: TrainingTokens,
    texts: list[str],
    labels: dict[str, np.ndarray],
    cfg: TrainConfig,
) -> tuple[WideAndDeep, dict[str, Any]]:
    """The lexical stage: fit the lexical model on the training rows (``texts``, and ``labels``
    their label indices per task) as ``read`` (the package's tokenizer at ``lexical_read_length``)
    reads them, and mix it with the fine-tuned ``net``. Returns the module to export and the
    lexical summary (the manifest's ``lineage.lexical``)."""
    t0 = time.perf_counter()
    vocab, special = read.vocab_size, read.special_ids
    counts = count(read.encode(texts), vocab, cfg.lexical_buckets, special)
    features = Features.fit(counts, vocab, cfg.lexical_buckets, special)
    wide = LexicalHead(features, fit_wide(features, counts, labels, net.tasks, cfg.lexical_c))
    end_id = read.token_id("[SEP]")
    if end_id is None:
        raise DataError(
            "the tokenizer has no [SEP] token: the graph cannot re-cut the encoder's input"
        )
    served = WideAndDeep(net.eval(), wide, cfg.lexical_weight, cfg.max_length, end_id)
    summary = {
        "method": "tfidf-logistic-regression",
        "weight": cfg.lexical_weight,
        "read_length": cfg.lexical_read_length,
        "encoder_length": cfg.max_length,
        "buckets": cfg.lexical_buckets,
        "c": cfg.lexical_c,
        "features_used": int((features.idf > 0).sum()),
        "seconds": time.perf_counter() - t0,
    }
    log.info("lexical model fitted on %d rows in %.0f s", counts.shape[0], summary["seconds"])
    return served, summary
