"""Domain-adaptive masked-LM pretraining of the encoder before the fine-tune (``mlm_epochs``;
Gururangan et al., ACL 2020, "Don't Stop Pretraining").

The default base model was trained contrastively on web and QA pairs, never on complaint language,
and a bank holds far more unlabelled complaints than labelled ones. This stage continues pretraining
on complaint texts (the training rows' own plus ``mlm_data``) with BERT's objective: 15% of the
non-special tokens are chosen, 80% of those become ``[MASK]``, 10% a random token, 10% stay. The
prediction head (dense, GELU, LayerNorm, then a decoder tied to the word embeddings) is built here
and thrown away afterwards: the fine-tune starts from the adapted encoder alone, so export and
serving are unchanged.

Contract:

- ``corpus``: the texts, deduplicated by normalised text, minus any text that equals a val, test or
  holdout text (evaluation texts never train the encoder, even without labels). Its digest goes into
  lineage.
- ``adapt``: trains a copy of the base encoder and saves it to ``<folder>/encoder`` with
  ``adaptation.json`` (digest, settings, loss) written last, so a folder with ``adaptation.json`` is
  complete. A resumed run that finds a complete folder for the same base, digest and settings uses
  it instead of training again; an interrupted stage continues from its last checkpoint (``last.pt``
  every ``checkpoint_every`` steps and at each epoch's end: encoder, head, optimiser, scheduler,
  both random streams, the position in the epoch and the smoothed loss), so a resumed stage ends
  with the same weights and loss as one that never stopped. The step loop and the batching are
  ``trainer.step_loop``'s, the fine-tune's own.
- Logits are computed at the chosen positions only: a full 30k-way output for every token of a batch
  would cost more than the encoder itself.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel, get_linear_schedule_with_warmup

from trainer import model, splits, step_loop
from trainer.errors import DataError
from trainer.run_config import TrainConfig
from trainer.step_loop import (
    Encoded,
    Position,
    length_grouped_batches,
    micro_batches,
    pad,
    save_checkpoint,
    use_bf16,
)

log = logging.getLogger(__name__)

DONE_FILE = "adaptation.json"
CHECKPOINT = "last.pt"  # mid-stage: encoder, head, optimiser, scheduler, RNG and position
# CrossEntropyLoss's default ignore_index: positions that were not chosen
NOT_CHOSEN = -100


@dataclass(frozen=True)
class Corpus:
    texts: list[str]
    digest: str
    excluded: int  # texts dropped because they equal an evaluation text


def corpus(
    train_texts: Iterable[str], extra_texts: Iterable[str], evaluation_texts: Iterable[str]
) -> Corpus:
    """The adaptation texts: training rows first, then ``extra_texts``, each normalised text once,
    none equal to an evaluation (val, test or holdout) text."""
    banned = {splits.text_key(t) for t in evaluation_texts}
    kept: dict[str, str] = {}  # normalised-text key -> the first text with it, in order
    excluded = 0
    for text in (*train_texts, *extra_texts):
        key = splits.text_key(text)
        if key in banned:
            excluded += 1
        elif key not in kept and text.strip():
            kept[key] = text
    digest = hashlib.sha256("\n".join(sorted(kept)).encode()).hexdigest()
    return Corpus(list(kept.values()), digest, excluded)


class MaskedLmHead(nn.Module):
    """BERT's prediction head: transform, then logits against the word embeddings passed in (tied,
    not owned: the head's state, and so each checkpoint, leaves out the 30k x hidden matrix the
    encoder holds)."""

    def __init__(self, encoder: PreTrainedModel) -> None:
        super().__init__()
        hidden = int(encoder.config.hidden_size)
        self.transform = nn.Sequential(
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.LayerNorm(hidden, eps=encoder.config.layer_norm_eps),
        )
        self.bias = nn.Parameter(torch.zeros(int(encoder.config.vocab_size)))

    def forward(self, hidden: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
        return self.transform(hidden) @ words.T + self.bias


def choose(
    ids: torch.Tensor,
    candidates: torch.Tensor,
    gen: torch.Generator,
    probability: float,
    mask_id: int,
    vocab: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking of ``ids`` where ``candidates`` is true: returns ``(inputs, targets)``, targets
    ``NOT_CHOSEN`` except at the chosen positions. At least one position is chosen when any is a
    candidate."""
    draw = torch.rand(ids.shape, generator=gen)
    chosen = candidates & (draw < probability)
    if not chosen.any() and candidates.any():
        chosen.view(-1)[int(torch.nonzero(candidates.view(-1))[0])] = True
    targets = torch.where(chosen, ids, torch.full_like(ids, NOT_CHOSEN))
    kind = torch.rand(ids.shape, generator=gen)
    inputs = ids.clone()
    inputs[chosen & (kind < 0.8)] = mask_id
    randomised = chosen & (kind >= 0.8) & (kind < 0.9)
    inputs[randomised] = torch.randint(vocab, (int(randomised.sum()),), generator=gen)
    return inputs, targets


def _settings(cfg: TrainConfig) -> dict[str, Any]:
    """The settings an adapted encoder depends on: a resumed run reuses it only if they are all the
    same."""
    return {
        "epochs": cfg.mlm_epochs,
        "probability": cfg.mlm_probability,
        "max_length": cfg.max_length,
        "truncation": cfg.truncation,
        "batch_size": cfg.batch_size,
        "lr": cfg.lr,
        "head_lr": cfg.head_lr,
        "weight_decay": cfg.weight_decay,
        "warmup_ratio": cfg.warmup_ratio,
        "freeze_embeddings": cfg.freeze_embeddings,
        "bf16": cfg.bf16,
        "seed": cfg.seed,
    }


def adapt(
    base: str,
    data: Encoded,
    cfg: TrainConfig,
    folder: Path,
    *,
    digest: str,
    pad_id: int,
    mask_id: int,
    special_ids: set[int],
    resume: bool = False,
    on_log: Callable[[dict[str, float], int], None] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Continue pretraining the ``base`` encoder on ``data.ids`` (labels unused); returns the folder
    of the adapted encoder (``AutoModel`` loads it like any base) and the stage's summary
    (``adaptation.json``). ``on_log(metrics, step)`` gets the loss and learning rate every 20 steps
    (W&B)."""
    if not len(data):
        raise DataError("no texts for masked-LM adaptation")
    wanted = {"corpus_digest": digest, "base_model": base, **_settings(cfg)}
    if resume and (summary := _adapted_before(folder, wanted)) is not None:
        return folder / "encoder", summary
    started = time.perf_counter()
    encoder, head = _build(base, cfg)
    own = [head.bias, *head.transform.parameters()]
    body = [p for p in encoder.parameters() if p.requires_grad]
    total = max(1, math.ceil(cfg.mlm_epochs * math.ceil(len(data) / cfg.batch_size)))
    opt, sched = _optimiser(body, own, cfg, total)
    autocast = use_bf16(cfg.bf16)
    vocab = int(encoder.config.vocab_size)
    special = torch.tensor(sorted(special_ids | {pad_id}), dtype=torch.long)
    # its own stream, apart from the fine-tune's
    gen = torch.Generator().manual_seed(cfg.seed + (1 << 21))
    log.info("mlm: %d texts, %d steps, masking %.0f%%", len(data), total, 100 * cfg.mlm_probability)
    parts = {"encoder": encoder, "head": head, "optimizer": opt, "scheduler": sched}
    ckpt = folder / CHECKPOINT
    pos = (_restore(ckpt, wanted, parts, gen) if resume and ckpt.is_file() else None) or Position()
    checkpoint = _checkpointer(ckpt, parts, pos, wanted, gen)
    encoder.train()
    step_loop.run(
        pos,
        total,
        # epochs offset by 1000: a batch order unlike the fine-tune's first epochs over the same
        # rows
        lambda epoch: length_grouped_batches(data.lengths, cfg.batch_size, cfg.seed, 1000 + epoch),
        lambda batch: _accumulate(
            encoder, head, data, batch, cfg, gen, pad_id, mask_id, special, vocab, autocast
        ),
        optimizer=opt,
        scheduler=sched,
        params=[*body, *own],
        checkpoint=checkpoint,
        checkpoint_every=cfg.checkpoint_every,
        desc="mlm",
        on_log=on_log,
    )
    return folder / "encoder", _finish(
        encoder, folder, {**wanted, "texts": len(data)}, pos, started
    )


def _adapted_before(folder: Path, wanted: dict[str, Any]) -> dict[str, Any] | None:
    """The summary of a complete adapted encoder in ``folder`` made from the same base, corpus and
    settings (``wanted``), else None (then the stage runs again)."""
    done = folder / DONE_FILE
    if not done.is_file():
        return None
    summary: dict[str, Any] = json.loads(done.read_text(encoding="utf-8"))
    if {k: summary.get(k) for k in wanted} == wanted:
        log.info("mlm: resuming from the adapted encoder in %s", folder / "encoder")
        return summary
    log.warning("mlm: %s was adapted on other texts or settings; adapting again", folder)
    return None


def _build(base: str, cfg: TrainConfig) -> tuple[PreTrainedModel, MaskedLmHead]:
    """The base encoder and a fresh prediction head, initialised from ``cfg.seed`` as BERT's is."""
    encoder = model.load_encoder(base)
    if cfg.freeze_embeddings:  # as in the fine-tune; the tied decoder reads them all the same
        encoder.get_input_embeddings().weight.requires_grad_(False)
    torch.manual_seed(cfg.seed)
    head = MaskedLmHead(encoder)
    for module in head.transform:
        if isinstance(module, nn.Linear):
            nn.init.normal_(
                module.weight, std=float(getattr(encoder.config, "initializer_range", 0.02))
            )
            nn.init.zeros_(module.bias)
    return encoder, head


def _optimiser(
    body: list[nn.Parameter], own: list[nn.Parameter], cfg: TrainConfig, total: int
) -> tuple[torch.optim.Optimizer, Any]:
    """The fine-tune's optimiser and schedule: AdamW with the encoder (``body``) at ``lr`` and the
    fresh head (``own``) at ``head_lr``, linear warmup over ``warmup_ratio`` of ``total`` steps."""
    opt = torch.optim.AdamW(
        [{"params": body, "lr": cfg.lr}, {"params": own, "lr": cfg.head_lr}],
        weight_decay=cfg.weight_decay,
    )
    return opt, get_linear_schedule_with_warmup(opt, int(cfg.warmup_ratio * total), total)


def _checkpointer(
    ckpt: Path,
    parts: dict[str, Any],
    pos: Position,
    wanted: dict[str, Any],
    gen: torch.Generator,
) -> Callable[[], None]:
    """Writes the stage's state at ``pos`` (read when called) to ``ckpt``: every part, both random
    streams, and the corpus and settings it was made with (``wanted``)."""

    def checkpoint() -> None:
        state = {name: part.state_dict() for name, part in parts.items()}
        rng = {"rng": torch.get_rng_state(), "gen": gen.get_state()}
        save_checkpoint(ckpt, {**state, **pos.state(), "wanted": wanted, **rng})

    return checkpoint


def _restore(
    ckpt: Path, wanted: dict[str, Any], parts: dict[str, Any], gen: torch.Generator
) -> Position | None:
    """Load a mid-stage checkpoint into ``parts`` when it was made with the same corpus and
    settings; returns where the stage was, or None to start over."""
    state = torch.load(ckpt, weights_only=False)
    if state["wanted"] != wanted:
        log.warning("mlm: %s was made on other texts or settings; starting the stage over", ckpt)
        return None
    for name, part in parts.items():
        part.load_state_dict(state[name])
    torch.set_rng_state(state["rng"])
    gen.set_state(state["gen"])
    pos = Position.from_state(state)
    log.info(
        "mlm: resumed at step %d (epoch %d, batch %d)", pos.step, pos.epoch, pos.batch_in_epoch
    )
    return pos


def _accumulate(
    encoder: PreTrainedModel,
    head: MaskedLmHead,
    data: Encoded,
    batch: list[int],
    cfg: TrainConfig,
    gen: torch.Generator,
    pad_id: int,
    mask_id: int,
    special: torch.Tensor,
    vocab: int,
    autocast: bool,
) -> float:
    """One optimiser batch in token-bounded pieces; the loss is the mean over the batch's chosen
    tokens."""
    pieces = []
    for piece in micro_batches(batch, data.lengths, cfg.micro_batch_tokens):
        ids, attention = pad([data.ids[i] for i in piece], pad_id)
        candidates = ~torch.isin(ids, special) & attention.bool()
        pieces.append(
            (ids, attention, *choose(ids, candidates, gen, cfg.mlm_probability, mask_id, vocab))
        )
    chosen = sum(int((targets != NOT_CHOSEN).sum()) for *_, targets in pieces)
    total = 0.0
    for _ids, attention, inputs, targets in pieces:
        at = targets != NOT_CHOSEN
        if not at.any():
            continue
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            hidden = encoder(input_ids=inputs, attention_mask=attention).last_hidden_state
            logits = head(hidden[at], encoder.get_input_embeddings().weight)
        loss = nn.functional.cross_entropy(logits.float(), targets[at], reduction="sum") / chosen
        loss.backward()
        total += float(loss.detach())
    return total


def _finish(
    encoder: PreTrainedModel,
    folder: Path,
    summary: dict[str, Any],
    pos: Position,
    started: float,
) -> dict[str, Any]:
    """Save the adapted encoder with its summary (``summary`` plus steps, final loss and time) and
    drop the mid-stage checkpoint, which the saved encoder supersedes; returns the summary."""
    summary = {**summary, "steps": pos.step, "final_loss": pos.running}
    summary["seconds"] = time.perf_counter() - started
    _save(encoder, folder, summary)
    (folder / CHECKPOINT).unlink(missing_ok=True)
    log.info("mlm: adapted in %.0f s, final loss %.3f", summary["seconds"], pos.running)
    return summary


def _save(encoder: PreTrainedModel, folder: Path, summary: dict[str, Any]) -> None:
    """Write the encoder, then ``adaptation.json`` last: its presence means the folder is
    complete."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / DONE_FILE).unlink(missing_ok=True)
    tmp = folder / "encoder.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    encoder.save_pretrained(tmp)
    shutil.rmtree(folder / "encoder", ignore_errors=True)
    tmp.replace(folder / "encoder")
    (folder / DONE_FILE).write_text(json.dumps(summary, indent=2), encoding="utf-8")
