"""Versioned label maps: team map coverage, issue synonyms, the explicit ``Other`` fallback,
tags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer.labels import (
    UNKNOWN,
    LabelMapError,
    derive_issue_labels,
    issue_synonyms,
    load_label_space,
    normalise_issue,
)
from trainer.paths import DEFAULT_DATA

DATA = DEFAULT_DATA
FAMILIES = (
    "payday_personal_loan",
    "credit_reporting",
    "checking_savings",
    "student_loan",
    "debt_collection",
    "credit_card_prepaid",
    "mortgage",
    "money_transfer",
    "vehicle_loan",
)


def test_every_family_has_a_team_and_teams_are_few() -> None:
    space = load_label_space()
    assert set(space.family_to_team) == set(FAMILIES)
    assert 4 <= len(space.teams) <= 8
    assert space.team("mortgage") == "mortgages"
    assert (
        space.team(None, "Credit card or prepaid card") == "cards"
    )  # raw CFPB product, no family column
    with pytest.raises(LabelMapError):
        space.team("crypto_lending")
    with pytest.raises(LabelMapError):
        space.team(None, "Something new")


def test_issue_synonyms_merge_and_rare_or_unseen_go_to_other() -> None:
    space = load_label_space()
    assert (
        space.issue("Cont'd attempts collect debt not owed") == "Attempts to collect debt not owed"
    )
    assert space.issue("  Struggling to repay your   loan ") == "Struggling to pay your loan"
    # a chain: the 2015 name, renamed in 2017, then merged with a sibling product's name
    assert space.issue("Taking out the loan or lease") == "Getting the loan"
    assert space.issue("Lost or stolen check") == "Other"  # rare in training
    assert space.issue("An issue the CFPB invents next year") == "Other"  # never seen
    assert space.issue("") == space.issue(None) == "Other"
    assert space.issue_labels[-1] == "Other"
    unseen = space.unseen_issues(["Brand new issue", "Fraud or scam", "Brand new issue"])
    assert unseen == {"Brand new issue": 2}


@pytest.mark.parametrize(
    ("tags", "want"),
    [
        ("Servicemember", "yes"),
        ("Older American, Servicemember", "yes"),
        ("", "no"),
        (None, "no"),
        (float("nan"), "no"),
        (True, "yes"),
        (False, "no"),
        ("yes", "yes"),
        ("no", "no"),
    ],
)
def test_vulnerable_from_tags(tags: object, want: str) -> None:
    assert load_label_space().vulnerable(tags) == want


def test_versions_are_recorded() -> None:
    assert load_label_space().version == "team-map/v1+issue-map/v2"
    assert load_label_space(issue_map="issue_map.v1.json").version == "team-map/v1+issue-map/v1"


def test_a_retired_name_without_a_single_successor_is_unknown_not_other() -> None:
    space = load_label_space()
    retired = ("Account opening, closing, or management", "Managing, opening, or closing account")
    for name in retired:
        assert space.issue(name) == UNKNOWN
        assert name not in space.issue_labels
    assert space.unseen_issues(["Account opening, closing, or management"]) == {}
    # the v1 map, kept for old lineages, read the split name as a label of its own
    old = load_label_space(issue_map="issue_map.v1.json")
    assert old.issue("Account opening, closing, or management") == (
        "Account opening, closing, or management"
    )


def test_a_retired_row_keeps_its_team_and_vulnerable_labels(tmp_path: Path) -> None:
    from trainer.data import load_table

    src = tmp_path / "rows.csv"
    src.write_text(
        "Complaint ID,Consumer complaint narrative,product_family,Issue,Tags\n"
        "1,my checking account was closed,checking_savings,"
        '"Account opening, closing, or management",Older American\n'
        "2,they keep calling me,debt_collection,Communication tactics,\n"
    )
    df, report = load_table(src, load_label_space())
    assert list(df["issue"]) == [UNKNOWN, "Communication tactics"]
    assert list(df["team"]) == ["everyday_banking", "collections"]
    assert list(df["vulnerable"]) == ["yes", "no"]
    assert report.summary()["unlabelled"] == {"issue_retired": 1}


def test_renames_that_loop_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "issues.json"
    doc = {"version": "x", "renamed": {"A": "B"}, "merged": {"B": "A"}}
    bad.write_text(json.dumps({**doc, "labels": ["A", "Other"], "other_label": "Other"}))
    with pytest.raises(LabelMapError, match="rename each other"):
        load_label_space(issue_map=bad)


def test_a_retired_name_cannot_also_be_a_label(tmp_path: Path) -> None:
    bad = tmp_path / "issues.json"
    doc = {"version": "x", "renamed": {}, "retired": {"A": "split"}, "other_label": "Other"}
    bad.write_text(json.dumps({**doc, "labels": ["A", "Other"]}))
    with pytest.raises(LabelMapError, match="retired"):
        load_label_space(issue_map=bad)


def test_bad_map_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "issues.json"
    bad.write_text(
        json.dumps({"version": "x", "synonyms": {}, "labels": ["A"], "other_label": "Other"})
    )
    with pytest.raises(LabelMapError):
        load_label_space(issue_map=bad)


@pytest.mark.skipif(not DATA.is_file(), reason="shared CFPB data not present")
@pytest.mark.parametrize("name", ["issue_map.v1.json", "issue_map.v2.json"])
def test_issue_maps_are_derived_from_training_rows_only(name: str) -> None:
    import pandas as pd

    doc = json.loads((Path(__file__).parents[2] / "trainer/config" / name).read_text())
    df = pd.read_csv(DATA, usecols=["Issue", "split"], dtype=str, keep_default_na=False)
    labels, counts = derive_issue_labels(
        df.loc[df["split"] == "train", "Issue"],
        issue_synonyms(doc),
        doc["min_train_rows"],
        doc["other_label"],
        doc.get("retired", {}),
    )
    assert labels == doc["labels"]
    assert min(counts[label] for label in labels[:-1]) >= doc["min_train_rows"]


@pytest.mark.skipif(not DATA.is_file(), reason="shared CFPB data not present")
def test_retired_names_end_before_the_2017_taxonomy_and_successors_outlive_it() -> None:
    """The map's evidence in the data itself: every retired name is last received before the CFPB's
    2017-04-24 change, and every label except the fallback is still received after it."""
    import pandas as pd

    doc = json.loads((Path(__file__).parents[2] / "trainer/config/issue_map.v2.json").read_text())
    df = pd.read_csv(DATA, usecols=["Issue", "Date received"], dtype=str, keep_default_na=False)
    df["when"] = pd.to_datetime(df["Date received"], errors="coerce", format="mixed")
    df["name"] = df["Issue"].map(normalise_issue)
    cut = pd.Timestamp(doc["retired_before"])
    last = df.dropna(subset=["when"]).groupby("name")["when"].max()
    assert all(last[name] < cut for name in doc["retired"] if name in last.index)
    space = load_label_space()
    current = df.loc[df["when"] >= cut, "name"].map(space.canonical_issue)
    assert set(space.issue_labels[:-1]) <= set(current)
