"""Versioned label maps: team map coverage, issue synonyms, the explicit ``Other`` fallback,
tags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer.labels import LabelMapError, derive_issue_labels, load_label_space
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
    assert space.issue("  Struggling to pay your   loan ") == "Struggling to repay your loan"
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
    assert load_label_space().version == "team-map/v1+issue-map/v1"


def test_bad_map_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "issues.json"
    bad.write_text(
        json.dumps({"version": "x", "synonyms": {}, "labels": ["A"], "other_label": "Other"})
    )
    with pytest.raises(LabelMapError):
        load_label_space(issue_map=bad)


@pytest.mark.skipif(not DATA.is_file(), reason="shared CFPB data not present")
def test_issue_map_v1_is_derived_from_training_rows_only() -> None:
    import pandas as pd

    doc = json.loads((Path(__file__).parents[2] / "trainer/config/issue_map.v1.json").read_text())
    df = pd.read_csv(DATA, usecols=["Issue", "split"], dtype=str, keep_default_na=False)
    labels, counts = derive_issue_labels(
        df.loc[df["split"] == "train", "Issue"],
        doc["synonyms"],
        doc["min_train_rows"],
        doc["other_label"],
    )
    assert labels == doc["labels"]
    assert min(counts[label] for label in labels[:-1]) >= doc["min_train_rows"]
