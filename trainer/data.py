"""Training data sources, normalised to one frame: ``complaint_id, text, team, issue, vulnerable,
split``.

Sources (``load_source`` picks by path):

- CSV / CSV.gz / Parquet with the CFPB columns of the shared file (``Consumer complaint narrative``,
  ``Product``, ``Issue``, ``Tags``, ``Complaint ID``, optional ``product_family`` and ``split``);
- a Hugging Face ``datasets`` dataset: a folder written by ``save_to_disk``, a local folder of data
  files, or ``hf:<hub id>`` (e.g. ``hf:CFPB/consumer-finance-complaints``, whose ``Complaint
  Text``/``Sub Product`` style names are matched case- and punctuation-insensitively);
- a feedback export, ``*.jsonl``: one ``{complaint_id, text, team, issue, vulnerable}`` per line,
  labels decided by people (``team`` is already a team name).

Rows that cannot be labelled (empty text, unknown product or team) are dropped and counted in
``LoadReport.dropped`` by reason, never silently. ``split`` is kept when the source has it, else
empty (``splits.assign`` fills it). A task the source does not record (no ``Issue`` or no ``Tags``
column, or an empty ``Issue``) gets ``labels.UNKNOWN`` for that row, counted in
``LoadReport.unlabelled``: the row still teaches the tasks it has labels for (e.g. the shared
``product_only.csv.gz``, team only).
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from trainer.errors import DataError
from trainer.labels import UNKNOWN, LabelMapError, LabelSpace

log = logging.getLogger(__name__)

LABEL_COLUMNS = ("team", "issue", "vulnerable")
COLUMNS = ["complaint_id", "text", *LABEL_COLUMNS, "split"]
SPLITS = ("train", "val", "test", "holdout")
# Normalised source column name -> our field; first match wins.
ALIASES: dict[str, tuple[str, ...]] = {
    "text": (
        "consumer_complaint_narrative",
        "complaint_text",
        "narrative",
        "text",
        "complaint_what_happened",
    ),
    "product": ("product",),
    "product_family": ("product_family",),
    "issue": ("issue",),
    "tags": ("tags",),
    "complaint_id": ("complaint_id", "id"),
    "split": ("split",),
}


@dataclass
class LoadReport:
    """What a load kept and dropped (by reason), and the raw issues that fell back to ``other``."""

    source: str
    rows_in: int = 0
    rows_out: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    issues_to_other: Counter[str] = field(default_factory=Counter)
    unlabelled: Counter[str] = field(default_factory=Counter)

    def summary(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "dropped": dict(self.dropped),
            "issue_rows_to_other": sum(self.issues_to_other.values()),
            "unlabelled": dict(self.unlabelled),
        }


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(name).strip().lower()).strip("_")


def _pick(columns: Iterable[str]) -> dict[str, str]:
    """Map our fields to the source's column names."""
    by_norm = {_norm(c): c for c in columns}
    found = {}
    for key, names in ALIASES.items():
        for n in names:
            if n in by_norm:
                found[key] = by_norm[n]
                break
    return found


def _clean_id(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _clean_text(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value).strip()


def normalise(
    records: Iterable[dict[str, Any]], space: LabelSpace, report: LoadReport
) -> pd.DataFrame:
    """Turn CFPB-style records (already renamed to our field names) into labelled rows."""
    rows = []
    for rec in records:
        report.rows_in += 1
        text = _clean_text(rec.get("text"))
        if not text:
            report.dropped["empty_text"] += 1
            continue
        try:
            team = space.team(
                _clean_text(rec.get("product_family")) or None, _clean_text(rec.get("product"))
            )
        except LabelMapError:
            report.dropped["unknown_product"] += 1
            continue
        split = _clean_text(rec.get("split")).lower()
        rows.append(
            (
                _clean_id(rec.get("complaint_id")),
                text,
                team,
                _issue(rec, space, report),
                _vulnerable(rec, "tags", space, report),
                split if split in SPLITS else "",
            )
        )
    return _frame(rows, report)


def _issue(rec: dict[str, Any], space: LabelSpace, report: LoadReport) -> str:
    """The issue label, or ``UNKNOWN`` when the record has none (no column, or empty)."""
    raw = _clean_text(rec.get("issue"))
    if not raw:
        report.unlabelled["issue"] += 1
        return UNKNOWN
    issue = space.issue(raw)
    if issue == UNKNOWN:
        # a retired name with no single successor: the row keeps its team and vulnerable labels
        report.unlabelled["issue_retired"] += 1
    elif issue == space.other_issue and raw != space.other_issue:
        report.issues_to_other[raw] += 1
    return issue


def _vulnerable(rec: dict[str, Any], key: str, space: LabelSpace, report: LoadReport) -> str:
    """``yes``/``no`` from the field (an empty ``Tags`` cell means no tag), ``UNKNOWN`` when the
    source lacks it."""
    if key not in rec:
        report.unlabelled["vulnerable"] += 1
        return UNKNOWN
    return space.vulnerable(rec[key])


def _frame(rows: Sequence[tuple[str, ...]], report: LoadReport) -> pd.DataFrame:
    report.rows_out = len(rows)
    log.info("data: %s", report.summary())
    return pd.DataFrame(rows, columns=COLUMNS, dtype=object)


def _renamed(
    frame_records: Iterable[dict[str, Any]], columns: Iterable[str]
) -> Iterable[dict[str, Any]]:
    mapping = _pick(columns)
    if "text" not in mapping:
        raise DataError(f"no complaint text column among {list(columns)}")
    for rec in frame_records:
        yield {key: rec.get(col) for key, col in mapping.items()}


def _read_table(path: Path) -> pd.DataFrame:
    try:
        parquet = path.suffix == ".parquet"
        return (
            pd.read_parquet(path)
            if parquet
            else pd.read_csv(path, dtype=str, keep_default_na=False)
        )
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc


def _dataset_parts(source: str, split: str | None = None) -> list[tuple[str, Any]]:
    """(split name, Dataset) pairs of a ``save_to_disk`` folder, else of ``load_dataset`` (``hf:``
    stripped).

    A ``DatasetDict`` gives one pair per split; a single Dataset gives ``(split or "", dataset)``.
    """
    import datasets

    name = source.removeprefix("hf:")
    try:
        if Path(name, "dataset_dict.json").is_file() or Path(name, "dataset_info.json").is_file():
            ds = datasets.load_from_disk(name)
        else:
            ds = datasets.load_dataset(name, split=split)
    except (OSError, ValueError, FileNotFoundError) as exc:
        raise DataError(f"cannot load dataset {source}: {exc}") from exc
    return list(ds.items()) if isinstance(ds, datasets.DatasetDict) else [(split or "", ds)]


def load_table(path: Path, space: LabelSpace) -> tuple[pd.DataFrame, LoadReport]:
    """CSV (optionally gzipped) or Parquet with CFPB columns."""
    df = _read_table(path)
    report = LoadReport(str(path))
    return normalise(_renamed(df.to_dict("records"), df.columns), space, report), report


def load_hf(
    source: str, space: LabelSpace, split: str | None = None
) -> tuple[pd.DataFrame, LoadReport]:
    """A ``datasets`` dataset: ``save_to_disk`` folder, local data folder, or hub id (``hf:`` prefix
    stripped).

    A ``DatasetDict`` contributes every split; when the dataset has no ``split`` column its split
    names (train/validation/test) become the row's split only if they are ours (``validation`` ->
    ``val``).
    """
    report = LoadReport(source)
    frames = []
    for part_name, part in _dataset_parts(source, split):
        ours = {"validation": "val", "valid": "val"}.get(part_name, part_name)

        def records(part: Any = part, ours: str = ours) -> Iterable[dict[str, Any]]:
            for rec in _renamed(part, part.column_names):
                rec.setdefault("split", ours)
                yield rec

        frames.append(normalise(records(), space, report))
    report.rows_out = sum(len(f) for f in frames)
    return pd.concat(frames, ignore_index=True), report


def load_feedback(path: Path, space: LabelSpace) -> tuple[pd.DataFrame, LoadReport]:
    """The promoter's JSONL export of feedback joined with complaint text; labels decided by
    people."""
    report = LoadReport(str(path))
    rows = []
    for rec in _json_lines(path):
        report.rows_in += 1
        text, team = _clean_text(rec.get("text")), _clean_text(rec.get("team"))
        if not text:
            report.dropped["empty_text"] += 1
        elif team not in space.teams:
            report.dropped["unknown_team"] += 1
        else:
            issue, vulnerable = (
                _issue(rec, space, report),
                _vulnerable(rec, "vulnerable", space, report),
            )
            rows.append((_clean_id(rec.get("complaint_id")), text, team, issue, vulnerable, ""))
    return _frame(rows, report), report


def load_texts(source: str) -> list[str]:
    """The non-empty narratives of any source ``load_source`` reads, labels ignored (masked-LM
    adaptation reads unlabelled archives such as the shared ``unlabelled.csv.gz``)."""
    kind = _kind(source)
    records: list[dict[str, Any]]
    if kind == "dataset":
        parts = _dataset_parts(source)
        records = [rec for _, part in parts for rec in _renamed(part, part.column_names)]
    elif kind == "jsonl":
        records = _json_lines(Path(source))
    else:
        df = _read_table(Path(source))
        records = list(_renamed(df.to_dict("records"), df.columns))
    texts = [t for t in (_clean_text(r.get("text")) for r in records) if t]
    log.info("data: %s: %d texts of %d records", source, len(texts), len(records))
    return texts


def load_source(source: str, space: LabelSpace) -> tuple[pd.DataFrame, LoadReport]:
    """Dispatch on the path: ``hf:`` or a dataset folder, ``.jsonl``, else a table file."""
    kind = _kind(source)
    if kind == "dataset":
        return load_hf(source, space)
    if kind == "jsonl":
        return load_feedback(Path(source), space)
    return load_table(Path(source), space)


def _kind(source: str) -> str:
    """``dataset`` (``hf:`` or a folder), ``jsonl`` or ``table``; a path that is neither is an
    error."""
    path = Path(source)
    if source.startswith("hf:") or path.is_dir():
        return "dataset"
    if not path.is_file():
        raise DataError(f"no such data source: {source}")
    return "jsonl" if path.name.endswith(".jsonl") else "table"


def _json_lines(path: Path) -> list[dict[str, Any]]:
    """The objects of a JSON Lines file, blank lines skipped; a line that is not a JSON object is an
    error naming its line number."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    records = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as exc:
            raise DataError(f"{path}:{n}: not JSON ({exc})") from exc
        if not isinstance(rec, dict):
            raise DataError(f"{path}:{n}: not a JSON object")
        records.append(rec)
    return records
