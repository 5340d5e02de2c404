"""Reproducible splits, the holdout guard, and the dataset digest for lineage.

- ``assign``: rows without a split get one from ``sha256("cfpb-split:" + complaint_id)`` exactly as
  the shared file was split (first 8 hex digits / 16^8 < 0.70 train, < 0.85 val, else test; see
  data/cfpb/SOURCES.md), so a complaint lands in the same split whichever source it comes from. Rows
  without an id use the sha256 of their normalised text as the key. Hashing never yields
  ``holdout``: only a source that says so puts a row there.
- ``combine``: one row per complaint id; a later source's labels win (feedback corrects the
  original), task by task, except that an unknown label never erases a known one; the first source's
  split is kept, so a holdout complaint never moves into training.
- ``guard_holdout``: drops non-holdout rows whose normalised text equals a holdout text.
- ``digest``: sha256 over the normalised rows in a canonical order.
- ``load_rows``: every source loaded, then ``prepare``d: the rows a run (or a bench) starts from.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from typing import Any

import pandas as pd

from trainer.data import COLUMNS, LABEL_COLUMNS, load_source
from trainer.errors import DataError
from trainer.labels import UNKNOWN, LabelSpace

log = logging.getLogger(__name__)

SALT = "cfpb-split:"
TRAIN_CUT, VAL_CUT = 0.70, 0.85
TRAINABLE = ("train", "val", "test")


def text_key(text: str) -> str:
    return hashlib.sha256(" ".join(text.lower().split()).encode("utf-8")).hexdigest()


def hash_split(key: str) -> str:
    frac = int(hashlib.sha256((SALT + key).encode("utf-8")).hexdigest()[:8], 16) / 16**8
    return "train" if frac < TRAIN_CUT else "val" if frac < VAL_CUT else "test"


def assign(df: pd.DataFrame) -> pd.DataFrame:
    """Fill empty ``split`` values by hashing the complaint id (or the text when there is none)."""
    df = df.copy()
    empty = df["split"].fillna("") == ""
    keys = [
        cid if cid else "text:" + text_key(t)
        for cid, t in zip(df["complaint_id"], df["text"], strict=True)
    ]
    df.loc[empty, "split"] = [hash_split(k) for k, e in zip(keys, empty, strict=True) if e]
    return df


def combine(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate sources; per complaint id the last known label of each task wins and the first
    split is kept."""
    if not frames:
        raise DataError("no data sources given")
    df = pd.concat([f[COLUMNS] for f in frames], ignore_index=True)
    with_id = df[df["complaint_id"] != ""]
    groups = with_id.groupby("complaint_id", sort=False)
    last = with_id.drop_duplicates("complaint_id", keep="last").copy()
    last["split"] = last["complaint_id"].map(groups["split"].agg(_first_known))
    for task in LABEL_COLUMNS:
        last[task] = last["complaint_id"].map(groups[task].agg(_last_known))
    return pd.concat([last, df[df["complaint_id"] == ""]], ignore_index=True)


def _first_known(values: pd.Series) -> str:
    return next((v for v in values if v != UNKNOWN), UNKNOWN)


def _last_known(values: pd.Series) -> str:
    return next((v for v in reversed(list(values)) if v != UNKNOWN), UNKNOWN)


def guard_holdout(df: pd.DataFrame) -> pd.DataFrame:
    """Drop train/val/test rows whose normalised text is also a holdout text (leakage through
    copies)."""
    keys = df["text"].map(text_key)
    holdout = set(keys[df["split"] == "holdout"])
    leak = (df["split"] != "holdout") & keys.isin(holdout)
    if leak.any():
        log.warning("splits: dropped %d rows whose text is also in the holdout", int(leak.sum()))
    return df[~leak].reset_index(drop=True)


def prepare(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """combine -> assign -> guard_holdout: the frame every training run starts from."""
    return guard_holdout(assign(combine(frames)))


def digest(df: pd.DataFrame) -> str:
    """sha256 over the rows (all COLUMNS) sorted by id and text: same rows, same digest, any source
    order."""
    h = hashlib.sha256()
    rows = sorted(zip(*(df[c].astype(str) for c in COLUMNS), strict=True))
    for row in rows:
        h.update(json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n")
    return h.hexdigest()


def training_rows(df: pd.DataFrame, split: str) -> pd.DataFrame:
    """The rows of one trainable split; asking for the holdout here is a bug and raises."""
    if split not in TRAINABLE:
        raise DataError(
            f"split {split!r} is not for training or tuning (holdout is evaluation only)"
        )
    return df[df["split"] == split].reset_index(drop=True)


def load_rows(
    sources: Sequence[str], space: LabelSpace, *, limit_rows: int = 0, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """All ``sources`` combined and split: ``(rows, every_row, summary)``. ``rows`` are the ones a
    run uses: with ``limit_rows``, a sample of at most that many rows of each split, reproducible
    from ``seed``; ``every_row`` is all of them (the masked-LM stage keeps clear of every evaluation
    text, sampled or not); ``summary`` holds each source's load report and the rows per split."""
    frames, reports = [], []
    for src in sources:
        df, rep = load_source(src, space)
        frames.append(df)
        reports.append(rep.summary())
    every_row = rows = prepare(frames)
    if limit_rows:
        rows = pd.concat(
            [
                g.sample(n=min(len(g), limit_rows), random_state=seed)
                for _, g in rows.groupby("split")
            ],
            ignore_index=True,
        )
    counts = rows["split"].value_counts().to_dict()
    return rows, every_row, {"sources": reports, "split_rows": counts, "rows": len(rows)}
