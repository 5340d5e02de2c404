"""Training configuration: one frozen dataclass, from a YAML/JSON file, overridden by CLI flags.

``trainer/config/train.default.yaml`` holds the defaults used for the published model; W&B sweeps
override the same field names (``trainer/config/sweep.yaml``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from consumer.errors import ConfigError
from trainer.paths import DEFAULT_DATA

# Fields that hold data sources: one path or a list of them becomes a tuple, and each is a
# repeatable flag.
SOURCE_FIELDS = ("data", "mlm_data")


# "guarantee": trainer.selective (the default); the others: trainer.calibrate's point estimates
VULNERABLE_POLICIES = ("guarantee", "recall", "fbeta", "precision")


@dataclass(frozen=True)
class TrainConfig:
    data: tuple[str, ...] = (str(DEFAULT_DATA),)
    base_model: str = ""  # empty: the bundled all-MiniLM-L6-v2 (trainer.model.default_base_model)
    name: str = "complaints-minilm"
    version: str = ""  # empty: <UTC timestamp>-s<seed>
    max_length: int = 256
    truncation: str = "head"
    epochs: float = 3.0
    max_steps: int = 0  # >0: stop after this many optimiser steps (tests, smoke runs)
    batch_size: int = 16
    # Each optimiser batch is computed in pieces of at most this many padded tokens,
    # gradients accumulated: the same update, without the CPU's cost cliff above ~4k tokens a pass
    # (trainer.fit). 0: no split.
    micro_batch_tokens: int = 4096
    lr: float = 1e-4  # encoder
    head_lr: float = 1e-3  # freshly initialised heads learn faster
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    dropout: float = 0.1
    # word embeddings stay pretrained (training them: no gain on val)
    freeze_embeddings: bool = True
    # "auto": bfloat16 autocast when the CPU has native bf16 (AVX512-BF16/AMX), "on", "off"
    bf16: str = "auto"
    # 0: none, 1: inverse frequency ("balanced"), 0.5: its square root
    class_weight_power: float = 0.5
    task_weights: dict[str, float] = field(
        default_factory=lambda: {"team": 1.0, "issue": 1.0, "vulnerable": 1.0}
    )
    label_smoothing: float = 0.0  # PyTorch's, per task loss
    # >0: LP-FT, fit the heads on frozen features this many epochs before fine-tuning
    probe_epochs: int = 0
    # More fine-tunes from the same initialisation, one per batch-order seed, averaged with the main
    # run (a uniform model soup): n+1 times the training time, the same serving cost. Empty: one
    # run.
    soup_seeds: tuple[int, ...] = ()
    # >0: continue pretraining the encoder with masked-LM on complaint texts (the training rows' own
    # plus mlm_data: unlabelled sources, e.g. the bank's archive) for this many epochs before the
    # fine-tune.
    mlm_epochs: float = 0.0
    mlm_data: tuple[str, ...] = ()
    mlm_probability: float = 0.15
    # >0: wide and deep (trainer.lexical). Each task's output mixes the encoder's log-probabilities
    # with a TF-IDF logistic regression's over the first lexical_read_length wordpieces (the whole
    # of most texts) with this weight; the encoder still reads max_length. The package's tokenizer
    # then reads lexical_read_length.
    lexical_weight: float = 0.0
    lexical_read_length: int = 1024
    lexical_buckets: int = 262_144  # hashed slots for pairs of adjacent wordpieces
    lexical_c: float = 8.0  # inverse L2 strength of the logistic regressions (scikit-learn's C)
    limit_rows: int = 0  # >0: at most this many rows per split (tests, smoke runs)
    # >0: stop training after this long (a Job deadline guard) and publish what is trained
    max_minutes: float = 0
    checkpoint_every: int = 200  # optimiser steps between checkpoints (also one at each epoch end)
    seed: int = 13
    threads: int = 2
    # Selective automation (trainer/selective.py): per multiclass head, the accuracy the automated
    # share must reach at ``guarantee_confidence``; the human team's figures by default
    review_target_accuracy: dict[str, float] = field(
        default_factory=lambda: {"team": 0.80, "issue": 0.71}
    )
    guarantee_confidence: float = 0.95
    # the strictest share the multiclass test starts from (trainer/selective.py says why not 1%)
    guarantee_min_coverage: float = 0.05
    # "guarantee" (recall >= vulnerable_min_recall at guarantee_confidence, selective.py), or the
    # point estimates of calibrate.py: "recall" (reach a recall on val), "fbeta", "precision"
    vulnerable_policy: str = "guarantee"
    vulnerable_min_recall: float = 0.6  # the human team's recall
    vulnerable_beta: float = 2.0
    vulnerable_min_precision: float = 0.5
    top_k: int = 3
    quantize: bool = True
    min_int8_agreement: float = 0.95  # per task, on check_rows validation texts
    parity_tolerance: float = 1e-4
    check_rows: int = 512  # validation rows used for the parity and int8 checks
    wandb_project: str = "complaints-allocation"
    # Attach the training files (customers' own words) to the W&B dataset artifact. Only when the
    # W&B server is the bank's own: else W&B gets each file's name, size and sha256, never text.
    wandb_upload_data: bool = False
    # "", "online", "offline" or "disabled"; empty: wandb's own default (WANDB_MODE)
    wandb_mode: str = ""
    registry_collection: str = "wandb-registry-model/complaints-allocation"

    def __post_init__(self) -> None:
        seeds = self.soup_seeds
        if isinstance(seeds, str | int) or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in seeds
        ):
            raise ConfigError(f"soup_seeds must be a list of integer seeds, got {seeds!r}")
        if len(set(seeds)) != len(seeds) or self.seed in seeds:
            # the same seed trains the same model again: an ingredient that adds nothing but time
            raise ConfigError(
                f"soup_seeds {list(seeds)} must be distinct and differ from seed {self.seed}"
            )
        object.__setattr__(self, "soup_seeds", tuple(seeds))  # YAML and JSON give lists
        if not 0 < self.mlm_probability < 1:
            raise ConfigError(f"mlm_probability must be in (0, 1), got {self.mlm_probability}")
        if self.mlm_epochs < 0:
            raise ConfigError(f"mlm_epochs must be >= 0, got {self.mlm_epochs}")
        if not 0 <= self.lexical_weight < 1:
            raise ConfigError(f"lexical_weight must be in [0, 1), got {self.lexical_weight}")
        if self.lexical_weight and self.truncation != "head":
            # the graph re-cuts the longer read for the encoder, which is the head policy only
            raise ConfigError(
                f"lexical_weight > 0 needs truncation 'head', not {self.truncation!r}"
            )
        if self.lexical_weight and self.lexical_read_length < self.max_length:
            raise ConfigError(
                f"lexical_read_length {self.lexical_read_length} must be >= max_length "
                f"{self.max_length}"
            )
        self._check_thresholds()

    def _check_thresholds(self) -> None:
        """The decision settings fail here, not at calibration after the whole fine-tune (a
        misspelt policy used to fall back to F-beta without a word)."""
        if self.vulnerable_policy not in VULNERABLE_POLICIES:
            raise ConfigError(
                f"vulnerable_policy must be one of {list(VULNERABLE_POLICIES)}, "
                f"got {self.vulnerable_policy!r}"
            )
        if not 0.5 <= self.guarantee_confidence < 1:
            raise ConfigError(
                f"guarantee_confidence must be in [0.5, 1), got {self.guarantee_confidence}"
            )
        if not 0 < self.guarantee_min_coverage <= 1:
            raise ConfigError(
                f"guarantee_min_coverage must be in (0, 1], got {self.guarantee_min_coverage}"
            )
        targets = {**self.review_target_accuracy, "vulnerable": self.vulnerable_min_recall}
        bad = {task: t for task, t in targets.items() if not 0 < t < 1}
        if bad:
            raise ConfigError(f"accuracy and recall targets must be in (0, 1), got {bad}")

    @property
    def serving_length(self) -> int:
        """Ids per text the package's tokenizer gives the graph: the lexical model's read, else the
        encoder's."""
        return self.lexical_read_length if self.lexical_weight else self.max_length

    def replace(self, **changes: Any) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ConfigError(f"unknown training settings: {sorted(unknown)}")
        for name in SOURCE_FIELDS:
            if isinstance(changes.get(name), str | list):
                sources = changes[name]
                changes[name] = (sources,) if isinstance(sources, str) else tuple(sources)
        try:
            return dataclasses.replace(self, **changes)
        except TypeError as exc:
            raise ConfigError(str(exc)) from exc

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


RECIPES = Path(__file__).resolve().parent / "config"


def recipe_path(name_or_path: str | Path) -> Path:
    """A file path as given, or a recipe shipped in the package: ``default`` is
    ``trainer/config/train.default.yaml``.

    A name works wherever the package is installed (the trainer image, a Kubernetes Job), so the
    cluster's retraining runs the very recipe ``make train`` runs, with no path into
    site-packages."""
    p = Path(name_or_path)
    if p.suffix or len(p.parts) > 1:
        return p
    shipped = RECIPES / f"train.{p.name}.yaml"
    if not shipped.is_file():
        known = sorted(
            f.name.removeprefix("train.").removesuffix(".yaml")
            for f in RECIPES.glob("train.*.yaml")
        )
        raise ConfigError(
            f"no training recipe named {p.name!r} (shipped: {', '.join(known)}; or give a file "
            "path)"
        )
    return shipped


def load_config(path: str | Path | None, **overrides: Any) -> TrainConfig:
    """Defaults, then the file (YAML or JSON) or shipped recipe (``recipe_path``), then non-None
    ``overrides``."""
    values: dict[str, Any] = {}
    if path:
        p = recipe_path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read training config {p}: {exc}") from exc
        if p.suffix in (".yaml", ".yml"):
            import yaml

            values = dict(yaml.safe_load(text) or {})
        else:
            values = dict(json.loads(text))
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig().replace(**values)
