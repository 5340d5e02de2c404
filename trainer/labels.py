"""Versioned label maps: CFPB product family -> team, CFPB issue name -> issue label, tags ->
vulnerable.

Both maps are JSON files under ``trainer/config`` whose ``version`` goes into every manifest's
lineage (``label_maps_version``), so a package says which mapping produced its labels.

- ``team_map.v1.json``: ``family_to_team`` (9 families -> 6 teams) and ``product_to_family`` (raw
  CFPB ``Product`` names, for sources without a ``product_family`` column). An unknown family or
  product raises ``LabelMapError``: a silent default would train a wrong router.
- ``issue_map.v2.json`` (the default): ``renamed`` (a retired CFPB name -> its published successor),
  ``merged`` (current names of sibling products with one meaning, merged by this project),
  ``retired`` (a retired name with no single successor) and ``labels`` (the issues kept, each with
  at least ``min_train_rows`` training rows after renaming and merging, plus ``other``). A retired
  name is ``UNKNOWN`` for the issue head: such a row trains and is scored on its other tasks only,
  never as ``other``, since reading a name the CFPB split in three as one class taught the head a
  label no complaint can carry today. Every other issue not in ``labels`` (rare, or never seen in
  training: e.g. a name the CFPB introduces next year) maps to ``other`` explicitly;
  ``LabelSpace.unseen_issues`` lets callers count them. ``issue_map.v1.json`` (one ``synonyms``
  table, the retired names read as labels) stays for the packages that name it in their lineage.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from consumer.errors import ConfigError

TEAM_MAP = "team_map.v1.json"
ISSUE_MAP = "issue_map.v2.json"
VULNERABLE_LABELS = ("no", "yes")
# A row's label for a task its source does not record (e.g. a Product-only file has no Issue and no
# Tags). Such a row trains and is scored only on the tasks it has labels for; it is never read as
# "other" or "no".
UNKNOWN = ""
IGNORE = (
    -100
)  # the index of an UNKNOWN label: what torch's cross-entropy ignores and metrics leave out


def indices(values: Iterable[str], labels: Sequence[str]) -> np.ndarray:
    """Label indices of ``values`` in ``labels``; ``UNKNOWN`` gives ``IGNORE``, any other
    stranger -1."""
    pos = {name: i for i, name in enumerate(labels)}
    return np.array([IGNORE if v == UNKNOWN else pos.get(v, -1) for v in values], dtype=np.int64)


class LabelMapError(ConfigError):
    """A label map file is invalid, or a row names a product/family the map does not know."""


def _load(name_or_path: str | Path) -> dict[str, Any]:
    path = Path(name_or_path)
    try:
        if path.is_file():
            raw = path.read_text(encoding="utf-8")
        else:
            raw = (
                resources.files("trainer.config")
                .joinpath(str(name_or_path))
                .read_text(encoding="utf-8")
            )
        return dict(json.loads(raw))
    except (OSError, ValueError) as exc:
        raise LabelMapError(f"cannot read label map {name_or_path}: {exc}") from exc


def normalise_issue(name: str) -> str:
    """Whitespace-normalised issue text; synonyms are matched on this form."""
    return " ".join(str(name).split())


@dataclass(frozen=True)
class LabelSpace:
    """The label sets of the three tasks and how raw CFPB fields map onto them."""

    family_to_team: dict[str, str]
    product_to_family: dict[str, str]
    issue_synonyms: dict[str, str]
    issue_labels: tuple[str, ...]
    other_issue: str
    version: str
    retired_issues: frozenset[str] = frozenset()
    teams: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "teams", tuple(sorted(set(self.family_to_team.values()))))
        if self.other_issue not in self.issue_labels:
            raise LabelMapError(
                f"issue map: fallback label {self.other_issue!r} must be one of its labels"
            )

    @property
    def tasks(self) -> dict[str, tuple[str, ...]]:
        """Labels in ONNX output order, per task."""
        return {"team": self.teams, "issue": self.issue_labels, "vulnerable": VULNERABLE_LABELS}

    def family(self, product_family: str | None, product: str | None = None) -> str:
        if product_family:
            if product_family not in self.family_to_team:
                raise LabelMapError(
                    f"unknown product family {product_family!r}: add it to {TEAM_MAP}"
                )
            return product_family
        if product and product in self.product_to_family:
            return self.product_to_family[product]
        raise LabelMapError(
            f"unknown CFPB product {product!r}: add it to product_to_family in {TEAM_MAP}"
        )

    def team(self, product_family: str | None, product: str | None = None) -> str:
        return self.family_to_team[self.family(product_family, product)]

    def canonical_issue(self, issue: str) -> str:
        name = normalise_issue(issue)
        return self.issue_synonyms.get(name, name)

    def issue(self, issue: str | None) -> str:
        """The issue label: ``UNKNOWN`` for a retired name with no single successor, else the
        renamed/merged name if kept, else ``other`` (rare, empty, or unseen in training)."""
        if not issue or not str(issue).strip():
            return self.other_issue
        name = self.canonical_issue(str(issue))
        if name in self.retired_issues:
            return UNKNOWN
        return name if name in self.issue_labels else self.other_issue

    def unseen_issues(self, issues: Iterable[str]) -> Counter[str]:
        """Raw issue names that fall back to ``other`` (for logging how much an export leans on
        it)."""
        return Counter(
            i for i in issues if i and self.issue(i) == self.other_issue and i != self.other_issue
        )

    @staticmethod
    def vulnerable(tags: object) -> str:
        """``yes`` when the CFPB ``Tags`` field is non-empty (Servicemember, Older American)."""
        if tags is None or (isinstance(tags, float) and tags != tags):  # NaN from pandas
            return "no"
        if isinstance(tags, bool):
            return "yes" if tags else "no"
        text = str(tags).strip().lower()
        return "no" if text in ("", "nan", "none", "no", "false", "0") else "yes"


def load_label_space(
    team_map: str | Path = TEAM_MAP, issue_map: str | Path = ISSUE_MAP
) -> LabelSpace:
    """Read both maps (package files by default, or paths) and check them."""
    teams, issues = _load(team_map), _load(issue_map)
    try:
        retired = frozenset(normalise_issue(k) for k in issues.get("retired", {}))
        space = LabelSpace(
            family_to_team=dict(teams["family_to_team"]),
            product_to_family=dict(teams["product_to_family"]),
            issue_synonyms=issue_synonyms(issues),
            issue_labels=tuple(issues["labels"]),
            other_issue=str(issues["other_label"]),
            version=f"{teams['version']}+{issues['version']}",
            retired_issues=retired,
        )
    except KeyError as exc:
        raise LabelMapError(f"label map is missing the field {exc}") from exc
    clash = retired & (set(space.issue_labels) | set(space.issue_synonyms.values()))
    if clash:
        raise LabelMapError(
            f"issue map: retired names are also labels or successors: {sorted(clash)}"
        )
    unknown = set(space.product_to_family.values()) - set(space.family_to_team)
    if unknown:
        raise LabelMapError(f"product_to_family names families with no team: {sorted(unknown)}")
    if len(set(space.issue_labels)) != len(space.issue_labels):
        raise LabelMapError("issue map labels are not unique")
    return space


def issue_synonyms(doc: dict[str, Any]) -> dict[str, str]:
    """One table, normalised name -> final name, from a map's ``synonyms`` (v1) or its ``renamed``
    then ``merged`` tables (v2), with chains followed (a 2015 name renamed in 2017, then merged with
    a sibling product's name). A cycle is an error."""
    table = {
        normalise_issue(k): normalise_issue(v)
        for part in ("synonyms", "renamed", "merged")
        for k, v in dict(doc.get(part, {})).items()
    }
    if not any(part in doc for part in ("synonyms", "renamed", "merged")):
        raise LabelMapError("issue map has no synonyms (v1) nor renamed/merged tables (v2)")
    flat = {}
    for name in table:
        seen, final = {name}, table[name]
        while final in table:
            if final in seen:
                raise LabelMapError(f"issue map: the names {sorted(seen)} rename each other")
            seen.add(final)
            final = table[final]
        flat[name] = final
    return flat


def derive_issue_labels(
    train_issues: Iterable[str],
    synonyms: dict[str, str],
    min_train_rows: int,
    other_label: str = "Other",
    retired: Iterable[str] = (),
) -> tuple[list[str], Counter[str]]:
    """Rebuild an issue map's ``labels`` from training rows only: leave out retired names, merge
    synonyms (see ``issue_synonyms``), keep frequent issues.

    Returns the labels (kept issues sorted by frequency, then ``other_label`` last) and merged
    counts. Used to write a new map version and by the test that checks v1 matches the shared
    training split.
    """
    syn = {normalise_issue(k): v for k, v in synonyms.items()}
    gone = {normalise_issue(r) for r in retired}
    counts: Counter[str] = Counter()
    for raw in train_issues:
        if raw and str(raw).strip():
            name = normalise_issue(str(raw))
            if name not in gone:
                counts[syn.get(name, name)] += 1
    kept = [
        n for n, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_train_rows
    ]
    kept = [n for n in kept if n != other_label]
    return [*kept, other_label], counts
