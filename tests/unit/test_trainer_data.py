"""Data sources: CFPB CSV/Parquet, a ``datasets`` folder (hub-style column names), feedback
JSONL."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from trainer.data import load_source
from trainer.errors import DataError
from trainer.labels import UNKNOWN, LabelSpace, load_label_space

CFPB_ROWS = [
    {
        "Consumer complaint narrative": "They keep calling about a debt I paid.",
        "Product": "Debt collection",
        "Issue": "Cont'd attempts collect debt not owed",
        "Tags": "Servicemember",
        "Complaint ID": "101",
        "product_family": "debt_collection",
        "split": "train",
    },
    {
        "Consumer complaint narrative": "Wrong account on my report.",
        "Product": "Credit reporting, credit repair services, or other personal consumer reports",
        "Issue": "Incorrect information on your report",
        "Tags": "",
        "Complaint ID": "102",
        "product_family": "credit_reporting",
        "split": "holdout",
    },
    {
        "Consumer complaint narrative": "   ",
        "Product": "Mortgage",
        "Issue": "x",
        "Tags": "",
        "Complaint ID": "103",
        "product_family": "mortgage",
        "split": "val",
    },
    {
        "Consumer complaint narrative": "Fees on my prepaid card.",
        "Product": "Prepaid card",
        "Issue": "A brand new issue",
        "Tags": "",
        "Complaint ID": "104",
        "product_family": "",
        "split": "",
    },
    {
        "Consumer complaint narrative": "Something else.",
        "Product": "Timeshares",
        "Issue": "x",
        "Tags": "",
        "Complaint ID": "105",
        "product_family": "",
        "split": "",
    },
]


@pytest.fixture
def space() -> LabelSpace:
    return load_label_space()


def check_cfpb(df: pd.DataFrame) -> None:
    rows = df.set_index("complaint_id")
    assert list(rows.index) == ["101", "102", "104"]
    assert rows.loc["101", "team"] == "collections"
    assert rows.loc["101", "issue"] == "Attempts to collect debt not owed"
    assert rows.loc["101", "vulnerable"] == "yes" and rows.loc["102", "vulnerable"] == "no"
    assert rows.loc["102", "split"] == "holdout" and rows.loc["104", "split"] == ""
    assert rows.loc["104", "team"] == "cards" and rows.loc["104", "issue"] == "Other"


def test_csv_gz_and_parquet(tmp_path: Path, space: LabelSpace) -> None:
    csv = tmp_path / "c.csv.gz"
    pd.DataFrame(CFPB_ROWS).to_csv(csv, index=False)
    df, report = load_source(str(csv), space)
    check_cfpb(df)
    assert report.dropped == {"empty_text": 1, "unknown_product": 1}
    assert report.issues_to_other == {"A brand new issue": 1}
    pq = tmp_path / "c.parquet"
    pd.DataFrame(CFPB_ROWS).to_parquet(pq)
    check_cfpb(load_source(str(pq), space)[0])


def test_datasets_folder_with_hub_column_names(tmp_path: Path, space: LabelSpace) -> None:
    import datasets

    hub_style = [
        {
            "Complaint Text": r["Consumer complaint narrative"],
            "Product": r["Product"],
            "Sub Product": "",
            "Issue": r["Issue"],
            "Tags": r["Tags"],
            "Complaint ID": int(r["Complaint ID"]),
        }
        for r in CFPB_ROWS
    ]
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(hub_style[:3]),
            "validation": datasets.Dataset.from_list(hub_style[3:]),
        }
    )
    folder = tmp_path / "cfpb_hf"
    dd.save_to_disk(str(folder))
    df, report = load_source(str(folder), space)
    rows = df.set_index("complaint_id")
    assert sorted(rows.index) == ["101", "102", "104"]
    assert rows.loc["101", "split"] == "train" and rows.loc["104", "split"] == "val"
    assert rows.loc["102", "team"] == "credit_bureau_disputes"  # from Product, no family column
    assert report.dropped["unknown_product"] == 1


def test_datasets_local_data_files(tmp_path: Path, space: LabelSpace) -> None:
    folder = tmp_path / "jsonl_ds"
    folder.mkdir()
    with (folder / "train.jsonl").open("w") as f:
        for r in CFPB_ROWS[:2]:
            f.write(
                json.dumps(
                    {
                        "complaint_what_happened": r["Consumer complaint narrative"],
                        "product": r["Product"],
                        "issue": r["Issue"],
                        "tags": r["Tags"],
                        "complaint_id": r["Complaint ID"],
                    }
                )
                + "\n"
            )
    df, _ = load_source(str(folder), space)
    assert sorted(df["complaint_id"]) == ["101", "102"]
    assert set(df["split"]) == {"train"}


def test_feedback_jsonl(tmp_path: Path, space: LabelSpace) -> None:
    path = tmp_path / "feedback.jsonl"
    records = [
        {
            "complaint_id": "7",
            "text": "Charged twice",
            "team": "cards",
            "issue": "Fees or interest",
            "vulnerable": False,
        },
        {
            "complaint_id": "8",
            "text": "Veteran, lost home",
            "team": "mortgages",
            "issue": "Struggling to pay mortgage",
            "vulnerable": True,
        },
        {
            "complaint_id": "9",
            "text": "New thing",
            "team": "collections",
            "issue": "Invented in 2030",
            "vulnerable": "no",
        },
        {
            "complaint_id": "10",
            "text": "Bad team",
            "team": "crypto",
            "issue": "Other",
            "vulnerable": False,
        },
        {"complaint_id": "11", "text": "", "team": "cards", "issue": "Other", "vulnerable": False},
    ]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    df, report = load_source(str(path), space)
    rows = df.set_index("complaint_id")
    assert list(rows.index) == ["7", "8", "9"]
    assert rows.loc["8", "vulnerable"] == "yes" and rows.loc["7", "vulnerable"] == "no"
    assert rows.loc["9", "issue"] == "Other"
    assert report.dropped == {"unknown_team": 1, "empty_text": 1}
    assert set(rows["split"]) == {""}  # assigned later by hashing the id


def test_bad_sources(tmp_path: Path, space: LabelSpace) -> None:
    with pytest.raises(DataError):
        load_source(str(tmp_path / "missing.csv"), space)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(DataError):
        load_source(str(bad), space)
    nocol = tmp_path / "nocol.csv"
    nocol.write_text("a,b\n1,2\n")
    with pytest.raises(DataError):
        load_source(str(nocol), space)


def test_a_source_without_issue_or_tags_gives_unknown_labels_not_defaults(
    tmp_path: Path, space: LabelSpace
) -> None:
    """A Product-only file (like the shared product_only.csv.gz) labels the team and nothing
    else."""
    path = tmp_path / "product_only.csv"
    pd.DataFrame(
        [
            {
                "Product": "Mortgage",
                "Consumer complaint narrative": "Escrow shortage again.",
                "product_family": "",
            },
            {
                "Product": "Payday loan",
                "Consumer complaint narrative": "Rolled over twice.",
                "product_family": "",
            },
        ]
    ).to_csv(path, index=False)
    df, report = load_source(str(path), space)
    assert list(df["team"]) == ["mortgages", "consumer_lending"]
    assert set(df["issue"]) == {UNKNOWN} and set(df["vulnerable"]) == {
        UNKNOWN
    }  # not "Other", not "no"
    assert report.summary()["unlabelled"] == {"issue": 2, "vulnerable": 2}
    feedback = tmp_path / "team_only.jsonl"
    feedback.write_text(
        json.dumps({"complaint_id": "5", "text": "Routed by hand", "team": "cards"}) + "\n"
    )
    fb, _ = load_source(str(feedback), space)
    assert (fb.loc[0, "issue"], fb.loc[0, "vulnerable"]) == (UNKNOWN, UNKNOWN)


def test_load_texts_reads_narratives_from_every_kind_of_source(tmp_path: Path) -> None:
    """Masked-LM adaptation reads texts only: labels, ids and unknown products do not matter; empty
    texts are left out; a source without a text column or with bad lines is an error, not an empty
    corpus."""
    import datasets

    from trainer.data import load_texts

    table = tmp_path / "archive.csv.gz"
    pd.DataFrame(
        {"Consumer complaint narrative": ["first", "  ", "second"], "Product": ["?", "", ""]}
    ).to_csv(table, index=False)
    assert load_texts(str(table)) == ["first", "second"]
    jsonl = tmp_path / "export.jsonl"
    jsonl.write_text(
        '{"text": "from feedback", "team": "nobody"}\n\n{"text": ""}\n', encoding="utf-8"
    )
    assert load_texts(str(jsonl)) == ["from feedback"]
    folder = tmp_path / "hf"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list([{"Complaint Text": "a"}]),
            "test": datasets.Dataset.from_list([{"Complaint Text": "b"}]),
        }
    ).save_to_disk(str(folder))
    assert sorted(load_texts(str(folder))) == ["a", "b"]

    no_text = tmp_path / "no_text.csv"
    pd.DataFrame({"Product": ["Mortgage"]}).to_csv(no_text, index=False)
    bad_line = tmp_path / "bad.jsonl"
    bad_line.write_text('["not", "an", "object"]\n', encoding="utf-8")
    bad = (
        (no_text, "no complaint text column"),
        (bad_line, "JSON object"),
        (tmp_path / "x", "no such"),
    )
    for source, message in bad:
        with pytest.raises(DataError, match=message):
            load_texts(str(source))
