"""``python -m trainer tiny``: a random-weight package that the consumer can load and verify."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from consumer.errors import IntegrityError
from consumer.package import load_package
from trainer.labels import load_label_space
from trainer.scoring import Scorer

pytestmark = pytest.mark.train


@pytest.fixture(scope="module")
def pkg_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from trainer.tiny import build_tiny

    out = tmp_path_factory.mktemp("tiny") / "pkg"
    build_tiny(out, seed=3)
    return out


def test_package_verifies_and_names_heads(pkg_dir: Path) -> None:
    pkg = load_package(pkg_dir)
    assert pkg.ref == "tiny-minilm@tiny-s3"
    assert pkg.manifest["onnx"]["quantization"] == "int8-dynamic"
    assert (pkg_dir / "model.fp32.onnx").is_file()
    # per-channel int8 with the feed-forward down-projections (one per layer) kept in fp32
    assert pkg.manifest["onnx"]["parity"]["int8_recipe"] == "per_channel;fp32_ffn_out=2"
    space = load_label_space()
    heads = pkg.heads
    assert set(heads) == {"team", "issue", "vulnerable"}
    assert heads["team"].labels == space.teams
    assert heads["issue"].labels == space.issue_labels
    assert heads["vulnerable"].labels == ("no", "yes")
    assert heads["vulnerable"].kind == "binary" and heads["vulnerable"].positive_label == "yes"
    assert pkg.manifest["lineage"]["label_maps_version"] == space.version


def test_onnx_interface_and_dynamic_shapes(pkg_dir: Path) -> None:
    pkg = load_package(pkg_dir)
    sess = ort.InferenceSession(str(pkg.onnx_path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input_ids", "attention_mask"]
    assert all(i.type == "tensor(int64)" for i in sess.get_inputs())
    assert [o.name for o in sess.get_outputs()] == [
        "team_logits",
        "issue_logits",
        "vulnerable_logits",
    ]
    for batch, seq in ((1, 5), (3, 17)):
        ids = np.ones((batch, seq), dtype=np.int64)
        out = sess.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})
        sizes = [len(pkg.heads[t].labels) for t in ("team", "issue", "vulnerable")]
        assert [o.shape for o in out] == [(batch, n) for n in sizes]
        assert all(o.dtype == np.float32 for o in out)


def test_scorer_runs_on_real_tokenizer(pkg_dir: Path) -> None:
    scores = Scorer(load_package(pkg_dir)).score(["My card was charged twice.", "x " * 400])
    assert scores.probs["issue"].shape == (2, len(load_package(pkg_dir).heads["issue"].labels))


def test_same_seed_same_digest_other_seed_other_version(pkg_dir: Path, tmp_path: Path) -> None:
    from trainer.tiny import build_tiny

    assert build_tiny(tmp_path / "again", seed=3).digest == load_package(pkg_dir).digest
    other = build_tiny(tmp_path / "other", seed=4)
    assert other.version == "tiny-s4" and other.digest != load_package(pkg_dir).digest


def test_one_changed_byte_is_refused(pkg_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(pkg_dir, copy)
    raw = bytearray((copy / "model.onnx").read_bytes())
    raw[len(raw) // 2] ^= 0x01
    (copy / "model.onnx").write_bytes(bytes(raw))
    with pytest.raises(IntegrityError):
        load_package(copy)
