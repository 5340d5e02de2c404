"""The whole retraining job on CPU, minutes not hours: a few hundred real CFPB rows, a few steps of
the real MiniLM encoder, then export (optimum), parity, int8 + agreement, calibration, package, W&B
(offline), compare. Needs no broker: marked ``train`` only (the train extra installed)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from consumer.package import load_package
from trainer.paths import DEFAULT_DATA
from trainer.run_config import TrainConfig

pytestmark = [pytest.mark.train, pytest.mark.timeout(300)]

DATA = DEFAULT_DATA


def short_run(**changes: object) -> TrainConfig:
    """A few steps of the real MiniLM on a few real rows per split: minutes, not hours."""
    cfg = TrainConfig(
        data=(str(DATA),), batch_size=16, checkpoint_every=0, max_length=64, limit_rows=80
    )
    return cfg.replace(**changes)


def smallest_run(**changes: object) -> TrainConfig:
    """The fewest rows, tokens and steps that still pass every stage, without W&B: for tests of one
    stage."""
    cfg = short_run(
        limit_rows=48,
        max_length=32,
        max_steps=2,
        check_rows=16,
        min_int8_agreement=0.0,
        wandb_mode="disabled",
    )
    return cfg.replace(**changes)


@pytest.mark.skipif(not DATA.is_file(), reason="shared CFPB data not present")
def test_train_export_package_compare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from trainer import splits, train_command
    from trainer.cli import main

    asked: list[str] = []
    real = splits.training_rows
    monkeypatch.setattr(splits, "training_rows", lambda df, s: (asked.append(s), real(df, s))[1])
    monkeypatch.setenv("WANDB_SILENT", "true")
    # everything wandb writes (its staging copies of artifact files too) lands under tmp_path
    for var in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_ARTIFACT_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home" / var.lower()))
    cfg = short_run(
        max_steps=4,
        check_rows=32,
        min_int8_agreement=0.5,
        wandb_mode="offline",
        version="e2e-1",
        name="e2e-minilm",
    )
    pkg = train_command.run(cfg, tmp_path / "run")

    assert sorted(set(asked)) == ["test", "train", "val"]  # the holdout is never asked for
    assert pkg.ref == "e2e-minilm@e2e-1" and load_package(pkg.path).digest == pkg.digest
    m = pkg.manifest
    assert (
        m["onnx"]["quantization"] == "int8-dynamic"
        and (pkg.path / m["onnx"]["fp32_file"]).is_file()
    )
    assert m["onnx"]["parity"]["max_abs_diff"] <= m["onnx"]["parity"]["tolerance"]
    assert m["onnx"]["parity"]["int8_label_agreement"] >= 0.5
    assert 0.0 <= m["tasks"]["vulnerable"]["threshold"] <= 1.0
    assert all(0.0 <= m["tasks"][t]["review_threshold"] <= 1.0 for t in ("team", "issue"))
    assert m["lineage"]["dataset_digest"] and len(m["lineage"]["dataset_digest"]) == 64
    assert m["lineage"]["wandb_run"]
    assert {"val", "test"} <= set(m["metrics"]) and "holdout" not in m["metrics"]
    report = json.loads((tmp_path / "run" / "train_report.json").read_text())
    assert report["train"]["steps"] == 4
    assert list((tmp_path / "run" / "wandb").rglob("*.wandb"))  # the offline run was recorded
    _assert_no_complaint_text(tmp_path, DATA)

    sess = ort.InferenceSession(str(pkg.onnx_path), providers=["CPUExecutionProvider"])
    ids = np.array([[101, 2026, 4003, 102]], dtype=np.int64)
    outs = sess.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})
    assert [o.shape[1] for o in outs] == [
        len(pkg.heads[t].labels) for t in ("team", "issue", "vulnerable")
    ]

    rc = main(
        [
            "compare",
            "--champion",
            str(pkg.path),
            "--challenger",
            str(pkg.path),
            "--limit",
            "20",
            "--out",
            str(tmp_path / "cmp"),
        ]
    )
    assert rc == 0
    result = json.loads((tmp_path / "cmp" / "report.json").read_text())
    assert all(r["p_value"] == 1.0 for r in result["mcnemar"].values())  # a model against itself


@pytest.mark.skipif(not DATA.is_file(), reason="shared CFPB data not present")
def test_a_soup_publishes_the_mean_of_its_ingredients(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``soup_seeds``: each ingredient trains from the main run's initialisation in its own
    checkpoint folder, and the published weights are the mean of the ingredients' final weights."""
    import torch

    from trainer import train_command
    from trainer.model import MultiTaskModel

    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = smallest_run(soup_seeds=(14,))
    run = tmp_path / "run"
    train_command.run(cfg, run)

    soup = json.loads((run / "train_report.json").read_text())["train"]["soup"]
    assert list(soup["ingredients"]) == ["13", "14"] and all(
        i["steps"] == 2 for i in soup["ingredients"].values()
    )
    folders = ("checkpoints", "checkpoints-soup-14")
    finals = [torch.load(run / d / "last.pt", weights_only=False)["model"] for d in folders]
    published = MultiTaskModel.load(run / "work").state_dict()
    moved = 0
    for name, tensor in published.items():
        a, b = finals[0][name], finals[1][name]
        if tensor.is_floating_point():
            torch.testing.assert_close(tensor, (a + b) / 2, msg=name)
            moved += not torch.equal(a, b)
    assert (
        moved > 0
    )  # the ingredients differ (batch order, dropout), so the soup is not one of them
    # same initialisation: the frozen word embeddings are the pretrained ones in both
    emb = "encoder.embeddings.word_embeddings.weight"
    assert torch.equal(finals[0][emb], finals[1][emb])


@pytest.mark.skipif(not DATA.is_file(), reason="shared CFPB data not present")
def test_masked_lm_adaptation_trains_the_encoder_the_fine_tune_starts_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``mlm_epochs``: the encoder is adapted on the training texts plus an unlabelled source, never
    on an evaluation text; the fine-tune starts from the adapted weights; the manifest records the
    adaptation; a resumed run reuses the adapted encoder instead of adapting again."""
    import pandas as pd
    import torch

    from trainer import pretrain, step_loop, train_command
    from trainer.model import MultiTaskModel, default_base_model, load_encoder
    from trainer.tracking import Tracker

    shared = pd.read_csv(DATA)
    val_text = shared.loc[shared["split"] == "val", "Consumer complaint narrative"].iloc[0]
    archive = tmp_path / "archive.csv"
    # an archive that also holds a validation text: it must not reach the encoder
    pd.DataFrame(
        {"Consumer complaint narrative": ["My XXXX card was charged twice.", val_text, ""]}
    ).to_csv(archive, index=False)
    seen: list[str] = []
    real_corpus = pretrain.corpus

    def spy(*args: Iterable[str]) -> pretrain.Corpus:
        texts = real_corpus(*args)
        seen.extend(texts.texts)
        return texts

    monkeypatch.setattr(pretrain, "corpus", spy)
    steps: list[tuple[str, int | None]] = []
    monkeypatch.setattr(
        Tracker, "log", lambda self, m, step=None: steps.extend((k, step) for k in m)
    )
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setattr(step_loop, "LOG_EVERY", 4)  # a loss point within these few steps
    # 2 epochs of ceil(49 / 16) = 4 batches, then 4 fine-tune steps: sized for a busy 2-core host
    cfg = smallest_run(max_steps=4, mlm_epochs=2, mlm_data=str(archive))
    run = tmp_path / "run"
    pkg = train_command.run(cfg, run)

    assert "My XXXX card was charged twice." in seen and val_text not in seen
    summary = json.loads((run / "checkpoints-mlm" / pretrain.DONE_FILE).read_text())
    assert summary["steps"] == 8 and summary["texts"] == len(seen)
    # W&B steps only grow: the fine-tune's first loss point comes after the stage's last
    assert ("mlm/loss", 8) in steps and ("train/loss", 12) in steps
    assert max(s for k, s in steps if k == "mlm/loss") < min(
        s for k, s in steps if k == "train/loss"
    )
    assert summary["final_loss"] > 0
    adaptation = pkg.manifest["lineage"]["adaptation"]
    assert (
        adaptation["method"] == "masked-lm"
        and adaptation["corpus_digest"] == summary["corpus_digest"]
    )
    assert adaptation["sources"] == [str(archive)]
    assert "masked-LM adaptation" in pkg.manifest["description"]

    base = load_encoder(default_base_model()).state_dict()
    adapted = load_encoder(run / "checkpoints-mlm" / "encoder").state_dict()
    layer = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(base[layer], adapted[layer])  # the stage trained the encoder
    assert torch.equal(
        base["embeddings.word_embeddings.weight"], adapted["embeddings.word_embeddings.weight"]
    )
    tuned = MultiTaskModel.load(run / "work").state_dict()
    # the fine-tune moved on from the adapted weights, not from the base ones: it stays closer to
    # them
    assert (tuned["encoder." + layer] - adapted[layer]).norm() < (
        tuned["encoder." + layer] - base[layer]
    ).norm()

    stamp = (run / "checkpoints-mlm" / pretrain.DONE_FILE).stat().st_mtime_ns
    train_command.run(cfg, run, resume=True)
    assert (
        run / "checkpoints-mlm" / pretrain.DONE_FILE
    ).stat().st_mtime_ns == stamp  # reused, not redone


@pytest.mark.skipif(not DATA.is_file(), reason="shared CFPB data not present")
def test_wide_and_deep_package_reads_past_the_encoder_and_the_consumer_serves_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``lexical_weight``: the package's tokenizer reads ``lexical_read_length`` ids, the graph
    mixes the encoder on the first ``max_length`` with the TF-IDF model on all of them, the manifest
    records the mix, and the consumer's own inference serves it, with words past the encoder's cut
    changing the decision."""
    from consumer.inference import OnnxModel, TextEncoder
    from trainer import train_command

    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = smallest_run(lexical_weight=0.5, lexical_read_length=256, lexical_buckets=4096)
    pkg = train_command.run(cfg, tmp_path / "run")

    assert pkg.max_length == 256 and pkg.truncation == "head"
    facts = pkg.manifest["lineage"]["lexical"]
    assert facts["weight"] == 0.5 and facts["encoder_length"] == 32 and facts["features_used"] > 0
    assert "TF-IDF" in pkg.manifest["description"]
    assert (
        pkg.manifest["onnx"]["parity"]["max_abs_diff"]
        <= pkg.manifest["onnx"]["parity"]["tolerance"]
    )

    served = OnnxModel(pkg)
    encoder = TextEncoder(pkg)
    opening = "I am writing about my account. " * 8  # longer than the 32 ids the encoder reads
    texts = [
        opening + "student loan servicer forbearance " * 20,
        opening + "debt collector calls " * 20,
    ]
    encoded = encoder.encode(texts)
    assert all(len(e.ids) > 32 for e in encoded)
    probs = served.run(encoded)
    for task, p in probs.items():
        assert np.allclose(p.sum(axis=1), 1.0, atol=1e-5), task
    # the encoder sees the same 32 ids of both: only the lexical model can tell them apart
    assert not np.allclose(probs["team"][0], probs["team"][1])


def _assert_no_complaint_text(root: Path, data: Path) -> None:
    """Nothing the run wrote for W&B (the offline run, wandb's staging and cache) holds the data
    file or a narrative: W&B gets the dataset's digest, name, size and sha256 only, by default."""
    import gzip
    import hashlib

    import pandas as pd

    digest = hashlib.sha256(data.read_bytes()).hexdigest()
    texts = pd.read_csv(data, usecols=["Consumer complaint narrative"], nrows=200)
    # long, distinctive stretches of real narratives, as bytes
    needles = [t[:60].encode() for t in texts.iloc[:, 0].dropna() if len(t) > 200][:100]
    assert len(needles) > 50
    dirs = (root / "run" / "wandb", root / "wandb-home")
    written = [p for d in dirs for p in d.rglob("*") if p.is_file()]
    assert written
    for path in written:
        raw = path.read_bytes()
        assert hashlib.sha256(raw).hexdigest() != digest, f"{path} is a copy of the data file"
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        found = [n for n in needles if n in raw]
        assert not found, f"{path} holds complaint text: {found[0][:30]!r}..."
