"""The accuracy bench's model cache (what it keys on, when it trains) and its TF-IDF baseline."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

import bench.accuracy as acc
from consumer.package import load_package
from trainer.labels import UNKNOWN, load_label_space
from trainer.run_config import load_config

pytestmark = pytest.mark.train


@pytest.fixture
def cfg():
    return load_config(acc.DEFAULT_CONFIG)


def test_cache_key_names_what_is_learnt_not_where_or_how(cfg) -> None:
    key = acc.cache_key(cfg, "digest-1")
    moved = cfg.replace(
        data=["/elsewhere/complaints.csv.gz"], threads=1, version="v9", checkpoint_every=7
    )
    assert acc.cache_key(moved, "digest-1") == key
    assert acc.cache_key(cfg, "digest-2") != key  # other rows
    assert acc.cache_key(cfg.replace(lr=2e-4), "digest-1") != key  # another recipe
    assert (
        acc.cache_key(cfg.replace(mlm_data=["/archive.csv.gz"]), "digest-1") != key
    )  # not in the digest
    # the lexical stage's settings count only when it is on
    off = cfg.replace(lexical_weight=0.0)
    assert acc.cache_key(
        off.replace(lexical_c=1.0, lexical_read_length=512), "digest-1"
    ) == acc.cache_key(off, "digest-1")
    assert acc.cache_key(off, "digest-1") != key  # the default has it on
    assert acc.cache_key(cfg.replace(lexical_c=1.0), "digest-1") != key


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(acc, "CACHE", tmp_path)
    return tmp_path


def fake_training(monkeypatch: pytest.MonkeyPatch, package: Path) -> list[Path]:
    """Replace the pipeline's ``run`` by a copy of ``package`` into the run folder; returns the run
    folders."""
    import trainer.train_command

    calls: list[Path] = []

    def run(_cfg, out: Path) -> None:
        calls.append(out)
        shutil.copytree(package, out / "package")

    monkeypatch.setattr(trainer.train_command, "run", run)
    return calls


def test_default_package_trains_once_then_reuses_the_cached_copy(
    cfg, cache, tiny, monkeypatch
) -> None:
    calls = fake_training(monkeypatch, tiny)
    first = acc.default_package(cfg, "digest-1")
    assert first.digest == load_package(tiny).digest
    assert calls == [cache / "runs" / f"default-{acc.cache_key(cfg, 'digest-1')}"]
    shutil.rmtree(calls[0])  # the copy under models/ is enough from now on
    assert acc.default_package(cfg, "digest-1").digest == first.digest
    assert len(calls) == 1
    assert (cache / "models" / "default.key").read_text().strip() == acc.cache_key(cfg, "digest-1")


def test_default_package_retrains_for_other_data_or_when_asked(
    cfg, cache, tiny, tiny2, monkeypatch
) -> None:
    calls = fake_training(monkeypatch, tiny)
    acc.default_package(cfg, "digest-1")
    acc.default_package(cfg, "digest-2")  # other rows: another key, another run
    assert len(calls) == 2 and calls[0] != calls[1]
    shutil.rmtree(calls[1])
    calls2 = fake_training(monkeypatch, tiny2)
    assert acc.default_package(cfg, "digest-2", retrain=True).digest == load_package(tiny2).digest
    assert len(calls2) == 1


def test_default_package_adopts_a_finished_run_without_training(
    cfg, cache, tiny, monkeypatch
) -> None:
    calls = fake_training(monkeypatch, tiny)
    run_dir = cache / "runs" / f"default-{acc.cache_key(cfg, 'digest-1')}"
    shutil.copytree(tiny, run_dir / "package")  # e.g. a job interrupted after its run was complete
    assert acc.default_package(cfg, "digest-1").digest == load_package(tiny).digest
    assert calls == []


def frame(n: int) -> pd.DataFrame:
    """Separable rows: each team and issue has its own words; vulnerable follows 'veteran'."""
    rows = []
    for i in range(n):
        if i % 2:
            rows.append(
                ("my credit card was charged a fee twice", "cards", "Fees or interest", "no")
            )
        else:
            text = "a veteran here, the collector calls me every day about a debt"
            rows.append((text, "collections", "Communication tactics", "yes"))
    return pd.DataFrame(rows, columns=["text", "team", "issue", "vulnerable"])


def test_tfidf_baseline_learns_and_scores_only_labelled_rows(cfg) -> None:
    space = load_label_space()
    train = frame(40)
    train.loc[:9, "issue"] = UNKNOWN  # partial labels: these rows train team and vulnerable only
    test = frame(10)
    test.loc[:3, "vulnerable"] = UNKNOWN
    baseline = acc.TfidfBaseline(space, cfg).fit(train, frame(20))
    figures = baseline.figures(test)
    assert figures["team"]["accuracy"] == 1.0 and figures["team"]["n"] == 10
    assert figures["issue"]["accuracy"] == 1.0
    assert figures["vulnerable"]["n"] == 6
    assert figures["vulnerable"]["recall"] == 1.0 and figures["vulnerable"]["precision"] == 1.0
    assert 0.0 <= baseline.threshold <= 1.0


def test_table_lists_every_column_and_the_human_figures() -> None:
    metrics = {"accuracy": 0.5, "macro_f1": 0.25, "recall": 0.75, "precision": 0.125}
    results = {
        name: {t: metrics for t in ("team", "issue", "vulnerable")}
        for name in ("model:test", "tfidf")
    }
    results["human"] = acc.HUMAN
    lines = acc.table(results).splitlines()
    assert "model:test" in lines[0] and "tfidf" in lines[0] and "human" in lines[0]
    team = next(line for line in lines if line.startswith("team") and "accuracy" in line)
    assert team.split()[-3:] == ["0.500", "0.500", "0.80"]
    vulnerable = next(line for line in lines if line.startswith("vulnerable") and "recall" in line)
    assert vulnerable.split()[-1] == "0.60"
