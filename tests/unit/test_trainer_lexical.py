"""``trainer.lexical``: the TF-IDF features the graph computes are the ones the wide model was
fitted on, the graph's re-cut of the ids is the one the encoder trains on (the consumer's encoder
at the encoder's length), and the wide-and-deep module exports with parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trainer.labels import IGNORE

pytestmark = pytest.mark.train

VOCAB, BUCKETS, SPECIAL = (
    50,
    64,
    {0, 1, 2},
)  # 0 pads, 1 opens, 2 closes a row, like [PAD] [CLS] [SEP]


def rows(seed: int, n: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    # a special id inside a row too ([UNK]-like), which must count for nothing
    return [
        [1, *rng.integers(2, VOCAB, size=int(rng.integers(1, 30))).tolist(), 2] for _ in range(n)
    ]


def padded(batch: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    width = max(len(r) for r in batch)
    ids, mask = (
        np.zeros((len(batch), width), dtype=np.int64),
        np.zeros((len(batch), width), dtype=np.int64),
    )
    for i, r in enumerate(batch):
        ids[i, : len(r)], mask[i, : len(r)] = r, 1
    return ids, mask


def fitted(
    train: list[list[int]], vocab: int, buckets: int, special: set[int]
) -> tuple[object, object]:
    """The fitted features and the training rows' counts, as the pipeline makes them."""
    from trainer.lexical import Features, count

    counts = count(train, vocab, buckets, special)
    return Features.fit(counts, vocab, buckets, special), counts


def test_graph_features_equal_the_features_the_wide_model_was_fitted_on() -> None:
    import torch

    from trainer.lexical import LexicalHead

    train = rows(0, 40)
    feats, _ = fitted(train, VOCAB, BUCKETS, SPECIAL)
    assert (feats.idf[sorted(SPECIAL)] == 0).all()  # specials are never counted, so never in 2 rows
    wide = {"t": (np.zeros((feats.size, 3), dtype=np.float32), np.zeros(3, dtype=np.float32))}
    head = LexicalHead(feats, wide)
    batch = rows(1, 7)
    ids, mask = padded(batch)
    got = head.features(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    want = feats.transform(feats.counts(batch)).toarray()
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert np.allclose(np.linalg.norm(want, axis=1), 1.0)
    # a pair counts once per occurrence and hashes past the vocabulary
    counts = feats.counts([[1, 5, 6, 5, 6, 2]]).toarray()[0]
    assert counts[5] == 2 and counts[6] == 2 and counts[VOCAB + (5 * 1_000_003 + 6) % BUCKETS] == 2
    assert (
        counts[:VOCAB].sum() == 4 and counts.sum() == 4 + 3
    )  # pairs 5-6, 6-5, 5-6; none with [CLS]/[SEP]


def reading(folder: Path, max_length: int) -> dict[str, object]:
    """How to draft a package in ``folder`` (MiniLM's tokenizer, written here) read up to
    ``max_length`` ids: ``packaging.draft``'s keyword arguments."""
    from trainer import packaging
    from trainer.model import default_base_model

    if not (folder / packaging.TOKENIZER_FILE).is_file():
        packaging.write_tokenizer(default_base_model() / "tokenizer.json", folder, max_length)
    return {"max_length": max_length, "truncation": "head", "name": "wide-and-deep", "version": "0"}


def test_the_graphs_cut_is_the_tokenizers_head_truncation(tmp_path: Path) -> None:
    from trainer import packaging
    from trainer.lexical import head_cut
    from trainer.step_loop import pad
    from trainer.training_tokens import TrainingTokens

    texts = ["short one", "a credit card late fee " * 20, "exactly a few words here", "debt " * 400]
    tasks = {"t": ("a", "b")}
    long = TrainingTokens(packaging.draft(tmp_path, tasks, **reading(tmp_path, 512)))
    short = TrainingTokens(packaging.draft(tmp_path, tasks, **reading(tmp_path, 16)))
    end_id = long.token_id("[SEP]")
    assert end_id is not None
    ids, mask = pad(long.encode(texts), 0)
    cut_ids, cut_mask = head_cut(ids, mask, 16, end_id)
    for i, want in enumerate(short.encode(texts)):
        n = int(cut_mask[i].sum())
        assert cut_ids[i, :n].tolist() == want and not cut_mask[i, n:].any()
    # a batch narrower than the cut is left as it is
    narrow = pad(long.encode(texts[:1]), 0)
    same, _ = head_cut(narrow[0], narrow[1], 16, 102)
    assert same.tolist() == narrow[0].tolist()


def test_wide_model_fills_labels_without_training_rows_and_two_class_tasks() -> None:
    from trainer.lexical import MISSING_LOGIT, fit_wide

    train = rows(2, 60)
    feats, counts = fitted(train, VOCAB, BUCKETS, SPECIAL)
    # rows with a given id are class 1: a signal the model can learn
    multi = np.array([1 if 7 in r else 0 for r in train])
    binary = np.array([1 if 9 in r else 0 for r in train])
    binary[:5] = IGNORE  # rows not labelled for the task are left out, not read as a class
    wide = fit_wide(
        feats, counts, {"multi": multi, "binary": binary}, {"multi": 4, "binary": 2}, c=8.0
    )
    w, b = wide["multi"]
    assert w.shape == (feats.size, 4) and (b[2:] == MISSING_LOGIT).all() and not w[:, 2:].any()
    assert w[7, 1] > w[7, 0]  # the id that marks class 1 votes for it
    w2, b2 = wide["binary"]
    assert not w2[:, 0].any() and b2[0] == 0.0 and w2[9, 1] > 0


def test_wide_and_deep_exports_with_parity_on_texts_longer_than_the_encoder_reads(
    tmp_path: Path,
) -> None:
    import onnxruntime as ort
    import torch

    from trainer import export, model, packaging
    from trainer.labels import load_label_space
    from trainer.lexical import LexicalHead, WideAndDeep, fit_wide
    from trainer.step_loop import pad
    from trainer.tiny import CHECK_TEXTS
    from trainer.training_tokens import TrainingTokens

    torch.set_num_threads(1)
    labels = load_label_space().tasks
    deep = model.build(model.tiny_encoder(0), labels, 0).eval()
    fp32, int8 = packaging.draft_graphs(tmp_path, labels, **reading(tmp_path, 96))
    enc = TrainingTokens(fp32)
    texts = [
        t * k for t in CHECK_TEXTS for k in (1, 3)
    ]  # most longer than the 16 ids the encoder reads
    train = enc.encode(texts)
    feats, counts = fitted(train, enc.vocab_size, 1024, enc.special_ids)
    rng = np.random.default_rng(0)
    y = {t: rng.integers(0, len(ls), size=len(train)) for t, ls in labels.items()}
    wide = LexicalHead(
        feats, fit_wide(feats, counts, y, {t: len(ls) for t, ls in labels.items()}, c=1.0)
    )
    end_id = enc.token_id("[SEP]")
    assert end_id is not None
    net = WideAndDeep(deep, wide, 0.5, 16, end_id).eval()
    export.export_fp32(net, fp32.onnx_path)
    assert export.check_parity(net, fp32, texts) <= export.PARITY_TOLERANCE
    sess = ort.InferenceSession(str(fp32.onnx_path), providers=["CPUExecutionProvider"])
    ids, mask = pad(enc.encode(texts[:3]), 0)
    out = sess.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    # outputs are mixed log-probabilities: finite, and each row's exp sums to at most 1
    assert all(np.isfinite(o).all() and (np.exp(o).sum(axis=1) <= 1 + 1e-5).all() for o in out)
    export.quantize_int8(fp32.onnx_path, int8.onnx_path)
    agree = export.int8_agreement(fp32, int8, texts)
    assert min(agree.values()) >= 0.5


def test_a_mix_needs_a_weight_strictly_between_0_and_1() -> None:
    from consumer.errors import ConfigError
    from trainer import model
    from trainer.lexical import LexicalHead, WideAndDeep

    deep = model.build(model.tiny_encoder(0), {"t": ("a", "b")}, 0)
    feats, _ = fitted(rows(3, 5), VOCAB, BUCKETS, SPECIAL)
    wide = LexicalHead(
        feats, {"t": (np.zeros((feats.size, 2), dtype=np.float32), np.zeros(2, dtype=np.float32))}
    )
    for weight in (0.0, 1.0):
        with pytest.raises(ConfigError, match="lexical_weight"):
            WideAndDeep(deep, wide, weight, 16, 2)


def test_lexical_settings_are_checked_when_the_config_is_made() -> None:
    from consumer.errors import ConfigError
    from trainer.run_config import TrainConfig

    on = TrainConfig(lexical_weight=0.5, max_length=128, lexical_read_length=1024)
    assert on.serving_length == 1024 and TrainConfig().serving_length == TrainConfig().max_length
    for bad, match in (
        ({"lexical_weight": 1.0}, "lexical_weight"),
        ({"lexical_weight": -0.1}, "lexical_weight"),
        ({"lexical_weight": 0.5, "truncation": "head_tail"}, "truncation 'head'"),
        (
            {"lexical_weight": 0.5, "lexical_read_length": 64, "max_length": 128},
            "lexical_read_length",
        ),
    ):
        with pytest.raises(ConfigError, match=match):
            TrainConfig(**bad)  # type: ignore[arg-type]


def test_every_value_the_sweep_can_pick_makes_a_valid_config_with_the_defaults() -> None:
    """A sweep run is ``train.default.yaml`` plus sampled flags: each one must be a setting the
    default accepts, or the agent's Job fails at start (as head_tail would with the lexical mix
    on)."""
    import yaml

    from trainer.run_config import load_config

    root = Path(__file__).parents[2] / "trainer" / "config"
    sweep = yaml.safe_load((root / "sweep.yaml").read_text())
    default = root / "train.default.yaml"
    for name, space in sweep["parameters"].items():
        values = space.get("values") or [space["min"], space["max"]]
        for value in values:
            assert getattr(load_config(default, **{name: value}), name) == value, (name, value)


def test_a_recipe_by_name_is_the_shipped_file_and_the_sweep_names_one() -> None:
    import yaml

    from consumer.errors import ConfigError
    from trainer.run_config import RECIPES, load_config, recipe_path

    assert recipe_path("default") == RECIPES / "train.default.yaml"
    assert load_config("default") == load_config(RECIPES / "train.default.yaml")
    assert recipe_path("some/file.yaml") == Path("some/file.yaml")
    with pytest.raises(ConfigError, match="no training recipe named 'nope'"):
        recipe_path("nope")
    command = yaml.safe_load((RECIPES / "sweep.yaml").read_text())["command"]
    recipe = command[command.index("--config") + 1]
    assert recipe_path(recipe).is_file(), (
        "the sweep's recipe resolves inside any install (the trainer image)"
    )
