"""Tokenisation shared by training, parity checks and scoring, so train and serve see the same ids.

Contract with the consumer (manifest ``tokenizer``): the package's ``tokenizer.json`` has truncation
at ``max_length`` and no padding (fixed padding costs 2-4x on CPU, DESIGN section 5). Long texts
follow ``truncation``:

- ``head``: the first ``max_length - specials`` tokens (the tokenizer's own truncation).
- ``head_tail``: ``budget = max_length - specials``; the first ``budget // 4`` tokens and the last
  ``budget - budget // 4`` of the text, inside the template's special tokens (as
  consumer.inference does: the head states the product, the tail often states what the customer asks
  for).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

TRUNCATIONS = ("head", "head_tail")


def serving_tokenizer(source: Path, max_length: int) -> Tokenizer:
    """Load a ``tokenizer.json`` and set the serving policy: truncate at ``max_length``, never
    pad."""
    tok = Tokenizer.from_file(str(source))
    tok.no_padding()
    tok.enable_truncation(max_length=max_length)
    return tok


def special_ids(tokenizer: Tokenizer) -> set[int]:
    """Ids of the tokenizer's special tokens ([CLS], [SEP], [PAD], [MASK], [UNK] for BERT)."""
    return {i for i, token in tokenizer.get_added_tokens_decoder().items() if token.special}


class TextEncoder:
    """Turns texts into id lists under a truncation policy, and id lists into padded int64
    batches."""

    def __init__(self, tokenizer: Tokenizer, max_length: int, truncation: str = "head") -> None:
        if truncation not in TRUNCATIONS:
            raise ValueError(f"truncation must be one of {TRUNCATIONS}, not {truncation!r}")
        self.tok = tokenizer
        self.max_length = max_length
        self.truncation = truncation
        self.pad_id = tokenizer.token_to_id("[PAD]") or 0
        # The template's special tokens around a single sequence, found once from a probe word.
        with_sp = tokenizer.encode("hello", add_special_tokens=True).ids
        bare = tokenizer.encode("hello", add_special_tokens=False).ids
        start = next(i for i in range(len(with_sp)) if with_sp[i : i + len(bare)] == bare)
        self._prefix = with_sp[:start]
        self._suffix = with_sp[start + len(bare) :]

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        if self.truncation == "head":
            return [e.ids for e in self.tok.encode_batch(list(texts))]
        budget = self.max_length - len(self._prefix) - len(self._suffix)
        self.tok.no_truncation()
        try:
            bare = self.tok.encode_batch(list(texts), add_special_tokens=False)
        finally:
            self.tok.enable_truncation(max_length=self.max_length)
        out = []
        for e in bare:
            ids = e.ids
            if len(ids) > budget:
                head = budget // 4
                ids = ids[:head] + ids[len(ids) - (budget - head) :]
            out.append(self._prefix + ids + self._suffix)
        return out

    def pad(self, rows: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Pad to the longest row of this batch only (dynamic padding); int64 as the ONNX inputs
        need."""
        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r
            mask[i, : len(r)] = 1
        return ids, mask
