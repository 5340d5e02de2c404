"""Retraining job (DESIGN section 8): data -> multi-task fine-tune -> ONNX package -> challenger
report. It imports the core (``consumer``), never the reverse.

The stages in the order ``train_command`` runs them, one module each:

- data: ``labels`` (versioned label maps), ``data`` (sources), ``splits`` (splits, holdout guard,
  digest, the rows of a run);
- tokens: ``training_tokens`` (the ids and vocabulary facts training reads, through the consumer's
  own ``TextEncoder``);
- pretrain: ``pretrain`` (optional masked-LM adaptation);
- finetune: ``finetune`` (the main run and a soup's ingredients), ``fit`` (one fine-tune in torch:
  loss, LP-FT probe, fit, predict), ``step_loop`` (the optimiser-step loop and batching the torch
  stages share), ``model`` (shared encoder + one linear head per task);
- lexical: ``lexical`` (optional TF-IDF model in the same graph);
- export: ``export`` (optimum ONNX export, parity, int8);
- calibrate: ``calibrate`` (thresholds on validation);
- package: ``packaging`` (the folder, its manifest, drafts of it while it is built), ``tracking``
  (W&B), then ``push`` (Hugging Face Hub) and ``register`` (Redis registry);
- compare: ``compare`` (champion vs challenger).

``scoring`` (scores through ``consumer.inference``) and ``metrics`` serve calibration, evaluation,
``compare`` and the benches. Commands (``cli`` parses and dispatches): ``tiny``, ``train``
(``train_command``), ``compare``, ``push``, ``register``. Torch is imported only by the modules
that need it, so ``scoring``/``compare`` run without it.
"""
