"""The tokens a model actually scored, with their character offsets, and a tokenizer shap's Text
masker accepts.

Contract: ``TokenView.ids`` equals ``consumer.inference.TextEncoder.encode([text])[0].ids`` (the
package's tokeniser and long-text policy), so a SHAP explanation attributes exactly the input the
consumer scored. Tokens cut by the long-text policy are not features: they get no value, and
``dropped`` names their text span.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from consumer.errors import PackageError
from consumer.inference import TextEncoder, load_tokenizer
from consumer.package import ModelPackage

# BERT-family special tokens; a package whose tokenizer lacks [MASK] masks with [UNK] instead
MASK_CANDIDATES = ("[MASK]", "<mask>", "[UNK]", "<unk>")
SEP_CANDIDATES = ("[SEP]", "</s>")


@dataclass(frozen=True)
class TokenView:
    """One text as the model saw it: ids, offsets (special tokens have ``None``) and what was
    cut."""

    text: str
    ids: tuple[int, ...]
    tokens: tuple[str, ...]
    offsets: tuple[tuple[int, int] | None, ...]
    special: tuple[bool, ...]
    truncated: bool
    dropped: tuple[tuple[int, int], ...]  # character spans of tokens the model never saw

    @property
    def body(self) -> list[int]:
        """Positions of the text tokens (the SHAP features): every kept token but the special
        ones."""
        return [i for i, s in enumerate(self.special) if not s]

    def with_body(self, rows: np.ndarray) -> np.ndarray:
        """Model inputs from masked feature rows ``[n, len(body)]``: the special tokens put back in
        place."""
        full = np.tile(np.asarray(self.ids, dtype=np.int64), (len(rows), 1))
        full[:, self.body] = rows
        return full


def kept_positions(full: list[int], kept: list[int], policy: str) -> list[int]:
    """Positions of ``full`` (the untruncated ids) that make up ``kept`` (the encoder's output).

    Every policy keeps ``[CLS]``, a head of the body, a tail of the body and ``[SEP]``; only the
    split between head and tail is unknown, and when repeated text makes it ambiguous ``head_tail``
    takes the encoder's own split (a quarter of the room for the head), so that offsets point at the
    occurrence the model saw.
    """
    if full == kept:
        return list(range(len(full)))
    n, room = len(full), len(kept) - 2
    if n < len(kept) or room < 0 or full[0] != kept[0] or full[-1] != kept[-1]:
        raise PackageError("the encoder's ids are not a head and tail of the tokenisation")
    body, kbody = np.asarray(full[1:-1]), np.asarray(kept[1:-1])
    prefix = int(np.argmin(np.append(body[:room] == kbody, False)))  # longest common prefix
    suffix = int(
        np.argmin(np.append(body[::-1][:room] == kbody[::-1], False))
    )  # longest common suffix
    valid = [h for h in range(min(prefix, room), -1, -1) if room - h <= suffix]
    if not valid:
        raise PackageError("the encoder's ids are not a head and tail of the tokenisation")
    head = room // 4 if policy == "head_tail" and room // 4 in valid else valid[0]
    return [0, *range(1, 1 + head), *range(n - 1 - (room - head), n - 1), n - 1]


class PackageTokens:
    """Tokenises like the package's ``TextEncoder`` and keeps the offsets the encoder drops."""

    def __init__(self, package: ModelPackage, encoder: TextEncoder) -> None:
        self.encoder = encoder
        self.policy = package.truncation
        self._tok = load_tokenizer(package)
        self.mask_id = _first_id(self._tok, MASK_CANDIDATES, package.ref)
        self.mask_token = str(self._tok.id_to_token(self.mask_id))
        self.sep_id = _first_id(self._tok, SEP_CANDIDATES, package.ref)
        self.sep_token = str(self._tok.id_to_token(self.sep_id))
        self.view = lru_cache(maxsize=8)(self._view)  # the masker asks for the same text many times

    def _view(self, text: str) -> TokenView:
        enc = self._tok.encode(text)
        full, kept = list(enc.ids), [int(i) for i in self.encoder.encode([text])[0].ids]
        pos = kept_positions(full, kept, self.policy)
        special = [bool(enc.special_tokens_mask[p]) for p in pos]
        offsets = [
            None if s else (int(enc.offsets[p][0]), int(enc.offsets[p][1]))
            for p, s in zip(pos, special, strict=True)
        ]
        dropped = []
        for a, b in itertools.pairwise(pos):
            if b > a + 1:  # a gap in the kept positions: the body tokens between were cut
                start, end = enc.offsets[a + 1][0], enc.offsets[b - 1][1]
                dropped.append((int(start), int(end)))
        return TokenView(
            text=text,
            ids=tuple(kept),
            tokens=tuple(enc.tokens[p] for p in pos),
            offsets=tuple(offsets),
            special=tuple(special),
            truncated=len(kept) < len(full),
            dropped=tuple(dropped),
        )


class ShapTokenizer:
    """The subset of the Hugging Face tokenizer API that ``shap.maskers.Text`` calls, over
    ``PackageTokens``.

    It returns the *kept, non-special* tokens of a text: the masker's features are exactly the text
    tokens the model scored. Special tokens are left out on purpose: the Partition explainer spreads
    a group's credit over all its members, so an unmaskable ``[CLS]`` inside a group would take a
    share of the credit that belongs to text; the model function puts them back
    (``TokenView.with_body``).
    """

    def __init__(self, tokens: PackageTokens) -> None:
        self._tokens = tokens
        self.mask_token = tokens.mask_token
        self.mask_token_id = tokens.mask_id
        self.sep_token = tokens.sep_token
        self.sep_token_id = tokens.sep_id

    def __call__(self, s: str, return_offsets_mapping: bool = False, **_: Any) -> dict[str, Any]:
        view = self._tokens.view(s)
        body = view.body
        out: dict[str, Any] = {"input_ids": [view.ids[i] for i in body]}
        if return_offsets_mapping:
            out["offset_mapping"] = [view.offsets[i] for i in body]
        return out


def _first_id(tok: Tokenizer, candidates: tuple[str, ...], ref: str) -> int:
    for token in candidates:
        tid = tok.token_to_id(token)
        if tid is not None:
            return int(tid)
    raise PackageError(f"{ref}: tokenizer has none of {candidates}")
