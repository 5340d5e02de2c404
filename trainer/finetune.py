"""The fine-tune stage: fine-tunes of one base model on one encoded dataset, the main run and, for a
uniform model soup (``soup_seeds``; Wortsman et al., ICML 2022), one more run per seed from the same
initialisation, averaged into the main one. Each run is ``trainer.fit.fit`` on a freshly built
``MultiTaskModel``, logged to W&B and checked on validation after each epoch; each has its own
checkpoint folder, so a soup resumes like a single run."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer import model
from trainer.fit import fit, predict
from trainer.labels import IGNORE, LabelSpace
from trainer.run_config import TrainConfig
from trainer.step_loop import Encoded
from trainer.tracking import Tracker

log = logging.getLogger(__name__)


@dataclass
class FineTune:
    """Fine-tunes of one base model on one encoded dataset: the main run and, for a soup, its
    ingredients."""

    base: str
    space: LabelSpace
    train: Encoded
    val: Encoded
    pad_id: int
    digest: str
    tracker: Tracker
    resume: bool
    steps_before: int = 0  # W&B steps already used before these fine-tunes (the masked-LM stage)

    def run(
        self,
        cfg: TrainConfig,
        ckpt_dir: Path,
        *,
        init_seed: int | None = None,
        prefix: str = "",
        step_offset: int = 0,
    ) -> tuple[model.MultiTaskModel, dict[str, Any]]:
        """One fine-tune: heads initialised from ``init_seed`` (default ``cfg.seed``); batch order
        from ``cfg.seed``. Metrics are logged under ``prefix`` at ``step + step_offset`` (W&B steps
        only grow). The summary has ``val_accuracy`` when the last epoch's evaluation was of the
        final weights."""
        net = self._build(cfg, cfg.seed if init_seed is None else init_seed)
        steps_before = self.steps_before + step_offset
        last: dict[str, Any] = {}

        def on_log(metrics: dict[str, float], step: int) -> None:
            self.tracker.log({prefix + k: v for k, v in metrics.items()}, step=steps_before + step)

        def on_eval(epoch: int, step: int) -> None:
            """Validation accuracy (PyTorch, argmax) after each epoch, for the progress log and
            W&B."""
            last.update(step=step, accuracy=self.val_accuracy(net))
            accs = {f"{prefix}epoch_val/{t}/accuracy": a for t, a in last["accuracy"].items()}
            log.info("epoch %d (step %d): %s", epoch, step, accs)
            self.tracker.log(accs, step=steps_before + step)

        summary = fit(
            net,
            self.train,
            cfg,
            ckpt_dir,
            pad_id=self.pad_id,
            data_digest=self.digest,
            resume=self.resume,
            on_log=on_log,
            on_eval=on_eval,
        )
        if last.get("step") == summary["steps"]:  # no update since: spare the soup a rerun
            summary["val_accuracy"] = last["accuracy"]
        return net, summary

    def _build(self, cfg: TrainConfig, init: int) -> model.MultiTaskModel:
        """The base encoder with heads initialised from ``init``, its word embeddings frozen when
        ``cfg.freeze_embeddings``."""
        net = model.build(
            model.load_encoder(self.base), self.space.tasks, init, dropout=cfg.dropout
        )
        if init != cfg.seed:
            # An ingredient shares the main run's initialisation but draws its own dropout masks.
            # The main run keeps the random stream build() left, so a run without a soup is the same
            # as before.
            torch.manual_seed(cfg.seed)
        if cfg.freeze_embeddings:
            # The 30k x hidden word-embedding matrix is half the parameters; training it changed 16
            # of 1,591 validation team decisions, 8 each way (docs/trainer.md), so it stays as
            # pretrained.
            net.encoder.get_input_embeddings().weight.requires_grad_(False)
        return net

    def soup(
        self, cfg: TrainConfig, net: model.MultiTaskModel, summary: dict[str, Any], out: Path
    ) -> tuple[model.MultiTaskModel, dict[str, Any]]:
        """Fine-tune one ingredient per ``cfg.soup_seeds`` from ``net``'s initialisation and average
        them all into ``net`` (uniform soup). The summary keeps each ingredient's and the soup's
        validation accuracy."""
        ingredients = {str(cfg.seed): self._with_val_accuracy(net, summary)}
        others = []
        for i, seed in enumerate(cfg.soup_seeds, start=1):
            other, part = self.run(
                cfg.replace(seed=seed, soup_seeds=()),
                out / f"checkpoints-soup-{seed}",
                init_seed=cfg.seed,
                prefix=f"soup/{seed}/",
                step_offset=i * summary["planned_steps"],
            )
            ingredients[str(seed)] = self._with_val_accuracy(other, part)
            others.append(other)
        model.average_into(net, others)
        accuracy = self.val_accuracy(net)  # predict() leaves the soup in eval mode for export
        log.info("soup of seeds %s: validation accuracy %s", list(ingredients), accuracy)
        self.tracker.log({f"soup/epoch_val/{t}/accuracy": a for t, a in accuracy.items()})
        return net, {**summary, "soup": {"ingredients": ingredients, "val_accuracy": accuracy}}

    def _with_val_accuracy(
        self, net: model.MultiTaskModel, summary: dict[str, Any]
    ) -> dict[str, Any]:
        """``summary`` with the final weights' validation accuracy: the one ``run`` kept from the
        last epoch's evaluation, or (a run stopped between epoch ends, or resumed already finished)
        a fresh one."""
        return {**summary, "val_accuracy": summary.get("val_accuracy") or self.val_accuracy(net)}

    def val_accuracy(self, net: model.MultiTaskModel) -> dict[str, float]:
        probs = predict(net, self.val, self.pad_id)
        accs = {}
        for t, p in probs.items():
            y = self.val.labels[t]
            accs[t] = float(np.mean(p.argmax(1)[y != IGNORE] == y[y != IGNORE]))
        return accs
