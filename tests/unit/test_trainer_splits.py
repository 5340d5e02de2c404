"""Reproducible splits, the holdout guard and the dataset digest."""

from __future__ import annotations

import pandas as pd
import pytest

from trainer import splits
from trainer.data import COLUMNS
from trainer.errors import DataError
from trainer.labels import UNKNOWN


def frame(rows: list[tuple[str, ...]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLUMNS, dtype=object)


def test_hash_split_follows_the_shared_rule() -> None:
    ids = [str(i) for i in range(3000)]
    got = pd.Series([splits.hash_split(i) for i in ids]).value_counts(normalize=True)
    assert set(got.index) == {"train", "val", "test"}  # hashing never yields the holdout
    assert got["train"] == pytest.approx(0.70, abs=0.03)
    assert got["val"] == pytest.approx(0.15, abs=0.03)
    assert splits.hash_split("3456789") == splits.hash_split("3456789")


def test_assign_fills_only_missing_splits_and_keys_textless_ids_by_text() -> None:
    df = frame(
        [
            ("1", "a", "t", "i", "no", "holdout"),
            ("2", "b", "t", "i", "no", ""),
            ("", "c", "t", "i", "no", ""),
        ]
    )
    out = splits.assign(df)
    assert out.loc[0, "split"] == "holdout"
    assert out.loc[1, "split"] == splits.hash_split("2")
    assert out.loc[2, "split"] == splits.hash_split("text:" + splits.text_key("c"))


def test_feedback_corrects_labels_but_never_moves_a_holdout_row() -> None:
    base = frame(
        [
            ("1", "text one", "cards", "Other", "no", "holdout"),
            ("2", "text two", "cards", "Other", "no", "train"),
        ]
    )
    feedback = frame(
        [
            ("1", "text one", "mortgages", "Other", "yes", ""),
            ("2", "text two", "collections", "Other", "no", ""),
        ]
    )
    out = splits.prepare([base, feedback]).set_index("complaint_id")
    assert out.loc["1", "split"] == "holdout" and out.loc["1", "team"] == "mortgages"
    assert out.loc["2", "split"] == "train" and out.loc["2", "team"] == "collections"


def test_an_unknown_label_never_erases_a_known_one() -> None:
    base = frame([("1", "text one", "cards", "Fees or interest", "yes", "train")])
    team_only = frame([("1", "text one", "mortgages", UNKNOWN, UNKNOWN, "")])
    out = splits.prepare([base, team_only]).set_index("complaint_id")
    assert out.loc["1", "team"] == "mortgages"  # the later source's known label wins
    assert (out.loc["1", "issue"], out.loc["1", "vulnerable"]) == ("Fees or interest", "yes")


def test_copies_of_holdout_texts_are_dropped_from_training() -> None:
    df = frame(
        [
            ("1", "Same  Text", "cards", "Other", "no", "holdout"),
            ("9", "same text", "cards", "Other", "no", "train"),
            ("3", "other", "cards", "Other", "no", "train"),
        ]
    )
    out = splits.prepare([df])
    assert sorted(out["complaint_id"]) == ["1", "3"]


def test_training_rows_refuses_the_holdout() -> None:
    df = frame([("1", "a", "t", "i", "no", "holdout"), ("2", "b", "t", "i", "no", "train")])
    assert list(splits.training_rows(df, "train")["complaint_id"]) == ["2"]
    with pytest.raises(DataError):
        splits.training_rows(df, "holdout")


def test_digest_ignores_row_order_but_not_labels() -> None:
    df = frame(
        [("1", "a", "cards", "Other", "no", "train"), ("2", "b", "cards", "Other", "yes", "val")]
    )
    assert splits.digest(df) == splits.digest(df.iloc[::-1])
    changed = df.copy()
    changed.loc[0, "team"] = "mortgages"
    assert splits.digest(changed) != splits.digest(df)
    assert len(splits.digest(df)) == 64
