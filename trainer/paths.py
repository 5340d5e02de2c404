"""Where the shared CFPB data lives: ``CA_DATA`` when set, else ``../shared/data/cfpb`` beside the
repository."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(
    os.environ.get("CA_DATA", REPO.parent / "shared" / "data" / "cfpb" / "complaints.csv.gz")
)
